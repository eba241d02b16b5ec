"""Softmax (ops/softmax.py: 1 / sum_j exp(x_j - x_i)): equal to onnxruntime in every opset and
axis form it accepts, refused elsewhere, and verified both ways on a small classifier."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import verifier
from helpers_nets import Builder, assert_matches, graph_of, one_torch_thread  # noqa: F401 (fixture)
from verifier.onnx_import import ModelError
from verifier.verdict import Verdict


def _model(opset: int, axis=None, shape=(1, 5)):
    b = Builder(np.random.default_rng(opset), opset)
    h = b.op("Relu", [b.gemm("x", 4, 8)])
    logits = b.gemm(h, 8, 5, scale=1.5)
    if len(shape) > 2:
        logits = b.op("Reshape", [logits, b.ints(list(shape))])
    attrs = {} if axis is None else {"axis": axis}
    return b.finish("x", [1, 4], b.op("Softmax", [logits], **attrs))


@pytest.mark.parametrize("opset, axis", [(7, None), (11, 1), (11, -1), (13, None), (13, 1), (13, -1), (21, None)])
def test_softmax_equals_onnxruntime(opset, axis):
    model = _model(opset, axis)
    xs = [np.random.default_rng(k).uniform(-3, 3, size=(1, 4)).astype(np.float32) for k in range(8)]
    assert_matches(model, graph_of(model), xs)


@pytest.mark.parametrize("opset, axis", [(13, 1), (13, -2), (11, 1), (11, 2)])
def test_softmax_along_other_axes_equals_onnxruntime(opset, axis):
    """Opset 13 on: along that axis (between two transpositions); before: over the axes from it
    on, flattened (ONNX's coercion to 2-D)."""
    model = _model(opset, axis, shape=(1, 5, 1) if axis in (1, -2) and opset >= 13 else (1, 1, 5))
    xs = [np.random.default_rng(k).uniform(-3, 3, size=(1, 4)).astype(np.float32) for k in range(8)]
    assert_matches(model, graph_of(model), xs)


def test_softmax_over_the_batch_axis_is_refused():
    with pytest.raises(ModelError, match="over the batch axis"):
        graph_of(_model(13, 0))


def test_softmax_outputs_verified_both_ways(tmp_path):
    model = _model(13)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    head = "".join(f"(declare-const X_{i} Real)\n" for i in range(4))
    head += "".join(f"(declare-const Y_{j} Real)\n" for j in range(5))
    head += "".join(f"(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))\n" for i in range(4))
    # probabilities: never above 1, never negative, and they sum to 1
    never = tmp_path / "u.vnnlib"
    never.write_text(head + "(assert (or (> Y_0 1.0001) (< Y_3 0) (> (+ Y_0 Y_1 Y_2 Y_3 Y_4) 1.01)))\n")
    assert verifier.verify(path, never, timeout=60).verdict is Verdict.UNSAT
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = s.run(None, {"x": np.zeros((1, 4), np.float32)})[0].reshape(-1)
    some = tmp_path / "s.vnnlib"
    some.write_text(head + f"(assert (>= Y_0 {float(y[0]) - 1e-3}))\n")
    r = verifier.verify(path, some, timeout=60)
    assert r.verdict is Verdict.SAT and r.y[0] >= y[0] - 1e-3
