"""Where branch and bound splits an activation's input interval, and what the split is worth.

Heuristics only: a split of [lo, hi] at any point p gives two domains that cover the parent,
and each side's relaxation is the rule's own on the narrower interval, so soundness never
depends on what is chosen here."""
from __future__ import annotations

import torch
from torch import Tensor

from ..bounds.rounding import clean_bounds

# candidate split points as fractions of the interval; 0 is tried too when inside
FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
SAMPLES = 9          # points at which the slack between f and a plane is measured
MIN_WIDTH = 1e-9     # intervals narrower than this (relative to 1 + |lo| + |hi|) are not split
FAR = 1e4            # an infinite end is read as this far beyond the other one (for the estimate)


def kink_gain(lo: Tensor, hi: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """A kink at 0: split there.  The gain is |a| times the intercept -lo hi / (hi - lo) of the
    upper chord (its height above the function at 0, BaBSR's estimate) on intervals across 0;
    an unknown (infinite) bound makes the element the one most worth splitting."""
    lo, hi = clean_bounds(lo, hi)
    across = (lo < 0) & (hi > 0)
    big = torch.finfo(lo.dtype).max
    intercept = torch.where(across, -lo * hi / (hi - lo).clamp(min=1e-30), 0.0)
    intercept = torch.nan_to_num(intercept, nan=big, posinf=big)
    gain = torch.where(across, torch.nan_to_num(a.abs() * intercept, nan=big) + 1e-12, -1.0)
    return gain, torch.zeros_like(lo)


def _expand(t: Tensor, k: int) -> Tensor:
    """(B, *s) -> (k * B, *s): k copies stacked along the batch axis."""
    return t.unsqueeze(0).expand((k,) + t.shape).reshape((k * t.shape[0],) + t.shape[1:])


def slack(rule, node, lo: Tensor, hi: Tensor, upper: Tensor) -> Tensor:
    """The largest gap, over SAMPLES points of [lo, hi] (finite, (B, *shape)), between f and its
    lower plane (its upper plane where `upper`): how loose the relaxation is there."""
    lw, lb, uw, ub = rule.relax(node, lo, hi)
    w, c = torch.where(upper, uw, lw), torch.where(upper, ub, lb)
    t = torch.linspace(0, 1, SAMPLES, dtype=lo.dtype, device=lo.device).reshape((SAMPLES,) + (1,) * lo.dim())
    x = (lo + (hi - lo) * t).clamp(lo, hi)                       # (S, B, *shape)
    f = rule.evaluate(node, x.reshape((-1,) + lo.shape[1:])).reshape(x.shape)
    plane = w * x + c
    gap = torch.where(upper, plane - f, f - plane).amax(0)
    return torch.nan_to_num(gap, nan=torch.finfo(lo.dtype).max).clamp(min=0)


def sampled_gain(rule, node, lo: Tensor, hi: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """Try each candidate point (FRACTIONS of the interval, and 0 when inside) and keep the one
    whose worse side leaves the least slack in the plane `a` selects (upper where a < 0); the
    gain is |a| times the slack removed.  An infinite end is cut at FAR beyond the other end
    (or at 0 when both are infinite) with the largest gain."""
    lo, hi = clean_bounds(lo, hi)
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    scale = 1 + lo.abs() + hi.abs()
    loose = rule.loose(node, lo, hi) & (~finite | ((hi - lo) > MIN_WIDTH * scale))
    zero = torch.zeros_like(lo)
    flo, fhi = torch.where(finite, lo, zero), torch.where(finite, hi, zero)
    width = fhi - flo
    cands = [flo + f * width for f in FRACTIONS]
    inside = (flo + width / 16 < 0) & (0 < fhi - width / 16)
    cands.append(torch.where(inside, zero, flo + width / 2))
    k = len(cands)
    P = torch.stack(cands)                                       # (K, B, *shape)
    upper = _expand(a < 0, k)
    Pf = P.reshape((k * lo.shape[0],) + lo.shape[1:])
    left = slack(rule, node, _expand(flo, k), Pf, upper)
    right = slack(rule, node, Pf, _expand(fhi, k), upper)
    worse = torch.maximum(left, right).reshape(P.shape)
    best, which = worse.min(0)
    point = torch.gather(P, 0, which.unsqueeze(0))[0]
    before = slack(rule, node, flo, fhi, a < 0)
    gain = a.abs() * (before - best).clamp(min=0) + 1e-12
    # an infinite end: cut it off (far enough out that the finite side is still informative)
    big = torch.finfo(lo.dtype).max
    point = torch.where(finite, point, _cut_infinite(lo, hi))
    gain = torch.where(finite, torch.nan_to_num(gain, nan=big, posinf=big), big)
    return torch.where(loose, gain, -1.0), point


def _cut_infinite(lo: Tensor, hi: Tensor) -> Tensor:
    """Where an end is infinite: a point FAR beyond the finite one (0 when both are infinite)."""
    zero = torch.zeros_like(lo)
    fin_lo, fin_hi = torch.isfinite(lo), torch.isfinite(hi)
    return torch.where(fin_lo, lo + FAR * (1 + lo.abs()), torch.where(fin_hi, hi - FAR * (1 + hi.abs()), zero))


def midpoint_gain(lo: Tensor, hi: Tensor, gain: Tensor) -> tuple[Tensor, Tensor]:
    """Split at the midpoint with the given gain (the largest where it is not finite), -1 where
    the interval is too narrow to split; an infinite end is cut off first."""
    lo, hi = clean_bounds(lo, hi)
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    loose = ~finite | ((hi - lo) > MIN_WIDTH * (1 + lo.abs() + hi.abs()))
    big = torch.finfo(lo.dtype).max
    point = torch.where(finite, (lo + hi) / 2, _cut_infinite(lo, hi))
    gain = torch.where(finite, torch.nan_to_num(gain, nan=big, posinf=big), big) + 1e-12
    return torch.where(loose, gain, -1.0), point
