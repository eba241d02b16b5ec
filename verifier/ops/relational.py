"""Differences between two copies of a network (verifier/joint.py): the change of an activation's
output when its input a moves by d, f(a + d) - f(a), as a nonlinearity of d whose relaxation also
reads the bounds of a (its second input).  ReLU has a rule of its own (ReluDelta); any other
nondecreasing activation whose rule bounds its slope (``slope_range``) has MonotoneDelta.

Whatever a is, the change has the sign of d and is at most |d| (relu is monotone and
1-Lipschitz); knowing a's bounds makes it exact where the ReLU stays on (d) or off (0) over the
whole box.  Bounding two copies this way keeps the bound on their difference proportional to the
difference of their inputs, where two separate relaxations would each add their own slack.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..bounds.rounding import clean_bounds, lower, tiny, unit, upper
from ..ir import Node
from .registry import RULES, ActivationRule, rule


def _chord(xl: Tensor, xh: Tensor, yl: Tensor, yh: Tensor) -> tuple[Tensor, Tensor]:
    """The line through (xl, yl) and (xh, yh), (slope, intercept), with its intercept raised so that
    the line computed in floats stays above the exact one on [xl, xh] (it is used above convex
    functions): the slope rounds once (u |k|), the intercept twice, and the line is evaluated at
    points of magnitude <= max(|xl|, |xh|); a point interval gives slope 0 and intercept max(yl, yh)."""
    width = xh - xl
    wide = width > 0
    k = torch.where(wide, (yh - yl) / torch.where(wide, width, torch.ones_like(width)), torch.zeros_like(width))
    b = torch.where(wide, yl - k * xl, torch.maximum(yl, yh))
    m = torch.maximum(xl.abs(), xh.abs())
    slack = 8 * unit(b.dtype) * (yl.abs() + yh.abs() + k.abs() * m + b.abs()) + 4 * tiny(b.dtype)
    return k, b + slack


@rule("ReluDelta")
class ReluDeltaRule(ActivationRule):
    """inputs (d, a): relu(a + d) - relu(a).  Planes in d only (zero on a), valid for every a in
    its bounds; interval from both inputs' bounds."""

    def evaluate(self, node: Node, d: Tensor, a: Tensor) -> Tensor:
        return torch.relu(a + d) - torch.relu(a)

    def interval(self, node, dl, dh, a_box=None):
        dl, dh = clean_bounds(dl, dh)
        al, ah = clean_bounds(*a_box) if a_box is not None else (torch.full_like(dl, -torch.inf),
                                                                 torch.full_like(dh, torch.inf))
        zero = torch.zeros_like(dl)
        lo, hi = torch.minimum(dl, zero), torch.maximum(dh, zero)      # any a
        on, off = al >= 0, ah <= 0
        # a >= 0: the change is max(d, -a); a <= 0: it is relu(a + d) (rounded outwards)
        lo = torch.where(on, torch.maximum(lo, torch.maximum(dl, -ah)), lo)
        hi = torch.where(on, torch.minimum(hi, torch.maximum(dh, -al)), hi)
        lo = torch.where(off, torch.maximum(lo, lower(torch.relu(al + dl), _sum_err(al, dl))), lo)
        hi = torch.where(off, torch.minimum(hi, upper(torch.relu(ah + dh), _sum_err(ah, dh))), hi)
        return lo, torch.maximum(hi, lo)

    def relax(self, node, dl, dh, a_box=None):
        """Planes (lw, lb, uw, ub) in d.  Any a: min(d, 0) <= change <= max(d, 0), whose chords
        over [dl, dh] bound them (min is concave, max convex).  a >= 0: d <= change <=
        max(d, -al) (its chord).  a <= 0: 0 <= change <= relu(ah + d) (its chord)."""
        dl, dh = clean_bounds(dl, dh)
        finite = torch.isfinite(dl) & torch.isfinite(dh)
        zero = torch.zeros_like(dl)
        dl0, dh0 = torch.where(finite, dl, zero), torch.where(finite, dh, zero)
        if a_box is None:
            al, ah = torch.full_like(dl, -torch.inf), torch.full_like(dl, torch.inf)
        else:
            al, ah = clean_bounds(*a_box)
        # any a: upper chord of max(d, 0); lower plane: minus the upper chord of max(-d, 0)
        uw, ub = _chord(dl0, dh0, torch.relu(dl0), torch.relu(dh0))
        nw, nb = _chord(-dh0, -dl0, torch.relu(-dh0), torch.relu(-dl0))
        lw, lb = nw, -nb
        one = torch.ones_like(dl)
        on = (al >= 0) & torch.isfinite(al)
        off = (ah <= 0) & torch.isfinite(ah)
        al0, ah0 = torch.where(on, al, zero), torch.where(off, ah, zero)
        on_w, on_b = _chord(dl0, dh0, torch.maximum(dl0, -al0), torch.maximum(dh0, -al0))
        off_w, off_b = _chord(dl0, dh0, upper(torch.relu(ah0 + dl0), _sum_err(ah0, dl0)),
                              upper(torch.relu(ah0 + dh0), _sum_err(ah0, dh0)))
        lw, lb = torch.where(on, one, torch.where(off, zero, lw)), torch.where(on | off, zero, lb)
        uw, ub = torch.where(on, on_w, torch.where(off, off_w, uw)), torch.where(on, on_b, torch.where(off, off_b, ub))
        # an unbounded d: the flat planes of the interval (infinite where it is)
        ilo, ihi = self.interval(node, dl, dh, (al, ah))
        return (torch.where(finite, lw, zero), torch.where(finite, lb, ilo),
                torch.where(finite, uw, zero), torch.where(finite, ub, ihi))

    def model_error(self, node, dtype, *boxes):
        return float("inf")     # not an operator of any model: only bounded over the reals


def _sum_err(x: Tensor, y: Tensor) -> Tensor:
    """A bound on the rounding of x + y (one addition), for the outward rounding of relu(x + y)."""
    return unit(x.dtype) * (x.abs() + y.abs()) + tiny(x.dtype)


@rule("MonotoneDelta")
class MonotoneDeltaRule(ActivationRule):
    """inputs (d, a), params {"of": the activation's op}: f(a + d) - f(a) = k d for some k in
    f''s range over the points between a and a + d (mean value theorem), which lie in
    [al + min(dl, 0), ah + max(dh, 0)]: with kmin <= k <= kmax there (slope_range), the change
    lies between kmin d and kmax d."""

    def evaluate(self, node: Node, d: Tensor, a: Tensor) -> Tensor:
        f = RULES[node.params["of"]]
        return f.evaluate(node, a + d) - f.evaluate(node, a)

    def _slopes(self, node, dl, dh, a_box):
        if a_box is None:
            al, ah = torch.full_like(dl, -torch.inf), torch.full_like(dl, torch.inf)
        else:
            al, ah = clean_bounds(*a_box)
        zero = torch.zeros_like(dl)
        xl = lower(al + torch.minimum(dl, zero), _sum_err(al, dl))
        xh = upper(ah + torch.maximum(dh, zero), _sum_err(ah, dh))
        return RULES[node.params["of"]].slope_range(node, xl, xh)

    def interval(self, node, dl, dh, a_box=None):
        dl, dh = clean_bounds(dl, dh)
        kmin, kmax = self._slopes(node, dl, dh, a_box)
        lo_k = torch.where(dl < 0, kmax, kmin)
        hi_k = torch.where(dh > 0, kmax, kmin)
        lo = _times(lo_k, dl, -1)
        hi = _times(hi_k, dh, +1)
        return clean_bounds(lo, torch.maximum(hi, lo))

    def relax(self, node, dl, dh, a_box=None):
        """d >= 0 throughout: kmin d <= change <= kmax d; d <= 0: kmax d <= change <= kmin d;
        across 0 the chords of the concave lower envelope min(kmin d, kmax d) (below it) and of
        the convex upper one (above it).  Slopes rounded: each plane is valid for the float
        slope it has (k within [kmin, kmax] computed outwards), its intercept widened by the
        products' rounding."""
        dl, dh = clean_bounds(dl, dh)
        finite = torch.isfinite(dl) & torch.isfinite(dh)
        zero = torch.zeros_like(dl)
        dl0, dh0 = torch.where(finite, dl, zero), torch.where(finite, dh, zero)
        kmin, kmax = self._slopes(node, dl, dh, a_box)
        ok = finite & torch.isfinite(kmax)
        kmin, kmax = torch.where(ok, kmin, zero), torch.where(ok, kmax, zero)
        up_w, up_b = _chord(dl0, dh0, _times(kmin, dl0, +1), _times(kmax, dh0, +1))
        nw, nb = _chord(-dh0, -dl0, _times(kmin, -dh0, +1), _times(kmax, -dl0, +1))
        pos, neg = dl0 >= 0, dh0 <= 0
        lw = torch.where(pos, kmin, torch.where(neg, kmax, nw))
        uw = torch.where(pos, kmax, torch.where(neg, kmin, up_w))
        lb = torch.where(pos | neg, zero, -nb)
        ub = torch.where(pos | neg, zero, up_b)
        ilo, ihi = self.interval(node, dl, dh, a_box)
        return (torch.where(ok, lw, zero), torch.where(ok, lb, ilo), torch.where(ok, uw, zero), torch.where(ok, ub, ihi))

    def model_error(self, node, dtype, *boxes):
        return float("inf")     # not an operator of any model: only bounded over the reals


def _times(k: Tensor, d: Tensor, direction: int) -> Tensor:
    """k * d rounded outwards (up for direction +1), 0 * inf read as 0 (k = 0: no change)."""
    p = torch.where(k == 0, torch.zeros_like(d), k * d)
    e = unit(p.dtype) * p.abs() + 2 * tiny(p.dtype)
    return upper(p, e) if direction > 0 else lower(p, e)
