"""LayerNormalization (ops/layernorm.py): equal to onnxruntime over the last axis, refused over
others, and its bounds sound (every output of a normalised vector of k elements lies within
+-sqrt(k - 1) before scaling)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import verifier
from helpers_nets import Builder, assert_matches, graph_of, one_torch_thread  # noqa: F401 (fixture)
from verifier.onnx_import import ModelError
from verifier.verdict import Verdict


def _model(opset: int = 17, axis: int = -1, bias: bool = True, shape=(1, 6)):
    b = Builder(np.random.default_rng(4), opset)
    h = b.gemm("x", 4, 6)
    if len(shape) > 2:
        h = b.op("Reshape", [h, b.ints(list(shape))])
    ins = [h, b.const(b.rng.uniform(0.5, 1.5, shape[-1]))] + ([b.const(b.rng.normal(0, 0.3, shape[-1]))] if bias else [])
    return b.finish("x", [1, 4], b.op("LayerNormalization", ins, axis=axis, epsilon=1e-3))


@pytest.mark.parametrize("opset, bias", [(17, True), (17, False), (21, True)])
def test_layer_norm_equals_onnxruntime(opset, bias):
    model = _model(opset, bias=bias)
    xs = [np.random.default_rng(k).uniform(-3, 3, size=(1, 4)).astype(np.float32) for k in range(8)]
    assert_matches(model, graph_of(model), xs)


def test_layer_norm_over_other_axes_is_refused():
    with pytest.raises(ModelError, match="over the last axis only"):
        graph_of(_model(axis=1, shape=(1, 2, 3)))


def test_layer_norm_bounds_hold(tmp_path):
    model = _model(bias=False)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    scale = max(abs(float(v)) for v in onnx.numpy_helper.to_array(model.graph.initializer[-1]).reshape(-1))
    head = "".join(f"(declare-const X_{i} Real)\n" for i in range(4))
    head += "".join(f"(declare-const Y_{j} Real)\n" for j in range(6))
    head += "".join(f"(assert (>= X_{i} -0.5))\n(assert (<= X_{i} 0.5))\n" for i in range(4))
    # |(x_i - mean) / std| <= sqrt(k - 1) for any vector of k elements
    bound = scale * np.sqrt(5) * 1.01 + 0.01
    q = tmp_path / "q.vnnlib"
    q.write_text(head + f"(assert (>= Y_0 {bound}))\n")
    r = verifier.verify(path, q, timeout=60)
    assert r.verdict is Verdict.UNSAT, r.reason
    import onnxruntime as ort

    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.full((1, 4), 0.5, np.float32)})[0].reshape(-1)
    q.write_text(head + f"(assert (>= Y_0 {float(y[0]) - 0.05}))\n")
    r = verifier.verify(path, q, timeout=60)
    assert r.verdict is Verdict.SAT and r.y[0] >= y[0] - 0.05
