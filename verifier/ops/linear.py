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


@converts("Gemm")
def _gemm(ctx, n) -> None:
    a = ctx.attrs(n)
    if a.get("transA", 0):
        raise ctx.unsupported(n, "Gemm with transA=1")
    x = ctx.var(n.input[0])
    W = ctx.const(n.input[1]) if True else None
    if W is None:
        raise ctx.unsupported(n, "Gemm with a variable weight")
    W = W.T if a.get("transB", 0) else W
    W = np.asarray(W, dtype=np.float64) * a.get("alpha", 1.0)
    b = None
    if len(n.input) > 2 and n.input[2]:
        b = np.asarray(ctx.const(n.input[2]), dtype=np.float64) * a.get("beta", 1.0)
        # a scalar, (n,) or (1, n) bias is one value per output column; (M, 1) or (M, n) would vary by row
        if not (b.size == 1 or (b.ndim >= 1 and b.shape[-1] == W.shape[1] and b.size == W.shape[1])):
            raise ctx.unsupported(n, f"Gemm bias of shape {list(b.shape)}")
        b = np.broadcast_to(b.reshape(-1), (W.shape[1],)).copy()
    ctx.emit("MatMul", [x], {"W": ctx.tensor(W), "b": None if b is None else ctx.tensor(b)}, n.output[0])


@converts("MatMul")
def _matmul(ctx, n) -> None:
    a, b = n.input
    if ctx.is_const(b) and not ctx.is_const(a):
        W = np.asarray(ctx.const(b), dtype=np.float64)
        if W.ndim != 2:
            raise ctx.unsupported(n, "MatMul with a weight of rank != 2")
        ctx.emit("MatMul", [ctx.var(a)], {"W": ctx.tensor(W), "b": None}, n.output[0])
    elif ctx.is_const(a) and not ctx.is_const(b):
        W = np.asarray(ctx.const(a), dtype=np.float64)
        if W.ndim != 2:
            raise ctx.unsupported(n, "MatMul with a weight of rank != 2")
        if len(ctx.onnx_shape(ctx.var(b))) == 1:  # matrix-vector product W @ x == x @ W.T
            ctx.emit("MatMul", [ctx.var(b)], {"W": ctx.tensor(W.T), "b": None}, n.output[0])
            return
        ctx.emit("MatMulLeft", [ctx.var(b)], {"W": ctx.tensor(W)}, n.output[0])
    else:
        raise ctx.unsupported(n, "MatMul of two variables")


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


@converts("Conv")
def _conv(ctx, n) -> None:
    a = ctx.attrs(n)
    x = ctx.var(n.input[0])
    W = np.asarray(ctx.const(n.input[1]), dtype=np.float64)
    b = np.asarray(ctx.const(n.input[2]), dtype=np.float64) if len(n.input) > 2 and n.input[2] else None
    rank = W.ndim - 2
    k = list(W.shape[2:])
    stride = list(a.get("strides", [1] * rank))
    dil = list(a.get("dilations", [1] * rank))
    pads = list(a.get("pads", [0] * (2 * rank)))
    auto = a.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        spatial = ctx.shape(x)[1:]
        pp = [_same_pads(spatial[i], k[i], stride[i], dil[i], auto == "SAME_UPPER") for i in range(rank)]
        pads = [p[0] for p in pp] + [p[1] for p in pp]
    elif auto == "VALID":
        pads = [0] * (2 * rank)
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


def _affine(ctx, x: str, scale, shift, out: str | None) -> str:
    return ctx.emit("Affine", [x], {"scale": None if scale is None else ctx.tensor(scale),
                                    "shift": None if shift is None else ctx.tensor(shift)}, out)


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


@converts("Mul", "Div")
def _mul_div(ctx, n) -> None:
    a, b = n.input
    if ctx.is_const(a) and not ctx.is_const(b) and n.op_type == "Mul":
        a, b = b, a
    if not ctx.is_const(b) or ctx.is_const(a):
        raise ctx.unsupported(n, f"{n.op_type} of two variables (only multiplication by constants)")
    x, c = ctx.broadcast_const(n, ctx.var(a), b)
    _affine(ctx, x, 1.0 / c if n.op_type == "Div" else c, None, n.output[0])


@converts("Neg")
def _neg(ctx, n) -> None:
    _affine(ctx, ctx.var(n.input[0]), np.array(-1.0), None, n.output[0])


@converts("BatchNormalization")
def _batchnorm(ctx, n) -> None:
    a = ctx.attrs(n)
    x = ctx.var(n.input[0])
    gamma, beta, mean, var = (_as_array(ctx.const(i)) for i in n.input[1:5])
    scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
    shift = beta - mean * scale
    tail = (1,) * (len(ctx.shape(x)) - 1)
    _affine(ctx, x, scale.reshape((-1,) + tail), shift.reshape((-1,) + tail), n.output[0])
