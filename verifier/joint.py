"""Several networks, several inputs and outputs per network, and hidden tensors, as one graph.

A VNN-LIB 2.0 query speaks of named tensors of named networks.  The engine bounds one graph
with one flat input and one flat output, so the query is composed into such a graph:

- its input z holds every declared input element, in code order (``vnnlib.property.Network``);
  each model input reads its elements from z;
- input elements tied by an equality that holds in every case (``X_f[0] == X_g[0]``, or with a
  float offset, ``X_g[0] == X_f[0] + 0.0078125``) read one representative element (plus the
  offset), so the copies see the same variable, not two variables that merely share a box;
- an ordering between two input elements that holds in every case (``X_f[0] >= X_g[0]``, as in
  monotonicity queries) is built into the graph: the larger side reads max(z_a, z_b) =
  z_a + relu(z_b - z_a).  Over a box already cut by the ordering (``lower._tightened``) that
  map sends the box exactly onto the box's points that meet it, so bounds over the box are
  bounds over the constrained region, and every point the search proposes is mapped into it;
- its output is the concatenation, in code order, of every observed tensor (hidden tensors and
  outputs of each network), flattened, and of the inputs again when a comparison mixes inputs
  with outputs (MNC), then of the logits of every ArgMax output the query reads as an integer
  (``verifier/argmax.py`` rewrites the comparisons on it onto them);
- nodes of copies of one model (``equal-to``) that compute the same thing from the same
  elements are merged, so that their difference is exactly 0 in every bound;
- a copy whose inputs are related to its model's but not all tied, or whose weights differ
  (``isomorphic-to``), is built as its model plus a difference (``_Difference``), for queries
  over the reals.

The reference (``JointReference``) runs every model with onnxruntime on the same elements and
concatenates the same tensors: a counterexample is confirmed on every model.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping

import numpy as np
import torch

from vnnlib.property import Case, Network, Property
from vnnlib.v2 import ECHO

from .argmax import ArgMaxError, ArgMaxRead, argmax_reads, reads_integers, rewrite
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
    reads[network]: the tensor each observed variable of that network reads, in order;
    argmax[network]: its outputs that are ArgMax results read as integers (their logits are
    among the tensors)."""

    path: str
    fragment: Fragment
    tensors: tuple[str, ...]
    reads: Mapping[str, tuple[str, ...]]
    session: object
    input_names: tuple[str, ...]
    input_dtype: type
    float_type: torch.dtype
    argmax: Mapping[str, tuple[ArgMaxRead, ...]] = field(default_factory=dict)


def model_paths(prop: Property, networks: Mapping[str, str]) -> dict[str, str]:
    """The model file of every declared network: its --network, or for an equal-to network its
    model's.  JointError unless the --network names are exactly the networks that need one (the
    one check, for the command line and the Python API alike)."""
    need = [n.name for n in prop.networks if n.equal_to is None]
    if sorted(networks) != sorted(need):
        raise JointError(f"the query declares network(s) {', '.join(need)} that take a model (an equal-to "
                         f"network takes none) but --network gave {', '.join(sorted(networks)) or 'none'}")
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

    from .onnx_proto import to_onnx

    m = to_onnx(model)
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
            picked = {n.name: argmax_reads(model, n, read[len(n.hidden):]) for n, (_, read) in zip(nets, names)}
            logits = [r.logits for reads in picked.values() for r in reads]
            tensors = list(dict.fromkeys([t for _, read in names for t in read] + logits))
            ints = frozenset(r.tensor for reads in picked.values() for r in reads)
            frag = to_fragment(model, tensors, integer_outputs=ints)
        except ModelError as e:
            raise InputError(str(e)) from None
        except ArgMaxError as e:
            raise InputError(f"{path}: {e}") from None
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
                             np.float32 if np.float32 in dtypes else np.float64, _float_type(model), picked)
        for n in nets:
            out[n.name] = model_
    return out


# --------------------------------------------------------------------------- the input map
@dataclass(frozen=True)
class InputMap:
    """x = S(phi(z)): phi raises each ordered element a to max(z_a, z_b) (orders: (a, b) pairs,
    z_a >= z_b in every case), then S gives each element its representative's value plus its
    offset (x_i = z[rep[i]] + off[i]: ties x_j == x_i + c; off is 0 but for such ties, and
    each offset is a float, exactly the query's constant sum)."""

    rep: np.ndarray
    orders: tuple[tuple[int, int], ...]
    off: np.ndarray | None = None

    def apply(self, z: np.ndarray) -> np.ndarray:
        """Exact in any float type without offsets (max and copies do not round)."""
        z = np.array(z, copy=True).reshape(-1)
        for a, b in self.orders:
            z[a] = max(z[a], z[b])
        x = z[self.rep]
        return x if self.off is None else x + self.off.astype(x.dtype)


def _pairs(case: Case) -> tuple[set, set]:
    """(ties, orders) the case states exactly: {(i, j, k)} with x_j == x_i + k (i < j) and
    {(a, b)} with x_a >= x_b, from comparisons with coefficients 1 and -1 and a float constant."""
    le = set()      # (i, j, k): x_j >= x_i + k
    for lin in case.lins:
        if len(lin.vars) == 2 and lin.exact is None and not lin.strict:
            v0, v1 = lin.vars
            if lin.coefs == (1.0, -1.0):
                le.add((v0, v1, lin.const))        # x_v0 - x_v1 + k <= 0
            elif lin.coefs == (-1.0, 1.0):
                le.add((v1, v0, lin.const))        # x_v1 - x_v0 + k <= 0
    ties = {(i, j, k) for i, j, k in le if i < j and (j, i, -k) in le}
    orders = {(j, i) for i, j, k in le if k == 0.0 and (j, i, 0.0) not in le}   # (large, small)
    return ties, orders


def input_map(prop: Property) -> InputMap:
    """Ties and orders that hold in every case, over representative elements; an ordered
    element that another order or a tie touches again, and a tie that would not leave every
    offset a float, are left to the bounds' box (sound: the region bounded is then larger)."""
    n = prop.n_in
    if not prop.cases:
        return InputMap(np.arange(n), ())
    sets = [_pairs(c) for c in prop.cases]
    ties = set.intersection(*(t for t, _ in sets))
    rep, off = _union(n, sorted(ties))
    if any(Fraction(float(o)) != o for o in off):
        rep, off = _union(n, sorted(t for t in ties if t[2] == 0.0))
    orders = {(int(rep[a]), int(rep[b])) for a, b in set.intersection(*(o for _, o in sets))
              if off[a] == 0 and off[b] == 0}
    orders = {(a, b) for a, b in orders if a != b}
    used: dict[int, int] = {}
    for a, b in orders:
        used[a] = used.get(a, 0) + 1
        used[b] = used.get(b, 0) + 1
    kept = tuple(sorted((a, b) for a, b in orders if used[a] == 1 and used[b] == 1))
    offsets = np.array([float(o) for o in off])
    return InputMap(rep, kept, offsets if offsets.any() else None)


def _union(n: int, ties) -> tuple[np.ndarray, list]:
    """Classes of the ties (i, j, k): x_j = x_i + k: (rep, off) with x_i = x_rep[i] + off[i]
    (off exact, as Fractions); a tie between elements already in one class adds nothing."""
    parent, rel = list(range(n)), [Fraction(0)] * n      # x_i = x_parent[i] + rel[i]

    def find(i: int) -> tuple[int, Fraction]:
        total, j = Fraction(0), i
        while parent[j] != j:
            total += rel[j]
            j = parent[j]
        return j, total

    for i, j, k in ties:
        (ri, oi), (rj, oj) = find(i), find(j)
        if ri == rj:
            continue
        if rj < ri:     # the smaller index stays the representative
            ri, oi, rj, oj, k = rj, oj, ri, oi, -Fraction(k)
            i, j = j, i
        parent[rj], rel[rj] = ri, oi + Fraction(k) - oj
    found = [find(i) for i in range(n)]
    return np.array([r for r, _ in found]), [o for _, o in found]


def tied_cases(prop: Property, imap: InputMap) -> Property:
    """The property with each case's box narrowed to what its ties allow: the representative
    of a class gets the intersection of the class's bounds moved by their offsets (rounded
    outwards), each element that box moved by its own offset."""
    if np.array_equal(imap.rep, np.arange(prop.n_in)) and imap.off is None:
        return prop
    off = np.zeros(prop.n_in) if imap.off is None else imap.off
    cases = []
    for c in prop.cases:
        lo, hi = np.array(c.lo), np.array(c.hi)
        np.maximum.at(lo, imap.rep, _out(c.lo - off, c.lo, -off, -1))
        np.minimum.at(hi, imap.rep, _out(c.hi - off, c.hi, -off, +1))
        lo, hi = lo[imap.rep], hi[imap.rep]
        lo, hi = _out(lo + off, lo, off, -1), _out(hi + off, hi, off, +1)
        if np.any(lo > hi):
            continue            # the ties empty the case: it holds no input
        for arr in (lo, hi):
            arr.flags.writeable = False
        cases.append(Case(lo, hi, c.region, c.A_in, c.b_in, c.lins))
    return dataclasses.replace(prop, cases=tuple(cases))


def _out(total: np.ndarray, a: np.ndarray, b: np.ndarray, direction: int) -> np.ndarray:
    """total = a + b as computed (one rounding, to nearest), moved one ulp outwards wherever b is
    not 0: then it lies on the outer side of the exact sum, whether the sum rounded or not."""
    return np.where(b == 0, total, np.nextafter(total, direction * np.inf))


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


def compose(prop: Property, models: Mapping[str, LoadedModel], imap: InputMap, differential: bool = False) -> Graph:
    """The joint graph of the query (module doc).  Node names: 'NETWORK/name'.  differential: a
    network declared a copy of an earlier one (equal-to, isomorphic-to) whose inputs are tied
    or ordered to that one's is built as the earlier one plus a difference (``_Difference``)."""
    b = _Builder()
    n_in = prop.n_in
    source = _order_map(b, imap, n_in)
    offsets, at = {}, 0
    for net in prop.networks:
        offsets[net.name] = at
        at += sum(v.size for v in net.inputs)
    built: dict[str, dict[str, str]] = {}
    observed: list[tuple[str, int]] = []
    echo: list[tuple[str, int]] = []
    for net in prop.networks:
        lm = models[net.name]
        frag = lm.fragment
        inputs = _select_inputs(b, net, frag, imap, source, offsets[net.name])
        echo += [(inputs[ir_name], var.size) for var, (ir_name, _, _) in zip(net.inputs, frag.inputs)]
        base = _base(net, prop, models, imap, offsets) if differential else None
        if base is not None:
            rename = _Difference(b, net, base, models[base.name].fragment, built[base.name], inputs).build(frag)
        else:
            rename = dict(inputs)
            for node in frag.nodes:
                ins = [rename[i] for i in node.inputs]
                rename[node.name] = b.add(f"{net.name}/{node.name}", node.op, ins, node.params, node.shape)
        built[net.name] = rename
        for var, tensor in zip(net.observed, lm.reads[net.name]):
            ir_name, onnx_shape = frag.outputs[lm.tensors.index(tensor)]
            size = int(np.prod(onnx_shape, dtype=np.int64)) if onnx_shape else 1
            if size != var.size:
                raise JointError(f"{var.name} has {var.size} elements but the model's tensor {tensor!r} has "
                                 f"shape {list(onnx_shape)}")
            observed.append((rename[ir_name], size))
    if echoes_inputs(prop):     # the inputs too, as the networks read them (MNC)
        observed += echo
    for net in prop.networks:   # the logits of ArgMax outputs (verifier/argmax.py)
        frag = models[net.name].fragment
        for r in models[net.name].argmax.get(net.name, ()):
            ir_name, onnx_shape = frag.outputs[models[net.name].tensors.index(r.logits)]
            observed.append((built[net.name][ir_name], int(np.prod(onnx_shape, dtype=np.int64))))
    parts = []
    for j, (name, size) in enumerate(observed):
        parts.append(b.add(f"query:observed_{j}", "Reshape", [name], b.params(("reshape", (size,)), dict), (size,)))
    n_out = sum(s for _, s in observed)
    out = b.add(OUTPUT, "Concat", parts, {"axis": 1, "parts": [None] * len(parts)}, (n_out,))
    float_types = {m.float_type for m in models.values()}
    return Graph(INPUT, (n_in,), tuple(b.nodes), out, (n_in,), (n_out,),
                 float_model=torch.float32 if torch.float32 in float_types else torch.float64)


def _select_inputs(b: _Builder, net: Network, frag: Fragment, imap: InputMap, source: str, offset: int
                   ) -> dict[str, str]:
    """{fragment input: graph value} for the network's inputs, read from the joint input."""
    out = {}
    for var, (ir_name, shape, _) in zip(net.inputs, frag.inputs):
        idx = tuple(int(i) for i in imap.rep[offset:offset + var.size])
        offset += var.size
        if int(np.prod(shape, dtype=np.int64)) != var.size:
            raise JointError(f"{var.name} has {var.size} elements but the model input has shape {list(shape)}")
        p = b.params(("select", idx), lambda: {"axis": 1, "indices": torch.tensor(idx, dtype=torch.long)})
        flat = b.add(f"{net.name}/{ir_name}:flat", "Gather", [source], p, (len(idx),))
        shift = None if imap.off is None else imap.off[offset - var.size:offset]
        if shift is not None and shift.any():   # x_i = z_rep + its offset (a float: exact over the reals)
            key = ("shift", tuple(shift.tolist()))
            flat = b.add(f"{net.name}/{ir_name}:shifted", "Affine", [flat], b.params(key, lambda: {
                "scale": None, "shift": torch.tensor(shift, dtype=torch.float64)}), (len(idx),))
        out[ir_name] = b.add(f"{net.name}/{ir_name}", "Reshape", [flat], b.params(("reshape", shape), dict), shape)
    return out


def _base(net: Network, prop: Property, models, imap: InputMap, offsets) -> Network | None:
    """The network that net is a copy of, when net is best bounded as its difference from it:
    the same graph (equal-to, or isomorphic-to with the same structure), inputs related to the
    base's element by element (some tied or ordered, not all tied to an equal-to base, where the
    copies merge anyway)."""
    target = net.equal_to or net.isomorphic_to
    if target is None:
        return None
    base = next(n for n in prop.networks if n.name == target)
    if not _same_structure(models[base.name].fragment, models[net.name].fragment):
        return None
    n = sum(v.size for v in net.inputs)
    mine = imap.rep[offsets[net.name]:offsets[net.name] + n]
    theirs = imap.rep[offsets[base.name]:offsets[base.name] + n]
    tied = mine == theirs
    ordered = {frozenset(p) for p in imap.orders}
    related = tied | np.array([frozenset((int(a), int(c))) in ordered for a, c in zip(mine, theirs)], dtype=bool)
    if not related.any() or (net.equal_to is not None and tied.all()):
        return None
    return base


def _same_structure(f: Fragment, g: Fragment) -> bool:
    if len(f.nodes) != len(g.nodes) or len(f.inputs) != len(g.inputs):
        return False
    pos = {name: i for i, (name, _, _) in enumerate(f.inputs)}
    gpos = {name: i for i, (name, _, _) in enumerate(g.inputs)}
    for k, (a, c) in enumerate(zip(f.nodes, g.nodes)):
        pos[a.name], gpos[c.name] = ("n", k), ("n", k)
    return all(a.op == c.op and a.shape == c.shape and [pos[i] for i in a.inputs] == [gpos[i] for i in c.inputs]
               for a, c in zip(f.nodes, g.nodes))


class _Difference:
    """A copy g of network f built as f's values plus differences: each value v of g is
    f's v + d(v).  Affine nodes give d exactly (g's node on g's inputs minus f's node: the
    back-substitution through affine nodes is exact, so nothing is lost); a nonlinearity whose
    rule names a difference rule (ReLU) gets d(out) = that rule on (d(in), f's in), which keeps
    the bound proportional to d where separate relaxations of f and g would each add slack;
    any other nonlinearity is computed on g's input and d taken by subtraction."""

    def __init__(self, b: _Builder, net: Network, base: Network, base_frag: Fragment, base_vals: dict,
                 inputs: dict[str, str]):
        self.b, self.net, self.base_frag, self.base_vals = b, net, base_frag, base_vals
        self.inputs = inputs
        self.gval: dict[str, str] = {}
        self.delta: dict[str, str] = {}
        self.f_of: dict[str, str] = {}      # g's fragment name -> f's fragment name

    def _name(self, stem: str) -> str:
        return f"{self.net.name}/{stem}"

    def _minus(self, a: str, c: str, shape, stem: str) -> str:
        neg = self.b.add(self._name(stem + ":neg"), "Affine", [c], self.b.params(("neg",), lambda: {
            "scale": torch.tensor(-1.0, dtype=torch.float64), "shift": None}), shape)
        return self.b.add(self._name(stem + ":d"), "Add", [a, neg], {}, shape)

    def _g(self, name: str, shape) -> str:
        """g's value of a g-fragment value: f's value + its difference (built when first needed)."""
        if name not in self.gval:
            f_val = self.base_vals[self.f_of[name]]
            self.gval[name] = self.b.add(self._name(name + ":g"), "Add", [f_val, self.delta[name]], {}, shape)
        return self.gval[name]

    def build(self, frag: Fragment) -> dict[str, str]:
        from .ops import RULES

        for (gname, shape, _), (fname, _, _) in zip(frag.inputs, self.base_frag.inputs):
            self.f_of[gname] = fname
            self.gval[gname] = self.inputs[gname]
            self.delta[gname] = self._minus(self.inputs[gname], self.base_vals[fname], shape, gname)
        shapes = {name: shape for name, shape, _ in frag.inputs}
        for gnode, fnode in zip(frag.nodes, self.base_frag.nodes):
            self.f_of[gnode.name] = fnode.name
            shapes[gnode.name] = gnode.shape
            rule = RULES[gnode.op]
            if not rule.linear and rule.delta is not None and len(gnode.inputs) == 1:
                x = gnode.inputs[0]
                self.delta[gnode.name] = self.b.add(self._name(gnode.name + ":d"), rule.delta,
                                                    [self.delta[x], self.base_vals[self.f_of[x]]],
                                                    {"of": gnode.op}, gnode.shape)
                continue
            ins = [self._g(i, shapes[i]) for i in gnode.inputs]
            out = self.b.add(self._name(gnode.name), gnode.op, ins, gnode.params, gnode.shape)
            self.gval[gnode.name] = out
            self.delta[gnode.name] = self._minus(out, self.base_vals[fnode.name], gnode.shape, gnode.name)
        return _Lazy(lambda name: self._g(name, shapes[name]))


class _Lazy(dict):
    """A mapping that builds each value when first read (g's values, as f's + difference)."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = value = self.make(key)
        return value


# --------------------------------------------------------------------------- the reference
class JointReference:
    """onnxruntime on every model of the query: run(x) feeds each network its elements of x
    (through the input map) and returns every observed tensor, flattened, in code order."""

    def __init__(self, prop: Property, models: Mapping[str, LoadedModel], imap: InputMap):
        self.prop, self.models, self.imap = prop, models, imap
        # an ordered element is read as max(z_a, z_b), which may leave z_a's box; tied elements
        # read their representative, whose box stays inside theirs
        self.inputs_as_given = not imap.orders
        dtypes = {m.input_dtype for m in models.values()}
        self.input_dtype = np.float32 if np.float32 in dtypes else np.float64

    def run(self, x_flat: np.ndarray) -> np.ndarray:
        x = self.imap.apply(np.asarray(x_flat, dtype=np.float64))
        outs, offset, logits = [], 0, []
        for net in self.prop.networks:
            lm = self.models[net.name]
            feeds = {}
            for var, name, (_, _, onnx_shape) in zip(net.inputs, lm.input_names, lm.fragment.inputs):
                feeds[name] = x[offset:offset + var.size].astype(lm.input_dtype).reshape(onnx_shape)
                offset += var.size
            got = dict(zip(lm.tensors, lm.session.run(list(lm.tensors), feeds)))
            outs += [np.asarray(got[t], dtype=np.float64).reshape(-1) for t in lm.reads[net.name]]
            logits += [np.asarray(got[r.logits], dtype=np.float64).reshape(-1) for r in lm.argmax.get(net.name, ())]
        if echoes_inputs(self.prop):
            outs.append(x)
        return np.concatenate(outs + logits)    # the logits of ArgMax outputs last, network by network

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
        if self.imap.off is not None:     # a tie with an offset: the exact check decides
            return np.minimum(np.maximum(x, box[0]), box[1])
        rep = self.imap.rep
        lo = np.full(x.shape, -np.inf, dtype=self.input_dtype)
        hi = np.full(x.shape, np.inf, dtype=self.input_dtype)
        np.maximum.at(lo, rep, box[0])
        np.minimum.at(hi, rep, box[1])
        if np.any(lo[rep] > hi[rep]):
            return None
        return self.imap.apply(np.minimum(np.maximum(x[rep], lo[rep]), hi[rep]))


def echoes_inputs(prop: Property) -> bool:
    """Whether the property also reads the inputs among the observed values (a comparison that
    mixes inputs with outputs: vnnlib.v2.ECHO), after every declared observed tensor."""
    return any(v.name == ECHO for v in prop.outputs)


def needs_joint(prop: Property) -> bool:
    """Whether the query needs the composed graph: anything beyond one network with one input
    and one output, each the model's own, and comparisons of outputs only."""
    if len(prop.networks) != 1:
        return len(prop.networks) > 1
    net = prop.networks[0]
    return len(net.inputs) != 1 or len(net.outputs) != 1 or bool(net.hidden) or echoes_inputs(prop) \
        or reads_integers(prop)


def load_joint(prop: Property, networks: Mapping[str, str], differential: bool = False):
    """(graph, reference, property) of a query over several networks or tensors: the composed
    graph (simplified, float64, CPU), its reference, and the property with its ties applied.
    differential: bound copies as differences (compose); only for a query over the reals (the
    differences are not how onnxruntime computes the copy)."""
    from .api import InputError
    from .simplify import simplify

    try:
        paths = model_paths(prop, networks)
        models = load_models(prop, paths)
        prop = rewrite(prop, _classes(prop, models))
        imap = input_map(prop)
        tied = tied_cases(prop, imap)
        graph = simplify(compose(tied, models, imap, differential))
    except (JointError, ArgMaxError) as e:
        raise InputError(str(e)) from None
    return graph, JointReference(tied, models, imap), tied


def _classes(prop: Property, models: Mapping[str, LoadedModel]) -> dict[str, list[tuple[ArgMaxRead, int]]]:
    """For argmax.rewrite: each network's ArgMax reads with their number of classes (the logits'
    last axis), checked against the declared variable's size."""
    out: dict[str, list[tuple[ArgMaxRead, int]]] = {}
    for net in prop.networks:
        lm = models[net.name]
        sizes = {v.name: v.size for v in net.outputs}
        for r in lm.argmax.get(net.name, ()):
            _, shape = lm.fragment.outputs[lm.tensors.index(r.logits)]
            total = int(np.prod(shape, dtype=np.int64))
            if not shape or total != sizes[r.var] * int(shape[-1]):
                raise JointError(f"{r.var} has {sizes[r.var]} elements but its ArgMax reads a tensor of shape "
                                 f"{list(shape)}")
            out.setdefault(net.name, []).append((r, int(shape[-1])))
    return out
