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
    x = ctx.var(n.input[0])
    shape = ctx.onnx_shape(x)
    rank = len(shape)
    axis = int(ctx.attrs(n).get("axis", -1 if ctx.opset >= 13 else 1))
    axis = axis + rank if axis < 0 else axis
    if axis != rank - 1:
        # before opset 13 Softmax flattens the axes from `axis` on into one: the same as along the
        # last axis only when `axis` is the last one
        raise ctx.unsupported(n, f"Softmax along axis {axis} of a rank-{rank} tensor (the last axis only)")
    k = int(shape[-1])
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
    ctx.emit("Reciprocal", [s], {}, n.output[0])
