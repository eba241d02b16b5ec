"""Comparisons, casts to integer types and ArgMax: step functions whose values are integers.

The IR holds integer and boolean tensors in its float dtype (0.0 / 1.0 for booleans); every value
these rules produce is an integer of magnitude below INT_LIMIT = 2^24, so it is exact in float32
and float64 alike, and a later Cast back to a float type is the identity.  A value that could
leave that range is not computed exactly: its interval is the target type's whole range (or the
whole line), never a wrong bound.

Comparisons and truncation are exact in floats (model_error 0): onnxruntime compares and
truncates the same values the bounds enclose.  Intervals are exact where the bounds decide the
comparison and [0, 1] otherwise; the planes are flat (the interval), except for truncation where
the slope-1 band is tighter (trunc(x) lies within 1 of x, as floor / ceil in piecewise.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..bounds.rounding import clean_bounds
from .elementwise import flat, pick
from .linear import _affine
from .registry import ActivationRule, converts, rule

INT_LIMIT = 2.0 ** 24    # integers up to here are exact in float32, the narrowest type we bound in

# ONNX element types of the integer and boolean casts: (smallest, largest) value of the type
INT_RANGES = {
    2: (0, 2 ** 8 - 1), 3: (-2 ** 7, 2 ** 7 - 1),        # uint8, int8
    4: (0, 2 ** 16 - 1), 5: (-2 ** 15, 2 ** 15 - 1),     # uint16, int16
    12: (0, 2 ** 32 - 1), 6: (-2 ** 31, 2 ** 31 - 1),    # uint32, int32
    13: (0, 2 ** 64 - 1), 7: (-2 ** 63, 2 ** 63 - 1),    # uint64, int64
}
BOOL = 9


def attached(step: Tensor, x: Tensor) -> Tensor:
    """step (a function of x that torch does not differentiate: a comparison) plus x.clamp(0, 0):
    the same values, with a zero gradient in x, so that the attack can differentiate a graph
    whose outputs depend on x only through steps (0 * x would be NaN at an infinite x)."""
    return step + x.clamp(0.0, 0.0)


# --------------------------------------------------------------------------- comparisons
class Compare(ActivationRule):
    """[x OP c] elementwise, c a constant broadcast against x (params c: a tensor)."""

    def test(self, x: Tensor, c: Tensor) -> Tensor:
        raise NotImplementedError

    def evaluate(self, node, x):
        return attached(self.test(x, node.params["c"].to(x)).to(x.dtype), x)

    def decided(self, lo: Tensor, hi: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """(always, never): the test holds at every / no point of [lo, hi]."""
        raise NotImplementedError

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        always, never = self.decided(lo, hi, node.params["c"].to(lo))
        always, never = torch.broadcast_tensors(always, never)
        return (always.to(lo.dtype).expand_as(lo), (~never).to(lo.dtype).expand_as(lo))

    def relax(self, node, lo, hi):
        return flat(*self.interval(node, lo, hi))

    def model_error(self, node, dtype, *boxes):
        return 0.0


@rule("Less")
class LessRule(Compare):
    def test(self, x, c):
        return x < c

    def decided(self, lo, hi, c):
        return hi < c, lo >= c


@rule("LessOrEqual")
class LessOrEqualRule(Compare):
    def test(self, x, c):
        return x <= c

    def decided(self, lo, hi, c):
        return hi <= c, lo > c


@rule("Greater")
class GreaterRule(Compare):
    def test(self, x, c):
        return x > c

    def decided(self, lo, hi, c):
        return lo > c, hi <= c


@rule("GreaterOrEqual")
class GreaterOrEqualRule(Compare):
    def test(self, x, c):
        return x >= c

    def decided(self, lo, hi, c):
        return lo >= c, hi < c


@rule("Equal")
class EqualRule(Compare):
    def test(self, x, c):
        return x == c

    def decided(self, lo, hi, c):
        return (lo == c) & (hi == c), (hi < c) | (lo > c)


# --------------------------------------------------------------------------- casts
@rule("CastInt")
class CastIntRule(ActivationRule):
    """Cast from a float (or integer) type to an integer type: truncation toward zero.  params
    lo, hi: the target type's range (python ints).  Exact where the input box stays within the range and
    below INT_LIMIT; elsewhere (onnxruntime's out-of-range casts wrap or saturate) the type's
    range when it is within INT_LIMIT, else the whole line."""

    def _limits(self, node) -> tuple[float, float]:
        return max(float(node.params["lo"]), -INT_LIMIT), min(float(node.params["hi"]), INT_LIMIT)

    def evaluate(self, node, x):
        """trunc(x); a value outside the type (whose cast ONNX leaves undefined: onnxruntime wraps
        or saturates) is clamped into it, a value of the type like the real one."""
        return torch.trunc(x).clamp(float(node.params["lo"]), float(node.params["hi"]))

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        a, b = self._limits(node)
        inside = (torch.trunc(lo) >= a) & (torch.trunc(hi) <= b)
        small = -INT_LIMIT <= float(node.params["lo"]) and float(node.params["hi"]) <= INT_LIMIT
        far_lo, far_hi = (float(node.params["lo"]), float(node.params["hi"])) if small else (-torch.inf, torch.inf)
        return (torch.where(inside, torch.trunc(lo), torch.full_like(lo, far_lo)),
                torch.where(inside, torch.trunc(hi), torch.full_like(hi, far_hi)))

    def relax(self, node, lo, hi):
        """Flat where the interval is at most as wide as the band; else the band of slope 1:
        x >= 0: trunc is floor, in (x - 1, x]; x <= 0: ceil, in [x, x + 1); across 0 both."""
        lo, hi = clean_bounds(lo, hi)
        ilo, ihi = self.interval(node, lo, hi)
        a, b = self._limits(node)
        inside = (torch.trunc(lo) >= a) & (torch.trunc(hi) <= b)
        one, zero = torch.ones_like(ilo), torch.zeros_like(ilo)
        below = torch.where(hi <= 0, zero, -one)
        above = torch.where(lo >= 0, zero, one)
        band = (one, below, one.clone(), above)
        return pick(inside & (ihi - ilo > above - below), band, flat(ilo, ihi))

    def model_error(self, node, dtype, *boxes):
        return 0.0


@rule("CastBool")
class CastBoolRule(ActivationRule):
    """Cast to bool: [x != 0] (NaN is true, as in C)."""

    def evaluate(self, node, x):
        return attached((x != 0).to(x.dtype), x)

    def interval(self, node, lo, hi):
        lo, hi = clean_bounds(lo, hi)
        always = (lo > 0) | (hi < 0)
        never = (lo == 0) & (hi == 0)
        return always.to(lo.dtype), (~never).to(lo.dtype)

    def relax(self, node, lo, hi):
        return flat(*self.interval(node, lo, hi))

    def model_error(self, node, dtype, *boxes):
        return 0.0


# --------------------------------------------------------------------------- ArgMax
@rule("ArgMax")
class ArgMaxRule(ActivationRule):
    """The first index k of the largest of its inputs x_0 .. x_{n-1} (elementwise, one input per
    class): ONNX's ArgMax with select_last_index 0.  Index k can win only where x_k may reach
    every other input's lower bound; the interval spans the indices that can, [0, n - 1] when
    some input's bounds are unknown.  Only the reading of a network output (verifier/argmax.py
    rewrites a query on it onto the inputs), so the flat planes never carry a proof."""

    def evaluate(self, node, *xs):
        best, idx = xs[0], torch.zeros_like(xs[0])
        for k, x in enumerate(xs[1:], 1):
            better = x > best          # strictly: ties keep the first index
            best = torch.where(better, x, best)
            idx = torch.where(better, torch.full_like(idx, float(k)), idx)
        return attached(idx, xs[0])

    def interval(self, node, lo, hi, *side):
        n = len(node.inputs)
        if any(b is None for b in side):
            return torch.zeros_like(lo), torch.full_like(hi, float(n - 1))
        boxes = [clean_bounds(lo, hi)] + [clean_bounds(*b) for b in side]
        top = torch.stack([b[0] for b in boxes]).amax(0)
        can = torch.stack([b[1] >= top for b in boxes])          # (n, ...)
        ks = torch.arange(n, dtype=lo.dtype, device=lo.device).reshape((n,) + (1,) * lo.dim())
        first = torch.where(can, ks, torch.full_like(ks, float(n))).amin(0)
        last = torch.where(can, ks, torch.full_like(ks, -1.0)).amax(0)
        return first.clamp(0, n - 1), last.clamp(0, n - 1)

    def relax(self, node, lo, hi, *side):
        return flat(*self.interval(node, lo, hi, *side))

    def model_error(self, node, dtype, *boxes):
        return 0.0


# --------------------------------------------------------------------------- converters
_SWAPPED = {"Less": "Greater", "Greater": "Less", "LessOrEqual": "GreaterOrEqual",
            "GreaterOrEqual": "LessOrEqual", "Equal": "Equal"}


@converts("Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal")
def _compare(ctx, n) -> None:
    """a OP c with a constant side: the step on the variable (swapped when the constant comes
    first); two variables of one shape: the step of a - b against 0, whose sign is that of the
    comparison (a difference of floats rounds to 0 only when they are equal, and never changes
    sign)."""
    a, b = n.input[0], n.input[1]
    op = n.op_type
    if ctx.is_const(a):
        a, b, op = b, a, _SWAPPED[op]
    if ctx.is_const(b):
        x, c = ctx.broadcast_const(n, ctx.var(a), b)
        s = tuple(ctx.onnx_shape(x))
        if tuple(np.broadcast_shapes(s, c.shape)) != s:
            raise ctx.unsupported(n, f"{op} with a constant of shape {list(c.shape)} that widens the "
                                     f"variable's shape {list(s)}")
    else:
        xa, xb = ctx.var(a), ctx.var(b)
        rank = max(len(ctx.onnx_shape(xa)), len(ctx.onnx_shape(xb)))
        xa, xb = ctx.lift(n, xa, rank), ctx.lift(n, xb, rank)
        if ctx.shape(xa) != ctx.shape(xb):
            raise ctx.unsupported(n, f"{op} of variables of different shapes (broadcasting between variables)")
        x = ctx.emit("Add", [xa, _affine(ctx, xb, np.array(-1.0), None, None)], {})
        c = np.zeros(())
    ctx.emit(op, [x], {"c": ctx.tensor(c)}, n.output[0])
    ctx.integer.add(ctx.var(n.output[0]))


def emit_integer_cast(ctx, n, to: int) -> None:
    """Cast to an integer type (truncation) or to bool ([x != 0]); called by shape.py's Cast."""
    x = ctx.var(n.input[0])
    if to == BOOL:
        ctx.emit("CastBool", [x], {}, n.output[0])
    elif to in INT_RANGES:
        lo, hi = INT_RANGES[to]
        # python ints: a float32 engine holds every parameter exactly (2^31 - 1 is no float32)
        ctx.emit("CastInt", [x], {"lo": lo, "hi": hi}, n.output[0])
    else:
        raise ctx.unsupported(n, f"Cast to element type {to}")
    ctx.integer.add(ctx.var(n.output[0]))


@converts("ArgMax")
def _argmax(ctx, n) -> None:
    """Only as a network output that the query declares with an integer type (ctx.integer_outputs,
    set by verifier/argmax.py), along the last axis, first index on ties: one Gather per class,
    then the ArgMax rule over them."""
    if n.output[0] not in ctx.integer_outputs:
        raise ctx.unsupported(n, "ArgMax whose result is not a network output declared with an integer "
                                 "type in a VNN-LIB 2.0 query")
    a = ctx.attrs(n)
    if int(a.get("select_last_index", 0)):
        raise ctx.unsupported(n, "ArgMax with select_last_index=1")
    x = ctx.var(n.input[0])
    s = tuple(ctx.onnx_shape(x))
    axis = int(a.get("axis", 0))
    axis = axis + len(s) if axis < 0 else axis
    if axis != len(s) - 1 or (ctx.offset == 0 and axis == 0):
        raise ctx.unsupported(n, f"ArgMax along axis {a.get('axis', 0)} of a {list(s)} tensor (only the last "
                                 "axis, not a batch axis)")
    ir = ctx.shape(x)
    one = tuple(ir[:-1]) + (1,)
    parts = [ctx.emit("Gather", [x], {"axis": len(ir), "indices": torch.tensor([k], dtype=torch.long)}, shape=one)
             for k in range(int(s[-1]))]
    keep = int(a.get("keepdims", 1))
    y = ctx.emit("ArgMax", parts, {}, n.output[0], shape=one)
    if not keep:
        ctx.batchless[y] = s[:-1]      # its ONNX shape; only read as an output (joint reads its size)
    ctx.integer.add(y)
