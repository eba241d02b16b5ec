"""The normal form every VNN-LIB query is lowered to, and that the engine consumes.

A query is *satisfiable* (``sat``) when some input in one of the cases reaches that case's
output region.  The output region is the set of outputs that VIOLATE the property, written as a
disjunction of conjunctions of linear constraints ``C @ y + d <= 0`` (row-wise; rows whose
``strict`` flag is set mean ``< 0``).

Shapes: n_in = number of input elements (flattened, row-major), n_out = number of output
elements.  All arrays are float64; they are never rounded to float32 here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .exact import float_toward


@dataclass(frozen=True)
class Variable:
    """A declared input, hidden or output tensor: name, element type (as written), shape, and
    the ONNX tensor it names when the query says (mandatory for hidden tensors)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    onnx_name: str | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass(frozen=True)
class Conjunct:
    """All rows hold: ``C @ y + d <= 0`` (``< 0`` where ``strict``).  C: (k, n_out), d: (k,).

    C, d, strict are the engine's float64 image, sound for refutation: every coefficient is
    exact (a row whose coefficients are not floats is scaled by a positive integer that makes
    them so, or left out, which only enlarges the region) and d is rounded down, so the float
    rows hold wherever the exact ones do.  lins: the comparisons exactly as written, which decide
    whether an output violates (``holds``).
    """

    C: np.ndarray
    d: np.ndarray
    strict: np.ndarray  # bool (k,)
    lins: tuple = ()    # tuple[vnnlib.ast.Lin, ...] over output codes ~j

    def holds(self, y: np.ndarray) -> bool:
        """Whether the concrete output y (n_out,) lies in this conjunct, decided exactly (rational
        arithmetic on y's float values)."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(y)):
            return False
        return all(lin.holds_at([y[~v] for v in lin.vars]) for lin in self.lins)


class Region(Sequence):
    """A case's disjunction of conjuncts, packed: the float rows of all of them in one matrix
    (conjunct j's are rows starts[j]:starts[j + 1]) and each one's exact comparisons.  A
    Conjunct is made when one is asked for, so a query of a million disjuncts holds three arrays
    and the comparisons, not a million small objects and their array views.

    C: (R, n_out) float64; d, strict: (R,); starts: (J + 1,) int64; lins: J tuples of Lin.
    """

    __slots__ = ("C", "d", "strict", "starts", "lins")

    def __init__(self, C: np.ndarray, d: np.ndarray, strict: np.ndarray, starts: np.ndarray, lins: list):
        self.C, self.d, self.strict, self.starts, self.lins = C, d, strict, starts, lins

    @classmethod
    def of(cls, conjuncts) -> "Region":
        """The region of these conjuncts (one matrix for their rows)."""
        conjuncts = tuple(conjuncts)
        sizes = [c.C.shape[0] for c in conjuncts]
        starts = np.zeros(len(conjuncts) + 1, dtype=np.int64)
        np.cumsum(sizes, out=starts[1:])
        if not conjuncts:
            return cls(np.zeros((0, 0)), np.zeros(0), np.zeros(0, dtype=bool), starts, [])
        return cls(np.concatenate([np.asarray(c.C, dtype=np.float64) for c in conjuncts]),
                   np.concatenate([c.d for c in conjuncts]).astype(np.float64),
                   np.concatenate([c.strict for c in conjuncts]).astype(bool), starts,
                   [c.lins for c in conjuncts])

    def __len__(self) -> int:
        return len(self.lins)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return tuple(self[i] for i in range(*j.indices(len(self))))
        if j < 0:
            j += len(self)
        if not 0 <= j < len(self):
            raise IndexError(j)
        a, b = int(self.starts[j]), int(self.starts[j + 1])
        return Conjunct(self.C[a:b], self.d[a:b], self.strict[a:b], self.lins[j])

    def sizes(self) -> np.ndarray:
        """Rows per conjunct, (J,)."""
        return np.diff(self.starts)

    def __repr__(self) -> str:
        return f"Region({len(self)} conjuncts, {self.C.shape[0]} rows)"


@dataclass(frozen=True)
class Case:
    """An input region and the output region that violates the property there.

    lo, hi: (n_in,) finite float64 bounds, rounded outwards: the box holds every input that meets
    the case's comparisons (strict ones relaxed), so the engine's bounds over it are sound.
    A_in, b_in: the float images of the case's linear input comparisons over several inputs
    (``A_in @ x <= b_in``; None when there are none).  lins: every input comparison of the case
    exactly as written; they decide whether an input is in the region (``contains_input``) and
    which float inputs exist there (``float_box``).  region: the disjunction of conjuncts over
    the outputs.
    """

    lo: np.ndarray
    hi: np.ndarray
    region: Region         # or any sequence of Conjuncts, packed on construction
    A_in: np.ndarray | None = None
    b_in: np.ndarray | None = None
    lins: tuple = ()    # tuple[vnnlib.ast.Lin, ...] over input codes
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.region, Region):    # any sequence of Conjuncts is packed
            object.__setattr__(self, "region", Region.of(self.region))

    def contains_input(self, x: np.ndarray) -> bool:
        """Whether x (n_in,) meets every input comparison exactly as written.

        The single-input comparisons are read through ``float_box(float64)``: a float64 value
        meets them exactly iff it lies in that box.  The others are evaluated in Fractions."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        box = self.float_box(np.float64)
        if box is None or x.shape != self.lo.shape or not np.all(np.isfinite(x)):
            return False
        if np.any(x < box[0]) or np.any(x > box[1]):
            return False
        return all(lin.holds_at([x[v] for v in lin.vars]) for lin in self.lins if len(lin.vars) > 1)

    def violated_by(self, y: np.ndarray) -> bool:
        return any(c.holds(y) for c in self.region)

    def exact_box(self) -> "ExactBox":
        """The per-element bounds the single-input comparisons set, in rational arithmetic."""
        if "box" not in self._memo:
            self._memo["box"] = ExactBox.of(self.lins, self.lo.shape[0])
        return self._memo["box"]

    def float_box(self, dtype) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) in dtype: the smallest and largest values of dtype that each element may take
        under the exact bounds (strict ones strict), or None when some element has no value of
        dtype there, so that no input of that type lies in the case."""
        key = ("float", np.dtype(dtype).name)
        if key not in self._memo:
            self._memo[key] = self.exact_box().in_type(np.dtype(dtype).type)
        return self._memo[key]

    def is_empty(self) -> bool:
        """True when the bounds on some element admit no real value (exactly): lo > hi, or lo == hi
        with one of them strict.  (Contradictions among comparisons over several inputs are not
        looked for; such a case is still sound to bound.)"""
        return self.exact_box().empty


class ExactBox:
    """Per-element exact bounds: lo[i], hi[i] (Fraction or None for none), and strictness."""

    def __init__(self, n: int):
        self.lo: list = [None] * n
        self.hi: list = [None] * n
        self.lo_strict = [False] * n
        self.hi_strict = [False] * n

    @classmethod
    def of(cls, lins, n: int) -> "ExactBox":
        box = cls(n)
        for lin in lins:
            if len(lin.vars) == 1:
                box._add(lin)
        return box

    def _add(self, lin) -> None:
        (a,), c = lin.rational()
        i, b = lin.vars[0], -c / a            # a x + c <= 0  ->  x <= b (a > 0) or x >= b (a < 0)
        if a > 0:
            cur = self.hi[i]
            if cur is None or b < cur or (b == cur and lin.strict):
                self.hi[i], self.hi_strict[i] = b, lin.strict or (cur == b and self.hi_strict[i])
        else:
            cur = self.lo[i]
            if cur is None or b > cur or (b == cur and lin.strict):
                self.lo[i], self.lo_strict[i] = b, lin.strict or (cur == b and self.lo_strict[i])

    def propagate(self, lins, passes: int = 3) -> None:
        """Tighten the bounds with comparisons over several inputs (interval propagation, exact):
        from sum_j a_j x_j + c <= 0, a_i x_i <= -c - sum_{j != i} min over the box of a_j x_j.
        Strictness is dropped on what is derived (a closed superset: sound for bounding, for
        snapping candidates, which are still checked exactly, and for emptiness).  A term whose
        minimum is unbounded (a missing bound, VNN-LIB 2.0) leaves only that term's element to
        be bounded by the comparison, and nothing when there are two such terms."""
        for _ in range(passes):
            changed = False
            for lin in lins:
                coefs, c = lin.rational()
                low = [self._low_term(v, a) for v, a in zip(lin.vars, coefs)]
                free = [k for k, lv in enumerate(low) if lv is None]
                if len(free) > 1:
                    continue
                total = c + sum(lv for lv in low if lv is not None)
                for k, (v, a) in enumerate(zip(lin.vars, coefs)):
                    if free and k != free[0]:
                        continue
                    b = -(total - (low[k] or 0)) / a
                    if a > 0 and (self.hi[v] is None or b < self.hi[v]):
                        self.hi[v], self.hi_strict[v], changed = b, False, True
                    elif a < 0 and (self.lo[v] is None or b > self.lo[v]):
                        self.lo[v], self.lo_strict[v], changed = b, False, True
            if not changed:
                return

    def _low_term(self, v: int, a):
        """min of a x_v over the bounds of x_v, None when unbounded."""
        bound = self.lo[v] if a > 0 else self.hi[v]
        return None if bound is None else a * bound

    @property
    def empty(self) -> bool:
        for lo, hi, ls, hs in zip(self.lo, self.hi, self.lo_strict, self.hi_strict):
            if lo is not None and hi is not None and (lo > hi or (lo == hi and (ls or hs))):
                return True
        return False

    def in_type(self, ftype) -> tuple[np.ndarray, np.ndarray] | None:
        n = len(self.lo)
        lo, hi = np.empty(n, dtype=ftype), np.empty(n, dtype=ftype)
        for i in range(n):
            lo[i] = _first_value(ftype, self.lo[i], self.lo_strict[i], +1)
            hi[i] = _first_value(ftype, self.hi[i], self.hi_strict[i], -1)
        if np.any(~np.isfinite(lo)) or np.any(~np.isfinite(hi)) or np.any(lo > hi):
            return None
        return lo, hi


def _first_value(ftype, bound, strict: bool, direction: int):
    """exact.float_toward, or the type's largest finite magnitude when there is no bound (a 2.0
    query may leave inputs unbounded: then any finite value is allowed)."""
    if bound is None:
        big = np.finfo(ftype).max
        return ftype(-big if direction > 0 else big)
    return float_toward(bound, direction, ftype, strict)


@dataclass(frozen=True)
class Network:
    """A declared network: its inputs, hidden tensors and outputs in declaration order, and
    what it is said to be: the same model as another (``equal_to``) or the same graph with
    other weights (``isomorphic_to``).

    Element codes: the inputs of all networks, network after network, are the input elements
    0..n_in-1; the hidden tensors then the outputs of each network, network after network, are
    the output elements 0..n_out-1 (``observed``)."""

    name: str
    inputs: tuple[Variable, ...]
    outputs: tuple[Variable, ...]
    hidden: tuple[Variable, ...] = ()
    equal_to: str | None = None
    isomorphic_to: str | None = None

    @property
    def observed(self) -> tuple[Variable, ...]:
        """The output-side variables in code order: hidden tensors, then outputs."""
        return self.hidden + self.outputs


@dataclass(frozen=True)
class Property:
    """A lowered query: the disjunction of its cases, plus what was declared.

    version: "1.0" or "2.0".  network: the first declared network's name (None for VNN-LIB 1.0).
    inputs / outputs: the declared variables in code order (for 1.0: one input "X" and one
    output "Y", flattened, shapes (n_in,) and (n_out,)); outputs include hidden tensors.
    networks: the declared networks (VNN-LIB 2.0; empty for 1.0).
    """

    cases: tuple[Case, ...]
    inputs: tuple[Variable, ...]
    outputs: tuple[Variable, ...]
    version: str
    network: str | None = None
    n_in: int = field(default=0)
    n_out: int = field(default=0)
    networks: tuple[Network, ...] = ()
