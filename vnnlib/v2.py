"""VNN-LIB 2.0 front end (single network): s-expressions -> ``Query``.

Supported: ``(vnnlib-version <2.x>)`` first, one ``declare-network`` with one ``declare-input``
and one ``declare-output`` (theories SNET, SIO, NH), element types of ONNX or ``real``/``Real``,
full zero-based indexing ``X[i,j]`` (flattened row-major), a scalar (shape ``[]``) referenced
by its bare name, comparisons ``<= >= < > ==``, ``+ - *`` (LIN), ``and``/``or``.

Refused with the name of the theory needed: several networks or ``equal-to``/``isomorphic-to``
(MNET/MENET/MINET), several inputs or outputs (MIO), ``declare-hidden`` (H), non-linear products
(POLY), ``!=``, ``initialized`` inputs, and constraints that mix inputs and outputs (MNC).

Legacy converter output: some published 2.0 files declare ``X Real [0]`` and then list the
elements SMT-LIB style, ``(declare-fun X[0] () Real)`` ... .  A variable declared with shape
``[0]`` that is followed by such element declarations gets shape ``[n]`` (elements 0..n-1, all
declared); anywhere else ``declare-fun`` is an error.
"""
from __future__ import annotations

import re

import numpy as np

from .ast import Query
from .formula import EQ, GE, GT, LE, LT, Converter, Dialect, SymbolError
from .property import Variable
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
    compare={"<=": LE, ">=": GE, "<": LT, ">": GT, "==": EQ},
    refuse={
        "!=": "unsupported: !=",
        "=": "unknown operator '=': VNN-LIB 2.0 writes equality as '=='",
        "not": "unsupported: not",
        "/": "unsupported operator '/': division",
    },
)

_THEORY = {
    "equal-to": "(equal-to ...) relates several networks: MENET theory unsupported",
    "isomorphic-to": "(isomorphic-to ...) relates several networks: MINET theory unsupported",
    "declare-hidden": "hidden nodes: H theory unsupported",
}


class _Var:
    """A declared tensor while the declarations are read."""

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], token: int, side: int):
        self.name, self.dtype, self.shape, self.token, self.side = name, dtype, shape, token, side
        self.legacy: dict[int, int] = {}   # element index -> token of its declare-fun

    def variable(self) -> Variable:
        return Variable(self.name, self.dtype, self.shape)

    def code(self, flat: int) -> int:
        return flat if self.side == 0 else ~flat

    def element(self, flat: int) -> str:
        if not self.shape:
            return self.name
        idx = np.unravel_index(flat, self.shape)
        return f"{self.name}[{','.join(str(int(i)) for i in idx)}]"


def parse(src: Source, root: SExpr) -> Query:
    """The query of a VNN-LIB 2.0 text whose s-expressions are root."""
    _version(src, root)
    network: str | None = None
    x: _Var | None = None
    y: _Var | None = None
    asserts, assert_tokens = [], []
    conv: Converter | None = None
    for j in range(FIRST + 1, len(root)):
        node = root[j]
        if node.__class__ is str:
            raise src.error(token_index(root, j), f"expected a command '(...)', got {node!r}")
        cmd = head(node)
        if cmd == "assert":
            if x is None or y is None:
                raise src.error(node[0], "assert before any declare-network")
            if conv is None:
                _finish(src, x)
                _finish(src, y)
                conv = Converter(src, DIALECT, _resolver(x, y, network))
            if len(node) != FIRST + 2:
                raise conv.fail(node, min(len(node), FIRST + 2),
                                f"'assert' takes 1 formula, got {len(node) - FIRST - 1}")
            asserts.append(conv.formula(node, FIRST + 1))
            assert_tokens.append(node[0])
        elif cmd in ("declare-network", "declare-fun") and conv is not None:
            raise src.error(node[0], f"{cmd} after an assert: declarations come first")
        elif cmd == "declare-network":
            if network is not None:
                raise src.error(node[0], "several networks: MNET theory unsupported")
            network, x, y = _network(src, node)
        elif cmd == "declare-fun":
            _legacy_element(src, node, x, y)
        elif cmd == "vnnlib-version":
            raise src.error(node[0], "(vnnlib-version ...) given twice")
        elif cmd is None:
            raise src.error(token_index(node, FIRST), "expected a command name")
        else:
            raise src.error(token_index(node, FIRST), f"unknown command '{cmd}'")
    if x is None or y is None:
        raise src.error(root[1], "no declare-network: nothing to verify")
    if conv is None:
        _finish(src, x)
        _finish(src, y)

    def name(code: int) -> str:
        return x.element(code) if code >= 0 else y.element(~code)

    return Query(
        version="2.0",
        network=network,
        inputs=(x.variable(),),
        outputs=(y.variable(),),
        asserts=tuple(asserts),
        assert_tokens=tuple(assert_tokens),
        element_name=name,
        element_token=lambda code: x.token if code >= 0 else y.token,
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


def _network(src: Source, node: SExpr) -> tuple[str, _Var, _Var]:
    """(name, input, output) of a declare-network node."""
    if len(node) < FIRST + 2 or node[FIRST + 1].__class__ is not str \
            or not _IDENT.match(node[FIRST + 1]):
        raise src.error(token_index(node, FIRST + 1),
                        "expected a network name after declare-network")
    name = node[FIRST + 1]
    x: _Var | None = None
    y: _Var | None = None
    for j in range(FIRST + 2, len(node)):
        item = node[j]
        k = token_index(node, j)
        if item.__class__ is str:
            raise src.error(k, f"expected a declaration '(...)', got {item!r}")
        cmd = head(item)
        if cmd in _THEORY:
            raise src.error(token_index(item, FIRST), _THEORY[cmd])
        if cmd == "declare-input":
            if x is not None:
                raise src.error(k, "several inputs: MIO theory unsupported")
            if y is not None:
                raise src.error(k, "declare-input after declare-output: inputs come first")
            x = _tensor(src, item, 0)
        elif cmd == "declare-output":
            if y is not None:
                raise src.error(k, "several outputs: MIO theory unsupported")
            y = _tensor(src, item, 1)
            if x is not None and y.name == x.name:
                raise src.error(y.token, f"variable {y.name} declared twice")
        else:
            raise src.error(token_index(item, FIRST) if cmd else k,
                            f"unknown declaration {cmd or '(...)'!r} in declare-network")
    if x is None:
        raise src.error(node[1], f"network {name} declares no input")
    if y is None:
        raise src.error(node[1], f"network {name} declares no output")
    return name, x, y


def _tensor(src: Source, node: SExpr, side: int) -> _Var:
    """A declare-input (side 0) / declare-output (side 1) node: NAME TYPE SHAPE."""
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
    for text, k, delta in pieces[3:]:
        if text == "initialized" and side == 0:
            raise src.error(k, "initialized inputs unsupported", delta)
        raise src.error(k, f"unexpected {text!r} in {cmd}", delta)
    return _Var(name, dtype, shape, kn, side)


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


def _legacy_element(src: Source, node: SExpr, x: _Var | None, y: _Var | None) -> None:
    """``(declare-fun X[i] () TYPE)`` for a variable declared with shape [0] (see module doc)."""
    k = token_index(node, FIRST + 1)
    if len(node) != FIRST + 4 or node[FIRST + 1].__class__ is not str:
        raise src.error(k, "declare-fun is not VNN-LIB 2.0")
    m = _INDEXED.match(node[FIRST + 1])
    var = None
    if m:
        var = next((v for v in (x, y) if v is not None and v.name == m.group(1)), None)
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


def _resolver(x: _Var, y: _Var, network: str | None):
    """symbol -> variable code, for the declared input x and output y."""
    by_name = {x.name: x, y.name: y}

    def resolve(tok: str) -> int:
        b = tok.find("[")
        name = tok if b < 0 else tok[:b].rstrip()
        var = by_name.get(name)
        if var is None:
            if name == network:
                raise SymbolError(f"{name} is the network, not a variable")
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
