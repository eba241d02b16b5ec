"""The SDP relaxation (verifier/lp/sdp.py) and its certificate.

Oracles: sampled, corner and PGD points of the IR's forward pass (every bound lies below them),
the rank-one matrices of those points (every row of the SDP must hold at them: the encoding's
own soundness, solver-free), the triangle LP under the same pre-activation bounds (the SDP
carries its rows, so it is at least as tight; allowed 1e-5 (1 + |lp|) for the interior-point
solver's accuracy, whose certified bounds land ~1e-6 below its objective on these nets), the
solver's objective (the rebuild reproduces it within 1e-4 relative), an affine net solved by hand,
and weak duality under corrupted multipliers.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch

from helpers_nets import graph_of, one_torch_thread, random_convnet, random_mlp, random_residual  # noqa: F401
from verifier.bounds.backward import crown_intermediate
from verifier.evaluate import forward, forward_all
from verifier.lp.relax import lp_lower
from verifier.lp.sdp import SdpError, _dual_matrix, build_sdp, check_sdp_certificate, sdp_lower, solve_sdp

DT = torch.float64
LP_TOL = 1e-5
NETS = {
    "2_6_6_2": lambda r: random_mlp(r, 2, [6, 6], 2, ["Relu"]),
    "4_10_10_3": lambda r: random_mlp(r, 4, [10, 10], 3, ["Relu"]),
    "5_16_16_3": lambda r: random_mlp(r, 5, [16, 16], 3, ["Relu"]),
    "conv_1x3x3": lambda r: random_convnet(r, c=1, hw=3),
}
_CACHE: dict = {}


def case(kind: str, seed: int, eps: float = 0.5):
    """(graph, lo, hi (flat numpy), pre, points (N, n_in) torch) for one random box."""
    key = (kind, seed, eps)
    if key not in _CACHE:
        rng = np.random.default_rng(seed)
        g = graph_of(NETS[kind](rng))
        x0 = rng.standard_normal(g.input_size)
        lo, hi = x0 - eps, x0 + eps
        tl, th = (torch.tensor(v).reshape((1,) + g.input_shape) for v in (lo, hi))
        pre = crown_intermediate(g, tl, th)
        pts = torch.tensor(rng.uniform(lo, hi, (2000, g.input_size)))
        corners = torch.tensor(np.where(rng.integers(0, 2, (200, g.input_size)) > 0, hi, lo))
        _CACHE[key] = (g, lo, hi, pre, torch.cat([pts, corners]))
    return _CACHE[key]


def outputs(g, xs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return forward(g, xs.reshape((-1,) + g.input_shape)).reshape(xs.shape[0], -1).numpy()


def pgd(g, lo: np.ndarray, hi: np.ndarray, c: np.ndarray, steps: int = 40, starts: int = 8) -> torch.Tensor:
    """Points of the box pushing c . y down: signed gradient steps from random starts, (starts, n_in)."""
    gen = torch.Generator().manual_seed(0)
    tl, th = torch.tensor(lo), torch.tensor(hi)
    x = (tl + (th - tl) * torch.rand((starts, lo.size), generator=gen, dtype=DT)).requires_grad_(True)
    ct = torch.tensor(c)
    for k in range(steps):
        y = forward(g, x.reshape((-1,) + g.input_shape)).reshape(starts, -1)
        (grad,) = torch.autograd.grad((y @ ct).sum(), x)
        with torch.no_grad():
            x -= (th - tl) / 10 * (0.9 ** k) * grad.sign()
            x.copy_(torch.maximum(torch.minimum(x, th), tl))
    return x.detach()


def observed_min(g, lo, hi, pts, c) -> float:
    return float((np.concatenate([outputs(g, pts), outputs(g, pgd(g, lo, hi, c))]) @ c).min())


def objectives(g, seed: int) -> np.ndarray:
    """e_0, -e_0, and two random rows: (4, n_out)."""
    n = g.output_size
    e = np.eye(n)[0]
    return np.vstack([e, -e, np.random.default_rng(seed).standard_normal((2, n))])


# ---- (a), (b), (c): soundness, at least the LP, and a faithful rebuild -------------------------------
@pytest.mark.parametrize("kind,seed", [("2_6_6_2", 0), ("2_6_6_2", 1), ("4_10_10_3", 0), ("4_10_10_3", 1),
                                       ("5_16_16_3", 0), ("5_16_16_3", 1), ("conv_1x3x3", 0)])
def test_sdp_contains_points_beats_lp_and_rebuilds_the_objective(kind, seed):
    g, lo, hi, pre, pts = case(kind, seed)
    gains = []
    for c in objectives(g, seed):
        res = sdp_lower(g, lo, hi, pre, c, time_limit=30)
        assert math.isfinite(res.bound), res.status
        seen = observed_min(g, lo, hi, pts, c)
        assert res.bound <= seen, f"SDP bound {res.bound} above an observed value {seen} ({res.status})"
        lp = lp_lower(g, lo, hi, pre, c)
        assert res.bound >= lp - LP_TOL * (1 + abs(lp)), f"SDP {res.bound} below the LP {lp} ({res.status})"
        assert abs(res.bound - res.objective) <= 1e-4 * (1 + abs(res.objective)), (res.bound, res.objective)
        assert res.bound <= res.objective + 1e-6 * (1 + abs(res.objective))
        gains.append(res.bound - lp)
    assert max(gains) > 1e-3, f"the SDP should beat the LP on some objective here: gains {gains}"


def test_rows_hold_at_network_points():
    """Every row, the trace bound and the objective's error bound hold at the rank-one matrix of
    sampled, corner and PGD points (up to the float evaluation of the check, 1e-12)."""
    for kind in ("5_16_16_3", "conv_1x3x3"):
        g, lo, hi, pre, pts = case(kind, 2, eps=0.8)
        c = objectives(g, 2)[2]
        p = build_sdp(g, lo, hi, pre, c)
        xs = torch.cat([pts[:300], pgd(g, lo, hi, c)])
        with torch.no_grad():
            vals = forward_all(g.to("cpu", DT), xs.reshape((-1,) + g.input_shape))
        V = np.zeros((xs.shape[0], p.dim))
        V[:, 0] = 1
        for name, (pos, idx) in p.lifted.items():   # centred: P = [1; v - m][1; v - m]^T
            V[:, pos] = vals[name].reshape(xs.shape[0], -1).numpy()[:, idx] - p.center[pos - 1]
        ys = vals[g.output_name].reshape(xs.shape[0], -1).numpy() @ c
        # every lifted value inside its box (dropped elements are 0) is what the rows assume
        for name, (pos, idx) in p.lifted.items():
            rest = np.setdiff1d(np.arange(vals[name][0].numel()), idx)
            assert np.all(vals[name].reshape(xs.shape[0], -1).numpy()[:, rest] == 0)
        for v, y in zip(V, ys):
            P = np.outer(v, v).reshape(-1)
            assert (p.A @ P - p.h).max() <= 1e-12
            assert (np.abs(p.B @ P - p.f) - p.e).max() <= 1e-12
            assert v @ v <= p.trace
            assert y >= p.C @ P + p.k0 - p.k_err - 1e-12


def test_input_rows_cut_the_box():
    """Inputs with sum(x) <= s: the bound lies below the points satisfying it and above the
    box-only bound."""
    g, lo, hi, pre, pts = case("4_10_10_3", 4)
    s = float(lo.sum() + hi.sum()) / 2
    rows = (np.ones((1, lo.size)), np.array([s]))
    c = objectives(g, 4)[3]
    cut = sdp_lower(g, lo, hi, pre, c, input_rows=rows).bound
    inside = pts[(pts.sum(1) <= s).numpy()]
    assert inside.shape[0] > 10 and cut <= float((outputs(g, inside) @ c).min())
    assert cut >= sdp_lower(g, lo, hi, pre, c).bound - 1e-6


def test_affine_net_is_exact():
    """Without ReLUs the SDP has the box and its quadratic rows only: its bound is the box
    minimum of the affine map, sum_j min(g_j l_j, g_j u_j) + k0."""
    rng = np.random.default_rng(5)
    g = graph_of(random_mlp(rng, 3, [], 2, ["Relu"]))
    lo, hi = -np.ones(3), np.array([0.5, 2.0, 1.0])
    c = np.array([1.0, -2.0])
    W = forward(g, torch.eye(3, dtype=DT)).numpy() - forward(g, torch.zeros(1, 3, dtype=DT)).numpy()
    b = forward(g, torch.zeros(1, 3, dtype=DT)).numpy()[0]
    gvec = W @ c
    exact = float(np.minimum(gvec * lo, gvec * hi).sum() + c @ b)
    res = sdp_lower(g, lo, hi, {}, c)
    assert res.bound <= exact
    assert res.bound >= exact - 1e-6 * (1 + abs(exact)), (res.bound, exact)


def test_zero_multipliers_give_at_most_the_cauchy_schwarz_bound():
    """y = 0 leaves S = C: no tau works without a shift delta, whose cost delta T the bound must
    pay; the best over delta is k0 - |g| sqrt(T - 1) (Cauchy-Schwarz on the centred box), which
    no certificate from y = 0 may exceed."""
    rng = np.random.default_rng(6)
    g = graph_of(random_mlp(rng, 3, [], 2, ["Relu"]))
    c = np.array([1.0, -2.0])
    p = build_sdp(g, -np.ones(3), np.ones(3), {}, c)
    gvec = p.C.reshape(p.dim, p.dim)[0, 1:]
    cs = p.k0 - p.k_err - float(np.linalg.norm(gvec)) * math.sqrt(p.trace - 1)
    b = check_sdp_certificate(p, np.zeros(p.m))
    assert math.isfinite(b) and b <= cs + 1e-12, (b, cs)


# ---- (d): corrupted multipliers ---------------------------------------------------------------------
def test_corrupted_duals_stay_below_the_minimum():
    g, lo, hi, pre, pts = case("5_16_16_3", 0)
    c = objectives(g, 0)[3]
    p = build_sdp(g, lo, hi, pre, c)
    res = solve_sdp(p, time_limit=30)
    y, good = res.y, res.bound
    seen = observed_min(g, lo, hi, pts, c)
    mi = p.h.size
    rng = np.random.default_rng(11)
    flipped_eq = y.copy()
    flipped_eq[mi:] *= -1
    tries = {"flipped equalities": flipped_eq, "all flipped": -y, "doubled": 2 * y, "halved": 0.5 * y,
             "zero": np.zeros_like(y), "random": rng.standard_normal(y.size), "huge": 1e8 * rng.random(y.size),
             "nan": np.where(rng.random(y.size) < 0.3, np.nan, y)}
    for scale in (1e-6, 1e-3, 1e-1):
        tries[f"noise {scale}"] = y + scale * rng.standard_normal(y.size) * (1 + np.abs(y))
    bounds = {k: check_sdp_certificate(p, v) for k, v in tries.items()}
    for k, b in bounds.items():
        assert b <= seen, f"{k}: {b} above an observed value {seen}"
        assert b <= good + 1e-6 * (1 + abs(good)), f"{k}: {b} above the SDP optimum {good}"
    # flipping the equality multipliers makes S_11 indefinite: delta > 0 costs delta * trace
    mu = np.maximum(flipped_eq[:mi], 0)
    S, _ = _dual_matrix(p, mu, flipped_eq[mi:])
    assert np.linalg.eigvalsh(S[1:, 1:]).min() < -1e-3
    assert bounds["flipped equalities"] < good - 1e-3
    assert bounds["noise 1e-06"] >= good - 1e-3 * (1 + abs(good))    # a small perturbation stays close
    with pytest.raises(ValueError):
        check_sdp_certificate(p, y[:-1])


def test_float_model_charges_its_error():
    """A float32 model's evaluation error widens the rows' slacks and the objective's error."""
    g, lo, hi, pre, pts = case("4_10_10_3", 3)
    c = objectives(g, 3)[2]
    g32 = dataclasses.replace(g, float_model=torch.float32)
    tl, th = (torch.tensor(v).reshape((1,) + g.input_shape) for v in (lo, hi))
    p64, p32 = build_sdp(g, lo, hi, pre, c), build_sdp(g32, lo, hi, crown_intermediate(g32, tl, th), c)
    assert p32.k_err > 1e3 * p64.k_err
    assert np.median(p32.e[p32.e > 0]) > 1e3 * np.median(p64.e[p64.e > 0])
    b32 = solve_sdp(p32, 30).bound
    assert b32 <= observed_min(g, lo, hi, pts, c)
    assert b32 >= solve_sdp(p64, 30).bound - 1e-4


def test_time_limit_and_result_fields():
    g, lo, hi, pre, pts = case("5_16_16_3", 1)
    c = objectives(g, 1)[2]
    start = time.monotonic()
    res = sdp_lower(g, lo, hi, pre, c, time_limit=0.01)
    assert time.monotonic() - start < 5
    assert res.bound == -math.inf or res.bound <= observed_min(g, lo, hi, pts, c)
    assert isinstance(res.status, str)


# ---- (e): what the SDP does not take -----------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda r: random_mlp(r, 3, [5, 5], 2, ["Sigmoid"]),
    lambda r: random_mlp(r, 3, [5, 5], 2, ["LeakyRelu"]),
    lambda r: random_mlp(r, 3, [5, 5], 2, ["Relu", "Tanh"]),
    lambda r: random_residual(r),
    lambda r: random_mlp(r, 2, [150, 60], 2, ["Relu"]),     # 210 hidden neurons: over the cap
], ids=["sigmoid", "leaky", "tanh_layer", "residual", "too_large"])
def test_other_graphs_raise(make):
    g = graph_of(make(np.random.default_rng(0)))
    lo, hi = -np.ones(g.input_size), np.ones(g.input_size)
    with pytest.raises(SdpError):
        sdp_lower(g, lo, hi, {}, np.ones(g.output_size))
