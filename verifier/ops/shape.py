"""Operators that only move, copy or drop elements: all linear with non-negative 0/1 maps,
so |L| r = L r (apply_abs is the op itself on the radii, with zero fill)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from .registry import LinearRule, converts, rule


class _Moves(LinearRule):
    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        return None

    def apply_abs(self, node: Node, *rs: Tensor) -> Tensor:
        return self.apply(node, *rs)


@rule("Reshape")
class ReshapeRule(_Moves):
    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return x.reshape((x.shape[0],) + node.shape)

    def apply_t(self, node, A, in_shapes):
        return [A.reshape((A.shape[0],) + tuple(in_shapes[0]))]


@rule("Transpose")
class TransposeRule(_Moves):
    """params perm: a permutation of the batched tensor's axes with perm[0] == 0."""

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return x.permute(node.params["perm"])

    def apply_t(self, node, A, in_shapes):
        inv = [0] * len(node.params["perm"])
        for i, p in enumerate(node.params["perm"]):
            inv[p] = i
        return [A.permute(inv)]


@rule("Slice")
class SliceRule(_Moves):
    """params index: a tuple of python slices over the batched tensor (first is slice(None))."""

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return x[node.params["index"]]

    def apply_t(self, node, A, in_shapes):
        out = A.new_zeros((A.shape[0],) + tuple(in_shapes[0]))
        out[node.params["index"]] = A
        return [out]


@rule("Gather")
class GatherRule(_Moves):
    """params axis (batched axis), indices (1-D long tensor), out: the batched output shape
    tail (indices may be a scalar, dropping the axis)."""

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        y = x.index_select(node.params["axis"], node.params["indices"].to(x.device))
        return y.reshape((x.shape[0],) + node.shape)


@rule("Concat")
class ConcatRule(LinearRule):
    """params axis (batched axis), parts: per operand None (the next variable input) or a
    constant tensor without batch dim."""

    def _join(self, node: Node, xs, with_consts: bool) -> Tensor:
        xs = list(xs)
        like = xs[0]  # constant parts sit in a list that Graph.to does not move: follow the variables
        n = like.shape[0]
        pieces = []
        for part in node.params["parts"]:
            if part is None:
                pieces.append(xs.pop(0))
            else:
                c = part.to(like) if with_consts else like.new_zeros(part.shape)
                pieces.append(c.unsqueeze(0).expand((n,) + tuple(part.shape)))
        return torch.cat(pieces, dim=node.params["axis"])

    def evaluate(self, node: Node, *xs: Tensor) -> Tensor:
        return self._join(node, xs, True)

    def apply(self, node: Node, *xs: Tensor) -> Tensor:
        return self._join(node, xs, False)

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        if all(p is None for p in node.params["parts"]):
            return None
        return super().bias(node, like, in_shapes)

    def apply_abs(self, node: Node, *rs: Tensor) -> Tensor:
        return self._join(node, rs, False)

    def apply_t(self, node, A, in_shapes):
        sizes = []
        var_i = 0
        for part in node.params["parts"]:
            if part is None:
                sizes.append(in_shapes[var_i][node.params["axis"] - 1])
                var_i += 1
            else:
                sizes.append(part.shape[node.params["axis"] - 1])
        chunks = torch.split(A, sizes, dim=node.params["axis"])
        return [c for c, p in zip(chunks, node.params["parts"]) if p is None]


@rule("Pad")
class PadRule(LinearRule):
    """params pads: torch F.pad order (last axis first), mode: constant|reflect|replicate, value."""

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        p = node.params
        if p["mode"] == "constant":
            return F.pad(x, p["pads"], mode="constant", value=p["value"])
        return F.pad(x, p["pads"], mode=p["mode"])

    def apply(self, node: Node, x: Tensor) -> Tensor:
        p = node.params
        if p["mode"] == "constant":
            return F.pad(x, p["pads"], mode="constant", value=0.0)
        return F.pad(x, p["pads"], mode=p["mode"])

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        return self.apply(node, r)


# --------------------------------------------------------------------------- converters
@converts("Identity", "Dropout")
def _identity(ctx, n) -> None:
    ctx.alias(n.output[0], n.input[0])


@converts("Cast")
def _cast(ctx, n) -> None:
    to = ctx.attrs(n).get("to")
    if to not in (1, 10, 11, 16):  # float, float16, double, bfloat16
        raise ctx.unsupported(n, "Cast to a non-float type")
    ctx.alias(n.output[0], n.input[0])


def _reshape_to(ctx, n, x: str, onnx_out_shape) -> None:
    ctx.emit("Reshape", [x], {}, n.output[0], shape=ctx.ir_shape(onnx_out_shape, n))


@converts("Flatten")
def _flatten(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    axis = ctx.attrs(n).get("axis", 1)
    axis = axis + len(s) if axis < 0 else axis
    _reshape_to(ctx, n, x, (int(np.prod(s[:axis], dtype=np.int64)), int(np.prod(s[axis:], dtype=np.int64))))


@converts("Reshape")
def _reshape(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    target = [int(v) for v in ctx.const(n.input[1]).reshape(-1)] if len(n.input) > 1 else list(ctx.attrs(n)["shape"])
    allowzero = ctx.attrs(n).get("allowzero", 0)
    target = [s[i] if (v == 0 and not allowzero) else v for i, v in enumerate(target)]
    if -1 in target:
        known = int(np.prod([v for v in target if v != -1], dtype=np.int64))
        target[target.index(-1)] = int(np.prod(s, dtype=np.int64)) // max(known, 1)
    _reshape_to(ctx, n, x, target)


@converts("Squeeze", "Unsqueeze")
def _squeeze(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = list(ctx.onnx_shape(x))
    axes = ctx.attrs(n).get("axes")
    if axes is None and len(n.input) > 1 and n.input[1]:
        axes = [int(v) for v in ctx.const(n.input[1]).reshape(-1)]
    if n.op_type == "Squeeze":
        # without axes every unit axis goes, but the batch axis (offset 0) is the IR's to keep:
        # dropping a size-1 axis does not change the elements
        axes = [a + len(s) if a < 0 else a for a in (axes if axes is not None else
                                                     [i for i, d in enumerate(s) if d == 1 and i >= 1 - ctx.offset])]
        out = [d for i, d in enumerate(s) if i not in axes]
    else:
        rank = len(s) + len(axes)
        axes = sorted(a + rank if a < 0 else a for a in axes)
        out = list(s)
        for a in axes:
            out.insert(a, 1)
    _reshape_to(ctx, n, x, out)


@converts("Transpose")
def _transpose(ctx, n) -> None:
    x = ctx.var(n.input[0])
    rank = len(ctx.onnx_shape(x))
    perm = list(ctx.attrs(n).get("perm", list(range(rank))[::-1]))
    if ctx.offset == 0:
        if perm[0] != 0:
            raise ctx.unsupported(n, "Transpose that moves the batch axis")
        tperm = perm
    else:
        tperm = [0] + [p + 1 for p in perm]
    ctx.emit("Transpose", [x], {"perm": tuple(tperm)}, n.output[0])


@converts("Slice")
def _slice(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    a = ctx.attrs(n)
    if len(n.input) > 1:
        get = lambda i: [int(v) for v in ctx.const(n.input[i]).reshape(-1)] if len(n.input) > i and n.input[i] else None
        starts, ends, axes, steps = get(1), get(2), get(3), get(4)
    else:
        starts, ends, axes, steps = list(a["starts"]), list(a["ends"]), a.get("axes"), None
    axes = list(range(len(starts))) if axes is None else [v + len(s) if v < 0 else v for v in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * (len(s) + ctx.offset)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        if sp <= 0:
            raise ctx.unsupported(n, "Slice with a non-positive step")
        t = ax + ctx.offset
        if t == 0:
            if not (st <= 0 and en >= 1):
                raise ctx.unsupported(n, "Slice across the batch axis")
            continue
        dim = s[ax]
        st = max(0, min(dim, st + dim if st < 0 else st))
        en = max(0, min(dim, en + dim if en < 0 else en))
        index[t] = slice(st, en, sp)
    ctx.emit("Slice", [x], {"index": tuple(index)}, n.output[0])


@converts("Gather")
def _gather(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    axis = ctx.attrs(n).get("axis", 0)
    axis = axis + len(s) if axis < 0 else axis
    if axis + ctx.offset == 0:
        raise ctx.unsupported(n, "Gather over the batch axis")
    idx = np.asarray(ctx.const(n.input[1])).astype(np.int64)
    flat = np.where(idx.reshape(-1) < 0, idx.reshape(-1) + s[axis], idx.reshape(-1))
    out = list(s[:axis]) + list(idx.shape) + list(s[axis + 1:])
    ctx.emit("Gather", [x], {"axis": axis + ctx.offset, "indices": torch.as_tensor(flat)}, n.output[0],
             shape=ctx.ir_shape(out, n))


@converts("Concat")
def _concat(ctx, n) -> None:
    rank = None
    parts, inputs = [], []
    for name in n.input:
        if ctx.is_const(name):
            parts.append(name)
        else:
            v = ctx.var(name)
            rank = len(ctx.onnx_shape(v))
            parts.append(None)
            inputs.append(v)
    axis = ctx.attrs(n)["axis"]
    axis = axis + rank if axis < 0 else axis
    if axis + ctx.offset == 0:
        raise ctx.unsupported(n, "Concat over the batch axis")
    consts = []
    for p in parts:
        if p is None:
            consts.append(None)
        else:
            c = np.asarray(ctx.const(p), dtype=np.float64)
            consts.append(ctx.tensor(c[0] if ctx.offset == 0 else c))
    ctx.emit("Concat", inputs, {"axis": axis + ctx.offset, "parts": consts},
             n.output[0])


@converts("Pad")
def _pad(ctx, n) -> None:
    x = ctx.var(n.input[0])
    a = ctx.attrs(n)
    mode = a.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if len(n.input) > 1:
        pads = [int(v) for v in ctx.const(n.input[1]).reshape(-1)]
        value = float(np.asarray(ctx.const(n.input[2])).reshape(-1)[0]) if len(n.input) > 2 and n.input[2] else 0.0
        if len(n.input) > 3 and n.input[3]:
            raise ctx.unsupported(n, "Pad with explicit axes")
    else:
        pads, value = list(a["pads"]), float(a.get("value", 0.0))
    rank = len(pads) // 2
    begin, end = pads[:rank], pads[rank:]
    if ctx.offset == 0:
        if begin[0] or end[0]:
            raise ctx.unsupported(n, "Pad of the batch axis")
        begin, end = begin[1:], end[1:]
    if min(pads) < 0:
        raise ctx.unsupported(n, "Pad with negative pads")
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if torch_mode is None:
        raise ctx.unsupported(n, f"Pad mode {mode}")
    ctx.emit("Pad", [x], {"pads": ctx.torch_pads(begin, end), "mode": torch_mode, "value": value}, n.output[0])
