"""VNN-LIB 1.0 (the VNN-COMP format) front end: s-expressions -> ``Query``.

Accepted commands: ``(declare-const X_i Real)``, ``(declare-fun X_i () Real)`` (the SMT-LIB
spelling some benchmarks use), ``(assert F)``, and the SMT-LIB commands that do not change a
query's meaning (``check-sat``, ``get-model``, ``exit``, ``set-logic``, ``set-info``), which are
skipped.  Inputs are ``X_0 .. X_{n-1}``, outputs ``Y_0 .. Y_{m-1}``, type ``Real`` (or
``real``); variables are declared before use.  Comparisons: ``<= >= < > =``.
"""
from __future__ import annotations

import re

from .ast import Query
from .formula import EQ, GE, GT, LE, LT, Converter, Dialect, SymbolError
from .property import Variable
from .sexpr import FIRST, SExpr, head, token_index
from .tokens import Source

_NAME = re.compile(r"([XY])_(0|[1-9][0-9]*)\Z")
_TYPES = ("Real", "real")
_SKIPPED = frozenset(("check-sat", "get-model", "exit", "set-logic", "set-info"))

DIALECT = Dialect(
    compare={"<=": LE, ">=": GE, "<": LT, ">": GT, "=": EQ},
    refuse={
        "==": "unknown operator '==': VNN-LIB 1.0 writes equality as '='",
        "distinct": "unsupported: distinct",
        "not": "unsupported: not",
        "=>": "unsupported: =>",
        "ite": "unsupported: ite",
        "/": "unsupported operator '/': division",
    },
)


def parse(src: Source, root: SExpr) -> Query:
    """The query of a VNN-LIB 1.0 text whose s-expressions are root."""
    if len(root) == FIRST:
        raise src.error(-1, "empty query: no declarations and no assertions")
    declared: dict[str, int] = {}          # name -> code
    decl_token: dict[int, int] = {}        # code -> token index of its name
    asserts, assert_tokens = [], []

    def resolve(tok: str) -> int:
        code = declared.get(tok)
        if code is not None:
            return code
        if _NAME.match(tok):
            raise SymbolError(f"undeclared variable {tok}")
        raise SymbolError(f"unknown symbol {tok!r}")

    conv = Converter(src, DIALECT, resolve)
    for j in range(FIRST, len(root)):
        node = root[j]
        if node.__class__ is str:
            raise src.error(token_index(root, j), f"expected a command '(...)', got {node!r}")
        cmd = head(node)
        if cmd == "assert":
            if len(node) != FIRST + 2:
                raise conv.fail(node, min(len(node), FIRST + 2),
                                f"'assert' takes 1 formula, got {len(node) - FIRST - 1}")
            asserts.append(conv.formula(node, FIRST + 1))
            assert_tokens.append(node[0])
        elif cmd in ("declare-const", "declare-fun"):
            code, k = _declaration(src, node, cmd, declared)
            declared[node[FIRST + 1]] = code
            decl_token[code] = k
        elif cmd in _SKIPPED:
            continue
        elif cmd == "vnnlib-version":
            raise src.error(node[0], "(vnnlib-version ...) must be the first command")
        elif cmd is None:
            raise conv.fail(node, FIRST, "expected a command name")
        else:
            raise conv.fail(node, FIRST, f"unknown command '{cmd}'")

    n_in = _count(src, decl_token, 0, "X", root)
    n_out = _count(src, decl_token, 1, "Y", root)

    def name(code: int) -> str:
        return f"X_{code}" if code >= 0 else f"Y_{~code}"

    return Query(
        version="1.0",
        network=None,
        inputs=(Variable("X", "Real", (n_in,)),),
        outputs=(Variable("Y", "Real", (n_out,)),),
        asserts=tuple(asserts),
        assert_tokens=tuple(assert_tokens),
        element_name=name,
        element_token=lambda code: decl_token[code],
    )


def _declaration(src: Source, node: SExpr, cmd: str, declared: dict[str, int]
                 ) -> tuple[int, int]:
    """(code, token index of the name) of a declare-const / declare-fun node."""
    want = 4 if cmd == "declare-fun" else 3
    n_args = len(node) - FIRST - 1
    if n_args != want - 1:
        k = token_index(node, min(len(node), FIRST + want))
        expect = "NAME () Real" if cmd == "declare-fun" else "NAME Real"
        raise src.error(k, f"'{cmd}' takes {expect}: {want - 1} arguments, got {n_args}")
    name = node[FIRST + 1]
    k = token_index(node, FIRST + 1)
    if name.__class__ is not str:
        raise src.error(k, "expected a variable name")
    m = _NAME.match(name)
    if not m:
        raise src.error(k, f"unsupported variable name {name!r}: VNN-LIB 1.0 names inputs "
                           "X_0, X_1, ... and outputs Y_0, Y_1, ...")
    if name in declared:
        raise src.error(k, f"variable {name} declared twice")
    if cmd == "declare-fun":
        args = node[FIRST + 2]
        if args.__class__ is not list or len(args) != FIRST:
            raise src.error(token_index(node, FIRST + 2),
                            "declare-fun with arguments unsupported: expected '()'")
    typ = node[len(node) - 1]
    if typ not in _TYPES:
        raise src.error(token_index(node, len(node) - 1),
                        f"unsupported type {_show(typ)}: VNN-LIB 1.0 variables are Real")
    i = int(m.group(2))
    return (i if m.group(1) == "X" else ~i), k


def _count(src: Source, decl_token: dict[int, int], side: int, letter: str,
           root: SExpr) -> int:
    """Number of declared X (side 0) or Y (side 1) elements; they must be 0..n-1."""
    idx = sorted(c if side == 0 else ~c for c in decl_token if (c < 0) == bool(side))
    if not idx:
        what = "input" if side == 0 else "output"
        raise src.error(root[1], f"no {what} variables declared ({letter}_0, {letter}_1, ...)")
    for expect, i in enumerate(idx):
        if i != expect:
            code = i if side == 0 else ~i
            raise src.error(decl_token[code], f"{letter}_{i} declared but {letter}_{expect} is "
                                              f"missing: indices must be 0..n-1")
    return len(idx)


def _show(item: str | SExpr) -> str:
    return repr(item) if item.__class__ is str else "'(...)'"

