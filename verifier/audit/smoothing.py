"""Randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019): PREDICT and CERTIFY, sound in
floating point.

What is certified.  For a base classifier f (logits -> argmax, lowest index on ties) we certify the
smoothed classifier of the *quantized* base classifier h = f o fl32 o q, where q rounds every
coordinate to the fixed grid step*Z (step = 2**-grid_bits, nearest, ties up) and fl32 is the exact
conversion of the grid value to float32:

    g(x) = argmax_c P_{delta ~ N(0, sigma^2 I)} [ h(x + delta) = c ]      (exact reals).

`certify` returns (cA, r) such that, with probability >= 1 - alpha over the sampler's coins,
g(x') = cA for every real x' with ||x' - x||_2 <= r.  h is one fixed function of R^d (the grid
does not move with x), so Cohen's theorem applies to it exactly; the noise is not clipped to the
input domain (clipping, like rounding, could be folded into h, but nothing needs it).

Why the quantization.  Voracek and Hein ("Sound randomized smoothing in floating-point
arithmetic", ICLR 2023) show that the usual fl32(x + sigma * randn) is not Gaussian noise: which
floats it can produce depends on x, and a base classifier keyed on low-order bits gets false
certificates (their example certifies radius 1.26 with an adversarial example at 0.8).  Their
remedy, followed here: quantize the noisy input and sample the *discrete* distribution of
q(x + delta) exactly from fair coins, never through a float Gaussian.  Coordinate i falls in cell
m with probability Phi((b_m - x_i)/sigma) - Phi((b_{m-1} - x_i)/sigma), b_m = (m + 1/2) step; we
draw U uniform on [0, 2**62) and pick the cell by comparing U with integer thresholds
T_m ~ 2**62 Phi(.).  (They assume inputs on the 1/255 grid, which makes the table the same for
every coordinate; our inputs are arbitrary floats, so each coordinate gets its own table.)

What is not exact, and how it is paid for.  The thresholds come from float64 Phi (scipy ndtr, on
the small tail min(F, 1 - F) so the error is relative: at most 64 (1 + t^2) 2^-53, measured <= 4
against mpmath), are integers (2^-62), and the table stops 10 sigma out (tails folded into the
end cells).  Summed over boundaries and coordinates this bounds the total-variation distance tau
between the sampled and the exact distribution of q(x + delta) per draw (1.2e-9 for 8x8
inputs, sigma = 0.25, grid 2^-12).  CERTIFY's Clopper-Pearson bound holds for the sampled
probability p', and |p - p'| <= tau, so pA_lower = CP - tau, rounded down (CP itself carries a
2^-32 relative margin: scipy's beta.ppf is within 1.4e-15 of mpmath), then the radius
sigma * Phi^-1(pA_lower) is rounded down (2^-40 relative margin: ndtri within 5e-16).
PREDICT's binomial test runs at level alpha - n tau (n draws move any event's probability by at
most n tau).

Residual assumptions: torch's CPU generator (mt19937) supplies independent fair coins (the paper's
one assumption); scipy's ndtr and beta.ppf stay within the margins above (checked by the tests
against mpmath, with >= 16x headroom); f is a deterministic function of its float32 input (not of
the batch it shares: beware batch-size dependent GPU kernels).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np
import torch
from scipy import special, stats

Classifier = Callable[[torch.Tensor], torch.Tensor]

_COIN_BITS = 62                   # U uniform on [0, 2**62): a power of two, so randint is unbiased
_TAIL_SIGMAS = 10.0               # table reach; the mass beyond (1.5e-23 per coordinate) goes into tau
_NDTR_REL = 64 * 2.0 ** -53       # |ndtr~(-|t|) / ndtr(-|t|) - 1| <= _NDTR_REL * (1 + t^2); measured 4 * 2^-53
_CP_REL_MARGIN = 2.0 ** -32       # beta.ppf relative error measured <= 1.4e-15 (mpmath, n <= 3000)
_RADIUS_REL_MARGIN = 2.0 ** -40   # ndtri relative error measured <= 5e-16 on (1/2, 1)
_SELECT, _ESTIMATE, _PREDICT = 0, 1, 2   # independent coin streams per (seed, index)


@dataclass(frozen=True)
class SmoothingConfig:
    sigma: float = 0.25
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    batch: int = 10_000
    seed: int = 0
    grid_bits: int = 12           # noisy inputs are rounded to multiples of 2**-grid_bits; the
                                  # table holds d * 20 sigma 2**grid_bits int64 (10 MB at 8x8, sigma 0.25)

    def __post_init__(self):
        if not (self.sigma > 0 and np.isfinite(self.sigma)):
            raise ValueError(f"sigma must be positive and finite, got {self.sigma}")
        if self.n0 < 1 or self.n < 1 or self.batch < 1:
            raise ValueError("n0, n and batch must be >= 1")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.seed < 0 or not 0 <= self.grid_bits <= 100:
            raise ValueError("seed must be >= 0 and grid_bits in [0, 100]")


@dataclass(frozen=True)
class SmoothingResult:
    predicted: int | None     # None = abstain
    pA_lower: float           # sound lower bound on P(h(x + delta) = predicted class); 0.0 if none
    radius: float | None      # sound L2 radius of the smoothed classifier, None = abstain
    counts: tuple[int, ...]   # class counts of the estimation draw


@dataclass(frozen=True)
class CellTable:
    """Exact-coin sampler of q(x + delta) for one input x with d coordinates.

    m_lo: (d,) int64, grid index of each coordinate's lowest cell; thresholds: (d, C - 1) int64,
    non-decreasing rows, cell c of coordinate i drawn when #{j : thresholds[i, j] <= U} = c;
    step: grid step; tv: bound on the total-variation distance, per draw, between the sampled
    and the exact law of q(x + delta).
    """
    m_lo: torch.Tensor
    thresholds: torch.Tensor
    step: float
    tv: float


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (level 1 - alpha) Clopper-Pearson lower bound on p from k successes in n,
    rounded down so it never exceeds the exact bound; 0.0 when k = 0."""
    if not 0 <= k <= n or n < 1 or not 0 < alpha < 1:
        raise ValueError(f"need 0 <= k <= n, n >= 1, 0 < alpha < 1; got {k}, {n}, {alpha}")
    if k == 0:
        return 0.0
    p = float(stats.beta.ppf(alpha, k, n - k + 1))
    return max(0.0, float(np.nextafter(p * (1.0 - _CP_REL_MARGIN), 0.0)))


def l2_radius(sigma: float, p_lower: float) -> float | None:
    """sigma * Phi^-1(p_lower) rounded down, or None when p_lower <= 1/2 (abstain)."""
    if not p_lower > 0.5:
        return None
    r = sigma * float(special.ndtri(p_lower))
    r = float(np.nextafter(r * (1.0 - _RADIUS_REL_MARGIN), -np.inf))
    return r if r > 0 else None


def linf_certified(radius_l2: float | None, eps: float | str, d: int) -> bool:
    """Whether an L2 certificate of radius_l2 covers the L-inf ball of radius eps in d dimensions:
    eps * sqrt(d) <= r, decided exactly (eps^2 d <= r^2 in rationals; eps may be a decimal string)."""
    if radius_l2 is None:
        return False
    e = Fraction(eps) if isinstance(eps, str) else Fraction(float(eps))
    if e < 0 or d < 1:
        raise ValueError(f"need eps >= 0 and d >= 1, got {eps}, {d}")
    return radius_l2 >= 0 and e * e * d <= Fraction(radius_l2) ** 2


def cell_table(x: torch.Tensor, sigma: float, grid_bits: int) -> CellTable:
    """The exact-coin sampler of q(x + N(0, sigma^2 I)) for one input x (*s), on x's device."""
    xs = x.detach().double().cpu().numpy().reshape(-1)
    if not np.isfinite(xs).all():
        raise ValueError("x must be finite")
    step = 2.0 ** -grid_bits
    reach = int(np.ceil(_TAIL_SIGMAS * sigma / step)) + 2
    m_lo = np.floor(xs / step).astype(np.int64) - reach            # exact: step is a power of two
    if np.abs(m_lo).max() + 2 * reach > 2 ** 24:
        raise ValueError("grid values would not be exact in float32: lower grid_bits or rescale x")
    b = (m_lo[:, None] + np.arange(2 * reach)[None, :] + 0.5) * step   # (d, C-1) cell boundaries, exact
    t = (b - xs[:, None]) / sigma
    tail = special.ndtr(-np.abs(t))                                # min(F, 1 - F), relatively accurate
    ticks = np.ceil(np.ldexp(tail, _COIN_BITS)).astype(np.int64)
    thresholds = np.where(t <= 0, ticks, (1 << _COIN_BITS) - ticks)
    if (np.diff(thresholds, axis=1) < 0).any():
        raise RuntimeError("cell thresholds are not monotone (float64 ndtr misbehaved)")
    return CellTable(torch.as_tensor(m_lo, device=x.device),
                     torch.as_tensor(thresholds, device=x.device), step,
                     _total_variation(t, tail))


def _total_variation(t: np.ndarray, tail: np.ndarray) -> float:
    """Per-draw TV bound: sum over boundaries of |T/2^62 - F| plus the mass beyond the end cells.

    t, tail: (d, C-1).  TV of a product is at most the sum over coordinates; for one coordinate,
    TV <= sum_j |F'_j - F_j| for the folded law, plus the folded mass (<= F_0 + 1 - F_last)."""
    per_boundary = 2 * _NDTR_REL * (1 + t * t) * tail + 2.0 ** -_COIN_BITS
    beyond = 2 * (tail[:, 0] + tail[:, -1])
    return float((per_boundary.sum() + beyond.sum()) * (1 + 1e-6))   # 1e-6: summation rounding


def noisy_inputs(table: CellTable, coins: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Grid points q(x + delta) for coins (B, d) int64 uniform on [0, 2**62) -> (B, *shape) float32."""
    cells = torch.searchsorted(table.thresholds, coins.T.contiguous(), right=True)   # (d, B)
    m = (table.m_lo[:, None] + cells).T                                              # (B, d)
    return (m.to(torch.float32) * table.step).reshape(coins.shape[0], *shape)        # exact: |m| <= 2^24


def coin_generator(seed: int, index: int, phase: int) -> torch.Generator:
    """CPU generator for one (seed, sample index, phase): independent of batching and other samples."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=(index, phase)).generate_state(2, np.uint32)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def count_classes(f: Classifier, x: torch.Tensor, table: CellTable, draws: int, batch: int,
                  gen: torch.Generator) -> np.ndarray:
    """Class counts of h(x + delta) over `draws` draws -> (K,) int64.  Coins come from gen in
    order, so the counts do not depend on `batch` (torch's CPU randint fills serially)."""
    counts = None
    with torch.no_grad():
        for start in range(0, draws, batch):
            size = min(batch, draws - start)
            coins = torch.randint(0, 1 << _COIN_BITS, (size, table.m_lo.numel()), generator=gen,
                                  dtype=torch.int64).to(table.thresholds.device)
            logits = f(noisy_inputs(table, coins, x.shape))
            if logits.dim() != 2 or logits.shape[0] != size:
                raise ValueError(f"f must return logits (B, K), got {tuple(logits.shape)}")
            part = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]).cpu().numpy()
            counts = part if counts is None else counts + part
    return counts


def certify(f: Classifier, x: torch.Tensor, cfg: SmoothingConfig, index: int = 0) -> SmoothingResult:
    """Cohen's CERTIFY for one sample x (*s); `index` seeds its coins (same (seed, index), same result)."""
    table = cell_table(x, cfg.sigma, cfg.grid_bits)
    chosen = count_classes(f, x, table, cfg.n0, cfg.batch, coin_generator(cfg.seed, index, _SELECT))
    c_a = int(np.argmax(chosen))                                    # first maximum: lowest index
    counts = count_classes(f, x, table, cfg.n, cfg.batch, coin_generator(cfg.seed, index, _ESTIMATE))
    k = int(counts[c_a]) if c_a < len(counts) else 0
    p_lower = clopper_pearson_lower(k, cfg.n, cfg.alpha) - table.tv
    p_lower = max(0.0, float(np.nextafter(p_lower, 0.0)))
    radius = l2_radius(cfg.sigma, p_lower)
    return SmoothingResult(c_a if radius is not None else None, p_lower, radius,
                           tuple(int(c) for c in counts))


def predict(f: Classifier, x: torch.Tensor, cfg: SmoothingConfig, index: int = 0) -> int | None:
    """Cohen's PREDICT with cfg.n draws: the top class if the two-sided binomial test of its
    count against the runner-up's rejects at level alpha - n tau, else None (abstain)."""
    table = cell_table(x, cfg.sigma, cfg.grid_bits)
    counts = count_classes(f, x, table, cfg.n, cfg.batch, coin_generator(cfg.seed, index, _PREDICT))
    order = np.argsort(-counts, kind="stable")                     # ties: lowest index first
    n_a = int(counts[order[0]])
    n_b = int(counts[order[1]]) if len(counts) > 1 else 0
    level = cfg.alpha - cfg.n * table.tv
    if level <= 0 or stats.binomtest(n_a, n_a + n_b, 0.5).pvalue > level:
        return None
    return int(order[0])
