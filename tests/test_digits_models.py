"""benchmarks/digits_models.py (quick build): four ONNX classifiers that onnxruntime runs like the
torch layers they came from, decent accuracy, IBP training that pays off, and the two test files
holding the same samples in the shapes the models take."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import load_digits_models

NETS = {"digits_mlp": ("digits_test", (1, 64)), "digits_mlp_ibp": ("digits_test", (1, 64)),
        "digits_cnn": ("digits_test_img", (1, 1, 8, 8)), "digits_cnn_ibp": ("digits_test_img", (1, 1, 8, 8))}


@pytest.fixture(scope="module")
def dm():
    return load_digits_models()


@pytest.fixture(scope="module")
def built(digits):
    return digits


def _torch_net(dm, path) -> torch.nn.Sequential:
    """The file's weights loaded back into the torch architecture (initialisers W<i>, B<i> belong
    to layer i), an oracle for the export's Gemm / Conv / Flatten conventions."""
    inits = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in onnx.load(path).graph.initializer}
    net = dm.mlp() if "mlp" in path.stem else dm.cnn()
    for i, m in enumerate(net):
        if hasattr(m, "weight"):
            m.weight.data, m.bias.data = inits[f"W{i}"], inits[f"B{i}"]
    return net.eval()


def test_files_and_test_split(built):
    assert sorted(built) == sorted([*NETS, "digits_test", "digits_test_img"])
    assert all(p.is_file() for p in built.values())
    flat, img = np.load(built["digits_test"]), np.load(built["digits_test_img"])
    n = len(flat["y"])
    assert 0.2 * 1797 <= n <= 0.3 * 1797
    assert flat["x"].dtype == img["x"].dtype == np.float32
    assert flat["x"].shape == (n, 64) and img["x"].shape == (n, 1, 8, 8)
    assert flat["y"].dtype == img["y"].dtype == np.int64 and flat["y"].shape == (n,)
    np.testing.assert_array_equal(img["x"].reshape(n, 64), flat["x"])
    np.testing.assert_array_equal(img["y"], flat["y"])
    assert set(np.unique(flat["y"])) == set(range(10))
    assert flat["x"].min() >= 0 and flat["x"].max() <= 1


@pytest.mark.parametrize("name", NETS)
def test_onnx_runs_like_torch_and_classifies(dm, built, name):
    data, shape = NETS[name]
    test = np.load(built[data])
    model = onnx.load(built[name])
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(str(built[name]), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert list(inp.shape) == list(shape) and list(sess.get_outputs()[0].shape) == [1, 10]
    ys = np.concatenate([sess.run(None, {inp.name: x[None]})[0] for x in test["x"]])
    assert ys.shape == (len(test["y"]), 10) and np.isfinite(ys).all()
    with torch.no_grad():
        ref = _torch_net(dm, built[name])(torch.from_numpy(test["x"])).numpy()
    np.testing.assert_allclose(ys, ref, rtol=1e-4, atol=1e-4)
    assert float((ys.argmax(1) == test["y"]).mean()) > 0.6


def test_ibp_training_certifies_more(dm, built):
    """At eps 0.05 IBP certifies far more test samples of the IBP-trained models than of the
    normally trained ones."""
    for arch, data in (("mlp", "digits_test"), ("cnn", "digits_test_img")):
        test = np.load(built[data])
        x, y = torch.from_numpy(test["x"]), torch.from_numpy(test["y"])
        normal = dm.certified(_torch_net(dm, built[f"digits_{arch}"]), x, y, 0.05)
        robust = dm.certified(_torch_net(dm, built[f"digits_{arch}_ibp"]), x, y, 0.05)
        assert robust > normal + 0.3, (arch, normal, robust)


def test_interval_bounds_contain_samples(dm, built):
    """margin_lower is sound: below the true margin at random points of the clipped ball."""
    test = np.load(built["digits_test_img"])
    net = _torch_net(dm, built["digits_cnn_ibp"])
    x, y = torch.from_numpy(test["x"][:50]), torch.from_numpy(test["y"][:50])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bound = dm.margin_lower(net, x, y, 0.1)
        for _ in range(10):
            z = (x + 0.1 * (2 * torch.rand(x.shape, generator=gen) - 1)).clamp(0, 1)
            out = net(z)
            true = out.gather(1, y[:, None]) - out
            assert (bound <= true + 1e-5).all()
