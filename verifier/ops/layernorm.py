"""LayerNormalization over the last axis, as rules the engine already has:

    d = x - mean(x)                      one affine map (I - 11^T / k)
    r = 1 / sqrt(mean(d^2) + eps)        Pow 2, an affine mean, Sqrt, Reciprocal
    y = (d * r) * scale + bias           a product of two variables (McCormick), an affine map

Exact over the reals (the mean's 1/k is a derived constant, within the rounding every affine map
is allowed: bounds/rounding.DERIVED).  eps > 0 keeps the Sqrt and the Reciprocal away from 0.
"""
from __future__ import annotations

import numpy as np

from .linear import _affine
from .registry import converts


@converts("LayerNormalization")
def _layer_norm(ctx, n) -> None:
    a = ctx.attrs(n)
    x = ctx.var(n.input[0])
    shape = ctx.onnx_shape(x)
    axis = int(a.get("axis", -1))
    axis = axis + len(shape) if axis < 0 else axis
    if axis != len(shape) - 1:
        raise ctx.unsupported(n, f"LayerNormalization from axis {axis} of a rank-{len(shape)} tensor "
                                 "(over the last axis only)")
    if any(o for o in n.output[1:]):
        raise ctx.unsupported(n, "LayerNormalization's Mean and InvStdDev outputs")
    eps = float(a.get("epsilon", 1e-5))
    if not eps > 0:
        raise ctx.unsupported(n, f"LayerNormalization with epsilon {eps} (a positive one is needed)")
    k = int(shape[-1])
    centre = np.eye(k) - np.full((k, k), 1.0 / k)
    d = ctx.emit("MatMul", [x], {"W": ctx.tensor(centre), "b": None})
    sq = ctx.emit("Pow", [d], {"p": 2.0})
    var = ctx.emit("MatMul", [sq], {"W": ctx.tensor(np.full((k, 1), 1.0 / k)), "b": ctx.tensor([eps])})
    r = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [var], {})], {})
    wide = ctx.emit("MatMul", [r], {"W": ctx.tensor(np.ones((1, k))), "b": None})
    normed = ctx.emit("MulVar", [d, wide], {})
    scale = np.asarray(ctx.const(n.input[1]), dtype=np.float64).reshape(-1)
    bias = np.asarray(ctx.const(n.input[2]), dtype=np.float64).reshape(-1) if len(n.input) > 2 and n.input[2] else None
    if scale.size not in (1, k) or (bias is not None and bias.size not in (1, k)):
        raise ctx.unsupported(n, "LayerNormalization scale or bias that is not one value per element of the last axis")
    _affine(ctx, normed, np.broadcast_to(scale, (k,)).copy(), None if bias is None else np.broadcast_to(bias, (k,)).copy(),
            n.output[0])
