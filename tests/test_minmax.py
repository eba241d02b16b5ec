"""Max, Min, ReduceMax, ReduceMin (ops/minmax.py, as ReLUs): equal to onnxruntime in each form
they accept, refused elsewhere, and verified both ways."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import verifier
from helpers_nets import Builder, assert_matches, graph_of, one_torch_thread  # noqa: F401 (fixture)
from verifier.onnx_import import ModelError
from verifier.verdict import Verdict

FORMS = {
    "max2": lambda b: ([1, 4], b.op("Max", [b.gemm("x", 4, 5), b.gemm("x", 4, 5)])),
    "min3_const": lambda b: ([1, 4], b.op("Min", [b.gemm("x", 4, 5), b.gemm("x", 4, 5), b.const([0.1] * 5)])),
    "max_const_nobatch": lambda b: ([4], b.op("Max", ["x", b.const([0.2, -0.1, 0.0, 0.3])])),
    "reducemax_last": lambda b: ([1, 2, 6], b.op("ReduceMax", [b.op("Relu", ["x"])], axes=[2], keepdims=0)),
    "reducemin_keep": lambda b: ([1, 3, 4], b.op("ReduceMin", ["x"], axes=[1], keepdims=1)),
    "reducemax_two_axes": lambda b: ([1, 3, 2, 3], b.op("ReduceMax", ["x"], axes=[1, 3], keepdims=1)),
}
FORMS_18 = {   # from opset 18 the reduced axes are an input
    "reducemax_axes_input": lambda b: ([1, 2, 6], b.op("ReduceMax", ["x", b.ints([2])], keepdims=0)),
    "reducemin_axes_input": lambda b: ([1, 3, 4], b.op("ReduceMin", ["x", b.ints([-2])], keepdims=1)),
}


@pytest.mark.parametrize("form, opset", [(f, o) for f in sorted(FORMS) for o in (11, 13)]
                         + [(f, o) for f in sorted(FORMS_18) for o in (18, 21)])
def test_min_max_equal_onnxruntime(form, opset):
    b = Builder(np.random.default_rng(1), opset)
    shape, y = {**FORMS, **FORMS_18}[form](b)
    model = b.finish("x", shape, y)
    xs = [np.random.default_rng(k).normal(size=shape).astype(np.float32) for k in range(8)]
    assert_matches(model, graph_of(model), xs)


def test_reduce_over_the_batch_axis_is_refused():
    b = Builder(np.random.default_rng(1), 13)
    model = b.finish("x", [1, 3], b.op("ReduceMax", ["x"], axes=[0], keepdims=1))
    with pytest.raises(ModelError, match="ReduceMax over the batch axis"):
        graph_of(model)


def test_max_verified_both_ways(tmp_path):
    b = Builder(np.random.default_rng(2), 13)
    model = b.finish("x", [1, 3], b.op("ReduceMax", [b.op("Relu", [b.gemm("x", 3, 6)])], axes=[1], keepdims=1))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    head = "".join(f"(declare-const X_{i} Real)\n" for i in range(3)) + "(declare-const Y_0 Real)\n"
    head += "".join(f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))\n" for i in range(3))
    never = tmp_path / "u.vnnlib"
    never.write_text(head + "(assert (< Y_0 0))\n")             # a max of ReLUs is never negative
    assert verifier.verify(path, never, timeout=60).verdict is Verdict.UNSAT
    some = tmp_path / "s.vnnlib"
    some.write_text(head + "(assert (> Y_0 0.1))\n")
    r = verifier.verify(path, some, timeout=60)
    assert r.verdict is Verdict.SAT and r.y[0] > 0.1
