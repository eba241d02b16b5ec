"""Randomized smoothing: every bound checked against an independent oracle (scipy's binomtest,
mpmath at 30 digits, the closed form of a smoothed linear classifier, exact cell probabilities)."""
import math

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy import special, stats

from verifier.audit.smoothing import (
    _NDTR_REL, SmoothingConfig, cell_table, certify, clopper_pearson_lower, coin_generator,
    count_classes, l2_radius, linf_certified, predict)

mp.mp.dps = 30


def _binomial_tail(k, n, p):
    """P(Bin(n, p) >= k), exact."""
    return mp.fsum(mp.binomial(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _cp_exact(k, n, alpha):
    """The exact one-sided Clopper-Pearson bound: the p with P(Bin(n, p) >= k) = alpha (bisection)."""
    lo, hi = mp.mpf(0), mp.mpf(1)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _binomial_tail(k, n, mid) < alpha else (lo, mid)
    return hi


def _linear(w: torch.Tensor, b: float):
    """Binary linear classifier on flattened inputs: class 1 iff w.z + b > 0 (ties: class 0)."""
    def f(z):
        s = z.flatten(1).double() @ w.double() + b
        return torch.stack([-s, s], dim=1)
    return f


# ---- Clopper-Pearson and the radius ------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 10, 100, 1000, 10_000, 100_000])
@pytest.mark.parametrize("alpha", [1e-3, 0.05])
def test_clopper_pearson_matches_binomtest(n, alpha):
    for k in sorted({0, 1, 2, n // 3, n // 2, n - 1, n} & set(range(n + 1))):
        got = clopper_pearson_lower(k, n, alpha)
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        assert got == pytest.approx(ref, rel=1e-7, abs=1e-12), (k, n)   # binomtest: brentq, ~1e-13 abs
    assert clopper_pearson_lower(0, n, alpha) == 0.0
    # closed forms, exact at any n: k = 1 solves 1 - (1 - p)^n = alpha, k = n solves p^n = alpha
    a, m = mp.mpf(alpha), mp.mpf(n)
    for k, exact in ((1, 1 - (1 - a) ** (1 / m)), (n, a ** (1 / m))):
        got = clopper_pearson_lower(k, n, alpha)
        assert mp.mpf(got) <= exact and got >= float(exact) * (1 - 1e-9), (k, n)


@pytest.mark.parametrize("n", [1, 3, 20, 60])
def test_clopper_pearson_never_above_exact(n):
    for k in range(1, n + 1, max(1, n // 7)):
        for alpha in (1e-3, 0.05):
            exact = _cp_exact(k, n, alpha)
            got = clopper_pearson_lower(k, n, alpha)
            assert mp.mpf(got) <= exact and got >= float(exact) * (1 - 1e-9), (k, n, alpha)
    assert clopper_pearson_lower(n, n, 0.01) <= mp.mpf(0.01) ** (mp.mpf(1) / n)   # k = n closed form


def test_l2_radius_rounds_down():
    for sigma in (0.12, 0.25, 1.0):
        for p in list(np.linspace(0.5, 1, 400)[1:-1]) + [0.5 + 1e-15, 1 - 1e-15, 0.9999999]:
            r = l2_radius(sigma, float(p))
            exact = mp.mpf(sigma) * mp.sqrt(2) * mp.erfinv(2 * mp.mpf(float(p)) - 1)
            assert r is not None and mp.mpf(r) < exact and r >= float(exact) * (1 - 1e-10), (sigma, p)
            assert r == pytest.approx(sigma * stats.norm.ppf(p), rel=1e-10)
    assert l2_radius(0.25, 0.5) is None and l2_radius(0.25, 0.3) is None


def test_linf_certified_is_exact():
    assert linf_certified(1.0, 0.5, 4)                           # 0.5 * 2 = 1 exactly
    assert not linf_certified(1.0, float(np.nextafter(0.5, 1)), 4)
    # float 0.1 is 0.1000000000000000055..., so 0.1 * sqrt(100) > 1 though 0.1 * 10.0 == 1.0 in floats
    assert 0.1 * math.sqrt(100) <= 1.0 and not linf_certified(1.0, 0.1, 100)
    assert linf_certified(1.0, "0.1", 100)                       # the decimal 0.1 exactly
    assert not linf_certified(None, 0.0, 10)
    assert linf_certified(0.8, 0.1, 64) and not linf_certified(0.79, 0.1, 64)


# ---- the exact-coin sampler ---------------------------------------------------------------------

def test_ndtr_tail_error_within_margin():
    """The bound the TV budget is built on: relative error of the computed tail min(F, 1 - F) at
    boundary b, argument (b - x) / sigma included, is <= _NDTR_REL (1 + t^2), with 16x headroom."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(1500):
        x = float(np.float32(rng.uniform(-3, 3)))
        sigma = float(rng.choice([0.1, 0.25, 0.3, 1.0]))
        b = (np.floor(x * 4096) + rng.integers(-12 * 4096 * sigma, 12 * 4096 * sigma) + 0.5) / 4096
        t = (b - x) / sigma
        tail = special.ndtr(-abs(t))
        t_exact = (mp.mpf(b) - mp.mpf(x)) / mp.mpf(sigma)
        exact = mp.ncdf(-abs(t_exact))
        worst = max(worst, float(abs(tail - exact) / exact) / (1 + t * t))
    assert worst <= _NDTR_REL / 16


def test_table_cdf_matches_exact_gaussian():
    """thresholds / 2^62 is the exact CDF of x + delta at the cell boundaries, within the budget."""
    x = torch.tensor([0.3, -1.7, 1e-3], dtype=torch.float32)
    sigma = 0.25
    table = cell_table(x, sigma, grid_bits=6)
    assert 0 < table.tv < 1e-11
    total = 0.0
    for i in range(3):
        for j, thr in enumerate(table.thresholds[i].tolist()):
            b = (mp.mpf(int(table.m_lo[i])) + j + mp.mpf(0.5)) * table.step
            f_exact = mp.ncdf((b - mp.mpf(float(x[i]))) / sigma)
            err = abs(mp.mpf(thr) / 2 ** 62 - f_exact)
            assert err <= 1e-15
            total += float(err)
        b0 = (mp.mpf(int(table.m_lo[i])) + mp.mpf(0.5)) * table.step
        assert mp.ncdf((b0 - mp.mpf(float(x[i]))) / sigma) < 1e-20      # tails folded: negligible
    assert total <= table.tv


def test_sampled_cells_follow_exact_law():
    """Empirical cell frequencies of a coarse grid (step 1/4, sigma 1/4) against exact probabilities."""
    x = torch.tensor([0.1, 0.0], dtype=torch.float32)
    cfg = SmoothingConfig(sigma=0.25, grid_bits=2)
    table = cell_table(x, cfg.sigma, cfg.grid_bits)
    seen = []
    count_classes(lambda z: seen.append(z.clone()) or torch.zeros(len(z), 1), x, table, 100_000,
                  40_000, coin_generator(0, 0, 0))
    z = torch.cat(seen)
    for i in range(2):
        m = torch.round(z[:, i] * 4).long()
        for cell in range(-3, 4):
            p = stats.norm.cdf((cell + 0.5) / 4, float(x[i]), 0.25) - stats.norm.cdf((cell - 0.5) / 4, float(x[i]), 0.25)
            freq = (m == cell).double().mean().item()
            assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / len(z)) + 1e-12, (i, cell, freq, p)


def test_every_evaluated_input_lies_on_the_grid():
    """The Voracek-Hein channel is closed: f sees only grid points (float32-exact multiples of
    2^-grid_bits), so no low-order bit below the grid can carry information about x."""
    x = torch.rand(1, 8, 8) * 2 - 1
    cfg = SmoothingConfig(sigma=0.25, n0=50, n=2000, batch=700, grid_bits=12)
    seen = []

    def f(z):
        seen.append(z.clone())
        return torch.zeros(len(z), 3)
    certify(f, x, cfg)
    z = torch.cat(seen)
    assert z.dtype == torch.float32 and z.shape == (2050, 1, 8, 8)
    scaled = z.double() * 4096
    assert torch.equal(scaled, torch.round(scaled))
    assert (z - x).std().item() == pytest.approx(0.25, rel=0.02)


def test_low_bit_classifier_cannot_beat_the_exact_probability():
    """A base classifier keyed on the lowest bit the pipeline exposes (the parity of the grid
    index): the certificate must respect the exact law of the smoothed f o q, computed in closed
    form.  On a coarse grid that law is lopsided, so the test has teeth; on a fine one it is 1/2
    and the smoothed classifier must abstain."""
    def parity(z):
        odd = (torch.round(z.flatten(1) * 2).long().sum(1) % 2).double()   # grid step 1/2
        return torch.stack([odd, 1 - odd], dim=1)                          # class 1 = even
    x = torch.tensor([0.0, 0.05], dtype=torch.float32)
    cfg = SmoothingConfig(sigma=0.15, n=10_000, grid_bits=1)
    res = certify(parity, x, cfg)
    char = 1.0
    for xi in x.tolist():
        cells = np.arange(-8, 9)
        p = stats.norm.cdf((cells + 0.5) / 2, xi, 0.15) - stats.norm.cdf((cells - 0.5) / 2, xi, 0.15)
        char *= float(np.sum(p * (-1.0) ** cells))
    p_even = 0.5 * (1 + char)
    assert res.predicted == 1 and res.pA_lower <= p_even and res.pA_lower >= p_even - 0.02
    assert p_even > 0.75 and res.radius <= 0.15 * stats.norm.ppf(p_even)

    fine = SmoothingConfig(sigma=0.25, n=4000, grid_bits=12)
    def fine_parity(z):
        odd = (torch.round(z.flatten(1) * 4096).long().sum(1) % 2).double()
        return torch.stack([odd, 1 - odd], dim=1)
    assert certify(fine_parity, x, fine).radius is None
    assert predict(fine_parity, x, fine) is None


# ---- CERTIFY and PREDICT ------------------------------------------------------------------------

@pytest.mark.parametrize("dist", [-0.4, -0.05, 0.1, 0.3, 0.6])
def test_linear_classifier_against_closed_form(dist):
    """f(x) = [w.x + b > 0]: the smoothed classifier's pA = Phi(|w.x + b| / (sigma |w|)) and its
    exact robust radius is |w.x + b| / |w|."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(64, generator=gen, dtype=torch.float64)
    w /= w.norm()
    x = (torch.rand(1, 8, 8, generator=gen) * 2 - 1)
    b = dist - float(x.flatten().double() @ w)
    exact_dist = abs(float(x.flatten().double() @ w) + b)
    cfg = SmoothingConfig(sigma=0.25, n0=100, n=10_000)
    res = certify(_linear(w, b), x, cfg, index=3)
    p_true = stats.norm.cdf(exact_dist / cfg.sigma)
    assert res.predicted == (1 if dist > 0 else 0)
    assert res.radius <= exact_dist
    assert p_true - 0.035 <= res.pA_lower <= p_true + 1e-3     # CP slack ~3.1 sd, sd <= 0.005
    assert res.radius == pytest.approx(cfg.sigma * stats.norm.ppf(res.pA_lower), rel=1e-9)
    assert sum(res.counts) == cfg.n
    assert predict(_linear(w, b), x, cfg) == res.predicted


def test_reproducible_and_independent_of_batching():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(64, generator=gen, dtype=torch.float64)
    x = torch.rand(8, 8, generator=gen)
    f = _linear(w, -float(x.flatten().double() @ w) + 0.05 * float(w.norm()))
    cfg = SmoothingConfig(sigma=0.25, n0=100, n=5000, batch=10_000, seed=11)
    first = certify(f, x, cfg, index=5)
    assert certify(f, x, cfg, index=5) == first
    for batch in (1, 333, 4999):
        assert certify(f, x, SmoothingConfig(sigma=0.25, n0=100, n=5000, batch=batch, seed=11), 5) == first
    assert certify(f, x, cfg, index=6).counts != first.counts
    assert certify(f, x, SmoothingConfig(sigma=0.25, n0=100, n=5000, seed=12), 5).counts != first.counts


def test_abstains_on_the_decision_boundary():
    w = torch.ones(4, dtype=torch.float64) / 2
    x = torch.zeros(4)
    cfg = SmoothingConfig(sigma=0.5, n0=100, n=2000)
    res = certify(_linear(w, 0.0), x, cfg)
    assert res.predicted is None and res.radius is None and 0.3 < res.pA_lower < 0.5
    assert predict(_linear(w, 0.0), x, cfg) is None


def test_config_and_input_validation():
    with pytest.raises(ValueError):
        SmoothingConfig(sigma=0.0)
    with pytest.raises(ValueError):
        SmoothingConfig(alpha=1.0)
    with pytest.raises(ValueError):
        cell_table(torch.tensor([5000.0]), 0.25, 12)     # grid values beyond float32's exact range
    with pytest.raises(ValueError):
        cell_table(torch.tensor([float("nan")]), 0.25, 12)
