"""Deciding a fully split branch-and-bound leaf with one LP.

On a leaf every ReLU is stable or decided, so the network is affine there: every output row
r_k(x) = A_k x + e_k and every decided pre-activation p_j(x) = a_j x + b_j.  With the decision
sign s_j, the leaf holds a counterexample to a conjunct iff some x in the box has r_k(x) <= 0
for all its rows k and s_j p_j(x) >= 0 for all decisions j, i.e. iff

    t* = min over x in box of max( max_k r_k(x), max_j -s_j p_j(x) )  is <= 0.

HiGHS solves this LP.  We never trust its objective: from its dual multipliers w >= 0 (scaled to
sum to 1) we rebuild min over the box of sum_i w_i g_i(x), a lower bound of t* whatever w is,
in closed form, with every float operation of the rebuild bounded (bounds/rounding.py): its
sign is t*'s whenever it is positive.  The rows given must be rigorous lower bounds of the
g_i on the leaf (their own rounding already subtracted).  The primal minimiser is only a
counterexample candidate for onnxruntime.
"""
from __future__ import annotations


import numpy as np
import torch

from ..bounds.rounding import coef, floor
from .highs import thread_highs

F64 = torch.float64


def _down(x: float) -> float:
    """A float below every real number that x can be the float64 rounding of (one step covers a
    rounding to nearest; 2 tiny a flushed subnormal)."""
    return float(np.nextafter(x, -np.inf)) - 2 * np.finfo(np.float64).tiny


def certified_bound(w: np.ndarray, G: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """A rigorous lower bound of min over the box of sum_i w_i (G_i x + g_i), w >= 0 (m,).

    v = w @ G is computed with |v - exact| <= gamma(m) w @ |G| per element, which costs at most
    sum_j that * max(|lo_j|, |hi_j|) over the box; w @ g rounds by gamma(m) w @ |g|; the box
    minimum of v . x + k (n products and a sum) by gamma(n + 2) of its magnitudes.  Subnormals
    add 2 tiny per operation and operand.  -inf when anything is not finite."""
    m, n = G.shape
    v, k = w @ G, float(w @ g)
    mx = np.maximum(np.abs(lo), np.abs(hi))
    terms = np.where(v > 0, v * lo, v * hi)
    err = coef(m, m + n + 3, F64) * float((w @ np.abs(G)) @ mx)
    err += coef(m, m + 2, F64) * float(w @ np.abs(g))
    err += coef(n + 2, n + 3, F64) * (float(np.abs(terms).sum()) + abs(k))
    operands = float(w.sum() + np.abs(G).sum() + np.abs(g).sum() + np.abs(v).sum()) + 4 * (m + n + 2)
    err += floor(F64, 1, operands * (float(mx.sum()) + 1))
    value = float(terms.sum()) + k
    bound = _down(_down(value) - err * (1 + 8 * np.finfo(np.float64).eps))
    return bound if np.isfinite(bound) else -np.inf


def _solver():
    """This thread's HiGHS instance for leaves, emptied."""
    return thread_highs("leaf")


def leaf_bound(G: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Certified lower bound of min over the box of max_i (G_i x + g_i), and the LP minimiser.

    G: (m, n), g: (m,), lo/hi: (n,).  Returns (bound, x or None when HiGHS failed); bound > 0
    proves t* > 0.
    """
    import highspy

    G, g, lo, hi = (np.asarray(t, dtype=np.float64) for t in (G, g, lo, hi))
    if not (np.isfinite(G).all() and np.isfinite(g).all()):
        return -np.inf, None

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
    w = w / w.sum()  # any w >= 0 certifies: the bound is sum(w) t* or less, sum(w) ~ 1
    return certified_bound(w, G, g, lo, hi), x
