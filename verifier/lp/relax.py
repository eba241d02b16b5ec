"""Bounds from the LP relaxation (encode.py), solved by HiGHS and certified by weak duality.

For the LP  min c.z  s.t.  |E z - f| <= eps,  G z <= h,  l <= z <= u,  and any multipliers
lam (free) and mu >= 0, every feasible z (every point the network reaches) has

    c.z  >=  c.z + lam.(E z - f) - |lam|.eps + mu.(G z - h)
          =  g.z + k - |lam|.eps,        g = c + E^T lam + G^T mu,   k = -(lam.f + mu.h),

so  min over the box of g.z  + k - |lam|.eps  (closed form: g_j l_j or g_j u_j) is a lower bound
of the network's minimum, whatever lam and mu are.  HiGHS only proposes the multipliers (its row
duals y, with reduced costs c - A^T y: lam = -y on equalities, mu = max(0, -y) on inequalities);
its objective is never used.  The bound is computed in float64 with every rounding bounded
(bounds/rounding.py): g by gamma(terms of its column) of |c| + |E|^T |lam| + |G|^T mu, which
costs that times max(|l|, |u|) in the box minimum; k by gamma(m + 2) of |lam|.|f| + mu.|h|; the
box minimum's sum by gamma(n + 2) of its terms; |lam|.eps rounded up; flushed subnormals by
an absolute term.  A solver that fails, stops at its time limit or reports nothing usable costs
tightness only: whatever multipliers exist are certified, else the bound is -inf.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import scipy.sparse as sp
import torch

from ..bounds.backward import activation_inputs, ancestors
from ..bounds.rounding import coef, floor
from ..ir import Graph
from ..ops import RULES
from .encode import Problem, encode, with_objective
from .highs import thread_highs, timed

F64 = torch.float64
_EPS = np.finfo(np.float64).eps
_TINY = np.finfo(np.float64).tiny


def _down(x: float) -> float:
    """A float below every real that x can be the rounding to nearest (or a flush to 0) of."""
    return float(np.nextafter(x, -np.inf)) - 2 * _TINY


def _multipliers(v, m: int) -> np.ndarray:
    """v as (m,) float64, non-finite entries 0 (any multipliers certify, so 0 is as valid)."""
    v = np.zeros(m) if v is None else np.asarray(v, dtype=np.float64).reshape(-1)
    if v.size != m:
        raise ValueError(f"{v.size} multipliers for {m} rows")
    return np.where(np.isfinite(v), v, 0.0)


def certified_dual_bound(problem: Problem, lam: np.ndarray | None, mu: np.ndarray | None) -> float:
    """A rigorous lower bound of min c.z over the LP (hence of the network's minimum of the
    objective) from ANY multipliers lam (m_e,) and mu (m_g,); mu is clipped to >= 0 and a
    non-finite multiplier taken as 0.  -inf when the box or the result is not finite."""
    E, G, l, u = problem.E, problem.G, problem.l, problem.u
    lam = _multipliers(lam, problem.f.size)
    mu = np.maximum(_multipliers(mu, problem.h.size), 0.0)
    lam = np.where(np.isfinite(problem.eps), lam, 0.0)   # a row with no known slack: unused
    mu = np.where(np.isfinite(problem.h), mu, 0.0)
    if not (np.isfinite(l).all() and np.isfinite(u).all()):
        return -np.inf
    f, h = problem.f, np.where(np.isfinite(problem.h), problem.h, 0.0)
    n, m = problem.n, lam.size + mu.size
    M = np.maximum(np.abs(l), np.abs(u))
    g = problem.c + E.T @ lam + G.T @ mu
    mag = np.abs(problem.c) + abs(E).T @ np.abs(lam) + abs(G).T @ mu
    col_terms = int((E.getnnz(axis=0) + G.getnnz(axis=0)).max(initial=0)) + 1
    k = -(float(lam @ f) + float(mu @ h))
    terms = np.where(g > 0, g * l, g * u)
    value = float(terms.sum()) + k
    err = coef(col_terms + 1, col_terms + n + 3, F64) * float(mag @ M)
    err += coef(m + 2, m + 3, F64) * (float(np.abs(lam) @ np.abs(f)) + float(mu @ np.abs(h)))
    err += coef(n + 2, n + 3, F64) * (float(np.abs(terms).sum()) + abs(k))
    slack = float(np.abs(lam) @ np.where(lam != 0, problem.eps, 0.0))
    err += slack * (1 + coef(lam.size + 1, lam.size + 2, F64))
    operands = float(np.abs(lam).sum() + mu.sum() + abs(E).sum() + abs(G).sum() + np.abs(problem.c).sum()
                     + np.abs(f).sum() + np.abs(h).sum() + np.abs(g).sum()) + 4 * (m + n + 2)
    err += floor(F64, 1, operands * (float(M.sum()) + 1))
    bound = _down(_down(value) - err * (1 + 8 * _EPS))
    return bound if np.isfinite(bound) else -np.inf


@dataclass(frozen=True)
class LPResult:
    """bound: certified (certified_dual_bound of the duals); objective: what HiGHS reported
    (never trusted; NaN when it reported none); status: HiGHS's model status;
    lam (m_e,), mu (m_g,): the multipliers certified (None when HiGHS gave none)."""

    bound: float
    objective: float
    status: str
    lam: np.ndarray | None
    mu: np.ndarray | None


def _highs():
    """This thread's HiGHS instance for relaxations, emptied; no presolve (solves are
    warm-started from the last basis, and presolving the first one does not pay on these LPs)."""
    return thread_highs("relax", presolve="off")


class _Model:
    """One HiGHS model of a Problem's rows and boxes, solved for one objective after another;
    the basis of each solve warm-starts the next (only the costs change).  Variables the rows
    determine are left unbounded in the solver (Problem.determined).  It uses this thread's
    instance: one live model per thread.  Never raises: a model HiGHS refuses bounds nothing."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.cols = np.arange(problem.n, dtype=np.int32)
        try:
            self.h = _highs()
            _load(self.h, problem)
            self.failure = None
        except Exception as e:   # HiGHS's own exception types
            self.failure = f"error: {e}"

    def solve(self, c: np.ndarray, time_limit: float) -> LPResult:
        """Minimise c.z (c: (n,)) within time_limit seconds."""
        p = replace(self.problem, c=np.asarray(c, dtype=np.float64).reshape(-1))
        if self.failure is not None:
            return LPResult(-np.inf, float("nan"), self.failure, None, None)
        h = self.h
        try:
            # HiGHS's time limit is on the instance's total run time, across runs
            h.setOptionValue("time_limit", float(h.getRunTime() + max(time_limit, 1e-3)))
            h.changeColsCost(p.n, self.cols, p.c)
            with timed("LP"):
                h.run()
            status = h.modelStatusToString(h.getModelStatus())
            sol = h.getSolution()
            y = np.asarray(sol.row_dual, dtype=np.float64)
            obj = float(h.getInfo().objective_function_value) if sol.value_valid else float("nan")
        except Exception as e:   # HiGHS's failures cost the bound, never the caller
            return LPResult(-np.inf, float("nan"), f"error: {e}", None, None)
        me = p.f.size
        if y.size != me + p.h.size:
            return LPResult(-np.inf, obj, status, None, None)
        lam, mu = -y[:me], np.maximum(0.0, -y[me:])   # reduced costs c - A^T y: see the module doc
        return LPResult(certified_dual_bound(p, lam, mu), obj, status, lam, mu)


def _load(h, problem: Problem) -> None:
    """The problem's columns (determined ones free) and rows (equalities f <= E z <= f, then
    G z <= h) into the empty HiGHS instance h."""
    import highspy

    inf = highspy.kHighsInf
    free = problem.determined
    h.addVars(problem.n, np.where(free, -inf, problem.l), np.where(free, inf, problem.u))
    A = sp.vstack([problem.E, problem.G], format="csr")
    mg = problem.h.size
    lower = np.concatenate([problem.f, np.full(mg, -inf)])
    upper = np.concatenate([problem.f, np.where(np.isfinite(problem.h), problem.h, inf)])
    if A.shape[0]:
        h.addRows(A.shape[0], lower, upper, A.nnz, A.indptr[:-1].astype(np.int32),
                  A.indices.astype(np.int32), A.data)


def solve_lp(problem: Problem, time_limit: float = 30.0) -> LPResult:
    """The problem's own objective, once."""
    return _Model(problem).solve(problem.c, time_limit)


# ---- bounds of the network output --------------------------------------------------------------
def lp_bounds(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, rows: np.ndarray,
              time_limit: float = 60.0, input_rows=None) -> np.ndarray:
    """Rigorous lower bounds of rows @ y over the LP relaxation, y the output (flat): (q,) for
    rows (q, n_out).  lo, hi: (n_in,) flat float64; pre: activation input bounds (batch element
    0, as crown_intermediate gives them); input_rows: (A, b), inputs with A x <= b.  One model,
    one objective after another within time_limit seconds in all (rows left: -inf).  Raises
    LPEncodeError (encode.py) for a graph the encoding does not cover, nothing else."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    problem = encode(graph, lo, hi, pre, input_rows=input_rows)
    end = time.monotonic() + time_limit
    out = np.full(rows.shape[0], -np.inf)
    model = _Model(problem)
    for i, r in enumerate(rows):
        left = end - time.monotonic()
        if left <= 0:
            break
        out[i] = model.solve(with_objective(problem, graph.output_name, r).c, left).bound
    return out


def lp_lower(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, c: np.ndarray,
             time_limit: float = 30.0, input_rows=None) -> float:
    """A rigorous lower bound of min c.y over the LP relaxation, c: (n_out,).  See lp_bounds."""
    return float(lp_bounds(graph, lo, hi, pre, np.asarray(c).reshape(1, -1), time_limit, input_rows)[0])


# ---- tighter intermediate bounds ---------------------------------------------------------------
def influence(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Which neurons to LP-bound first: -lo hi / (hi - lo) where lo < 0 < hi (the height of the
    ReLU triangle at 0, the largest gap of its relaxation, which a tighter interval shrinks),
    0 elsewhere; an infinite side makes it infinite (first).  (size,) for (size,)."""
    unstable = (lo < 0) & (hi > 0)
    width = np.where(unstable, hi - lo, 1.0)
    with np.errstate(invalid="ignore"):
        gap = np.where(unstable, -lo * hi / width, 0.0)
    return np.where(np.isnan(gap), np.inf, gap)


def _behind_activation(graph: Graph, value: str) -> bool:
    """Whether some activation lies between the input and `value` (else value is affine in the
    input and CROWN's bound of it is already exact up to rounding)."""
    return any(not RULES[n.op].linear for n in ancestors(graph, value))


def tighten_pre(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, max_neurons: int = 100,
                time_limit: float = 60.0, input_rows=None) -> dict:
    """pre with the input bounds of up to max_neurons unstable neurons LP-tightened (lower and
    upper bound each, over the LP of the layers before them), earliest activation layers first
    and, in a layer, by `influence`; every new bound intersected with the old one, so never
    looser.  Layers whose input is affine in the network input are skipped.  Only batch
    element 0 of pre's tensors changes; the others are returned as they are."""
    new = dict(pre)
    end = time.monotonic() + time_limit
    budget = max_neurons
    for act in activation_inputs(graph):
        if budget <= 0 or time.monotonic() >= end:
            break
        value = act.inputs[0]
        if act.name not in new or not _behind_activation(graph, value):
            continue
        size = graph.by_name[act.name].size
        plo, phi = (_first_flat(t, size) for t in new[act.name])
        chosen = _choose(plo, phi, budget)
        if chosen.size == 0:
            continue
        budget -= chosen.size
        nlo, nhi = _tighten_layer(graph, lo, hi, new, value, chosen, plo, phi, end, input_rows)
        new[act.name] = (_with_first(new[act.name][0], nlo, -1), _with_first(new[act.name][1], nhi, +1))
    return new


def _choose(plo: np.ndarray, phi: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to k unstable elements, highest influence first."""
    s = influence(plo, phi)
    idx = np.flatnonzero(s > 0)
    return idx[np.argsort(-s[idx], kind="stable")][:k]


def _tighten_layer(graph, lo, hi, pre, value, chosen, plo, phi, end, input_rows):
    """New (lo, hi) (size,) of `value`: the old ones, with the chosen elements LP-bounded."""
    problem = encode(graph, lo, hi, pre, upto=value, input_rows=input_rows)
    model = _Model(problem)
    cols = problem.cols(value)
    nlo, nhi = plo.copy(), phi.copy()
    for i in chosen:
        for sign in (1.0, -1.0):
            left = end - time.monotonic()
            if left <= 0:
                return nlo, nhi
            c = np.zeros(problem.n)
            c[cols[i]] = sign
            b = model.solve(c, left).bound
            if sign > 0:
                nlo[i] = max(nlo[i], b)
            else:
                nhi[i] = min(nhi[i], -b)
    return nlo, nhi


def _first_flat(t, size: int) -> np.ndarray:
    """Batch element 0 of a bound tensor, flat float64 (size,)."""
    return torch.as_tensor(t).detach().to(F64).reshape(-1)[:size].cpu().numpy().copy()


def _with_first(t, flat: np.ndarray, direction: int):
    """t with its first flat.size elements replaced by flat, cast to t's dtype outwards
    (direction -1: a lower bound rounds down, +1: an upper bound up)."""
    t = torch.as_tensor(t)
    out = t.detach().clone()
    view = out.reshape(-1)
    v64 = torch.from_numpy(flat)
    cast = v64.to(out.dtype)
    wrong = (cast.to(F64) > v64) if direction < 0 else (cast.to(F64) < v64)
    cast = torch.where(wrong, torch.nextafter(cast, torch.full_like(cast, direction * np.inf)), cast)
    view[:flat.size] = cast.to(view.device)
    return out
