"""The LP relaxation (verifier/lp/encode.py) and its certified bounds (verifier/lp/relax.py).

Oracles: sampled and PGD points of the IR's own forward pass (every LP bound must lie below
them), CROWN under the same pre-activation bounds (the triangle LP is at least as tight),
HiGHS's reported optimum (the rebuild from its duals must reproduce it, and any other
multipliers must stay below it: weak duality), scipy's linprog on a triangle LP written out
independently, and a case solved by hand.  Comparisons allow 1e-9 relative (the rebuild's
certified error is ~1e-13 on these nets).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from helpers_nets import Builder, graph_of, one_torch_thread, random_convnet, random_mlp, run_onnxruntime  # noqa: F401
from verifier.bounds.backward import activation_inputs, crown_intermediate, crown_output
from verifier.evaluate import forward, forward_all
from verifier.ir import Graph, Node
from verifier.lp.encode import LPEncodeError, encode, unsupported, with_objective
from verifier.lp.relax import certified_dual_bound, lp_bounds, lp_lower, solve_lp, tighten_pre
from verifier.ops import RULES
from verifier.ops.registry import OpRule

DT = torch.float64
REL = 1e-9

NETS = {
    "relu_5_20_20_3": lambda r: random_mlp(r, 5, [20, 20], 3, ["Relu"]),
    "relu_10_30x3_4": lambda r: random_mlp(r, 10, [30, 30, 30], 4, ["Relu"]),
    "leaky_6_12_12_3": lambda r: random_mlp(r, 6, [12, 12], 3, ["LeakyRelu"]),
    "conv_avgpool": lambda r: random_convnet(r, pool="avg"),
    "sigmoid_tanh": lambda r: random_mlp(r, 4, [10, 10], 3, ["Sigmoid", "Tanh"]),
    "mixed": lambda r: random_mlp(r, 4, [10, 10, 8], 3, ["Relu", "Tanh", "Relu"]),
}
_CACHE: dict = {}


def case(kind: str, seed: int, eps: float = 0.3):
    """(graph, model, lo, hi (flat numpy), pre, points (N, n_in) torch) for one random box."""
    key = (kind, seed, eps)
    if key not in _CACHE:
        rng = np.random.default_rng(seed)
        model = NETS[kind](rng)
        g = graph_of(model)
        x0 = rng.standard_normal(g.input_size)
        lo, hi = x0 - eps, x0 + eps
        tl, th = (torch.tensor(v).reshape((1,) + g.input_shape) for v in (lo, hi))
        pre = crown_intermediate(g, tl, th)
        pts = torch.tensor(rng.uniform(lo, hi, (400, g.input_size)))
        corners = torch.tensor(np.where(rng.integers(0, 2, (100, g.input_size)) > 0, hi, lo))
        _CACHE[key] = (g, model, lo, hi, pre, torch.cat([pts, corners]))
    return _CACHE[key]


def outputs(g, xs: torch.Tensor) -> np.ndarray:
    """(N, n_out) network outputs at xs (N, n_in)."""
    with torch.no_grad():
        return forward(g, xs.reshape((-1,) + g.input_shape)).reshape(xs.shape[0], -1).numpy()


def pgd(g, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray, steps: int = 40, starts: int = 8) -> np.ndarray:
    """For each row c (q, n_out): points of the box pushing c . y down (signed gradient steps
    from random starts).  (q * starts, n_in)."""
    gen = torch.Generator().manual_seed(0)
    tl, th = torch.tensor(lo), torch.tensor(hi)
    C = torch.tensor(rows).repeat_interleave(starts, 0)
    x = (tl + (th - tl) * torch.rand((C.shape[0], lo.size), generator=gen, dtype=DT)).requires_grad_(True)
    step = (th - tl) / 10
    for k in range(steps):
        y = forward(g, x.reshape((-1,) + g.input_shape)).reshape(x.shape[0], -1)
        (grad,) = torch.autograd.grad((C * y).sum(), x)
        with torch.no_grad():
            x -= step * (0.9 ** k) * grad.sign()
            x.copy_(torch.maximum(torch.minimum(x, th), tl))
    return x.detach()


def rows_for(g, seed: int) -> np.ndarray:
    """+-I and two random rows, (2 n_out + 2, n_out)."""
    n = g.output_size
    return np.vstack([np.eye(n), -np.eye(n), np.random.default_rng(seed).standard_normal((2, n))])


def crown(g, lo, hi, pre, rows) -> np.ndarray:
    tl, th = (torch.tensor(v).reshape((1,) + g.input_shape) for v in (lo, hi))
    return crown_output(g, tl, th, torch.tensor(rows)[None], pre)[0].numpy()


def assert_below(what: str, lb: np.ndarray, rows: np.ndarray, ys: np.ndarray) -> None:
    """lb (q,) <= rows @ y for every y in ys (N, n_out), up to REL."""
    cy = ys @ rows.T                                           # (N, q)
    gap = lb[None, :] - cy - REL * (1 + np.abs(cy) + np.abs(lb)[None, :])
    assert np.isfinite(lb).all(), f"{what}: non-finite bound {lb}"
    assert gap.max() <= 0, f"{what}: bound above an observed value by {gap.max():.3e}"


# ---- (a), (b), (f): soundness against points and ordering against CROWN ---------------------------
@pytest.mark.parametrize("kind", list(NETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_lp_bounds_contain_points_and_beat_crown(kind, seed):
    g, _, lo, hi, pre, pts = case(kind, seed)
    rows = rows_for(g, seed)
    lb = lp_bounds(g, lo, hi, pre, rows, time_limit=30)
    ys = np.vstack([outputs(g, pts), outputs(g, pgd(g, lo, hi, rows))])
    assert_below(f"LP on {kind}", lb, rows, ys)
    cb = crown(g, lo, hi, pre, rows)
    worse = cb - lb - REL * (1 + np.abs(cb))
    assert worse.max() <= 0, f"LP below CROWN by {worse.max():.3e} on {kind}"
    assert (lb - cb).max() > 1e-6, "the LP should beat CROWN somewhere on these boxes"


def test_lp_lower_on_a_float32_model_contains_onnxruntime_outputs():
    """The float model's own evaluation error (bounds/rounding.py) is charged in the rows'
    slack: the bound holds for onnxruntime's float32 outputs too."""
    g, model, lo, hi, pre, pts = case("sigmoid_tanh", 3, eps=0.5)
    g32 = dataclasses.replace(g, float_model=torch.float32)
    tl, th = (torch.tensor(v).reshape((1,) + g.input_shape) for v in (lo, hi))
    pre32 = crown_intermediate(g32, tl, th)
    rows = rows_for(g, 3)
    lb = lp_bounds(g32, lo, hi, pre32, rows)
    ys = np.stack([run_onnxruntime(model, x.numpy().reshape(1, -1).astype(np.float32)).reshape(-1)
                   for x in pts[:100]]).astype(np.float64)
    assert_below("LP on the float32 model", lb, rows, ys)
    assert (lb <= lp_bounds(g, lo, hi, pre, rows) + 1e-9).all()   # the model's error costs a little


def test_input_rows_cut_the_box():
    """Inputs with sum(x) <= s: bound below points satisfying it, and above the box-only bound."""
    g, _, lo, hi, pre, pts = case("relu_5_20_20_3", 4)
    s = float(lo.sum() + hi.sum()) / 2
    A, b = np.ones((1, lo.size)), np.array([s])
    rows = rows_for(g, 4)
    lb = lp_bounds(g, lo, hi, pre, rows, input_rows=(A, b))
    inside = pts[(pts.sum(1) <= s).numpy()]
    assert inside.shape[0] > 10
    assert_below("LP with input rows", lb, rows, outputs(g, inside))
    assert (lb >= lp_bounds(g, lo, hi, pre, rows) - 1e-9).all()


# ---- (c), (d): the certificate --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["relu_5_20_20_3", "relu_10_30x3_4", "conv_avgpool", "sigmoid_tanh"])
def test_certificate_rebuilds_the_optimum(kind):
    """The rebuild from HiGHS's duals reproduces its objective (it is no loosening)."""
    g, _, lo, hi, pre, _ = case(kind, 0)
    P = encode(g, lo, hi, pre)
    for r in rows_for(g, 0):
        res = solve_lp(with_objective(P, g.output_name, r))
        assert res.status == "Optimal"
        assert res.bound <= res.objective + REL * (1 + abs(res.objective))
        assert abs(res.bound - res.objective) <= 1e-6 * (1 + abs(res.objective)), (res.bound, res.objective)


@pytest.mark.parametrize("kind", ["relu_5_20_20_3", "leaky_6_12_12_3", "sigmoid_tanh"])
def test_any_multipliers_give_a_valid_bound(kind):
    """Weak duality: perturbed duals (lambda noised, mu with negative entries, clipped), random
    and huge multipliers all bound the LP optimum and every observed value from below."""
    g, _, lo, hi, pre, pts = case(kind, 1)
    P = encode(g, lo, hi, pre)
    rng = np.random.default_rng(7)
    ys = outputs(g, pts)
    for r in rows_for(g, 1)[:4]:
        p = with_objective(P, g.output_name, r)
        res = solve_lp(p)
        opt = res.objective
        observed = float((ys @ r).min())
        tries = []
        for scale in (1e-6, 1e-3, 1e-1, 1.0):
            lam = res.lam + scale * rng.standard_normal(res.lam.size) * (1 + np.abs(res.lam))
            mu = res.mu + scale * rng.standard_normal(res.mu.size) * (1 + res.mu)   # some < 0
            tries.append(certified_dual_bound(p, lam, mu))
        tries.append(certified_dual_bound(p, rng.standard_normal(res.lam.size), rng.standard_normal(res.mu.size)))
        tries.append(certified_dual_bound(p, 1e8 * rng.standard_normal(res.lam.size), 1e8 * rng.random(res.mu.size)))
        tries.append(certified_dual_bound(p, None, None))                   # zero: the box bound
        tries.append(certified_dual_bound(p, np.full(res.lam.size, np.nan), -res.mu))
        for t in tries:
            assert t <= opt + REL * (1 + abs(opt)), f"multipliers gave {t} above the LP optimum {opt}"
            assert t <= observed + REL * (1 + abs(observed))
        assert max(tries[:1]) >= opt - 1e-3 * (1 + abs(opt))   # a small perturbation stays close


def test_corrupted_problem_data_is_not_trusted():
    """Duals of a perturbed problem (another bias) certified against the TRUE problem stay
    below the true optimum, even though the perturbed problem's optimum lies above it."""
    g, _, lo, hi, pre, _ = case("relu_5_20_20_3", 2)
    P = with_objective(encode(g, lo, hi, pre), g.output_name, np.array([1.0, -1.0, 0.5]))
    true = solve_lp(P)
    lifted = dataclasses.replace(P, f=P.f + 0.5 * np.abs(P.f).max(), l=P.l - 10, u=P.u + 10)
    other = solve_lp(lifted)
    b = certified_dual_bound(P, other.lam, other.mu)
    assert b <= true.objective + REL * (1 + abs(true.objective))


# ---- (e): tighter intermediate bounds -------------------------------------------------------------
@pytest.mark.parametrize("kind,seed,eps", [("relu_10_30x3_4", 0, 0.3), ("relu_10_30x3_4", 1, 0.3), ("mixed", 0, 0.8)])
def test_tighten_pre_never_loosens_and_contains_points(kind, seed, eps):
    g, _, lo, hi, pre, pts = case(kind, seed, eps)
    new = tighten_pre(g, lo, hi, pre, max_neurons=25, time_limit=30)
    xs = torch.cat([pts, pgd(g, lo, hi, rows_for(g, seed))])
    with torch.no_grad():
        vals = forward_all(g, xs.reshape((-1,) + g.input_shape))
    gained = 0.0
    for act in activation_inputs(g):
        (l0, h0), (l1, h1) = pre[act.name], new[act.name]
        assert l1.shape == l0.shape and h1.shape == h0.shape
        assert (l1 >= l0).all() and (h1 <= h0).all(), f"tighten_pre loosened {act.name}"
        v = vals[act.inputs[0]].reshape(-1, act.size)
        tol = REL * (1 + v.abs())
        assert (v >= l1.reshape(1, -1) - tol).all() and (v <= h1.reshape(1, -1) + tol).all(), act.name
        gained += float(((h0 - l0) - (h1 - l1)).sum())
    assert gained > 0
    rows = rows_for(g, seed)
    assert (lp_bounds(g, lo, hi, new, rows) >= lp_bounds(g, lo, hi, pre, rows) - 1e-9).all()


# ---- (g): what the encoding does not cover --------------------------------------------------------
def test_unsupported_nodes_are_all_named(monkeypatch):
    W = torch.eye(2, dtype=DT)
    monkeypatch.setitem(RULES, "Opaque", OpRule())   # a rule that is neither affine nor an activation
    nodes = (Node("a", "MatMul", ("x",), {"W": W, "b": None}, (2,)),
             Node("b", "Opaque", ("a",), {}, (2,)),
             Node("c", "NoSuchOp", ("b",), {}, (2,)))
    g = Graph("x", (2,), nodes, "c", (1, 2))
    assert unsupported(g) == ["b (Opaque)", "c (NoSuchOp)"]
    with pytest.raises(LPEncodeError, match=r"b \(Opaque\).*c \(NoSuchOp\)"):
        encode(g, np.zeros(2), np.ones(2), {})
    with pytest.raises(LPEncodeError):
        lp_lower(g, np.zeros(2), np.ones(2), {}, np.ones(2))


def test_product_of_two_variables_is_encoded_by_its_planes():
    """MulVar (planes in both inputs): bound below the samples."""
    b = Builder(np.random.default_rng(5))
    h1, h2 = b.gemm("x", 3, 4), b.gemm("x", 3, 4)
    model = b.finish("x", [1, 3], b.gemm(b.op("Mul", [h1, h2]), 4, 2))
    g = graph_of(model)
    assert any(RULES[n.op].multi_planes for n in g.nodes if not RULES[n.op].linear)
    lo, hi = -np.ones(3) * 0.5, np.ones(3) * 0.5
    tl, th = (torch.tensor(v).reshape(1, 3) for v in (lo, hi))
    pre = crown_intermediate(g, tl, th)
    rows = np.vstack([np.eye(2), -np.eye(2)])
    lb = lp_bounds(g, lo, hi, pre, rows)
    xs = torch.tensor(np.random.default_rng(0).uniform(lo, hi, (500, 3)))
    assert_below("LP of a product", lb, rows, outputs(g, xs))


# ---- (h): exact cases -----------------------------------------------------------------------------
def tiny_net(W1, b1, W2, b2) -> Graph:
    t = lambda a: torch.tensor(a, dtype=DT)  # noqa: E731
    nodes = (Node("z", "MatMul", ("x",), {"W": t(W1).T, "b": t(b1)}, (len(b1),)),
             Node("y", "Relu", ("z",), {}, (len(b1),)),
             Node("out", "MatMul", ("y",), {"W": t(W2).T, "b": t(b2)}, (len(b2),)))
    return Graph("x", (len(W1[0]),), nodes, "out", (1, len(W1[0])))


def triangle_linprog(W1, b1, W2, b2, lo, hi, c) -> float:
    """min c . (W2 y + b2) over the triangle relaxation with exact first-layer bounds, written
    out independently: variables (x, z, y), z = W1 x + b1, y >= 0, y >= z, y <= u (z - l)/(u - l)."""
    W1, b1, W2, b2, c = (np.asarray(a, dtype=np.float64) for a in (W1, b1, W2, b2, c))
    n_in, k = W1.shape[1], W1.shape[0]
    zl = W1.clip(min=0) @ lo + W1.clip(max=0) @ hi + b1
    zu = W1.clip(min=0) @ hi + W1.clip(max=0) @ lo + b1
    cost = np.concatenate([np.zeros(n_in + k), c @ W2])
    A_eq = np.hstack([W1, -np.eye(k), np.zeros((k, k))])
    A_ub, b_ub = [], []
    for j in range(k):
        e = np.zeros(n_in + 2 * k)
        e[n_in + j], e[n_in + k + j] = 1, -1          # z - y <= 0
        A_ub.append(e.copy()), b_ub.append(0.0)
        if zl[j] < 0 < zu[j]:
            s = zu[j] / (zu[j] - zl[j])               # y - s z <= -s l
            e = np.zeros(n_in + 2 * k)
            e[n_in + k + j], e[n_in + j] = 1, -s
            A_ub.append(e), b_ub.append(-s * zl[j])
        elif zu[j] <= 0:
            e = np.zeros(n_in + 2 * k)
            e[n_in + k + j] = 1
            A_ub.append(e), b_ub.append(0.0)
    bounds = [(a, b) for a, b in zip(lo, hi)] + [(None, None)] * k + [(0, None)] * k
    r = linprog(cost, A_ub=np.array(A_ub), b_ub=b_ub, A_eq=A_eq, b_eq=-b1, bounds=bounds, method="highs")
    assert r.status == 0
    return float(r.fun + c @ b2)


def test_two_two_one_relu_by_hand():
    """z = (x1 + x2, x1 - x2) on [-1, 1]^2, both in [-2, 2]; out = -(y1 + y2).  The chords
    y <= (z + 2) / 2 give out >= -(z1 + z2 + 4) / 2 = -(x1 + 2) >= -3 (the LP optimum, at
    x1 = 1), while the network's minimum is -2."""
    g = tiny_net([[1, 1], [1, -1]], [0, 0], [[-1, -1]], [0])
    lo, hi = -np.ones(2), np.ones(2)
    tl, th = torch.tensor(lo)[None], torch.tensor(hi)[None]
    pre = crown_intermediate(g, tl, th)
    b = lp_lower(g, lo, hi, pre, np.ones(1))
    assert -3 - 1e-12 <= b <= -3
    assert b <= outputs(g, torch.tensor([[1.0, 0.0]], dtype=DT))[0, 0] == -2


@pytest.mark.parametrize("seed", range(6))
def test_small_relu_nets_match_linprog(seed):
    rng = np.random.default_rng(seed)
    W1, b1 = rng.standard_normal((2, 2)), rng.standard_normal(2) * 0.3
    W2, b2 = rng.standard_normal((1, 2)), rng.standard_normal(1)
    g = tiny_net(W1, b1, W2, b2)
    lo, hi = -np.ones(2), np.ones(2)
    pre = crown_intermediate(g, torch.tensor(lo)[None], torch.tensor(hi)[None])
    for c in (np.ones(1), -np.ones(1)):
        ref = triangle_linprog(W1, b1, W2, b2, lo, hi, c)
        b = lp_lower(g, lo, hi, pre, c)
        assert b <= ref + 1e-9 * (1 + abs(ref))
        assert b >= ref - 1e-9 * (1 + abs(ref)), (b, ref)


def test_solver_time_out_still_gives_a_sound_bound():
    g, _, lo, hi, pre, pts = case("relu_10_30x3_4", 1)
    rows = rows_for(g, 1)
    lb = lp_bounds(g, lo, hi, pre, rows, time_limit=1e-4)
    assert not np.isnan(lb).any()
    assert_below("LP out of time", np.where(np.isfinite(lb), lb, -1e300), rows, outputs(g, pts))


def test_influence_orders_unstable_neurons_and_survives_infinite_bounds():
    """The LP stage's neuron order: the ReLU triangle's height -lo hi / (hi - lo) where lo < 0 < hi,
    0 for stable neurons, and first (inf, not NaN) where a bound is infinite; no warning."""
    import warnings

    from verifier.lp.relax import influence

    lo = np.array([-1.0, 0.5, -2.0, -np.inf, -1.0, -3.0])
    hi = np.array([1.0, 2.0, -1.0, 1.0, np.inf, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = influence(lo, hi)
    assert got.tolist() == [0.5, 0.0, 0.0, np.inf, np.inf, 0.0]
