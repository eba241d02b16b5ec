"""Every converter against the ONNX operator specification, as onnxruntime implements it.

Forms beyond tests/test_loader.py's catalogue: inputs without a batch axis (rank 1 to 3) and with a
leading axis of 2, 1-D and 3-D windows, auto_pad, ceil_mode, negative steps and pads, opset-specific
inputs (Pad axes, Dropout training_mode, Reshape allowzero).  Each model runs in float32 against
onnxruntime (1e-5 relative to max |y|), against the same model widened to float64 (1e-9), and as a
float64 model of its own.  Then every form the importer refuses: refused by name, never imported
as something else, and exit 2 with one line on stderr from the command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers_nets import (Builder, assert_matches, case_registry, one_torch_thread, run_float64,  # noqa: F401 (fixture)
                          to_float64)
from verifier.onnx_import import ModelError, to_graph
from verifier.simplify import simplify

ALL = (7, 9, 11, 13, 17, 21)
FROM9 = ALL[1:]  # where onnx's reference evaluator fails on the opset-7 form (BatchNormalization-7, MaxPool-1)
CASES, case = case_registry(ALL)


def _w(b, *shape, scale=0.5):
    return b.randn(*shape, scale=scale)


def _bn(b, x, c, **attrs):
    r = b.rng
    return b.op("BatchNormalization", [x, b.const(r.uniform(0.5, 1.5, c)), b.const(r.normal(0, 0.3, c)),
                                       b.const(r.normal(0, 0.3, c)), b.const(r.uniform(0.5, 2.0, c))],
                epsilon=1e-3, **attrs)


# --------------------------------------------------------------------------- normalisation, pooling
@case("batchnorm_rank3_nobatch", FROM9)
def _(b):  # [2, 2, 2]: no batch axis; the channel axis is still axis 1
    return [2, 2, 2], _bn(b, "x", 2)


@case("batchnorm_batch_of_two", FROM9)
def _(b):
    return [2, 3, 2, 2], _bn(b, "x", 3)


@case("batchnorm_rank5", FROM9)
def _(b):
    return [1, 2, 2, 3, 2], _bn(b, "x", 2)


@case("globalaveragepool_batch_of_two")
def _(b):  # 6 outputs, one per (n, c)
    return [2, 3, 2, 2], b.op("GlobalAveragePool", ["x"])


@case("globalaveragepool_rank3_nobatch")
def _(b):
    return [2, 3, 4], b.op("GlobalAveragePool", ["x"])


@case("globalaveragepool_1d_and_3d")
def _(b):
    return [1, 2, 3, 2, 4], b.op("GlobalAveragePool", [b.op("Relu", ["x"])])


@case("averagepool_same_upper_exclude_pad")
def _(b):
    return [1, 2, 5, 7], b.op("AveragePool", ["x"], kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER")


@case("averagepool_same_lower_include_pad")
def _(b):
    return [1, 2, 6, 5], b.op("AveragePool", ["x"], kernel_shape=[2, 3], strides=[1, 2], auto_pad="SAME_LOWER",
                              count_include_pad=1)


@case("averagepool_1d")
def _(b):
    h = b.op("AveragePool", ["x"], kernel_shape=[3], strides=[2], pads=[1, 2])
    return [1, 2, 9], b.op("AveragePool", [h], kernel_shape=[2], pads=[1, 0], count_include_pad=1)


@case("averagepool_ceil_mode_exact", (11, 13, 17, 21))
def _(b):  # (7 + 0 - 3) % 2 == 0: ceil_mode adds no partial window
    return [1, 2, 7, 7], b.op("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)


@case("maxpool_pads")
def _(b):
    return [1, 2, 6, 7], b.op("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 2, 1, 0])


@case("maxpool_1d")
def _(b):
    h = b.op("MaxPool", ["x"], kernel_shape=[3], strides=[2], pads=[1, 1])
    return [1, 3, 8], b.op("MaxPool", [h], kernel_shape=[2])


@case("maxpool_same_lower_and_upper", FROM9)  # MaxPool-1 in double: only the (wrong) reference evaluator
def _(b):
    h = b.op("MaxPool", ["x"], kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_LOWER")
    # onnx's reference evaluator makes SAME_LOWER's output 2 high, where the spec says ceil(5 / 2)
    return [1, 2, 5, 6], b.op("MaxPool", [h], kernel_shape=[2, 3], auto_pad="SAME_UPPER"), [1, 2, 3, 3]


@case("maxpool_3d")
def _(b):
    return [1, 1, 4, 5, 4], b.op("MaxPool", ["x"], kernel_shape=[2, 2, 2], strides=[2, 1, 2])


# --------------------------------------------------------------------------- dense and convolution
@case("gemm_transA_nobatch")
def _(b):  # A = x: [5, 2] read as (K, M)
    return [5, 2], b.op("Gemm", ["x", _w(b, 5, 3), _w(b, 3)], transA=1, alpha=0.5)


@case("gemm_row_bias_nobatch")
def _(b):
    h = b.op("Gemm", ["x", _w(b, 5, 3), _w(b, 2, 1)], beta=2.0)
    return [2, 5], b.op("Gemm", [h, _w(b, 4, 3), _w(b, 2, 4)], transB=1)


@case("gemm_scalar_bias_no_bias", (11, 13, 17, 21))
def _(b):
    h = b.op("Gemm", ["x", _w(b, 5, 3), _w(b, 1)])
    return [1, 5], b.op("Gemm", [h, _w(b, 3, 2)], alpha=-1.5)


@case("matmul_vector_weight")
def _(b):  # (1, 3, 4) @ (4,) -> (1, 3)
    return [1, 3, 4], b.op("MatMul", ["x", _w(b, 4)])


@case("matmul_left_vector_weight")
def _(b):  # (4,) @ (1, 2, 4, 3) -> (1, 2, 3)
    return [1, 2, 4, 3], b.op("MatMul", [_w(b, 4), "x"])


@case("matmul_unit_batched_weight")
def _(b):  # (1, 4) @ (1, 1, 4, 3) -> (1, 1, 3)
    return [1, 4], b.op("MatMul", ["x", _w(b, 1, 1, 4, 3)])


@case("matmul_nobatch_rank3")
def _(b):
    h = b.op("MatMul", ["x", _w(b, 4, 5)])
    return [2, 3, 4], b.op("MatMul", [_w(b, 2, 3), h])


@case("matmul_left_rank4")
def _(b):
    return [1, 2, 4, 5], b.op("MatMul", [_w(b, 3, 4), "x"])


@case("conv1d_dilated_strided")
def _(b):
    return [1, 2, 11], b.op("Conv", ["x", _w(b, 3, 2, 3), _w(b, 3)], kernel_shape=[3], dilations=[2], strides=[2],
                            pads=[1, 2])


@case("conv3d_asymmetric_pads")
def _(b):
    return [1, 2, 4, 5, 4], b.op("Conv", ["x", _w(b, 2, 2, 2, 3, 2), _w(b, 2)], pads=[0, 1, 1, 1, 0, 0])


@case("conv_same_strided")
def _(b):
    h = b.op("Conv", ["x", _w(b, 3, 2, 3, 3)], auto_pad="SAME_UPPER", strides=[2, 3])
    return [1, 2, 7, 8], b.op("Conv", [h, _w(b, 2, 3, 2, 3)], auto_pad="SAME_LOWER", strides=[1, 2])


@case("conv_groups_1d")
def _(b):
    return [1, 4, 7], b.op("Conv", ["x", _w(b, 6, 2, 2), _w(b, 6)], group=2, strides=[2])


# --------------------------------------------------------------------------- elementwise affine
@case("arith_constants_of_higher_rank_nobatch")
def _(b):
    r = b.rng
    h = b.op("Add", ["x", b.const(r.normal(size=(2, 3)))])             # [3] -> [2, 3]
    h = b.op("Mul", [h, b.const(r.normal(size=(2, 1, 1)))])            # -> [2, 2, 3]
    h = b.op("Sub", [b.const(r.normal(size=(1, 3))), h])               # c - x
    return [3], b.op("Div", [h, b.const(r.uniform(1, 2, size=(3,)))])


@case("arith_constant_left_higher_rank")
def _(b):
    h = b.op("Sub", [b.const(b.rng.normal(size=(1, 1, 3))), "x"])
    return [1, 3], b.op("Add", [b.op("Neg", [h]), b.op("Identity", [h])])


@case("add_variables_of_different_rank_nobatch")
def _(b):
    g = b.op("Relu", [b.op("Gather", ["x", b.ints([1])], axis=0)])    # [1, 4]
    return [3, 4], b.op("Sub", ["x", b.op("Reshape", [g, b.ints([4])])])


# --------------------------------------------------------------------------- shape ops
def _slice(b, x, starts, ends, axes=None, steps=None):
    ins = [x, b.ints(starts), b.ints(ends)]
    if axes is not None:
        ins.append(b.ints(axes))
    if steps is not None:
        ins.append(b.ints(steps))
    return b.op("Slice", ins)


@case("slice_negative_steps", (11, 13, 17, 21))
def _(b):
    h = _slice(b, "x", [-1, 4], [-100, 0], [1, 2], [-2, -1])          # [1, 3, 4]
    return [1, 6, 5], _slice(b, h, [10], [-10], [-1], [-3])           # [1, 3, 2]


@case("slice_int64_extremes", (11, 13, 17, 21))
def _(b):
    return [1, 6, 5], _slice(b, "x", [-2 ** 63, 2], [2 ** 63 - 1, 2 ** 62], [1, -1], [1, 2])


@case("slice_batch_axis_kept", (11, 13, 17, 21))
def _(b):
    return [1, 4], _slice(b, "x", [0, -3], [1, -1])


@case("slice_nobatch_negative_step", (11, 13, 17, 21))
def _(b):
    return [3, 4], _slice(b, "x", [2, -1], [-4, 0], [0, 1], [-1, -2])


@case("gather_negative_axis_and_indices")
def _(b):
    return [1, 3, 5], b.op("Gather", ["x", b.ints([-1, 0, -5, 2])], axis=-1)


@case("reshape_allowzero", (14, 17, 21))
def _(b):
    h = b.op("Reshape", ["x", b.ints([1, 12, 2])], allowzero=1)
    return [1, 2, 3, 4], b.op("Reshape", [h, b.ints([0, -1])], allowzero=0)


@case("transpose_moves_a_unit_axis_into_batch_place")
def _(b):
    h = b.op("Transpose", ["x"], perm=[2, 1, 0, 3])                    # [1, 3, 1, 4] -> [1, 3, 1, 4]
    h = b.op("Relu", [h])
    return [1, 3, 1, 4], b.op("Transpose", [h], perm=[2, 3, 1, 0])    # -> [1, 4, 3, 1]


@case("transpose_nobatch_rank3")
def _(b):
    return [2, 3, 4], b.op("Transpose", ["x"], perm=[1, 0, 2])


def _squeeze(b, op, x, axes):
    if b.opset >= 13:
        return b.op(op, [x, b.ints(axes)])
    return b.op(op, [x], axes=axes)


@case("squeeze_batch_axis_last")
def _(b):  # [1, 5] -> [5]: the output has lost the batch axis
    return [1, 5], _squeeze(b, "Squeeze", b.op("Relu", ["x"]), [0])


@case("unsqueeze_front_then_squeeze_middle")
def _(b):
    h = b.op("Relu", [_squeeze(b, "Unsqueeze", "x", [0])])            # [1, 1, 4]
    return [1, 4], _squeeze(b, "Squeeze", h, [1])


@case("flatten_nobatch_axis0")
def _(b):
    return [2, 3], b.op("Flatten", ["x"], axis=0)


@case("concat_nobatch_axis0")
def _(b):
    return [2, 3], b.op("Concat", ["x", b.const(b.rng.normal(size=(1, 3))), b.op("Neg", ["x"])], axis=0)


@case("concat_negative_axis")
def _(b):
    return [1, 2, 3], b.op("Concat", [b.op("Relu", ["x"]), "x"], axis=-2)


def _pad(b, x, pads, mode, value=None, axes=None):
    ins = [x, b.ints(pads), b.const(np.float32(value)) if value is not None else ""]
    if axes is not None:
        ins.append(b.ints(axes))
    return b.op("Pad", ins if ins[-1] != "" else ins[:-1], mode=mode)


@case("pad_negative_constant", (11, 13, 17, 21))
def _(b):
    return [1, 2, 5, 6], _pad(b, "x", [0, 0, -1, 2, 0, 1, 1, -2], "constant", 0.5), [1, 3, 5, 6]


@case("pad_axes_input", (18, 21))
def _(b):
    h = _pad(b, "x", [1, 2, 0, 1], "edge", axes=[-1, 2])
    return [1, 2, 3, 4], _pad(b, h, [2, 1], "constant", -1.0, axes=[1])


@case("pad_wrap", (19, 21))
def _(b):
    return [1, 2, 3, 4], _pad(b, "x", [0, 0, 2, 1, 0, 0, 1, 3], "wrap")


@case("pad_reflect_nobatch_both_axes", (11, 13, 17, 21))
def _(b):
    return [4, 5], _pad(b, "x", [1, 2, 2, 1], "reflect")


@case("dropout_inference_inputs", (12, 13, 17, 21))
def _(b):
    no = b.const(np.array(False), dtype=bool)
    h, mask = b.op("Dropout", ["x", b.const(np.float32(0.4)), no], n_out=2)
    return [1, 5], b.op("Mul", [h, b.op("Cast", [mask], to=TensorProto.FLOAT)])


@case("cast_round_trip")
def _(b):
    h = b.op("Cast", [b.op("Relu", ["x"])], to=TensorProto.DOUBLE)
    return [1, 5], b.op("Cast", [h], to=TensorProto.FLOAT)


@case("constant_value_floats_and_ints", (13, 17, 21))
def _(b):
    s = b.op("Constant", [], value_ints=[1, 3, -1])
    f = b.op("Constant", [], value_floats=[0.5, -2.0])
    return [1, 2, 3], b.op("Mul", [b.op("Reshape", ["x", s]), f])


@case("shape_end_negative", (15, 17, 21))
def _(b):
    s = b.op("Shape", ["x"], end=-1)                                  # [1, 6]
    return [1, 6, 2], b.op("Relu", [b.op("Reshape", [b.op("Relu", ["x"]), b.op("Concat", [s, b.ints([2])], axis=0)])])


def build(name: str, opset: int, seed: int = 0) -> tuple[onnx.ModelProto, list[int]]:
    """The case's model; a case returns (input shape, output) or, for a form that onnx's reference
    evaluator cannot run, (input shape, output, output shape)."""
    b = Builder(np.random.default_rng(seed), opset)
    shape, y, *y_shape = CASES[name][0](b)
    return b.finish("x", shape, y, y_shape=y_shape[0] if y_shape else None), shape


PARAMS = [pytest.param(name, opset, id=f"{name}-op{opset}") for name, (_, ops) in CASES.items() for opset in ops]


@pytest.mark.parametrize("name,opset", PARAMS)
def test_converter_matches_onnxruntime(name, opset):
    model, shape = build(name, opset)
    xs = np.random.default_rng(opset).standard_normal((3,) + tuple(shape))
    graph = to_graph(model)
    assert_matches(model, graph, xs)
    assert_matches(model, graph, xs, rtol=1e-9, oracle=run_float64)
    assert_matches(model, simplify(graph), xs, rtol=1e-9, oracle=run_float64)
    m64 = to_float64(model)
    assert_matches(m64, to_graph(m64), xs, rtol=1e-9, oracle=run_float64)


def test_batchnorm_scales_the_channel_axis_without_a_batch_axis():
    """The issue's example: [2, 2, 2] without batch axis; channel c's scale on x[:, c, :]."""
    b = Builder(np.random.default_rng(0), 13)
    y = b.op("BatchNormalization", ["x", b.const([1.0, 10.0]), b.const([0.0, 0.0]), b.const([0.0, 0.0]),
                                    b.const([1.0, 1.0])], epsilon=0.0)
    graph = to_graph(b.finish("x", [2, 2, 2], y))
    from helpers_nets import ir_forward

    x = np.arange(8.0).reshape(2, 2, 2)
    want = x * np.array([1.0, 10.0]).reshape(1, 2, 1)
    assert np.allclose(ir_forward(graph, [x])[0], want.reshape(-1))


def test_globalaveragepool_keeps_the_batch_of_two():
    b = Builder(np.random.default_rng(0), 13)
    graph = to_graph(b.finish("x", [2, 3, 2, 2], b.op("GlobalAveragePool", ["x"])))
    assert graph.output_size == 6 and graph.onnx_output_shape == (2, 3, 1, 1)


# --------------------------------------------------------------------------- refused forms
REFUSED: dict[str, tuple[Callable, int, str]] = {}


def refused(name: str, opset: int, needle: str):
    def add(fn):
        REFUSED[name] = (fn, opset, needle)
        return fn
    return add


def _cast_through(to: int):
    """x cast to `to` and back to float32: the narrowing cast is what must be refused."""
    return lambda b: ([1, 4], b.op("Cast", [b.op("Cast", ["x"], to=to)], to=TensorProto.FLOAT))


for _name, _to in (("FLOAT16", TensorProto.FLOAT16), ("BFLOAT16", TensorProto.BFLOAT16)):
    # (casts to integer types and bool are step functions: tests/test_compare_ops.py)
    refused(f"cast_{_name.lower()}", 13, _name)(_cast_through(_to))


@refused("batchnorm_training_mode", 15, "training_mode")
def _(b):
    return [1, 3, 2, 2], _bn(b, "x", 3, training_mode=1, n_out=3)[0], [1, 3, 2, 2]


@refused("batchnorm_spatial0", 7, "spatial")
def _(b):
    return [1, 3], _bn(b, "x", 3, spatial=0), [1, 3]


@refused("conv_same_with_dilations", 13, "dilations")
def _(b):
    return [1, 2, 7, 8], b.op("Conv", ["x", _w(b, 3, 2, 3, 3)], auto_pad="SAME_UPPER", dilations=[2, 1])


@refused("dropout_training", 13, "training_mode")
def _(b):
    return [1, 4], b.op("Dropout", ["x", b.const(np.float32(0.5)), b.const(np.array(True), dtype=bool)])


@refused("conv_without_batch_axis", 13, "batch axis")
def _(b):
    return [2, 2, 5, 5], b.op("Conv", ["x", _w(b, 3, 2, 3, 3)])


@refused("averagepool_ceil_mode_partial", 13, "ceil_mode")
def _(b):
    return [1, 1, 6, 6], b.op("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)


@refused("averagepool_dilations", 19, "dilations")
def _(b):
    return [1, 1, 6, 6], b.op("AveragePool", ["x"], kernel_shape=[2, 2], dilations=[2, 2])


@refused("maxpool_indices", 13, "Indices")
def _(b):
    y, _ = b.op("MaxPool", ["x"], n_out=2, kernel_shape=[2, 2])
    return [1, 1, 4, 4], y


@refused("gemm_transA_of_batch", 13, "transA")
def _(b):
    return [1, 5], b.op("Gemm", ["x", _w(b, 1, 3)], transA=1)


@refused("gemm_variable_B", 13, "variable B")
def _(b):
    return [5, 2], b.op("Gemm", [_w(b, 3, 5), "x"])


@refused("matmul_two_variables_broadcast", 13, "two variables")
def _(b):   # (1, 3, 3) @ (1, 1, 3, 3): leading axes that broadcast
    return [1, 3, 3], b.op("MatMul", ["x", b.op("Unsqueeze", [b.op("Relu", ["x"]), b.ints([1])])])


@refused("matmul_batched_constant", 13, "batched constant")
def _(b):
    return [1, 2, 3, 4], b.op("MatMul", ["x", _w(b, 2, 4, 5)])


@refused("matmul_left_of_batch_row", 13, "batch axis")
def _(b):  # (3, 1) @ (1, 4): the batch axis would become a row axis
    return [1, 4], b.op("MatMul", [_w(b, 3, 1), "x"])


@refused("div_by_zero", 13, "zero")
def _(b):
    return [1, 3], b.op("Div", ["x", b.const([1.0, 0.0, 2.0])])


@refused("div_variables_broadcast", 13, "broadcasting between variables")
def _(b):
    return [1, 3], b.op("Div", ["x", b.op("ReduceSum", ["x", b.ints([1])], keepdims=1)])


@refused("mul_by_nan", 13, "NaN")
def _(b):
    return [1, 3], b.op("Mul", ["x", b.const([1.0, np.nan, 2.0])])


@refused("transpose_batch_axis_with_data", 13, "batch axis")
def _(b):   # as the network output it is read as it is; an operation after it would need the batch axis
    return [1, 3, 4], b.op("Relu", [b.op("Transpose", ["x"], perm=[1, 0, 2])])


@refused("gather_batch_axis", 13, "batch axis")
def _(b):
    return [1, 3], b.op("Gather", ["x", b.ints([0])], axis=0)


@refused("slice_empty", 13, "empty")
def _(b):
    return [1, 5], _slice(b, "x", [3], [1], [1])


@refused("pad_reflect_negative", 13, "negative pads")
def _(b):
    return [1, 2, 5], _pad(b, "x", [0, 0, -1, 0, 0, 1], "reflect"), [1, 2, 5]


@refused("squeezed_batch_axis_used", 13, "squeezed away")
def _(b):
    return [1, 5], b.op("Relu", [_squeeze(b, "Squeeze", "x", [0])])


@refused("opset_22", 22, "opset 22")
def _(b):
    return [1, 3], b.op("Relu", ["x"])


@refused("opset_6", 6, "opset 6")
def _(b):
    return [1, 3], b.op("Relu", ["x"])


def build_refused(name: str) -> tuple[onnx.ModelProto, str]:
    fn, opset, needle = REFUSED[name]
    b = Builder(np.random.default_rng(0), opset)
    shape, y, *y_shape = fn(b)
    return b.finish("x", shape, y, y_shape=y_shape[0] if y_shape else None), needle


def _node_names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type not in ("Constant",)]


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_form_names_the_node(name):
    model, needle = build_refused(name)
    with pytest.raises(ModelError) as e:
        to_graph(model)
    msg = str(e.value)
    assert needle in msg, msg
    assert "\n" not in msg
    if "opset" not in name:
        assert any(repr(n) in msg for n in _node_names(model)), msg


def _typed_model(x_type: int, y_type: int) -> onnx.ModelProto:
    """Relu on an input of x_type, output cast to y_type (onnx.helper, no float32 constants)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Cast", ["r"], ["y"], name="cast",
                                                                                  to=y_type)]
    g = helper.make_graph(nodes, "typed", [helper.make_tensor_value_info("x", x_type, [1, 3])],
                          [helper.make_tensor_value_info("y", y_type, [1, 3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("x_type,y_type,needle", [
    (TensorProto.FLOAT16, TensorProto.FLOAT, "input 'x' of element type FLOAT16"),
    (TensorProto.BFLOAT16, TensorProto.FLOAT, "input 'x' of element type BFLOAT16"),
    (TensorProto.INT64, TensorProto.FLOAT, "input 'x' of element type INT64"),
    (TensorProto.FLOAT, TensorProto.FLOAT16, "output 'y' of element type FLOAT16"),
    (TensorProto.FLOAT, TensorProto.INT32, "output 'y' of element type INT32"),
])
def test_non_float_inputs_and_outputs_are_refused(x_type, y_type, needle):
    with pytest.raises(ModelError, match=needle):
        to_graph(_typed_model(x_type, y_type))


def test_custom_domain_operator_is_refused_by_name():
    """A node of another domain is not the standard operator of the same name."""
    node = helper.make_node("Relu", ["x"], ["y"], name="my_relu", domain="com.example")
    g = helper.make_graph([node], "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    with pytest.raises(ModelError, match=r"com\.example\.Relu.*my_relu"):
        to_graph(m)


# --------------------------------------------------------------------------- the command line
def _query(path: Path, n_in: int, n_out: int) -> Path:
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    text += "".join(f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(n_in))
    path.write_text(text + "(assert (>= Y_0 1000.0))\n")
    return path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    from verifier.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", ["cast_float16", "batchnorm_training_mode", "dropout_training", "opset_22",
                                  "conv_without_batch_axis"])
def test_refused_model_exits_2_with_one_line(tmp_path, capsys, name):
    model, needle = build_refused(name)
    path = tmp_path / "net.onnx"
    path.write_bytes(model.SerializeToString())
    x = [int(d.dim_value) for d in model.graph.input[0].type.tensor_type.shape.dim]
    rc, out, err = run_cli(capsys, "verify", _query(tmp_path / "q.vnnlib", int(np.prod(x)), 1), "--network",
                           f"N={path}")
    assert rc == 2 and out == "", (rc, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert needle in err, err
