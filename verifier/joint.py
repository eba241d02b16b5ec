"""Several networks, several inputs and outputs per network, and hidden tensors, as one graph.

A VNN-LIB 2.0 query speaks of named tensors of named networks.  The engine bounds one graph
with one flat input and one flat output, so the query is composed into such a graph:

- its input z holds every declared input element, in code order (``vnnlib.property.Network``);
  each model input reads its elements from z;
- input elements tied by an equality that holds in every case (``X_f[0] == X_g[0]``) read one
  representative element, so the copies see the same variable, not two variables that merely
  share a box;
- an ordering between two input elements that holds in every case (``X_f[0] >= X_g[0]``, as in
  monotonicity queries) is built into the graph: the larger side reads max(z_a, z_b) =
  z_a + relu(z_b - z_a).  Over a box already cut by the ordering (``lower._tightened``) that
  map sends the box exactly onto the box's points that meet it, so bounds over the box are
  bounds over the constrained region, and every point the search proposes is mapped into it;
- its output is the concatenation, in code order, of every observed tensor (hidden tensors and
  outputs of each network), flattened;
- nodes of copies of one model (``equal-to``) that compute the same thing from the same
  elements are merged, so that their difference is exactly 0 in every bound.

The reference (``JointReference``) runs every model with onnxruntime on the same elements and
concatenates the same tensors: a counterexample is confirmed on every model.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from vnnlib.property import Case, Network, Property

from .ir import Graph, Node
from .onnx_import import Fragment

INPUT = "query:input"
OUTPUT = "query:observed"


class JointError(Exception):
    """The networks of the query cannot be composed (a mismatch between query and models)."""


# --------------------------------------------------------------------------- the models
@dataclass(frozen=True)
class LoadedModel:
    """One ONNX model: its IR fragment over the tensors the query reads, and onnxruntime on it
    with those tensors as outputs.  tensors: the ONNX names read, in the fragment's order;
    reads[network]: the tensor each observed variable of that network reads, in order."""

    path: str
    fragment: Fragment
    tensors: tuple[str, ...]
    reads: Mapping[str, tuple[str, ...]]
    session: object
    input_names: tuple[str, ...]
    input_dtype: type
    float_type: torch.dtype


def model_paths(prop: Property, networks: Mapping[str, str]) -> dict[str, str]:
    """The model file of every declared network: its --network, or for an equal-to network its
    model's.  JointError unless the --network names are exactly the networks that need one."""
    need = [n.name for n in prop.networks if n.equal_to is None]
    extra = sorted(set(networks) - set(need))
    missing = [n for n in need if n not in networks]
    if extra or missing:
        said = []
        if missing:
            said.append(f"no --network for {', '.join(missing)}")
        if extra:
            said.append(f"--network {', '.join(extra)} is not a network of the query that takes a model "
                        "(an equal-to network takes none)")
        raise JointError("; ".join(said))
    out = {}
    for n in prop.networks:
        out[n.name] = out[n.equal_to] if n.equal_to is not None else os.fspath(networks[n.name])
    return out


def _tensor_names(model, net: Network) -> tuple[list[str], list[str]]:
    """(ONNX input names, ONNX tensors read) for the network's declared inputs and observed
    tensors: by the names the query gives, else the model's inputs and outputs in order."""
    inits = {i.name for i in model.graph.initializer}
    ins = [i.name for i in model.graph.input if i.name not in inits]
    outs = [o.name for o in model.graph.output]
    if len(net.inputs) != len(ins):
        raise JointError(f"network {net.name} declares {len(net.inputs)} input(s) but its model has {len(ins)}")
    if len(net.outputs) != len(outs):
        raise JointError(f"network {net.name} declares {len(net.outputs)} output(s) but its model has {len(outs)}")
    for var, default, kind, names in [(v, d, "input", ins) for v, d in zip(net.inputs, ins)] + \
            [(v, d, "output", outs) for v, d in zip(net.outputs, outs)]:
        if var.onnx_name is not None and var.onnx_name not in names:
            raise JointError(f"{var.name}: the model of {net.name} has no {kind} named {var.onnx_name!r}")
    in_names = [v.onnx_name or d for v, d in zip(net.inputs, ins)]
    read = [v.onnx_name for v in net.hidden] + [v.onnx_name or d for v, d in zip(net.outputs, outs)]
    return in_names, read


def _session(model, tensors: list[str]):
    """onnxruntime on the model with exactly `tensors` as its outputs (hidden ones exposed)."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    del m.graph.output[:]
    for t in tensors:
        vi = known.get(t)
        m.graph.output.append(vi if vi is not None else onnx.helper.make_empty_tensor_value_info(t))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def load_models(prop: Property, paths: Mapping[str, str]) -> dict[str, LoadedModel]:
    """Every distinct model file, loaded once, reading what all networks on it read."""
    from .api import InputError, _float_type
    from .onnx_import import ModelError, load_model, to_fragment

    by_path: dict[str, list[Network]] = {}
    for net in prop.networks:
        by_path.setdefault(paths[net.name], []).append(net)
    out = {}
    for path, nets in by_path.items():
        try:
            model = load_model(path)
            names = [_tensor_names(model, n) for n in nets]
            inputs = names[0][0]
            if any(n[0] != inputs for n in names):
                raise JointError(f"{path}: the networks on this model name its inputs differently")
            tensors = list(dict.fromkeys(t for _, read in names for t in read))
            frag = to_fragment(model, tensors)
        except ModelError as e:
            raise InputError(str(e)) from None
        frag_inputs = [name for name, _, _ in frag.inputs]
        if frag_inputs != inputs:
            frag = dataclasses.replace(frag, inputs=tuple(frag.inputs[frag_inputs.index(i)] for i in inputs))
        try:
            session = _session(model, tensors)
        except Exception as e:  # onnxruntime's own exception types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise InputError(f"{path}: onnxruntime cannot load this model: {first}") from None
        kinds = {"tensor(float)": np.float32, "tensor(double)": np.float64}
        types = {i.name: i.type for i in session.get_inputs()}
        if any(types.get(i) not in kinds for i in inputs):
            raise InputError(f"{path}: model inputs must be float or double")
        dtypes = {kinds[types[i]] for i in inputs}
        reads = {n.name: tuple(read) for n, (_, read) in zip(nets, names)}
        model_ = LoadedModel(path, frag, tuple(tensors), reads, session, tuple(inputs),
                             np.float32 if np.float32 in dtypes else np.float64, _float_type(model))
        for n in nets:
            out[n.name] = model_
    return out


# --------------------------------------------------------------------------- the input map
@dataclass(frozen=True)
class InputMap:
    """x = S(phi(z)): phi raises each ordered element a to max(z_a, z_b) (orders: (a, b) pairs,
    z_a >= z_b in every case), then S copies each representative element to its tied ones
    (rep[i]: the representative of element i)."""

    rep: np.ndarray
    orders: tuple[tuple[int, int], ...]

    def apply(self, z: np.ndarray) -> np.ndarray:
        """Exact in any float type (max and copies do not round)."""
        z = np.array(z, copy=True).reshape(-1)
        for a, b in self.orders:
            z[a] = max(z[a], z[b])
        return z[self.rep]


def _pairs(case: Case) -> tuple[set, set]:
    """(ties, orders) the case states exactly: {(i, j)} with x_i == x_j (i < j) and {(a, b)}
    with x_a >= x_b, from comparisons with coefficients 1 and -1 and constant 0."""
    le = set()
    for lin in case.lins:
        if len(lin.vars) == 2 and lin.exact is None and lin.const == 0.0 and not lin.strict:
            if lin.coefs == (1.0, -1.0):
                le.add((lin.vars[0], lin.vars[1]))          # x_i - x_j <= 0: x_j >= x_i
            elif lin.coefs == (-1.0, 1.0):
                le.add((lin.vars[1], lin.vars[0]))          # x_j - x_i <= 0 ... stored as (small, large)
    ties = {(i, j) for i, j in le if i < j and (j, i) in le}
    orders = {(b, a) for a, b in le if (b, a) not in le}   # (large, small)
    return ties, orders


def input_map(prop: Property) -> InputMap:
    """Ties and orders that hold in every case, over representative elements; an ordered
    element that another order or a tie touches again is left to the bounds' box (sound:
    the region bounded is then larger)."""
    n = prop.n_in
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if not prop.cases:
        return InputMap(np.arange(n), ())
    sets = [_pairs(c) for c in prop.cases]
    ties = set.intersection(*(t for t, _ in sets))
    for i, j in sorted(ties):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    rep = np.array([find(i) for i in range(n)])
    orders = {(int(rep[a]), int(rep[b])) for a, b in set.intersection(*(o for _, o in sets))}
    orders = {(a, b) for a, b in orders if a != b}
    used: dict[int, int] = {}
    for a, b in orders:
        used[a] = used.get(a, 0) + 1
        used[b] = used.get(b, 0) + 1
    kept = tuple(sorted((a, b) for a, b in orders if used[a] == 1 and used[b] == 1))
    return InputMap(rep, kept)


def tied_cases(prop: Property, imap: InputMap) -> Property:
    """The property with each case's box narrowed to what its ties allow: every element of a
    class gets the intersection of the class's bounds (x_i == x_rep)."""
    if np.array_equal(imap.rep, np.arange(prop.n_in)):
        return prop
    cases = []
    for c in prop.cases:
        lo, hi = np.array(c.lo), np.array(c.hi)
        np.maximum.at(lo, imap.rep, c.lo)
        np.minimum.at(hi, imap.rep, c.hi)
        lo, hi = lo[imap.rep], hi[imap.rep]
        if np.any(lo > hi):
            continue            # the ties empty the case: it holds no input
        for arr in (lo, hi):
            arr.flags.writeable = False
        new = Case(lo, hi, c.region, c.A_in, c.b_in, c.lins)
        cases.append(new)
    return dataclasses.replace(prop, cases=tuple(cases))


# --------------------------------------------------------------------------- the graph
class _Builder:
    def __init__(self):
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}
        self.seen: dict[tuple, str] = {}
        self.shared: dict[tuple, dict] = {}

    def params(self, key: tuple, make) -> dict:
        """One params dict per key, so that equal nodes are recognised (by identity)."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]

    def add(self, name: str, op: str, inputs, params, shape) -> str:
        """Append a node, or return the existing node that computes the same (same op, same
        inputs after merging, the same params object)."""
        ins = tuple(self.alias.get(i, i) for i in inputs)
        key = (op, ins, id(params))
        if key in self.seen:
            self.alias[name] = self.seen[key]
            return self.seen[key]
        self.nodes.append(Node(name, op, ins, params, tuple(shape)))
        self.seen[key] = name
        return name


def _order_map(b: _Builder, imap: InputMap, n: int) -> str:
    """z' = z + Q relu(R z): element a of each order (a, b) raised to max(z_a, z_b)."""
    if not imap.orders:
        return INPUT
    k = len(imap.orders)
    R = torch.zeros(n, k, dtype=torch.float64)
    Q = torch.zeros(k, n, dtype=torch.float64)
    for j, (a, c) in enumerate(imap.orders):
        R[c, j], R[a, j], Q[j, a] = 1.0, -1.0, 1.0
    d = b.add("query:order_gap", "MatMul", [INPUT], {"W": R, "b": None}, (k,))
    r = b.add("query:order_relu", "Relu", [d], {}, (k,))
    lift = b.add("query:order_lift", "MatMul", [r], {"W": Q, "b": None}, (n,))
    return b.add("query:ordered", "Add", [INPUT, lift], {}, (n,))


def compose(prop: Property, models: Mapping[str, LoadedModel], imap: InputMap) -> Graph:
    """The joint graph of the query (module doc).  Node names: 'NETWORK/name'."""
    b = _Builder()
    n_in = prop.n_in
    source = _order_map(b, imap, n_in)
    offset = 0
    observed: list[tuple[str, int]] = []
    for net in prop.networks:
        lm = models[net.name]
        frag = lm.fragment
        rename: dict[str, str] = {}
        for var, (ir_name, shape, _) in zip(net.inputs, frag.inputs):
            idx = tuple(int(i) for i in imap.rep[offset:offset + var.size])
            offset += var.size
            if int(np.prod(shape, dtype=np.int64)) != var.size:
                raise JointError(f"{var.name} has {var.size} elements but the model input has shape {list(shape)}")
            p = b.params(("select", idx), lambda: {"axis": 1, "indices": torch.tensor(idx, dtype=torch.long)})
            flat = b.add(f"{net.name}/{ir_name}:flat", "Gather", [source], p, (len(idx),))
            rename[ir_name] = b.add(f"{net.name}/{ir_name}", "Reshape", [flat], b.params(("reshape", shape), dict),
                                    shape)
        for node in frag.nodes:
            ins = [rename[i] for i in node.inputs]
            rename[node.name] = b.add(f"{net.name}/{node.name}", node.op, ins, node.params, node.shape)
        for var, tensor in zip(net.observed, lm.reads[net.name]):
            ir_name, onnx_shape = frag.outputs[lm.tensors.index(tensor)]
            size = int(np.prod(onnx_shape, dtype=np.int64)) if onnx_shape else 1
            if size != var.size:
                raise JointError(f"{var.name} has {var.size} elements but the model's tensor {tensor!r} has "
                                 f"shape {list(onnx_shape)}")
            observed.append((rename[ir_name], size))
    parts = []
    for j, (name, size) in enumerate(observed):
        parts.append(b.add(f"query:observed_{j}", "Reshape", [name], b.params(("reshape", (size,)), dict), (size,)))
    n_out = sum(s for _, s in observed)
    out = b.add(OUTPUT, "Concat", parts, {"axis": 1, "parts": [None] * len(parts)}, (n_out,))
    float_types = {m.float_type for m in models.values()}
    return Graph(INPUT, (n_in,), tuple(b.nodes), out, (n_in,), (n_out,),
                 float_model=torch.float32 if torch.float32 in float_types else torch.float64)


# --------------------------------------------------------------------------- the reference
class JointReference:
    """onnxruntime on every model of the query: run(x) feeds each network its elements of x
    (through the input map) and returns every observed tensor, flattened, in code order."""

    def __init__(self, prop: Property, models: Mapping[str, LoadedModel], imap: InputMap):
        self.prop, self.models, self.imap = prop, models, imap
        dtypes = {m.input_dtype for m in models.values()}
        self.input_dtype = np.float32 if np.float32 in dtypes else np.float64

    def run(self, x_flat: np.ndarray) -> np.ndarray:
        x = self.imap.apply(np.asarray(x_flat, dtype=np.float64))
        outs, offset, done = [], 0, {}
        for net in self.prop.networks:
            lm = self.models[net.name]
            feeds = {}
            for var, name, (_, _, onnx_shape) in zip(net.inputs, lm.input_names, lm.fragment.inputs):
                feeds[name] = x[offset:offset + var.size].astype(lm.input_dtype).reshape(onnx_shape)
                offset += var.size
            got = dict(zip(lm.tensors, lm.session.run(list(lm.tensors), feeds)))
            outs += [np.asarray(got[t], dtype=np.float64).reshape(-1) for t in lm.reads[net.name]]
        return np.concatenate(outs)

    def place(self, z: np.ndarray, case: Case) -> np.ndarray | None:
        """The candidate z mapped into the region's float points: the input map applied, each
        tie class's value clamped to the floats that every member's bounds admit, and the map
        applied again (orders hold after clamping); None when a class admits no float."""
        box = case.float_box(self.input_dtype)
        if box is None:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            x = self.imap.apply(np.asarray(z, dtype=np.float64)).astype(self.input_dtype)
        if not np.all(np.isfinite(x)):
            return None
        rep = self.imap.rep
        lo = np.full(x.shape, -np.inf, dtype=self.input_dtype)
        hi = np.full(x.shape, np.inf, dtype=self.input_dtype)
        np.maximum.at(lo, rep, box[0])
        np.minimum.at(hi, rep, box[1])
        if np.any(lo[rep] > hi[rep]):
            return None
        return self.imap.apply(np.minimum(np.maximum(x[rep], lo[rep]), hi[rep]))


def needs_joint(prop: Property) -> bool:
    """Whether the query needs the composed graph: anything beyond one network with one input
    and one output, each the model's own."""
    if len(prop.networks) != 1:
        return len(prop.networks) > 1
    net = prop.networks[0]
    return len(net.inputs) != 1 or len(net.outputs) != 1 or bool(net.hidden)


def load_joint(prop: Property, networks: Mapping[str, str]):
    """(graph, reference, property) of a query over several networks or tensors: the composed
    graph (simplified, float64, CPU), its reference, and the property with its ties applied."""
    from .api import InputError
    from .simplify import simplify

    try:
        paths = model_paths(prop, networks)
        models = load_models(prop, paths)
        imap = input_map(prop)
        tied = tied_cases(prop, imap)
        graph = simplify(compose(tied, models, imap))
    except JointError as e:
        raise InputError(str(e)) from None
    return graph, JointReference(tied, models, imap), tied
