"""Exact values of VNN-LIB numbers and comparisons.

VNN-LIB numbers are decimals.  The parser keeps float64 values for the engine (nearest, or
rounded outwards where a bound uses them) and, beside them, what is needed to recover every
comparison exactly as written: a counterexample is judged in rational arithmetic
(``fractions.Fraction``) against the exact comparisons, never against their float images.

Recovering a decimal costs a ``Fraction`` (~3 us); the 11 MB nn4sys queries hold 720,000 numbers,
so exact values are computed only when asked for (for the few cases a candidate is checked in).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

_TWO53 = 1 << 53


def decimal_is_float(tok: str) -> bool:
    """Whether the decimal tok equals its float64 image exactly, decided with integer arithmetic
    (~1 us, no Fraction): m * 10**-k is a binary float iff 5**k divides m and the quotient's odd
    part fits in 53 bits (exponent range permitting).  False is always safe: the caller then
    rounds outwards."""
    s = tok.lower().lstrip("-")
    mant, _, exp = s.partition("e")
    ip, _, fp = mant.partition(".")
    digits = (ip + fp).lstrip("0")
    if not digits:
        return True                      # zero
    k = len(fp) - (int(exp) if exp else 0)
    m = int(digits)
    if k <= 0:
        if k < -22:
            return False
        m *= 10 ** (-k)
    elif k > 1074 or m % (p := 5 ** k):
        return False
    else:
        m //= p
    m //= m & -m                         # drop the factors of 2
    return m < _TWO53


def float_toward(q: Fraction, direction: int, ftype=np.float64, strict: bool = False):
    """The first value of the float type ftype at or beyond q in the direction, decided by exact
    comparison: +1, the smallest v >= q (> q if strict); -1, the largest v <= q (< q if
    strict).  +-inf (the direction's) when the type has none."""
    big = Fraction(float(np.finfo(ftype).max))
    toward = ftype(np.inf * direction)
    if q * direction < -big:              # beyond the type's range behind us: its extreme
        return ftype(-big if direction > 0 else big)
    if q * direction > big:
        return toward
    ok = lambda v: (Fraction(float(v)) - q) * direction > 0 or (not strict and Fraction(float(v)) == q)
    v = ftype(float(q))
    for _ in range(4):                    # float() then ftype() may round twice: step back
        back = np.nextafter(v, -toward)
        if not np.isfinite(back) or back == v or not ok(back):
            break
        v = back
    for _ in range(4):
        if not np.isfinite(v) or ok(v):
            break
        v = np.nextafter(v, toward)
    return v if np.isfinite(v) and ok(v) else toward   # (a flush-to-zero mode breaks nextafter)


class Exact:
    """The exact rational coefficients and constant of a comparison whose float image may differ.

    Built either from Fractions (comparisons through arithmetic terms) or, lazily, from the
    numeric token of a simple comparison ``(op var number)``: then the coefficients are +-1
    (exact as floats) and the constant is ``sign * number``.
    """

    __slots__ = ("_coefs", "_const", "_tok", "_sign")

    def __init__(self, coefs: tuple[Fraction, ...] | None, const: Fraction | None,
                 tok: str | None = None, sign: int = 1):
        self._coefs, self._const, self._tok, self._sign = coefs, const, tok, sign

    @classmethod
    def of_token(cls, tok: str, sign: int) -> "Exact":
        return cls(None, None, tok, sign)

    @property
    def lazy(self) -> bool:
        """Built from a number token: coefficients +-1 (exact floats), constant a decimal."""
        return self._tok is not None

    def const_is_float(self) -> bool:
        """For a lazy Exact: whether the float constant is the decimal exactly."""
        return decimal_is_float(self._tok)

    def value(self, float_coefs: tuple[float, ...]) -> tuple[tuple[Fraction, ...], Fraction]:
        if self._const is None:
            self._const = self._sign * Fraction(self._tok)
        coefs = self._coefs if self._coefs is not None else tuple(Fraction(c) for c in float_coefs)
        return coefs, self._const

    def __repr__(self) -> str:
        return f"Exact({self._coefs!r}, {self._const!r}, {self._tok!r}, {self._sign})"
