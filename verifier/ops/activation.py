"""Elementwise nonlinearities: ReLU, Sigmoid, Tanh, with sound intervals and linear planes.

Every plane holds for the real function at the floats it is given, rounding included; NaN
input bounds count as unknown (-inf / +inf), never as a stable neuron."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..bounds.rounding import MODEL_FUNCTION_ERROR, clean_bounds, lower, tiny, unit, upper
from ..ir import Node
from .registry import ActivationRule, converts, rule

# Assumed error of torch's sigmoid and tanh, in units of u, relative to the result, plus tiny
# absolute (flushed subnormals).  Measured against mpmath at 8000 points from 1e-40 to 800 in
# magnitude: at most 2.05 u (sigmoid) and 1.09 u (tanh) in float64, 1.9 u and 0.95 u in
# float32 (tests/test_rounding.py checks this); CUDA documents <= 2 ulp (4 u) for expf and tanhf.
F_ERR_U = 8
THROUGH_END_STEPS = 12   # bisection steps for the tangent point of a plane through an end


def _f_err(v: Tensor) -> Tensor:
    """An upper bound of |f(x) - v| for v = fl(f(x)): F_ERR_U u |f| + tiny, with |f| <= |v| (1 + 9u)
    and room for the rounding of this expression."""
    return (F_ERR_U + 2) * unit(v.dtype) * v.abs() + 2 * tiny(v.dtype)


@rule("Relu")
class ReluRule(ActivationRule):
    splittable = True
    delta = "ReluDelta"

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return torch.relu(x)

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        return torch.relu(lo), torch.relu(hi)

    def _upper(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """The chord through (lo, 0) and (hi, hi) on unstable neurons, made valid for the real
        function: with the float slope uw in [0, 1] that we use, uw x + ub >= relu(x) on [lo, hi]
        iff ub >= uw |lo| and ub >= hi (1 - uw) (the two ends; relu is convex), so ub is the
        larger of the two rounded up.  Those products lose at most (1 + u)^2 and tiny (a
        subnormal operand read as 0); (max + tiny) (1 + 8u) rounds to at least (max + tiny)(1 + 5u).
        An infinite end keeps a valid plane: lo = -inf gives slope 0 and ub = hi, hi = +inf
        slope 1 and ub = -lo (+inf if both).  lo, hi: through clean_bounds."""
        one, zero = torch.ones_like(hi), torch.zeros_like(hi)
        unstable = (lo < 0) & (hi > 0)
        width = torch.where(unstable, hi - lo, one)
        uw = torch.where(unstable, torch.where(hi == math.inf, one, hi / width), (lo >= 0).to(hi.dtype))
        uw = torch.where(uw < tiny(hi.dtype), zero, uw)  # a subnormal slope would be read as 0 later
        at_lo = torch.where(uw > 0, uw * -lo, zero)
        at_hi = torch.where(uw < 1, hi * (1 - uw), zero)
        ub = (torch.maximum(at_lo, at_hi) + tiny(hi.dtype)) * (1 + 8 * unit(hi.dtype))
        return uw, torch.where(unstable, ub, zero)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        uw, ub = self._upper(lo, hi)
        default = (hi > -lo).to(lo.dtype)  # adaptive: slope 1 when the positive side dominates
        lw = self._lower(lo, hi, default)
        return lw, torch.zeros_like(lw), uw, ub

    def lower_slope_range(self, node, lo, hi):
        return torch.zeros_like(lo), torch.ones_like(lo)

    def model_error(self, node, dtype, *boxes):
        return 0.0      # max(x, 0) is exact in every float type

    def lower_with_slope(self, node, lo, hi, slope):
        """relu(x) >= s x for any s in [0, 1] exactly (no rounding: the intercept is 0)."""
        lw = self._lower(*clean_bounds(lo, hi), slope)
        return lw, torch.zeros_like(lw)

    def _lower(self, lo: Tensor, hi: Tensor, slope: Tensor) -> Tensor:
        return torch.where(lo >= 0, torch.ones_like(slope), torch.where(hi <= 0, torch.zeros_like(slope), slope))


class _SShaped(ActivationRule):
    """Sigmoid-like: increasing, convex below 0 and concave above 0, derivative largest at 0."""

    delta = "MonotoneDelta"

    def slope_range(self, node, lo, hi):
        """f' falls with |x|: its least value on [lo, hi] at an end, its largest at the point
        nearest 0; df is within (2 F_ERR_U + 1) u relative (plus tiny), widened by 2 u more."""
        lo, hi = clean_bounds(lo, hi)
        rel = (2 * F_ERR_U + 3) * unit(lo.dtype)
        kmin = torch.minimum(self.df(lo), self.df(hi))
        kmax = self.df(torch.zeros_like(lo).clamp(lo, hi))
        return (kmin * (1 - rel) - 2 * tiny(lo.dtype)).clamp(min=0), kmax * (1 + rel) + 2 * tiny(lo.dtype)

    def f(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def df(self, x: Tensor) -> Tensor:
        """The derivative, with a relative error of at most 2 F_ERR_U + 1 u (a product of two
        sigmoids: 1 - tanh^2 would lose all relative accuracy in the tails)."""
        raise NotImplementedError

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return self.f(x)

    def model_error(self, node, dtype, *boxes):
        """onnxruntime's approximation of f, absolute (bounds/rounding.py: MODEL_FUNCTION_ERROR)."""
        return MODEL_FUNCTION_ERROR.get(dtype, float("inf"))

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        flo, fhi = self.f(lo), self.f(hi)
        return lower(flo, _f_err(flo)), upper(fhi, _f_err(fhi))

    def relax(self, node, lo, hi, ends: bool = True):
        """Planes from _planes on finite intervals; with an infinite end, the flat planes
        f(lo) <= f <= f(hi) (f is increasing)."""
        lo, hi = clean_bounds(lo, hi)
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        zero = torch.zeros_like(lo)
        lw, lb, uw, ub = self._planes(torch.where(finite, lo, zero), torch.where(finite, hi, zero), ends)
        flo, fhi = self.f(lo), self.f(hi)
        return (torch.where(finite, lw, zero), torch.where(finite, lb, lower(flo, _f_err(flo))),
                torch.where(finite, uw, zero), torch.where(finite, ub, upper(fhi, _f_err(fhi))))

    def _planes(self, lo: Tensor, hi: Tensor, ends: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Convex part (hi <= 0): chord above, tangent at the midpoint below; concave part
        (lo >= 0) the mirror image; across 0 the line through (lo, f(lo)) tangent to f at a
        point of [0, hi] above (the chord when no tangent point lies there) and its mirror image
        below (_end_planes), or where it leaves more area, the parallelogram's plane whose
        slope is the smaller end derivative (f - k x is then monotone, its extremes at the
        ends).  Each plane touches f (or a chord of it) in exact arithmetic; in floats it can
        miss by the error of f (F_ERR_U u |f| at lo, hi, mid, the tangent point),
        the chord slope's three roundings (3u |f(hi) - f(lo)|), a slope error of
        (2 F_ERR_U + 1) u |k| over at most |lo| + |hi|, and the intercept's three roundings:
        32u of the scale below (64u with room for the subtraction of the slack), plus 8 tiny
        for subnormals read as 0.  ends=False: the parallelogram across 0 (cheaper, for callers
        that do not use the planes there)."""
        flo, fhi = self.f(lo), self.f(hi)
        width = hi - lo
        wide = width > 1e-6 * (1 + lo.abs() + hi.abs())
        chord_k = torch.where(wide, (fhi - flo) / torch.where(wide, width, torch.ones_like(width)), self.df(lo))
        chord_b = flo - chord_k * lo
        mid = (lo + hi) / 2
        fmid = self.f(mid)
        tan_k = self.df(mid)
        tan_b = fmid - tan_k * mid
        par_k = torch.minimum(self.df(lo), self.df(hi))
        par_lb = flo - par_k * lo
        par_ub = fhi - par_k * hi
        convex = wide & (hi <= 0)
        concave = wide & (lo >= 0)
        across = wide & (lo < 0) & (hi > 0) & ends
        (up_k, up_b), (dn_k, dn_b) = self._end_planes(lo, hi, across, chord_k, chord_b)
        # across 0, of the plane through an end and the parallelogram's, the one of least area
        # between it and f (the lower / higher at the midpoint)
        up_end = across & (up_k * mid + up_b < par_k * mid + par_ub)
        dn_end = across & (dn_k * mid + dn_b > par_k * mid + par_lb)
        lw = torch.where(convex, tan_k, torch.where(concave, chord_k, torch.where(dn_end, dn_k, par_k)))
        lb = torch.where(convex, tan_b, torch.where(concave, chord_b, torch.where(dn_end, dn_b, par_lb)))
        uw = torch.where(convex, chord_k, torch.where(concave, tan_k, torch.where(up_end, up_k, par_k)))
        ub = torch.where(convex, chord_b, torch.where(concave, tan_b, torch.where(up_end, up_b, par_ub)))
        scale = flo.abs() + fhi.abs() + fmid.abs() + (lw.abs() + uw.abs()) * (lo.abs() + hi.abs())
        slack = 64 * unit(lo.dtype) * scale + 8 * tiny(lo.dtype)
        return lw, lb - slack, uw, ub + slack

    # alpha-CROWN: the tangent point of each plane is the parameter.  The lower plane touches f
    # at t in [lo, min(hi, 0)] (where f is convex) and is lowered until it passes below
    # (hi, f(hi)); the upper one touches at t in [max(lo, 0), hi], raised above (lo, f(lo)).
    # Sound for every t there: a tangent at t <= 0 is below f on (-inf, 0] (convexity), and f
    # minus it is concave on [0, hi], so non-negative there once it is at 0 and at hi; the mirror
    # argument holds above.  Where no tangent point exists (a plane of the other kind: the
    # chord), the interval is too narrow or unbounded, the rule's relax plane is kept.
    def _usable(self, lo: Tensor, hi: Tensor, upper: bool) -> Tensor:
        wide = (hi - lo) > 1e-6 * (1 + lo.abs() + hi.abs())
        return torch.isfinite(lo) & torch.isfinite(hi) & wide & ((hi > 0) if upper else (lo < 0))

    def _tangent_range(self, lo: Tensor, hi: Tensor, upper: bool) -> tuple[Tensor, Tensor]:
        lo, hi = clean_bounds(lo, hi)
        ok = self._usable(lo, hi, upper)
        z = torch.zeros_like(lo)
        a = torch.where(ok, torch.maximum(lo, z) if upper else lo, z)
        b = torch.where(ok, hi if upper else torch.minimum(hi, z), z)
        return a, b

    def lower_slope_range(self, node, lo, hi):
        return self._tangent_range(lo, hi, upper=False)

    def upper_slope_range(self, node, lo, hi):
        return self._tangent_range(lo, hi, upper=True)

    def slope_start(self, node, lo, hi, upper):
        """The tangent point of relax's plane where it is a tangent: the midpoint on one side of
        0; across 0, the point of the plane through the far end (_through_end)."""
        lo, hi = clean_bounds(lo, hi)
        a, b = self._tangent_range(lo, hi, upper)
        across = (lo < 0) & (hi > 0) & self._usable(lo, hi, upper)
        z = torch.zeros_like(lo)
        t_up, t_dn = self._end_planes(lo, hi, across, z, z, point=True)
        return torch.where(across, t_up if upper else t_dn, (a + b) / 2).clamp(a, b)

    def _end_planes(self, lo: Tensor, hi: Tensor, across: Tensor, chord_k: Tensor, chord_b: Tensor,
                    point: bool = False):
        """Where `across`: the upper plane through (lo, f(lo)) and the lower one through
        (hi, f(hi)), each tangent to f on the other side of 0 (_through_end; the lower one as the
        upper plane of x -> -f(-x) on [-hi, -lo], mirrored back), as ((k, b), (k, b)); or with
        point, their tangent points.  Elsewhere the values are of a dummy interval [-1, 1]."""
        z = torch.zeros_like(lo)
        a, b = torch.where(across, lo, -1 + z), torch.where(across, hi, 1 + z)
        mirror_f, mirror_df = (lambda x: -self.f(-x)), (lambda x: self.df(-x))
        up = self._through_end(self.f, self.df, a, b, self.f(a), chord_k, chord_b, point)
        dn = self._through_end(mirror_f, mirror_df, -b, -a, mirror_f(-b), chord_k, -chord_b, point)
        if point:
            return up, -dn
        return up, (dn[0], -dn[1])

    def _with_tangent(self, lo: Tensor, hi: Tensor, t: Tensor, upper: bool) -> tuple[Tensor, Tensor]:
        lo, hi = clean_bounds(lo, hi)
        ok = self._usable(lo, hi, upper)
        lw, lb, uw, ub = self.relax(None, lo, hi, ends=False)   # kept only where no tangent is used (not across 0)
        z = torch.zeros_like(lo)
        l0, h0 = torch.where(ok, lo, z), torch.where(ok, hi, z)
        a, b = self._tangent_range(l0, h0, upper)
        t = torch.where(ok, t, z).clamp(a, b)
        k = self.df(t)
        ft = self.f(t)
        c = ft - k * t
        end = l0 if upper else h0
        fe = self.f(end)
        miss = (k * end + c) - fe           # the plane's height over f at the far end
        c = c + (-miss).clamp(min=0) if upper else c - miss.clamp(min=0)
        scale = self.f(l0).abs() + self.f(h0).abs() + ft.abs() + k.abs() * (l0.abs() + h0.abs())
        slack = 64 * unit(lo.dtype) * scale + 8 * tiny(lo.dtype)
        if upper:
            return torch.where(ok, k, uw), torch.where(ok, c + slack, ub)
        return torch.where(ok, k, lw), torch.where(ok, c - slack, lb)

    def lower_with_slope(self, node, lo, hi, slope):
        return self._with_tangent(lo, hi, slope, upper=False)

    def upper_with_slope(self, node, lo, hi, slope):
        return self._with_tangent(lo, hi, slope, upper=True)

    @staticmethod
    def _through_end(f, df, a: Tensor, b: Tensor, fa: Tensor, chord_k: Tensor, chord_b: Tensor,
                     point: bool = False):
        """An upper plane of f on [a, b], a < 0 < b (f convex below 0, concave above): the tangent
        at a point r of [0, b], raised until it passes above (a, f(a)) (its height there minus
        f(a) rises with r, so bisection finds the least r needing little raising).  Any r in
        [0, b] gives a valid plane once raised: it is above f on [0, b] (concavity) and at 0
        and a, so above f on [a, 0] too (f minus the plane is convex there).  When even the
        tangent at b misses (a, f(a)) by more than rounding can explain, the tangent point lies
        beyond b and the chord (chord_k, chord_b) is valid and tighter.  point: return the
        tangent point found instead."""
        h = lambda d: f(d) + df(d) * (a - d) - fa      # >= 0: the tangent at d passes above (a, f(a))
        tol = 16 * unit(a.dtype) * (fa.abs() + f(b).abs() + df(b) * (b - a)) + 4 * tiny(a.dtype)
        use_chord = h(b) < -tol
        left, right = torch.zeros_like(b), b
        for _ in range(THROUGH_END_STEPS):
            m = (left + right) / 2
            good = h(m) >= 0
            right, left = torch.where(good, m, right), torch.where(good, left, m)
        if point:   # the tangent point itself (alpha-CROWN starts there)
            return right
        k = df(right)
        c = f(right) - k * right
        c = c + (fa - (k * a + c)).clamp(min=0)
        return torch.where(use_chord, chord_k, k), torch.where(use_chord, chord_b, c)


@rule("Sigmoid")
class SigmoidRule(_SShaped):
    def f(self, x):
        return torch.sigmoid(x)

    def df(self, x):
        return torch.sigmoid(x) * torch.sigmoid(-x)


@rule("Tanh")
class TanhRule(_SShaped):
    def f(self, x):
        return torch.tanh(x)

    def df(self, x):
        # 1 - tanh(x)^2 = 4 sigmoid(2x) sigmoid(-2x), accurate also where tanh(x) rounds to +-1
        return 4 * torch.sigmoid(2 * x) * torch.sigmoid(-2 * x)


@converts("Relu", "Sigmoid", "Tanh")
def _activation(ctx, n) -> None:
    ctx.emit(n.op_type, [ctx.var(n.input[0])], {}, n.output[0])
