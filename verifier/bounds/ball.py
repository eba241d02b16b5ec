"""Concretisation of a linear bound over an L2 ball: min over |x - c|_2 <= r of a . x + const
is a . c + const - r |a|_2 (the dual norm of L2 is L2).  The ball is an input set of its own:
its bounding box gives the interval bounds, and the ball itself the back-substitution's final
step, where it is far tighter than the box in high dimensions (r |a|_2 against r |a|_1)."""
from __future__ import annotations

import torch
from torch import Tensor

from .rounding import accumulate, coef, floor, gamma, lower, tiny, unit

Ball = tuple[Tensor, Tensor]   # centre (B, *input_shape), radius (B,): |x - centre|_2 <= radius


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1)


def ball_lower(a: Tensor, const: Tensor, err: Tensor, ball: Ball) -> Tensor:
    """Rigorous min over the ball of sum(a * x) + const - err.  a: (B, q, *input_shape);
    const, err: (B, q).  Returns (B, q).

    Rounding: a . c + const is a sum of n + 1 products and the constant, within gamma(n + 2) of
    their magnitudes; |a|_2 is computed from sum(a^2), which rounds by at most gamma(n + 1) of
    itself (all terms are >= 0), plus 4 tiny per term for squares flushed to 0, and the square
    root and products by an ulp each: the computed norm is raised past all of them."""
    centre, radius = ball
    af = _flat(a)
    B, q, n = af.shape
    cf = centre.reshape(B, n, 1)
    dot = torch.bmm(af, cf).squeeze(-1)
    dtype = a.dtype
    with torch.no_grad():
        ad = af.detach()
        sq = (ad * ad).sum(-1)
        sq_up = sq * (1 + 2 * gamma(n + 2, dtype)) + 4 * tiny(dtype) * (n + 1)
        norm_up = torch.sqrt(sq_up) * (1 + 4 * unit(dtype))
        term_up = radius.reshape(B, 1) * norm_up * (1 + 4 * unit(dtype)) + tiny(dtype)
    smooth = radius.reshape(B, 1) * torch.sqrt((af * af).sum(-1) + tiny(dtype))
    value = const + dot - term_up - (smooth - smooth.detach())   # the value of term_up, r |a|_2's gradient
    with torch.no_grad():
        size = torch.bmm(ad.abs(), cf.abs()).squeeze(-1)
        e = coef(n + 3, n + 3, dtype) * (const.detach().abs() + size + term_up)
        e = e + floor(dtype, 2 * n + 3, ad.abs().sum(-1), cf.abs().reshape(B, 1, n).sum(-1))
        err = accumulate(err, e)
    return lower(value, err)
