"""Every rule object against concrete executions.

Activations (Relu, Sigmoid, Tanh): on hypothesis-drawn intervals, points of the interval
(endpoints, midpoint, 0 where inside, uniform samples) lie between the relaxation planes and
inside interval(); ReLU's lower plane is sound for every slope in lower_slope_range.
Linear rules: every linear node of every synthetic loader model (so each rule is reached through
its real converters) has apply == evaluate - bias(0), apply_t == the exact transpose of apply, and
apply_abs == |L| r, which bounds |L d| for |d| <= r.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_nets import one_torch_thread  # noqa: F401 (autouse fixture)
from test_loader import CASES, build_case
from verifier.ir import Node
from verifier.onnx_import import to_graph
from verifier.ops import RULES, ActivationRule, LinearRule

DT = torch.float64
EPS = torch.finfo(DT).eps
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- activations
def _interval():
    """(lo, hi) pairs: points, tiny widths, widths across 0, large magnitudes up to +-50."""
    centre = st.one_of(st.floats(-50, 50), st.sampled_from([0.0, -0.0, 1e-300, -1e-12, 50.0, -50.0]),
                       st.floats(-1e-3, 1e-3))
    width = st.one_of(st.just(0.0), st.floats(0, 1e-9), st.floats(1e-9, 1e-3), st.floats(0, 100))
    return st.tuples(centre, width).map(lambda cw: (cw[0], min(50.0, cw[0] + cw[1])) if cw[0] + cw[1] <= 50
                                        else (max(-50.0, cw[0] - cw[1]), cw[0]))


def _across_zero():
    return st.tuples(st.floats(-50, 0), st.floats(0, 50))


def _boxes():
    return st.lists(st.one_of(_interval(), _across_zero()), min_size=1, max_size=16)


def _points(lo: torch.Tensor, hi: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n + 4, k): lo, hi, midpoint, 0 clamped into the box, and n uniform points."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((n,) + lo.shape, generator=g, dtype=DT)
    pts = [lo, hi, (lo + hi) / 2, torch.zeros_like(lo).clamp(lo, hi), lo + (hi - lo) * u]
    return torch.cat([p.reshape((-1,) + lo.shape) for p in pts]).clamp(lo, hi)


def _node(op: str, k: int) -> Node:
    return Node("act", op, ("x",), {}, (k,))


def _plane_slack(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The rounding of evaluating w*x + b and f(x) in float64: a few ulps of their terms."""
    return 4 * EPS * ((w * x).abs() + b.abs() + f.abs())


def _check_planes(op: str, lo: torch.Tensor, hi: torch.Tensor, seed: int) -> None:
    rule = RULES[op]
    node = _node(op, lo.shape[-1])
    lw, lb, uw, ub = rule.relax(node, lo, hi)
    x = _points(lo, hi, 64, seed)
    fx = rule.evaluate(node, x)
    below = lw * x + lb - fx - _plane_slack(lw, x, lb, fx)
    above = fx - (uw * x + ub) - _plane_slack(uw, x, ub, fx)
    assert (below <= 0).all(), f"{op} lower plane above f by {below.max():.3e} on {_worst(below, lo, hi)}"
    assert (above <= 0).all(), f"{op} upper plane below f by {above.max():.3e} on {_worst(above, lo, hi)}"
    for t in (lw, lb, uw, ub):
        assert torch.isfinite(t).all()
    ilo, ihi = rule.interval(node, lo, hi)
    assert (ilo <= fx).all() and (fx <= ihi).all(), f"{op} interval misses f(x)"


def _worst(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> str:
    j = int(v.max(0).values.argmax())
    return f"[{lo[j].item()!r}, {hi[j].item()!r}]"


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh"])
@SETTINGS
@given(boxes=_boxes(), seed=st.integers(0, 2 ** 16))
def test_activation_planes_and_interval_contain_f(op, boxes, seed):
    lo = torch.tensor([b[0] for b in boxes], dtype=DT)
    hi = torch.tensor([b[1] for b in boxes], dtype=DT)
    _check_planes(op, lo, hi, seed)


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh"])
def test_activation_planes_on_a_grid(op):
    """Deterministic sweep: every pair of grid points in [-50, 50] (including equal ones)."""
    tiny = {0.0, 5e-324, -5e-324, 1e-300, -1e-300, 1e-12, -1e-12, 1e-6, -1e-6}  # subnormals included
    grid = torch.tensor(sorted(tiny | set(np.linspace(-50, 50, 41).tolist())), dtype=DT)
    lo, hi = torch.meshgrid(grid, grid, indexing="ij")
    keep = lo <= hi
    _check_planes(op, lo[keep], hi[keep], 0)


@SETTINGS
@given(boxes=_boxes(), seed=st.integers(0, 2 ** 16))
def test_relu_lower_plane_sound_for_every_slope_in_range(boxes, seed):
    rule = RULES["Relu"]
    lo = torch.tensor([b[0] for b in boxes], dtype=DT)
    hi = torch.tensor([b[1] for b in boxes], dtype=DT)
    node = _node("Relu", lo.shape[0])
    rng = rule.lower_slope_range(node, lo, hi)
    assert rng is not None
    g = torch.Generator().manual_seed(seed)
    for t in (torch.rand(lo.shape, generator=g, dtype=DT), torch.zeros_like(lo), torch.ones_like(lo)):
        slope = rng[0] + (rng[1] - rng[0]) * t
        lw, lb = rule.lower_with_slope(node, lo, hi, slope)
        x = _points(lo, hi, 32, seed)
        fx = rule.evaluate(node, x)
        assert (lw * x + lb <= fx + _plane_slack(lw, x, lb, fx)).all()


def test_relu_lower_with_slope_broadcasts_over_rows():
    """alpha-CROWN calls it with bounds (B, 1, n) and slopes (B, q, n)."""
    rule = RULES["Relu"]
    lo = torch.tensor([[[-1.0, 0.5, -2.0]]], dtype=DT)
    hi = torch.tensor([[[1.0, 1.0, -1.0]]], dtype=DT)
    slope = torch.tensor([[[0.3, 0.3, 0.3], [0.9, 0.0, 1.0]]], dtype=DT)
    lw, lb = rule.lower_with_slope(_node("Relu", 3), lo, hi, slope)
    assert lw.shape == (1, 2, 3)
    assert torch.equal(lw, torch.tensor([[[0.3, 1.0, 0.0], [0.9, 1.0, 0.0]]], dtype=DT))
    assert (lb == 0).all()


def test_every_registered_rule_is_tested():
    """Relu, Sigmoid, Tanh here; the operators of ops/elementwise.py and ops/piecewise.py in
    test_ops_elementwise.py; ReluDelta and MonotoneDelta in test_joint.py; MulVar in test_bilinear.py; linear rules here and in
    test_ops_linear_more.py; the comparisons, casts and ArgMax of ops/compare.py in test_compare_ops.py."""
    from test_compare_ops import RULE_CASES as COMPARE
    from test_ops_linear_more import LINEAR_NODES as MORE
    from verifier.ops import compare, elementwise, piecewise

    stepped = {n.op for n in COMPARE.values()} | {"ArgMax"}
    assert {op for op, r in RULES.items() if type(r).__module__ == compare.__name__} == stepped
    activations = {op for op, r in RULES.items() if isinstance(r, ActivationRule)
                   and type(r).__module__ not in (elementwise.__name__, piecewise.__name__, compare.__name__)}
    assert activations == {"Relu", "Sigmoid", "Tanh", "ReluDelta", "MonotoneDelta", "MulVar"}, \
        "a new activation needs its soundness test"
    linear = {op for op, r in RULES.items() if isinstance(r, LinearRule)}
    tested = {n.op for _, n, _ in LINEAR_NODES} | {p.values[0].op for p in MORE}
    assert linear <= tested, f"untested linear rules: {linear - tested}"


# --------------------------------------------------------------------------- linear rules
def _linear_nodes():
    """(case id, node, input shapes) for every linear node of every loader case (first opset)."""
    out, seen = [], set()
    for name, (_, opsets) in CASES.items():
        graph = to_graph(build_case(name, opsets[-1])[0])
        for node in graph.nodes:
            if RULES[node.op].linear:
                key = (node.op, tuple(graph.shape_of(i) for i in node.inputs), node.shape, repr(sorted(node.params)))
                if key in seen:
                    continue
                seen.add(key)
                out.append((f"{name}:{node.op}:{node.name}", node, [graph.shape_of(i) for i in node.inputs]))
    return out


LINEAR_NODES = _linear_nodes()


def _dense(rule, node: Node, in_shapes) -> torch.Tensor:
    """L as a dense (n_out, sum n_in) matrix, column by column from apply on unit vectors."""
    cols = []
    for k, s in enumerate(in_shapes):
        n = int(np.prod(s, dtype=np.int64))
        eye = torch.eye(n, dtype=DT).reshape((n,) + tuple(s))
        xs = [eye if j == k else torch.zeros((n,) + tuple(t), dtype=DT) for j, t in enumerate(in_shapes)]
        cols.append(rule.apply(node, *xs).reshape(n, -1).T)
    return torch.cat(cols, dim=1)


@pytest.mark.parametrize("cid,node,in_shapes", LINEAR_NODES, ids=[c for c, _, _ in LINEAR_NODES])
def test_linear_rule_consistency(cid, node, in_shapes):
    rule = RULES[node.op]
    g = torch.Generator().manual_seed(0)
    B = 3
    xs = [torch.randn((B,) + tuple(s), generator=g, dtype=DT) for s in in_shapes]
    y = rule.evaluate(node, *xs)
    assert tuple(y.shape) == (B,) + node.shape

    # f(x) == bias(0) + L x
    b = rule.bias(node, xs[0], in_shapes)
    Lx = rule.apply(node, *xs)
    assert tuple(Lx.shape) == (B,) + node.shape
    recon = Lx if b is None else Lx + b
    assert torch.allclose(recon, y, rtol=1e-12, atol=1e-12 * (1 + y.abs().max().item()))
    zero = rule.evaluate(node, *[torch.zeros_like(x) for x in xs])
    assert torch.allclose(zero, torch.zeros_like(zero) if b is None else b.expand_as(zero), rtol=0, atol=1e-12)

    # apply_t is the exact transpose: <A, L x> == sum_i <L_i^T A, x_i>
    A = torch.randn((B,) + node.shape, generator=g, dtype=DT)
    ATs = rule.apply_t(node, A, in_shapes)
    assert len(ATs) == len(xs)
    for at, s in zip(ATs, in_shapes):
        assert tuple(at.shape) == (B,) + tuple(s)
    lhs = (A * Lx).reshape(B, -1).sum(1)
    rhs = sum((at * x).reshape(B, -1).sum(1) for at, x in zip(ATs, xs))
    scale = ((A.abs() * rule.apply_abs(node, *[x.abs() for x in xs])).reshape(B, -1).sum(1)).max().item()
    assert torch.allclose(lhs, rhs, rtol=0, atol=1e-9 * (1 + scale)), f"{(lhs - rhs).abs().max():.3e}"

    # against the dense matrix: apply_t == L^T A and apply_abs == |L| r exactly
    n_in = sum(int(np.prod(s, dtype=np.int64)) for s in in_shapes)
    if n_in * node.size <= 200_000:
        L = _dense(rule, node, in_shapes)
        at_flat = torch.cat([at.reshape(B, -1) for at in ATs], dim=1)
        assert torch.allclose(at_flat, A.reshape(B, -1) @ L, rtol=0, atol=1e-10 * (1 + L.abs().sum(0).max().item()))
        rs = [torch.rand((B,) + tuple(s), generator=g, dtype=DT) for s in in_shapes]
        r_flat = torch.cat([r.reshape(B, -1) for r in rs], dim=1)
        absr = rule.apply_abs(node, *rs)
        assert tuple(absr.shape) == (B,) + node.shape
        assert torch.allclose(absr.reshape(B, -1), r_flat @ L.abs().T, rtol=1e-12, atol=1e-12)

    # |L d| <= |L| r for |d| <= r, corners included
    rs = [torch.rand((B,) + tuple(s), generator=g, dtype=DT) for s in in_shapes]
    bound = rule.apply_abs(node, *rs)
    for _ in range(4):
        ds = [r * torch.empty_like(r).uniform_(-1, 1, generator=g) for r in rs] + \
             [r * torch.randint(0, 2, r.shape, generator=g).to(DT).mul(2).sub(1) for r in rs]
        for d in (ds[:len(rs)], ds[len(rs):]):
            Ld = rule.apply(node, *d).abs()
            assert (Ld <= bound * (1 + 1e-12) + 1e-15).all()
