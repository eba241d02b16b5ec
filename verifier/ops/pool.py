"""Pooling.  Average pooling is linear; max pooling is rewritten exactly into ReLUs,
max(a, b) = a + relu(b - a), so every bound algorithm handles it through ReLU's rules."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from .linear import window_pads
from .registry import LinearRule, converts, rule


@rule("AvgPool")
class AvgPoolRule(LinearRule):
    """params kernel, stride, padding (symmetric), count_include_pad.  2-D only."""

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        p = node.params
        return F.avg_pool2d(x, p["kernel"], p["stride"], p["padding"], count_include_pad=p["count_include_pad"])

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        return None

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        return self.evaluate(node, r)


@rule("GlobalAvgPool")
class GlobalAvgPoolRule(LinearRule):
    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        return None

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        return self.evaluate(node, r)


def _pool_geometry(ctx, n, x: str):
    """kernel, strides and pads (begin..., end...) of a pooling node over x, which has a batch
    axis; ceil_mode only where it gives the floor's output size (no extra window to define)."""
    ctx.needs_batch_axis(n, x)
    a = ctx.attrs(n)
    k = [int(v) for v in a["kernel_shape"]]
    spatial = ctx.shape(x)[1:]
    if len(spatial) != len(k):
        raise ctx.unsupported(n, f"a {len(k)}-D window on an input of shape {list(ctx.onnx_shape(x))}")
    stride = [int(v) for v in a.get("strides", [1] * len(k))]
    if any(d != 1 for d in a.get("dilations", [1] * len(k))):
        raise ctx.unsupported(n, f"{n.op_type} with dilations {list(a['dilations'])}")
    pads = window_pads(ctx, n, spatial, k, stride, [1] * len(k))
    r = len(k)
    if a.get("ceil_mode", 0) and any((spatial[i] + pads[i] + pads[r + i] - k[i]) % stride[i] for i in range(r)):
        raise ctx.unsupported(n, f"{n.op_type} with ceil_mode=1 where it adds a partial window")
    if any(spatial[i] + pads[i] + pads[r + i] < k[i] for i in range(r)):
        raise ctx.unsupported(n, f"{n.op_type} with a window larger than the padded input")
    return k, stride, pads


@converts("AveragePool")
def _avgpool(ctx, n) -> None:
    x = ctx.var(n.input[0])
    k, stride, pads = _pool_geometry(ctx, n, x)
    if len(k) == 1:  # (C, L) as (C, 1, L): the 2-D rule with a (1, k) window, then back
        c, length = ctx.shape(x)
        x = ctx.emit("Reshape", [x], {}, shape=(c, 1, length))
        k, stride, pads = [1] + k, [1] + stride, [0, pads[0], 0, pads[1]]
        y = _avgpool2d(ctx, n, x, k, stride, pads, None)
        ctx.emit("Reshape", [y], {}, n.output[0], shape=(c, ctx.shape(y)[-1]))
        return
    if len(k) != 2:
        raise ctx.unsupported(n, f"AveragePool with a {len(k)}-D window (1-D and 2-D are supported)")
    _avgpool2d(ctx, n, x, k, stride, pads, n.output[0])


def _avgpool2d(ctx, n, x: str, k, stride, pads, out: str | None) -> str:
    include = bool(ctx.attrs(n).get("count_include_pad", 0))
    geometry = {"kernel": tuple(k), "stride": tuple(stride), "padding": (0, 0), "count_include_pad": True}
    if not any(pads):
        return ctx.emit("AvgPool", [x], geometry, out)
    # zero-pad explicitly (pads may be asymmetric), then average over the full window ...
    h, w = ctx.shape(x)[1:]
    torch_pads = ctx.torch_pads(pads[:2], pads[2:])
    x = ctx.emit("Pad", [x], {"pads": torch_pads, "mode": "constant", "value": 0.0})
    if include:
        return ctx.emit("AvgPool", [x], geometry, out)
    # ... and, for the ONNX default count_include_pad=0, rescale every output by window size /
    # number of real (non-pad) elements in its window: a constant per output position
    y = ctx.emit("AvgPool", [x], geometry)
    real = F.pad(torch.ones((1, 1, h, w), dtype=torch.float64), torch_pads)
    share = F.avg_pool2d(real, tuple(k), tuple(stride))[0]  # (1, oh, ow)
    return ctx.emit("Affine", [y], {"scale": 1.0 / share, "shift": None}, out)


@converts("GlobalAveragePool")
def _global_avgpool(ctx, n) -> None:
    """The mean over the spatial axes 2.. of the ONNX tensor (N, C, D1, ...).  The rule averages
    the batched tensor's axes 2..: the same axes with a batch axis; without one, N and C are
    merged first so that they are the rule's axis 1."""
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    if len(s) < 2:
        raise ctx.unsupported(n, f"GlobalAveragePool of a rank-{len(s)} input")
    if len(s) == 2:  # no spatial axis: every mean is over one element
        ctx.alias(n.output[0], n.input[0])
        return
    if ctx.offset == 0:
        ctx.emit("GlobalAvgPool", [x], {}, n.output[0])
        return
    merged = ctx.emit("Reshape", [x], {}, shape=(s[0] * s[1],) + tuple(s[2:]))
    y = ctx.emit("GlobalAvgPool", [merged], {})
    ctx.emit("Reshape", [y], {}, n.output[0], shape=tuple(s[:2]) + (1,) * (len(s) - 2))


@converts("MaxPool")
def _maxpool(ctx, n) -> None:
    """The max over each window as a pairwise tree of max(a, b) = a + relu(b - a) over strided
    slices, one per window offset.  Pads (whose value ONNX takes as -inf) become edge copies: a
    contiguous window that covers any real cell covers the nearest one, so the max is unchanged."""
    if len(n.output) > 1 and n.output[1]:
        raise ctx.unsupported(n, "MaxPool with an Indices output")
    x = ctx.var(n.input[0])
    k, stride, pads = _pool_geometry(ctx, n, x)
    r = len(k)
    if any(p >= k[i % r] for i, p in enumerate(pads)):
        raise ctx.unsupported(n, f"MaxPool with pads {pads} not below the kernel {k}")
    if any(pads):
        if r > 3:
            raise ctx.unsupported(n, f"MaxPool with pads on a {r}-D window")
        x = ctx.emit("Pad", [x], {"pads": ctx.torch_pads(pads[:r], pads[r:]), "mode": "replicate", "value": 0.0})
    size = ctx.shape(x)[1:]
    outs = [(size[i] - k[i]) // stride[i] + 1 for i in range(r)]
    windows = []
    for offs in np.ndindex(*k):
        index = (slice(None), slice(None)) + tuple(slice(o, o + (m - 1) * s + 1, s)
                                                   for o, m, s in zip(offs, outs, stride))
        windows.append(ctx.emit("Slice", [x], {"index": index}))
    while len(windows) > 1:  # pairwise tree: depth log2(prod(k))
        nxt = []
        for a, b in zip(windows[0::2], windows[1::2]):
            last = len(windows) == 2
            neg = ctx.emit("Affine", [a], {"scale": ctx.tensor(np.array(-1.0)), "shift": None})
            diff = ctx.emit("Add", [b, neg], {})
            nxt.append(ctx.emit("Add", [a, ctx.emit("Relu", [diff], {})], {}, n.output[0] if last else None))
        if len(windows) % 2:
            nxt.append(windows[-1])
        windows = nxt
    if int(np.prod(k)) == 1:
        ctx.bind(n.output[0], windows[0])
