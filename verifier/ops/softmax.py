"""Softmax, as rules the engine already has: softmax(x)_i = 1 / sum_j exp(x_j - x_i).

Exact over the reals, and each piece is tight where it matters: the differences x_j - x_i are one
affine map (no slack), exp is convex (its planes are tight on small ranges), and the sum holds the
term exp(0) = 1, so the Reciprocal sees a range within [1, n e^(max range)] away from 0 and every
output stays within (0, 1].  The pairwise form costs n^2 elements per softmax, so it is used up to
MAX_CLASSES.
"""
from __future__ import annotations

import numpy as np

from .registry import converts

MAX_CLASSES = 256


@converts("Softmax")
def _softmax(ctx, n) -> None:
    """Along the last axis directly; along another one (opset 13 on) between two transpositions;
    before opset 13 over the axes from `axis` on, flattened into one (ONNX's coercion to 2-D)."""
    x = ctx.var(n.input[0])
    shape = tuple(ctx.onnx_shape(x))
    rank = len(shape)
    axis = int(ctx.attrs(n).get("axis", -1 if ctx.opset >= 13 else 1))
    axis = axis + rank if axis < 0 else axis
    if ctx.offset == 0 and axis == 0 and (ctx.opset >= 13 or rank > 1):
        raise ctx.unsupported(n, "Softmax over the batch axis")
    if axis == rank - 1:
        _last_axis(ctx, n, x, n.output[0])
    elif ctx.opset < 13:
        flat = ctx.emit("Reshape", [x], {}, shape=ctx.ir_shape(shape[:axis] + (int(np.prod(shape[axis:])),), n))
        y = _last_axis(ctx, n, flat, None)
        ctx.emit("Reshape", [y], {}, n.output[0], shape=ctx.shape(x))
    else:
        b_axis, b_rank = axis + ctx.offset, rank + ctx.offset    # axes of the batched IR tensor
        perm = [0] + [a for a in range(1, b_rank) if a != b_axis] + [b_axis]
        inverse = [perm.index(a) for a in range(b_rank)]
        moved = ctx.emit("Transpose", [x], {"perm": tuple(perm)})
        y = _last_axis(ctx, n, moved, None)
        ctx.emit("Transpose", [y], {"perm": tuple(inverse)}, n.output[0])


def _last_axis(ctx, n, x: str, out: str | None) -> str:
    k = int(ctx.shape(x)[-1])
    if k > MAX_CLASSES:
        raise ctx.unsupported(n, f"Softmax over {k} elements (at most {MAX_CLASSES})")
    diff = np.zeros((k, k * k))
    for i in range(k):
        for j in range(k):
            diff[j, i * k + j] += 1.0
            diff[i, i * k + j] -= 1.0
    total = np.zeros((k * k, k))
    for i in range(k):
        total[i * k:(i + 1) * k, i] = 1.0
    d = ctx.emit("MatMul", [x], {"W": ctx.tensor(diff), "b": None})          # x_j - x_i
    e = ctx.emit("Exp", [d], {})
    s = ctx.emit("MatMul", [e], {"W": ctx.tensor(total), "b": None})         # sum_j exp(x_j - x_i)
    return ctx.emit("Reciprocal", [s], {}, out)
