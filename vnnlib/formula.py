"""S-expressions -> formulas (``ast``), shared by the 1.0 and 2.0 front ends.

Both versions share the same boolean and arithmetic core: n-ary ``and``/``or``, comparisons
between linear terms, ``+``, ``-`` (unary or n-ary), ``*`` (n-ary, at most one non-constant
factor).  A ``Dialect`` names what differs: the comparison operators and the operators that get
a dedicated error message.  Variables are resolved by a callback that the front end supplies.

All walks are iterative: formulas and terms may nest to any depth.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

from .ast import FALSE, TRUE, Formula, Lin, conj, disj
from .exact import Exact
from .sexpr import FIRST, SExpr, token_index
from .tokens import Source

LE, GE, LT, GT, EQ, NE = "<=", ">=", "<", ">", "eq", "ne"
_NUM_START = frozenset("0123456789.")
_MAX = 1.7976931348623157e308
CONNECTIVES = ("and", "or")
ARITH = frozenset(("+", "-", "*"))


_MIXED = "mixed input/output constraint unsupported"


def _lin(fields: tuple) -> Lin:
    """Lin(*fields) without NamedTuple's Python-level __new__ (hot path)."""
    return tuple.__new__(Lin, fields)


def _pair(x: int | float, y: int | float, strict: bool, xt: str, yt: str) -> Formula | None:
    """``x <= y`` (``<`` if strict) for leaves x, y (codes or floats; xt, yt: their tokens);
    None when it mixes inputs and outputs.  A number's exact value is kept beside its float."""
    if x.__class__ is int:
        if y.__class__ is int:
            if x == y:
                return FALSE if strict else TRUE
            if (x ^ y) < 0:
                return None
            if x < y:
                return _lin(((x, y), (1.0, -1.0), 0.0, strict, None))
            return _lin(((y, x), (-1.0, 1.0), 0.0, strict, None))
        return _lin(((x,), (1.0,), 0.0 - y, strict, Exact.of_token(yt, -1)))
    if y.__class__ is int:
        return _lin(((y,), (-1.0,), x + 0.0, strict, Exact.of_token(xt, 1)))
    fx, fy = Fraction(xt), Fraction(yt)
    return TRUE if (fx < fy if strict else fx <= fy) else FALSE


def _part(tok: str, i: int) -> int:
    """Character offset of part i (0: the operator) of the simple comparison tok."""
    return 1 if i == 0 else [m.start() for m in re.finditer(r"\S+", tok)][i]


class SymbolError(Exception):
    """Raised by a resolver for a symbol it does not accept; the converter adds the position."""


@dataclass(frozen=True)
class Dialect:
    """What the versions disagree on.

    compare: operator -> one of LE, GE, LT, GT, EQ.
    refuse: operator -> message, for operators met in practice that are not supported.
    """

    compare: dict[str, str]
    refuse: dict[str, str] = field(default_factory=dict)


def parse_number(tok: str) -> float | None:
    """tok as a float64 (Python's correctly rounded float()), None when tok is not numeric.

    Numeric tokens start with a digit or '.', optionally after one '-'.  Raises SymbolError
    for a numeric-looking token float() rejects, or that float() would accept only because
    it is lenient ('_' separators, non-ASCII digits), or that overflows.
    """
    c = tok[0]
    if not (c in _NUM_START or (c == "-" and len(tok) > 1 and tok[1] in _NUM_START)):
        return None
    try:
        v = float(tok)
    except ValueError:
        raise SymbolError(f"malformed number {tok!r}") from None
    if "_" in tok or not tok.isascii():
        raise SymbolError(f"malformed number {tok!r}")
    if not -_MAX <= v <= _MAX:
        raise SymbolError(f"number {tok!r} is out of the float64 range")
    return v


class Converter:
    """Turns assert bodies into formulas.  resolve(symbol) -> variable code, or SymbolError."""

    def __init__(self, src: Source, dialect: Dialect, resolve: Callable[[str], int],
                 echo: Callable[[int], int] | None = None):
        """echo: for a comparison that mixes inputs with outputs (MNC), the output-side code
        that stands for an input element (a copy of the input among the observed values); None:
        such comparisons are refused."""
        self.src = src
        self.dialect = dialect
        self.resolve = resolve
        self.echo = echo
        self.codes: dict[str, int] = {}
        self.memo: dict[str, Formula] = {}

    # ---- errors -------------------------------------------------------------------------------
    def fail(self, node: SExpr, j: int, message: str, delta: int = 0) -> Exception:
        """The error for item j of node (j == len(node): its ')'; j < FIRST: its '(').

        delta: character offset inside that item's token (a part of a simple comparison).
        """
        k = node[0] if j < FIRST else token_index(node, j)
        return self.src.error(k, message, delta)

    def _arity(self, node: SExpr, op: str, expected: str, got: int, extra_at: int) -> Exception:
        return self.fail(node, extra_at, f"'{op}' takes {expected}, got {got}")

    def _unknown(self, node: SExpr, what: str) -> Exception:
        """Error for a node whose head is not what this position needs."""
        if len(node) == FIRST:
            return self.fail(node, 0, f"empty list '()' where {what} is expected")
        h = node[FIRST]
        if h.__class__ is list:
            return self.fail(node, FIRST, f"expected an operator, got a list ({what} expected)")
        return self.fail(node, FIRST, self._refusal(h, what))

    def _refusal(self, op: str, what: str) -> str:
        """The message for operator op where what is expected."""
        if op in self.dialect.refuse:
            return self.dialect.refuse[op]
        return f"unknown operator '{op}' ({what} expected)"

    # ---- leaves -------------------------------------------------------------------------------
    def value(self, tok: str) -> int | float:
        """A number (float) or a variable code (int) for atom tok; SymbolError if neither."""
        code = self.codes.get(tok)
        if code is not None:
            return code
        v = parse_number(tok)
        if v is not None:
            return v
        if tok[0] in '"[]':
            raise SymbolError(f"unexpected token {tok!r}")
        if tok[0] == "(":
            raise SymbolError(f"expected an arithmetic term, got the comparison {tok}")
        code = self.resolve(tok)
        self.codes[tok] = code
        return code

    def leaf(self, tok: str, node: SExpr, j: int) -> int | float:
        """value(tok) for atom tok = node[j], errors positioned there."""
        try:
            return self.value(tok)
        except SymbolError as e:
            raise self.fail(node, j, str(e)) from None

    # ---- formulas -----------------------------------------------------------------------------
    def formula(self, parent: SExpr, j: int) -> Formula:
        """The formula parent[j] (an assert body, say)."""
        node = parent[j]
        if node.__class__ is str:
            if node[0] == "(":
                return self.simple(parent, j)
            raise self.fail(parent, j, f"expected a formula, got {node!r}")
        h = node[FIRST] if len(node) > FIRST else None
        if h.__class__ is str and h in self.dialect.compare:
            return self.compare(node)
        if h not in CONNECTIVES:
            raise self._unknown(node, "a formula")
        compare_ops = self.dialect.compare
        memo = self.memo
        stack: list[list] = [[node, FIRST + 1, []]]
        while stack:
            frame = stack[-1]
            node, i, args = frame
            n = len(node)
            while i < n:
                child = node[i]
                i += 1
                if child.__class__ is str:
                    if child[0] != "(":
                        raise self.fail(node, i - 1, f"expected a formula, got {child!r}")
                    f = memo.get(child)
                    args.append(f if f is not None else self.simple(node, i - 1))
                    continue
                h = child[FIRST] if len(child) > FIRST else None
                if h.__class__ is str and h in compare_ops:
                    args.append(self.compare(child))
                elif h == "and" or h == "or":
                    frame[1] = i
                    stack.append([child, FIRST + 1, []])
                    break
                else:
                    raise self._unknown(child, "a formula")
            else:
                stack.pop()
                op = node[FIRST]
                if not args:
                    raise self._arity(node, op, "at least 1 argument", 0, len(node))
                f = conj(args) if op == "and" else disj(args)
                if not stack:
                    return f
                stack[-1][2].append(f)
        raise AssertionError("unreachable")

    def simple(self, parent: SExpr, j: int) -> Formula:
        """The simple-comparison token ``parent[j]`` = ``"(op a b)"`` (see ``tokens``).

        Memoised by its text: large specs repeat comparisons (every input bound of nn4sys
        appears twice).
        """
        tok = parent[j]
        f = self.memo.get(tok)
        if f is not None:
            return f
        op, a, b = tok[1:-1].split()
        kind = self.dialect.compare.get(op)
        if kind is None:
            raise self.fail(parent, j, self._refusal(op, "a formula"), 1)
        try:
            x = self.value(a)
        except SymbolError as e:
            raise self.fail(parent, j, str(e), _part(tok, 1)) from None
        try:
            y = self.value(b)
        except SymbolError as e:
            raise self.fail(parent, j, str(e), _part(tok, 2)) from None
        f = self._leaves(kind, x, y, a, b)
        if f is None:
            f = self._echoed(kind, x, y, a, b, lambda: self.fail(parent, j, _MIXED))
        self.memo[tok] = f
        return f

    def compare(self, node: SExpr) -> Formula:
        """A comparison node ``(op a b)`` that is not a simple-comparison token."""
        op = node[FIRST]
        if len(node) != FIRST + 3:
            n = len(node) - FIRST - 1
            raise self._arity(node, op, "2 arguments", n, min(len(node), FIRST + 3))
        kind = self.dialect.compare[op]
        a = node[FIRST + 1]
        b = node[FIRST + 2]
        if a.__class__ is str and b.__class__ is str and a[0] != "(" and b[0] != "(":
            x, y = self.leaf(a, node, FIRST + 1), self.leaf(b, node, FIRST + 2)
            f = self._leaves(kind, x, y, a, b)
            return f if f is not None else self._echoed(kind, x, y, a, b, lambda: self.fail(node, 0, _MIXED))
        ta = self.term(node, FIRST + 1)
        tb = self.term(node, FIRST + 2)
        if kind is EQ:
            return conj([self._diff(ta, tb, False, node), self._diff(tb, ta, False, node)])
        if kind is NE:   # exactly its disjunction: a < b or a > b
            return disj([self._diff(ta, tb, True, node), self._diff(tb, ta, True, node)])
        if kind is GE or kind is GT:
            ta, tb = tb, ta
        return self._diff(ta, tb, kind is LT or kind is GT, node)

    def _echoed(self, kind: str, x, y, xt: str, yt: str, error) -> Formula:
        """A comparison of an input leaf with an output leaf, the input read through its echo."""
        if self.echo is None:
            raise error()
        x, y = (self.echo(v) if v.__class__ is int and v >= 0 else v for v in (x, y))
        return self._leaves(kind, x, y, xt, yt)

    @staticmethod
    def _leaves(kind: str, x: int | float, y: int | float, xt: str, yt: str) -> Formula | None:
        """``x kind y`` for leaves (codes or numbers, tokens xt, yt); None when it mixes inputs
        and outputs."""
        if kind is EQ:
            f, g = _pair(x, y, False, xt, yt), _pair(y, x, False, yt, xt)
            return None if f is None or g is None else conj([f, g])
        if kind is NE:
            f, g = _pair(x, y, True, xt, yt), _pair(y, x, True, yt, xt)
            return None if f is None or g is None else disj([f, g])
        if kind is GE or kind is GT:
            x, y, xt, yt = y, x, yt, xt
        return _pair(x, y, kind is LT or kind is GT, xt, yt)

    def _diff(self, ta: tuple[dict, Fraction], tb: tuple[dict, Fraction], strict: bool,
              node: SExpr) -> Formula:
        """``ta - tb <= 0`` (``< 0`` if strict) for exact linear terms (coefficients, constant).

        The Lin carries the floats nearest to the exact values, and the exact values themselves
        when a float differs from them."""
        coefs = dict(ta[0])
        for v, c in tb[0].items():
            coefs[v] = coefs.get(v, 0) - c
        const = ta[1] - tb[1]
        items = sorted((v, c) for v, c in coefs.items() if c != 0)
        if items and items[0][0] < 0 <= items[-1][0]:
            if self.echo is None:
                raise self.fail(node, 0, _MIXED)
            echoed: dict[int, Fraction] = {}
            for v, c in items:
                key = self.echo(v) if v >= 0 else v
                echoed[key] = echoed.get(key, 0) + c
            items = sorted((v, c) for v, c in echoed.items() if c != 0)
        if not items:
            return TRUE if (const < 0 if strict else const <= 0) else FALSE
        try:
            fcoefs = tuple(float(c) for _, c in items)
            fconst = float(const) + 0.0   # + 0.0: no -0.0 in the output
        except OverflowError:
            fcoefs, fconst = (), _MAX * 2
        if not all(-_MAX <= c <= _MAX for c in fcoefs) or not -_MAX <= fconst <= _MAX:
            raise self.fail(node, 0, "arithmetic overflow: a coefficient is not finite")
        exact = None
        rational = tuple(c for _, c in items)
        if any(Fraction(f) != c for f, c in zip(fcoefs, rational)) or Fraction(fconst) != const:
            exact = Exact(rational, Fraction(const))
        return Lin(tuple(v for v, _ in items), fcoefs, fconst, strict, exact)

    # ---- arithmetic ---------------------------------------------------------------------------
    def term(self, parent: SExpr, j: int) -> tuple[dict[int, Fraction], Fraction]:
        """The linear term parent[j] as exact (coefficients by code, constant)."""
        node = parent[j]
        if node.__class__ is str:
            return self._exact_leaf(self.leaf(node, parent, j), node)
        self._check_arith(node)
        stack: list[list] = [[node, FIRST + 1, []]]
        while True:
            frame = stack[-1]
            node, i, args = frame
            if i < len(node):
                frame[1] = i + 1
                child = node[i]
                if child.__class__ is str:
                    args.append(self._exact_leaf(self.leaf(child, node, i), child))
                else:
                    self._check_arith(child)
                    stack.append([child, FIRST + 1, []])
                continue
            stack.pop()
            t = self._combine(node, args)
            if not stack:
                return t
            stack[-1][2].append(t)

    @staticmethod
    def _exact_leaf(x: int | float, tok: str) -> tuple[dict[int, Fraction], Fraction]:
        """A leaf as an exact term: a number's value as written (a decimal, not its float)."""
        return ({}, Fraction(tok)) if x.__class__ is float else ({x: Fraction(1)}, Fraction(0))

    def _check_arith(self, node: SExpr) -> None:
        h = node[FIRST] if len(node) > FIRST else None
        if h.__class__ is not str or h not in ARITH:
            raise self._unknown(node, "an arithmetic term")

    def _combine(self, node: SExpr, args: list[tuple[dict, Fraction]]) -> tuple[dict, Fraction]:
        """``(op args...)`` in exact rational arithmetic: ``(+ Y_0 0.1 0.2)`` is Y_0 + 3/10."""
        op = node[FIRST]
        if not args:
            raise self._arity(node, op, "at least 1 argument", 0, len(node))
        if op == "*":
            variable = [t for t in args if t[0]]
            if len(variable) > 1:
                raise self.fail(node, 0, "non-linear term (POLY theory unsupported)")
            scale = Fraction(1)
            for t in args:
                if not t[0]:
                    scale *= t[1]
            if not variable:
                return {}, scale
            coefs, const = variable[0]
            return {v: c * scale for v, c in coefs.items()}, const * scale
        if op == "-" and len(args) == 1:
            coefs, const = args[0]
            return {v: -c for v, c in coefs.items()}, -const
        sign = -1 if op == "-" else 1
        coefs = dict(args[0][0])
        const = args[0][1]
        for t in args[1:]:
            for v, c in t[0].items():
                coefs[v] = coefs.get(v, 0) + sign * c
            const += sign * t[1]
        return coefs, const
