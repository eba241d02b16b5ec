"""Reductions, n-ary sums, splits, selections, nearest resizing and transposed convolution.

Every converter of verifier/ops/reduce.py and verifier/ops/resize.py (and the general Transpose,
negative-step Slice and MaxPool forms of shape.py / pool.py) against onnxruntime, in every opset
from 7 to 21 where its form exists: float32 (1e-5 relative to max |y|), the model widened to
float64 (1e-9), after simplify, and as a float64 model of its own.  Every linear node these
models produce is checked against its dense matrix (apply, apply_t, apply_abs, and sum_terms
against the terms its sums really have).  Two models are verified end to end; every form the
importer refuses is refused by name.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import verifier
from helpers_nets import (Builder, assert_matches, case_registry, one_torch_thread,  # noqa: F401 (fixture)
                          run_float64, run_onnxruntime, run_reference, to_float64)
from verifier.onnx_import import ModelError, to_graph
from verifier.ops import RULES
from verifier.simplify import simplify
from verifier.verdict import Verdict

OPSETS = tuple(range(7, 22))


def since(first: int, last: int = 21) -> tuple[int, ...]:
    return tuple(o for o in OPSETS if first <= o <= last)


CASES, case = case_registry(OPSETS)


def _w(b, *shape, scale=0.5):
    return b.randn(*shape, scale=scale)


def _axes(b, op, x, axes, first_input_opset, **attrs):
    """A reduction with its axes as an attribute before first_input_opset, an input from then on."""
    if b.opset >= first_input_opset:
        return b.op(op, [x, b.ints(axes)] if axes is not None else [x], **attrs)
    return b.op(op, [x], **({"axes": axes} if axes is not None else {}), **attrs)


# --------------------------------------------------------------------------- ReduceSum, ReduceMean
@case("reducesum_spatial_keepdims")
def _(b):
    h = _axes(b, "ReduceSum", b.conv("x", 2, 3, 2), [2, 3], 13)            # [1, 3, 1, 1]
    return [1, 2, 4, 5], b.gemm(b.op("Flatten", [h], axis=1), 3, 2)


@case("reducesum_negative_axis_no_keepdims", since(11))
def _(b):
    return [1, 3, 4], _axes(b, "ReduceSum", b.op("Relu", ["x"]), [-1], 13, keepdims=0)


@case("reducesum_all_axes")
def _(b):  # no axes: every axis, batch axis included (of size 1), kept as [1, 1, 1]
    return [1, 3, 4], b.op("ReduceSum", [b.op("Relu", ["x"])])


@case("reducesum_batch_axis_dropped_at_output")
def _(b):  # [1, 3, 4] -> [3]: like a Squeeze of the batch axis
    return [1, 3, 4], _axes(b, "ReduceSum", "x", [0, 2], 13, keepdims=0)


@case("reducesum_nobatch_axis0")
def _(b):
    return [3, 4, 2], _axes(b, "ReduceSum", "x", [0, 2], 13)


@case("reducesum_noop_empty_axes", since(13))
def _(b):
    return [1, 3, 4], b.op("ReduceSum", ["x", b.ints([])], noop_with_empty_axes=1)


@case("reducemean_channels")
def _(b):
    h = _axes(b, "ReduceMean", b.conv("x", 2, 3, 2), [1], 18)              # [1, 1, 3, 4]
    return [1, 2, 4, 5], b.gemm(b.op("Flatten", [h], axis=1), 12, 2)


@case("reducemean_three_of_four_axes_no_keepdims", since(11))
def _(b):
    return [1, 2, 3, 5], _axes(b, "ReduceMean", "x", [-1, 1, 2], 18, keepdims=0)


@case("reducemean_all_nobatch")
def _(b):
    return [3, 7], b.op("ReduceMean", ["x"])


@case("reducemean_noop_empty_axes", since(18))
def _(b):
    return [1, 3, 4], b.op("ReduceMean", ["x"], noop_with_empty_axes=1)


# --------------------------------------------------------------------------- Sum, Mean
@case("sum_three_variables")
def _(b):
    h = b.gemm("x", 4, 3)
    return [1, 4], b.op("Sum", [h, b.op("Relu", [h]), b.gemm("x", 4, 3)])


@case("sum_broadcast_with_constants", since(8))
def _(b):
    h = b.op("Relu", [b.gemm("x", 4, 3)])                                  # [1, 3]
    g = b.op("Reshape", [b.gemm("x", 4, 2), b.ints([1, 2, 1])])            # [1, 2, 1]
    return [1, 4], b.op("Sum", [h, b.const(b.rng.normal(size=(2, 3))), g, b.const([0.5])])


@case("mean_variables_and_constant")
def _(b):
    h = b.gemm("x", 4, 3)
    return [1, 4], b.op("Mean", [h, b.op("Relu", [h]), b.const(b.rng.normal(size=(1, 3)))])


@case("mean_broadcast_nobatch", since(8))
def _(b):
    return [2, 3], b.op("Mean", ["x", b.op("Relu", [b.op("Gather", ["x", b.ints([1])], axis=0)]), "x"])


@case("sum_single_input")
def _(b):
    return [1, 3], b.op("Mean", [b.op("Sum", [b.op("Relu", ["x"])])])


# --------------------------------------------------------------------------- Split
def _split(b, x, sizes, n_out, **attrs):
    if sizes is None:
        return b.op("Split", [x], n_out=n_out, **attrs)
    if b.opset >= 13:
        return b.op("Split", [x, b.ints(sizes)], n_out=n_out, **attrs)
    return b.op("Split", [x], n_out=n_out, split=sizes, **attrs)


@case("split_sizes")
def _(b):
    h = b.gemm("x", 4, 7)
    p, q, r = _split(b, h, [2, 4, 1], 3, axis=1)
    return [1, 4], b.op("Concat", [b.op("Relu", [r]), p, b.op("Neg", [q])], axis=1)


@case("split_equal", since(7, 17))
def _(b):
    p, q = _split(b, "x", None, 2, axis=2)
    return [1, 2, 6], b.op("Sub", [p, q])


@case("split_num_outputs_uneven", since(18))
def _(b):  # 7 into 3: 3, 3, 1
    p, q, r = b.op("Split", ["x"], n_out=3, axis=-1, num_outputs=3)
    return [1, 2, 7], b.op("Concat", [r, q, p], axis=2)


@case("split_nobatch_axis0_one_output_unused", since(13))
def _(b):
    p, _ = b.op("Split", ["x", b.ints([1, 2])], n_out=2)
    return [3, 4], b.op("Relu", [p])


# --------------------------------------------------------------------------- Expand, Tile, Where
@case("expand_broadcast", since(8))
def _(b):
    h = b.op("Reshape", [b.gemm("x", 4, 3), b.ints([1, 3, 1])])
    return [1, 4], b.op("Expand", [h, b.ints([3, 4])])                     # [1, 3, 1] -> [1, 3, 4]


@case("expand_lower_rank_shape_and_identity", since(8))
def _(b):
    h = b.op("Expand", ["x", b.ints([3, 1])])                              # [1, 1, 4] -> [1, 3, 4]
    return [1, 1, 4], b.op("Expand", [b.op("Relu", [h]), b.ints([1])])


@case("tile_spatial")
def _(b):
    h = b.op("Tile", [b.conv("x", 2, 2, 2), b.ints([1, 2, 1, 3])])
    return [1, 2, 3, 3], b.gemm(b.op("Flatten", [h], axis=1), 4 * 2 * 6, 2)


@case("tile_nobatch")
def _(b):
    return [2, 3], b.op("Tile", ["x", b.ints([3, 2])])


def _mask(b, shape):
    return b.const(b.rng.random(shape) > 0.5, dtype=bool)


@case("where_two_variables_broadcast", since(9))
def _(b):
    h = b.op("Relu", [b.gemm("x", 4, 3)])
    return [1, 4], b.op("Where", [_mask(b, (2, 3)), b.op("Reshape", [b.gemm("x", 4, 2), b.ints([1, 2, 1])]), h])


@case("where_constant_branch", since(9))
def _(b):
    return [1, 2, 3], b.op("Where", [_mask(b, (1, 2, 3)), b.const(b.rng.normal(size=(3,))), "x"])


@case("where_same_variable_and_constant_left", since(9))
def _(b):
    h = b.op("Where", [_mask(b, (1, 5)), "x", b.const(np.float32(-1.5))])
    return [1, 5], b.op("Where", [_mask(b, (5,)), h, b.op("Neg", [h])])


@case("constantofshape_folded", since(9))
def _(b):
    shape = b.op("Shape", ["x"])
    fill = onnx.helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.25])
    c = b.op("ConstantOfShape", [shape], value=fill)
    return [1, 2, 3], b.op("Add", [b.op("Relu", ["x"]), c])


# --------------------------------------------------------------------------- Resize, Upsample
def _resize(b, x, scales=None, sizes=None, **attrs):
    empty = "" if b.opset >= 13 else b.const(np.zeros(0, dtype=np.float32))
    s = b.const(np.asarray(scales, dtype=np.float32)) if scales is not None else empty
    if sizes is None:
        return b.op("Resize", [x, empty, s], mode="nearest", **attrs)
    return b.op("Resize", [x, empty, b.const(np.zeros(0, dtype=np.float32)) if b.opset < 13 else "",
                           b.ints(sizes)], mode="nearest", **attrs)


@case("upsample_attribute_scales", (7, 8))
def _(b):
    # onnx's reference evaluator lacks Upsample-7: the output shape as declared
    return [1, 2, 2, 3], b.op("Upsample", ["x"], mode="nearest", scales=[1.0, 1.0, 2.0, 3.0]), [1, 2, 4, 9]


@case("upsample_scales_input", (9,))
def _(b):
    return [1, 2, 3, 2], b.op("Upsample", ["x", b.const([1.0, 1.0, 2.0, 2.5])], mode="nearest"), [1, 2, 6, 5]


@case("resize_10_up_and_down", (10,))
def _(b):
    h = b.op("Resize", ["x", b.const([1.0, 1.0, 2.0, 1.5])], mode="nearest")
    return [1, 2, 3, 4], b.op("Resize", [h, b.const([1.0, 1.0, 0.5, 0.5])], mode="nearest"), [1, 2, 3, 3]


_MODES = [("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"), ("half_pixel", "round_prefer_ceil"),
          ("align_corners", "round_prefer_floor"), ("pytorch_half_pixel", "ceil"), ("asymmetric", "ceil")]


for _ctm, _nm in _MODES:
    def _make(ctm=_ctm, nm=_nm):
        def build(b):
            h = _resize(b, "x", scales=[1.0, 1.0, 2.0, 3.0], coordinate_transformation_mode=ctm, nearest_mode=nm)
            y = _resize(b, h, scales=[1.0, 1.0, 0.5, 0.75], coordinate_transformation_mode=ctm, nearest_mode=nm)
            return [1, 2, 3, 2], y, [1, 2, 3, 4]    # [3, 2] -> [6, 6] -> [3, floor(4.5)]
        return build
    case(f"resize_scales_{_ctm}_{_nm}", since(11))(_make())


@case("resize_sizes_default_modes", since(11))
def _(b):
    h = _resize(b, b.conv("x", 2, 2, 2), sizes=[1, 2, 5, 7])              # [1, 2, 3, 4] -> [1, 2, 5, 7]
    return [1, 2, 4, 5], b.gemm(b.op("Flatten", [h], axis=1), 70, 2)


@case("resize_sizes_align_corners_down", since(11))
def _(b):
    return [1, 1, 7, 5], _resize(b, "x", sizes=[1, 1, 3, 2], coordinate_transformation_mode="align_corners")


@case("resize_axes", since(18))
def _(b):
    h = b.op("Resize", ["x", "", b.const([2.0, 1.5])], mode="nearest", axes=[3, 2])
    return [1, 2, 2, 3], h


@case("resize_nobatch_rank2", since(11))
def _(b):
    return [3, 4], _resize(b, "x", scales=[2.0, 0.5])


# --------------------------------------------------------------------------- ConvTranspose
def _tconv(b, x, c_in, c_out, k, group=1, bias=True, **attrs):
    W = _w(b, c_in, c_out // group, *k)
    ins = [x, W] + ([_w(b, c_out)] if bias else [])
    return b.op("ConvTranspose", ins, group=group, **attrs)


@case("convtranspose_strided_padded")
def _(b):
    h = _tconv(b, "x", 2, 3, [3, 3], strides=[2, 2], pads=[1, 0, 0, 1])
    return [1, 2, 3, 4], b.gemm(b.op("Flatten", [h], axis=1), 3 * 6 * 8, 2)


@case("convtranspose_output_padding_dilations_groups")
def _(b):
    # H: 3 (3 - 1) + 2 (2 - 1) + 1 + 2 - 1 - 0 = 10; W: 2 (3 - 1) + 3 + 1 - 1 - 2 = 5 (declared:
    # onnx's reference evaluator mishandles groups here)
    return [1, 4, 3, 3], _tconv(b, "x", 4, 6, [2, 3], group=2, strides=[3, 2], dilations=[2, 1],
                                output_padding=[2, 1], pads=[1, 1, 0, 2]), [1, 6, 10, 5]


@case("convtranspose_output_shape")
def _(b):
    return [1, 2, 3, 3], _tconv(b, "x", 2, 2, [3, 3], bias=False, strides=[2, 2], output_shape=[6, 7]), [1, 2, 6, 7]


@case("convtranspose_1d_and_3d")
def _(b):
    h = _tconv(b, "x", 2, 2, [3], strides=[2], pads=[1, 1])                # [1, 2, 4] -> [1, 2, 7]
    h = b.op("Reshape", [h, b.ints([1, 2, 7, 1, 1])])
    return [1, 2, 4], _tconv(b, h, 2, 1, [2, 1, 2], strides=[1, 1, 2])


@case("convtranspose_same_and_valid")
def _(b):
    # SAME: 3 x strides = [6, 6] of the full [7, 6] (an odd cell to crop), then [6, 6] of [7, 8]
    h = _tconv(b, "x", 2, 2, [3, 2], strides=[2, 2], auto_pad="SAME_UPPER")
    h = _tconv(b, h, 2, 2, [2, 3], strides=[1, 1], auto_pad="SAME_LOWER", bias=False)
    return [1, 2, 3, 3], _tconv(b, h, 2, 1, [2, 2], auto_pad="VALID"), [1, 1, 7, 9]


# --------------------------------------------------------------------------- Transpose, Slice, MaxPool
@case("transpose_batch_axis_to_the_middle_at_output")
def _(b):
    return [1, 3, 4], b.op("Transpose", [b.op("Relu", ["x"])], perm=[1, 0, 2])


@case("transpose_batch_axis_last_default_perm")
def _(b):
    return [1, 2, 3], b.op("Transpose", [b.op("Relu", ["x"])])             # -> [3, 2, 1]


def _slice(b, x, starts, ends, axes, steps):
    return b.op("Slice", [x, b.ints(starts), b.ints(ends), b.ints(axes), b.ints(steps)])


@case("slice_negative_steps_all_axes", since(10))
def _(b):
    h = _slice(b, "x", [0, -1, 100, -2], [-2 ** 63, -100, 0, -6], [0, 1, 2, 3], [-1, -1, -2, -1])
    return [1, 3, 5, 6], b.gemm(b.op("Flatten", [h], axis=1), 3 * 2 * 4, 2)


@case("slice_negative_step_nobatch_then_positive", since(10))
def _(b):
    h = _slice(b, "x", [-1], [-2 ** 63], [0], [-2])
    return [5, 4], _slice(b, h, [1], [4], [1], [2])


@case("maxpool_dilations", since(10))
def _(b):
    return [1, 2, 7, 6], b.op("MaxPool", ["x"], kernel_shape=[2, 3], dilations=[2, 2], strides=[1, 2])


@case("maxpool_dilations_with_pads", since(10))
def _(b):
    return [1, 2, 6, 6], b.op("MaxPool", ["x"], kernel_shape=[3, 2], dilations=[2, 3], pads=[2, 1, 1, 1])


@case("maxpool_ceil_mode_partial_window", since(10))
def _(b):  # (6 - 3) / 2 = 1.5: a third window over the last row and column alone
    return [1, 2, 6, 6], b.op("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)


@case("maxpool_ceil_mode_pads_dilations_1d", since(10))
def _(b):
    return [1, 2, 9], b.op("MaxPool", ["x"], kernel_shape=[2], strides=[3], dilations=[2], pads=[1, 1], ceil_mode=1)


@case("maxpool_big_pads", since(11))
def _(b):  # pads of 2 on a 3-window: windows holding two pad cells
    return [1, 1, 5, 5], b.op("MaxPool", ["x"], kernel_shape=[3, 3], pads=[2, 2, 2, 2], strides=[2, 2]), [1, 1, 4, 4]


# --------------------------------------------------------------------------- running the cases
def build(name: str, opset: int, seed: int = 0) -> tuple[onnx.ModelProto, list[int]]:
    b = Builder(np.random.default_rng(seed), opset)
    shape, y, *y_shape = CASES[name][0](b)
    return b.finish("x", shape, y, y_shape=y_shape[0] if y_shape else None), shape


def widen(model: onnx.ModelProto) -> onnx.ModelProto:
    """to_float64, but with Resize's and Upsample's scales kept float32 (the only type they take)."""
    m = to_float64(model)
    scales = {n.input[2 if len(n.input) > 2 else 1] for n in m.graph.node
              if n.op_type in ("Resize", "Upsample") and len(n.input) > 1}
    for t in m.graph.initializer:
        if t.name in scales and t.data_type == onnx.TensorProto.DOUBLE:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float32), t.name))
    for v in m.graph.input:
        if v.name in scales:
            v.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return m


def run_wide(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime on widen(model): a rounding-free oracle for the float64 IR; ONNX's reference
    evaluator for the kernels onnxruntime lacks in double (Conv, Mean, Resize, ...)."""
    return run_float64(model, x, widen)


PARAMS = [pytest.param(name, opset, id=f"{name}-op{opset}") for name, (_, ops) in CASES.items() for opset in ops]


# forms neither onnxruntime nor onnx's reference evaluator runs in float64 (onnxruntime has no double
# Upsample, Resize-10 or ConvTranspose kernel; the reference evaluator lacks Upsample-7 and -9 and
# Resize-10 and gets grouped and output_shape ConvTranspose wrong): float32 only.  Copies of float32
# inputs are exact, so there the IR must agree to the last bit
FLOAT32_ONLY = {"upsample_attribute_scales": 0.0, "upsample_scales_input": 0.0, "resize_10_up_and_down": 0.0,
                "convtranspose_output_padding_dilations_groups": 1e-5, "convtranspose_output_shape": 1e-5,
                "convtranspose_same_and_valid": 1e-5}


@pytest.mark.parametrize("name,opset", PARAMS)
def test_converter_matches_onnxruntime(name, opset):
    model, shape = build(name, opset)
    xs = np.random.default_rng(opset).standard_normal((3,) + tuple(shape))
    graph = to_graph(model)
    assert_matches(model, graph, xs, rtol=FLOAT32_ONLY.get(name, 1e-5))
    if name in FLOAT32_ONLY:
        return
    assert_matches(model, graph, xs, rtol=1e-9, oracle=run_wide)
    assert_matches(model, simplify(graph), xs, rtol=1e-9, oracle=run_wide)
    m64 = widen(model)
    assert_matches(m64, to_graph(m64), xs, rtol=1e-9, oracle=run_wide)


def test_cases_use_the_new_ir_rules():
    ops = set()
    for name, (_, opsets) in CASES.items():
        ops |= {n.op for n in to_graph(build(name, opsets[-1])[0]).nodes}
    assert {"Select", "ReduceSum", "ConvTranspose"} <= ops


# --------------------------------------------------------------------------- the linear rules
DT = torch.float64
# the rules these converters introduce, and those whose sum_terms they changed
CHECKED = {"Select", "ReduceSum", "ConvTranspose", "Gather", "Slice", "Transpose", "Reshape"}


def _linear_nodes():
    out, seen = [], set()
    for name, (_, opsets) in CASES.items():
        graph = to_graph(build(name, opsets[-1])[0])
        for node in graph.nodes:
            key = (node.op, tuple(graph.shape_of(i) for i in node.inputs), node.shape)
            if node.op in CHECKED and key not in seen:
                seen.add(key)
                out.append(pytest.param(node, [graph.shape_of(i) for i in node.inputs], id=f"{name}:{node.name}"))
    return out


LINEAR_NODES = _linear_nodes()


def _dense(rule, node, in_shapes) -> torch.Tensor:
    """L as a dense (n_out, sum n_in) matrix, from apply on unit vectors."""
    cols = []
    for k, s in enumerate(in_shapes):
        n = int(np.prod(s, dtype=np.int64))
        xs = [torch.eye(n, dtype=DT).reshape((n,) + tuple(s)) if j == k else torch.zeros((n,) + tuple(t), dtype=DT)
              for j, t in enumerate(in_shapes)]
        cols.append(rule.apply(node, *xs).reshape(n, -1).T)
    return torch.cat(cols, dim=1)


@pytest.mark.parametrize("node,in_shapes", LINEAR_NODES)
def test_linear_rule_is_its_dense_matrix(node, in_shapes):
    """evaluate == L x + bias(0); apply_t == L^T A; apply_abs == |L| r, which bounds |L d| for
    |d| <= r; sum_terms covers the terms of every row (+ the bias) and of every column of L."""
    rule, g, B = RULES[node.op], torch.Generator().manual_seed(0), 3
    xs = [torch.randn((B,) + tuple(s), generator=g, dtype=DT) for s in in_shapes]
    L = _dense(rule, node, in_shapes)
    x_flat = torch.cat([x.reshape(B, -1) for x in xs], 1)
    b = rule.bias(node, xs[0], in_shapes)
    want = x_flat @ L.T + (0 if b is None else b.reshape(1, -1))
    assert torch.allclose(rule.evaluate(node, *xs).reshape(B, -1), want, rtol=1e-12, atol=1e-12)
    A = torch.randn((B,) + node.shape, generator=g, dtype=DT)
    at = torch.cat([t.reshape(B, -1) for t in rule.apply_t(node, A, in_shapes)], 1)
    assert torch.allclose(at, A.reshape(B, -1) @ L, rtol=1e-12, atol=1e-12)
    rs = [torch.rand((B,) + tuple(s), generator=g, dtype=DT) for s in in_shapes]
    r_flat = torch.cat([r.reshape(B, -1) for r in rs], 1)
    bound = rule.apply_abs(node, *rs).reshape(B, -1)
    assert torch.allclose(bound, r_flat @ L.abs().T, rtol=1e-12, atol=1e-12)
    for sign in (torch.sign(torch.randn(r_flat.shape, generator=g, dtype=DT)), torch.ones_like(r_flat)):
        assert ((r_flat * sign) @ L.T).abs().le(bound * (1 + 1e-12)).all()
    nz = L != 0
    rows = nz.sum(1) + (0 if b is None else (b.reshape(-1) != 0).long())   # a row's products and its bias
    need = max(int(rows.max()), int(nz.sum(0).max()))
    assert rule.sum_terms(node, in_shapes) >= need


def test_every_new_rule_is_checked():
    assert {"Select", "ReduceSum", "ConvTranspose"} <= {p.values[0].op for p in LINEAR_NODES}


# --------------------------------------------------------------------------- refused forms
REFUSED: dict = {}


def refused(name: str, opset: int, needle: str):
    def add(fn):
        REFUSED[name] = (fn, opset, needle)
        return fn
    return add


@refused("resize_linear", 13, "mode linear")
def _(b):
    return [1, 1, 2, 2], b.op("Resize", ["x", "", b.const([1.0, 1.0, 2.0, 2.0])], mode="linear")


@refused("resize_tf_half_pixel_for_nearest", 13, "tf_half_pixel_for_nearest")
def _(b):
    return [1, 1, 2, 2], _resize(b, "x", scales=[1.0, 1.0, 2.0, 2.0],
                                 coordinate_transformation_mode="tf_half_pixel_for_nearest"), [1, 1, 4, 4]


@refused("resize_half_pixel_symmetric", 19, "half_pixel_symmetric")
def _(b):
    return [1, 1, 2, 2], _resize(b, "x", scales=[1.0, 1.0, 2.0, 2.0],
                                 coordinate_transformation_mode="half_pixel_symmetric"), [1, 1, 4, 4]


@refused("resize_keep_aspect_ratio", 18, "keep_aspect_ratio_policy")
def _(b):
    return [1, 1, 2, 4], b.op("Resize", ["x", "", "", b.ints([3, 3])], mode="nearest", axes=[2, 3],
                              keep_aspect_ratio_policy="not_larger"), [1, 1, 2, 3]


@refused("resize_rounding_dependent", 13, "float rounding")
def _(b):  # x / fl32(0.1) = 9.99999985 exactly, 10.0 in float32: floor gives 9 or 10
    return [1, 1, 1, 20], _resize(b, "x", scales=[1.0, 1.0, 1.0, 0.1], coordinate_transformation_mode="asymmetric",
                                  nearest_mode="floor"), [1, 1, 1, 2]


@refused("resize_batch_axis", 13, "batch axis")
def _(b):
    return [1, 2], _resize(b, "x", scales=[2.0, 1.0])


@refused("expand_over_batch_axis", 13, "batch axis")
def _(b):
    return [1, 3], b.op("Expand", ["x", b.ints([2, 3])])


@refused("split_unequal_without_sizes", 13, "equal parts")
def _(b):
    return [1, 5], b.op("Split", ["x"], n_out=2, axis=1)[0], [1, 2]


@refused("reducesum_to_scalar", 13, "scalar")
def _(b):
    return [1, 3], b.op("ReduceSum", ["x"], keepdims=0)


@refused("convtranspose_without_batch_axis", 13, "batch axis")
def _(b):
    return [2, 2, 3, 3], b.op("ConvTranspose", ["x", _w(b, 2, 2, 2, 2)])


@refused("convtranspose_output_larger_than_full", 13, "pads")
def _(b):  # full 7, asked 9: the spec appends cells, onnxruntime returns 7
    return [1, 1, 3, 3], b.op("ConvTranspose", ["x", _w(b, 1, 1, 3, 3)], strides=[2, 2], output_shape=[9, 9]), \
        [1, 1, 9, 9]


@refused("maxpool_ceil_window_in_end_pads", 13, "end padding")
def _(b):  # ceil((4 + 1 - 2) / 2) + 1 = 3 windows; the third starts at 2 * 2 = 4, in the end pad
    return [1, 1, 4, 4], b.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1],
                              ceil_mode=1), [1, 1, 2, 2]


@refused("transposed_batch_axis_used", 13, "batch axis")
def _(b):
    return [1, 3, 4], b.op("Relu", [b.op("Transpose", ["x"], perm=[1, 0, 2])])


def build_refused(name: str) -> tuple[onnx.ModelProto, str]:
    fn, opset, needle = REFUSED[name]
    b = Builder(np.random.default_rng(0), opset)
    shape, y, *y_shape = fn(b)
    return b.finish("x", shape, y, y_shape=y_shape[0] if y_shape else None), needle


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_form_names_the_op(name):
    model, needle = build_refused(name)
    with pytest.raises(ModelError) as e:
        to_graph(model)
    msg = str(e.value)
    assert needle in msg and "op " in msg and "\n" not in msg, msg


# --------------------------------------------------------------------------- end to end
def _property(path, n_in: int, lo: float, hi: float, y0_at_least: float):
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + "(declare-const Y_0 Real)\n"
    text += "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i in range(n_in))
    path.write_text(text + f"(assert (>= Y_0 {y0_at_least}))\n")
    return path


def _mean_of_copies(opset: int = 13) -> onnx.ModelProto:
    """Y = mean of Tile(Resize(x)) over every axis: the mean of x's entries, each copied 4 times."""
    b = Builder(np.random.default_rng(0), opset)
    h = _resize(b, "x", scales=[1.0, 1.0, 2.0, 2.0])
    h = b.op("Tile", [h, b.ints([1, 2, 1, 1])])
    return b.finish("x", [1, 2, 2, 2], b.op("Flatten", [b.op("ReduceMean", [h])], axis=1))


def test_verify_mean_of_copies_unsat(tmp_path):
    """Over x in [0, 1]^8 the mean is at most 1: Y_0 >= 1.01 is unsat by construction."""
    net = tmp_path / "mean.onnx"
    net.write_bytes(_mean_of_copies().SerializeToString())
    r = verifier.verify(net, _property(tmp_path / "p.vnnlib", 8, 0.0, 1.0, 1.01), timeout=60)
    assert r.verdict is Verdict.UNSAT


def test_verify_transposed_conv_sat(tmp_path):
    """Y_0 = sum of ConvTranspose(x) (all weights 1, no bias) split and re-summed: 4 x sum(x) over
    the 4 inputs (each input reaches 4 outputs of the 2 x 2 kernel); x = 1 gives 16 >= 15."""
    b = Builder(np.random.default_rng(0), 13)
    h = b.op("ConvTranspose", ["x", b.const(np.ones((1, 1, 2, 2)))], strides=[2, 2])   # [1, 1, 4, 4]
    p, q = _split(b, h, [1, 3], 2, axis=2)
    s = b.op("Sum", [b.op("ReduceSum", [p, b.ints([2, 3])], keepdims=0),
                     b.op("ReduceSum", [q, b.ints([2, 3])], keepdims=0)])          # [1, 1]
    net = tmp_path / "tconv.onnx"
    net.write_bytes(b.finish("x", [1, 1, 2, 2], s).SerializeToString())
    r = verifier.verify(net, _property(tmp_path / "p.vnnlib", 4, 0.0, 1.0, 15.0), timeout=60)
    assert r.verdict is Verdict.SAT
    assert float(r.y[0]) >= 15.0
