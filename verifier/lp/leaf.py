"""Deciding a fully split branch-and-bound leaf with one LP.

On a leaf every ReLU is stable or decided, so the network is affine there: every output row
r_k(x) = A_k x + e_k and every decided pre-activation p_j(x) = a_j x + b_j.  With the decision
sign s_j, the leaf holds a counterexample to a conjunct iff some x in the box has r_k(x) <= 0
for all its rows k and s_j p_j(x) >= 0 for all decisions j, i.e. iff

    t* = min over x in box of max( max_k r_k(x), max_j -s_j p_j(x) )  is <= 0.

HiGHS solves this LP.  We never trust its objective: from its dual multipliers w >= 0 (scaled to
sum to 1) we rebuild min over the box of sum_i w_i g_i(x), a lower bound of t* whatever w is,
in closed form.  The primal minimiser is only a counterexample candidate for onnxruntime.
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np


def _box_min(coef: np.ndarray, const: float, lo: np.ndarray, hi: np.ndarray) -> float:
    """min over the box of coef.x + const, minus the worst rounding of the float64 sum
    (n ulps of the sum of magnitudes)."""
    terms = np.where(coef > 0, coef * lo, coef * hi)
    slack = (terms.size + 2) * np.finfo(np.float64).eps * (np.abs(terms).sum() + abs(const))
    return float(terms.sum() + const - slack)


_local = threading.local()


def _solver():
    """This thread's HiGHS instance, emptied.  HiGHS prints a banner on stdout when an instance is
    made, before any option can silence it (stdout carries the verdict), so the one instance is
    made with stdout pointed at /dev/null, and then reused."""
    h = getattr(_local, "highs", None)
    if h is None:
        import highspy

        sys.stdout.flush()
        saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        _local.highs = h
    h.clearModel()
    return h


def leaf_bound(G: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Certified lower bound of min over the box of max_i (G_i x + g_i), and the LP minimiser.

    G: (m, n), g: (m,), lo/hi: (n,).  Returns (bound, x or None when HiGHS failed).
    """
    import highspy

    m, n = G.shape
    h = _solver()
    inf = highspy.kHighsInf
    # variables: x (n, boxed), t (free); minimise t
    cost = np.zeros(n + 1)
    cost[n] = 1.0
    h.addVars(n + 1, np.concatenate([lo, [-inf]]), np.concatenate([hi, [inf]]))
    h.changeColsCost(n + 1, np.arange(n + 1, dtype=np.int32), cost)
    # rows: G_i x - t <= -g_i
    A = np.hstack([G, -np.ones((m, 1))])
    starts, index, value = [], [], []
    for i in range(m):
        nz = np.nonzero(A[i])[0]
        starts.append(len(index))
        index.extend(nz.tolist())
        value.extend(A[i, nz].tolist())
    h.addRows(m, np.full(m, -inf), -g, len(index), np.asarray(starts, dtype=np.int32),
              np.asarray(index, dtype=np.int32), np.asarray(value))
    h.run()
    sol = h.getSolution()
    if not sol.dual_valid or not sol.value_valid:
        return -np.inf, None
    w = np.maximum(0.0, -np.asarray(sol.row_dual))  # minimisation: a binding <= row has dual <= 0
    x = np.asarray(sol.col_value)[:n]
    if w.sum() <= 0:
        return -np.inf, x
    w = w / w.sum()
    return _box_min(w @ G, float(w @ g), lo, hi), x
