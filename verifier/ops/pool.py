"""Pooling.  Average pooling is linear; max pooling is rewritten exactly into ReLUs,
max(a, b) = a + relu(b - a), so every bound algorithm handles it through ReLU's rules."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from .linear import window_pads
from .reduce import emit_select, positions
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


def _maxpool_geometry(ctx, n, x: str):
    """kernel, strides, dilations, pads (begin..., end...) and output lengths of a MaxPool over x,
    which has a batch axis.  ceil_mode adds the partial window at the end (its missing cells are
    left out, like pads); a last window that would start past the input and the left pads is
    where the spec and onnxruntime versions differ, and is refused."""
    ctx.needs_batch_axis(n, x)
    a = ctx.attrs(n)
    k = [int(v) for v in a["kernel_shape"]]
    r = len(k)
    spatial = ctx.shape(x)[1:]
    if len(spatial) != r:
        raise ctx.unsupported(n, f"a {r}-D window on an input of shape {list(ctx.onnx_shape(x))}")
    stride = [int(v) for v in a.get("strides", [1] * r)]
    dil = [int(v) for v in a.get("dilations", [1] * r)]
    pads = window_pads(ctx, n, spatial, k, stride, dil)
    outs = []
    for i in range(r):
        room = spatial[i] + pads[i] + pads[r + i] - (k[i] - 1) * dil[i] - 1
        if room < 0:
            raise ctx.unsupported(n, "MaxPool with a window larger than the padded input")
        o = (-(-room // stride[i]) if a.get("ceil_mode", 0) else room // stride[i]) + 1
        if (o - 1) * stride[i] >= spatial[i] + pads[i]:
            raise ctx.unsupported(n, "MaxPool with ceil_mode=1 whose last window starts in the end padding")
        outs.append(o)
    return k, stride, dil, pads, outs


def _window_coords(ctx, n, length: int, k: int, s: int, d: int, pad: int, out: int) -> list[np.ndarray]:
    """Per kernel offset j, the input index each output window reads along one axis; where that
    cell is padding (or past the end, ceil_mode), the window's first real cell instead: a copy of
    an element the window holds anyway, so the max is unchanged (ONNX pads with -inf)."""
    cells = np.arange(out)[:, None] * s + np.arange(k)[None, :] * d - pad   # (out, k)
    real = (cells >= 0) & (cells < length)
    if not real.any(axis=1).all():
        raise ctx.unsupported(n, "MaxPool with a window that holds only padding")
    first = cells[np.arange(out), real.argmax(axis=1)]
    return [np.where(real[:, j], cells[:, j], first) for j in range(k)]


def _window(ctx, n, x: str, coords) -> str:
    """The values at the given per-axis coordinates: a strided Slice when they step evenly, else
    a Select."""
    steps = [np.diff(c) for c in coords]
    if all(len(c) == 1 or (np.all(st == st[0]) and st[0] > 0) for c, st in zip(coords, steps)):
        index = (slice(None), slice(None)) + tuple(
            slice(int(c[0]), int(c[-1]) + 1, int(st[0]) if len(st) else 1) for c, st in zip(coords, steps))
        return ctx.emit("Slice", [x], {"index": index})
    s = ctx.onnx_shape(x)
    index = positions(s)[np.ix_(np.arange(s[0]), np.arange(s[1]), *coords)]
    return emit_select(ctx, n, [x], index, None, index.shape, None)


@converts("MaxPool")
def _maxpool(ctx, n) -> None:
    """The max over each window as a pairwise tree of max(a, b) = a + relu(b - a) over one value
    per kernel offset (each window's element at that offset; _window_coords for the padding)."""
    if len(n.output) > 1 and n.output[1]:
        raise ctx.unsupported(n, "MaxPool with an Indices output")
    x = ctx.var(n.input[0])
    k, stride, dil, pads, outs = _maxpool_geometry(ctx, n, x)
    r = len(k)
    size = ctx.shape(x)[1:]
    per_axis = [_window_coords(ctx, n, size[i], k[i], stride[i], dil[i], pads[i], outs[i]) for i in range(r)]
    windows = [_window(ctx, n, x, [per_axis[i][j] for i, j in enumerate(offs)]) for offs in np.ndindex(*k)]
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
