"""Affine operators: dense (Gemm/MatMul), convolution, elementwise affine, variable sums."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from .registry import LinearRule, converts, rule


# --------------------------------------------------------------------------- dense
@rule("MatMul")
class MatMulRule(LinearRule):
    """y = x @ W + b on the last axis (params W: (k, n), b: (n,) or None)."""

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        y = x @ node.params["W"]
        return y if node.params["b"] is None else y + node.params["b"]

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        b = node.params["b"]
        return None if b is None else b.expand(node.shape)

    def apply(self, node: Node, x: Tensor) -> Tensor:
        return x @ node.params["W"]

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        return r @ node.params["W"].abs()

    def apply_t(self, node, A, in_shapes):
        return [A @ node.params["W"].T]

    def sum_terms(self, node, in_shapes):
        k, n = node.params["W"].shape  # k products per output (+ the bias), n per input in apply_t
        return max(k, n) + 1


@converts("Gemm")
def _gemm(ctx, n) -> None:
    """Y = alpha * A' @ B' + beta * C with A the variable (rank 2), B a constant."""
    a = ctx.attrs(n)
    if not ctx.is_const(n.input[1]):
        raise ctx.unsupported(n, "Gemm with a variable B (only a constant weight)")
    x = ctx.var(n.input[0])
    if len(ctx.onnx_shape(x)) != 2:
        raise ctx.unsupported(n, f"Gemm of an A of rank {len(ctx.onnx_shape(x))} (the operator's A is rank 2)")
    if a.get("transA", 0):
        if ctx.offset == 0:  # A' = (K, 1): the batch axis would become the reduced axis
            raise ctx.unsupported(n, "Gemm with transA=1 on an A whose first axis is the batch axis")
        x = ctx.emit("Transpose", [x], {"perm": (0, 2, 1)})
    W = np.asarray(ctx.const(n.input[1]), dtype=np.float64)
    W = (W.T if a.get("transB", 0) else W) * a.get("alpha", 1.0)
    if W.ndim != 2 or W.shape[0] != ctx.shape(x)[-1]:
        raise ctx.unsupported(n, f"Gemm of A {list(ctx.onnx_shape(x))} with B {list(W.shape)}")
    C = None
    if len(n.input) > 2 and n.input[2]:
        C = np.asarray(ctx.const(n.input[2]), dtype=np.float64) * a.get("beta", 1.0)
    # a bias that is one value per output column folds into the dense node; one that varies by
    # row ((M, 1) or (M, N), M > 1: only without a batch axis) stays a broadcast shift
    column = C is not None and (C.size == 1 or C.size == W.shape[1] and C.shape[-1] == W.shape[1])
    b = np.broadcast_to(C.reshape(-1), (W.shape[1],)).copy() if column else None
    out = n.output[0] if C is None or column else None
    y = ctx.emit("MatMul", [x], {"W": ctx.tensor(W), "b": None if b is None else ctx.tensor(b)}, out)
    if C is not None and not column:
        if C.ndim > 2 or ctx.offset == 0:
            raise ctx.unsupported(n, f"Gemm bias C of shape {list(C.shape)}")
        _affine(ctx, y, None, C, n.output[0])


def _rank1_weight(ctx, n, x: str, W: np.ndarray, left: bool) -> None:
    """x @ w or w @ x with w a vector: a matrix product with w as a column (row), then the unit
    axis that numpy's matmul drops is dropped."""
    s = ctx.onnx_shape(x)
    out = (s[:-2] + s[-1:] if len(s) >= 2 else ()) if left else s[:-1]
    if len(out) < 1 + (1 - ctx.offset):
        raise ctx.unsupported(n, "MatMul whose result has no axis left beside the batch axis")
    if left:
        y = ctx.emit("MatMulLeft", [x], {"W": ctx.tensor(W.reshape(1, -1))})
    else:
        y = ctx.emit("MatMul", [x], {"W": ctx.tensor(W.reshape(-1, 1)), "b": None})
    ctx.emit("Reshape", [y], {}, n.output[0], shape=ctx.ir_shape(out, n))


def _matmul_weight(ctx, n, name: str, x: str) -> tuple[np.ndarray, str]:
    """The constant operand as a matrix or vector, and x.  A constant of rank > 2 whose leading
    axes are all 1 is numpy broadcasting only, but it raises the result's rank: x is lifted."""
    W = np.asarray(ctx.const(name), dtype=np.float64)
    if W.ndim > 2:
        if any(d != 1 for d in W.shape[:-2]) or len(ctx.onnx_shape(x)) == 1:
            raise ctx.unsupported(n, f"MatMul of {list(ctx.onnx_shape(x))} with a batched constant "
                                     f"of shape {list(W.shape)}")
        x = ctx.lift(n, x, W.ndim)
        W = W.reshape(W.shape[-2:])
    return W, x


@converts("MatMul")
def _matmul(ctx, n) -> None:
    a, b = n.input
    if not ctx.is_const(a) and not ctx.is_const(b):
        from .bilinear import matmul_of_variables

        matmul_of_variables(ctx, n)
        return
    left = ctx.is_const(a)
    W, x = _matmul_weight(ctx, n, a, ctx.var(b)) if left else _matmul_weight(ctx, n, b, ctx.var(a))
    xr = len(ctx.onnx_shape(x))
    if ctx.offset == 0 and xr < (3 if left else 2):
        # x = (1, K) or (1,): its only (or row) axis is the batch axis, which W would mix
        raise ctx.unsupported(n, f"MatMul that contracts or mixes the batch axis of {list(ctx.onnx_shape(x))}")
    if W.ndim == 1:
        _rank1_weight(ctx, n, x, W, left)
    elif not left:
        ctx.emit("MatMul", [x], {"W": ctx.tensor(W), "b": None}, n.output[0])
    elif xr == 1:  # matrix-vector product W @ x == x @ W.T
        ctx.emit("MatMul", [x], {"W": ctx.tensor(W.T), "b": None}, n.output[0])
    else:
        ctx.emit("MatMulLeft", [x], {"W": ctx.tensor(W)}, n.output[0])


@rule("MatMulLeft")
class MatMulLeftRule(LinearRule):
    """y = W @ x over the last two axes of x (params W: (n, k))."""

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        return None

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return node.params["W"] @ x

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        return node.params["W"].abs() @ r

    def apply_t(self, node, A, in_shapes):
        return [node.params["W"].T @ A]


# --------------------------------------------------------------------------- convolution
def _conv_fn(rank: int):
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]


@rule("Conv")
class ConvRule(LinearRule):
    """Convolution with symmetric zero padding (asymmetric pads become a Pad node first).
    params: W (C_out, C_in/g, *k), b (C_out,) or None, stride, padding, dilation, groups."""

    def _conv(self, node: Node, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        p = node.params
        return _conv_fn(W.dim() - 2)(x, W, b, p["stride"], p["padding"], p["dilation"], p["groups"])

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return self._conv(node, x, node.params["W"], node.params["b"])

    def apply(self, node: Node, x: Tensor) -> Tensor:
        return self._conv(node, x, node.params["W"], None)

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        b = node.params["b"]
        if b is None:
            return None
        return b.reshape((-1,) + (1,) * (len(node.shape) - 1)).expand(node.shape)

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        return self._conv(node, r, node.params["W"].abs(), None)

    def sum_terms(self, node, in_shapes):
        W = node.params["W"]  # an output sums C_in/g * k products, an input (transpose) at most C_out * k
        return max(W.shape[0], W.shape[1]) * int(torch.tensor(W.shape[2:]).prod()) + 1

    def apply_t(self, node, A, in_shapes):
        p, W = node.params, node.params["W"]
        if W.dim() != 4:
            return super().apply_t(node, A, in_shapes)
        size = (A.shape[0],) + tuple(in_shapes[0])
        return [torch.nn.grad.conv2d_input(size, W, A, p["stride"], p["padding"], p["dilation"], p["groups"])]


def _same_pads(in_size, k, s, d, upper: bool):
    out = -(-in_size // s)
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - in_size)
    small = total // 2
    return (total - small, small)[::-1] if upper else (total - small, small)


def _auto_pad(ctx, n, a: dict) -> str:
    auto = a.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise ctx.unsupported(n, f"auto_pad={auto}")
    return auto


def window_pads(ctx, n, spatial, k, stride, dil) -> list[int]:
    """The pads attribute (begin..., end...) with auto_pad resolved, as the ONNX spec computes it:
    SAME_* pads so that out = ceil(in / stride), the odd cell at the end (UPPER) or begin (LOWER)."""
    a = ctx.attrs(n)
    rank = len(k)
    auto = _auto_pad(ctx, n, a)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pp = [_same_pads(spatial[i], k[i], stride[i], dil[i], auto == "SAME_UPPER") for i in range(rank)]
        return [p[0] for p in pp] + [p[1] for p in pp]
    if auto == "VALID":
        return [0] * (2 * rank)
    pads = [int(p) for p in a.get("pads", [0] * (2 * rank))]
    if len(pads) != 2 * rank or min(pads) < 0:
        raise ctx.unsupported(n, f"pads {pads} for a {rank}-D window")
    return pads


@converts("Conv")
def _conv(ctx, n) -> None:
    a = ctx.attrs(n)
    x = ctx.var(n.input[0])
    ctx.needs_batch_axis(n, x)
    W = np.asarray(ctx.const(n.input[1]), dtype=np.float64)
    b = np.asarray(ctx.const(n.input[2]), dtype=np.float64) if len(n.input) > 2 and n.input[2] else None
    rank = W.ndim - 2
    k = list(W.shape[2:])
    if rank not in (1, 2, 3) or len(ctx.shape(x)) != rank + 1:
        raise ctx.unsupported(n, f"Conv of a {list(ctx.onnx_shape(x))} input with a {list(W.shape)} kernel")
    if list(a.get("kernel_shape", k)) != k:
        raise ctx.unsupported(n, f"kernel_shape {list(a['kernel_shape'])} unlike the weight's {k}")
    stride = [int(v) for v in a.get("strides", [1] * rank)]
    dil = [int(v) for v in a.get("dilations", [1] * rank)]
    if _auto_pad(ctx, n, a).startswith("SAME") and any(d != 1 for d in dil):
        raise ctx.unsupported(n, "Conv with auto_pad SAME and dilations (onnxruntime does not run it)")
    pads = window_pads(ctx, n, ctx.shape(x)[1:], k, stride, dil)
    begin, end = pads[:rank], pads[rank:]
    if begin != end:
        x = ctx.emit("Pad", [x], {"pads": ctx.torch_pads(begin, end), "mode": "constant", "value": 0.0})
        begin = [0] * rank
    params = {"W": ctx.tensor(W), "b": None if b is None else ctx.tensor(b), "stride": tuple(stride),
              "padding": tuple(begin), "dilation": tuple(dil), "groups": int(a.get("group", 1))}
    ctx.emit("Conv", [x], params, n.output[0])


# --------------------------------------------------------------------------- elementwise affine
@rule("Affine")
class AffineRule(LinearRule):
    """y = x * scale + shift with broadcastable constants (scale / shift may be None)."""

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        p = node.params
        y = x if p["scale"] is None else x * p["scale"]
        return y if p["shift"] is None else y + p["shift"]

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        s = node.params["shift"]
        return None if s is None else torch.broadcast_to(s, (1,) + node.shape)[0]

    def apply(self, node: Node, x: Tensor) -> Tensor:
        s = node.params["scale"]
        y = x if s is None else x * s
        return y.expand((x.shape[0],) + node.shape) if y.shape[1:] != node.shape else y

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        s = node.params["scale"]
        y = r if s is None else r * s.abs()
        return y.expand((r.shape[0],) + node.shape) if y.shape[1:] != node.shape else y

    def apply_t(self, node, A, in_shapes):
        s = node.params["scale"]
        g = A if s is None else A * s
        target = (A.shape[0],) + tuple(in_shapes[0])
        return [g if tuple(g.shape) == target else g.sum_to_size(target)]


@rule("Add")
class AddRule(LinearRule):
    """y = a + b of two variable values (numpy broadcasting)."""

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        return None

    def evaluate(self, node: Node, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def apply_abs(self, node: Node, ra: Tensor, rb: Tensor) -> Tensor:
        return ra + rb

    def apply_t(self, node, A, in_shapes):
        out = []
        for s in in_shapes:
            target = (A.shape[0],) + tuple(s)
            out.append(A if tuple(A.shape) == target else A.sum_to_size(target))
        return out


def _affine(ctx, x: str, scale, shift, out: str | None, shift_terms=None) -> str:
    """shift_terms: magnitudes of the terms the model adds up to the shift, when that is not
    |shift| itself (LinearRule.bias_magnitude)."""
    params = {"scale": None if scale is None else ctx.tensor(scale),
              "shift": None if shift is None else ctx.tensor(shift)}
    if shift_terms is not None:
        params["bias_abs"] = ctx.tensor(shift_terms)
    return ctx.emit("Affine", [x], params, out)


def _as_array(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


@converts("Add", "Sub")
def _add_sub(ctx, n) -> None:
    a, b = n.input
    sign = -1.0 if n.op_type == "Sub" else 1.0
    if not ctx.is_const(a) and not ctx.is_const(b):
        rank = max(len(ctx.onnx_shape(ctx.var(a))), len(ctx.onnx_shape(ctx.var(b))))
        va, vb = ctx.lift(n, ctx.var(a), rank), ctx.lift(n, ctx.var(b), rank)
        rb = vb if sign > 0 else _affine(ctx, vb, np.array(-1.0), None, None)
        ctx.emit("Add", [va, rb], {}, n.output[0])
    elif ctx.is_const(b):
        x, c = ctx.broadcast_const(n, ctx.var(a), b)
        _affine(ctx, x, None, sign * c, n.output[0])
    else:  # constant on the left: c + x or c - x
        x, c = ctx.broadcast_const(n, ctx.var(b), a)
        _affine(ctx, x, None if sign > 0 else np.array(-1.0), c, n.output[0])


def _by_constant(ctx, n) -> None:
    """Mul or Div of a variable by a constant (the Mul and Div converter of ops/bilinear.py
    sends these here): an affine map."""
    a, b = n.input
    if ctx.is_const(a) and not ctx.is_const(b) and n.op_type == "Mul":
        a, b = b, a
    x, c = ctx.broadcast_const(n, ctx.var(a), b)
    if n.op_type == "Div" and not np.all(c != 0):
        raise ctx.unsupported(n, "Div by a constant with zero entries")
    _affine(ctx, x, 1.0 / c if n.op_type == "Div" else c, None, n.output[0])


@converts("Neg")
def _neg(ctx, n) -> None:
    _affine(ctx, ctx.var(n.input[0]), np.array(-1.0), None, n.output[0])


@converts("BatchNormalization")
def _batchnorm(ctx, n) -> None:
    """Inference form: y = (x - mean) / sqrt(var + epsilon) * scale + B on the channel axis 1 of
    the ONNX tensor (N, C, D1, ...), wherever the IR's batch axis is."""
    a = ctx.attrs(n)
    if a.get("training_mode", 0):
        raise ctx.unsupported(n, "BatchNormalization with training_mode=1 (statistics of the batch)")
    if not a.get("spatial", 1):
        raise ctx.unsupported(n, "BatchNormalization with spatial=0")
    if len([o for o in n.output if o]) > 1:
        raise ctx.unsupported(n, "BatchNormalization with its training outputs (running mean / variance)")
    x = ctx.var(n.input[0])
    rank = len(ctx.onnx_shape(x))
    if rank < 2:
        raise ctx.unsupported(n, f"BatchNormalization of a rank-{rank} input (no channel axis)")
    c = ctx.onnx_shape(x)[1]
    gamma, beta, mean, var = (_as_array(ctx.const(i)) for i in n.input[1:5])
    shapes = [list(v.shape) for v in (gamma, beta, mean, var)]
    if any(s != [c] for s in shapes):
        raise ctx.unsupported(n, f"BatchNormalization parameters of shapes {shapes} for {c} channels")
    scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
    shift = beta - mean * scale
    # (C, 1, ..., 1) broadcasts, from the right, onto axis 1 of the ONNX tensor
    tail = (1,) * (rank - 2)
    # the model forms beta - mean * scale from terms that may be far larger than the result
    terms = np.abs(beta) + np.abs(mean * scale)
    _affine(ctx, x, scale.reshape((-1,) + tail), shift.reshape((-1,) + tail), n.output[0],
            terms.reshape((-1,) + tail))
