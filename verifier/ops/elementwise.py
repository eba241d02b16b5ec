"""Smooth elementwise functions of one variable: Exp, Log, Sqrt, Reciprocal, Pow (constant
exponent), Softplus, Elu, Softsign, Erf, Sin, Cos and Gelu, with sound intervals and planes.

Every bound holds for the real function at the floats it is given.  Each rule's f is torch's
evaluation, assumed within `units` u of the real value relative to the result, plus tiny
absolute (ERR_U below); a plane's intercept is then rounded outwards with that error, the error
of its slope over the interval and the rounding of the intercept's own arithmetic (lower /
upper from bounds/rounding.py take the last rounding).  Four plane shapes cover every rule:

  * convex on [lo, hi]: any slope k has f - k x convex, so its maximum sits at an end: the upper
    plane takes the chord slope and the larger end value; the lower plane is the tangent at t;
  * concave: the same on -f;
  * f' >= k on [lo, hi] (S-shaped across 0, with k the smaller end derivative): f - k x is
    nondecreasing, so the ends give both intercepts;
  * |f''| <= M (Sin, Cos, Gelu): f(t) + f'(t)(x - t) +- M r^2 / 2 with r = max |x - t|.

Where f is undefined or unbounded on the interval (Log of x <= 0, Reciprocal across 0, ...)
the interval is infinite and the planes flat with infinite intercepts: nothing is proved.
NaN input bounds are no bounds (clean_bounds), and a NaN never becomes a finite plane.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..bounds.rounding import clean_bounds, lower, tiny, unit, upper
from ..ir import Node
from .registry import ActivationRule, converts, rule

# Assumed error of one call of torch's exp, expm1, log, log1p, erf, erfc, sigmoid and pow, in u
# relative to the result: glibc and SLEEF's u10 kernels (torch on the CPU) document <= 1 ulp (2 u),
# CUDA <= 2 ulp (4 u) for exp / log / erf in float32; 8 u leaves 2x over the worst (the same
# assumption as activation.F_ERR_U).  Formulas of several calls add their own roundings.
ERR_U = 8
INF = math.inf


# ---- error arithmetic ------------------------------------------------------------------------
def f_err(v: Tensor, units) -> Tensor:
    """A bound of |f - v| when v = fl(f) is within `units` u of f relative to f (units: a number
    or a tensor), plus tiny absolute (a result flushed to 0): (units + 2) u |v| + 2 tiny; the
    extra 2 u cover |f| <= |v| (1 + units u) and this expression's three roundings."""
    return (units + 2) * unit(v.dtype) * v.abs() + 2 * tiny(v.dtype)


def normal(k: Tensor) -> Tensor:
    """k with subnormal and non-finite entries set to 0: a subnormal slope is read as 0 by the
    flushing pipeline, and any slope is valid where the intercept is computed for it."""
    return torch.where(torch.isfinite(k) & (k.abs() >= tiny(k.dtype)), k, torch.zeros_like(k))


def _kx_err(k: Tensor, x: Tensor, e) -> Tensor:
    """e plus the rounding of k * x (u |k x|, and tiny (|k| + |x| + 1) for a subnormal operand or
    product flushed to 0), rounded up: (1 + 8u) covers the few roundings of this sum."""
    u, t = unit(x.dtype), tiny(x.dtype)
    return (e + u * (k * x).abs() + t * (1 + k.abs() + x.abs())) * (1 + 8 * u)


def up_minus(f: Tensor, e, k: Tensor, x: Tensor) -> Tensor:
    """A float >= F - k x for every real F within e of f (k, x floats)."""
    return upper(f - k * x, _kx_err(k, x, e))


def low_minus(f: Tensor, e, k: Tensor, x: Tensor) -> Tensor:
    """A float <= F - k x for every real F within e of f."""
    return lower(f - k * x, _kx_err(k, x, e))


def finite(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(ok, lo', hi'): where both bounds are finite, and the bounds with the other entries set to
    0 (planes are computed on those and then replaced by flat ones, so no inf - inf arises)."""
    ok = torch.isfinite(lo) & torch.isfinite(hi)
    zero = torch.zeros_like(lo)
    return ok, torch.where(ok, lo, zero), torch.where(ok, hi, zero)


def finish(ok: Tensor, planes, ilo: Tensor, ihi: Tensor):
    """Planes where ok and finite, else flat planes from the rigorous interval (ilo, ihi), which
    may be infinite: a NaN or infinite slope or intercept never leaves this function."""
    lw, lb, uw, ub = planes
    zero = torch.zeros_like(ilo)
    okl = ok & torch.isfinite(lw) & torch.isfinite(lb)
    oku = ok & torch.isfinite(uw) & torch.isfinite(ub)
    return (torch.where(okl, lw, zero), torch.where(okl, lb, ilo),
            torch.where(oku, uw, zero), torch.where(oku, ub, ihi))


def flat(ilo: Tensor, ihi: Tensor):
    zero = torch.zeros_like(ilo)
    return zero, ilo, zero.clone(), ihi


def _radius(lo: Tensor, hi: Tensor, t: Tensor) -> Tensor:
    """max |x - t| over [lo, hi], rounded up (each difference rounds by u: (1 + 4u) covers it)."""
    return torch.maximum(hi - t, t - lo).clamp(min=0) * (1 + 4 * unit(lo.dtype))


# ---- the four plane shapes ---------------------------------------------------------------------
def convex_planes(lo, hi, flo, elo, fhi, ehi, t, ft, et, kt, ekt):
    """f convex on [lo, hi] (finite), values flo / fhi / ft at lo, hi, t in [lo, hi] within elo /
    ehi / et, kt within ekt of f'(t) (any subgradient).  Upper: chord slope, the larger end
    intercept (f - k x is convex for every k); lower: f(x) >= f(t) + kt (x - t) - ekt |x - t|."""
    width = hi - lo
    k = normal((fhi - flo) / torch.where(width > 0, width, torch.ones_like(width)))
    ub = torch.maximum(up_minus(flo, elo, k, lo), up_minus(fhi, ehi, k, hi))
    kt = normal(kt)
    lb = low_minus(ft, et + ekt * _radius(lo, hi, t), kt, t)
    return kt, lb, k, ub


def concave_planes(lo, hi, flo, elo, fhi, ehi, t, ft, et, kt, ekt):
    """convex_planes of -f, negated: exact, so the same errors hold."""
    lw, lb, uw, ub = convex_planes(lo, hi, -flo, elo, -fhi, ehi, t, -ft, et, -kt, ekt)
    return -uw, -ub, -lw, -lb


def rising_planes(lo, hi, flo, elo, fhi, ehi, k):
    """f' >= k on [lo, hi] (k a float, already rounded down): f - k x is nondecreasing, so its
    minimum is at lo and its maximum at hi."""
    k = normal(k)
    return k, low_minus(flo, elo, k, lo), k, up_minus(fhi, ehi, k, hi)


def taylor_planes(lo, hi, t, ft, et, kt, ekt, M: float):
    """|f''| <= M on [lo, hi]: |f(x) - f(t) - f'(t)(x - t)| <= M r^2 / 2, r = max |x - t|; kt is
    within ekt of f'(t).  Both planes have slope kt; the remainder rounds up by (1 + 8u)."""
    r = _radius(lo, hi, t)
    e = (et + ekt * r + M * r * r / 2) * (1 + 8 * unit(lo.dtype))
    kt = normal(kt)
    return kt, low_minus(ft, e, kt, t), kt, up_minus(ft, e, kt, t)


def mirror(planes):
    """Planes of f(x) = -g(-x) from planes of g on [-hi, -lo]: g(y) <= uw y + ub gives
    f(x) >= uw x - ub, and g(y) >= lw y + lb gives f(x) <= lw x - lb."""
    lw, lb, uw, ub = planes
    return uw, -ub, lw, -lb


def reflect(planes):
    """Planes of f(x) = g(-x) from planes of g on [-hi, -lo]: the slopes change sign."""
    lw, lb, uw, ub = planes
    return -lw, lb, -uw, ub


def pick(choose: Tensor, a, b):
    """Elementwise choice between two plane tuples (a where choose)."""
    return tuple(torch.where(choose, x, y) for x, y in zip(a, b))


# ---- base of the smooth rules -----------------------------------------------------------------
class Smooth(ActivationRule):
    """f, its error in u (`units`), and its known range (lo_range, hi_range), which every
    interval is intersected with (a NaN at an infinite end then still gives the range)."""

    lo_range = -INF
    hi_range = INF

    def f(self, node: Node, x: Tensor) -> Tensor:
        raise NotImplementedError

    def units(self, node: Node, x: Tensor):
        return ERR_U

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return self.f(node, x)

    def value(self, node: Node, x: Tensor) -> tuple[Tensor, Tensor]:
        v = self.f(node, x)
        return v, f_err(v, self.units(node, x))

    def clip_range(self, ilo: Tensor, ihi: Tensor) -> tuple[Tensor, Tensor]:
        return ilo.clamp(min=self.lo_range), ihi.clamp(max=self.hi_range)

    def rising_interval(self, node, lo, hi):
        """The interval of a nondecreasing f."""
        flo, elo = self.value(node, lo)
        fhi, ehi = self.value(node, hi)
        return self.clip_range(lower(flo, elo), upper(fhi, ehi))

    def falling_interval(self, node, lo, hi):
        flo, elo = self.value(node, lo)
        fhi, ehi = self.value(node, hi)
        return self.clip_range(lower(fhi, ehi), upper(flo, elo))


class Convex(Smooth):
    """Convex (or, with concave = True, concave) and monotone on its domain; df the derivative
    and dunits its error in u.  Subclasses narrow the domain in interval / relax."""

    concave = False
    rising = True

    def df(self, node: Node, x: Tensor) -> Tensor:
        raise NotImplementedError

    def dunits(self, node: Node, x: Tensor):
        return ERR_U

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        return self.rising_interval(node, lo, hi) if self.rising else self.falling_interval(node, lo, hi)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        return self.shaped_planes(node, lo, hi, self.interval(node, lo, hi))

    def shaped_planes(self, node, lo, hi, box, concave: bool | None = None):
        """convex_planes (concave_planes) on the finite entries, flat planes from box elsewhere."""
        concave = self.concave if concave is None else concave
        ok, lo0, hi0 = finite(lo, hi)
        shape = concave_planes if concave else convex_planes
        return finish(ok, shape(lo0, hi0, *self.plane_values(node, lo0, hi0)), *box)

    def plane_values(self, node, lo0, hi0):
        """(flo, elo, fhi, ehi, t, ft, et, kt, ekt): f at the ends and at the tangent point t
        with their errors, and f'(t) with its own: what the plane shapes are built from."""
        flo, elo = self.value(node, lo0)
        fhi, ehi = self.value(node, hi0)
        t = self.tangent_point(lo0, hi0)
        ft, et = self.value(node, t)
        kt = self.df(node, t)
        return flo, elo, fhi, ehi, t, ft, et, kt, f_err(kt, self.dunits(node, t))

    def tangent_point(self, lo: Tensor, hi: Tensor) -> Tensor:
        return (lo + hi / 2 - lo / 2).clamp(lo, hi)  # no overflow of lo + hi


# ---- Exp, Softplus -----------------------------------------------------------------------------
@rule("Exp")
class ExpRule(Convex):
    lo_range = 0.0

    def f(self, node, x):
        return torch.exp(x)

    df = f


@rule("Softplus")
class SoftplusRule(Convex):
    """log(1 + e^x) as max(x, 0) + log1p(e^-|x|): both terms are nonnegative, so their errors
    (exp 8 u carried through log1p at most 1:1, log1p's own 8 u, the sum's u) add up relative to
    the result: 17 u, counted as 20."""

    lo_range = 0.0

    def f(self, node, x):
        return torch.relu(x) + torch.log1p(torch.exp(-x.abs()))

    def units(self, node, x):
        return 20

    def df(self, node, x):
        return torch.sigmoid(x)


# ---- Log, Sqrt, Reciprocal: functions with a restricted domain ---------------------------------
@rule("Log")
class LogRule(Convex):
    """Concave and increasing on x > 0.  lo == 0 (log 0 = -inf) leaves the lower side unbounded;
    lo < 0 may be NaN: nothing is known."""

    concave = True

    def f(self, node, x):
        return torch.log(x)

    def df(self, node, x):
        return 1 / x

    def dunits(self, node, x):
        return 2

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        ilo, ihi = self.rising_interval(node, lo, hi)
        return torch.where(lo > 0, ilo, -INF), torch.where(lo >= 0, ihi, INF)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        box = self.interval(node, lo, hi)
        ok = lo > 0
        return _where_defined(ok, self.shaped_planes(node, *_defined(ok, lo, hi), box), box)


def _defined(ok: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The bounds where ok, the point 1 elsewhere (planes are then computed where f is defined,
    and replaced by _where_defined)."""
    one = torch.ones_like(lo)
    return torch.where(ok, lo, one), torch.where(ok, hi, one)


def _where_defined(ok: Tensor, planes, box):
    """planes where ok, flat planes from box elsewhere."""
    return pick(ok, planes, flat(*box))


@rule("Sqrt")
class SqrtRule(Convex):
    """Concave and increasing on x >= 0 (correctly rounded: 1 u, counted as 4; its derivative
    0.5 / sqrt(x) as 6); lo < 0 may be NaN."""

    concave = True
    lo_range = 0.0

    def f(self, node, x):
        return torch.sqrt(x)

    def units(self, node, x):
        return 4

    def df(self, node, x):
        return 0.5 / torch.sqrt(x)

    def dunits(self, node, x):
        return 6

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        ilo, ihi = self.rising_interval(node, lo, hi)
        ok = lo >= 0
        return torch.where(ok, ilo, -INF), torch.where(ok, ihi, INF)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        box = self.interval(node, lo, hi)
        ok = lo >= 0
        return _where_defined(ok, self.shaped_planes(node, *_defined(ok, lo, hi), box), box)


@rule("Reciprocal")
class ReciprocalRule(Convex):
    """1/x: convex and decreasing on x > 0; odd, so x < 0 is its mirror image.  An interval that
    holds 0 (either sign of zero) holds a pole: nothing is known.  1/x rounds once (u, counted
    as 2); -1/x^2 three times (counted as 4)."""

    rising = False

    def f(self, node, x):
        return torch.reciprocal(x)

    def units(self, node, x):
        return 2

    def df(self, node, x):
        return -1 / (x * x)

    def dunits(self, node, x):
        return 4

    def tangent_point(self, lo, hi):
        # where the tangent is parallel to the chord (-1/t^2 = -1/(lo hi)): the smallest gap
        return (torch.sqrt(lo) * torch.sqrt(hi)).clamp(lo, hi)

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        ilo, ihi = self.falling_interval(node, lo, hi)
        ok = (lo > 0) | (hi < 0)
        return torch.where(ok, ilo, -INF), torch.where(ok, ihi, INF)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        box = self.interval(node, lo, hi)
        pos = self.shaped_planes(node, *_defined(lo > 0, lo, hi), box)
        neg = mirror(self.shaped_planes(node, *_defined(hi < 0, -hi, -lo), (-box[1], -box[0])))
        return _where_defined((lo > 0) | (hi < 0), pick(lo > 0, pos, neg), box)


# ---- Pow with a constant exponent --------------------------------------------------------------
@rule("Pow")
class PowRule(Convex):
    """x^p, p = params["p"] a constant.  Integers p >= 2 on any interval (closed-form extremes of
    x^p - k x); negative integers away from 0 (convex on x > 0, the mirror image on x < 0); other
    p where x >= 0 (x > 0 for p < 0): convex for p > 1 or p < 0, concave for 0 < p < 1.  Outside
    those domains (NaN or a pole possible) nothing is known.  torch.pow: one libm call (ERR_U) or
    |p| - 1 products, so ERR_U + |p| u."""

    def _p(self, node) -> float:
        return float(node.params["p"])

    def f(self, node, x):
        return torch.pow(x, self._p(node))

    def units(self, node, x):
        return ERR_U + abs(self._p(node))

    def df(self, node, x):
        p = self._p(node)
        return p * torch.pow(x, p - 1)

    def dunits(self, node, x):
        return ERR_U + abs(self._p(node) - 1) + 1

    def _kind(self, node) -> str:
        p = self._p(node)
        if p in (0.0, 1.0):
            return "const" if p == 0.0 else "identity"
        if p == int(p):
            return "even" if p >= 2 and int(p) % 2 == 0 else "odd" if p >= 2 else "negint"
        return "real"

    def _defined(self, node, lo, hi) -> Tensor:
        """Where x^p is finite and real on all of [lo, hi] (for the kinds that have a restriction)."""
        kind, p = self._kind(node), self._p(node)
        if kind == "negint":
            return (lo > 0) | (hi < 0)
        if kind == "real":
            return lo > 0 if p < 0 else lo >= 0
        return torch.ones_like(lo, dtype=torch.bool)

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        kind, p = self._kind(node), self._p(node)
        if kind == "const":
            return torch.ones_like(lo), torch.ones_like(hi)
        if kind == "identity":
            return lo, hi
        if kind == "even":
            (a, b), across = self.rising_interval(node, lo, hi), (lo <= 0) & (hi >= 0)
            c, d = self.falling_interval(node, lo, hi)
            return torch.where(across, 0.0, torch.minimum(a, c)).clamp(min=0), torch.maximum(b, d)
        rising = kind == "odd" or (p > 0) or (kind == "negint" and int(p) % 2 == 0)
        ilo, ihi = self.rising_interval(node, lo, hi) if rising else self.falling_interval(node, lo, hi)
        if kind == "negint" and int(p) % 2 == 0:  # x^-2: increasing on x < 0, decreasing on x > 0
            (a, b) = self.falling_interval(node, lo, hi)
            ilo, ihi = torch.where(lo > 0, a, ilo), torch.where(lo > 0, b, ihi)
        ok = self._defined(node, lo, hi)
        return torch.where(ok, ilo, -INF), torch.where(ok, ihi, INF)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        box = self.interval(node, lo, hi)
        kind, p = self._kind(node), self._p(node)
        if kind == "const":
            return flat(*box)
        if kind == "identity":
            one, zero = torch.ones_like(lo), torch.zeros_like(lo)
            return one, zero, one.clone(), zero.clone()
        if kind in ("even", "odd"):
            return self._integer_planes(node, lo, hi, box, kind == "odd")
        ok = self._defined(node, lo, hi)
        if kind == "real":
            return _where_defined(ok, self.shaped_planes(node, *_defined(ok, lo, hi), box, concave=0 < p < 1), box)
        # negative integer: convex on x > 0; x < 0 from the planes of y^p on y = -x > 0
        pos = self.shaped_planes(node, *_defined(lo > 0, lo, hi), box, concave=False)
        even = int(p) % 2 == 0
        inner_box = box if even else (-box[1], -box[0])
        neg = self.shaped_planes(node, *_defined(hi < 0, -hi, -lo), inner_box, concave=False)
        neg = reflect(neg) if even else mirror(neg)
        return _where_defined(ok, pick(lo > 0, pos, neg), box)

    def _integer_planes(self, node, lo, hi, box, odd: bool):
        """Both planes with the chord slope k; their intercepts are the extremes of g = x^p - k x
        over [lo, hi]: at an end, or at a critical point x = +-c, c = (|k| / p)^(1 / (p - 1)),
        where g = -+|k| c (p - 1) / p (a minimum at sign(k) c for even p; for odd p a maximum at
        -c and a minimum at +c).  A critical value joins the max / min where its point may lie in
        [lo, hi] (joining it elsewhere only loosens).  c's error: pow's ERR_U, the exponent's
        rounding (u |ln(|k| / p)| relative, as the exponent is at most 1) and 5 roundings."""
        p = self._p(node)
        ok, lo0, hi0 = finite(lo, hi)
        flo, elo = self.value(node, lo0)
        fhi, ehi = self.value(node, hi0)
        width = hi0 - lo0
        k = normal((fhi - flo) / torch.where(width > 0, width, torch.ones_like(width)))
        k = k.clamp(min=0) if odd else k
        ub = torch.maximum(up_minus(flo, elo, k, lo0), up_minus(fhi, ehi, k, hi0))
        lb = torch.minimum(low_minus(flo, elo, k, lo0), low_minus(fhi, ehi, k, hi0))
        y = k.abs() / p
        c = torch.pow(y, 1.0 / (p - 1))
        V = k.abs() * c * ((p - 1) / p)
        eV = f_err(V, ERR_U + 6 + torch.log(y.clamp(min=tiny(y.dtype))).abs())
        m = 1e-9 * c + tiny(c.dtype)
        at_min = torch.sign(k) * c if not odd else c
        near_min = (at_min >= lo0 - m) & (at_min <= hi0 + m)
        lb = torch.where(near_min, torch.minimum(lb, lower(-V, eV)), lb)
        if odd:
            ub = torch.where(-c >= lo0 - m, torch.maximum(ub, upper(V, eV)), ub)
        return finish(ok, (k, lb, k.clone(), ub), *box)


# ---- Elu ---------------------------------------------------------------------------------------
@rule("Elu")
class EluRule(Smooth):
    """x for x > 0, alpha (e^x - 1) below (expm1: exact near 0).  For alpha >= 0 increasing,
    convex below 0 and linear above (convex overall when alpha <= 1); for alpha < 0 it falls to
    its minimum 0 at x = 0 and rises after, and gets flat planes."""

    def _a(self, node) -> float:
        return float(node.params["alpha"])

    def f(self, node, x):
        return torch.where(x > 0, x, self._a(node) * torch.expm1(x.clamp(max=0)))  # no inf in the unused branch

    def units(self, node, x):
        return torch.where(x > 0, 0.0, ERR_U + 2.0)  # expm1 and the product by alpha

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        a = self._a(node)
        if a >= 0:
            ilo, ihi = self.rising_interval(node, lo, hi)
            return ilo.clamp(min=-a), ihi
        v, e = self.value(node, torch.zeros_like(lo).clamp(lo, hi))
        flo, elo = self.value(node, lo)
        fhi, ehi = self.value(node, hi)
        return lower(v, e).clamp(min=0), torch.maximum(upper(flo, elo), upper(fhi, ehi))

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        box = self.interval(node, lo, hi)
        a = self._a(node)
        if a < 0:
            return flat(*box)
        ok, lo0, hi0 = finite(lo, hi)
        flo, elo = self.value(node, lo0)
        fhi, ehi = self.value(node, hi0)
        t = (lo0 + hi0 / 2 - lo0 / 2).clamp(lo0, hi0)
        ft, et = self.value(node, t)
        kt = torch.where(t > 0, 1.0, a * torch.exp(t.clamp(max=0)))  # a subgradient at t
        ekt = torch.where(t > 0, 0.0, f_err(kt, ERR_U + 2))
        lw, lb, uw, ub = convex_planes(lo0, hi0, flo, elo, fhi, ehi, t, ft, et, kt, ekt)
        ub = torch.where(hi0 > 0, torch.maximum(ub, torch.zeros_like(ub)), ub)  # the kink joins the ends
        if a > 1:  # not convex across 0: f' >= min(a e^lo, 1) there, so f - k x rises
            d = a * torch.exp(lo0)
            k = torch.minimum(lower(d, f_err(d, ERR_U + 2)), torch.ones_like(d)).clamp(min=0)
            across = (lo0 < 0) & (hi0 > 0)
            rw, rb, _, _ = rising_planes(lo0, hi0, flo, elo, fhi, ehi, k)
            lw, lb = torch.where(across, rw, lw), torch.where(across, rb, lb)
        one, zero = torch.ones_like(lo), torch.zeros_like(lo)
        planes = pick(lo0 >= 0, (one, zero, one, zero), (lw, lb, uw, ub))
        return finish(ok, planes, *box)


# ---- S-shaped: Erf, Softsign -------------------------------------------------------------------
class SShaped(Convex):
    """Increasing, convex below 0 and concave above, f' largest at 0 and falling with |x|: on one
    side the convex / concave planes; across 0 the parallelogram whose slope is the smaller end
    derivative, rounded down (f' >= k on the whole interval, so f - k x rises)."""

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        box = self.interval(node, lo, hi)
        ok, lo0, hi0 = finite(lo, hi)
        values = self.plane_values(node, lo0, hi0)
        flo, elo, fhi, ehi = values[:4]
        vex, cave = convex_planes(lo0, hi0, *values), concave_planes(lo0, hi0, *values)
        dlo, dhi = self.df(node, lo0), self.df(node, hi0)
        k = torch.minimum(lower(dlo, f_err(dlo, self.dunits(node, lo0))),
                          lower(dhi, f_err(dhi, self.dunits(node, hi0)))).clamp(min=0)
        par = rising_planes(lo0, hi0, flo, elo, fhi, ehi, k)
        return finish(ok, pick(hi0 <= 0, vex, pick(lo0 >= 0, cave, par)), *box)


@rule("Erf")
class ErfRule(SShaped):
    """erf' = 2/sqrt(pi) e^(-x^2): x^2 rounds by u x^2, which e^(-x^2) turns into x^2 u relative,
    plus exp's ERR_U and two products: counted as ERR_U + 4 + 2 x^2."""

    lo_range, hi_range = -1.0, 1.0

    def f(self, node, x):
        return torch.erf(x)

    def df(self, node, x):
        return (2 / math.sqrt(math.pi)) * torch.exp(-x * x)

    def dunits(self, node, x):
        return ERR_U + 4 + 2 * x * x


@rule("Softsign")
class SoftsignRule(SShaped):
    """x / (1 + |x|): two roundings (counted as 4); its derivative 1 / (1 + |x|)^2 four (6)."""

    lo_range, hi_range = -1.0, 1.0

    def f(self, node, x):
        return x / (1 + x.abs())

    def units(self, node, x):
        return 4

    def df(self, node, x):
        return 1 / (1 + x.abs()) ** 2

    def dunits(self, node, x):
        return 6


# ---- Sin, Cos ----------------------------------------------------------------------------------
class Periodic(Smooth):
    """sin / cos: the interval is [-1, 1] cut to the larger / smaller end value where no maximum
    (minimum) of the period lies in [lo, hi]; the planes are convex / concave ones where f keeps
    one sign, else the Taylor pair at the midpoint (|f''| <= 1) where it is narrower than the
    interval, flat otherwise.  Error of torch's sin
    and cos: ERR_U relative plus 2 u (1 + |x|) absolute, which also covers an argument reduction by
    a float64 2 pi (0.35 u |x|) should a kernel use one."""

    lo_range, hi_range = -1.0, 1.0
    peak = 0.0  # where a maximum lies; the minima lie half a period on

    def df(self, node, x: Tensor) -> Tensor:
        raise NotImplementedError

    def value(self, node, x):
        v = self.f(node, x)
        return v, f_err(v, ERR_U) + 2 * unit(x.dtype) * (1 + x.abs())

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        wide = ~(hi - lo < 6.0)  # a whole period (2 pi > 6); NaN or inf too
        top = wide | _hits(lo, hi, self.peak)
        bottom = wide | _hits(lo, hi, self.peak + math.pi)
        flo, elo = self.value(node, lo)
        fhi, ehi = self.value(node, hi)
        ihi = torch.where(top, 1.0, torch.maximum(upper(flo, elo), upper(fhi, ehi)))
        ilo = torch.where(bottom, -1.0, torch.minimum(lower(flo, elo), lower(fhi, ehi)))
        return self.clip_range(ilo, ihi)

    def relax(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        box = self.interval(node, lo, hi)
        ok, lo0, hi0 = finite(lo, hi)
        t = (lo0 + hi0 / 2 - lo0 / 2).clamp(lo0, hi0)
        ft, et = self.value(node, t)
        kt = self.df(node, t)
        ekt = f_err(kt, ERR_U) + 2 * unit(t.dtype) * (1 + t.abs())
        tay = taylor_planes(lo0, hi0, t, ft, et, kt, ekt, 1.0)
        narrower = (tay[3] - tay[1]) < (box[1] - box[0])
        base = pick(narrower, tay, flat(*box))
        # no zero of f in [lo, hi] (zeros lie a quarter period from the peak): f'' = -f keeps one
        # sign, the sign of f(t) where that is larger than its error: concave above 0, convex below
        zeros = _hits(lo0, hi0, self.peak + math.pi / 2) | _hits(lo0, hi0, self.peak - math.pi / 2)
        (flo, elo), (fhi, ehi) = self.value(node, lo0), self.value(node, hi0)
        curved = pick(ft > 0, concave_planes(lo0, hi0, flo, elo, fhi, ehi, t, ft, et, kt, ekt),
                      convex_planes(lo0, hi0, flo, elo, fhi, ehi, t, ft, et, kt, ekt))
        return finish(ok, pick(~zeros & (ft.abs() > et), curved, base), *box)


def _hits(lo: Tensor, hi: Tensor, c: float) -> Tensor:
    """Whether c + 2 pi n may lie in [lo, hi] for an integer n (True when unsure): in float64,
    (x - c) / 2pi is within ~4u of its real value, far inside the 1e-9 relative slack."""
    a = (lo.double() - c) / (2 * math.pi)
    b = (hi.double() - c) / (2 * math.pi)
    s = 1e-9 * (1 + a.abs() + b.abs())
    return torch.floor(b + s) >= torch.ceil(a - s)


@rule("Sin")
class SinRule(Periodic):
    peak = math.pi / 2

    def f(self, node, x):
        return torch.sin(x)

    def df(self, node, x):
        return torch.cos(x)


@rule("Cos")
class CosRule(Periodic):
    peak = 0.0

    def f(self, node, x):
        return torch.cos(x)

    def df(self, node, x):
        return -torch.sin(x)


# ---- Gelu (exact form) -------------------------------------------------------------------------
# gelu(x) = x Phi(x) = relu(x) - c(|x|) with c(t) = t Phi(-t) >= 0: c rises on [0, 0.75] and falls
# on [0.76, inf) (its peak 0.169971 lies at 0.7518), so gelu's minimum is -0.169971 at -0.7518.
# gelu'' = phi(x) (2 - x^2): convex on |x| <= sqrt 2, concave outside, |gelu''| <= 2 phi(0) = 0.798.
# tests/test_ops_elementwise.py checks these constants against mpmath.
GELU_PEAK = (0.75, 0.76)
GELU_C_MAX = 0.17
GELU_M2 = 0.8
SQRT2_IN, SQRT2_OUT = 1.4142135, 1.4142136  # on either side of sqrt 2 = 1.41421356


@rule("Gelu")
class GeluRule(Smooth):
    """0.5 x erfc(-x / sqrt 2) (erfc keeps the relative accuracy that 1 + erf(x / sqrt 2) loses for
    x < 0).  The argument rounds by 2u relative, which erfc turns into at most (2 s + 2) s 2u
    relative at s = -x / sqrt 2 >= 0 (erfc(s) > 2/sqrt(pi) e^(-s^2) / (s + sqrt(s^2 + 2))), and
    into at most 2/sqrt(pi) s e^(-s^2) 2u < u at s < 0 (erfc >= 1 there): counted with erfc's
    ERR_U and the products as ERR_U + 4 + 2 x^2 + 3 |x| for x < 0, ERR_U + 5 above."""

    def f(self, node, x):
        return 0.5 * x * torch.special.erfc(x * -math.sqrt(0.5))

    def units(self, node, x):
        return ERR_U + 4 + torch.where(x < 0, 2 * x * x + 3 * x.abs(), 1.0)

    def df_err(self, node, x) -> tuple[Tensor, Tensor]:
        """gelu'(x) = Phi(x) + x phi(x), and its error: each term's (the second: x^2 / 2 rounds
        into exp, plus ERR_U and three products) and the sum's rounding."""
        t1 = 0.5 * torch.special.erfc(x * -math.sqrt(0.5))
        t2 = x * torch.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        k = t1 + t2
        e = f_err(t1, self.units(node, x)) + f_err(t2, ERR_U + 4 + x * x) + 2 * unit(x.dtype) * k.abs()
        return k, e

    def interval(self, node, lo, hi):
        """Decreasing up to its minimum (in (-0.76, -0.75)), increasing after; gelu <= relu and
        gelu >= relu - 0.17 cap both ends (useful where an end is infinite)."""
        lo, hi = clean_bounds(lo, hi)
        flo, elo = self.value(node, lo)
        fhi, ehi = self.value(node, hi)
        rising, falling = lo >= -GELU_PEAK[0], hi <= -GELU_PEAK[1]
        ilo = torch.where(rising, lower(flo, elo), torch.where(falling, lower(fhi, ehi), -GELU_C_MAX))
        ihi = torch.maximum(upper(flo, elo), upper(fhi, ehi))
        ilo = torch.maximum(torch.maximum(ilo, lower(torch.relu(lo) - GELU_C_MAX)), torch.full_like(ilo, -GELU_C_MAX))
        return ilo, torch.minimum(ihi, torch.relu(hi))

    def relax(self, node, lo, hi):
        """Convex / concave planes where [lo, hi] lies on one side of +-sqrt 2; elsewhere the
        narrower of the Taylor pair (|gelu''| <= 0.8) and relu's planes shifted by c's range."""
        lo, hi = clean_bounds(lo, hi)
        box = self.interval(node, lo, hi)
        ok, lo0, hi0 = finite(lo, hi)
        flo, elo = self.value(node, lo0)
        fhi, ehi = self.value(node, hi0)
        t = (lo0 + hi0 / 2 - lo0 / 2).clamp(lo0, hi0)
        ft, et = self.value(node, t)
        kt, ekt = self.df_err(node, t)
        vex = convex_planes(lo0, hi0, flo, elo, fhi, ehi, t, ft, et, kt, ekt)
        cave = concave_planes(lo0, hi0, flo, elo, fhi, ehi, t, ft, et, kt, ekt)
        tay = taylor_planes(lo0, hi0, t, ft, et, kt, ekt, GELU_M2)
        dec = self._relu_minus_c(node, lo0, hi0)
        gap = lambda pl: torch.maximum((pl[2] - pl[0]) * lo0 + pl[3] - pl[1], (pl[2] - pl[0]) * hi0 + pl[3] - pl[1])
        other = pick(gap(tay) <= gap(dec), tay, dec)
        convex = (lo0 >= -SQRT2_IN) & (hi0 <= SQRT2_IN)
        concave = (lo0 >= SQRT2_OUT) | (hi0 <= -SQRT2_OUT)
        return finish(ok, pick(convex, vex, pick(concave, cave, other)), *box)

    def _relu_minus_c(self, node, lo, hi):
        """relu's planes (chord above, slope 0 or 1 below) minus the range [cmin, cmax] of c(|x|)
        over [lo, hi]: |x| ranges over [a, b], where c's minimum is at an end and its maximum at b
        below the peak, at a above it, GELU_C_MAX otherwise (c(t) = -gelu(-t))."""
        across = (lo < 0) & (hi > 0)
        a = torch.where(across, 0.0, torch.minimum(lo.abs(), hi.abs()))
        b = torch.maximum(lo.abs(), hi.abs())
        va, ea = self.value(node, -a)
        vb, eb = self.value(node, -b)
        cmin = torch.minimum(lower(-va, ea), lower(-vb, eb)).clamp(min=0)
        cmax = torch.where(a >= GELU_PEAK[1], upper(-va, ea), GELU_C_MAX)
        cmax = torch.where(b <= GELU_PEAK[0], upper(-vb, eb), cmax).clamp(max=GELU_C_MAX)
        zero, one = torch.zeros_like(lo), torch.ones_like(lo)
        width = torch.where(across, hi - lo, one)
        k = normal(torch.where(across, hi / width, (lo >= 0).to(lo.dtype)))
        ub = torch.where(across, torch.maximum(up_minus(zero, 0.0, k, lo), up_minus(hi, 0.0, k, hi)), zero)
        s = torch.where(across, (hi > -lo).to(lo.dtype), (lo >= 0).to(lo.dtype))
        return s, lower(-cmax), k, upper(ub - cmin)


# ---- converters --------------------------------------------------------------------------------
@converts("Exp", "Log", "Sqrt", "Reciprocal", "Softplus", "Softsign", "Erf", "Sin", "Cos")
def _unary(ctx, n) -> None:
    ctx.emit(n.op_type, [ctx.var(n.input[0])], {}, n.output[0])


@converts("Elu")
def _elu(ctx, n) -> None:
    ctx.emit("Elu", [ctx.var(n.input[0])], {"alpha": float(ctx.attrs(n).get("alpha", 1.0))}, n.output[0])


@converts("Pow")
def _pow(ctx, n) -> None:
    x, y = n.input[0], n.input[1]
    if not ctx.is_const(y):
        raise ctx.unsupported(n, "Pow with an exponent computed from the network input (only constant exponents)")
    xi, c = ctx.broadcast_const(n, ctx.var(x), y)
    if c.size != 1:
        raise ctx.unsupported(n, f"Pow with an exponent of shape {list(c.shape)} (only a single constant)")
    ctx.emit("Pow", [xi], {"p": float(c.reshape(-1)[0])}, n.output[0])


@converts("Gelu")
def _gelu(ctx, n) -> None:
    approx = ctx.attrs(n).get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else str(approx)
    if approx != "none":
        raise ctx.unsupported(n, f"Gelu with approximate={approx!r} (only the exact form, approximate='none')")
    ctx.emit("Gelu", [ctx.var(n.input[0])], {}, n.output[0])
