"""Products of two variable tensors: Mul of two variables, and Div by a variable as a product with
its Reciprocal.

x * y over a box [xl, xh] x [yl, yh] lies between McCormick's planes (Mc Cormick 1976): below
yl x + xl y - xl yl and yh x + xh y - xh yh, above yh x + xl y - xl yh and yl x + xh y - xh yl
(each is the product's value at two corners plus a term of constant sign).  The rule takes the
average of each pair, a plane in both inputs, so it is one rule with planes in every input
(``multi_planes``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..bounds.rounding import clean_bounds, lower, magnitude, product_model_error, tiny, unit, upper
from ..ir import Node
from .registry import ActivationRule, converts, rule

MAX_PRODUCTS = 1 << 20   # elementary products of one MatMul of two variables (memory: ~8 MB each copy)


def _product_err(p: Tensor) -> Tensor:
    """A bound on the rounding of one product p = fl(a b): u |p| + tiny (a flushed subnormal)."""
    return unit(p.dtype) * p.abs() + 2 * tiny(p.dtype)


@rule("MulVar")
class BilinearRule(ActivationRule):
    """inputs (x, y) of one shape: x * y."""

    multi_planes = True

    def evaluate(self, node: Node, x: Tensor, y: Tensor) -> Tensor:
        return x * y

    def interval(self, node, xl, xh, y_box=None):
        xl, xh = clean_bounds(xl, xh)
        if y_box is None:
            full = torch.full_like(xl, torch.inf)
            return -full, full
        yl, yh = clean_bounds(*y_box)
        corners = [a * b for a in (xl, xh) for b in (yl, yh)]
        # 0 * inf is NaN: an infinite end makes the product unbounded (unless the other is 0)
        corners = [torch.where(torch.isnan(c), torch.zeros_like(c), c) for c in corners]
        lo = torch.stack([lower(c, _product_err(c)) for c in corners]).amin(0)
        hi = torch.stack([upper(c, _product_err(c)) for c in corners]).amax(0)
        return clean_bounds(lo, hi)

    def relax(self, node, xl, xh, y_box=None):
        """Planes in x alone (for propagators that take only the first input's planes): the flat
        planes of the interval, valid whatever the planes' use."""
        lo, hi = self.interval(node, xl, xh, y_box)
        zero = torch.zeros_like(lo)
        return zero, lo, zero.clone(), hi

    def model_error(self, node, dtype, x_box=None, y_box=None, *_):
        """onnxruntime's x * y is one product rounded in dtype: at most u |x y| + tiny over the
        boxes (rounding.product_model_error); inf where a box is unknown."""
        if x_box is None or y_box is None:
            return float("inf")
        return product_model_error(dtype, magnitude(*x_box) * magnitude(*y_box))

    def can_split(self, node) -> bool:
        """Branch and bound splits the first factor's interval."""
        return True

    def branch_gain(self, node, xl, xh, a, y_box=None):
        """At x's midpoint: the averaged planes are (xh - xl)(yh - yl) / 2 apart, so halving x's
        interval removes a quarter of that from the plane `a` selects."""
        from .split import midpoint_gain

        xl, xh = clean_bounds(xl, xh)
        yl, yh = (torch.full_like(xl, -torch.inf), torch.full_like(xl, torch.inf)) if y_box is None \
            else clean_bounds(*y_box)
        return midpoint_gain(xl, xh, a.abs() * (xh - xl) * (yh - yl) / 4)

    def relax_all(self, node, x_box, y_box):
        """([wx, wy], lb, [wx, wy], ub): the averages of McCormick's pairs.  Both have slopes
        wx = (yl + yh) / 2, wy = (xl + xh) / 2 (each rounded once, by u of itself: the plane moves
        by at most u (|wx| mx + |wy| my) over the box, m the largest magnitudes); the intercepts
        -(xl yl + xh yh) / 2 and -(xl yh + xh yl) / 2 round three times.  Unbounded inputs: flat
        planes from the interval (infinite)."""
        xl, xh = clean_bounds(*x_box)
        if y_box is None:
            yl, yh = torch.full_like(xl, -torch.inf), torch.full_like(xl, torch.inf)
        else:
            yl, yh = clean_bounds(*y_box)
        ok = torch.isfinite(xl) & torch.isfinite(xh) & torch.isfinite(yl) & torch.isfinite(yh)
        zero = torch.zeros_like(xl)
        xl0, xh0, yl0, yh0 = (torch.where(ok, t, zero) for t in (xl, xh, yl, yh))
        wx, wy = (yl0 + yh0) / 2, (xl0 + xh0) / 2
        mx, my = torch.maximum(xl0.abs(), xh0.abs()), torch.maximum(yl0.abs(), yh0.abs())
        a, b, c, d = xl0 * yl0, xh0 * yh0, xl0 * yh0, xh0 * yl0
        slope = unit(xl.dtype) * (wx.abs() * mx + wy.abs() * my) + 4 * tiny(xl.dtype) * (1 + mx + my)
        lb = lower(-(a + b) / 2, 4 * unit(xl.dtype) * (a.abs() + b.abs()) + slope + 4 * tiny(xl.dtype))
        ub = upper(-(c + d) / 2, 4 * unit(xl.dtype) * (c.abs() + d.abs()) + slope + 4 * tiny(xl.dtype))
        ilo, ihi = self.interval(node, xl, xh, (yl, yh))
        wx, wy = torch.where(ok, wx, zero), torch.where(ok, wy, zero)
        return [wx, wy], torch.where(ok, lb, ilo), [wx.clone(), wy.clone()], torch.where(ok, ub, ihi)


@converts("Mul", "Div")
def _mul_div(ctx, n) -> None:
    """By a constant: an affine map (ops/linear.py); of two variables: the product rule; by a
    variable: a product with the divisor's Reciprocal (c / y: the Reciprocal scaled)."""
    from .linear import _affine, _by_constant

    a, b = n.input
    if ctx.is_const(a) and ctx.is_const(b):
        raise ctx.unsupported(n, f"{n.op_type} of two constants")   # folded before: not reached
    if ctx.is_const(b) or (ctx.is_const(a) and n.op_type == "Mul"):
        _by_constant(ctx, n)
        return
    divisor = ctx.var(b)
    if n.op_type == "Div":
        divisor = ctx.emit("Reciprocal", [divisor], {})
        if ctx.is_const(a):     # c / y
            x, c = ctx.broadcast_const(n, divisor, a)
            _affine(ctx, x, c, None, n.output[0])
            return
    x, y = ctx.var(a), divisor
    rank = max(len(ctx.onnx_shape(x)), len(ctx.onnx_shape(y)))
    x, y = ctx.lift(n, x, rank), ctx.lift(n, y, rank)
    if ctx.shape(x) != ctx.shape(y):
        raise ctx.unsupported(n, f"{n.op_type} of two variables of shapes {list(ctx.onnx_shape(x))} and "
                                 f"{list(ctx.onnx_shape(y))} (broadcasting between variables)")
    ctx.emit("MulVar", [x, y], {}, n.output[0])



def matmul_of_variables(ctx, n) -> None:
    """A @ B of two variables, (..., m, k) @ (..., k, q) with the same leading axes: every product
    A[p, i, l] * B[p, l, j] as one element of two gathered copies (MulVar), then the sums over l
    (ReduceSum): exact over the reals, m q k products per leading index."""
    a, b = ctx.var(n.input[0]), ctx.var(n.input[1])
    sa, sb = tuple(ctx.onnx_shape(a)), tuple(ctx.onnx_shape(b))
    if len(sa) < 2 or len(sb) < 2 or sa[:-2] != sb[:-2] or sa[-1] != sb[-2]:
        raise ctx.unsupported(n, f"MatMul of two variables of shapes {list(sa)} and {list(sb)} (two matrices "
                                 "with the same leading axes)")
    lead, (m, k), q = sa[:-2], sa[-2:], sb[-1]
    P = int(np.prod(lead, dtype=np.int64)) if lead else 1
    if P * m * q * k > MAX_PRODUCTS:
        raise ctx.unsupported(n, f"MatMul of two variables with {P * m * q * k} products (at most {MAX_PRODUCTS})")
    p, i, j, l = np.meshgrid(np.arange(P), np.arange(m), np.arange(q), np.arange(k), indexing="ij")
    ia = (p * m * k + i * k + l).reshape(-1)
    ib = (p * k * q + l * q + j).reshape(-1)
    size = ia.size
    fa = ctx.emit("Reshape", [a], {}, shape=(P * m * k,))
    fb = ctx.emit("Reshape", [b], {}, shape=(P * k * q,))
    ea = ctx.emit("Gather", [fa], {"axis": 1, "indices": torch.as_tensor(ia)}, shape=(size,))
    eb = ctx.emit("Gather", [fb], {"axis": 1, "indices": torch.as_tensor(ib)}, shape=(size,))
    prods = ctx.emit("Reshape", [ctx.emit("MulVar", [ea, eb], {})], {}, shape=(P * m * q, k))
    sums = ctx.emit("ReduceSum", [prods], {"axes": (2,), "keepdim": False, "scale": None}, shape=(P * m * q,))
    ctx.emit("Reshape", [sums], {}, n.output[0], shape=ctx.ir_shape(sa[:-1] + (q,), n))
