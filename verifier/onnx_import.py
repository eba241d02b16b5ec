"""ONNX model -> graph IR: load, check, infer shapes, fold constants, convert op by op.

Every ONNX op is converted by the function registered for it in verifier.ops; anything the
registry lacks is reported, all at once and by name, before any other work starts.
"""
from __future__ import annotations

import functools
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import onnx_proto
from .capabilities import CAPABILITIES
from .ir import Graph, Node
from .onnx_proto import attribute_value, to_array, type_name
from .ops import CONVERTERS, RULES

# the opsets `supports --onnx-opset-versions` reports (first and last): one source for both
OPSETS = tuple(int(v) for v in CAPABILITIES["--onnx-opset-versions"])
# element types of the network's input and output: float32 and float64 (float16 / bfloat16 would
# make their rounding, 1e-3 to 4e-3 relative, part of the function; integers are not ours to bound)
FLOAT_TYPES = {onnx_proto.FLOAT: "float32", onnx_proto.DOUBLE: "float64"}


class ModelError(Exception):
    """The model cannot be read or contains something the verifier does not support.
    named: the message already names the node it concerns."""

    def __init__(self, message: str, named: bool = False):
        super().__init__(message)
        self.named = named


def load_model(path: str | Path) -> onnx_proto.ModelProto:
    """The model in path (plain or gzip-compressed), decoded by onnx_proto (read-only
    messages).  Not checked against the operator schemas here: onnxruntime does that when it
    loads the model (api.load_checked, joint.load_models), before any answer."""
    path = Path(path)
    try:
        stat = path.stat()
        decode = _decoded if stat.st_size <= CACHED_MODEL_BYTES else _decoded.__wrapped__
        return decode(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except (OSError, EOFError, ValueError, RecursionError, zlib.error) as e:   # unreadable, corrupt gzip, not protobuf
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None


CACHED_MODEL_BYTES = 64 << 20   # larger files are decoded again rather than kept beside their graph


@functools.lru_cache(maxsize=4)
def _decoded(path: str, mtime_ns: int, size: int) -> onnx_proto.ModelProto:
    """One decoding per file version in a process (the CLI reads a model's types before the
    engine loads it)."""
    model = onnx_proto.load_model_bytes(model_bytes(path))
    if not model.HasField("graph"):
        raise onnx_proto.DecodeError("no graph")
    return model


def model_bytes(path: str | Path) -> bytes:
    path = Path(path)
    return gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()


def _attrs(node) -> dict:
    return {a.name: attribute_value(a) for a in node.attribute}


class ImportContext:
    """State of one conversion: maps ONNX value names to IR values or constants."""

    def __init__(self, offset: int, opset: int = OPSETS[-1]):
        self.offset = offset  # 0: the ONNX tensors have a leading batch axis; 1: they have none
        self.opset = opset    # of the standard domain: where an op's defaults changed between opsets
        self.values: dict[str, str] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.nodes: list[Node] = []
        # IR values whose ONNX tensor has lost the leading batch axis (offset 0, a Squeeze of it):
        # their true ONNX shape; only the network output may be such a value
        self.batchless: dict[str, tuple[int, ...]] = {}
        # IR values that hold integers or booleans (ops/compare.py: comparisons, integer casts,
        # ArgMax), and the ONNX outputs the query reads as integers (verifier/argmax.py)
        self.integer: set[str] = set()
        self.integer_outputs: frozenset[str] = frozenset()
        self._fresh = 0

    # --- reading
    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, name: str) -> np.ndarray:
        if name not in self.consts:
            raise ModelError(f"value {name!r} is computed from the network input, where only a constant "
                             "is supported")
        return self.consts[name]

    def lift(self, node, x: str, rank: int) -> str:
        """x reshaped to ONNX rank `rank` by leading unit axes (numpy broadcasting's implicit
        padding, made explicit so that the IR's batch axis stays in front)."""
        s = self.onnx_shape(x)
        if len(s) >= rank:
            return x
        return self.emit("Reshape", [x], {}, shape=self.ir_shape((1,) * (rank - len(s)) + tuple(s), node))

    def broadcast_const(self, node, x: str, name: str) -> tuple[str, np.ndarray]:
        """The variable x and the constant `name`, operands of an elementwise op, arranged so that
        torch broadcasting of the batched x (B, *shape) with the constant follows ONNX's rules."""
        c = np.asarray(self.const(name), dtype=np.float64)
        rank = max(len(self.onnx_shape(x)), c.ndim)
        if self.offset == 0 and c.ndim == rank and c.shape[0] != 1:
            raise self.unsupported(node, f"a constant of shape {list(c.shape)} that broadcasts over the batch axis")
        return self.lift(node, x, rank), c

    def var(self, name: str) -> str:
        if name not in self.values:
            raise ModelError(f"value {name!r} is not computed from the network input")
        return self.values[name]

    def attrs(self, node) -> dict:
        return _attrs(node)

    def shape(self, ir_name: str) -> tuple[int, ...]:
        return self.shapes[ir_name]

    def onnx_shape(self, ir_name: str) -> tuple[int, ...]:
        if ir_name in self.batchless:
            return self.batchless[ir_name]
        return ((1,) if self.offset == 0 else ()) + self.shapes[ir_name]

    def needs_batch_axis(self, node, x: str) -> None:
        """Ops whose ONNX input is (N, C, ...) with N a batch axis (Conv, pooling): the IR
        computes them on its own batch axis, which is only N when N is the model's batch of 1."""
        if self.offset == 1:
            raise self.unsupported(node, f"{node.op_type} on a tensor of shape {list(self.onnx_shape(x))} "
                                         "whose first axis is not a batch axis of size 1")

    def ir_shape(self, onnx_shape, node) -> tuple[int, ...]:
        onnx_shape = tuple(int(d) for d in onnx_shape)
        if self.offset == 1:
            return onnx_shape
        if not onnx_shape or onnx_shape[0] != 1:
            raise self.unsupported(node, f"an output shape {list(onnx_shape)} that does not keep the batch axis")
        return onnx_shape[1:]

    def torch_pads(self, begin, end) -> tuple[int, ...]:
        out: list[int] = []
        for b, e in zip(reversed(list(begin)), reversed(list(end))):
            out += [int(b), int(e)]
        return tuple(out)

    def tensor(self, a) -> torch.Tensor:
        return torch.as_tensor(np.array(a, dtype=np.float64))  # a copy: constants may be read-only views

    def unsupported(self, node, what: str) -> ModelError:
        return ModelError(f"unsupported: {what} (node {node.name or node.output[0]!r}, op {node.op_type})", True)

    # --- writing
    def emit(self, op: str, inputs: list[str], params: dict, out: str | None = None,
             shape: tuple[int, ...] | None = None) -> str:
        if any(i in self.batchless for i in inputs):
            raise ModelError("an operation on a value whose batch axis was squeezed away "
                             "(only the network output may lose it)")
        self._fresh += 1
        name = f"{op.lower()}_{self._fresh}" if out is None else f"{out}"
        if name in self.shapes:
            name = f"{name}__{self._fresh}"
        if shape is None:
            xs = [torch.zeros((1,) + self.shapes[i], dtype=torch.float64) for i in inputs]
            shape = tuple(RULES[op].evaluate(Node(name, op, tuple(inputs), params, ()), *xs).shape[1:])
        self.nodes.append(Node(name, op, tuple(inputs), params, tuple(shape)))
        self.shapes[name] = tuple(shape)
        if out is not None:
            self.values[out] = name
        return name

    def alias(self, onnx_out: str, onnx_in: str) -> None:
        if onnx_in in self.consts:
            self.consts[onnx_out] = self.consts[onnx_in]
        else:
            self.values[onnx_out] = self.var(onnx_in)

    def bind(self, onnx_out: str, ir_name: str) -> None:
        self.values[onnx_out] = ir_name


def _fold_constant(node, ctx: ImportContext, opset: int) -> None:
    """Evaluate a node whose inputs are all constants with ONNX's reference evaluator."""
    if node.op_type == "Constant":
        a = _attrs(node)
        kinds = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
        if "value" in a:
            ctx.consts[node.output[0]] = to_array(a["value"])
            return
        for key, dtype in kinds.items():
            if key in a:
                ctx.consts[node.output[0]] = np.asarray(a[key], dtype=dtype)
                return
        raise ctx.unsupported(node, f"Constant given by {', '.join(a) or 'nothing'}")
    import onnx
    from onnx.reference import ReferenceEvaluator

    inputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.input if n]
    outputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
    g = onnx.helper.make_graph([onnx_proto.to_onnx(node)], "fold", inputs, outputs)
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {n: ctx.consts[n] for n in node.input if n}
    results = ReferenceEvaluator(m).run(None, feeds)
    for name, value in zip([n for n in node.output if n], results):
        ctx.consts[name] = np.asarray(value)


def _static_shape(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def _input_layouts(model: onnx_proto.ModelProto) -> tuple[list[tuple[str, tuple[int, ...], tuple[int, ...]]], int]:
    """[(name, IR shape, ONNX shape)] of every network input, and the batch-axis convention
    they share (offset 0: a leading axis of size 1 that the IR's batch axis replaces; 1: none)."""
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if not ins:
        raise ModelError("unsupported: the model has no input")
    out, offsets = [], set()
    for vi in ins:
        dims = _static_shape(vi)
        offset = 0 if len(dims) >= 2 and dims[0] in (None, 0, 1) else 1
        rest = dims[1:] if offset == 0 else dims
        if any(d in (None, 0) for d in rest):
            raise ModelError(f"unsupported: input {vi.name!r} has a dynamic shape {dims}")
        out.append((vi.name, tuple(rest), ((1,) if offset == 0 else ()) + tuple(rest)))
        offsets.add(offset)
    if len(offsets) > 1:
        raise ModelError("unsupported: inputs of which some have a leading batch axis and some not")
    return out, offsets.pop()


def _shape_of_var(ctx: ImportContext, node) -> np.ndarray:
    """Shape of a variable value as a constant (shapes are static), honouring start/end (opset 15+)."""
    full = ctx.onnx_shape(ctx.var(node.input[0]))
    a = _attrs(node)
    start, end = a.get("start", 0), a.get("end", len(full))
    return np.asarray(full[slice(start, end)], dtype=np.int64)


# ops the importer handles itself (folded to constants), not through a converter
_IMPORTER_OPS = ("Constant", "Shape")


def check_supported(model: onnx_proto.ModelProto) -> None:
    missing: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):  # a custom op may share a standard op's name
            missing.setdefault(f"{n.domain}.{n.op_type}", []).append(n.name or n.output[0])
        elif n.op_type not in CONVERTERS and n.op_type not in _IMPORTER_OPS:
            missing.setdefault(n.op_type, []).append(n.name or n.output[0])
    if missing:
        parts = [f"{op} (node {', '.join(repr(x) for x in names[:3])}{', ...' if len(names) > 3 else ''})"
                 for op, names in sorted(missing.items())]
        raise ModelError("unsupported operators: " + "; ".join(parts))


def _opset(model: onnx_proto.ModelProto) -> int:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSETS[0] <= opset <= OPSETS[-1]:
        raise ModelError(f"unsupported: opset {opset} (supported: {OPSETS[0]} to {OPSETS[-1]})")
    return opset


def check_element_types(model: onnx_proto.ModelProto, integer_outputs: frozenset[str] = frozenset()) -> None:
    """The network's input and output must be float32 or float64, but for the outputs named in
    integer_outputs (ArgMax results a query reads, verifier/argmax.py), which must be int64."""
    inits = {i.name for i in model.graph.initializer}
    for kind, vis in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in vis:
            t = vi.type.tensor_type.elem_type
            if kind == "output" and vi.name in integer_outputs and t == onnx_proto.INT64:
                continue
            if vi.name not in inits and t not in FLOAT_TYPES:
                name = type_name(t)
                hint = " (an int64 ArgMax result is read when a VNN-LIB 2.0 query declares it int64)" \
                    if kind == "output" and t == onnx_proto.INT64 else ""
                raise ModelError(f"unsupported: network {kind} {vi.name!r} of element type {name} "
                                 f"(supported: {', '.join(FLOAT_TYPES.values())}){hint}")


@dataclass(frozen=True)
class Fragment:
    """A model in the IR with all its inputs and any tensors read as outputs.

    inputs: (IR name, IR shape, ONNX shape) per model input, in the model's order;
    outputs: (IR name, ONNX shape) per tensor asked for; nodes: those the outputs need, in
    topological order (an output may be an input itself)."""

    inputs: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    nodes: tuple[Node, ...]
    outputs: tuple[tuple[str, tuple[int, ...]], ...]


def to_fragment(model: onnx_proto.ModelProto, tensors: list[str] | None = None,
                integer_outputs: frozenset[str] = frozenset()) -> Fragment:
    """Convert a checked model to the IR (float64 parameters on the CPU), reading the ONNX
    tensors named (default: the model's outputs, in order).  integer_outputs: the int64 outputs
    (ArgMax results) that verifier/argmax.py has checked and may read."""
    check_supported(model)
    opset = _opset(model)
    check_element_types(model, integer_outputs)
    layouts, offset = _input_layouts(model)
    ctx = ImportContext(offset, opset)
    ctx.integer_outputs = frozenset(integer_outputs)
    for name, shape, _ in layouts:
        ctx.values[name] = name
        ctx.shapes[name] = shape
    for init in model.graph.initializer:
        ctx.consts[init.name] = to_array(init)
    for node in model.graph.node:
        _import_node(ctx, node, opset)
    tensors = [o.name for o in model.graph.output] if tensors is None else list(tensors)
    outs = []
    for t in tensors:
        if t not in ctx.values:
            what = "is not a tensor of the model" if t not in ctx.consts else "does not depend on the input"
            raise ModelError(f"unsupported: the tensor {t!r} {what}")
        ir = ctx.var(t)
        outs.append((ir, ctx.onnx_shape(ir)))
    live = _live_nodes(ctx.nodes, {ir for ir, _ in outs})
    return Fragment(tuple(layouts), tuple(live), tuple(outs))


def to_graph(model: onnx_proto.ModelProto) -> Graph:
    """Convert a checked model of one input and one output to the IR (float64, CPU)."""
    check_supported(model)
    if len(model.graph.output) != 1:
        raise ModelError(f"unsupported: {len(model.graph.output)} network outputs (exactly one is supported)")
    inits = {i.name for i in model.graph.initializer}
    n_in = sum(1 for i in model.graph.input if i.name not in inits)
    if n_in != 1:
        raise ModelError(f"unsupported: {n_in} network inputs (exactly one is supported)")
    frag = to_fragment(model)
    (name, shape, onnx_shape), = frag.inputs
    (out_ir, out_shape), = frag.outputs
    return Graph(name, shape, frag.nodes, out_ir, onnx_shape, out_shape)


# ops whose converters are exact on integer and boolean tensors held as floats: copies and
# selections (their outputs stay integer), and the ops that read integers themselves (Cast,
# comparisons).  Any other op (Div, Mod, Floor, arithmetic that may overflow, ...) on an integer
# tensor would be computed as real arithmetic, which is not what the model computes: refused.
INTEGER_COPIES = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Gather", "Slice",
                  "Concat", "Expand", "Tile", "Split")
INTEGER_READERS = ("Cast", "Shape", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")


def _integer_inputs(ctx: ImportContext, node) -> list[str]:
    return [i for i in node.input if i and i in ctx.values and ctx.values[i] in ctx.integer]


def _import_node(ctx: ImportContext, node, opset: int) -> None:
    """Fold or convert one node; every failure becomes a ModelError that names the node."""
    first = len(ctx.nodes)
    ints = _integer_inputs(ctx, node)
    try:
        if ints and node.op_type not in INTEGER_COPIES + INTEGER_READERS:
            raise ctx.unsupported(node, f"{node.op_type} of the integer tensor {ints[0]!r} (integer and boolean "
                                        f"tensors are only copied, compared or cast)")
        if node.op_type == "Shape" and node.input[0] in ctx.values:
            ctx.consts[node.output[0]] = _shape_of_var(ctx, node)
        elif all((not i) or ctx.is_const(i) for i in node.input):
            _fold_constant(node, ctx, opset)
        else:
            CONVERTERS[node.op_type](ctx, node)
            if ints and node.op_type in INTEGER_COPIES:
                ctx.integer.update(ctx.values[o] for o in node.output if o in ctx.values)
    except ModelError as e:
        raise e if e.named else ctx.unsupported(node, str(e)) from None
    except Exception as e:  # a form the converter or torch rejects: the model's, not a verdict
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelError(f"cannot import node {node.name or node.output[0]!r} (op {node.op_type}): {msg}",
                         True) from None
    for n in ctx.nodes[first:]:
        if not all(_finite(v) for v in n.params.values()):
            raise ctx.unsupported(node, "a constant with NaN or infinite entries")


def _finite(v) -> bool:
    if isinstance(v, torch.Tensor) and v.is_floating_point():
        return bool(torch.isfinite(v).all())
    if isinstance(v, (list, tuple)):
        return all(_finite(p) for p in v)
    if isinstance(v, float):
        return bool(np.isfinite(v))
    return True


def _live_nodes(nodes: list[Node], outs: set[str]) -> list[Node]:
    needed = set(outs)
    keep = []
    for n in reversed(nodes):
        if n.name in needed:
            keep.append(n)
            needed.update(n.inputs)
    return keep[::-1]


def load_graph(path: str | Path) -> Graph:
    return to_graph(load_model(path))
