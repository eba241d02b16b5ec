"""Property test: lowering preserves the meaning of random linear formulas.

Random and/or trees of linear comparisons (small integer coefficients, constants on a 0.5
grid) are printed as VNN-LIB 1.0 and 2.0, parsed and lowered.  At random grid points (x, y),
where float64 arithmetic is exact, "x lies in some case whose region y violates" must equal
the direct evaluation of the formula, strict comparisons strict on both sides: the lowered
cases decide membership exactly as written (``Case.contains_input``, ``Conjunct.holds``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vnnlib import parse_text

GRID = [k / 2 for k in range(-6, 7)]
OPS = ["<=", ">=", "<", ">", "="]


@dataclass(frozen=True)
class Cmp:
    side: str                       # "X" or "Y"
    coefs: tuple[tuple[int, int], ...]   # (variable index, coefficient)
    const: float                    # lhs = sum + const
    op: str
    rhs: float


@dataclass(frozen=True)
class Node:
    kind: str                       # "and" / "or"
    args: tuple


@st.composite
def comparisons(draw, n_in: int, n_out: int, side: str | None = None):
    side = side or draw(st.sampled_from("XY"))
    n = n_in if side == "X" else n_out
    idx = draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True))
    coefs = tuple((i, draw(st.sampled_from([-3, -2, -1, 1, 2, 3]))) for i in idx)
    return Cmp(side, coefs, draw(st.sampled_from(GRID)), draw(st.sampled_from(OPS)),
               draw(st.sampled_from(GRID)))


def formulas(n_in: int, n_out: int):
    return st.recursive(
        comparisons(n_in, n_out),
        lambda inner: st.builds(Node, st.sampled_from(["and", "or"]),
                                st.lists(inner, min_size=1, max_size=3).map(tuple)),
        max_leaves=8)


@st.composite
def bounds(draw, box):
    """A bound ``X_i op c`` with c inside the box of X_i: usually leaves the case non-empty."""
    i = draw(st.integers(0, len(box) - 1))
    c = draw(st.sampled_from([g for g in GRID if box[i][0] <= g <= box[i][1]] or GRID))
    return Cmp("X", ((i, 1),), 0.0, draw(st.sampled_from(["<=", ">="])), c)


@st.composite
def cases_style(draw, box, n_out: int):
    """An or of ands, each an input part (from a pool of 2, so some are shared) and an
    output part: the shape that lowers to several cases with several conjuncts."""
    n_in = len(box)
    x_cmp = st.one_of(bounds(box), comparisons(n_in, n_out, "X"))
    pool = [draw(st.lists(x_cmp, min_size=1, max_size=2).map(tuple)) for _ in range(2)]
    terms = []
    for _ in range(draw(st.integers(2, 5))):
        inputs = pool[draw(st.integers(0, 1))]
        outputs = draw(st.lists(comparisons(n_in, n_out, "Y"), max_size=3).map(tuple))
        terms.append(Node("and", inputs + outputs or (Cmp("Y", (), 0.0, "<=", 0.0),)))
    return Node("or", tuple(terms))


@st.composite
def queries(draw):
    n_in, n_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    box = [tuple(sorted(draw(st.lists(st.sampled_from(GRID), min_size=2, max_size=2))))
           for _ in range(n_in)]
    if draw(st.integers(0, 9)) == 9:     # sometimes an empty box
        box[0] = (box[0][1] + 0.5, box[0][0])
    fs = draw(st.lists(formulas(n_in, n_out), min_size=0, max_size=2))
    if draw(st.integers(0, 3)) or not fs:
        fs.append(draw(cases_style(box, n_out)))
    return n_in, n_out, box, fs, draw(st.integers(0, 2**32 - 1))


# ---- printing -----------------------------------------------------------------------------------
def _var(side: str, i: int, v2: bool) -> str:
    return f"{side}[{i}]" if v2 else f"{side}_{i}"


def _term(c: Cmp, v2: bool, style: int) -> str:
    parts = []
    for k, (i, a) in enumerate(c.coefs):
        v = _var(c.side, i, v2)
        if a == 1:
            parts.append(v)
        elif a == -1:
            parts.append(f"(- {v})")
        else:
            parts.append(f"(* {a} {v})" if (style + k) % 2 else f"(* {v} {a})")
    if not parts or c.const != 0 or style % 3 == 0:
        parts.append(repr(c.const))
    return parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})"


def _print(f, v2: bool, style: int = 0) -> str:
    if isinstance(f, Cmp):
        op = "==" if (v2 and f.op == "=") else f.op
        return f"({op} {_term(f, v2, style)} {f.rhs!r})"
    return f"({f.kind} {' '.join(_print(a, v2, style + k) for k, a in enumerate(f.args))})"


def text(n_in, n_out, box, fs, v2: bool) -> str:
    if v2:
        out = ["(vnnlib-version <2.0>)",
               f"(declare-network net (declare-input X real [{n_in}]) "
               f"(declare-output Y real [{n_out}]))"]
    else:
        out = [f"(declare-const X_{i} Real)" for i in range(n_in)]
        out += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (lo, hi) in enumerate(box):
        out.append(f"(assert (>= {_var('X', i, v2)} {lo!r}))")
        out.append(f"(assert (<= {_var('X', i, v2)} {hi!r}))")
    out += [f"(assert {_print(f, v2)})" for f in fs]
    return "\n".join(out)


# ---- direct evaluation --------------------------------------------------------------------------
def evaluate(f, x: np.ndarray, y: np.ndarray) -> bool:
    if isinstance(f, Node):
        vals = (evaluate(a, x, y) for a in f.args)
        return all(vals) if f.kind == "and" else any(vals)
    v = x if f.side == "X" else y
    lhs = sum(a * float(v[i]) for i, a in f.coefs) + f.const
    op = f.op
    return {"<=": lhs <= f.rhs, ">=": lhs >= f.rhs, "<": lhs < f.rhs, ">": lhs > f.rhs,
            "=": lhs == f.rhs}[op]


def holds(n_in, box, fs, x, y) -> bool:
    in_box = all(lo <= x[i] <= hi for i, (lo, hi) in enumerate(box))
    return in_box and all(evaluate(f, x, y) for f in fs)


def lowered(prop, x, y) -> bool:
    return any(c.contains_input(x) and c.violated_by(y) for c in prop.cases)


def points(box, n_out: int, seed: int, n: int = 60):
    """Grid points: x mostly inside the box (corners included), 8 outputs y per x."""
    rng = np.random.default_rng(seed)
    grid = np.array(GRID)
    inside = [grid[(grid >= lo) & (grid <= hi)] for lo, hi in box]
    xs = [np.array([b[k] for b in box]) for k in (0, 1)]
    for _ in range(n):
        if rng.random() < 0.2 or any(len(g) == 0 for g in inside):
            xs.append(rng.choice(grid, size=len(box)))
        else:
            xs.append(np.array([rng.choice(g) for g in inside]))
    for x in xs:
        for y in rng.choice(grid, size=(8, n_out)):
            yield x, y


@settings(max_examples=150, deadline=None, database=None)
@given(queries())
def test_lowering_matches_direct_evaluation(q):
    n_in, n_out, box, fs, seed = q
    p1 = parse_text(text(n_in, n_out, box, fs, v2=False))
    p2 = parse_text(text(n_in, n_out, box, fs, v2=True))
    for x, y in points(box, n_out, seed):
            expect = holds(n_in, box, fs, x, y)
            assert lowered(p1, x, y) == expect, (x, y)
            assert lowered(p2, x, y) == expect, (x, y)
