"""Operators that only move, copy or drop elements: all linear with non-negative 0/1 maps,
so |L| r = L r (apply_abs is the op itself on the radii, with zero fill)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from ..onnx_proto import type_name
from .registry import LinearRule, converts, rule


class _Moves(LinearRule):
    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        return None

    def apply_abs(self, node: Node, *rs: Tensor) -> Tensor:
        return self.apply(node, *rs)

    def is_exact(self, node: Node) -> bool:
        return True

    def sum_terms(self, node: Node, in_shapes) -> int:
        # every output copies one input element and apply_t places each coefficient on a
        # distinct input element: no float sum at all (Gather with repeated indices differs)
        return 1


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

    def is_exact(self, node: Node) -> bool:
        idx = node.params["indices"].reshape(-1)
        return idx.unique().numel() == idx.numel()   # a repeated index makes apply_t add

    def sum_terms(self, node: Node, in_shapes) -> int:
        # apply_t adds up the coefficients of the outputs that copy one input element
        idx = node.params["indices"].reshape(-1).cpu()
        return max(1, int(torch.bincount(idx).max())) if idx.numel() else 1


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

    def is_exact(self, node: Node) -> bool:
        return True

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

    def is_exact(self, node: Node) -> bool:
        return node.params["mode"] == "constant"   # reflect / edge copy an element twice


# --------------------------------------------------------------------------- converters
@converts("Identity")
def _identity(ctx, n) -> None:
    ctx.alias(n.output[0], n.input[0])


@converts("Dropout")
def _dropout(ctx, n) -> None:
    """The identity in inference, which is what the model computes unless its training_mode
    input (opset 12+) is true; before opset 12 the runtime decides, and onnxruntime infers.
    The ratio only matters in training.  The optional mask output is then all true."""
    if len(n.input) > 2 and n.input[2]:
        if not ctx.is_const(n.input[2]):
            raise ctx.unsupported(n, "Dropout whose training_mode is computed from the network input")
        if bool(np.asarray(ctx.const(n.input[2])).reshape(-1)[0]):
            raise ctx.unsupported(n, "Dropout with training_mode=true (random)")
    ctx.alias(n.output[0], n.input[0])
    if len(n.output) > 1 and n.output[1]:
        ctx.consts[n.output[1]] = np.ones(ctx.onnx_shape(ctx.var(n.input[0])), dtype=bool)


# float, double.  The IR computes the real-valued function, as if every float32 operation were
# exact, so a cast between these two (rounding by at most 2^-24 relative, like each float32 op
# the model computes) is the identity.  float16 and bfloat16 (2^-11 and 2^-8 relative) are a
# quantisation that is part of the function; integers and bool are not ours to bound.
_IDENTITY_CASTS = (1, 11)


@converts("Cast")
def _cast(ctx, n) -> None:
    """To float32 / float64: the identity (an integer value, exact in both, becomes a float one,
    under a name of its own); to an integer type or bool: ops/compare.py's step rules."""
    from .compare import BOOL, INT_RANGES, emit_integer_cast

    to = ctx.attrs(n).get("to")
    if to in INT_RANGES or to == BOOL:
        emit_integer_cast(ctx, n, to)
    elif to not in _IDENTITY_CASTS:
        raise ctx.unsupported(n, f"Cast to {type_name(to)} (only casts to float32, float64, integer types "
                                 "and bool)")
    elif ctx.var(n.input[0]) in ctx.integer:
        x = ctx.var(n.input[0])
        ctx.emit("Reshape", [x], {}, n.output[0], shape=ctx.shape(x))
    else:
        ctx.alias(n.output[0], n.input[0])


def _reshape_to(ctx, n, x: str, onnx_out_shape) -> None:
    s = ctx.onnx_shape(x)
    size = int(np.prod(onnx_out_shape, dtype=np.int64))
    if size != int(np.prod(s, dtype=np.int64)) or min(onnx_out_shape, default=1) < 0:
        raise ctx.unsupported(n, f"{n.op_type} of {list(s)} to {list(onnx_out_shape)}")
    ctx.emit("Reshape", [x], {}, n.output[0], shape=ctx.ir_shape(onnx_out_shape, n))


def _axis(ctx, n, axis: int, rank: int, inclusive: bool = False) -> int:
    """axis in [-rank, rank) (or [-rank, rank] with inclusive) normalised to count from 0."""
    if not -rank <= axis < rank + int(inclusive):
        raise ctx.unsupported(n, f"axis {axis} for a rank-{rank} tensor")
    return axis + rank if axis < 0 else axis


@converts("Flatten")
def _flatten(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    axis = _axis(ctx, n, ctx.attrs(n).get("axis", 1), len(s), inclusive=True)
    _reshape_to(ctx, n, x, (int(np.prod(s[:axis], dtype=np.int64)), int(np.prod(s[axis:], dtype=np.int64))))


@converts("Reshape")
def _reshape(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    target = [int(v) for v in ctx.const(n.input[1]).reshape(-1)] if len(n.input) > 1 else list(ctx.attrs(n)["shape"])
    allowzero = ctx.attrs(n).get("allowzero", 0)
    if not allowzero and any(v == 0 and i >= len(s) for i, v in enumerate(target)):
        raise ctx.unsupported(n, f"Reshape target {target}: a 0 beyond the input's rank")
    target = [s[i] if (v == 0 and not allowzero) else v for i, v in enumerate(target)]
    if target.count(-1) > 1:
        raise ctx.unsupported(n, f"Reshape target {target} with more than one -1")
    if -1 in target:
        known = int(np.prod([v for v in target if v != -1], dtype=np.int64))
        total = int(np.prod(s, dtype=np.int64))
        if known <= 0 or total % known:
            raise ctx.unsupported(n, f"Reshape of {list(s)} to {target}")
        target[target.index(-1)] = total // known
    _reshape_to(ctx, n, x, target)


def _axes_operand(ctx, n) -> list[int] | None:
    """Squeeze / Unsqueeze axes: an attribute before opset 13, an input from 13 on."""
    axes = ctx.attrs(n).get("axes")
    if axes is None and len(n.input) > 1 and n.input[1]:
        axes = [int(v) for v in ctx.const(n.input[1]).reshape(-1)]
    return None if axes is None else [int(a) for a in axes]


@converts("Squeeze")
def _squeeze(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = list(ctx.onnx_shape(x))
    axes = _axes_operand(ctx, n)
    axes = [i for i, d in enumerate(s) if d == 1] if axes is None else [_axis(ctx, n, a, len(s)) for a in axes]
    if len(set(axes)) != len(axes) or any(s[a] != 1 for a in axes):
        raise ctx.unsupported(n, f"Squeeze of axes {axes} of a {s} tensor")
    out = [d for i, d in enumerate(s) if i not in axes]
    if not out:
        raise ctx.unsupported(n, "Squeeze to a scalar")
    if ctx.offset == 0 and 0 in axes:
        # the ONNX result has no batch axis: the IR keeps its elements (in the same order) and
        # records the true shape; only the network output may be such a value
        y = ctx.emit("Reshape", [x], {}, n.output[0], shape=tuple(out))
        ctx.batchless[y] = tuple(out)
        return
    _reshape_to(ctx, n, x, out)


@converts("Unsqueeze")
def _unsqueeze(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = list(ctx.onnx_shape(x))
    axes = _axes_operand(ctx, n)
    if not axes:
        raise ctx.unsupported(n, "Unsqueeze without axes")
    rank = len(s) + len(axes)
    axes = sorted(_axis(ctx, n, a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise ctx.unsupported(n, f"Unsqueeze with repeated axes {axes}")
    out = list(s)
    for a in axes:
        out.insert(a, 1)
    _reshape_to(ctx, n, x, out)


@converts("Transpose")
def _transpose(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    perm = [int(p) for p in ctx.attrs(n).get("perm", list(range(len(s)))[::-1])]
    if sorted(perm) != list(range(len(s))):
        raise ctx.unsupported(n, f"Transpose perm {perm} of a rank-{len(s)} tensor")
    if ctx.offset == 1:
        tperm = [0] + [p + 1 for p in perm]
    elif s[perm[0]] != 1:
        _transpose_batch_away(ctx, n, x, s, perm)
        return
    else:
        # output axis 0 is a unit axis (the IR's batch axis stands for it); the ONNX batch axis,
        # also of size 1, goes to where perm puts it, and may be taken as input axis perm[0]
        tperm = [0] + [perm[0] if p == 0 else p for p in perm[1:]]
    ctx.emit("Transpose", [x], {"perm": tuple(tperm)}, n.output[0])


def _transpose_batch_away(ctx, n, x: str, s, perm) -> None:
    """A Transpose whose result starts with an axis longer than 1 (offset 0): the IR's batch axis
    cannot stand for it, so, like a Squeeze of the batch axis, the result keeps its elements in
    ONNX order with its true shape, and only the network output may be such a value (a later
    operation on it is refused).  The unit batch axis is first made an ordinary axis."""
    full = ctx.emit("Reshape", [x], {}, shape=tuple(s))
    out = tuple(s[p] for p in perm)
    y = ctx.emit("Transpose", [full], {"perm": (0,) + tuple(p + 1 for p in perm)}, n.output[0], shape=out)
    ctx.batchless[y] = out


def _slice_operands(ctx, n, rank: int):
    """starts, ends, axes, steps: attributes before opset 10, inputs from 10 on."""
    a = ctx.attrs(n)
    if len(n.input) > 1:
        get = lambda i: [int(v) for v in ctx.const(n.input[i]).reshape(-1)] if len(n.input) > i and n.input[i] else None
        starts, ends, axes, steps = get(1), get(2), get(3), get(4)
    else:
        starts, ends, axes, steps = list(a["starts"]), list(a["ends"]), a.get("axes"), None
    axes = list(range(len(starts))) if axes is None else [_axis(ctx, n, v, rank) for v in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps) or len(set(axes)) != len(axes) or 0 in steps:
        raise ctx.unsupported(n, f"Slice with starts {starts}, ends {ends}, axes {axes}, steps {steps}")
    return starts, ends, axes, steps


def slice_positions(start: int, end: int, step: int, dim: int) -> range:
    """The indices ONNX's Slice takes along one axis: negative start/end count from the end, then
    both are clamped, to [0, dim] for positive steps and to [0, dim-1] / [-1, dim-1] for negative."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), dim), min(max(end, 0), dim), step)
    return range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step)


@converts("Slice")
def _slice(ctx, n) -> None:
    """Positive steps: one strided slice; a negative step on an axis: a Gather of its indices."""
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    index = [slice(None)] * (len(s) + ctx.offset)
    gathers = []
    for st, en, ax, sp in zip(*_slice_operands(ctx, n, len(s))):
        pos = slice_positions(st, en, sp, s[ax])
        if not pos:
            raise ctx.unsupported(n, f"Slice with an empty result on axis {ax}")
        if ax + ctx.offset == 0:
            if list(pos) != [0]:
                raise ctx.unsupported(n, "Slice that empties the batch axis")
        elif sp > 0:
            index[ax + ctx.offset] = slice(pos.start, max(pos.start, pos.stop), sp)
        else:
            gathers.append((ax, list(pos)))
    if gathers:
        x = ctx.emit("Slice", [x], {"index": tuple(index)})
        for i, (ax, pos) in enumerate(gathers):
            shape = list(ctx.onnx_shape(x))
            shape[ax] = len(pos)
            x = ctx.emit("Gather", [x], {"axis": ax + ctx.offset, "indices": torch.as_tensor(pos, dtype=torch.long)},
                         n.output[0] if i == len(gathers) - 1 else None, shape=ctx.ir_shape(shape, n))
        return
    ctx.emit("Slice", [x], {"index": tuple(index)}, n.output[0])


@converts("Gather")
def _gather(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    axis = _axis(ctx, n, ctx.attrs(n).get("axis", 0), len(s))
    if axis + ctx.offset == 0:
        raise ctx.unsupported(n, "Gather over the batch axis")
    idx = np.asarray(ctx.const(n.input[1]))
    if idx.dtype.kind not in "iu":
        raise ctx.unsupported(n, f"Gather with {idx.dtype} indices")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -s[axis] or idx.max() >= s[axis]):
        raise ctx.unsupported(n, f"Gather indices outside [-{s[axis]}, {s[axis] - 1}]")
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
    axis = _axis(ctx, n, ctx.attrs(n)["axis"], rank)
    if axis + ctx.offset == 0:
        raise ctx.unsupported(n, "Concat over the batch axis")
    consts = []
    for p in parts:
        if p is None:
            consts.append(None)
            continue
        c = np.asarray(ctx.const(p), dtype=np.float64)
        if c.ndim != rank:
            raise ctx.unsupported(n, f"Concat of a rank-{c.ndim} constant with rank-{rank} values")
        consts.append(ctx.tensor(c[0] if ctx.offset == 0 else c))
    ctx.emit("Concat", inputs, {"axis": axis + ctx.offset, "parts": consts},
             n.output[0])


def _pad_operands(ctx, n, rank: int) -> tuple[list[int], float]:
    """pads as (begin x rank, end x rank) over every axis, and the constant value: attributes
    before opset 11, inputs from 11 on (and an axes input from 18 on)."""
    a = ctx.attrs(n)
    if len(n.input) == 1:
        return [int(v) for v in a["pads"]], float(a.get("value", 0.0))
    pads = [int(v) for v in ctx.const(n.input[1]).reshape(-1)]
    value = float(np.asarray(ctx.const(n.input[2])).reshape(-1)[0]) if len(n.input) > 2 and n.input[2] else 0.0
    if len(n.input) > 3 and n.input[3]:
        axes = [_axis(ctx, n, int(v), rank) for v in ctx.const(n.input[3]).reshape(-1)]
        if len(set(axes)) != len(axes) or len(pads) != 2 * len(axes):
            raise ctx.unsupported(n, f"Pad with axes {axes} and pads {pads}")
        full = [0] * (2 * rank)
        for i, ax in enumerate(axes):
            full[ax], full[rank + ax] = pads[i], pads[len(axes) + i]
        pads = full
    return pads, value


@converts("Pad")
def _pad(ctx, n) -> None:
    """Negative pads crop (a Slice first); the remaining pads become one IR Pad over the axes
    that have any (torch pads at most the last three axes in its non-constant modes)."""
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    rank = len(s)
    mode = ctx.attrs(n).get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise ctx.unsupported(n, f"Pad mode {mode}")
    pads, value = _pad_operands(ctx, n, rank)
    if len(pads) != 2 * rank:
        raise ctx.unsupported(n, f"Pad with {len(pads)} pads for a rank-{rank} tensor")
    begin, end = pads[:rank], pads[rank:]
    if ctx.offset == 0 and (begin[0] or end[0]):
        raise ctx.unsupported(n, "Pad of the batch axis")
    if min(pads) < 0:
        if torch_mode != "constant":
            raise ctx.unsupported(n, f"Pad mode {mode} with negative pads")
        index = [slice(None)] * (rank + ctx.offset)
        for ax in range(1 - ctx.offset, rank):  # (offset 0: ONNX axis 0 is the IR's batch axis, unpadded)
            index[ax + ctx.offset] = slice(max(0, -begin[ax]), s[ax] - max(0, -end[ax]))
        x = ctx.emit("Slice", [x], {"index": tuple(index)})
        begin, end = [max(0, v) for v in begin], [max(0, v) for v in end]
    first = next((ax for ax in range(rank) if begin[ax] or end[ax]), rank)
    if first == rank:
        ctx.bind(n.output[0], x)
        return
    if torch_mode != "constant" and rank - first > 3:
        raise ctx.unsupported(n, f"Pad mode {mode} on more than the last three axes")
    ctx.emit("Pad", [x], {"pads": ctx.torch_pads(begin[first:], end[first:]), "mode": torch_mode, "value": value},
             n.output[0])
