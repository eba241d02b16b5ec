"""Rigorous rounding (issue 11, "never wrong"): every bound against exact arithmetic.

The oracles are exact: fractions.Fraction on the stored float parameters (the network the
verifier bounds is the one whose weights are those floats) and mpmath at 200 bits for sigmoid and
tanh.  No comparison here allows a tolerance: a lower bound must be <= the exact value.

  * the issue's case: outputs near 2^30 whose difference is <= 0 exactly; the old engine
    proved it > 0 (CROWN +3.8e-6, over a 1e-9 margin);
  * hypothesis-generated ReLU nets with offsets up to 2^30, weights down to 1e-40 and an output
    layer that cancels them, in float64 and float32 (the GPU's dtype), with subnormals flushed
    (as the pipeline runs) or not: IBP, CROWN, alpha-CROWN, forward bounds, CROWN's intermediate
    bounds, the back-substituted linear forms, the LP leaf certificate and input clipping;
  * NaN / infinite bounds never stabilise a neuron, refute a conjunct or close a branch;
  * the relaxation planes: ReLU's upper plane exactly at both ends, sigmoid / tanh planes and
    intervals against mpmath, including the tails and tiny intervals.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from contextlib import contextmanager
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier
from helpers_nets import Builder, one_torch_thread  # noqa: F401 (fixture)
from verifier.bab.clip import clip_boxes
from verifier.bab.activation_split import Domains, _branch
from verifier.bounds.alpha import AlphaConfig, alpha_lower
from verifier.bounds.backward import (Relaxation, backward_linear, crown_intermediate, crown_output, magnitudes,
                                      unstable_order)
from verifier.bounds.forward import forward_bounds
from verifier.bounds.interval import interval_bounds
from verifier.bounds.rounding import gamma, lower, upper
from verifier.budget import Deadline
from verifier.incomplete import crown_lower, ibp_lower
from verifier.ir import Graph, Node
from verifier.lp.leaf import certified_bound
from verifier.ops import RULES
from verifier.ops.activation import F_ERR_U
from verifier.spec import Cases, bound_tolerance, conjuncts_refuted
from verifier.verdict import Verdict

mpmath.mp.prec = 200
F64, F32 = torch.float64, torch.float32


@contextmanager
def flushing(on: bool):
    """Subnormals flushed (FTZ + DAZ) as the pipeline bounds, or not; off again afterwards."""
    torch.set_flush_denormal(on)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# --------------------------------------------------------------------------- exact oracle
def fr(x) -> Fraction:
    return Fraction(float(x))


def mlp(Ws: list[np.ndarray], bs: list[np.ndarray], dtype: torch.dtype) -> Graph:
    """x -> (MatMul, Relu)* -> MatMul, parameters stored in dtype."""
    nodes, prev = [], "x"
    for i, (W, b) in enumerate(zip(Ws, bs)):
        name = f"h{i}"
        nodes.append(Node(name, "MatMul", (prev,), {"W": torch.as_tensor(W, dtype=dtype),
                                                    "b": torch.as_tensor(b, dtype=dtype)}, (W.shape[1],)))
        prev = name
        if i < len(Ws) - 1:
            nodes.append(Node(f"r{i}", "Relu", (name,), {}, (W.shape[1],)))
            prev = f"r{i}"
    return Graph("x", (Ws[0].shape[0],), tuple(nodes), prev, (1, Ws[0].shape[0]))


def exact_values(graph: Graph, x) -> dict[str, list[Fraction]]:
    """Every value of an mlp() graph at the float point x, in exact rational arithmetic on the
    stored parameters."""
    vals = {graph.input_name: [fr(v) for v in x]}
    for node in graph.nodes:
        h = vals[node.inputs[0]]
        if node.op == "Relu":
            vals[node.name] = [max(Fraction(0), v) for v in h]
            continue
        W, b = node.params["W"].tolist(), node.params["b"].tolist()
        vals[node.name] = [sum((h[k] * Fraction(W[k][j]) for k in range(len(h))), Fraction(0)) + Fraction(b[j])
                           for j in range(len(b))]
    return vals


def points(lo: np.ndarray, hi: np.ndarray, rng, n_random: int = 3) -> list[np.ndarray]:
    """The centre, every corner and a few random points of the box (float64 coordinates)."""
    n = lo.size
    corners = [np.where(np.array([(i >> k) & 1 for k in range(n)], bool), hi, lo) for i in range(2 ** n)]
    mid = np.clip((lo + hi) / 2, lo, hi)
    rand = [np.clip(lo + (hi - lo) * rng.uniform(size=n), lo, hi) for _ in range(n_random)]
    return [mid] + corners + rand


# --------------------------------------------------------------------------- random nets
def random_problem(seed: int, dtype: torch.dtype, offset: float, tiny_w: float, radius: float):
    """A ReLU net with hidden biases of +-offset scale, some weights scaled by tiny_w, and an
    output layer whose bias cancels its value at the box centre (outputs ~0 from terms ~offset);
    a point or small box; rows C with d making each row ~0 at the centre.  Everything is
    rounded to dtype first, so the exact oracle sees the very floats the verifier uses."""
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(1, 4))
    widths = [int(w) for w in rng.integers(2, 6, size=int(rng.integers(1, 3)))]
    n_out = int(rng.integers(2, 4))
    sizes = [n_in] + widths + [n_out]
    np_dt = np.float32 if dtype == F32 else np.float64
    cast = lambda a: np.asarray(a, dtype=np_dt).astype(np.float64)  # noqa: E731
    Ws, bs = [], []
    for i in range(len(sizes) - 1):
        W = rng.standard_normal((sizes[i], sizes[i + 1])) * 2.0 ** rng.integers(-3, 4, (sizes[i], sizes[i + 1]))
        W = np.where(rng.uniform(size=W.shape) < 0.3, W * tiny_w, W)
        b = rng.standard_normal(sizes[i + 1]) * offset * rng.choice([0.0, 1.0, 1.0], sizes[i + 1])
        Ws.append(cast(W))
        bs.append(cast(b))
    x0 = cast(rng.uniform(-1, 1, n_in))
    r = cast(radius * rng.uniform(0.2, 1.0, n_in))
    lo, hi = cast(x0 - r), cast(x0 + r)
    lo, hi = np.minimum(lo, x0), np.maximum(hi, x0)
    graph = mlp(Ws, bs, dtype)
    centre = exact_values(graph, x0)[graph.output_name]
    bs[-1] = cast([float(-v) for v in centre]) + bs[-1]  # cancel the output at the centre
    graph = mlp(Ws, bs, dtype)
    C = cast(rng.choice([-1.0, 0.0, 1.0], size=(3, n_out)) + rng.standard_normal((3, n_out)) * rng.choice([0.0, 1.0]))
    yc = exact_values(graph, x0)[graph.output_name]
    d = cast([float(-sum(Fraction(float(c)) * y for c, y in zip(row, yc))) for row in C])
    return graph, lo, hi, C, d, rng


def as_cases(lo, hi, C, d, dtype, conj=None) -> Cases:
    """One case; conj (Q,): the conjunct of each row (default: each row its own)."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
    Q = C.shape[0]
    conj = torch.arange(Q) if conj is None else torch.as_tensor(conj)
    J = int(conj.max()) + 1
    return Cases(t(lo)[None], t(hi)[None], t(C)[None], t(d)[None], conj[None], torch.ones(1, J, dtype=torch.bool),
                 np.arange(1))


def exact_rows(graph, C, d, pts) -> list[list[Fraction]]:
    """The exact row values C y(x) + d at each point: [point][row]."""
    out = []
    for x in pts:
        y = exact_values(graph, x)[graph.output_name]
        out.append([sum((fr(c) * v for c, v in zip(row, y)), Fraction(0)) + fr(dq) for row, dq in zip(C, d)])
    return out


def assert_below(name: str, lb: torch.Tensor, rows: list[list[Fraction]]):
    """lb (Q,) must be <= every exact row value; -inf is allowed, NaN never."""
    for q, b in enumerate(lb.tolist()):
        assert not math.isnan(b), f"{name}: NaN bound for row {q}"
        least = min(r[q] for r in rows)
        assert b == -math.inf or Fraction(b) <= least, f"{name}: row {q} bound {b!r} > exact {float(least)!r}"


def assert_contains(name: str, bounds: tuple[torch.Tensor, torch.Tensor], exact: list[list[Fraction]]):
    """bounds (1, n) must contain the exact values of every point: exact[point][element]."""
    blo, bhi = (b.reshape(-1).tolist() for b in bounds)
    for vals in exact:
        for i, v in enumerate(vals):
            assert not (math.isnan(blo[i]) or math.isnan(bhi[i])), f"{name}: NaN bound"
            assert blo[i] == -math.inf or Fraction(blo[i]) <= v, f"{name}[{i}]: lower {blo[i]!r} > {float(v)!r}"
            assert bhi[i] == math.inf or Fraction(bhi[i]) >= v, f"{name}[{i}]: upper {bhi[i]!r} < {float(v)!r}"


NETS = dict(seed=st.integers(0, 2 ** 32 - 1), dtype=st.sampled_from([F64, F32]),
            offset=st.sampled_from([0.0, 1.0, 1e6, 2.0 ** 30]), tiny_w=st.sampled_from([1.0, 1e-20, 1e-40]),
            radius=st.sampled_from([0.0, 1e-9, 1e-3, 0.5]), flush=st.booleans())
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- (a) the issue's case
# Found by random search against the old engine: two outputs near 2^30 whose difference plus d is
# -5.7e-7 exactly at the single input point; the old CROWN bound was +3.8e-6, over its 1e-9 margin.
ISSUE_W1 = [[-17.43807601928711, 0.015999119728803635, 39918.6796875],
            [-0.1411542296409607, -0.017473122105002403, -0.1921682506799698]]
ISSUE_B1 = [3865563392.0, 2668399360.0, 2259220224.0]
ISSUE_W2 = [[3.830084800720215, -0.7315559387207031], [0.22346140444278717, 16.727876663208008],
            [1.8650870323181152, -0.06636852771043777]]
ISSUE_B2 = [1134348160.0, 1920467584.0]
ISSUE_X = [0.5747358202934265, -0.2806529700756073]
ISSUE_D = 22829551357.72082


def _issue_problem(dtype=F64):
    graph = mlp([np.array(ISSUE_W1), np.array(ISSUE_W2)], [np.array(ISSUE_B1), np.array(ISSUE_B2)], dtype)
    x = np.array(ISSUE_X)
    C, d = np.array([[1.0, -1.0]]), np.array([ISSUE_D])
    return graph, x, C, d


def test_issue_case_bounds_stay_below_the_exact_value():
    graph, x, C, d = _issue_problem()
    exact = exact_rows(graph, C, d, [x])
    assert exact[0][0] <= 0  # the property's violation region holds the point: never unsat
    cs = as_cases(x, x, C, d, F64)
    assert_below("IBP", ibp_lower(graph, cs)[0], exact)
    lb, _ = crown_lower(graph, cs)
    assert_below("CROWN", lb[0], exact)
    assert not bool(conjuncts_refuted(cs, lb, bound_tolerance(F64)).any())


def test_issue_case_twin_paths_near_2_30():
    """y = h0 - h1 - h2 with h0 = a x + 2^30 and h1 = h2 = a/2 x + 2^29: exactly 0 for every x,
    computed from terms near 2^30 whose roundings differ."""
    a = float(np.float32(1 + 2 ** -23))
    graph = mlp([np.array([[a, a / 2, a / 2]]), np.array([[1.0], [-1.0], [-1.0]])],
                [np.array([2.0 ** 30, 2.0 ** 29, 2.0 ** 29]), np.array([0.0])], F64)
    for x0 in np.random.default_rng(0).uniform(0.5, 1.0, 50).astype(np.float32).astype(np.float64):
        x = np.array([x0])
        cs = as_cases(x - 2.0 ** -20, x + 2.0 ** -20, np.array([[1.0]]), np.array([0.0]), F64)
        ylo, yhi = interval_bounds(graph, cs.lo, cs.hi)[graph.output_name]
        assert float(ylo) <= 0 <= float(yhi)
        assert float(crown_lower(graph, cs)[0]) <= 0
        assert float(-crown_output(graph, cs.lo, cs.hi, -cs.C, crown_intermediate(graph, cs.lo, cs.hi))) >= 0


def test_issue_case_end_to_end_is_not_unsat(tmp_path):
    """Through the whole verifier (ONNX, VNN-LIB, attack, bounds, BaB): never unsat."""
    b = Builder()
    h = b.op("Gemm", ["X", b.const(np.array(ISSUE_W1)), b.const(np.array(ISSUE_B1))])
    y = b.op("Gemm", [b.op("Relu", [h]), b.const(np.array(ISSUE_W2)), b.const(np.array(ISSUE_B2))])
    model = b.finish("X", [1, 2], y)
    onnx_path = tmp_path / "issue.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    text = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    for i, v in enumerate(ISSUE_X):
        text += f"(assert (>= X_{i} {v!r}))\n(assert (<= X_{i} {v!r}))\n"
    text += f"(assert (<= (+ (- Y_0 Y_1) {ISSUE_D!r}) 0.0))\n"
    spec = tmp_path / "issue.vnnlib"
    spec.write_text(text)
    r = verifier.verify(onnx_path, spec, timeout=30)
    assert r.verdict is not Verdict.UNSAT, r


# --------------------------------------------------------------------------- (b), (e) random nets
@HYP
@given(**NETS)
def test_output_bounds_below_exact_values(one_torch_thread, seed, dtype, offset, tiny_w, radius, flush):
    """IBP, CROWN (with the IBP intersection) and alpha-CROWN lower bounds of C y + d are <= the
    exact row values at the centre, every corner and random points."""
    graph, lo, hi, C, d, rng = random_problem(seed, dtype, offset, tiny_w, radius)
    rows = exact_rows(graph, C, d, points(lo, hi, rng))
    cs = as_cases(lo, hi, C, d, dtype)
    with flushing(flush), torch.no_grad():
        ibp = ibp_lower(graph, cs)
        crown, pre = crown_lower(graph, cs)
        alpha = alpha_lower(graph, cs.lo, cs.hi, cs.C, cs.d, pre, AlphaConfig(iterations=4), Deadline(60),
                            lambda b: False)
    assert_below("IBP", ibp[0], rows)
    assert_below("CROWN", crown[0], rows)
    assert_below("alpha-CROWN", alpha[0], rows)


@HYP
@given(**NETS)
def test_intermediate_bounds_contain_exact_values(one_torch_thread, seed, dtype, offset, tiny_w, radius, flush):
    """Interval bounds of every value, CROWN's and the forward bounds of every activation input
    contain the exact values at the sampled points."""
    graph, lo, hi, C, d, rng = random_problem(seed, dtype, offset, tiny_w, radius)
    pts = points(lo, hi, rng)
    exact = [exact_values(graph, x) for x in pts]
    tlo, thi = torch.as_tensor(lo, dtype=dtype)[None], torch.as_tensor(hi, dtype=dtype)[None]
    with flushing(flush), torch.no_grad():
        ibp = interval_bounds(graph, tlo, thi)
        crown = crown_intermediate(graph, tlo, thi)
        fwd = forward_bounds(graph, tlo, thi)
    for node in graph.nodes:
        assert_contains(f"IBP {node.name}", ibp[node.name], [v[node.name] for v in exact])
        if node.op == "Relu":
            values = [v[node.inputs[0]] for v in exact]
            assert_contains(f"CROWN {node.name}", crown[node.name], values)
            assert_contains(f"forward {node.name}", fwd[node.name], values)


@HYP
@given(**NETS)
def test_linear_forms_hold_exactly(one_torch_thread, seed, dtype, offset, tiny_w, radius, flush):
    """backward_linear's form (what the LP leaf builds on): C y(x) >= A x + const - err exactly."""
    graph, lo, hi, C, d, rng = random_problem(seed, dtype, offset, tiny_w, radius)
    pts = points(lo, hi, rng)
    rows = exact_rows(graph, C, np.zeros(len(C)), pts)
    tlo, thi = torch.as_tensor(lo, dtype=dtype)[None], torch.as_tensor(hi, dtype=dtype)[None]
    with flushing(flush), torch.no_grad():
        pre = crown_intermediate(graph, tlo, thi)
        relax = Relaxation(pre, mags=magnitudes(graph, tlo, thi, pre))
        A, const, err = backward_linear(graph, graph.output_name, torch.as_tensor(C, dtype=dtype)[None], relax)
        e = lower(const, err)[0].tolist()
    A = A[0].tolist()
    for x, row in zip(pts, rows):
        for q in range(len(C)):
            if e[q] == -math.inf:
                continue
            form = sum((fr(a) * fr(v) for a, v in zip(A[q], x)), Fraction(0)) + Fraction(e[q])
            assert form <= row[q], f"row {q}: linear form {float(form)!r} > exact {float(row[q])!r}"


@HYP
@given(**NETS)
def test_clipped_boxes_keep_exact_counterexamples(one_torch_thread, seed, dtype, offset, tiny_w, radius, flush):
    """Each sampled point whose exact rows of a conjunct are all <= 0 stays in the clipped box,
    and its conjunct stays valid."""
    graph, lo, hi, C, d, rng = random_problem(seed, dtype, offset, tiny_w, radius)
    pts = points(lo, hi, rng, n_random=12)
    rows = exact_rows(graph, C, d, pts)
    groups = ([0, 1], [1, 2])               # conjunct j's rows; row 1 is in both: stacked twice
    rows_of = groups[0] + groups[1]
    cs = as_cases(lo, hi, C[rows_of], d[rows_of], dtype, [0, 0, 1, 1])
    with flushing(flush), torch.no_grad():
        record: dict = {}
        pre = crown_intermediate(graph, cs.lo, cs.hi)
        lb = lower(crown_output(graph, cs.lo, cs.hi, cs.C, pre, record=record) + cs.d)
        new_lo, new_hi, valid = clip_boxes(cs, lb, record[graph.input_name], bound_tolerance(dtype))
    nlo, nhi = new_lo[0].tolist(), new_hi[0].tolist()
    for x, row in zip(pts, rows):
        for j in range(2):
            if all(row[q] <= 0 for q in groups[j]):
                assert bool(valid[0, j]), f"conjunct {j} refuted but {x} violates it"
                assert all(Fraction(a) <= fr(v) <= Fraction(b) for a, v, b in zip(nlo, x, nhi)), \
                    f"{x} violates conjunct {j} but lies outside the clipped box {nlo}, {nhi}"


@pytest.mark.parametrize("flush", [False, True])
def test_subnormal_weight_read_as_zero_is_accounted(flush):
    """float32 y = w x + b with w = -1e-39 (subnormal), x = 1e6, b = 5e-34: exactly -5e-34, but
    with subnormals read as 0 (DAZ) every float evaluation gives +5e-34: only the absolute
    underflow term (tiny times the other operand) keeps the bounds below the exact value."""
    graph = mlp([np.array([[-1e-39]])], [np.array([5e-34])], F32)
    C, d = np.array([[1.0]]), np.array([0.0])
    x = np.array([1e6])
    exact = exact_rows(graph, C, d, [x])
    assert exact[0][0] < 0
    cs = as_cases(x, x, C, d, F32)
    with flushing(flush), torch.no_grad():
        ibp = ibp_lower(graph, cs)
        crown = crown_output(graph, cs.lo, cs.hi, cs.C, {})
        fwd = forward_bounds(mlp([np.array([[-1e-39]]), np.array([[1.0]])], [np.array([5e-34]), np.array([0.0])], F32),
                             cs.lo, cs.hi)["r0"]
    assert_below("IBP", ibp[0], exact)
    assert_below("CROWN", crown[0], exact)
    assert_below("forward", fwd[0][0], exact)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), scale=st.sampled_from([1e-40, 1e-3, 1.0, 1e6, 2.0 ** 30]),
       flush=st.booleans())
def test_lp_leaf_certificate_below_exact_minimum(seed, scale, flush):
    """certified_bound(w, G, g) <= the exact min over the box of sum_i w_i (G_i x + g_i), with
    rows built to cancel (g_i ~ -G_i x at a box point) so that the minimum is ~0."""
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    G = rng.standard_normal((m, n)) * scale * 2.0 ** rng.integers(-20, 21, (m, n))
    lo = rng.uniform(-1, 0.5, n) * rng.choice([1.0, 2.0 ** 30])
    hi = lo + rng.uniform(0, 1, n) * rng.choice([0.0, 1e-6, 1.0])
    corner = np.where(rng.uniform(size=n) < 0.5, lo, hi)
    g = np.array([float(-sum(fr(a) * fr(x) for a, x in zip(row, corner))) for row in G])
    w = rng.uniform(0, 1, m)
    w = w / w.sum()
    with flushing(flush):
        bound = certified_bound(w, G, g, lo, hi)
    v = [sum(fr(w[i]) * fr(G[i, j]) for i in range(m)) for j in range(n)]
    exact = sum(min(vj * fr(lo[j]), vj * fr(hi[j])) for j, vj in enumerate(v)) + sum(fr(w[i]) * fr(g[i]) for i in range(m))
    assert bound == -math.inf or Fraction(bound) <= exact


def test_gamma_is_an_upper_bound():
    for dt in (F64, F32):
        u = Fraction(torch.finfo(dt).eps) / 2
        for n in (1, 2, 10, 1000, 10 ** 6):
            exact = n * u / (1 - n * u)
            assert Fraction(gamma(n, dt)) >= exact
    assert gamma(2 ** 23, F32) == math.inf


# --------------------------------------------------------------------------- (c) NaN and infinity
def test_nan_and_infinite_bounds_never_refute():
    cs = as_cases(np.zeros(1), np.ones(1), np.eye(5), np.zeros(5), F64)
    lb = torch.tensor([[math.nan, math.inf, -math.inf, 0.0, 1e-300]], dtype=F64)
    assert conjuncts_refuted(cs, lb, bound_tolerance(F64))[0].tolist() == [False, False, False, False, True]
    assert bound_tolerance(F64) == 0.0 and bound_tolerance(F32) == 0.0
    for v in (math.nan, math.inf, -math.inf):
        assert float(lower(torch.tensor([v]))) == -math.inf
        assert float(upper(torch.tensor([v]))) == math.inf


def test_nan_bounds_never_stabilise_a_relu():
    relu = RULES["Relu"]
    lo = torch.tensor([math.nan, -1.0, math.nan, 2.0], dtype=F64)
    hi = torch.tensor([1.0, math.nan, math.nan, math.nan], dtype=F64)
    order, live = unstable_order(lo[None], hi[None])
    # an unknown end counts as unbounded: unstable unless the other end alone settles it (lo = 2)
    assert sorted(order[0][live[0]].tolist()) == [0, 1, 2]
    ilo, ihi = relu.interval(None, lo, hi)
    assert not bool(torch.isnan(ilo).any() | torch.isnan(ihi).any())
    assert ihi.tolist()[1:] == [math.inf] * 3
    lw, lb, uw, ub = relu.relax(None, lo, hi)
    for t in (lw, lb, uw, ub):
        assert not bool(torch.isnan(t).any())
    # element 0 is (-inf, 1]: relu <= 1 there, so slope 0 and intercept >= 1
    assert float(uw[0]) == 0.0 and float(ub[0]) >= 1.0
    # element 3 is [2, +inf): relu = x there, exactly
    assert (float(lw[3]), float(lb[3]), float(uw[3]), float(ub[3])) == (1.0, 0.0, 1.0, 0.0)


def test_nan_intermediate_bounds_give_no_proof():
    """A NaN in the bounds handed to CROWN (an inherited or fixed bound) makes the neuron
    unknown: the output bound stays below every exact value, never NaN."""
    graph = mlp([np.array([[1.0, -1.0]]), np.array([[1.0], [1.0]])], [np.array([0.0, 0.0]), np.array([0.0])], F64)
    lo, hi = torch.tensor([[-1.0]], dtype=F64), torch.tensor([[1.0]], dtype=F64)
    nan = torch.tensor([[math.nan, math.nan]], dtype=F64)
    pre = crown_intermediate(graph, lo, hi, fixed={"r0": (nan, nan)})
    plo, phi = pre["r0"]
    assert bool(((plo <= -1) & (phi >= 1)).all())  # NaN fixed bounds left the interval ones
    lb = crown_output(graph, lo, hi, torch.ones(1, 1, 1, dtype=F64), {"r0": (nan, nan)})
    assert not bool(torch.isnan(lb).any()) and float(lb) <= 0.0  # |x| has minimum 0 at x = 0
    ib = interval_bounds(graph, lo, hi, known={"h0": (nan, nan)})
    assert not any(bool(torch.isnan(t).any()) for b in ib.values() for t in b)


def test_clipping_ignores_infinite_and_nan_bounds():
    graph = mlp([np.array([[1.0, 2.0]]), np.array([[1.0], [1.0]])], [np.array([0.5, 0.0]), np.array([0.0])], F64)
    cs = as_cases(np.array([-1.0]), np.array([1.0]), np.array([[1.0], [-1.0]]), np.zeros(2), F64)
    A = torch.tensor([[[1.0], [math.nan]]], dtype=F64)
    for bad in (math.inf, math.nan):
        lb = torch.tensor([[bad, bad]], dtype=F64)
        new_lo, new_hi, valid = clip_boxes(cs, lb, A, 0.0)
        assert bool(valid.all()) and float(new_lo) == -1.0 and float(new_hi) == 1.0


def test_branching_splits_a_neuron_with_nan_bounds():
    """A domain whose only unsplit neuron has NaN bounds is not a leaf: that neuron is split."""
    cs = as_cases(np.zeros(1), np.ones(1), np.ones((1, 2)), np.zeros(1), F64)
    splits = {"r0": torch.tensor([[1, 0]], dtype=torch.int8)}
    pre = {"r0": (torch.tensor([[0.5, math.nan]], dtype=F64), torch.tensor([[1.0, math.nan]], dtype=F64))}
    coeffs = {"r0": torch.tensor([[1.0, 1.0]], dtype=F64)}     # the weakest row's, per domain
    relu = SimpleNamespace(name="r0", op="Relu", inputs=["x"], shape=(2,))
    q = SimpleNamespace(graph=SimpleNamespace(by_name={"r0": relu}))
    names, layer, idx, point = _branch(q, Domains(cs, splits, None), coeffs, pre)
    assert int(layer[0]) == 0 and int(idx[0]) == 1 and float(point[0]) == 0.0


# --------------------------------------------------------------------------- (d) relaxation planes
def _extreme_floats(rng, n: int, dtype) -> np.ndarray:
    tiny = torch.finfo(dtype).tiny
    big = float(torch.finfo(dtype).max)
    pool = np.array([tiny, tiny / 4, tiny * 3, 1e-300 if dtype == F64 else 1e-37, 1e-40, 1.0, 3.0, 1e6, 2.0 ** 30,
                     1e30, big / 4, big])
    mags = np.minimum(np.where(rng.uniform(size=n) < 0.5, rng.choice(pool, n), 10.0 ** rng.uniform(-45, 40, n)), big)
    np_dt = np.float32 if dtype == F32 else np.float64
    with np.errstate(over="ignore"):
        return np.asarray(mags, dtype=np_dt).astype(np.float64)


@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_relu_upper_plane_holds_exactly_at_both_ends(dtype, flush):
    rng = np.random.default_rng(1)
    n = 4000
    lo = -_extreme_floats(rng, n, dtype)
    hi = _extreme_floats(rng, n, dtype)
    # and plain random ones
    lo[:500], hi[:500] = -rng.uniform(0, 1, 500), rng.uniform(0, 1, 500)
    tlo, thi = torch.as_tensor(lo, dtype=dtype), torch.as_tensor(hi, dtype=dtype)  # converted without the flush
    with flushing(flush):
        lw, lb, uw, ub = RULES["Relu"].relax(None, tlo, thi)
    tl, th = tlo.tolist(), thi.tolist()
    for a, b, w, c, s, t in zip(tl, th, uw.tolist(), ub.tolist(), lw.tolist(), lb.tolist()):
        if c == math.inf:
            continue
        assert 0 <= w <= 1 and 0 <= s <= 1 and t == 0
        for x in (a, b):
            assert Fraction(w) * fr(x) + Fraction(c) >= max(Fraction(0), fr(x)), (a, b, w, c)


def _mp_f(kind: str, x):
    x = mpmath.mpf(x)
    return 1 / (1 + mpmath.exp(-x)) if kind == "Sigmoid" else mpmath.tanh(x)


def _intervals(rng, n: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(n):
        kind = rng.integers(0, 4)
        c = rng.choice([rng.uniform(-8, 8), rng.uniform(-1000, 1000), 10.0 ** rng.uniform(-40, 0) * rng.choice([-1, 1])])
        if kind == 0:    # tiny interval
            w = abs(c) * 10.0 ** rng.uniform(-16, -6) + 1e-300
        elif kind == 1:  # moderate
            w = rng.uniform(0, 4)
        elif kind == 2:  # wide, into the tails
            w = rng.uniform(0, 1000)
        else:            # a point
            w = 0.0
        out.append((c - w * rng.uniform(0, 1), c + w * rng.uniform(0, 1)))
    return out


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh"])
def test_s_shaped_planes_and_intervals_hold_against_mpmath(kind, dtype):
    rng = np.random.default_rng(2)
    rule = RULES[kind]
    iv = _intervals(rng, 300)
    lo = torch.tensor([a for a, _ in iv], dtype=dtype)
    hi = torch.tensor([b for _, b in iv], dtype=dtype)
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    lw, lb, uw, ub = rule.relax(None, lo, hi)
    ilo, ihi = rule.interval(None, lo, hi)
    for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
        xs = [a, b] + [a + (b - a) * t for t in (0.1, 0.25, 0.5, 0.75, 0.9)]
        for x in xs:
            x = min(max(x, a), b)
            f = _mp_f(kind, x)
            assert mpmath.mpf(lw[i].item()) * x + mpmath.mpf(lb[i].item()) <= f, (kind, a, b, x)
            assert mpmath.mpf(uw[i].item()) * x + mpmath.mpf(ub[i].item()) >= f, (kind, a, b, x)
        assert mpmath.mpf(ilo[i].item()) <= _mp_f(kind, a) and mpmath.mpf(ihi[i].item()) >= _mp_f(kind, b)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh"])
def test_torch_activation_error_within_the_assumed_bound(kind, dtype):
    """The error model's assumption (F_ERR_U u relative + tiny) for torch's own sigmoid / tanh."""
    rng = np.random.default_rng(3)
    xs = np.concatenate([rng.uniform(-40, 40, 1500), 10.0 ** rng.uniform(-40, 3, 1500) * rng.choice([-1, 1], 1500)])
    x = torch.as_tensor(xs, dtype=dtype)
    y = RULES[kind].f(x)
    u = torch.finfo(dtype).eps / 2
    tiny = torch.finfo(dtype).tiny
    for xi, yi in zip(x.tolist(), y.tolist()):
        ex = _mp_f(kind, xi)
        assert abs(mpmath.mpf(yi) - ex) <= F_ERR_U * u * abs(ex) + tiny, (kind, xi, yi)
