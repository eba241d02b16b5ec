"""The bound algorithms against concrete executions.

Random small networks (MLPs mixing ReLU / Sigmoid / Tanh, conv nets with BN, AvgPool or
MaxPool, a residual block, Slice / Concat branches) are built as ONNX and imported; for random
input boxes, sampled points (uniform and box corners) and PGD points (verifier.attack pushing
each bounded row down and each output up and down) must lie inside
  * the interval (IBP) bounds of every value,
  * CROWN's intermediate bounds (the input of every activation),
  * CROWN's and alpha-CROWN's lower bounds of C @ y for random C (and C = +-I).
Plus analytic cases (one Gemm: W x0 + b +- eps |W| 1) and orderings (alpha-CROWN >= CROWN, and
CROWN vs IBP on the output).  On the shared benchmarks (skipped when absent) real boxes from the
first property of an instance are checked the same way.

Every comparison allows 1e-9 relative: the float64 bound arithmetic drifts ~1e-13 on these
nets, so anything past 1e-9 is a real unsoundness, not rounding.
"""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_nets import (Builder, one_torch_thread, random_branches, random_convnet,  # noqa: F401 (fixture)
                          random_exotic, random_mlp, random_residual)
from verifier.attack import AttackConfig, attack
from verifier.bounds.alpha import AlphaConfig, alpha_intermediate, alpha_lower
from verifier.bounds.backward import activation_inputs, crown_intermediate, crown_output
from verifier.bounds.forward import forward_bounds
from verifier.bounds.interval import interval_bounds
from verifier.budget import Deadline
from verifier.evaluate import forward_all
from verifier.onnx_import import load_graph, to_graph
from verifier.ops import RULES
from verifier.simplify import simplify
from verifier.spec import Cases

DT = torch.float64
REL = 1e-9
BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"

NETS = {
    "mlp_relu": lambda r: random_mlp(r, 3, [8, 8, 6], 3, ["Relu"]),
    "mlp_mixed": lambda r: random_mlp(r, 4, [7, 6, 5], 3, ["Relu", "Sigmoid", "Tanh"]),
    "mlp_smooth": lambda r: random_mlp(r, 2, [6, 6], 2, ["Tanh", "Sigmoid"]),
    "conv_avgpool": lambda r: random_convnet(r, pool="avg"),
    "conv_maxpool": lambda r: random_convnet(r, pool="max"),
    "conv_sigmoid": lambda r: random_convnet(r, pool="avg", act="Sigmoid"),
    "residual": lambda r: random_residual(r),
    "branches": lambda r: random_branches(r),
    "exotic": lambda r: random_exotic(r),
}
_GRAPHS: dict[tuple[str, int, bool], object] = {}


def net(kind: str, seed: int, simplified: bool = False):
    """The imported network; simplified: after verifier.simplify (Affine folding), the graph
    the verifier's API actually bounds."""
    key = (kind, seed, simplified)
    if key not in _GRAPHS:
        g = to_graph(NETS[kind](np.random.default_rng(seed)))
        _GRAPHS[key] = simplify(g) if simplified else g
    return _GRAPHS[key]


# --------------------------------------------------------------------------- points
def random_boxes(graph, B: int, eps: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B boxes x0 +- eps*u (u in [0.2, 1] per element, so widths differ), x0 ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    shape = (B,) + tuple(graph.input_shape)
    x0 = torch.randn(shape, generator=g, dtype=DT)
    r = eps * (0.2 + 0.8 * torch.rand(shape, generator=g, dtype=DT))
    return x0 - r, x0 + r


def box_points(lo: torch.Tensor, hi: torch.Tensor, n_uniform: int, n_corners: int, seed: int) -> torch.Tensor:
    """(B, N, *in): the centre, uniform points and corners (all of them when there are at most
    n_corners, random ones otherwise)."""
    g = torch.Generator().manual_seed(seed)
    B, shape = lo.shape[0], tuple(lo.shape[1:])
    n_in = int(np.prod(shape))
    lo1, hi1 = lo.unsqueeze(1), hi.unsqueeze(1)
    u = torch.rand((B, n_uniform) + shape, generator=g, dtype=DT)
    if 2 ** n_in <= n_corners:
        bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n_in)), dtype=DT).reshape((-1,) + shape)
        corners = bits.unsqueeze(0).expand((B,) + tuple(bits.shape))
    else:
        corners = torch.randint(0, 2, (B, n_corners) + shape, generator=g).to(DT)
    inner = lo1 + (hi1 - lo1) * torch.cat([0.5 * torch.ones((B, 1) + shape, dtype=DT), u], dim=1)
    return torch.cat([inner.clamp(lo1, hi1), torch.where(corners > 0, hi1, lo1)], dim=1)


def attack_points(graph, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, steps: int = 15) -> torch.Tensor:
    """(B, q, *in): for each box b and row c = C[b, j], the PGD point minimising c . y.  The
    rows get d = 1e6 so that no row counts as violated and the attack never stops early."""
    B, q, n_out = C.shape
    K = B * q
    rep = lambda t: t.repeat_interleave(q, dim=0)  # noqa: E731
    cases = Cases(rep(lo), rep(hi), C.reshape(K, 1, n_out), torch.full((K, 1), 1e6, dtype=DT),
                  torch.zeros((K, 1), dtype=torch.long), torch.ones((K, 1), dtype=torch.bool),
                  np.arange(K))
    cfg = AttackConfig(samples=16, restarts=3, steps=steps, search_steps=0)  # PGD points only
    x, _ = attack(graph, cases, Deadline(120.0), cfg, torch.Generator().manual_seed(0))
    return x.reshape((B, q) + tuple(lo.shape[1:]))


def values_at(graph, pts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every value of the graph at pts (B, N, *in), as (B, N, *shape)."""
    B, N = pts.shape[:2]
    vals = forward_all(graph, pts.reshape((B * N,) + tuple(pts.shape[2:])))
    return {k: v.reshape((B, N) + tuple(v.shape[1:])) for k, v in vals.items()}


def eye_rows(n: int, B: int) -> torch.Tensor:
    I = torch.eye(n, dtype=DT)
    return torch.cat([I, -I]).unsqueeze(0).expand(B, 2 * n, n).clone()


# --------------------------------------------------------------------------- assertions
def assert_inside(what: str, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
    """v (B, N, *shape) inside [lo, hi] (B, *shape) up to REL."""
    l, h = lo.unsqueeze(1), hi.unsqueeze(1)
    tol = REL * (1 + v.abs() + torch.maximum(l.abs(), h.abs()))
    below, above = (l - v - tol).max().item(), (v - h - tol).max().item()
    assert below <= 0 and above <= 0, f"{what}: a point lies outside its bounds by {max(below, above):.3e}"


def assert_lower(what: str, lb: torch.Tensor, C: torch.Tensor, y: torch.Tensor) -> None:
    """lb (B, q) <= C[b] @ y[b, n] for every point n; y (B, N, n_out)."""
    cy = torch.einsum("bqo,bno->bqn", C, y.reshape(y.shape[0], y.shape[1], -1))
    gap = (lb.unsqueeze(-1) - cy - REL * (1 + cy.abs() + lb.unsqueeze(-1).abs())).max().item()
    assert torch.isfinite(lb).all(), f"{what}: non-finite bound"
    assert gap <= 0, f"{what}: lower bound above C @ f(x) by {gap:.3e}"


def check_network(graph, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, pts: torch.Tensor,
                  alpha: bool = True, alpha_layers: bool = False) -> dict:
    """All soundness checks on one network and batch of boxes (C: (B, q, n_out) random rows, to
    which +-I is appended); returns the output bounds found."""
    B = lo.shape[0]
    rows = torch.cat([C, eye_rows(graph.output_size, B)], dim=1)
    assert ((pts >= lo.unsqueeze(1)) & (pts <= hi.unsqueeze(1))).all(), "a sampled point left its box"
    adv = attack_points(graph, lo, hi, rows)
    assert ((adv >= lo.unsqueeze(1)) & (adv <= hi.unsqueeze(1))).all(), "the attack left the box"
    pts = torch.cat([pts, adv], dim=1)
    vals = values_at(graph, pts)

    with torch.no_grad():
        ibp = interval_bounds(graph, lo, hi)
        for name, (l, h) in ibp.items():
            assert_inside(f"IBP bounds of {name}", vals[name], l, h)

        pre = crown_intermediate(graph, lo, hi)
        assert set(pre) == {a.name for a in activation_inputs(graph)}
        for act in activation_inputs(graph):
            l, h = pre[act.name]
            assert_inside(f"CROWN bounds of {act.inputs[0]} (input of {act.name})", vals[act.inputs[0]], l, h)
            il, ih = ibp[act.inputs[0]]
            # CROWN's intermediate bounds are intersected with the interval ones
            assert (l >= il - REL * (1 + il.abs())).all() and (h <= ih + REL * (1 + ih.abs())).all()

        fwd = forward_bounds(graph, lo, hi)
        for act in activation_inputs(graph):
            assert_inside(f"forward bounds of {act.inputs[0]} (input of {act.name})", vals[act.inputs[0]], *fwd[act.name])

        y = vals[graph.output_name]
        lb = crown_output(graph, lo, hi, rows, pre)
        assert lb.shape == rows.shape[:2]
        assert_lower("CROWN", lb, rows, y)

    out = {"ibp": ibp[graph.output_name], "crown": lb, "rows": rows}
    if alpha:
        d = torch.zeros(rows.shape[:2], dtype=DT)
        best = alpha_lower(graph, lo, hi, rows, d, pre, AlphaConfig(iterations=5), Deadline(120.0), lambda _: False)
        assert best.shape == lb.shape
        assert_lower("alpha-CROWN", best, rows, y)
        bad = (best < lb - REL * (1 + lb.abs())).nonzero()
        assert bad.numel() == 0, f"alpha-CROWN's best bound below CROWN's at {bad[:5].tolist()}"
        out["alpha"] = best
    if alpha_layers:
        tight = alpha_intermediate(graph, lo, hi, pre, AlphaConfig(iterations=2), Deadline(120.0))
        for act in activation_inputs(graph):
            (l, h), (l0, h0) = tight[act.name], pre[act.name]
            assert_inside(f"alpha-CROWN bounds of {act.inputs[0]} (input of {act.name})", vals[act.inputs[0]], l, h)
            assert (l >= l0).all() and (h <= h0).all(), "alpha-CROWN intermediate bounds looser than CROWN's"
        assert_lower("alpha-CROWN over alpha-CROWN intermediate bounds", crown_output(graph, lo, hi, rows, tight), rows, y)
    return out


# --------------------------------------------------------------------------- random networks
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("kind", list(NETS))
@PROPERTY
@given(seed=st.integers(0, 3), box_seed=st.integers(0, 10_000),
       eps=st.sampled_from([0.0, 1e-4, 0.05, 0.3, 1.0, 3.0]), q=st.integers(1, 4), simplified=st.booleans())
def test_bounds_contain_sampled_and_attacked_points(kind, seed, box_seed, eps, q, simplified):
    graph = net(kind, seed, simplified)
    B = 2
    lo, hi = random_boxes(graph, B, eps, box_seed)
    C = torch.randn((B, q, graph.output_size), generator=torch.Generator().manual_seed(box_seed), dtype=DT)
    pts = box_points(lo, hi, 48, 32, box_seed)
    check_network(graph, lo, hi, C, pts)


@pytest.mark.parametrize("kind", list(NETS))
@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 3), box_seed=st.integers(0, 10_000), eps=st.sampled_from([0.05, 0.3, 1.0]))
def test_alpha_intermediate_bounds_contain_points(kind, seed, box_seed, eps):
    """Optimised-slope bounds of every activation input (alpha_intermediate) hold the sampled and
    attacked values, are never looser than CROWN's, and the output bound over them holds too."""
    graph = net(kind, seed, False)
    lo, hi = random_boxes(graph, 2, eps, box_seed)
    C = torch.randn((2, 2, graph.output_size), generator=torch.Generator().manual_seed(box_seed), dtype=DT)
    check_network(graph, lo, hi, C, box_points(lo, hi, 48, 32, box_seed), alpha=False, alpha_layers=True)


@pytest.mark.parametrize("kind", ["mlp_relu", "residual", "conv_maxpool"])
def test_alpha_from_any_warm_start_stays_sound(kind):
    """Branch and bound starts alpha-CROWN from a parent's slopes: any start, even out of range,
    gives sound bounds (slopes are clamped), and the slopes handed back are in range."""
    graph = net(kind, 1)
    lo, hi = random_boxes(graph, 2, 0.3, 7)
    rows = eye_rows(graph.output_size, 2)
    y = values_at(graph, torch.cat([box_points(lo, hi, 48, 32, 7), attack_points(graph, lo, hi, rows)], 1))[graph.output_name]
    pre = crown_intermediate(graph, lo, hi)
    gen = torch.Generator().manual_seed(3)
    warm = {"slopes": {a.name: 3 * torch.rand((2, rows.shape[1]) + tuple(a.shape), generator=gen, dtype=DT) - 1
                       for a in activation_inputs(graph)}, "betas": {}}
    kept: dict = {}
    d = torch.zeros(rows.shape[:2], dtype=DT)
    best = alpha_lower(graph, lo, hi, rows, d, pre, AlphaConfig(iterations=3), Deadline(60.0), lambda _: False,
                       warm=warm, keep=kept)
    assert_lower("alpha-CROWN from a warm start", best, rows, y)
    for name, s in kept["slopes"].items():
        assert ((s >= 0) & (s <= 1)).all(), name


# --------------------------------------------------------------------------- orderings
def _crown_vs_ibp(graph, lo, hi, zero_slopes: bool = False) -> tuple[int, int, float]:
    """(rows where CROWN's output bound is looser than IBP's, rows, worst gap) for C = +-I.
    zero_slopes: every optimisable (ReLU) lower slope fixed at 0 instead of the adaptive choice."""
    B = lo.shape[0]
    rows = eye_rows(graph.output_size, B)
    with torch.no_grad():
        ibp_lo, ibp_hi = interval_bounds(graph, lo, hi)[graph.output_name]
        pre = crown_intermediate(graph, lo, hi)
        slopes = None
        if zero_slopes:
            slopes = {a.name: torch.zeros((B, rows.shape[1]) + tuple(a.shape), dtype=DT)
                      for a in activation_inputs(graph) if RULES[a.op].lower_slope_range(a, *pre[a.name]) is not None}
        lb = crown_output(graph, lo, hi, rows, pre, slopes)
    ibp_rows = torch.cat([ibp_lo.reshape(B, -1), -ibp_hi.reshape(B, -1)], dim=1)
    gap = ibp_rows - lb - REL * (1 + ibp_rows.abs())
    return int((gap > 0).sum()), rows.shape[1] * B, float(gap.max())


def _count_looser(kind: str, epss, zero_slopes: bool = False) -> tuple[int, int, float]:
    looser, total, worst = 0, 0, -np.inf
    for seed in range(3):
        graph = net(kind, seed)
        for eps in epss:
            lo, hi = random_boxes(graph, 2, eps, 100 * seed + int(100 * eps))
            a, t, w = _crown_vs_ibp(graph, lo, hi, zero_slopes)
            looser, total, worst = looser + a, total + t, max(worst, w)
    return looser, total, worst


# Sigmoid and Tanh across 0 take the planes through an end of the interval, tangent to f on the
# other side (CROWN's): much tighter through the layers, but like ReLU's adaptive lower slope they
# concretise below f's own interval at the far end, so the dominance below is no theorem there.
_THROUGH_END = {"mlp_mixed", "mlp_smooth", "conv_sigmoid", "branches", "exotic"}


@pytest.mark.parametrize("kind", sorted(set(NETS) - _THROUGH_END))
def test_crown_with_zero_relu_slopes_dominates_ibp(kind):
    """With ReLU lower planes at 0 every relaxation concretises to IBP's own interval, and
    deferring the concretisation (back-substitution) can only tighten: CROWN >= IBP per row."""
    looser, total, worst = _count_looser(kind, (0.01, 0.1, 0.5, 2.0), zero_slopes=True)
    assert looser == 0, f"CROWN looser than IBP on {looser} of {total} output rows (worst by {worst:.3e})"


# CROWN with the adaptive ReLU lower slope (1 where hi > -lo) is NOT always as tight as IBP:
# a lower plane x on [lo, hi] goes down to lo < 0 where IBP knows relu >= 0.  Measured (6 seeds x
# 2 boxes per width): 3-hidden-layer ReLU MLP 4/72 rows looser at eps 0.5, 15/72 at eps 2
# (worst by 2.0); residual net 7/72 at eps 2; exotic net 3/48 at eps 0.1 up to 20/48 at eps 2
# (worst by 5.6); never for the other nets, never at eps 0.01.  Since Sigmoid and Tanh take planes
# through an end (above, where they leave less area than the parallelogram), the net with
# branches is looser on some wide rows too, and the
# exotic net no longer on narrow ones.  With the slopes at 0 (test above)
# the gap disappears everywhere, and an independent CROWN on the MLP gives the same numbers, so
# it is CROWN's heuristic, not a bug: consumers must take max(IBP, CROWN) per row.
# strict xfail: a change that makes CROWN dominate (e.g. a final intersection) must update these.
_ADAPTIVE_LOOSER = {"narrow": set(), "wide": {"mlp_relu", "residual", "exotic", "branches"}}
_EPS = {"narrow": (0.01, 0.1), "wide": (0.5, 2.0)}


@pytest.mark.parametrize("width,kind", [
    pytest.param(w, k, id=f"{k}-{w}", marks=[pytest.mark.xfail(
        strict=True, reason="adaptive-slope CROWN can be looser than IBP; consumers must intersect")]
        if k in _ADAPTIVE_LOOSER[w] else [])
    for w in ("narrow", "wide") for k in NETS])
def test_crown_adaptive_output_vs_ibp(width, kind):
    looser, total, worst = _count_looser(kind, _EPS[width])
    assert looser == 0, f"CROWN looser than IBP on {looser} of {total} output rows (worst by {worst:.3e})"


@pytest.mark.parametrize("kind", sorted(_ADAPTIVE_LOOSER["wide"]))
def test_incomplete_crown_lower_intersects_ibp(kind):
    """The consumer (verifier.incomplete.crown_lower) takes max(IBP, CROWN) per row: never
    looser than IBP, and still below every sampled and attacked value of C @ y + d."""
    from verifier.incomplete import crown_lower, ibp_lower

    for seed in range(3):
        graph = net(kind, seed)
        lo, hi = random_boxes(graph, 2, 2.0, seed)
        rows = torch.cat([eye_rows(graph.output_size, 2),
                          torch.randn((2, 3, graph.output_size), generator=torch.Generator().manual_seed(seed),
                                      dtype=DT)], dim=1)
        B, q = rows.shape[:2]
        d = torch.randn((B, q), generator=torch.Generator().manual_seed(seed + 1), dtype=DT)
        cases = Cases(lo, hi, rows, d, torch.zeros((B, q), dtype=torch.long), torch.ones((B, 1), dtype=torch.bool),
                      np.arange(B))
        lb, _ = crown_lower(graph, cases)
        ibp = ibp_lower(graph, cases)
        assert (lb >= ibp - REL * (1 + ibp.abs())).all()
        pts = torch.cat([box_points(lo, hi, 64, 32, seed), attack_points(graph, lo, hi, rows)], dim=1)
        y = values_at(graph, pts)[graph.output_name]
        assert_lower("incomplete.crown_lower", lb - d, rows, y)


# --------------------------------------------------------------------------- analytic cases
@pytest.mark.parametrize("shape,n_out", [((1, 5), 3), ((1, 1), 4), ((1, 7), 1)])
@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.5, 10.0])
def test_single_gemm_bounds_are_exact(shape, n_out, eps):
    b = Builder(np.random.default_rng(shape[1] * 10 + n_out), 13)
    y = b.gemm("x", shape[1], n_out, scale=1.0)
    graph = to_graph(b.finish("x", list(shape), y))
    W = torch.as_tensor(np.asarray(graph.nodes[0].params["W"]), dtype=DT).T     # (n_out, n_in)
    bias = torch.as_tensor(np.asarray(graph.nodes[0].params["b"]), dtype=DT)
    x0 = torch.randn((3, shape[1]), generator=torch.Generator().manual_seed(1), dtype=DT)
    lo, hi = x0 - eps, x0 + eps
    centre = x0 @ W.T + bias
    rad = eps * W.abs().sum(1)
    expect_lo, expect_hi = centre - rad, centre + rad
    tol = 1e-9 * (1 + centre.abs().max().item() + rad.max().item())

    ibp_lo, ibp_hi = interval_bounds(graph, lo, hi)[graph.output_name]
    assert torch.allclose(ibp_lo, expect_lo, rtol=0, atol=tol) and torch.allclose(ibp_hi, expect_hi, rtol=0, atol=tol)
    assert (ibp_lo <= expect_lo).all() and (ibp_hi >= expect_hi - 1e-15 * (1 + expect_hi.abs())).all()

    pre = crown_intermediate(graph, lo, hi)
    assert pre == {}
    lb = crown_output(graph, lo, hi, eye_rows(n_out, 3), pre)
    assert torch.allclose(lb[:, :n_out], expect_lo, rtol=0, atol=tol)
    assert torch.allclose(-lb[:, n_out:], expect_hi, rtol=0, atol=tol)


def test_single_relu_crown_matches_triangle():
    """y = relu(x), x in [-1, 3]: CROWN's upper bound is the chord at x = 3 (3) and its lower
    bound, with the adaptive slope 1 (hi > -lo), is x at x = -1 (-1); IBP gives [0, 3]."""
    b = Builder(np.random.default_rng(0), 13)
    graph = to_graph(b.finish("x", [1, 1], b.op("Relu", ["x"])))
    lo, hi = torch.tensor([[-1.0]], dtype=DT), torch.tensor([[3.0]], dtype=DT)
    pre = crown_intermediate(graph, lo, hi)
    lb = crown_output(graph, lo, hi, eye_rows(1, 1), pre)
    assert torch.allclose(lb, torch.tensor([[-1.0, -3.0]], dtype=DT))
    ibp_lo, ibp_hi = interval_bounds(graph, lo, hi)[graph.output_name]
    assert ibp_lo.item() == 0.0 and ibp_hi.item() == 3.0
    # alpha-CROWN may move the lower slope to 0 and reach the exact bound 0
    best = alpha_lower(graph, lo, hi, eye_rows(1, 1), torch.zeros(1, 2, dtype=DT), pre,
                       AlphaConfig(iterations=20, lr=0.5), Deadline(60.0), lambda _: False)
    assert best[0, 0] >= -1.0 and best[0, 0] <= 1e-12 and torch.allclose(best[0, 1], torch.tensor(-3.0, dtype=DT))


def test_batch_rows_are_independent():
    """Bounds of box b must not depend on the other boxes of the batch."""
    graph = net("residual", 0)
    lo, hi = random_boxes(graph, 3, 0.2, 7)
    C = torch.randn((3, 2, graph.output_size), generator=torch.Generator().manual_seed(3), dtype=DT)
    with torch.no_grad():
        together = crown_output(graph, lo, hi, C, crown_intermediate(graph, lo, hi))
        for b in range(3):
            s = slice(b, b + 1)
            alone = crown_output(graph, lo[s], hi[s], C[s], crown_intermediate(graph, lo[s], hi[s]))
            assert torch.allclose(alone, together[s], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- real networks
REAL = [  # (bench, network path in instances.csv, sampled points per box)
    ("mnist_fc", "onnx/mnist-net_256x2.onnx", 64),
    ("acasxu_2023", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", 64),
    ("oval21", "nets/cifar_base_kw.onnx", 16),
    ("cifar10_resnet", "onnx/resnet_2b.onnx", 6),
]


def _first_box(bench: str, onnx_rel: str, graph) -> tuple[torch.Tensor, torch.Tensor]:
    """The input box of the first case of the network's first instance; if the property does not
    parse, a box of radius 0.01 around a random point."""
    with open(BENCH / bench / "instances.csv", newline="") as f:
        spec = next(r["vnnlib"] for r in csv.DictReader(f) if r["onnx"] == onnx_rel)
    try:
        import vnnlib

        case = vnnlib.parse_file(BENCH / bench / spec).cases[0]
        lo, hi = case.lo, case.hi
    except Exception as e:  # the parser is not under test here
        import warnings

        warnings.warn(f"{spec}: {e}; using a random box instead")
        x0 = np.random.default_rng(0).uniform(0, 1, graph.input_size)
        lo, hi = x0 - 0.01, x0 + 0.01
    shape = (1,) + tuple(graph.input_shape)
    return torch.as_tensor(lo, dtype=DT).reshape(shape), torch.as_tensor(hi, dtype=DT).reshape(shape)


@pytest.mark.skipif(not BENCH.is_dir(), reason=f"benchmarks absent ({BENCH})")
@pytest.mark.parametrize("bench,onnx_rel,n_pts", REAL, ids=[r[0] for r in REAL])
def test_real_network_bounds_contain_points(bench, onnx_rel, n_pts):
    graph = load_graph(BENCH / bench / onnx_rel)
    lo, hi = _first_box(bench, onnx_rel, graph)
    n = graph.output_size
    pts = box_points(lo, hi, n_pts, n_pts, 0)
    rows = eye_rows(n, 1)
    adv = attack_points(graph, lo, hi, rows, steps=8 if bench == "cifar10_resnet" else 15)
    pts = torch.cat([pts, adv], dim=1)
    vals = values_at(graph, pts)
    with torch.no_grad():
        ibp = interval_bounds(graph, lo, hi)
        for name, (l, h) in ibp.items():
            assert_inside(f"IBP bounds of {name}", vals[name], l, h)
        pre = crown_intermediate(graph, lo, hi)
        for act in activation_inputs(graph):
            assert_inside(f"CROWN bounds of {act.inputs[0]}", vals[act.inputs[0]], *pre[act.name])
        lb = crown_output(graph, lo, hi, rows, pre)
    assert_lower("CROWN", lb, rows, vals[graph.output_name])
    ibp_lo, ibp_hi = ibp[graph.output_name]
    assert (lb[:, :n] >= ibp_lo.reshape(1, -1) - REL * (1 + ibp_lo.abs().reshape(1, -1))).all()
