"""A sample's robustness question as a VNN-LIB 2.0 query, written exactly.

For a sample x0 with label y, an L-inf radius eps and an optional valid input range [a, b], the
query asks for an input of the clipped ball {x : |x - x0|_inf <= eps, a <= x <= b} on which
the predicted label (argmax, the first index winning ties) is not y: some j < y with
f_j >= f_y, or some j > y with f_j > f_y.  Every bound is the exact decimal of
max(x0_i - eps, a) or min(x0_i + eps, b), computed in decimal arithmetic from x0's float values
and eps as the user wrote it, so the parser's rational reading (and its outward rounding to
floats) is of exactly the clipped ball: `unsat` certifies that ball, and a counterexample is
checked against it.
"""
from __future__ import annotations

from contextlib import contextmanager
from decimal import ROUND_CEILING, Decimal, Inexact, localcontext

import numpy as np


def exact(v) -> Decimal:
    """A float's exact value, or a decimal string's (eps as the user wrote it)."""
    if isinstance(v, str):
        return Decimal(v)
    return Decimal(float(v))


@contextmanager
def _exact_context():
    """Decimal arithmetic that raises rather than rounds (float64 values have at most 767
    significant digits, their squares twice as many)."""
    with localcontext(prec=4000) as ctx:
        ctx.traps[Inexact] = True
        yield


def clipped_box(x0: np.ndarray, eps: str | float, input_range: tuple[float, float] | None
                ) -> tuple[list[Decimal], list[Decimal]]:
    """Exact (lo, hi) per element of the clipped L-inf ball (decimal arithmetic, no rounding)."""
    e = exact(eps)
    lo, hi = [], []
    with _exact_context():
        for v in np.asarray(x0, dtype=np.float64).reshape(-1):
            c = exact(v)
            lo.append(c - e)
            hi.append(c + e)
    if input_range is not None:
        a, b = exact(input_range[0]), exact(input_range[1])
        lo = [max(v, a) for v in lo]
        hi = [min(v, b) for v in hi]
    return lo, hi


def _index(shape: tuple[int, ...], flat: int) -> str:
    return ",".join(str(int(i)) for i in np.unravel_index(flat, shape)) if shape else ""


def _header(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> list[str]:
    dims = lambda s: "[" + ",".join(str(d) for d in s) + "]"
    return ["(vnnlib-version <2.0>)",
            "(declare-network f",
            f"    (declare-input X real {dims(input_shape)})",
            f"    (declare-output Y real {dims(output_shape)}))"]


def _ball(x0, eps, input_range, input_shape) -> list[str]:
    """One comparison pair per element: the clipped ball's exact bounds."""
    lo, hi = clipped_box(x0, eps, input_range)
    out = []
    for i, (a, b) in enumerate(zip(lo, hi)):
        x = f"X[{_index(input_shape, i)}]"
        out.append(f"(>= {x} {a:f}) (<= {x} {b:f})")
    return out


def _label_change(label: int, n_classes: int, output_shape) -> str:
    """Some other class wins: j < label on a tie, j > label strictly."""
    y = f"Y[{_index(output_shape, label)}]"
    wins = [f"({'>=' if j < label else '>'} Y[{_index(output_shape, j)}] {y})"
            for j in range(n_classes) if j != label]
    return f"(or {' '.join(wins)})" if len(wins) > 1 else wins[0]


def robustness_query(x0: np.ndarray, label: int, n_classes: int, eps: str | float,
                     input_range: tuple[float, float] | None, input_shape: tuple[int, ...],
                     output_shape: tuple[int, ...]) -> str:
    """VNN-LIB 2.0 text: some input of the clipped ball is not classified as `label`.

    input_shape / output_shape: the model's (ONNX) shapes, batch dimension included."""
    lines = _header(input_shape, output_shape)
    lines += [f"(assert (and {pair}))" for pair in _ball(x0, eps, input_range, input_shape)]
    lines.append(f"(assert {_label_change(label, n_classes, output_shape)})")
    return "\n".join(lines) + "\n"


def batch_query(x0s, labels, n_classes: int, eps: str | float, input_range, input_shape, output_shape) -> str:
    """One query whose case k is sample k's robustness question (robustness_query): the engine
    bounds every case at once and says which it refutes."""
    lines = _header(input_shape, output_shape) + ["(assert (or"]
    for x0, label in zip(x0s, labels):
        lines.append(f"  (and {' '.join(_ball(x0, eps, input_range, input_shape))} "
                     f"{_label_change(int(label), n_classes, output_shape)})")
    lines.append("))")
    return "\n".join(lines) + "\n"


def in_ball(x: np.ndarray, x0: np.ndarray, eps: str | float, norm: str,
            input_range: tuple[float, float] | None) -> bool:
    """Whether x lies in the clipped ball of radius eps around x0, decided exactly (decimal
    arithmetic on the float values; for L2, the squared distance against eps squared)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    if x.shape != x0.shape or not np.all(np.isfinite(x)):
        return False
    e = exact(eps)
    if input_range is not None:
        a, b = exact(input_range[0]), exact(input_range[1])
        if any(exact(v) < a or exact(v) > b for v in x):
            return False
    with _exact_context():
        diffs = [exact(u) - exact(v) for u, v in zip(x, x0)]
        if norm == "linf":
            return all(abs(d) <= e for d in diffs)
        return sum(d * d for d in diffs) <= e * e


def up(text: str) -> float:
    """The smallest float at or above the decimal `text`: a radius compared against eps must
    reach eps as written, not its nearest float."""
    d = Decimal(text)
    f = float(d)
    return float(np.nextafter(f, np.inf)) if Decimal(f) < d else f


def distance(x: np.ndarray, x0: np.ndarray, norm: str) -> Decimal:
    """|x - x0| in the norm: exact for L-inf, rounded up (a square root) for L2."""
    with _exact_context():
        diffs = [exact(u) - exact(v) for u, v in zip(np.ravel(x), np.ravel(x0))]
        if norm == "linf":
            return max(abs(d) for d in diffs)
        squares = sum(d * d for d in diffs)
    with localcontext(prec=60, rounding=ROUND_CEILING):
        return squares.sqrt()
