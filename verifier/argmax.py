"""ArgMax results read by a query, rewritten exactly onto the ArgMax's input (the logits).

A network output Y = ArgMax(L) along L's last axis (ONNX: the FIRST maximal index wins ties),
declared with an integer type in a VNN-LIB 2.0 query, is an integer k in 0..n-1, and

    Y = k  <=>  L_k > L_j for every j < k  and  L_k >= L_j for every j > k.

So every conjunct of the property that compares Y's elements with numbers (``==``, ``<=``, ``!=``
as its two strict sides, ...) holds exactly for the assignments of those elements that meet its
comparisons (decided in rational arithmetic over 0..n-1), and is replaced by one conjunct per
such assignment: its other rows plus the rows "argmax = k" over L, which the engine reads as
extra observed values appended after the declared ones (and the inputs' echo).  The union of
the new conjuncts is the old one, point by point, so bounds that refute them refute it.

Each new conjunct keeps the comparisons exactly as written (``Conjunct.lins``, over Y): a
counterexample is judged on the int64 Y that onnxruntime's own ArgMax computes.  The graph keeps
Y's column (ops/compare.py's ArgMax rule, flat bounds) only so that it computes what onnxruntime
computes; no row reads it.

Refused: integer-typed inputs and hidden tensors, an integer output that is not an ArgMax result
or that the network also uses, a comparison that mixes an ArgMax result with other variables.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np

from vnnlib.lower import float_row
from vnnlib.property import Conjunct, Network, Property, Variable

MAX_ASSIGNMENTS = 4096      # assignments of the ArgMax elements one conjunct compares, enumerated
MAX_ROWS = 2_000_000        # rows of the rewritten property (the engine holds K x rows values)


class ArgMaxError(Exception):
    """The query reads integers in a way that is not rewritten (module doc)."""


def is_integer(dtype: str) -> bool:
    t = dtype.lower()
    return t.startswith(("int", "uint")) or t == "bool"


def reads_integers(prop: Property) -> bool:
    """Whether some declared variable has an integer or boolean element type."""
    return any(is_integer(v.dtype) for v in tuple(prop.inputs) + tuple(prop.outputs))


@dataclass(frozen=True)
class ArgMaxRead:
    """Output variable `var` of a network reads the ArgMax result `tensor` of `logits`."""

    var: str
    tensor: str
    logits: str


def argmax_reads(model, net: Network, outputs: list[str]) -> tuple[ArgMaxRead, ...]:
    """The network's integer-typed outputs (outputs: the ONNX tensor each output variable reads),
    each checked to be an ArgMax result that nothing in the model reads; ArgMaxError otherwise."""
    for v in net.inputs + net.hidden:
        if is_integer(v.dtype):
            kind = "input" if v in net.inputs else "hidden tensor"
            raise ArgMaxError(f"{v.name} is an {kind} of type {v.dtype}: integer types are supported only for "
                              "outputs that are ArgMax results")
    producer = {o: node for node in model.graph.node for o in node.output}
    used = {i for node in model.graph.node for i in node.input}
    out = []
    for var, tensor in zip(net.outputs, outputs):
        if not is_integer(var.dtype):
            continue
        node = producer.get(tensor)
        if node is None or node.op_type != "ArgMax" or node.domain not in ("", "ai.onnx"):
            raise ArgMaxError(f"{var.name} is declared {var.dtype}: an integer output is supported only as the "
                              "result of an ArgMax")
        if var.dtype.lower() != "int64":
            raise ArgMaxError(f"{var.name} is declared {var.dtype} but ArgMax gives int64")
        if tensor in used:
            raise ArgMaxError(f"{var.name}: the ArgMax result {tensor!r} is also used inside the network "
                              "(ArgMax is supported only at an output)")
        out.append(ArgMaxRead(var.name, tensor, node.input[0]))
    return tuple(out)


@dataclass(frozen=True)
class _Element:
    """One element of an ArgMax result: its logits are the observed columns first..first+n-1."""

    name: str
    first: int
    n: int


def rewrite(prop: Property, per_network: dict[str, list[tuple[ArgMaxRead, int]]]) -> Property:
    """The property with every conjunct on ArgMax results rewritten onto their logits (module
    doc).  per_network[name]: (read, classes) of each ArgMax output of that network, in
    declaration order; their logits follow the property's observed values in that order."""
    elements: dict[int, _Element] = {}       # observed index of a Y element -> its logits
    extra: list[Variable] = []
    at, tail = 0, prop.n_out
    for net in prop.networks:
        reads = {r.var: n for r, n in per_network.get(net.name, [])}
        for v in net.observed:
            if v.name in reads:
                n = reads[v.name]
                for i in range(v.size):
                    index = ",".join(str(int(d)) for d in np.unravel_index(i, v.shape)) if v.shape else ""
                    elements[at + i] = _Element(f"{v.name}[{index}]" if index else v.name, tail + i * n, n)
                extra.append(Variable(f"(logits of {v.name})", "real", (v.size * n,)))
                tail += v.size * n
            at += v.size
    if not elements:
        return prop
    cases, rows = [], 0
    for case in prop.cases:
        region = tuple(c for conj in case.region for c in _rewrite_conjunct(conj, elements, tail))
        rows += sum(c.C.shape[0] for c in region)
        if rows > MAX_ROWS:
            raise ArgMaxError(f"the rewritten ArgMax comparisons take more than {MAX_ROWS} rows")
        if region:
            cases.append(dataclasses.replace(case, region=region))
    return dataclasses.replace(prop, cases=tuple(cases), outputs=tuple(prop.outputs) + tuple(extra), n_out=tail)


def _rewrite_conjunct(conj: Conjunct, elements: dict[int, _Element], n_out: int) -> list[Conjunct]:
    """One conjunct per assignment of its ArgMax elements that meets its comparisons on them."""
    on_y = [lin for lin in conj.lins if any(~v in elements for v in lin.vars)]
    rest = [lin for lin in conj.lins if not any(~v in elements for v in lin.vars)]
    for lin in on_y:
        if not all(~v in elements for v in lin.vars):
            name = elements[next(~v for v in lin.vars if ~v in elements)].name
            raise ArgMaxError(f"{name}, an ArgMax result, is compared with a term over other variables "
                              "(only comparisons among ArgMax results and numbers are supported)")
    touched = sorted({~v for lin in on_y for v in lin.vars})
    total = int(np.prod([elements[j].n for j in touched], dtype=np.float64)) if touched else 1
    if total > MAX_ASSIGNMENTS:
        raise ArgMaxError(f"a conjunct compares ArgMax results with {total} assignments (at most "
                          f"{MAX_ASSIGNMENTS} are enumerated)")
    base = [row for row in (_row(lin, n_out) for lin in rest) if row is not None]
    out = []
    for ks in itertools.product(*(range(elements[j].n) for j in touched)):
        value = dict(zip(touched, ks))
        if not all(lin.holds_at([value[~v] for v in lin.vars]) for lin in on_y):
            continue
        rows = base + [r for j, k in value.items() for r in _argmax_rows(elements[j], k, n_out)]
        C = np.array([r[0] for r in rows]).reshape(len(rows), n_out)
        d = np.array([r[1] for r in rows], dtype=np.float64)
        strict = np.array([r[2] for r in rows], dtype=bool)
        for a in (C, d, strict):
            a.flags.writeable = False
        out.append(Conjunct(C, d, strict, conj.lins))
    return out


def _row(lin, n_out: int):
    """(coefficients over every observed value, constant, strict): the engine's float image of
    an output comparison (vnnlib.lower.float_row: exact coefficients, the constant rounded
    down), or None where it is left out (which only enlarges the region)."""
    found = float_row(lin)
    if found is None:
        return None
    coefs, const, down = found
    c = np.zeros(n_out)
    c[[~v for v in lin.vars]] = coefs
    return c, (float(np.nextafter(const, -np.inf)) if down else const) + 0.0, lin.strict


def _argmax_rows(e: _Element, k: int, n_out: int):
    """argmax = k: L_j - L_k < 0 for j < k, L_j - L_k <= 0 for j > k (exact rows)."""
    for j in range(e.n):
        if j != k:
            c = np.zeros(n_out)
            c[e.first + j], c[e.first + k] = 1.0, -1.0
            yield c, 0.0, j < k
