"""Exact search for a violation of one conjunct: a big-M MILP that HiGHS solves (only ever a
source of candidates), and our own LP branch and bound over the kinks' phases, whose every
closed node is certified by weak duality (relax.certified_dual_bound).

The question, for a conjunct with rows C (q, n_out), d (q,) over the input box:

    t* = min over x in box of max_q (C_q y(x) + d_q),   a violation exists iff t* <= 0

(< 0 for strict rows; a caller deciding sat confirms the candidate anyway).  Both searches work on
the LP of encode.py with one more column t and rows C_q y - t <= -d_q (`violation_problem`).

milp_search adds a binary phase b_j per unstable kink y = f(x) (f = x above 0, a x below, a <= 1:
ReLU, LeakyRelu, Abs, PRelu) with input box [l, u], l < 0 < u, next to the encoding's y >= x,
y >= a x:   y <= x + (a - 1) l (1 - b_j),   y <= a x + (1 - a) u b_j.
With b_j = 1 these force y = x (x >= 0 follows), with b_j = 0 y = a x; stable kinks are their
piece already.  HiGHS's infeasibility, its objective and its dual bound are none of them
rebuilt here, so nothing it says proves anything: its incumbent is a candidate that onnxruntime
confirms.

lp_branch_and_bound proves t* > 0 itself: best first over phase decisions (PhaseLP), each node
the LP of the sub-domain where its decisions hold: the decided inputs boxed to >= 0 / <= 0, two
phase rows per element making the kink its piece there, and (refine) the boxes of every later
kink input re-bounded by CROWN under the decisions (an element they stabilise counts as
decided).  Each node is bounded below by certified_dual_bound of HiGHS's duals on the node's own
rows and boxes (a reported INFEASIBLE counts only through its dual ray, certified the same way).
The property holds once every node is closed by a certified bound > 0, or by our own rigorous
bounds showing the node's domain empty.  Each node's LP point, run through the float64 forward
pass, is a candidate when it violates.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import scipy.sparse as sp
import torch

from ..bounds.backward import activation_inputs, ancestors, crown_intermediate
from ..budget import Deadline, OutOfTime
from ..evaluate import forward
from ..ir import Graph
from ..ops import RULES
from ..ops.activation import ReluRule
from ..ops.piecewise import Kinked
from .encode import Problem, encode, kink_model_error
from .highs import quiet_highs, timed
from .relax import LPResult, _Model, certified_dual_bound, influence

F64 = torch.float64
T_NAME = "<t>"   # the objective column's key in Problem.offsets


class MilpError(Exception):
    """The network has activations the MILP cannot encode exactly (all named)."""


@dataclass(frozen=True)
class MilpResult:
    """status: HiGHS's model status; candidate: the incumbent's input (flat float64, clipped to
    the box) or None; objective: HiGHS's t of it, dual_bound: its bound of t*: neither checked,
    neither proves anything (under stop_at_violation's cutoff at 0 HiGHS 1.16 was seen to report
    'Optimal' at t = 0.178 where t* = 0.0009); exact: every activation was encoded exactly (else the MILP is a
    relaxation and its incumbent may be no network point at all)."""

    status: str
    candidate: np.ndarray | None
    objective: float
    dual_bound: float
    exact: bool
    seconds: float

    @property
    def claims_violation(self) -> bool:
        return self.candidate is not None and self.objective <= 0


@dataclass(frozen=True)
class BnbResult:
    """proved: True when every node was closed by a certified bound (t* > 0: no violation);
    False when a node's LP point violates the rows in the float64 forward pass (candidate: that
    input, for the caller to confirm); None when a limit stopped it or a node could neither be
    closed nor split (candidate: the input of least violation seen).  why: which of these."""

    proved: bool | None
    candidate: np.ndarray | None
    nodes: int
    why: str
    seconds: float


@dataclass(frozen=True)
class Kink:
    """A kink activation as columns of a Problem: x, y (size,) its input and output columns,
    a (size,) the slope below 0."""

    node: str
    x: np.ndarray
    y: np.ndarray
    a: np.ndarray


@dataclass(frozen=True)
class NodeBound:
    """One node of lp_branch_and_bound.  bound: certified lower bound of t* on the node's domain
    (+inf: the domain is empty by our rigorous bounds); how: 'duals', 'ray', 'empty' or 'none';
    status: HiGHS's; problem, lam, mu: what was certified (certified_dual_bound(problem, lam,
    mu) == bound for 'duals' and 'ray'); x: the LP point's input (clipped to the box) or None;
    t_x: max_q (C_q y(x) + d_q) of the float64 forward pass at x; branch: (node, index) of the
    element to split next, None when every kink of the node is stable or decided."""

    bound: float
    how: str
    status: str
    problem: Problem | None
    lam: np.ndarray | None
    mu: np.ndarray | None
    x: np.ndarray | None
    t_x: float
    branch: tuple[str, int] | None
    basis: object = None   # HiGHS's final basis, to start the children's solves from


# ---- the conjunct as a column t ------------------------------------------------------------------
def violation_problem(problem: Problem, output: str, C: np.ndarray, d: np.ndarray) -> Problem:
    """problem with a column t boxed in [-M, M], rows C_q y - t <= -d_q, and objective t.
    M >= |C_q y + d_q| at every y in the output's box, so every point of the network has
    t = max_q (C_q y + d_q) in the box: min t over this LP bounds t* below (and, M >= 0, a
    bound > 0 excludes every violation)."""
    C, d = np.atleast_2d(np.asarray(C, dtype=np.float64)), np.asarray(d, dtype=np.float64).reshape(-1)
    n, q = problem.n, C.shape[0]
    out = problem.cols(output)
    mag = np.maximum(np.abs(problem.l[out]), np.abs(problem.u[out]))
    with np.errstate(invalid="ignore"):    # 0 * inf where a row skips an unbounded output: NaN, then inf
        M = float((np.abs(C) @ mag + np.abs(d)).max(initial=0.0)) * (1 + 1e-6) + 1.0   # >> the sum's rounding
    M = M if np.isfinite(M) else np.inf
    rr, cc = np.nonzero(C)
    rows = sp.csr_matrix((np.concatenate([C[rr, cc], -np.ones(q)]),
                          (np.concatenate([rr, np.arange(q)]), np.concatenate([out[cc], np.full(q, n)]))),
                         shape=(q, n + 1))
    col = sp.csr_matrix((problem.E.shape[0], 1))
    G = sp.vstack([sp.hstack([problem.G, sp.csr_matrix((problem.G.shape[0], 1))]), rows], format="csr")
    c = np.zeros(n + 1)
    c[n] = 1.0
    offsets = dict(problem.offsets)
    offsets[T_NAME] = (n, 1)
    return replace(problem, E=sp.hstack([problem.E, col], format="csr"), G=G, h=np.concatenate([problem.h, -d]),
                   l=np.append(problem.l, -M), u=np.append(problem.u, M), c=c, offsets=offsets,
                   determined=np.append(problem.determined, False))


def _conjunct(C, d, member_rows) -> tuple[np.ndarray, np.ndarray]:
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    if member_rows is None:
        return C, d
    idx = np.asarray(member_rows)
    idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
    return C[idx], d[idx]


# ---- kinks ---------------------------------------------------------------------------------------
def _slope(rule, node) -> np.ndarray | None:
    """The slope below 0 of a kink rule, flat (node.size,); None for any other rule."""
    if isinstance(rule, ReluRule):
        return np.zeros(node.size)
    if isinstance(rule, Kinked):
        a = rule.slope(node, torch.zeros(1, dtype=F64))
        return torch.broadcast_to(torch.as_tensor(a, dtype=F64), (1,) + node.shape).reshape(-1).numpy().copy()
    return None


def kinks(graph: Graph, problem: Problem) -> tuple[list[Kink], list[str]]:
    """The convex kinks (a <= 1) among the output's ancestors, and 'name (op)' of every other
    activation (which the LP only relaxes)."""
    found, other = [], []
    for node in ancestors(graph, graph.output_name):
        rule = RULES[node.op]
        if rule.linear:
            continue
        a = _slope(rule, node) if len(node.inputs) == 1 else None
        if a is None or (a > 1).any():
            other.append(f"{node.name} ({node.op})")
            continue
        found.append(Kink(node.name, problem.cols(node.inputs[0]), problem.cols(node.name), a))
    return found, other


# ---- HiGHS as a MIP solver -----------------------------------------------------------------------
def _big_m_rows(p: Problem, ks: list[Kink]) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """For the unstable elements of the kinks (x's box across 0), k of them: the rows
    (2k, n + k) over (z, d) and right-hand sides (2k,) of the big-M pieces (module doc), and
    their x columns (k,)."""
    xs, ys, a = (np.concatenate([getattr(k, f) for k in ks]) if ks else np.zeros(0) for f in ("x", "y", "a"))
    xs, ys = xs.astype(np.int64), ys.astype(np.int64)
    l, u = p.l[xs], p.u[xs]
    on = (l < 0) & (u > 0)
    xs, ys, a, l, u = xs[on], ys[on], a[on], l[on], u[on]
    k, n = xs.size, p.n
    r = np.arange(k)
    dcol = n + r
    # y - x + (a - 1) l d <= (a - 1) l ;  y - a x - (1 - a) u d <= 0
    rows = np.concatenate([r, r, r, k + r, k + r, k + r])
    cols = np.concatenate([ys, xs, dcol, ys, xs, dcol])
    vals = np.concatenate([np.ones(k), -np.ones(k), (a - 1) * l, np.ones(k), -a, -(1 - a) * u])
    keep = vals != 0
    A = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(2 * k, n + k))
    return A, np.concatenate([(a - 1) * l, np.zeros(k)]), xs


def milp_search(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, C: np.ndarray, d: np.ndarray,
                member_rows=None, time_limit: float = 60.0, relax_others: bool = False,
                stop_at_violation: bool = True, input_rows=None) -> MilpResult:
    """HiGHS's MIP search for x in [lo, hi] (flat (n_in,)) with C_q y(x) + d_q <= 0 for every
    member row q (member_rows: bool (Q,) or indices; default all rows of C (Q, n_out), d (Q,)),
    given the activation input bounds pre (batch element 0 used) and inputs with A x <= b
    (input_rows = (A, b), as encode takes them).  stop_at_violation: cut off
    at t = 0 and stop at the first incumbent below it (a falsifier); else solve to optimality.
    Raises MilpError for activations other than convex kinks unless relax_others (then they keep
    their LP planes and the result says exact=False), LPEncodeError for nodes no LP covers."""
    import highspy

    start = time.monotonic()
    C, d = _conjunct(C, d, member_rows)
    g64 = graph.to("cpu", F64)
    base = encode(g64, lo, hi, _first_pre(g64, pre), input_rows=input_rows)
    ks, other = kinks(g64, base)
    if other and not relax_others:
        raise MilpError(f"no exact MILP encoding for {len(other)} activation(s): {', '.join(other)}")
    p = violation_problem(base, g64.output_name, C, d)
    A, rhs, _ = _big_m_rows(p, ks)
    k, inf = A.shape[0] // 2, highspy.kHighsInf
    h = quiet_highs()
    free = p.determined
    lower = np.concatenate([np.where(free, -inf, p.l), np.zeros(k)])
    upper = np.concatenate([np.where(free, inf, p.u), np.ones(k)])
    h.addVars(p.n + k, lower, upper)
    h.changeColsCost(p.n + k, np.arange(p.n + k, dtype=np.int32), np.append(p.c, np.zeros(k)))
    if k:
        h.changeColsIntegrality(k, np.arange(p.n, p.n + k, dtype=np.int32),
                                np.full(k, highspy.HighsVarType.kInteger))
    pad = lambda M: sp.hstack([M, sp.csr_matrix((M.shape[0], k))], format="csr")  # noqa: E731
    rows = sp.vstack([pad(p.E), pad(p.G), A], format="csr")
    h_fin = np.where(np.isfinite(p.h), p.h, inf)
    row_lo = np.concatenate([p.f, np.full(p.h.size + 2 * k, -inf)])
    row_hi = np.concatenate([p.f, h_fin, rhs])
    if rows.shape[0]:
        h.addRows(rows.shape[0], row_lo, row_hi, rows.nnz, rows.indptr[:-1].astype(np.int32),
                  rows.indices.astype(np.int32), rows.data)
    h.setOptionValue("time_limit", max(1e-3, time_limit - (time.monotonic() - start)))
    if stop_at_violation:
        h.setOptionValue("objective_bound", 0.0)
        h.setOptionValue("mip_max_improving_sols", 1)
    try:
        with timed("MILP"):
            h.run()
        status = h.modelStatusToString(h.getModelStatus())
        info = h.getInfo()
        has = info.primal_solution_status == 2   # kSolutionStatusFeasible
        sol = np.asarray(h.getSolution().col_value, dtype=np.float64) if has else None
    except Exception as e:   # HiGHS's own failures: no candidate, no claim
        return MilpResult(f"error: {e}", None, float("nan"), float("nan"), not other, time.monotonic() - start)
    cand = None
    if sol is not None and sol.size == p.n + k:
        cand = np.clip(sol[p.cols(g64.input_name)], lo, hi)
    obj = float(info.objective_function_value) if cand is not None else float("nan")
    return MilpResult(status, cand, obj, float(info.mip_dual_bound), not other, time.monotonic() - start)


# ---- our own branch and bound --------------------------------------------------------------------
def _first_pre(graph: Graph, pre: Mapping) -> dict:
    """pre's activation bounds as (1, *shape) float64 CPU tensors (batch element 0)."""
    out = {}
    for key, (plo, phi) in pre.items():
        name = key if isinstance(key, str) else key[0]
        if name not in graph.by_name:
            continue
        shape = graph.shape_of(graph.by_name[name].inputs[0 if isinstance(key, str) else key[1]])
        one = lambda t: torch.as_tensor(t).detach().to("cpu", F64).reshape((-1,) + tuple(shape))[:1]  # noqa: E731
        out[key] = (one(plo), one(phi))
    return out


@dataclass(frozen=True)
class Search:
    """One conjunct over one box: graph in float64 on the CPU, lo, hi (n_in,), pre (1, *shape)
    float64, C (q, n_out), d (q,); refine: re-bound later layers by CROWN under the decisions;
    input_rows: (A, b), inputs with A x <= b (encode's)."""

    graph: Graph
    lo: np.ndarray
    hi: np.ndarray
    pre: dict
    C: np.ndarray
    d: np.ndarray
    refine: bool
    input_rows: tuple[np.ndarray, np.ndarray] | None = None


def search_of(graph: Graph, lo, hi, pre: Mapping, C, d, member_rows=None, refine: bool = True,
              input_rows=None) -> Search:
    """The query lp_branch_and_bound answers, in the form PhaseLP takes."""
    C, d = _conjunct(C, d, member_rows)
    g64 = graph.to("cpu", F64)
    lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (lo, hi))
    return Search(g64, lo, hi, _first_pre(g64, pre), C, d, refine, input_rows)


def _t_at(q: Search, x: np.ndarray) -> float:
    """max_q (C_q y + d_q) at x by the float64 forward pass."""
    with torch.no_grad():
        y = forward(q.graph, torch.as_tensor(x).reshape((1,) + q.graph.input_shape)).reshape(-1).numpy()
    return float((q.C @ y + q.d).max())


def _decided(pre: Mapping, phases: Mapping[str, np.ndarray]) -> dict:
    """pre with every decided kink's input clamped: +1 -> lo >= 0, -1 -> hi <= 0."""
    out = dict(pre)
    for name, s in phases.items():
        lo, hi = pre[name]
        s = torch.as_tensor(s).reshape(lo.shape)
        out[name] = (torch.where(s > 0, lo.clamp(min=0.0), lo), torch.where(s < 0, hi.clamp(max=0.0), hi))
    return out


@dataclass(frozen=True)
class _Elements:
    """The root's unstable kink elements (k of them), flat: act (k,) index into names, elem (k,)
    the element in its activation, x, y (k,) columns, a (k,) slope below 0, e (k,) the model's
    error of the function; r1, r2 (k,): the phase rows y - x <= h (active) and y - a x <= h
    (inactive) in G."""

    names: tuple[str, ...]
    act: np.ndarray
    elem: np.ndarray
    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    e: np.ndarray
    r1: np.ndarray
    r2: np.ndarray


def _with_phase_rows(graph: Graph, p: Problem) -> tuple[Problem, _Elements]:
    """p with two rows per unstable kink element (x's box across 0), off (h = +inf) until a
    node decides the element: active (x >= 0) sets y - x <= e, inactive (x <= 0) y - a x <= e.
    With the convex pieces y >= x, y >= a x of encode.py these make the kink its piece; both hold
    at every network point where the decision does (|y - f(x)| <= e)."""
    ks, _ = kinks(graph, p)
    parts = []
    for i, k in enumerate(ks):
        on = np.flatnonzero((p.l[k.x] < 0) & (p.u[k.x] > 0))
        node = graph.by_name[k.node]
        lo, hi = (torch.as_tensor(v[k.x]).reshape((1,) + node.shape) for v in (p.l, p.u))
        e = kink_model_error(graph.float_model, RULES[node.op], node, lo, hi)   # the rows' e, rounded up
        parts.append((np.full(on.size, i), on, k.x[on], k.y[on], k.a[on], e[on]))
    act, elem, x, y, a, e = (np.concatenate([pt[j] for pt in parts]) if parts else np.zeros(0) for j in range(6))
    act, elem, x, y = (v.astype(np.int64) for v in (act, elem, x, y))
    n_k, m = x.size, p.h.size
    r = np.arange(n_k)
    rows = sp.csr_matrix((np.concatenate([np.ones(n_k), -np.ones(n_k), np.ones(n_k), -a]),
                          (np.concatenate([r, r, n_k + r, n_k + r]), np.concatenate([y, x, y, x]))),
                         shape=(2 * n_k, p.n))
    rows.eliminate_zeros()
    G = sp.vstack([p.G, rows], format="csr")
    els = _Elements(tuple(k.node for k in ks), act, elem, x, y, a, e, m + r, m + n_k + r)
    return replace(p, G=G, h=np.concatenate([p.h, np.full(2 * n_k, np.inf)])), els


class PhaseLP:
    """The root LP of a Search (violation_problem of encode.py's LP, with phase rows), loaded
    into HiGHS once; a node changes only bounds (its inputs' signs, its phase rows), so each solve
    starts from a basis (its parent's): on mnist 256x2 ~50 ms a node, where encoding and solving
    each node afresh took 1.15 s.  Triangles of undecided elements stay the root's; CROWN's bounds under the decisions
    (refine) tighten the boxes the certificate uses and stabilise further elements.  Uses this
    thread's HiGHS relaxation instance: one live PhaseLP per thread."""

    def __init__(self, q: Search):
        self.q = q
        base = encode(q.graph, q.lo, q.hi, q.pre, input_rows=q.input_rows)
        self.root, self.els = _with_phase_rows(q.graph, violation_problem(base, q.graph.output_name, q.C, q.d))
        self.model = _Model(self.root)   # loads rows and boxes; the cost, t, is set once here
        if self.model.failure is None:
            try:
                self.model.h.changeColsCost(self.root.n, self.model.cols, self.root.c)
            except Exception as e:   # HiGHS's own exception types
                self.model.failure = f"error: {e}"
        self.acts = [a.name for a in activation_inputs(q.graph)]

    def node_pre(self, phases: Mapping[str, np.ndarray], deadline: Deadline) -> dict:
        """Activation input bounds valid where the decisions hold: the root's, clamped, and (refine)
        every activation from the first decided one on re-bounded by CROWN under them."""
        q = self.q
        pre = _decided(q.pre, phases)
        if not q.refine or not any((s != 0).any() for s in phases.values()) or _empty(pre):
            return pre
        tl, th = (torch.as_tensor(v).reshape((1,) + q.graph.input_shape) for v in (q.lo, q.hi))
        first = min(self.acts.index(n) for n in phases)
        return {**pre, **crown_intermediate(q.graph, tl, th, fixed=pre, deadline=deadline, first=first)}

    def boxes(self, pre: Mapping) -> tuple[np.ndarray, np.ndarray]:
        """The root's boxes (n,) with every kink input's intersected with pre."""
        l, u = self.root.l.copy(), self.root.u.copy()
        for name, (plo, phi) in pre.items():
            if isinstance(name, str) and name in self.q.graph.by_name:
                cols = self.root.cols(self.q.graph.by_name[name].inputs[0])
                l[cols] = np.maximum(l[cols], plo.reshape(-1).numpy())
                u[cols] = np.minimum(u[cols], phi.reshape(-1).numpy())
        return l, u

    def bound(self, phases: Mapping[str, np.ndarray], deadline: Deadline, basis=None) -> NodeBound:
        """The certified bound of t* where the decisions (activation name -> (size,) int8 in
        {-1, 0, +1}, on the root's unstable elements) hold, the LP point and the element to
        split next; basis: a NodeBound's, to start from (default: the last solve's).  Raises
        OutOfTime."""
        pre = self.node_pre(phases, deadline)
        l, u = self.boxes(pre)
        if _empty(pre) or (l > u).any():   # rigorous bounds on the domain: it holds no point
            return NodeBound(np.inf, "empty", "not solved", None, None, None, None, np.inf, None)
        els, x = self.els, self.els.x
        active, inactive = l[x] >= 0, u[x] <= 0
        h = self.root.h.copy()
        h[els.r1] = np.where(active, els.e, np.inf)
        h[els.r2] = np.where(inactive, els.e, np.inf)
        p = replace(self.root, l=l, u=u, h=h)
        deadline.check()
        res, z, basis = self._solve(p, active, inactive, max(1e-3, deadline.left()), basis)
        bound, how, lam, mu = res.bound, "duals" if res.lam is not None else "none", res.lam, res.mu
        if not bound > 0 and res.status == "Infeasible":   # tried, never trusted: certified or nothing
            rb, rl, rm = _ray_bound(self.model, p)
            if rb > bound:
                bound, how, lam, mu = rb, "ray", rl, rm
        xin = None if z is None else np.clip(z[p.cols(self.q.graph.input_name)], self.q.lo, self.q.hi)
        t_x = _t_at(self.q, xin) if xin is not None else np.inf
        return NodeBound(bound, how, res.status, p, lam, mu, xin, t_x, self._branch(p, z), basis)

    def _solve(self, p: Problem, active, inactive, seconds: float, basis=None):
        """HiGHS on the node (only the decided inputs' signs and the phase rows change), from
        basis where given, its duals certified on p.  (LPResult, z (n,) or None, final basis)."""
        import highspy

        m = self.model
        if m.failure is not None:
            return LPResult(-np.inf, float("nan"), m.failure, None, None), None, None
        inf, els, h = highspy.kHighsInf, self.els, m.h
        try:
            x = els.x.astype(np.int32)
            free = p.determined[els.x]
            lo = np.where(free, np.where(active, 0.0, -inf), p.l[els.x])
            hi = np.where(free, np.where(inactive, 0.0, inf), p.u[els.x])
            h.changeColsBounds(x.size, x, lo, hi)
            rows = np.concatenate([els.r1, els.r2]).astype(np.int32) + p.f.size
            hr = p.h[np.concatenate([els.r1, els.r2])]
            h.changeRowsBounds(rows.size, rows, np.full(rows.size, -inf), np.where(np.isfinite(hr), hr, inf))
            if basis is not None:
                h.setBasis(basis)
            h.setOptionValue("time_limit", float(h.getRunTime() + seconds))
            with timed("LP"):
                h.run()
            status = h.modelStatusToString(h.getModelStatus())
            sol = h.getSolution()
            y = np.asarray(sol.row_dual, dtype=np.float64)
            z = np.asarray(sol.col_value, dtype=np.float64) if sol.value_valid else None
            final = h.getBasis()
        except Exception as e:   # HiGHS's failures cost the bound, never the caller
            return LPResult(-np.inf, float("nan"), f"error: {e}", None, None), None, None
        final = final if final.valid else None
        me = p.f.size
        if y.size != me + p.h.size:
            return LPResult(-np.inf, float("nan"), status, None, None), z, final
        lam, mu = -y[:me], np.maximum(0.0, -y[me:])   # as relax.py: reduced costs c - A^T y
        return LPResult(certified_dual_bound(p, lam, mu), float("nan"), status, lam, mu), z, final

    def _branch(self, p: Problem, z: np.ndarray | None) -> tuple[str, int] | None:
        """The undecided element to split: the one whose LP point is farthest from its function,
        |y - f(x)| (the error the relaxation exploits there; a split makes it exact on both
        sides); when the point meets every kink, the largest triangle height -l u / (u - l)
        (relax.influence).  None when every element is stable or decided.  On a 10-40-40-2 net
        (42 unstable) the first needs 343 nodes where the second alone stops at 3700 open."""
        els = self.els
        l, u = p.l[els.x], p.u[els.x]
        on = (l < 0) & (u > 0)
        if not on.any():
            return None
        area = np.where(on, influence(l, u), -1.0)
        gap = np.zeros_like(area)
        if z is not None:
            zx, zy = z[els.x], z[els.y]
            gap = np.abs(zy - np.where(zx >= 0, zx, els.a * zx))
            gap = np.where(on & (gap > 1e-9 * (1 + u - l)), gap, 0.0)
        i = int(np.lexsort((area, gap))[-1])
        return els.names[els.act[i]], int(els.elem[i])


def _empty(pre: Mapping) -> bool:
    return any(bool((lo > hi).any()) for lo, hi in pre.values())


def _ray_bound(model: _Model, p: Problem) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """HiGHS's dual ray of an infeasible LP as multipliers, scaled up until the certified bound
    is positive where it can be: a ray whose Lagrangian (cost 0) is certified > r > 0 over the
    box gives, scaled by s, at least s r minus the cost's range.  (-inf, None, None) without one."""
    try:
        _, has, ray = model.h.getDualRay()
    except Exception:   # HiGHS's own failures: no ray
        return -np.inf, None, None
    ray = np.asarray(ray, dtype=np.float64)
    me = p.f.size
    if not has or ray.size != me + p.h.size:
        return -np.inf, None, None
    zero = replace(p, c=np.zeros(p.n))
    best = (-np.inf, None, None)
    for sign in (1.0, -1.0):
        lam, mu = -sign * ray[:me], np.maximum(0.0, -sign * ray[me:])
        r = certified_dual_bound(zero, lam, mu)
        if not r > 0:
            continue
        span = float(np.abs(p.c) @ np.maximum(np.abs(p.l), np.abs(p.u)))
        s = 2.0 * (span + 1.0) / r
        b = certified_dual_bound(p, s * lam, s * mu)
        if b > best[0]:
            best = (b, s * lam, s * mu)
    return best


def lp_branch_and_bound(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, C: np.ndarray,
                        d: np.ndarray, time_limit: float = 60.0, max_nodes: int = 10_000, member_rows=None,
                        refine: bool = True, input_rows=None) -> BnbResult:
    """Decide t* > 0 (module doc) for the conjunct (C, d, member_rows, input_rows as in
    milp_search) over the box [lo, hi] (flat) given the activation input bounds pre: best first
    (the open node of least certified parent bound next, its LP started from its parent's basis),
    each node one LP.  Every solve gets the time left; max_nodes LPs at most.  Raises
    LPEncodeError for a graph the LP does not cover; activations other than kinks stay relaxed
    (such a net may end with proved None: 'stuck').  refine costs a CROWN pass per node: ~3x the
    node time on a 10-40-40-2 net, ~1.6x on mnist 256x2, for 5-20% fewer nodes."""
    start = time.monotonic()
    deadline = Deadline(time_limit)
    nodes, stuck, best = 0, False, (np.inf, None)
    done = lambda proved, x, why: BnbResult(proved, x, nodes, why, time.monotonic() - start)  # noqa: E731
    try:
        lp = PhaseLP(search_of(graph, lo, hi, pre, C, d, member_rows, refine, input_rows))
        heap: list = [(-np.inf, 0, {}, None)]
        while heap:
            if nodes >= max_nodes:
                return done(None, best[1], "node limit")
            deadline.check()
            _, _, phases, basis = heapq.heappop(heap)
            nb = lp.bound(phases, deadline, basis)
            nodes += 1
            if nb.x is not None and nb.t_x < best[0]:
                best = (nb.t_x, nb.x)
            if nb.x is not None and nb.t_x <= 0:
                return done(False, nb.x, "violation")
            if nb.bound > 0:
                continue
            if nb.branch is None:   # exact LP, bound <= 0, yet its point does not violate: a tie at 0
                stuck = True
                continue
            name, i = nb.branch
            for s in (1, -1):
                child = dict(phases)
                arr = child.get(name, np.zeros(lp.q.graph.by_name[name].size, dtype=np.int8)).copy()
                arr[i] = s
                child[name] = arr
                heapq.heappush(heap, (nb.bound, nodes * 2 + (s < 0), child, nb.basis))
    except OutOfTime:
        return done(None, best[1], "time limit")
    return done(None, best[1], "stuck") if stuck else done(True, None, "closed")
