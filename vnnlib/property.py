"""The normal form every VNN-LIB query is lowered to, and that the engine consumes.

A query is *satisfiable* (``sat``) when some input in one of the cases reaches that case's
output region.  The output region is the set of outputs that VIOLATE the property, written as a
disjunction of conjunctions of linear constraints ``C @ y + d <= 0`` (row-wise; rows whose
``strict`` flag is set mean ``< 0``).

Shapes: n_in = number of input elements (flattened, row-major), n_out = number of output
elements.  All arrays are float64; they are never rounded to float32 here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Variable:
    """A declared input or output tensor: name, element type (as written), shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass(frozen=True)
class Conjunct:
    """All rows hold: ``C @ y + d <= 0`` (``< 0`` where ``strict``).  C: (k, n_out), d: (k,)."""

    C: np.ndarray
    d: np.ndarray
    strict: np.ndarray  # bool (k,)

    def holds(self, y: np.ndarray) -> bool:
        """Whether the concrete output y (n_out,) lies in this conjunct (exact float64 test)."""
        v = self.C @ np.asarray(y, dtype=np.float64) + self.d
        return bool(np.all(np.where(self.strict, v < 0, v <= 0)))


@dataclass(frozen=True)
class Case:
    """An input region and the output region that violates the property there.

    lo, hi: (n_in,) finite bounds with lo <= hi.  A_in, b_in: optional extra linear input
    constraints ``A_in @ x <= b_in`` ((m, n_in), (m,)); None when the region is a plain box.
    region: the disjunction of conjuncts over the outputs.
    """

    lo: np.ndarray
    hi: np.ndarray
    region: tuple[Conjunct, ...]
    A_in: np.ndarray | None = None
    b_in: np.ndarray | None = None

    def contains_input(self, x: np.ndarray, tol: float = 0.0) -> bool:
        x = np.asarray(x, dtype=np.float64)
        ok = bool(np.all(x >= self.lo - tol) and np.all(x <= self.hi + tol))
        if ok and self.A_in is not None:
            ok = bool(np.all(self.A_in @ x <= self.b_in + tol))
        return ok

    def violated_by(self, y: np.ndarray) -> bool:
        return any(c.holds(y) for c in self.region)


@dataclass(frozen=True)
class Property:
    """A lowered query: the disjunction of its cases, plus what was declared.

    version: "1.0" or "2.0".  network: the declared network name (None for VNN-LIB 1.0).
    inputs / outputs: the declared variables, in declaration order (for 1.0: one input "X"
    and one output "Y", flattened, shapes (n_in,) and (n_out,)).
    """

    cases: tuple[Case, ...]
    inputs: tuple[Variable, ...]
    outputs: tuple[Variable, ...]
    version: str
    network: str | None = None
    n_in: int = field(default=0)
    n_out: int = field(default=0)
