"""VNN-LIB 2.0 front end: s-expressions -> ``Query``.

Supported: ``(vnnlib-version <2.x>)`` first; any number of ``declare-network``, each with at
most one ``(equal-to F)`` or ``(isomorphic-to F)`` (F declared before it, without such a line
itself), then its inputs, hidden tensors and outputs (``declare-input``, ``declare-hidden``,
``declare-output``: NAME TYPE SHAPE and an ONNX tensor name in double quotes, mandatory for
hidden tensors); element types of ONNX or ``real``/``Real``; full zero-based indexing
``X[i,j]`` (flattened row-major), a scalar (shape ``[]``) referenced by its bare name;
comparisons ``<= >= < > == !=`` (``!=`` as its disjunction ``<`` or ``>``), ``+ - *`` (LIN),
``and``/``or``.  Element codes: ``property.Network``.

A comparison that mixes inputs with outputs or hidden tensors (MNC) reads the inputs through
their copy among the observed values: an extra output-side variable ``(inputs)`` after every
declared one, whose element i is input element i (present only when some comparison needs it).

Refused: non-linear products (POLY), ``initialized`` inputs.

Legacy converter output: some published 2.0 files declare ``X Real [0]`` and then list the
elements SMT-LIB style, ``(declare-fun X[0] () Real)`` ... .  A variable declared with shape
``[0]`` that is followed by such element declarations gets shape ``[n]`` (elements 0..n-1, all
declared); anywhere else ``declare-fun`` is an error.
"""
from __future__ import annotations

import bisect
import re

import numpy as np

from .ast import Query
from .formula import EQ, GE, GT, LE, LT, NE, Converter, Dialect, SymbolError
from .property import Network, Variable
from .sexpr import FIRST, SExpr, head, token_index
from .tokens import Source

_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_VERSION = re.compile(r"<([0-9]+)\.([0-9]+)>\Z")
_INDEXED = re.compile(r"([A-Za-z][A-Za-z0-9_]*)\s*\[\s*([0-9]+)\s*\]\Z")

ELEMENT_TYPES = frozenset((
    "real", "Real",
    "float16", "bfloat16", "float32", "float64",
    "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float4e2m1",
    "int4", "int8", "int16", "int32", "int64",
    "uint4", "uint8", "uint16", "uint32", "uint64", "bool",
))

DIALECT = Dialect(
    compare={"<=": LE, ">=": GE, "<": LT, ">": GT, "==": EQ, "!=": NE},
    refuse={
        "=": "unknown operator '=': VNN-LIB 2.0 writes equality as '=='",
        "not": "unsupported: not",
        "/": "unsupported operator '/': division",
    },
)

_RELATIONS = ("equal-to", "isomorphic-to")
# the output-side variable that copies every input element, for comparisons that mix inputs with
# outputs (MNC): its element i stands for input element i
ECHO = "(inputs)"
_KINDS = {"declare-input": 0, "declare-hidden": 1, "declare-output": 2}


class _Var:
    """A declared tensor while the declarations are read.  side 0: input, 1: output side
    (hidden tensors and outputs); offset: the code of its first element on its side."""

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], token: int, side: int,
                 onnx_name: str | None = None):
        self.name, self.dtype, self.shape, self.token, self.side = name, dtype, shape, token, side
        self.onnx_name = onnx_name
        self.offset = 0
        self.legacy: dict[int, int] = {}   # element index -> token of its declare-fun

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def variable(self) -> Variable:
        return Variable(self.name, self.dtype, self.shape, self.onnx_name)

    def code(self, flat: int) -> int:
        return self.offset + flat if self.side == 0 else ~(self.offset + flat)

    def element(self, flat: int) -> str:
        if not self.shape:
            return self.name
        idx = np.unravel_index(flat, self.shape)
        return f"{self.name}[{','.join(str(int(i)) for i in idx)}]"


class _Net:
    def __init__(self, name: str, token: int):
        self.name, self.token = name, token
        self.relation: tuple[str, str, int] | None = None     # (kind, target, token)
        self.parts: tuple[list[_Var], list[_Var], list[_Var]] = ([], [], [])   # inputs, hidden, outputs

    def network(self) -> Network:
        ins, hid, outs = ([v.variable() for v in part] for part in self.parts)
        kind, target = self.relation[:2] if self.relation else (None, None)
        return Network(self.name, tuple(ins), tuple(outs), tuple(hid),
                       equal_to=target if kind == "equal-to" else None,
                       isomorphic_to=target if kind == "isomorphic-to" else None)


def parse(src: Source, root: SExpr) -> Query:
    """The query of a VNN-LIB 2.0 text whose s-expressions are root."""
    _version(src, root)
    nets: list[_Net] = []
    variables: dict[str, _Var] = {}
    echoed: list[bool] = []     # set once a comparison mixes inputs with outputs (MNC)
    asserts, assert_tokens = [], []
    conv: Converter | None = None
    for j in range(FIRST + 1, len(root)):
        node = root[j]
        if node.__class__ is str:
            raise src.error(token_index(root, j), f"expected a command '(...)', got {node!r}")
        cmd = head(node)
        if cmd == "assert":
            if not nets:
                raise src.error(node[0], "assert before any declare-network")
            if conv is None:
                _finish_all(src, nets)
                n_obs = sum(v.size for n in nets for v in n.parts[1] + n.parts[2])
                conv = Converter(src, DIALECT, _resolver(variables, {n.name for n in nets}),
                                 echo=lambda code, n_obs=n_obs: (echoed.append(True), ~(n_obs + code))[1])
            if len(node) != FIRST + 2:
                raise conv.fail(node, min(len(node), FIRST + 2),
                                f"'assert' takes 1 formula, got {len(node) - FIRST - 1}")
            asserts.append(conv.formula(node, FIRST + 1))
            assert_tokens.append(node[0])
        elif cmd in ("declare-network", "declare-fun") and conv is not None:
            raise src.error(node[0], f"{cmd} after an assert: declarations come first")
        elif cmd == "declare-network":
            nets.append(_network(src, node, nets, variables))
        elif cmd == "declare-fun":
            _legacy_element(src, node, variables)
        elif cmd == "vnnlib-version":
            raise src.error(node[0], "(vnnlib-version ...) given twice")
        elif cmd is None:
            raise src.error(token_index(node, FIRST), "expected a command name")
        else:
            raise src.error(token_index(node, FIRST), f"unknown command '{cmd}'")
    if not nets:
        raise src.error(root[1], "no declare-network: nothing to verify")
    if conv is None:
        _finish_all(src, nets)
    sides = ([v for n in nets for v in n.parts[0]],
             [v for n in nets for v in n.parts[1] + n.parts[2]])
    starts = tuple([v.offset for v in side] for side in sides)

    n_in = sum(v.size for v in sides[0])
    n_observed = sum(v.size for v in sides[1])

    def var_of(code: int) -> tuple[_Var, int]:
        side, flat = (0, code) if code >= 0 else (1, ~code)
        if side == 1 and flat >= n_observed:      # an input's echo: named as the input
            side, flat = 0, flat - n_observed
        v = sides[side][bisect.bisect_right(starts[side], flat) - 1]
        return v, flat - v.offset

    def name(code: int) -> str:
        v, flat = var_of(code)
        return v.element(flat)

    return Query(
        version="2.0",
        network=nets[0].name,
        inputs=tuple(v.variable() for v in sides[0]),
        outputs=tuple(v.variable() for v in sides[1]) + ((Variable(ECHO, "real", (n_in,)),) if echoed else ()),
        asserts=tuple(asserts),
        assert_tokens=tuple(assert_tokens),
        element_name=name,
        element_token=lambda code: var_of(code)[0].token,
        networks=tuple(n.network() for n in nets),
    )


def _version(src: Source, root: SExpr) -> None:
    node = root[FIRST] if len(root) > FIRST else None
    if node.__class__ is not list or head(node) != "vnnlib-version":
        raise src.error(0, "a VNN-LIB 2.0 query starts with (vnnlib-version <2.0>)")
    if len(node) != FIRST + 2 or node[FIRST + 1].__class__ is not str:
        raise src.error(token_index(node, min(len(node), FIRST + 1)),
                        "expected (vnnlib-version <MAJOR.MINOR>)")
    m = _VERSION.match(node[FIRST + 1])
    if not m:
        raise src.error(token_index(node, FIRST + 1),
                        f"malformed version {node[FIRST + 1]!r}: expected <2.0>")
    if m.group(1) != "2":
        raise src.error(token_index(node, FIRST + 1),
                        f"unsupported VNN-LIB version {node[FIRST + 1]}: this parser reads 2.x")


def _network(src: Source, node: SExpr, nets: list[_Net], variables: dict[str, _Var]) -> _Net:
    """A declare-network node: NAME, at most one relation, then inputs, hidden, outputs."""
    if len(node) < FIRST + 2 or node[FIRST + 1].__class__ is not str \
            or not _IDENT.match(node[FIRST + 1]):
        raise src.error(token_index(node, FIRST + 1),
                        "expected a network name after declare-network")
    net = _Net(node[FIRST + 1], token_index(node, FIRST + 1))
    if any(n.name == net.name for n in nets):
        raise src.error(net.token, f"network {net.name} declared twice")
    if net.name in variables:
        raise src.error(net.token, f"{net.name} is already a variable")
    stage = 0       # 0: relation, inputs; 1: hidden; 2: outputs (the standard's order)
    for j in range(FIRST + 2, len(node)):
        item = node[j]
        k = token_index(node, j)
        if item.__class__ is str:
            raise src.error(k, f"expected a declaration '(...)', got {item!r}")
        cmd = head(item)
        if cmd in _RELATIONS:
            _relation(src, item, k, net, nets, stage)
        elif cmd in _KINDS:
            kind = _KINDS[cmd]
            if kind < stage:
                raise src.error(k, f"{cmd} after {_after(stage)}: the order is inputs, hidden, outputs")
            stage = kind
            var = _tensor(src, item, kind)
            if var.name in variables or var.name == net.name or any(n.name == var.name for n in nets):
                raise src.error(var.token, f"variable {var.name} declared twice")
            variables[var.name] = var
            net.parts[kind].append(var)
        else:
            raise src.error(token_index(item, FIRST) if cmd else k,
                            f"unknown declaration {cmd or '(...)'!r} in declare-network")
    if not net.parts[0]:
        raise src.error(node[1], f"network {net.name} declares no input")
    if not net.parts[2]:
        raise src.error(node[1], f"network {net.name} declares no output")
    return net


def _after(stage: int) -> str:
    return ("an input", "a hidden tensor", "an output")[stage]


def _relation(src: Source, item: SExpr, k: int, net: _Net, nets: list[_Net], stage: int) -> None:
    """(equal-to F) / (isomorphic-to F): F declared before, itself free of such a line."""
    cmd = item[FIRST]
    if net.relation is not None:
        raise src.error(k, f"network {net.name} has two of equal-to / isomorphic-to")
    if stage > 0 or net.parts[0]:
        raise src.error(k, f"({cmd} ...) comes before the network's declarations")
    if len(item) != FIRST + 2 or item[FIRST + 1].__class__ is not str:
        raise src.error(k, f"expected ({cmd} NETWORK)")
    target = item[FIRST + 1]
    tk = token_index(item, FIRST + 1)
    other = next((n for n in nets if n.name == target), None)
    if other is None:
        raise src.error(tk, f"({cmd} {target}): no network {target} declared before {net.name}")
    if other.relation is not None:
        raise src.error(tk, f"({cmd} {target}): {target} is itself declared {other.relation[0]} "
                            f"{other.relation[1]}")
    net.relation = (cmd, target, tk)


def _tensor(src: Source, node: SExpr, kind: int) -> _Var:
    """A declare-input (kind 0) / declare-hidden (1) / declare-output (2) node: NAME TYPE SHAPE
    and an ONNX name in double quotes (optional but for hidden tensors)."""
    cmd = node[FIRST]
    pieces: list[tuple[str, int, int]] = []      # (text, token index, offset in the token)
    for j in range(FIRST + 1, len(node)):
        item = node[j]
        k = token_index(node, j)
        if item.__class__ is not str:
            raise src.error(k, f"unexpected '(' in {cmd}")
        b = item.find("[")
        if b > 0:       # the tokenizer glues "TYPE [d1,d2]" into one token
            pieces.append((item[:b].rstrip(), k, 0))
            pieces.append((item[b:], k, b))
        else:
            pieces.append((item, k, 0))
    if len(pieces) < 3:
        raise src.error(node[1], f"'{cmd}' takes NAME TYPE [SHAPE]")
    (name, kn, _), (dtype, kt, _), shape_piece = pieces[:3]
    if not _IDENT.match(name):
        raise src.error(kn, f"malformed variable name {name!r}")
    if dtype not in ELEMENT_TYPES:
        raise src.error(kt, f"unknown element type {dtype!r}")
    shape = _shape(src, *shape_piece)
    onnx_name = None
    rest = pieces[3:]
    if rest and rest[0][0].startswith('"'):
        text, k, delta = rest.pop(0)
        if len(text) < 2 or not text.endswith('"') or len(text) == 2:
            raise src.error(k, f"malformed ONNX tensor name {text}", delta)
        onnx_name = text[1:-1]
    for text, k, delta in rest:
        if text == "initialized" and kind == 0:
            raise src.error(k, "initialized inputs unsupported", delta)
        raise src.error(k, f"unexpected {text!r} in {cmd}", delta)
    if kind == 1 and onnx_name is None:
        raise src.error(node[1], 'declare-hidden needs the ONNX tensor\'s name: (declare-hidden H TYPE [SHAPE] "name")')
    return _Var(name, dtype, shape, kn, 0 if kind == 0 else 1, onnx_name)


def _shape(src: Source, text: str, k: int, delta: int) -> tuple[int, ...]:
    if not (text.startswith("[") and text.endswith("]")):
        raise src.error(k, f"expected a shape like [1,3], got {text!r}", delta)
    inner = text[1:-1].strip()
    if not inner:
        return ()
    dims = []
    for part in inner.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()):
            raise src.error(k, f"malformed shape {text!r}: dimensions are non-negative integers",
                            delta)
        dims.append(int(part))
    return tuple(dims)


def _legacy_element(src: Source, node: SExpr, variables: dict[str, _Var]) -> None:
    """``(declare-fun X[i] () TYPE)`` for a variable declared with shape [0] (see module doc)."""
    k = token_index(node, FIRST + 1)
    if len(node) != FIRST + 4 or node[FIRST + 1].__class__ is not str:
        raise src.error(k, "declare-fun is not VNN-LIB 2.0")
    m = _INDEXED.match(node[FIRST + 1])
    var = None
    if m:
        var = variables.get(m.group(1))
    if var is None or var.shape != (0,):
        raise src.error(k, "declare-fun is not VNN-LIB 2.0 (accepted only to list the elements "
                           "of a tensor declared with shape [0])")
    args, typ = node[FIRST + 2], node[FIRST + 3]
    if args.__class__ is not list or len(args) != FIRST:
        raise src.error(token_index(node, FIRST + 2), "expected '()'")
    if typ != var.dtype:
        raise src.error(token_index(node, FIRST + 3),
                        f"element type {typ!r} differs from {var.name}'s type {var.dtype!r}")
    i = int(m.group(2))
    if i in var.legacy:
        raise src.error(k, f"element {var.name}[{i}] declared twice")
    var.legacy[i] = k


def _finish(src: Source, var: _Var) -> None:
    """Fix a legacy variable's shape; reject zero-size tensors."""
    if var.legacy:
        for expect, i in enumerate(sorted(var.legacy)):
            if i != expect:
                raise src.error(var.legacy[i], f"{var.name}[{i}] declared but {var.name}[{expect}] "
                                               "is missing: elements must be 0..n-1")
        var.shape = (len(var.legacy),)
    if 0 in var.shape:
        raise src.error(var.token, f"{var.name} has shape {list(var.shape)}: no elements")


def _finish_all(src: Source, nets: list[_Net]) -> None:
    """Shapes fixed, codes assigned (inputs network after network; then hidden and outputs
    network after network), and each equal-to / isomorphic-to network's declarations checked
    against its model's: the same number of inputs, hidden tensors and outputs, of the same
    shapes."""
    offsets = [0, 0]
    for net in nets:
        for part in net.parts:
            for var in part:
                _finish(src, var)
                var.offset = offsets[var.side]
                offsets[var.side] += var.size
    by_name = {n.name: n for n in nets}
    for net in nets:
        if net.relation is None:
            continue
        other = by_name[net.relation[1]]
        for what, mine, theirs in zip(("inputs", "hidden tensors", "outputs"), net.parts, other.parts):
            if [v.shape for v in mine] != [v.shape for v in theirs]:
                raise src.error(net.relation[2], f"{net.name} is {net.relation[0]} {other.name} but their "
                                                 f"{what} differ: {[list(v.shape) for v in mine]} vs "
                                                 f"{[list(v.shape) for v in theirs]}")


def _resolver(variables: dict[str, _Var], networks: set[str]):
    """symbol -> variable code, for every declared tensor."""

    def resolve(tok: str) -> int:
        b = tok.find("[")
        name = tok if b < 0 else tok[:b].rstrip()
        var = variables.get(name)
        if var is None:
            if name in networks:
                raise SymbolError(f"{name} is a network, not a variable")
            raise SymbolError(f"unknown symbol {tok!r}")
        shape = var.shape
        if b < 0:
            if shape:
                raise SymbolError(f"{name} has shape {list(shape)}: index it, e.g. "
                                  f"{name}[{','.join('0' * len(shape))}]")
            return var.code(0)
        parts = tok[b + 1:-1].split(",")
        if len(parts) != len(shape):
            raise SymbolError(f"{name} has {len(shape)} dimension(s), got {len(parts)} "
                              "index(es): partial indexing unsupported")
        flat = 0
        for d, (part, n) in enumerate(zip(parts, shape)):
            part = part.strip()
            if not (part.isascii() and part.isdigit()):
                raise SymbolError(f"malformed index {part!r} in {tok!r}")
            i = int(part)
            if i >= n:
                raise SymbolError(f"index {i} out of range for dimension {d} of {name} "
                                  f"(size {n})")
            flat = flat * n + i
        return var.code(flat)

    return resolve
