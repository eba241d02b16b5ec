"""The typed AST both front ends produce and ``lower`` consumes.

Variables are flattened to integer *codes*: input element i (row-major flat index) is ``i``,
output element j is ``~j`` (= -1 - j).  A code's sign tells its side; lowering maps codes to
columns once n_in and n_out are known.

A formula is a ``Lin`` (one linear comparison), an ``And`` / ``Or`` of formulas, or one of the
constants ``TRUE`` / ``FALSE`` (comparisons between constants fold to these).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, NamedTuple, Union

from .exact import Exact
from .property import Variable


class Lin(NamedTuple):
    """``sum(coefs[k] * var[vars[k]]) + const <= 0`` (``< 0`` when strict).

    vars: sorted distinct codes, all of one side (all >= 0 or all < 0), never empty;
    coefs: nonzero float64 coefficients, one per var (nearest to the exact ones);
    const: the float64 nearest to the exact constant;
    exact: None when coefs and const are the exact values as written, else their exact
    rational values (``Exact``), which decide whether a counterexample is one.
    """

    vars: tuple[int, ...]
    coefs: tuple[float, ...]
    const: float
    strict: bool
    exact: Exact | None = None

    def rational(self) -> tuple[tuple[Fraction, ...], Fraction]:
        """(coefficients, constant) exactly as the query wrote them."""
        if self.exact is None:
            return tuple(Fraction(c) for c in self.coefs), Fraction(self.const)
        return self.exact.value(self.coefs)

    def holds_at(self, values) -> bool:
        """Exact test of the comparison at float values (values[i]: the i-th var's value)."""
        coefs, const = self.rational()
        s = const + sum(c * Fraction(float(v)) for c, v in zip(coefs, values))
        return s < 0 if self.strict else s <= 0

    @property
    def is_input(self) -> bool:
        return self.vars[0] >= 0


class And(NamedTuple):
    args: tuple["Formula", ...]


class Or(NamedTuple):
    args: tuple["Formula", ...]


class Const(NamedTuple):
    value: bool


TRUE = Const(True)
FALSE = Const(False)

Formula = Union[Lin, And, Or, Const]


def conj(args: list[Formula]) -> Formula:
    """The conjunction of args, flattened and simplified (TRUE dropped, FALSE absorbs)."""
    out: list[Formula] = []
    for a in args:
        cls = a.__class__
        if cls is And:
            out.extend(a.args)
        elif cls is Const:
            if not a.value:
                return FALSE
        else:
            out.append(a)
    if not out:
        return TRUE
    return out[0] if len(out) == 1 else And(tuple(out))


def disj(args: list[Formula]) -> Formula:
    """The disjunction of args, flattened and simplified (FALSE dropped, TRUE absorbs)."""
    out: list[Formula] = []
    for a in args:
        cls = a.__class__
        if cls is Or:
            out.extend(a.args)
        elif cls is Const:
            if a.value:
                return TRUE
        else:
            out.append(a)
    if not out:
        return FALSE
    return out[0] if len(out) == 1 else Or(tuple(out))


@dataclass(frozen=True)
class Query:
    """What a front end read: declarations, and one formula per ``assert``.

    assert_tokens[k]: token index of the k-th assert (for errors raised while lowering).
    element_name(code): the element's name as the query spells it (``X_3``, ``X[0,3]``).
    element_token(code): token index of the element's declaration.
    """

    version: str
    network: str | None
    inputs: tuple[Variable, ...]
    outputs: tuple[Variable, ...]
    asserts: tuple[Formula, ...]
    assert_tokens: tuple[int, ...]
    element_name: Callable[[int], str]
    element_token: Callable[[int], int]
    networks: tuple = ()    # tuple[property.Network, ...] (VNN-LIB 2.0)

    @property
    def n_in(self) -> int:
        return sum(v.size for v in self.inputs)

    @property
    def n_out(self) -> int:
        return sum(v.size for v in self.outputs)
