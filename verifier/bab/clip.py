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
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..spec import Cases

PASSES = 3
MAX_WORK = 1 << 16  # conjuncts x rows x input elements per domain beyond which clipping is skipped


def _margin(dtype: torch.dtype) -> float:
    """Relative widening of a clipped side: the cut's own rounding is ~1e-16 (float64) or ~1e-7
    (float32) of the box; the margin is far above both."""
    return 1e-9 if dtype == torch.float64 else 1e-4


def _row_lower(a: Tensor, c: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """min over the box of a . x + c: a (N, J, Q, n), c (N, 1, Q), boxes (N, J, n) -> (N, J, Q)."""
    return c + torch.minimum(a * lo.unsqueeze(2), a * hi.unsqueeze(2)).sum(-1)


def clip_boxes(cs: Cases, lb: Tensor, A: Tensor, tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """cs: N domains; lb (N, Q): lower bounds of the rows over the boxes; A (N, Q, *in): the input
    coefficients of those bounds.  Returns (lo, hi, valid): boxes that hold every counterexample of
    each domain and the conjuncts that may still have one (valid & not emptied)."""
    N, Q = lb.shape
    shape = cs.lo.shape[1:]
    J = cs.member.shape[1]
    n = cs.lo[0].numel()
    if N == 0 or J * Q * n > MAX_WORK:
        return cs.lo, cs.hi, cs.valid
    lo0, hi0 = cs.lo.reshape(N, 1, n), cs.hi.reshape(N, 1, n)
    a = A.reshape(N, 1, Q, n).expand(N, J, Q, n)
    finite = torch.isfinite(lb)
    # c such that a . x + c is the bound whose minimum over the domain's box is lb
    c = (lb - torch.minimum(a[:, 0] * lo0, a[:, 0] * hi0).sum(-1)).unsqueeze(1)
    rows = cs.member & finite.unsqueeze(1) & cs.valid.unsqueeze(-1)          # (N, J, Q) rows that cut
    lo, hi = lo0.expand(N, J, n).clone(), hi0.expand(N, J, n).clone()
    pos, neg = (a > 0) & rows.unsqueeze(-1), (a < 0) & rows.unsqueeze(-1)
    for _ in range(PASSES):
        g = (tol - _row_lower(a, c, lo, hi)).clamp_min(0).unsqueeze(-1)      # (N, J, Q, 1)
        upper = torch.where(pos, lo.unsqueeze(2) + g / a.abs(), torch.inf).amin(2)
        lower = torch.where(neg, hi.unsqueeze(2) - g / a.abs(), -torch.inf).amax(2)
        hi, lo = torch.minimum(hi, upper), torch.maximum(lo, lower)
    emptied = (lo > hi).any(-1) | (rows & (_row_lower(a, c, lo, hi) > tol)).any(-1)
    valid = cs.valid & ~emptied
    slack = _margin(lo.dtype) * (hi0 - lo0)
    lo = torch.maximum(lo - slack, lo0)
    hi = torch.minimum(hi + slack, hi0)
    keep = valid.unsqueeze(-1)
    hull_lo = torch.where(keep, lo, torch.inf).amin(1)
    hull_hi = torch.where(keep, hi, -torch.inf).amax(1)
    none = ~valid.any(-1, keepdim=True)
    hull_lo = torch.where(none, lo0[:, 0], hull_lo)
    hull_hi = torch.where(none, hi0[:, 0], hull_hi)
    return hull_lo.reshape((N,) + shape), hull_hi.reshape((N,) + shape), valid
