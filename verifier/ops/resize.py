"""Upsampling: nearest-neighbour Resize / Upsample (a Select of input elements) and ConvTranspose
(the adjoint of a convolution, which makes its transpose map a plain convolution)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from .linear import _auto_pad
from .reduce import _ints, _numel, _optional, emit_select, positions
from .registry import LinearRule, converts, rule


# --------------------------------------------------------------------------- ConvTranspose
def _tconv_fn(rank: int):
    return {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]


def _conv_fn(rank: int):
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]


@rule("ConvTranspose")
class ConvTransposeRule(LinearRule):
    """The full transposed convolution (no padding), then the ONNX pads cropped and output_padding
    appended as zeros in one F.pad, then the bias.  params: W (C_in, C_out/g, *k), b (C_out,) or
    None, stride, dilation, groups, crop: F.pad amounts (last axis first, negative crops)."""

    def _up(self, node: Node, x: Tensor, W: Tensor) -> Tensor:
        p = node.params
        y = _tconv_fn(W.dim() - 2)(x, W, None, p["stride"], 0, 0, p["groups"], p["dilation"])
        return F.pad(y, p["crop"])

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        y = self._up(node, x, node.params["W"])
        b = node.params["b"]
        return y if b is None else y + b.reshape((-1,) + (1,) * (y.dim() - 2))

    def apply(self, node: Node, x: Tensor) -> Tensor:
        return self._up(node, x, node.params["W"])

    def bias(self, node: Node, like: Tensor, in_shapes=None) -> Tensor | None:
        b = node.params["b"]
        return None if b is None else b.reshape((-1,) + (1,) * (len(node.shape) - 1)).expand(node.shape)

    def apply_abs(self, node: Node, r: Tensor) -> Tensor:
        return self._up(node, r, node.params["W"].abs())

    def apply_t(self, node, A, in_shapes):
        # zero padding and cropping are each other's adjoints, and conv_transpose is by
        # definition the adjoint of the convolution with the same weight, stride and dilation
        p, W = node.params, node.params["W"]
        full = F.pad(A, tuple(-v for v in p["crop"]))
        return [_conv_fn(W.dim() - 2)(full, W, None, p["stride"], 0, p["dilation"], p["groups"])]

    def sum_terms(self, node, in_shapes):
        # an output sums at most C_in/g * prod(k) products (+ the bias); an input element in the
        # transpose, C_out/g * prod(k)
        W, g = node.params["W"], node.params["groups"]
        return max(W.shape[0] // g, W.shape[1]) * _numel(W.shape[2:]) + 1


def _tconv_pads(ctx, n, a: dict, full: list[int], out_pad: list[int], spatial, stride) -> list[int]:
    """pads (begin..., end...): from output_shape or auto_pad SAME_* (the spec's total padding,
    split with the odd cell at the end for SAME_UPPER, the begin otherwise), else the attribute."""
    r = len(full)
    auto = _auto_pad(ctx, n, a)
    target = a.get("output_shape")
    if target is None and auto.startswith("SAME"):
        target = [spatial[i] * stride[i] for i in range(r)]
    if target is not None:
        target = [int(v) for v in target][-r:]
        total = [full[i] + out_pad[i] - target[i] for i in range(r)]
        half = [int(v / 2) for v in total]   # C's division, as the spec writes it (negatives are refused)
        if auto == "SAME_UPPER":
            return half + [t - h for t, h in zip(total, half)]
        return [t - h for t, h in zip(total, half)] + half
    if auto == "VALID":
        return [0] * (2 * r)
    return [int(v) for v in a.get("pads", [0] * (2 * r))]


@converts("ConvTranspose")
def _conv_transpose(ctx, n) -> None:
    a = ctx.attrs(n)
    x = ctx.var(n.input[0])
    ctx.needs_batch_axis(n, x)
    W = np.asarray(ctx.const(n.input[1]), dtype=np.float64)
    b = np.asarray(ctx.const(n.input[2]), dtype=np.float64) if _optional(n, 2) else None
    r, g = W.ndim - 2, int(a.get("group", 1))
    spatial = ctx.shape(x)[1:]
    if r not in (1, 2, 3) or len(spatial) != r or ctx.shape(x)[0] != W.shape[0]:
        raise ctx.unsupported(n, f"ConvTranspose of a {list(ctx.onnx_shape(x))} input with a {list(W.shape)} kernel")
    k = list(W.shape[2:])
    if list(a.get("kernel_shape", k)) != k:
        raise ctx.unsupported(n, f"kernel_shape {list(a['kernel_shape'])} unlike the weight's {k}")
    stride = [int(v) for v in a.get("strides", [1] * r)]
    dil = [int(v) for v in a.get("dilations", [1] * r)]
    out_pad = [int(v) for v in a.get("output_padding", [0] * r)]
    full = [stride[i] * (spatial[i] - 1) + (k[i] - 1) * dil[i] + 1 for i in range(r)]
    pads = _tconv_pads(ctx, n, a, full, out_pad, spatial, stride)
    # a negative total padding (output_shape or SAME asking for more than the full result): the
    # spec appends cells, onnxruntime 1.32 clamps the padding to 0 and returns a smaller output
    if len(pads) != 2 * r or min(pads) < 0 or min(out_pad) < 0:
        raise ctx.unsupported(n, f"ConvTranspose with pads {pads} and output_padding {out_pad}")
    if any(full[i] + out_pad[i] - pads[i] - pads[r + i] < 1 for i in range(r)):
        raise ctx.unsupported(n, f"ConvTranspose whose pads {pads} leave no output")
    crop = ctx.torch_pads([-p for p in pads[:r]], [out_pad[i] - pads[r + i] for i in range(r)])
    params = {"W": ctx.tensor(W), "b": None if b is None else ctx.tensor(b), "stride": tuple(stride),
              "dilation": tuple(dil), "groups": g, "crop": crop}
    ctx.emit("ConvTranspose", [x], params, n.output[0])


# --------------------------------------------------------------------------- nearest resize
# the coordinate maps of Resize-11+ (ONNX spec), from output index x, scale, output and input lengths.
# tf_half_pixel_for_nearest is left out: neither onnxruntime (1.32) nor onnx's reference evaluator
# runs it, so nothing could check a counterexample or the import; half_pixel_symmetric (opset 19)
# and tf_crop_and_resize (roi) likewise
_COORDS = {
    "asymmetric": lambda x, s, lo, li: x / s,
    "half_pixel": lambda x, s, lo, li: (x + Fraction(1, 2)) / s - Fraction(1, 2),
    "pytorch_half_pixel": lambda x, s, lo, li: (x + Fraction(1, 2)) / s - Fraction(1, 2) if lo > 1 else Fraction(0),
    "align_corners": lambda x, s, lo, li: Fraction(0) if lo == 1 else x * (li - 1) / Fraction(lo - 1),
}


def _coord32(mode: str, x: int, s: np.float32, lo: int, li: int) -> np.float32:
    """The same map evaluated in float32, operation by operation (onnxruntime's order)."""
    f, h = np.float32, np.float32(0.5)
    if mode == "asymmetric":
        return f(x) / s
    if mode == "half_pixel" or (mode == "pytorch_half_pixel" and lo > 1):
        return (f(x) + h) / s - h
    if mode == "align_corners" and lo > 1:
        return f(x) * f(li - 1) / f(lo - 1)
    return f(0)


def _round(mode: str, v: Fraction, down: bool) -> int:
    """nearest_mode on an exact coordinate.  'simple' is what onnxruntime does for Upsample and
    Resize-10, which name no rounding: truncate, or ceil when downsampling."""
    fl, ce = v.__floor__(), v.__ceil__()
    if mode == "floor":
        return fl
    if mode == "ceil":
        return ce
    if mode == "simple":
        return ce if down else int(v)
    if v - fl == Fraction(1, 2):
        return fl if mode == "round_prefer_floor" else ce
    return fl if v - fl < Fraction(1, 2) else ce


def nearest_axis(ctx, n, li: int, lo: int, scale: np.float32, mode: str, nearest: str) -> np.ndarray:
    """The input index each of the lo outputs copies along one axis.  The exact (rational) map
    and its float32 evaluation must agree: where they do not, the result depends on rounding."""
    if mode not in _COORDS:
        raise ctx.unsupported(n, f"Resize with coordinate_transformation_mode={mode}")
    if nearest not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple"):
        raise ctx.unsupported(n, f"Resize with nearest_mode={nearest}")
    s = Fraction(float(scale))
    down = scale < 1
    out = []
    for x in range(lo):
        exact = _round(nearest, _COORDS[mode](Fraction(x), s, lo, li), down)
        f32 = _coord32(mode, x, np.float32(scale), lo, li)
        if not np.isfinite(f32) or _round(nearest, Fraction(float(f32)), down) != exact:
            raise ctx.unsupported(n, f"Resize whose nearest pixel for output {x} on an axis of {li} -> {lo} "
                                     "depends on float rounding")
        out.append(min(max(exact, 0), li - 1))
    return np.asarray(out, dtype=np.int64)


def _out_lengths(ctx, n, s, scales: np.ndarray) -> list[int]:
    """floor(length * scale), which onnxruntime computes as a float32 product: both must agree."""
    out = []
    for d, sc in zip(s, scales):
        exact = (Fraction(int(d)) * Fraction(float(sc))).__floor__()
        if int(np.float32(d) * np.float32(sc)) != exact or exact < 1:
            raise ctx.unsupported(n, f"Resize of length {d} by scale {float(sc)}")
        out.append(int(exact))
    return out


def _resize_operands(ctx, n, s) -> tuple[np.ndarray, list[int]]:
    """(scales as float32, output lengths) from the scales or sizes input, on every axis (the
    opset-18 axes attribute names the axes they cover; the others keep scale 1)."""
    a = ctx.attrs(n)
    rank = len(s)
    axes = [int(v) % rank for v in a.get("axes", range(rank))]
    scales_in = _optional(n, 2) if len(n.input) > 2 else _optional(n, 1)
    sizes_in = _optional(n, 3)
    scales = np.ones(rank, dtype=np.float32)
    if sizes_in is not None and np.asarray(ctx.const(sizes_in)).size:
        policy = a.get("keep_aspect_ratio_policy", b"stretch")
        if (policy.decode() if isinstance(policy, bytes) else policy) != "stretch":
            raise ctx.unsupported(n, f"Resize with keep_aspect_ratio_policy={policy}")
        sizes = list(s)
        for ax, v in zip(axes, _ints(ctx, sizes_in)):
            sizes[ax] = v
        # onnxruntime's scale for given sizes: float32(out) / float32(in)
        scales = np.asarray([np.float32(o) / np.float32(i) for o, i in zip(sizes, s)], dtype=np.float32)
        return scales, sizes
    given = a.get("scales") if scales_in is None else np.asarray(ctx.const(scales_in)).reshape(-1)
    if given is None or len(given) != len(axes):
        raise ctx.unsupported(n, f"{n.op_type} without scales or sizes for its {rank} axes")
    for ax, v in zip(axes, given):
        scales[ax] = np.float32(v)
    if min(scales) <= 0:
        raise ctx.unsupported(n, f"{n.op_type} with scales {scales.tolist()}")
    return scales, _out_lengths(ctx, n, s, scales)


def _text(a: dict, key: str, default: str) -> str:
    v = a.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


@converts("Resize", "Upsample")
def _resize(ctx, n) -> None:
    """Nearest only: each output copies one input element, chosen per axis.  Upsample (7-9) and
    Resize-10 name no coordinate map or rounding: onnxruntime uses asymmetric and 'simple'."""
    a = ctx.attrs(n)
    x = ctx.var(n.input[0])
    s = ctx.onnx_shape(x)
    if _text(a, "mode", "nearest") != "nearest":
        raise ctx.unsupported(n, f"{n.op_type} mode {_text(a, 'mode', 'nearest')} (only nearest)")
    if a.get("antialias", 0):
        raise ctx.unsupported(n, "Resize with antialias=1")
    legacy = n.op_type == "Upsample" or len(n.input) == 2  # Resize-10 has inputs (X, scales)
    mode = "asymmetric" if legacy else _text(a, "coordinate_transformation_mode", "half_pixel")
    nearest = "simple" if legacy else _text(a, "nearest_mode", "round_prefer_floor")
    scales, out = _resize_operands(ctx, n, s)
    maps = [nearest_axis(ctx, n, s[i], out[i], scales[i], mode, nearest) for i in range(len(s))]
    index = positions(s)[np.ix_(*maps)]
    emit_select(ctx, n, [x], index, None, tuple(out), n.output[0])
