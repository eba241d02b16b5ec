"""Concretisation of a linear bound over an L2 ball: min over |x - c|_2 <= r of a . x + const
is a . c + const - r |a|_2 (the dual norm of L2 is L2).  The ball is an input set of its own:
its bounding box gives the interval bounds, and the ball itself the back-substitution's final
step, where it is far tighter than the box in high dimensions (r |a|_2 against r |a|_1)."""
from __future__ import annotations

import torch
from torch import Tensor

from .rounding import accumulate, coef, floor, gamma, lower, tiny, unit

Ball = tuple[Tensor, Tensor]   # centre (B, *input_shape), radius (B,): |x - centre|_2 <= radius


def ball_for(ball: Ball | None, n: int) -> Ball | None:
    """One ball (centre (1, *input_shape), radius (1,)) as the ball of each of n subproblems
    (expanded views, no copies); None stays None."""
    return None if ball is None else (ball[0].expand((n,) + tuple(ball[0].shape[1:])), ball[1].expand(n))


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


MU_STEPS = 30   # bisection steps for the multiplier of the ball constraint (any multiplier is sound)


def box_ball_lower(a: Tensor, const: Tensor, err: Tensor, lo: Tensor, hi: Tensor, ball: Ball) -> Tensor:
    """Rigorous min over the box [lo, hi] intersected with the ball of sum(a * x) + const - err:
    (B, q) for a (B, q, *input_shape); const, err (B, q); lo, hi (B, *input_shape).

    Lagrangian duality: for every mu >= 0 and every x of box and ball, a . x >= a . x + mu (|x -
    c|^2 - r^2), whose minimum over the box splits by coordinate: q_i(x) = a_i x + mu (x -
    c_i)^2 is least at clip(v_i, lo_i, hi_i), v_i = c_i - a_i / (2 mu).  So, whatever mu is,

        min over box and ball of a . x  >=  sum_i h_i - mu r^2,   h_i = min over [lo_i, hi_i] of q_i,

    and at the best mu the two are equal (the problem is convex).  mu is found by bisection on
    |clip(v) - c|^2 = r^2 without any rounding analysis (any mu >= 0 gives a valid bound); the
    bound at that mu is then evaluated rigorously: h_i is q_i at the nearer end of the interval
    when v_i lies beyond it by more than its rounding, else q_i's unconstrained minimum a_i c_i -
    a_i^2 / (4 mu), which is below h_i wherever v_i is.  Each term is a few products and sums of
    floats (relative error gamma(8) of its magnitude), the n terms, mu r^2 and the constant sum
    within gamma(n + 3) of their magnitudes; flushed subnormals cost an absolute floor (and a
    square a_i^2 flushed before its division by 4 mu, tiny / (4 mu))."""
    centre, radius = ball
    af = _flat(a)
    B, q, n = af.shape
    dtype = a.dtype
    c = centre.reshape(B, 1, n)
    l, u = lo.reshape(B, 1, n), hi.reshape(B, 1, n)
    r = radius.reshape(B, 1)
    with torch.no_grad():
        ad = af.detach()
        # the box minimiser: inside the ball there, the box bound is already exact (mu = 0)
        scale = torch.sqrt((ad * ad).sum(-1)).clamp_min(tiny(dtype)) / (2 * r.clamp_min(tiny(dtype)))
        log_lo, log_hi = torch.log(scale) - 30.0, torch.log(scale) + 30.0   # mu in scale * [e^-30, e^30]
        for _ in range(MU_STEPS):
            mid = (log_lo + log_hi) / 2
            mu = torch.exp(mid).unsqueeze(-1)
            x = torch.minimum(torch.maximum(c - ad / (2 * mu), l), u)
            outside = ((x - c) ** 2).sum(-1) > r * r       # mu too small: the minimiser leaves the ball
            log_lo, log_hi = torch.where(outside, mid, log_lo), torch.where(outside, log_hi, mid)
        mu = torch.exp(log_hi).unsqueeze(-1)                # the side that keeps the minimiser in the ball
        v = c - ad / (2 * mu)
        slack = 4 * unit(dtype) * (c.abs() + ad.abs() / (2 * mu)) + 2 * tiny(dtype)
        below, above = v + slack < l, v - slack > u           # certainly beyond an end
    end = torch.where(below, l, u)
    at_end = af * end + mu * (end - c) ** 2
    vertex = af * c - af * af / (4 * mu)
    terms = torch.where(below | above, at_end, vertex)
    value = const + terms.sum(-1) - mu[..., 0] * r * r
    with torch.no_grad():
        mags = torch.where(below | above, (ad * end).abs() + mu * (end - c) ** 2,
                           (ad * c).abs() + ad * ad / (4 * mu)).sum(-1)
        mr2 = mu[..., 0] * r * r
        e = coef(n + 11, n + 3, dtype) * (const.detach().abs() + mags + mr2)
        e = e + floor(dtype, 8 * n + 4, ad.abs().sum(-1), (c.abs() + l.abs() + u.abs()).sum(-1),
                      mu[..., 0] * (n + 1))
        # a_i^2 flushed to 0 before its division by 4 mu: tiny / (4 mu) each (inf if mu underflowed)
        e = e + n * tiny(dtype) / mu[..., 0]
        err = accumulate(err, e)
    return lower(value, err)
