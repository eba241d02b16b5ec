"""Builders of small ONNX models (onnx.helper) and the reference executions they are checked
against.  Shared by the loader, rule and bound-soundness tests; nothing here imports the
verifier's bound code, so a bug there cannot hide in the oracle.

Weights are float32 (what real models carry); the verifier computes in float64, so an IR
forward pass and onnxruntime agree to ~1e-7 relative, far inside the 1e-5 the tests allow.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier.onnx_import import to_graph

F32 = TensorProto.FLOAT


# --------------------------------------------------------------------------- model assembly
class Builder:
    """Accumulates nodes and initialisers; fresh value names; finishes into a ModelProto."""

    def __init__(self, rng: np.random.Generator | None = None, opset: int = 13):
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value, dtype=np.float32, stem: str = "c") -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values, stem: str = "i") -> str:
        return self.const(np.asarray(values, dtype=np.int64), np.int64, stem)

    def randn(self, *shape, scale: float = 1.0) -> str:
        return self.const(self.rng.standard_normal(shape) * scale)

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    # common layers -------------------------------------------------------------------
    def gemm(self, x: str, n_in: int, n_out: int, scale: float | None = None) -> str:
        s = (1.0 / np.sqrt(n_in)) if scale is None else scale
        return self.op("Gemm", [x, self.randn(n_out, n_in, scale=s), self.randn(n_out, scale=0.5)], transB=1)

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, **attrs) -> str:
        W = self.randn(c_out, c_in // attrs.get("group", 1), k, k, scale=1.0 / np.sqrt(c_in * k * k))
        return self.op("Conv", [x, W, self.randn(c_out, scale=0.3)], kernel_shape=[k, k], **attrs)

    def batchnorm(self, x: str, c: int) -> str:
        r = self.rng
        return self.op("BatchNormalization", [x, self.const(r.uniform(0.5, 1.5, c)), self.const(r.normal(0, 0.3, c)),
                                              self.const(r.normal(0, 0.3, c)), self.const(r.uniform(0.5, 2.0, c))],
                       epsilon=1e-3)

    def finish(self, x_name: str, x_shape: Sequence[int], y: str, x_type: int = F32,
               y_shape: Sequence[int] | None = None) -> onnx.ModelProto:
        """The model with input x_name (x_shape, x_type) and output y; y's type and shape are
        those of ONNX's reference evaluator on a zero input (the checker wants them declared),
        or x_type and y_shape when y_shape is given."""
        from onnx.reference import ReferenceEvaluator

        opsets = [helper.make_opsetid("", self.opset)]
        x = helper.make_tensor_value_info(x_name, x_type, list(x_shape))

        ir_version = helper.find_min_ir_version_for(opsets)
        # before IR version 4 (opsets 7 and 8) every initializer must also be a graph input
        listed = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits
                  ] if ir_version < 4 else []

        def model(out: onnx.ValueInfoProto) -> onnx.ModelProto:
            g = helper.make_graph(self.nodes, "net", [x] + listed, [out], initializer=self.inits)
            return helper.make_model(g, opset_imports=opsets, ir_version=ir_version)

        if y_shape is not None:  # forms the reference evaluator lacks (negative pads, ...): as declared
            m = model(helper.make_tensor_value_info(y, x_type, list(y_shape)))
            onnx.checker.check_model(m)
            return m
        probe = model(helper.make_tensor_value_info(y, x_type, None))
        zero = np.zeros(x_shape, dtype=helper.tensor_dtype_to_np_dtype(x_type))
        y_val = np.asarray(ReferenceEvaluator(probe).run(None, {x_name: zero})[0])
        m = model(helper.make_tensor_value_info(y, helper.np_dtype_to_tensor_dtype(y_val.dtype), list(y_val.shape)))
        onnx.checker.check_model(m, full_check=True)
        return m


def case_registry(default_opsets):
    """(cases, case): a dict of named model builders and the decorator that fills it, each
    builder with the opsets its form exists in (default_opsets unless given)."""
    cases: dict = {}

    def case(name: str, opsets=default_opsets):
        def add(fn):
            assert name not in cases
            cases[name] = (fn, opsets)
            return fn
        return add
    return cases, case


# --------------------------------------------------------------------------- reference runs
def input_info(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits][0]


def numpy_dtype(model: onnx.ModelProto):
    return onnx.helper.tensor_dtype_to_np_dtype(input_info(model).type.tensor_type.elem_type)


def run_onnxruntime(model: onnx.ModelProto | bytes, x: np.ndarray) -> np.ndarray:
    """x in the model's own input shape; cast to the model's input element type."""
    import onnxruntime as ort

    m = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return s.run(None, {input_info(m).name: x.astype(numpy_dtype(m))})[0]


def _inference_batchnorm():
    """BatchNormalization in inference mode, as ONNX (opsets 9-14 without training_mode) and
    onnxruntime define it.  onnx 1.23's reference evaluator fills in the schema's default
    momentum and then normalises with the batch's own statistics (off by 0.07 on a 5x5 map)."""
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None, **_):
            eps = 1e-5 if epsilon is None else epsilon
            axes = (-1,) + (1,) * (x.ndim - 2)
            y = scale.reshape(axes) * (x - mean.reshape(axes)) / np.sqrt(var.reshape(axes) + eps) + bias.reshape(axes)
            return (y.astype(x.dtype),)
    return BatchNormalization


def run_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(model, new_ops=[_inference_batchnorm()])
    return ev.run(None, {input_info(model).name: x.astype(numpy_dtype(model))})[0]


def ir_forward(graph, xs: Sequence[np.ndarray]) -> np.ndarray:
    """The IR forward pass on inputs xs (each in the ONNX input shape), run as ONE batch so
    that an op mixing the batch axis with a data axis shows; (len(xs), n_out) flattened."""
    from verifier.evaluate import forward

    t = torch.as_tensor(np.stack([np.asarray(x, dtype=np.float64).reshape(graph.input_shape) for x in xs]))
    y = forward(graph, t)
    assert tuple(y.shape) == (len(xs),) + tuple(graph.output_shape), \
        f"batched output {tuple(y.shape)} is not (B,) + graph.output_shape {graph.output_shape}"
    return y.reshape(len(xs), -1).numpy()


def assert_matches(model: onnx.ModelProto, graph, xs: Sequence[np.ndarray], rtol: float = 1e-5,
                   oracle=run_onnxruntime) -> None:
    """IR forward equals the oracle on every x in xs within rtol relative to max |output|."""
    xs = [np.asarray(x).astype(numpy_dtype(model)) for x in xs]  # both sides see the same input
    got = ir_forward(graph, xs)
    for i, x in enumerate(xs):
        ref = np.asarray(oracle(model, x), dtype=np.float64).reshape(-1)
        assert got[i].size == ref.size, f"IR output has {got[i].size} elements, the reference {ref.size}"
        scale = max(1e-30, float(np.abs(ref).max())) if ref.size else 1.0
        err = float(np.abs(got[i] - ref).max()) if ref.size else 0.0
        assert err <= rtol * scale, f"input {i}: IR forward differs from reference by {err:.3e} (max |y| {scale:.3e})"


# --------------------------------------------------------------------------- random networks
def random_mlp(rng: np.random.Generator, n_in: int, hidden: Sequence[int], n_out: int,
               acts: Sequence[str], opset: int = 13) -> onnx.ModelProto:
    """Gemm / activation stack; acts[i] follows hidden layer i (cycled)."""
    b = Builder(rng, opset)
    h, width = "x", n_in
    for i, w in enumerate(hidden):
        h = b.op(acts[i % len(acts)], [b.gemm(h, width, w)])
        width = w
    return b.finish("x", [1, n_in], b.gemm(h, width, n_out))


def random_convnet(rng: np.random.Generator, c: int = 2, hw: int = 6, pool: str = "avg",
                   act: str = "Relu") -> onnx.ModelProto:
    """Conv -> BN -> act -> pool -> Conv(strided, padded) -> act -> Flatten -> Gemm."""
    b = Builder(rng, 13)
    h = b.conv("x", c, 3, 3, pads=[1, 1, 1, 1])
    h = b.op(act, [b.batchnorm(h, 3)])
    if pool == "avg":
        h = b.op("AveragePool", [h], kernel_shape=[2, 2], strides=[1, 1])
    else:
        h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[1, 1])
    s = hw - 1
    h = b.op("Relu", [b.conv(h, 3, 4, 3, strides=[2, 2], pads=[1, 0, 1, 1])])
    s2h, s2w = (s + 2 - 3) // 2 + 1, (s + 1 - 3) // 2 + 1
    h = b.op("Flatten", [h], axis=1)
    return b.finish("x", [1, c, hw, hw], b.gemm(h, 4 * s2h * s2w, 3))


def random_residual(rng: np.random.Generator, c: int = 2, hw: int = 5) -> onnx.ModelProto:
    """x -> conv -> relu -> conv, plus a shortcut: relu(conv(x) + conv2(relu(conv1(x)))) -> Gemm."""
    b = Builder(rng, 13)
    a = b.op("Relu", [b.conv("x", c, 3, 3, pads=[1, 1, 1, 1])])
    main = b.conv(a, 3, 3, 3, pads=[1, 1, 1, 1])
    short = b.conv("x", c, 3, 1)
    h = b.op("Relu", [b.op("Add", [main, short])])
    h = b.op("Flatten", [b.op("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2])], axis=1)
    k = 3 * (hw // 2) ** 2
    return b.finish("x", [1, c, hw, hw], b.gemm(h, k, 3))


def random_branches(rng: np.random.Generator, n_in: int = 4) -> onnx.ModelProto:
    """Gemm -> split by Slice into two branches (Relu / Tanh), Sub of branches, Concat with the
    other branch and a constant, Gemm."""
    b = Builder(rng, 13)
    h = b.gemm("x", n_in, 8)
    left = b.op("Slice", [h, b.ints([0]), b.ints([4]), b.ints([1])])
    right = b.op("Slice", [h, b.ints([-4]), b.ints([100]), b.ints([1])])
    left = b.op("Relu", [left])
    right = b.op("Tanh", [b.gemm(right, 4, 4)])
    diff = b.op("Sub", [left, right])
    cat = b.op("Concat", [diff, b.const(rng.standard_normal((1, 2))), right], axis=1)
    h = b.op("Sigmoid", [b.gemm(cat, 10, 5)])
    return b.finish("x", [1, n_in], b.gemm(h, 5, 3))


def graph_of(model: onnx.ModelProto):
    return to_graph(model)


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network computing in float64: float initialisers, Constant values, Casts to
    float and declared value types become double.  onnxruntime on it is a rounding-free
    oracle (1e-12 relative) for a float64 IR, where float32 runs only agree to ~1e-6."""
    m = onnx.ModelProto.FromString(model.SerializeToString())   # onnx's, or verifier.onnx_proto's
    g = m.graph

    def widen(t: onnx.TensorProto) -> None:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))

    for t in g.initializer:
        widen(t)
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                widen(a.t)
            if n.op_type == "Constant" and a.name in ("value_float", "value_floats"):
                v = np.asarray(a.f if a.name == "value_float" else list(a.floats), dtype=np.float64)
                a.CopyFrom(helper.make_attribute("value", numpy_helper.from_array(v)))
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.DOUBLE
    return m


def run_float64(model: onnx.ModelProto, x: np.ndarray, widen=None) -> np.ndarray:
    """The network in float64 (widen, default to_float64): onnxruntime, or ONNX's reference
    evaluator for the kernels onnxruntime's CPU provider lacks in double (Conv, AveragePool,
    GlobalAveragePool: NOT_IMPLEMENTED)."""
    m64 = (widen or to_float64)(model)
    try:
        return run_onnxruntime(m64, x)
    except Exception as e:  # onnxruntime's own exception types
        if "NOT_IMPLEMENTED" not in str(e):
            raise
        return run_reference(m64, x)


def random_exotic(rng: np.random.Generator) -> onnx.ModelProto:
    """Unusual wiring: an activation straight on the input, activation chains, reflect padding,
    a transpose, a value added to itself, a gather with repeated indices, a concat of one value
    with itself, and large weights that saturate Sigmoid / Tanh (pre-activations of +-30)."""
    b = Builder(rng, 13)
    h = b.op("Relu", ["x"])                                              # [1, 2, 4, 4]
    h = b.op("Pad", [h, b.ints([0, 0, 1, 0, 0, 0, 0, 1])], mode="reflect")  # [1, 2, 5, 5]
    h = b.op("Tanh", [b.op("Sigmoid", [b.conv(h, 2, 3, 2)])])            # [1, 3, 4, 4]
    h = b.op("Transpose", [h], perm=[0, 2, 3, 1])                        # [1, 4, 4, 3]
    h = b.op("Add", [h, h])
    h = b.op("Gather", [h, b.ints([0, 2, 2, 3])], axis=1)                # [1, 4, 4, 3]
    h = b.op("Flatten", [h], axis=1)                                     # [1, 48]
    h = b.op("Concat", [h, b.op("Neg", [h])], axis=1)                    # [1, 96]
    h = b.op("Sigmoid", [b.gemm(h, 96, 6, scale=1.5)])
    h = b.op("Tanh", [b.gemm(h, 6, 5, scale=6.0)])
    h = b.op("Relu", [b.gemm(h, 5, 4, scale=2.0)])
    return b.finish("x", [1, 2, 4, 4], b.gemm(h, 4, 2))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tensors here are tiny: one intra-op thread is 4-40x faster than two when other processes
    load the machine (thread hand-offs dominate).  Restored afterwards.  Import it into a test
    module to apply it there."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
