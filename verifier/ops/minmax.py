"""Max, Min, ReduceMax, ReduceMin as ReLUs: max(a, b) = a + relu(b - a), min(a, b) = a - relu(a - b).

Exact over the reals, and branch and bound splits these ReLUs like any other (a split decides
which operand is the larger).  onnxruntime computes max and min exactly, so the float model's
allowance for the additions only widens the bounds.
"""
from __future__ import annotations

import numpy as np
import torch

from .linear import _affine
from .registry import converts


def _pair_max(ctx, a: str, b: str, is_max: bool, out=None) -> str:
    """max(a, b) = a + relu(b - a) or min(a, b) = a - relu(a - b), for two variables."""
    if is_max:
        r = ctx.emit("Relu", [ctx.emit("Add", [b, _affine(ctx, a, np.array(-1.0), None, None)], {})], {})
        return ctx.emit("Add", [a, r], {}, out)
    r = ctx.emit("Relu", [ctx.emit("Add", [a, _affine(ctx, b, np.array(-1.0), None, None)], {})], {})
    return ctx.emit("Add", [a, _affine(ctx, r, np.array(-1.0), None, None)], {}, out)


def _const_max(ctx, n, x: str, name: str, is_max: bool, out=None) -> str:
    """max(x, c) = c + relu(x - c), min(x, c) = c - relu(c - x)."""
    x, c = ctx.broadcast_const(n, x, name)
    if is_max:
        return _affine(ctx, ctx.emit("Relu", [_affine(ctx, x, None, -c, None)], {}), None, c, out)
    return _affine(ctx, ctx.emit("Relu", [_affine(ctx, x, np.array(-1.0), c, None)], {}), np.array(-1.0), c, out)


@converts("Max", "Min")
def _max_min(ctx, n) -> None:
    is_max = n.op_type == "Max"
    names = [i for i in n.input if i]
    vs = [i for i in names if not ctx.is_const(i)]
    consts = [i for i in names if ctx.is_const(i)]
    if len(consts) > 1:
        raise ctx.unsupported(n, f"{n.op_type} of several constants")     # folded otherwise
    rank = max(len(ctx.onnx_shape(ctx.var(v))) for v in vs)
    xs = [ctx.lift(n, ctx.var(v), rank) for v in vs]
    if any(ctx.shape(x) != ctx.shape(xs[0]) for x in xs):
        raise ctx.unsupported(n, f"{n.op_type} of variables of different shapes (broadcasting between variables)")
    if len(names) == 1:
        ctx.alias(n.output[0], names[0])
        return
    acc = xs[0]
    for i, x in enumerate(xs[1:]):
        last = not consts and i == len(xs) - 2
        acc = _pair_max(ctx, acc, x, is_max, n.output[0] if last else None)
    if consts:
        _const_max(ctx, n, acc, consts[0], is_max, n.output[0])


@converts("ReduceMax", "ReduceMin")
def _reduce_max(ctx, n) -> None:
    """Over each reduced axis, the slices along it combined pairwise (a tree of depth log k)."""
    from .reduce import reduction

    found = reduction(ctx, n)
    if found is None:
        return
    x, s, axes, _, out = found
    if ctx.offset == 0 and 0 in axes:
        raise ctx.unsupported(n, f"{n.op_type} over the batch axis")
    y = x
    for axis in axes:
        ir_axis = axis + ctx.offset    # the IR's batched axis (offset 0: ONNX axis 0 is the batch)
        one = list(ctx.shape(y))
        one[ir_axis - 1] = 1           # the IR's shapes leave the batch axis out
        parts = [ctx.emit("Gather", [y], {"axis": ir_axis, "indices": torch.tensor([i], dtype=torch.long)},
                          shape=tuple(one)) for i in range(int(s[axis]))]
        while len(parts) > 1:
            pairs = [_pair_max(ctx, parts[k], parts[k + 1], n.op_type == "ReduceMax")
                     for k in range(0, len(parts) - 1, 2)]
            parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
        y = parts[0]
    ctx.emit("Reshape", [y], {}, n.output[0], shape=ctx.ir_shape(out, n))
