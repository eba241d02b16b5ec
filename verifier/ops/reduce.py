"""Reductions, n-ary sums and element selections.

Select is the one rule behind every operator that only copies elements (Expand, Tile, Where with a
constant condition, nearest-neighbour Resize, MaxPool's padded windows): an index map over the
flattened inputs, so the IR's batch axis never needs to be where the ONNX tensor has it.
ReduceSum / ReduceMean are one rule (a sum over axes, times a constant); Sum / Mean are chains of
the existing Add and Affine rules; Split is one Slice per output.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..ir import Node
from .registry import LinearRule, converts, rule
from .shape import _axis


# --------------------------------------------------------------------------- rules
@rule("Select")
class SelectRule(LinearRule):
    """y.flat[j] = z[index.flat[j]], z = every variable input flattened, concatenated, followed by
    the constant vector fill.  params index: long tensor of the output shape; fill: 1-D tensor
    or None; copies: the most outputs that read one variable element (at least 1).
    Each output copies one element, so L is 0/1 with one 1 per row: |L| = L."""

    def _pick(self, node: Node, xs, with_fill: bool) -> Tensor:
        n = xs[0].shape[0]
        parts = [x.reshape(n, -1) for x in xs]
        fill = node.params["fill"]
        if fill is not None:
            f = fill.to(parts[0]) if with_fill else parts[0].new_zeros(fill.shape)
            parts.append(f.unsqueeze(0).expand(n, -1))
        z = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        idx = node.params["index"].reshape(-1).to(z.device)
        return z.index_select(1, idx).reshape((n,) + node.shape)

    def evaluate(self, node: Node, *xs: Tensor) -> Tensor:
        return self._pick(node, xs, True)

    def apply(self, node: Node, *xs: Tensor) -> Tensor:
        return self._pick(node, xs, False)

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        return None if node.params["fill"] is None else super().bias(node, like, in_shapes)

    def apply_abs(self, node: Node, *rs: Tensor) -> Tensor:
        return self._pick(node, rs, False)

    def apply_t(self, node, A, in_shapes):
        n = A.shape[0]
        sizes = [_numel(s) for s in in_shapes]
        total = sum(sizes) + (0 if node.params["fill"] is None else node.params["fill"].numel())
        z = A.new_zeros((n, total))
        z.index_add_(1, node.params["index"].reshape(-1).to(A.device), A.reshape(n, -1))
        parts = torch.split(z[:, :sum(sizes)], sizes, dim=1)
        return [p.reshape((n,) + tuple(s)) for p, s in zip(parts, in_shapes)]

    def sum_terms(self, node, in_shapes):
        # evaluate copies (no sum); apply_t adds up the outputs that copy one input element
        return int(node.params["copies"])


@rule("ReduceSum")
class ReduceSumRule(LinearRule):
    """y = scale * (sum of x over the batched axes `axes`, all >= 1), keepdim as torch's.
    params axes, keepdim, scale: a python float or None (1/k for a mean of k elements)."""

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        return None

    def _sum(self, node: Node, x: Tensor, scale) -> Tensor:
        y = x.sum(dim=node.params["axes"], keepdim=node.params["keepdim"])
        return y if scale is None else y * scale

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return self._sum(node, x, node.params["scale"])

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        s = node.params["scale"]
        return self._sum(node, r, None if s is None else abs(s))

    def apply_t(self, node, A, in_shapes):
        target = (A.shape[0],) + tuple(in_shapes[0])
        kept = [1 if d in node.params["axes"] else target[d] for d in range(len(target))]
        g = A.reshape(kept).expand(target)
        return [g if node.params["scale"] is None else g * node.params["scale"]]

    def sum_terms(self, node, in_shapes):
        # k terms per output, then one product by the scale.  A float model (onnxruntime in float32)
        # forms the same sum in any order and divides by k, or multiplies by fl32(1/k): at most
        # k + 1 roundings, inside the gamma(n + 2 + DERIVED) that rounding.model_coef charges; the
        # IR's own 1/k (rounded to float64) is one of the DERIVED constants
        s = (1,) + tuple(in_shapes[0])
        return _numel([s[d] for d in node.params["axes"]]) + 1


def _numel(shape) -> int:
    return int(np.prod([int(d) for d in shape], dtype=np.int64))


# --------------------------------------------------------------------------- helpers
def emit_select(ctx, n, xs: list[str], index: np.ndarray, fill: np.ndarray | None, onnx_out,
                out: str | None) -> str:
    """A Select node reading the variables xs (IR names) and the constant vector fill, index
    giving each output element (ONNX shape onnx_out) a position in their concatenation."""
    index = np.array(index, dtype=np.int64).reshape(onnx_out)   # a copy: constants may be read-only views
    if index.size == 0:
        raise ctx.unsupported(n, f"an empty result of shape {list(onnx_out)}")
    n_var = sum(_numel(ctx.shape(x)) for x in xs)
    counts = np.bincount(index.reshape(-1), minlength=n_var)[:n_var]
    params = {"index": torch.as_tensor(index.reshape(ctx.ir_shape(onnx_out, n))),
              "fill": None if fill is None else ctx.tensor(np.asarray(fill).reshape(-1)),
              "copies": max(1, int(counts.max(initial=0)))}
    return ctx.emit("Select", xs, params, out, shape=ctx.ir_shape(onnx_out, n))


def positions(shape) -> np.ndarray:
    """Flat positions 0..numel-1 arranged in `shape` (row-major, like the IR's flattening)."""
    return np.arange(_numel(shape), dtype=np.int64).reshape(tuple(shape))


def _ints(ctx, name: str) -> list[int]:
    return [int(v) for v in np.asarray(ctx.const(name)).reshape(-1)]


def _optional(n, i: int) -> str | None:
    return n.input[i] if len(n.input) > i and n.input[i] else None


# --------------------------------------------------------------------------- ReduceSum, ReduceMean
def _reduce_axes(ctx, n, rank: int) -> list[int] | None:
    """The reduced ONNX axes, normalised; None for 'every axis'; [] for the identity
    (noop_with_empty_axes).  Attribute before ReduceSum-13 / ReduceMean-18, input after."""
    a = ctx.attrs(n)
    axes = a.get("axes")
    if axes is None and _optional(n, 1):
        axes = _ints(ctx, n.input[1])
    if not axes:
        return [] if a.get("noop_with_empty_axes", 0) else None
    axes = [_axis(ctx, n, int(v), rank) for v in axes]
    if len(set(axes)) != len(axes):
        raise ctx.unsupported(n, f"{n.op_type} with repeated axes {axes}")
    return sorted(axes)


def reduction(ctx, n):
    """(x, its ONNX shape, the reduced axes, keepdims, the ONNX output shape) of a Reduce* node,
    or None when it reduces nothing (then its output is bound to its input here)."""
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    axes = _reduce_axes(ctx, n, len(s))
    if axes == []:
        ctx.alias(n.output[0], n.input[0])
        return None
    axes = list(range(len(s))) if axes is None else axes
    keep = bool(ctx.attrs(n).get("keepdims", 1))
    out = [1 if i in axes else d for i, d in enumerate(s)] if keep else [d for i, d in enumerate(s) if i not in axes]
    return x, s, axes, keep, out


@converts("ReduceSum", "ReduceMean")
def _reduce(ctx, n) -> None:
    found = reduction(ctx, n)
    if found is None:
        return
    x, s, axes, keep, out = found
    k = _numel([s[i] for i in axes])
    scale = 1.0 / k if n.op_type == "ReduceMean" and k > 1 else None
    ir_axes = tuple(a + ctx.offset for a in axes if a + ctx.offset > 0)  # offset 0: ONNX axis 0 is the batch of 1
    drops_batch = ctx.offset == 0 and 0 in axes and not keep
    if drops_batch and not out:
        raise ctx.unsupported(n, f"{n.op_type} to a scalar")
    shape = tuple(out) if drops_batch else ctx.ir_shape(out, n)
    if not ir_axes:  # only the batch axis of 1: a reshape
        y = ctx.emit("Reshape", [x], {}, n.output[0], shape=shape)
    else:
        y = ctx.emit("ReduceSum", [x], {"axes": ir_axes, "keepdim": keep, "scale": scale}, n.output[0], shape=shape)
    if drops_batch:  # like Squeeze of the batch axis: only the network output may be such a value
        ctx.batchless[y] = tuple(out)


# --------------------------------------------------------------------------- Sum, Mean
def _const_sum(ctx, n, consts: list[str], out) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The constants' sum and the sum of their magnitudes, broadcast to the ONNX shape out."""
    if not consts:
        return None, None
    cs = [np.broadcast_to(np.asarray(ctx.const(c), dtype=np.float64), out) for c in consts]
    return sum(cs), sum(np.abs(c) for c in cs)


@converts("Sum", "Mean")
def _sum_mean(ctx, n) -> None:
    """x1 + ... + xk + (c1 + ... + cm), divided by k + m for Mean: a chain of Adds of the
    variables, then one Affine for the constants and the 1/(k + m) (with the constants' own
    magnitudes as bias terms: the model adds each c_i separately)."""
    names = [i for i in n.input if i]
    vs = [ctx.var(i) for i in names if not ctx.is_const(i)]
    consts = [i for i in names if ctx.is_const(i)]
    out = tuple(int(d) for d in np.broadcast_shapes(*[ctx.onnx_shape(v) for v in vs],
                                                     *[np.shape(ctx.const(c)) for c in consts]))
    ir_out = ctx.ir_shape(out, n)  # refuses a constant that broadcasts over the batch axis
    vs = [ctx.lift(n, v, len(out)) for v in vs]
    scale = 1.0 / len(names) if n.op_type == "Mean" and len(names) > 1 else None
    c, c_abs = _const_sum(ctx, n, consts, out)
    last = scale is None and c is None
    acc = vs[0]
    for i, v in enumerate(vs[1:]):
        acc = ctx.emit("Add", [acc, v], {}, n.output[0] if last and i == len(vs) - 2 else None)
    if last:
        if len(vs) == 1:
            ctx.bind(n.output[0], acc)
        return
    k = 1.0 if scale is None else scale
    params = {"scale": None if scale is None else ctx.tensor(np.array(scale)),
              "shift": None if c is None else ctx.tensor((c * k).reshape(ir_out))}
    if c is not None:
        params["bias_abs"] = ctx.tensor((c_abs * k).reshape(ir_out))
    ctx.emit("Affine", [acc], params, n.output[0])


# --------------------------------------------------------------------------- Split
def _split_sizes(ctx, n, dim: int) -> list[int]:
    a = ctx.attrs(n)
    k = len(n.output)
    if "split" in a:
        return [int(v) for v in a["split"]]
    if _optional(n, 1):
        return _ints(ctx, n.input[1])
    if "num_outputs" in a:  # opset 18: ceil(dim / num) each, the last one smaller
        part = -(-dim // int(a["num_outputs"]))
        return [min(part, dim - i * part) for i in range(int(a["num_outputs"]))]
    if dim % k:
        raise ctx.unsupported(n, f"Split of {dim} elements into {k} equal parts")
    return [dim // k] * k


@converts("Split")
def _split(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    axis = _axis(ctx, n, int(ctx.attrs(n).get("axis", 0)), len(s))
    sizes = _split_sizes(ctx, n, s[axis])
    if len(sizes) != len(n.output) or sum(sizes) != s[axis] or min(sizes) < 1:
        raise ctx.unsupported(n, f"Split of {s[axis]} elements into parts {sizes} for {len(n.output)} outputs")
    if axis + ctx.offset == 0:  # the batch axis of 1 can only be "split" into itself
        ctx.alias(n.output[0], n.input[0])
        return
    start = 0
    for out, k in zip(n.output, sizes):
        if out:
            index = [slice(None)] * (len(s) + ctx.offset)
            index[axis + ctx.offset] = slice(start, start + k)
            ctx.emit("Slice", [x], {"index": tuple(index)}, out)
        start += k


# --------------------------------------------------------------------------- Expand, Tile, Where
@converts("Expand")
def _expand(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = tuple(ctx.onnx_shape(x))
    out = tuple(int(d) for d in np.broadcast_shapes(s, tuple(_ints(ctx, n.input[1]))))
    if out == s:
        ctx.alias(n.output[0], n.input[0])
        return
    emit_select(ctx, n, [x], np.broadcast_to(positions(s), out), None, out, n.output[0])


@converts("Tile")
def _tile(ctx, n) -> None:
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    reps = _ints(ctx, n.input[1])
    if len(reps) != len(s) or min(reps) < 1:
        raise ctx.unsupported(n, f"Tile of a rank-{len(s)} tensor by repeats {reps}")
    index = np.tile(positions(s), reps)
    emit_select(ctx, n, [x], index, None, index.shape, n.output[0])


@converts("Where")
def _where(ctx, n) -> None:
    """Where with a constant condition: each output copies X's or Y's element (broadcast)."""
    c, X, Y = n.input
    if not ctx.is_const(c):
        raise ctx.unsupported(n, "Where with a condition computed from the network input")
    cond = np.asarray(ctx.const(c)).astype(bool)
    shapes = [ctx.onnx_shape(ctx.var(b)) if not ctx.is_const(b) else np.shape(ctx.const(b)) for b in (X, Y)]
    out = tuple(int(d) for d in np.broadcast_shapes(cond.shape, *shapes))
    xs: list[str] = []
    base: dict[str, int] = {}
    for b in (X, Y):
        if not ctx.is_const(b) and ctx.var(b) not in base:
            base[ctx.var(b)] = sum(_numel(ctx.shape(v)) for v in xs)
            xs.append(ctx.var(b))
    n_var = sum(_numel(ctx.shape(v)) for v in xs)
    picks, fills = [], []
    for b, s in zip((X, Y), shapes):
        if ctx.is_const(b):
            fills.append(np.broadcast_to(np.asarray(ctx.const(b), dtype=np.float64), out).reshape(-1))
            picks.append(n_var + (len(fills) - 1) * _numel(out) + positions(out))
        else:
            picks.append(base[ctx.var(b)] + np.broadcast_to(positions(s), out))
    index = np.where(np.broadcast_to(cond, out), picks[0], picks[1])
    emit_select(ctx, n, xs, index, np.concatenate(fills) if fills else None, out, n.output[0])


@converts("ConstantOfShape")
def _constant_of_shape(ctx, n) -> None:
    """Folded whenever its shape is a constant (every Shape of a variable is one); reached
    only for a shape computed from the network's values."""
    raise ctx.unsupported(n, "ConstantOfShape of a shape computed from the network input")
