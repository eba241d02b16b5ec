"""Pooling.  Average pooling is linear; max pooling is rewritten exactly into ReLUs,
max(a, b) = a + relu(b - a), so every bound algorithm handles it through ReLU's rules."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
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
    a = ctx.attrs(n)
    k = list(a["kernel_shape"])
    if len(k) != 2 or len(ctx.shape(x)) != 3:
        raise ctx.unsupported(n, f"{n.op_type} other than 2-D")
    stride = list(a.get("strides", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    auto = a.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "VALID") or a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise ctx.unsupported(n, f"{n.op_type} with auto_pad/ceil_mode/dilations")
    if auto == "VALID":
        pads = [0, 0, 0, 0]
    return k, stride, pads


@converts("AveragePool")
def _avgpool(ctx, n) -> None:
    x = ctx.var(n.input[0])
    k, stride, pads = _pool_geometry(ctx, n, x)
    include = bool(ctx.attrs(n).get("count_include_pad", 0))
    geometry = {"kernel": tuple(k), "stride": tuple(stride), "padding": (0, 0), "count_include_pad": True}
    if not any(pads):
        ctx.emit("AvgPool", [x], geometry, n.output[0])
        return
    # zero-pad explicitly (pads may be asymmetric), then average over the full window ...
    h, w = ctx.shape(x)[1:]
    torch_pads = ctx.torch_pads(pads[:2], pads[2:])
    x = ctx.emit("Pad", [x], {"pads": torch_pads, "mode": "constant", "value": 0.0})
    if include:
        ctx.emit("AvgPool", [x], geometry, n.output[0])
        return
    # ... and, for the ONNX default count_include_pad=0, rescale every output by window size /
    # number of real (non-pad) elements in its window: a constant per output position
    y = ctx.emit("AvgPool", [x], geometry)
    real = F.pad(torch.ones((1, 1, h, w), dtype=torch.float64), torch_pads)
    share = F.avg_pool2d(real, tuple(k), tuple(stride))[0]  # (1, oh, ow)
    ctx.emit("Affine", [y], {"scale": 1.0 / share, "shift": None}, n.output[0])


@converts("GlobalAveragePool")
def _global_avgpool(ctx, n) -> None:
    ctx.emit("GlobalAvgPool", [ctx.var(n.input[0])], {}, n.output[0])


@converts("MaxPool")
def _maxpool(ctx, n) -> None:
    if len(n.output) > 1 and n.output[1]:
        raise ctx.unsupported(n, "MaxPool with an Indices output")
    x = ctx.var(n.input[0])
    k, stride, pads = _pool_geometry(ctx, n, x)
    if any(pads):
        raise ctx.unsupported(n, "MaxPool with padding")
    c, h, w = ctx.shape(x)
    oh, ow = (h - k[0]) // stride[0] + 1, (w - k[1]) // stride[1] + 1
    windows = []
    for i in range(k[0]):
        for j in range(k[1]):
            index = (slice(None), slice(None), slice(i, i + (oh - 1) * stride[0] + 1, stride[0]),
                     slice(j, j + (ow - 1) * stride[1] + 1, stride[1]))
            windows.append(ctx.emit("Slice", [x], {"index": index}))
    while len(windows) > 1:  # pairwise tree: depth log2(k*k)
        nxt = []
        for a, b in zip(windows[0::2], windows[1::2]):
            last = len(windows) == 2
            diff = ctx.emit("Add", [b, ctx.emit("Affine", [a], {"scale": ctx.tensor(np.array(-1.0)), "shift": None})], {})
            nxt.append(ctx.emit("Add", [a, ctx.emit("Relu", [diff], {})], {}, n.output[0] if last else None))
        if len(windows) % 2:
            nxt.append(windows[-1])
        windows = nxt
    if len(k) and k[0] * k[1] == 1:
        ctx.bind(n.output[0], windows[0])
