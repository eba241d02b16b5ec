"""Products of two variable tensors (ops/bilinear.py): McCormick planes in both inputs.

The rule on hypothesis-drawn boxes (tiny, wide, across 0, point, huge): sampled corners and
interior points lie in the interval and between the planes; then networks with Mul and Div of two
variables, each verified both ways (unsat by construction, sat confirmed by onnxruntime) and their
bounds (IBP, CROWN, alpha-CROWN) checked against samples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import verifier
from helpers_nets import one_torch_thread  # noqa: F401 (autouse fixture)
from verifier.ir import Node
from verifier.ops import RULES
from verifier.verdict import Verdict

F32 = TensorProto.FLOAT


def _ends():
    e = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, -0.0, 1e-300, -1e-12, 1.0, -1.0]))
    return st.tuples(e, e).map(sorted)


@settings(max_examples=300, deadline=None)
@given(boxes=st.lists(st.tuples(_ends(), _ends()), min_size=1, max_size=10), seed=st.integers(0, 2 ** 16))
def test_mccormick_planes_and_interval_contain_the_product(boxes, seed):
    rule = RULES["MulVar"]
    t = lambda k, j: torch.tensor([b[k][j] for b in boxes], dtype=torch.float64)
    xl, xh, yl, yh = t(0, 0), t(0, 1), t(1, 0), t(1, 1)
    node = Node("p", "MulVar", ("x", "y"), {}, (len(boxes),))
    (lwx, lwy), lb, (uwx, uwy), ub = rule.relax_all(node, (xl, xh), (yl, yh))
    ilo, ihi = rule.interval(node, xl, xh, (yl, yh))
    g = torch.Generator().manual_seed(seed)
    xs = [xl, xh] + [xl + (xh - xl) * torch.rand(xl.shape, generator=g, dtype=torch.float64) for _ in range(6)]
    ys = [yl, yh] + [yl + (yh - yl) * torch.rand(yl.shape, generator=g, dtype=torch.float64) for _ in range(6)]
    for x in xs:
        for y in ys:
            x, y = x.clamp(xl, xh), y.clamp(yl, yh)
            v = x * y
            slack = 4e-16 * ((x * y).abs() + (lwx * x).abs() + (lwy * y).abs() + lb.abs() + ub.abs()) + 1e-300
            assert (ilo <= v + slack).all() and (v - slack <= ihi).all()
            assert (lwx * x + lwy * y + lb <= v + slack).all()
            assert (v - slack <= uwx * x + uwy * y + ub).all()


def _model(path: Path, op: str, shift: float = 0.0) -> Path:
    """y = (x W1) op (relu(x W2) + shift): two variable factors from one input (1, 3)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "W2"),
             numpy_helper.from_array(np.float32(shift).reshape(1), "s")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"]), helper.make_node("MatMul", ["x", "W2"], ["b0"]),
             helper.make_node("Relu", ["b0"], ["b1"]), helper.make_node("Add", ["b1", "s"], ["b"]),
             helper.make_node(op, ["a", "b"], ["y"])]
    g = helper.make_graph(nodes, "prod", [helper.make_tensor_value_info("x", F32, [1, 3])],
                          [helper.make_tensor_value_info("y", F32, [1, 4])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def _query(path: Path, condition: str) -> Path:
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(3))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(4))
    text += "".join(f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))\n" for i in range(3))
    path.write_text(text + f"(assert {condition})\n")
    return path


def _extremes(model: Path, k: int) -> tuple[float, float]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(-1, 1, size=(20000, 3)).astype(np.float32)
    y = np.concatenate([s.run(None, {"x": xi.reshape(1, 3)})[0] for xi in x[:4000]])
    return float(y[:, k].min()), float(y[:, k].max())


@pytest.mark.parametrize("op, shift", [("Mul", 0.0), ("Div", 1.0)])
def test_products_of_variables_verified_both_ways(tmp_path, op, shift):
    model = _model(tmp_path / "m.onnx", op, shift)
    lo, hi = _extremes(model, 0)
    # far above anything sampled: proved (sound bounds, the factors bounded on [-1, 1]^3)
    r = verifier.verify(model, _query(tmp_path / "u.vnnlib", f"(>= Y_0 {hi + 50 + 10 * abs(hi)})"), timeout=60)
    assert r.verdict is Verdict.UNSAT, r.reason
    # just inside what sampling reaches: a counterexample
    r = verifier.verify(model, _query(tmp_path / "s.vnnlib", f"(>= Y_0 {hi - 0.05 * (hi - lo)})"), timeout=60)
    assert r.verdict is Verdict.SAT
    assert r.y[0] >= hi - 0.05 * (hi - lo)


def test_division_by_a_range_through_zero_proves_nothing(tmp_path):
    """relu(.) + 0 reaches 0: the bounds are infinite (nothing proved); where the model itself
    divides 0 by 0 in the region, the query is refused before any answer."""
    from verifier.api import InputError
    from verifier.bounds.interval import interval_bounds
    from helpers_nets import graph_of

    model = _model(tmp_path / "m.onnx", "Div", 0.0)
    graph = graph_of(onnx.load(model))
    lo, hi = -torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    ylo, yhi = interval_bounds(graph, lo, hi)[graph.output_name]
    assert torch.isinf(ylo).all() and torch.isinf(yhi).all()
    with pytest.raises(InputError, match="not a finite function"):
        verifier.verify(model, _query(tmp_path / "q.vnnlib", "(>= Y_0 1e30)"), timeout=20)


def test_product_bounds_contain_samples():
    from helpers_nets import graph_of
    from verifier.bounds.interval import interval_bounds
    from verifier.evaluate import forward
    from verifier.incomplete import crown_lower
    from verifier.spec import Cases

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        graph = graph_of(onnx.load(_model(Path(d) / "m.onnx", "Mul")))
    lo, hi = -torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    C = torch.cat([torch.eye(4), -torch.eye(4)]).to(torch.float64).unsqueeze(0)
    cs = Cases(lo, hi, C, torch.zeros(1, 8, dtype=torch.float64), torch.zeros(1, 8, dtype=torch.long),
               torch.ones(1, 1, dtype=torch.bool), np.zeros(1, dtype=np.int64))
    lb, _ = crown_lower(graph, cs)
    ylo, yhi = interval_bounds(graph, lo, hi)[graph.output_name]
    x = lo + (hi - lo) * torch.rand(20000, 3, dtype=torch.float64)
    y = forward(graph, x)
    assert (y >= lb[0, :4] - 1e-12).all() and (-y >= lb[0, 4:] - 1e-12).all()
    assert (y >= ylo - 1e-12).all() and (y <= yhi + 1e-12).all()


@pytest.mark.parametrize("form", ["mul", "div", "const_div"])
def test_imported_products_equal_onnxruntime(form):
    from helpers_nets import Builder, assert_matches, graph_of

    b = Builder(np.random.default_rng(3), 13)
    h = b.op("Relu", [b.gemm("x", 3, 4)])
    pos = b.op("Add", [h, b.const([1.0])])           # >= 1: a divisor away from 0
    g = b.gemm("x", 3, 4)
    y = {"mul": lambda: b.op("Mul", [g, h]), "div": lambda: b.op("Div", [g, pos]),
         "const_div": lambda: b.op("Div", [b.const([1.0, -2.0, 3.0, 0.5]), pos])}[form]()
    model = b.finish("x", [1, 3], y)
    xs = [np.random.default_rng(k).uniform(-2, 2, size=(1, 3)).astype(np.float32) for k in range(8)]
    assert_matches(model, graph_of(model), xs)


@pytest.mark.parametrize("shapes", [((1, 3, 4), (1, 4, 2)), ((1, 2, 3, 4), (1, 2, 4, 3))])
def test_matmul_of_two_variables_equals_onnxruntime_and_bounds_hold(shapes):
    """Attention-like A @ B with both factors computed from the input."""
    from helpers_nets import Builder, assert_matches, graph_of
    from verifier.bounds.interval import interval_bounds
    from verifier.evaluate import forward

    (sa, sb) = shapes
    b = Builder(np.random.default_rng(5), 13)
    na, nb = int(np.prod(sa)), int(np.prod(sb))
    A = b.op("Reshape", [b.gemm("x", 3, na), b.ints(list(sa))])
    B = b.op("Reshape", [b.op("Relu", [b.gemm("x", 3, nb)]), b.ints(list(sb))])
    model = b.finish("x", [1, 3], b.op("MatMul", [A, B]))
    graph = graph_of(model)
    xs = [np.random.default_rng(k).uniform(-1, 1, size=(1, 3)).astype(np.float32) for k in range(6)]
    assert_matches(model, graph, xs)
    lo, hi = -torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    ylo, yhi = interval_bounds(graph, lo, hi)[graph.output_name]
    y = forward(graph, lo + (hi - lo) * torch.rand(4096, 3, dtype=torch.float64))
    assert (y >= ylo - 1e-12).all() and (y <= yhi + 1e-12).all()
