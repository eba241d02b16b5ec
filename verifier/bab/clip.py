"""Shrinking an input box to where a counterexample can still be (input clipping).

CROWN gives, for every property row q of a domain, a linear function of the input that lies below
the row over the domain's box: row_q(x) >= a_q . x + c_q.  A counterexample of conjunct j makes
every row of j at most 0, so it lies in the box cut by the half-spaces a_q . x + c_q <= 0 of
those rows.  Cutting a box by a half-space is exact per coordinate: with g = -(lower bound of the
row over the box) >= 0, a coordinate with a_i > 0 can rise at most g / a_i above its lower end,
and one with a_i < 0 fall at most g / |a_i| below its upper end.  Each cut raises the other rows'
lower bounds over the smaller box, so a few passes over the rows of a conjunct can empty it even
when no single row is positive: the conjunct is then refuted.  The domain keeps the hull of its
conjuncts' boxes.

Every step is rounded outwards with a proven error bound (bounds/rounding.py), so the clipped
box holds every real counterexample of the domain: the plane's constant c, the row lower bounds
over a box, and each new side lo + g / a (rounded up) or hi - g / |a| (rounded down).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..bounds.rounding import coef, floor, lower, magnitude, upper
from ..spec import Cases, conjunct_max, open_rows

PASSES = 3
MAX_WORK = 1 << 16  # rows x input elements per domain beyond which clipping is skipped


def _box_terms(a: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The sum over the box of min(a_i lo_i, a_i hi_i) (..., Q) and its rounding error:
    n products and a sum (plus one more term added by the caller): gamma(n + 2) of the
    magnitudes, and 2 tiny per operation and operand for flushed subnormals."""
    t = torch.minimum(a * lo, a * hi)
    n = a.shape[-1]
    err = coef(n + 2, n + 3, a.dtype) * t.abs().sum(-1)
    err = err + floor(a.dtype, 2 * n + 4, a.abs().sum(-1), magnitude(lo, hi).sum(-1))
    return t.sum(-1), err


def _row_lower(a: Tensor, c: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Rigorous min over a box of a . x + c, each row over its own box: a (N, Q, n), c (N, Q),
    boxes (N, Q, n) -> (N, Q)."""
    s, err = _box_terms(a, lo, hi)
    return lower(c + s, err + coef(1, 1, a.dtype) * c.abs())


def _cut(lo: Tensor, hi: Tensor, a: Tensor, g: Tensor, pos: Tensor, neg: Tensor, slot: Tensor
         ) -> tuple[Tensor, Tensor]:
    """The conjuncts' boxes (N, J, n) cut by the half-spaces of their rows: a coordinate with
    a_i > 0 rises at most g / a_i above its lower end, rounded up (a quotient and a sum: 2u of
    |lo| + g / a_i, plus tiny); a_i < 0 the mirror image.  A rounding that loses g / a
    altogether (g / a below tiny) is in the tiny.  Row r cuts the box of its conjunct,
    slot[:, r] - 1 ((N, Q, n) index into J + 1 slots, slot 0 for rows that cut nothing)."""
    step = g / a.abs()
    lo_r, hi_r = _per_row(lo, slot), _per_row(hi, slot)
    new_hi = upper(lo_r + step, coef(2, 1, a.dtype) * (lo_r.abs() + step) + 4 * floor(a.dtype, 1))
    new_lo = lower(hi_r - step, coef(2, 1, a.dtype) * (hi_r.abs() + step) + 4 * floor(a.dtype, 1))
    N, J, n = lo.shape
    upper_ = lo.new_full((N, J + 1, n), torch.inf).scatter_reduce(
        1, slot, torch.where(pos, new_hi, torch.inf), "amin", include_self=True)[:, 1:]
    lower_ = lo.new_full((N, J + 1, n), -torch.inf).scatter_reduce(
        1, slot, torch.where(neg, new_lo, -torch.inf), "amax", include_self=True)[:, 1:]
    return torch.maximum(lo, lower_), torch.minimum(hi, upper_)


def _per_row(box: Tensor, slot: Tensor) -> Tensor:
    """The box (N, J, n) of each row's conjunct: (N, Q, n) (slot 0, no conjunct: the first box,
    whose use the caller masks)."""
    return torch.gather(box, 1, (slot - 1).clamp(min=0))


def clip_boxes(cs: Cases, lb: Tensor, A: Tensor, tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """cs: N domains; lb (N, Q): rigorous lower bounds of the rows over the boxes; A (N, Q, *in):
    the input coefficients of those bounds.  Returns (lo, hi, valid): boxes that hold every
    counterexample of each domain and the conjuncts that may still have one (valid & not
    emptied).  A row counts as met where it is <= tol (0: bound_tolerance)."""
    N, Q = lb.shape
    shape = cs.lo.shape[1:]
    J = cs.valid.shape[1]
    n = cs.lo[0].numel()
    if N == 0 or Q * n > MAX_WORK:
        return cs.lo, cs.hi, cs.valid
    lo0, hi0 = cs.lo.reshape(N, 1, n), cs.hi.reshape(N, 1, n)
    a = A.reshape(N, Q, n)
    # c with a . x + c <= row(x) on the domain: lb <= (the bound's constant) + min over the box of
    # a . x, so c = lb - (that minimum), rounded down, will do
    s, err = _box_terms(a, lo0, hi0)
    c = lower(lb - tol - s, err + coef(2, 1, lb.dtype) * (lb.abs() + tol))
    usable = torch.isfinite(c) & torch.isfinite(a).all(-1)
    rows = open_rows(cs) & usable                                           # (N, Q) rows that cut
    slot = torch.where(rows, cs.conj + 1, 0).unsqueeze(-1).expand(N, Q, n)
    lo, hi = lo0.expand(N, J, n).clone(), hi0.expand(N, J, n).clone()
    pos, neg = (a > 0) & rows.unsqueeze(-1), (a < 0) & rows.unsqueeze(-1)
    for _ in range(PASSES):
        g = (-_row_lower(a, c, _per_row(lo, slot), _per_row(hi, slot))).clamp_min(0).unsqueeze(-1)   # (N, Q, 1)
        lo, hi = _cut(lo, hi, a, g, pos, neg, slot)
    cut_off = rows & (_row_lower(a, c, _per_row(lo, slot), _per_row(hi, slot)) > 0)
    emptied = (lo > hi).any(-1) | (conjunct_max(cs, cut_off.to(torch.uint8)) > 0)
    valid = cs.valid & ~emptied
    keep = valid.unsqueeze(-1)
    hull_lo = torch.where(keep, lo, torch.inf).amin(1)
    hull_hi = torch.where(keep, hi, -torch.inf).amax(1)
    none = ~valid.any(-1, keepdim=True)
    hull_lo = torch.where(none, lo0[:, 0], hull_lo)
    hull_hi = torch.where(none, hi0[:, 0], hull_hi)
    return hull_lo.reshape((N,) + shape), hull_hi.reshape((N,) + shape), valid
