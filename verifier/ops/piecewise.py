"""Piecewise-linear and step functions: LeakyRelu, PRelu, Abs (one kink at 0), Clip and
HardSigmoid (an affine map clamped to [L, H]), Sign, Floor and Ceil (steps).

For a piecewise-linear f and any slope k, f - k x is piecewise linear too, so its extremes over
[lo, hi] lie at lo, hi or a kink inside: every intercept below is the min / max over those points,
rounded outwards, and only the choice of slope is a matter of taste (chord or adaptive, like
ReLU).  Where a piece is all of [lo, hi] the planes are that piece, exactly.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..bounds.rounding import clean_bounds, lower, product_model_error, tiny, unit, upper
from ..ir import Node
from .elementwise import finish, finite, flat, low_minus, normal, pick, up_minus
from .registry import ActivationRule, converts, rule

INF = math.inf


def _exact_low(v: Tensor, e: Tensor) -> Tensor:
    """v itself where it is exact (e == 0), else a rigorous lower bound."""
    return torch.where(e == 0, v, lower(v, e))


def _exact_up(v: Tensor, e: Tensor) -> Tensor:
    return torch.where(e == 0, v, upper(v, e))


# ---- one kink at 0: x above, a x below ---------------------------------------------------------
class Kinked(ActivationRule):
    """f(x) = x for x >= 0 and a x below, a elementwise (broadcast against x).  Convex where
    a <= 1 (lower planes s x for any s in [a, 1], exactly), concave where a > 1 (upper planes
    s x, s in [1, a]); the other side takes the chord.  Fixing the sign of x makes f linear, so
    branch and bound may split it."""

    splittable = True

    def slope(self, node: Node, like: Tensor) -> Tensor:
        raise NotImplementedError

    def evaluate(self, node, x):
        return torch.where(x >= 0, x, self.slope(node, x) * x)

    def model_error(self, node, dtype, box=None, *_):
        """onnxruntime returns x above 0 and a x below, one product rounded in dtype:
        at most u |a| max(0, -lo) + tiny (rounding.product_model_error)."""
        if box is None:
            return math.inf
        lo = clean_bounds(*box)[0]
        return product_model_error(dtype, self.slope(node, lo).abs() * torch.clamp(-lo, min=0))

    def _value(self, x: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """f(x) and its error: a x rounds (2u |a x|, and tiny (1 + |x|) for a subnormal a read as
        0) unless a is 0 or +-1; 0 * inf is 0 here (the limit along x -> -inf)."""
        v = torch.where(x >= 0, x, torch.where(a == 0, torch.zeros_like(x), a * x))
        exact = (x >= 0) | (a == 0) | (a.abs() == 1)
        e = 2 * unit(x.dtype) * v.abs() + 2 * tiny(x.dtype) * (1 + x.abs())
        return v, torch.where(exact, torch.zeros_like(e), e)

    def interval(self, node, lo, hi):
        """Extremes at lo, hi or the kink 0 (when inside)."""
        lo, hi = clean_bounds(lo, hi)
        a = self.slope(node, lo)
        vals = [self._value(p, a) for p in (lo, hi, torch.zeros_like(lo).clamp(lo, hi))]
        ilo = torch.stack(torch.broadcast_tensors(*[_exact_low(v, e) for v, e in vals])).amin(0)
        ihi = torch.stack(torch.broadcast_tensors(*[_exact_up(v, e) for v, e in vals])).amax(0)
        return ilo, ihi

    def _intercept(self, lo, hi, a, k, low: bool) -> Tensor:
        """min (low) or max of f(x) - k x over x in {lo, 0, hi}: (a - k) lo, 0, (1 - k) hi, each
        rounded twice (3u of the term, 2 tiny (1 + |x|) for subnormals); a term whose factor is 0
        is 0 also at an infinite end."""
        out = []
        for c, x in ((a - k, lo), (1 - k, hi)):
            t = torch.where(c == 0, torch.zeros_like(c * x), c * x)
            e = torch.where(c == 0, 0.0, 3 * unit(x.dtype) * t.abs() + 2 * tiny(x.dtype) * (1 + x.abs()))
            out.append(lower(t, e) if low else upper(t, e))
        zero = torch.zeros_like(out[0])
        if low:
            return torch.minimum(torch.minimum(out[0], out[1]), zero)
        return torch.maximum(torch.maximum(out[0], out[1]), zero)

    def _chord(self, lo, hi, a) -> Tensor:
        """The chord's slope; at an infinite end the slope of the piece that reaches it (the only
        one with a bounded intercept), 0 when both ends are infinite (no plane exists)."""
        ok, lo0, hi0 = finite(lo, hi)
        width = torch.where(ok & (hi0 > lo0), hi0 - lo0, torch.ones_like(lo0))
        k = normal((hi0 - a * lo0) / width)
        k = torch.where(lo == -INF, a * torch.ones_like(k), torch.where(hi == INF, torch.ones_like(k), k))
        return torch.where((lo == -INF) & (hi == INF), torch.zeros_like(k), k)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        a = self.slope(node, lo)
        lo, hi, a = torch.broadcast_tensors(lo, hi, a)
        one, zero = torch.ones_like(lo), torch.zeros_like(lo)
        convex = a <= 1
        s = torch.where(hi > -lo, one, a)  # adaptive: the piece covering more of the interval
        k = self._chord(lo, hi, a)
        lw, uw = torch.where(convex, s, k), torch.where(convex, k, s)
        lb = torch.where(convex, zero, self._intercept(lo, hi, a, k, low=True))
        ub = torch.where(convex, self._intercept(lo, hi, a, k, low=False), zero)
        planes = pick(lo >= 0, (one, zero, one, zero), pick(hi <= 0, (a, zero, a, zero), (lw, lb, uw, ub)))
        return finish(torch.ones_like(convex), planes, *self.interval(node, lo, hi))

    def lower_slope_range(self, node, lo, hi):
        a = self.slope(node, lo)
        lo, a = torch.broadcast_tensors(lo, a)
        return torch.minimum(a, torch.ones_like(a)), torch.maximum(a, torch.ones_like(a))

    def lower_with_slope(self, node, lo, hi, slope):
        """s x exactly where f is convex and s in [a, 1]; elsewhere the intercept for s (at an
        infinite end the slope of the piece that reaches it)."""
        lo, hi = clean_bounds(lo, hi)
        a = self.slope(node, lo)
        lo, hi, a, s = torch.broadcast_tensors(lo, hi, a, slope)
        one, zero = torch.ones_like(s), torch.zeros_like(s)
        exact = (a <= 1) & (s >= a) & (s <= 1)
        s = torch.where(exact, s, torch.where(lo == -INF, a, torch.where(hi == INF, one, s)))
        lb = torch.where(exact, zero, self._intercept(lo, hi, a, s, low=True))
        lw = torch.where(lo >= 0, one, torch.where(hi <= 0, a, s))
        lb = torch.where((lo >= 0) | (hi <= 0), zero, lb)
        bad = ~torch.isfinite(lb)  # no finite plane (a concave f on the whole line): the interval's
        ilo = self.interval(node, lo, hi)[0]
        return torch.where(bad, zero, lw), torch.where(bad, ilo, lb)


@rule("LeakyRelu")
class LeakyReluRule(Kinked):
    def slope(self, node, like):
        return torch.tensor(float(node.params["alpha"]), dtype=like.dtype, device=like.device)


@rule("PRelu")
class PReluRule(Kinked):
    def slope(self, node, like):
        return node.params["slope"].to(dtype=like.dtype, device=like.device)


@rule("Abs")
class AbsRule(Kinked):
    def slope(self, node, like):
        return torch.tensor(-1.0, dtype=like.dtype, device=like.device)

    def evaluate(self, node, x):
        return torch.abs(x)

    def model_error(self, node, dtype, *boxes):
        return 0.0  # |x| is exact in every float type


# ---- an affine map clamped to [L, H] -------------------------------------------------------------
class Ramp(ActivationRule):
    """f(x) = min(max(a x + b, L), H), L <= H (either may be infinite): L, b + a x, H in turn.
    The kinks x = (L - b) / a and (H - b) / a round twice (3u |x| + tiny); a kink off by d moves
    the extreme of f - k x by at most (|a| + |k|) d, which its candidate's error carries."""

    def coefs(self, node: Node) -> tuple[float, float, float, float]:
        raise NotImplementedError

    def _z(self, node, x) -> tuple[Tensor, Tensor]:
        """a x + b and its error (0 when a is 0 or +-1 and b is 0)."""
        a, b, _, _ = self.coefs(node)
        if a == 0:
            return torch.full_like(x, b), torch.zeros_like(x)
        z = a * x + b
        if abs(a) == 1 and b == 0:
            return z, torch.zeros_like(x)
        # a x and the sum round (u |a x| + u |z|), plus a and b as the dtype holds them: 4u covers it
        return z, 4 * unit(x.dtype) * ((a * x).abs() + abs(b)) + 2 * tiny(x.dtype) * (1 + x.abs())

    def _f(self, node, x) -> tuple[Tensor, Tensor]:
        _, _, L, H = self.coefs(node)
        z, e = self._z(node, x)
        return z.clamp(L, H), e  # clamping is monotone and exact

    def evaluate(self, node, x):
        return self._f(node, x)[0]

    def _z_range(self, node, lo, hi) -> tuple[Tensor, Tensor]:
        a = self.coefs(node)[0]
        (zl, el), (zh, eh) = self._z(node, lo), self._z(node, hi)
        if a < 0:
            (zl, el), (zh, eh) = (zh, eh), (zl, el)
        return _exact_low(zl, el), _exact_up(zh, eh)

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        _, _, L, H = self.coefs(node)
        zlo, zhi = self._z_range(node, lo, hi)
        return zlo.clamp(L, H), zhi.clamp(L, H)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        a, b, L, H = self.coefs(node)
        box = self.interval(node, lo, hi)
        zlo, zhi = self._z_range(node, lo, hi)
        zero = torch.zeros_like(lo)
        at_L, at_H = (zhi <= L) | (L == H), zlo >= H
        linear = (zlo >= L) & (zhi <= H)
        cL, cH = (zlo < L) & (zhi > L), (zlo < H) & (zhi > H)  # kinks that may lie inside
        ok, lo0, hi0 = finite(lo, hi)
        (fl, _), (fh, _) = self._f(node, lo0), self._f(node, hi0)
        width = hi0 - lo0
        chord = normal((fh - fl) / torch.where(width > 0, width, torch.ones_like(width)))
        a_t = torch.full_like(lo, a)
        kl = torch.where(cL & ~cH, torch.where(zhi - L > L - zlo, a_t, zero), chord)  # convex: adaptive below
        ku = torch.where(cH & ~cL, torch.where(H - zlo > zhi - H, a_t, zero), chord)  # concave: adaptive above
        pts = self._candidates(node, lo0, hi0)
        lb = torch.stack([low_minus(v, e + (abs(a) + kl.abs()) * d, kl, p) for p, v, e, d in pts]).amin(0)
        ub = torch.stack([up_minus(v, e + (abs(a) + ku.abs()) * d, ku, p) for p, v, e, d in pts]).amax(0)
        general = (kl, lb, ku, ub)
        const = lambda c: (zero, torch.full_like(lo, c), zero.clone(), torch.full_like(lo, c))  # noqa: E731
        lin = (a_t, torch.full_like(lo, b), a_t.clone(), torch.full_like(lo, b))
        planes = pick(at_L, const(L), pick(at_H, const(H), pick(linear, lin, general)))
        return finish(ok | at_L | at_H | linear, planes, *box)

    def _candidates(self, node, lo, hi):
        """(x, f(x), error of f(x), how far x may be from the kink it stands for) at lo, hi and
        the two kinks clamped into [lo, hi]."""
        a, b, L, H = self.coefs(node)
        zero = torch.zeros_like(lo)
        out = [(x,) + self._f(node, x) + (zero,) for x in (lo, hi)]
        exact = abs(a) == 1 and b == 0
        for c in (L, H):
            if a == 0 or not math.isfinite(c):
                continue
            x = torch.full_like(lo, (c - b) / a).clamp(lo, hi)
            d = zero if exact else torch.full_like(lo, 3 * unit(lo.dtype) * abs((c - b) / a) + 2 * tiny(lo.dtype))
            out.append((x,) + self._f(node, x) + (d,))
        return out


@rule("Clip")
class ClipRule(Ramp):
    def coefs(self, node):
        lo, hi = node.params["min"], node.params["max"]
        return 1.0, 0.0, -INF if lo is None else float(lo), INF if hi is None else float(hi)

    def model_error(self, node, dtype, *boxes):
        return 0.0  # a select between x and constants of the model's own type: exact


@rule("HardSigmoid")
class HardSigmoidRule(Ramp):
    def coefs(self, node):
        return float(node.params["alpha"]), float(node.params["beta"]), 0.0, 1.0


# ---- steps ---------------------------------------------------------------------------------------
class Step(ActivationRule):
    """A nondecreasing step function, exact in floats: the interval is (f(lo), f(hi)) exactly."""

    def evaluate(self, node, x):
        return self.f(x)

    def f(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        return self.f(lo), self.f(hi)

    def relax(self, node, lo, hi):
        return flat(*self.interval(node, lo, hi))

    def model_error(self, node, dtype, *boxes):
        return 0.0


@rule("Sign")
class SignRule(Step):
    def f(self, x):
        return torch.sign(x)


class Rounding(Step):
    """floor / ceil: within 1 of x (floor(x) in (x - 1, x], ceil(x) in [x, x + 1)), so the
    slope-1 planes hold on the whole line; they replace the flat ones where those are more
    than 1 apart or infinite."""

    below = 0.0  # f(x) - x lies in [below, below + 1]

    def relax(self, node, lo, hi):
        ilo, ihi = self.interval(node, lo, hi)
        one = torch.ones_like(ilo)
        band = (one, torch.full_like(ilo, self.below), one.clone(), torch.full_like(ilo, self.below + 1))
        return pick(ihi - ilo <= 1, flat(ilo, ihi), band)


@rule("Floor")
class FloorRule(Rounding):
    below = -1.0

    def f(self, x):
        return torch.floor(x)


@rule("Ceil")
class CeilRule(Rounding):
    below = 0.0

    def f(self, x):
        return torch.ceil(x)


# ---- converters ----------------------------------------------------------------------------------
@converts("Abs", "Sign", "Floor", "Ceil")
def _plain(ctx, n) -> None:
    ctx.emit(n.op_type, [ctx.var(n.input[0])], {}, n.output[0])


@converts("LeakyRelu")
def _leaky(ctx, n) -> None:
    alpha = ctx.attrs(n).get("alpha", _f32(0.01))
    ctx.emit("LeakyRelu", [ctx.var(n.input[0])], {"alpha": float(alpha)}, n.output[0])


def _f32(v: float) -> float:
    """An attribute's default as onnxruntime reads it: a float32 (0.01 -> 0.009999999776)."""
    return float(np.float32(v))


@converts("PRelu")
def _prelu(ctx, n) -> None:
    """The slope broadcasts against X (unidirectionally, numpy-style from the right): the
    importer's broadcast_const arranges it against the batched IR value."""
    if not ctx.is_const(n.input[1]):
        raise ctx.unsupported(n, "PRelu with a slope computed from the network input (only constant slopes)")
    x, c = ctx.broadcast_const(n, ctx.var(n.input[0]), n.input[1])
    ctx.emit("PRelu", [x], {"slope": ctx.tensor(c)}, n.output[0])


@converts("HardSigmoid")
def _hard_sigmoid(ctx, n) -> None:
    a = ctx.attrs(n)
    ctx.emit("HardSigmoid", [ctx.var(n.input[0])],
             {"alpha": float(a.get("alpha", _f32(0.2))), "beta": float(a.get("beta", _f32(0.5)))}, n.output[0])


@converts("Clip")
def _clip(ctx, n) -> None:
    """Bounds as attributes (opset < 11) or as optional constant inputs (opset >= 11; an empty
    name is no bound).  -inf / +inf bounds are no bounds; min > max clamps everything to max
    (onnxruntime: max(x, min), then min(., max))."""
    a = ctx.attrs(n)
    bounds = [a.get("min"), a.get("max")]
    for i, name in enumerate(n.input[1:3]):
        if name:
            if not ctx.is_const(name):
                raise ctx.unsupported(n, "Clip with a bound computed from the network input (only constant bounds)")
            c = ctx.const(name)
            if c.size != 1:
                raise ctx.unsupported(n, f"Clip with a bound of shape {list(c.shape)} (only a single constant)")
            bounds[i] = float(c.reshape(-1)[0])
    lo, hi = (None if v is None else float(v) for v in bounds)
    if lo is not None and lo == -INF:
        lo = None
    if hi is not None and hi == INF:
        hi = None
    if any(v is not None and not math.isfinite(v) for v in (lo, hi)):
        raise ctx.unsupported(n, f"Clip with bounds {lo}, {hi} (NaN or an infinite bound on the wrong side)")
    if lo is not None and hi is not None and lo > hi:
        lo = hi
    ctx.emit("Clip", [ctx.var(n.input[0])], {"min": lo, "max": hi}, n.output[0])
