"""Counterexample candidates from the LP relaxation: the input part of an optimal point.

A counterexample that sits in a small region inside a box of tens to hundreds of dimensions
escapes sampling and gradients (where every ReLU on the way is off, the gradient is zero) and is
not at a corner, so the corners CROWN's bounds point at miss it too.  The LP relaxation of a
conjunct (encode.py) finds it when the relaxation is tight where the counterexample is: minimise
t subject to every row of the conjunct being at most t; the optimal input is then a candidate.
Nothing here proves anything: a candidate counts only when onnxruntime confirms it
(confirm.confirm_sat), so the solver's numbers need no checking.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import scipy.sparse as sp

from ..ir import Graph
from .encode import encode
from .highs import thread_highs, timed


def conjunct_points(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, conjuncts, seconds,
                    input_rows=None) -> Iterator[np.ndarray | None]:
    """For each conjunct (C (k, n_out), d (k,)) in turn, an input in [lo, hi] (flat float64) where
    the LP relaxation puts max_i (C y + d)_i lowest, or None when HiGHS gives no solution.  One
    model holds the relaxation; each conjunct's rows are added, solved for, and taken away.
    seconds(): the time the next solve may take (asked before each; <= 0 stops).  pre:
    activation input bounds (batch element 0); graph: float64 on the CPU; input_rows: (A, b),
    inputs with A x <= b.  Raises LPEncodeError (encode.py) for a graph the encoding does not
    cover."""
    import highspy

    problem = encode(graph, lo, hi, pre, input_rows=input_rows)
    n, out, inp = problem.n, problem.cols(graph.output_name), problem.cols(graph.input_name)
    inf = highspy.kHighsInf
    free = problem.determined
    A = sp.vstack([problem.E, problem.G], format="csr")
    mg = problem.h.size
    # the equality rows hold up to their slack eps (the rounding encode accounts for); t is free
    lower = np.concatenate([problem.f - problem.eps, np.full(mg, -inf)])
    upper = np.concatenate([problem.f + problem.eps, np.where(np.isfinite(problem.h), problem.h, inf)])
    h = thread_highs("points")
    try:
        h.addVars(n + 1, np.append(np.where(free, -inf, problem.l), -inf),
                  np.append(np.where(free, inf, problem.u), inf))
        h.changeColsCost(1, np.array([n], dtype=np.int32), np.array([1.0]))
        if A.shape[0]:
            h.addRows(A.shape[0], lower, upper, A.nnz, A.indptr[:-1].astype(np.int32),
                      A.indices.astype(np.int32), A.data)
    except Exception:   # HiGHS's own failures: no candidates, never an error
        return
    base = A.shape[0]
    for C, d in conjuncts:
        left = seconds()
        if left <= 0:
            return
        yield _solve(h, base, n, out, inp, C, d, left, lo, hi)


def _solve(h, base: int, n: int, out: np.ndarray, inp: np.ndarray, C, d, left: float,
           lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Add the rows C y - t <= -d, minimise t, take the rows away; the input part of the
    solution, clipped to the box (None: no solution)."""
    import highspy

    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    k = C.shape[0]
    r, c = np.nonzero(C)
    goal = sp.csr_matrix((np.concatenate([C[r, c], -np.ones(k)]),
                          (np.concatenate([r, np.arange(k)]), np.concatenate([out[c], np.full(k, n)]))),
                         shape=(k, n + 1))
    try:
        # HiGHS's time limit is on the instance's total run time, across runs
        h.setOptionValue("time_limit", float(h.getRunTime() + max(left, 1e-3)))
        h.addRows(k, np.full(k, -highspy.kHighsInf), -d, goal.nnz, goal.indptr[:-1].astype(np.int32),
                  goal.indices.astype(np.int32), goal.data)
        with timed("LP"):
            h.run()
        sol = h.getSolution()
        z = np.asarray(sol.col_value, dtype=np.float64) if sol.value_valid else None
        h.deleteRows(k, np.arange(base, base + k, dtype=np.int32))
    except Exception:   # HiGHS's own failures: no candidate, never an error
        return None
    if z is None or z.size != n + 1 or not np.all(np.isfinite(z[inp])):
        return None
    return np.minimum(np.maximum(z[inp], lo), hi)

