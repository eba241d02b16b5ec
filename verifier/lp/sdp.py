"""The SDP relaxation of Raghunathan, Steinhardt and Liang (NeurIPS 2018) for ReLU chains, with a
bound rebuilt and checked here from the solver's multipliers (its objective is never used).

Lifting.  v stacks the input x_0 and the outputs x_1 .. x_L of the ReLU layers (elements whose
box is [0, 0] are left out: they are 0 at every point).  At every point the network reaches,
P = [1; v][1; v]^T, a PSD matrix with P_00 = 1 (dim = 1 + |v|); the relaxation lets P be any
PSD matrix with P_00 = 1 satisfying rows

    <A_i, P> <= h_i   (i < m_i),        |<B_j, P> - f_j| <= e_j   (j < m_e),

each built so that it holds at the rank-one P of every network point, rounding included.  With
z = W x_k + b the input of layer k + 1 (the affine segment before it: W from
chain.extract_chain, b its image of 0, |z_model - z| <= eps for all x_k in its box,
eps = E m + |b error| + the float model's error), l <= x <= u the box of every lifted x and
[lz, uz] that of z (interval bounds intersected with `pre`, as the LP takes them):

  * box: l <= x <= u, and (x - l)(x - u) <= 0 as  V_ii - (l + u) x_i <= -l u;
  * ReLU: x^2 = x z  as  |V_ii - W_i. V_{k,i} - b_i x_i| <= u_i eps_i;  where lz >= 0 x = z
    (within eps); where lz < 0 < uz, x >= z and the chord x <= uz (z - lz) / (uz - lz).
These are the triangle LP of encode.py (its box of z is implied: by x's box [lz, uz] where
lz >= 0, by x >= 0, x >= z and the chord elsewhere), so the first-order part of the SDP is no
looser than that LP, and the SDP's value is at least the LP's (up to the slacks eps, ~1e-13).
The objective c . y, y = W_L x_L + b_L, is g . x_L + k0 with g = W_L^T c, k0 = c . b_L, true
within k_err (the last segment's eps and the roundings of g and k0).

Centring.  The rows are then rewritten (_centre) for P' = [1; w][1; w]^T, w = v - m, m the boxes'
midpoints (|w| <= r, the half-widths): the same quadratic entries, linear and constant terms
moved, their rounding charged to the slacks.  A congruence: the same SDP, but with entries of
the size of the boxes' widths, not of their distance from 0 (an input box of width 1 around
x ~ 1000 otherwise costs the solver and the certificate ~1e-4 absolute), and a trace bound
T = 1 + sum r^2.  Below, P is the centred matrix.

Certificate (weak duality, never the solver's numbers).  For ANY mu >= 0 (inequalities; clipped
here) and lam (equalities, free), every network point has

    c.y >= <C, P> + k0 - k_err + mu.(A P - h) + lam.(B P - f) - |lam|.e
         = <S, P> - mu.h - lam.f - |lam|.e + k0 - k_err,     S = C + sum mu_i A_i + sum lam_j B_j,

and if S + delta I - tau E_00 is PSD (delta >= 0), <S, P> >= tau - delta tr(P) >= tau - delta T
with T = 1 + sum r^2 >= tr(P) at every network point.  So the bound is
tau - delta T - mu.h - lam.f - |lam|.e + k0 - k_err.  tau (the multiplier of P_00 = 1) is rebuilt
here: for a delta with S_11 + delta I > 0, the largest tau is the Schur complement
s_00 + delta - s^T (S_11 + delta I)^-1 s, backed off until positive definiteness is proved by
certainly_pd (Rump's Cholesky test) allowing the error of forming S in float64 (each entry a
sum of K terms: gamma(K + 1) of its magnitudes, spectral norm <= Frobenius norm).  Corrupted
multipliers only weaken the bound: an indefinite S_11 needs delta >= -lambda_min(S_11), which
costs delta T.  Every sum is padded by its rounding (bounds/rounding.py) and the result rounded
down.

Solving (_lifted_matrix): the rows only read P's first row and the entries within a layer or
between neighbouring layers, a chordal pattern whose cliques are [0, layer k, layer k + 1]: the
solver gets one PSD cone per clique (Grone et al. 1984: the same value).  Clarabel's time grows
steeply with the largest clique (CLARABEL_MAX_CLIQUE), hence the caps MAX_HIDDEN and MAX_DIM.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import scipy.sparse as sp
import torch

from ..chain import ChainError, certainly_pd, chain_roles, extract_chain
from ..bounds.interval import _linear_interval
from ..bounds.rounding import accumulate, coef, gamma, magnitude, model_coef, model_floor
from ..ir import Graph, Node
from ..ops import RULES
from ..ops.activation import ReluRule
from .encode import value_boxes
from .highs import timed

F64 = torch.float64
U = 2.0 ** -53
TINY = float(np.finfo(np.float64).tiny)
MAX_HIDDEN = 200       # ReLU neurons in all: the SDP has O((n_in + hidden)^2) unknowns
MAX_DIM = 300          # lifted values (input + hidden)
# Clarabel (interior point) is accurate (certified bounds within ~1e-6 of its objective) and, on
# the clique cones, takes ~0.1 s at clique 33, ~4 s at 47, ~20-30 s at 73-81, over 120 s at 117;
# SCS (first order) is erratic: 1-120 s at the same sizes, certified within ~5e-4.
CLARABEL_MAX_CLIQUE = 96
SOLVER_OPTIONS = {"CLARABEL": {"max_threads": 1}, "SCS": {"eps_abs": 1e-6, "eps_rel": 1e-6}}
CLOSE = 1e-4           # a certified bound this close (relative) to the solver's objective ends the attempts


class SdpError(Exception):
    """The graph is not a chain of affine segments and ReLUs, or is too large for the SDP."""


@dataclass(frozen=True)
class SdpProblem:
    """min <C, P> + k0 over PSD P (dim, dim) with P_00 = 1,  A vec(P) <= h,  |B vec(P) - f| <= e;
    at every network point c . y >= <C, P> + k0 - k_err and tr(P) <= trace.

    vec is row-major (P[a, b] at a * dim + b); rows and C only use entries a <= b (P is
    symmetric).  A: (m_i, dim^2) CSR, h: (m_i,); B: (m_e, dim^2) CSR, f, e: (m_e,); C: (dim^2,).
    lifted[value] = (positions in P (k,), flat element indices in the value (k,)); layers: the
    positions of each lifted value in chain order (consecutive ranges from 1): rows and C only
    touch P's first row and entries within one layer or between neighbouring layers; center
    (dim - 1,): the boxes' midpoints m, P = [1; v - m][1; v - m]^T at every network point."""

    dim: int
    A: sp.csr_matrix
    h: np.ndarray
    B: sp.csr_matrix
    f: np.ndarray
    e: np.ndarray
    C: np.ndarray
    k0: float
    k_err: float
    trace: float
    lifted: Mapping[str, tuple[np.ndarray, np.ndarray]]
    layers: tuple[np.ndarray, ...]
    center: np.ndarray

    @property
    def m(self) -> int:
        """Length of a multiplier vector y = (mu (m_i,), lam (m_e,))."""
        return self.h.size + self.f.size


@dataclass(frozen=True)
class SdpResult:
    """bound: rigorous (check_sdp_certificate of the solver's multipliers; -inf if none);
    objective: the solver's (never trusted; NaN when none); status: "SOLVER status";
    y: the multipliers certified ((m,), None when the solver gave none)."""

    bound: float
    objective: float
    status: str
    y: np.ndarray | None = None


# ---- rounding helpers (numpy, float64) ------------------------------------------------------------
def _up(x):
    """The next float above x: covers one rounding to nearest of a normal result."""
    return np.nextafter(x, np.inf)


def _down(x: float) -> float:
    return float(np.nextafter(x, -np.inf)) - 2 * TINY


def _sum_up(*terms) -> np.ndarray:
    """An upper bound of the exact elementwise sum of a few float arrays: the float sum plus
    gamma(k + 1) of the magnitudes (k - 1 additions; the magnitude sum is low by gamma(k) at
    most), plus flushed subnormals, rounded up."""
    s = sum(np.asarray(t, np.float64) for t in terms)
    mag = sum(np.abs(np.asarray(t, np.float64)) for t in terms)
    k = len(terms)
    return _up(s + (gamma(k + 1, F64) * mag + 4 * (k + 1) * TINY) * (1 + 4 * U))


def _dot_up(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    """An upper bound of the exact M @ v for nonnegative M (r, n) and v (n,): gamma(n + 2)
    relative and a floor for flushed subnormals."""
    n = v.size
    scale = float(M.max(initial=0.0)) + float(v.max(initial=0.0))
    return (M @ v) * (1 + 2 * gamma(n + 2, F64)) + 4 * (n + 2) * TINY * (1 + scale)


def _flat(t) -> np.ndarray:
    return torch.as_tensor(t).detach().to(F64).reshape(-1).cpu().numpy().copy()


# ---- the chain -----------------------------------------------------------------------------------
def _segments(graph: Graph) -> tuple[list[list[Node]], list[Node]]:
    """The affine segments (node lists, L + 1 of them) and the ReLUs between them; raises
    SdpError naming every node that breaks a chain of affine nodes and ReLUs."""
    try:
        roles = chain_roles(graph)   # the chain walk the Lipschitz bounds use
    except ChainError as e:
        raise SdpError(f"the SDP takes chains of affine layers and ReLUs only: {e}") from None
    segs, acts = [[]], []
    bad = [f"{n.name} ({n.op}) is not a ReLU" for n, role in roles
           if role == "activation" and not isinstance(RULES[n.op], ReluRule)]
    if bad:
        raise SdpError("the SDP takes chains of affine layers and ReLUs only: " + "; ".join(bad))
    for node, role in roles:
        if role == "linear":
            segs[-1].append(node)
        else:
            acts.append(node)
            segs.append([])
    hidden = sum(a.size for a in acts)
    if hidden > MAX_HIDDEN or hidden + graph.input_size > MAX_DIM:
        raise SdpError(f"{hidden} hidden and {graph.input_size} input neurons: the SDP takes at most "
                       f"{MAX_HIDDEN} hidden and {MAX_DIM} in all")
    return segs, acts


def _segment_bias(graph: Graph, nodes: list[Node], in_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(b, r): the segment's image of 0 (the real model's) lies within r of b, both (n_out,):
    interval propagation of the point 0, rounding included (bounds/interval.py)."""
    shape = graph.shape_of(in_name)
    lo = hi = torch.zeros((1,) + tuple(shape), dtype=F64)
    with torch.no_grad():
        for node in nodes:
            rule = RULES[node.op]
            if rule.is_exact(node):
                lo, hi = rule.evaluate(node, lo), rule.evaluate(node, hi)
            else:
                lo, hi = _linear_interval(node, rule, [(lo, hi)], [shape], None)
            shape = node.shape
    lo, hi = _flat(lo), _flat(hi)
    b = lo + (hi - lo) / 2
    r = _up(np.maximum(hi - b, b - lo) * (1 + 4 * U)) + 2 * TINY
    return b, r


def _model_slack(graph: Graph, nodes: list[Node], in_name: str, boxes: Mapping) -> np.ndarray:
    """How far a float model's segment may be from the real one at points in the boxes (n_out,):
    each node's model error (rounding.model_coef of its term magnitudes, as encode.py's rows
    carry it) pushed through |L| of the nodes after it.  0 over the reals."""
    fm = graph.float_model
    shape = graph.shape_of(in_name)
    err = torch.zeros((1,) + tuple(shape), dtype=F64)
    if fm is None:
        return np.zeros(int(np.prod(graph.shape_of(nodes[-1].name if nodes else in_name))))
    with torch.no_grad():
        for node in nodes:
            rule = RULES[node.op]
            shapes = [tuple(shape)]
            n = rule.sum_terms(node, shapes)
            carried = rule.apply_abs(node, err) * (1 + coef(n + 2, n + 2, F64))
            if rule.is_exact(node):
                err = carried
            else:
                mag = magnitude(*boxes[node.inputs[0]])
                M = rule.apply_abs(node, mag)
                bm = rule.bias_magnitude(node, mag, shapes)
                M = M if bm is None else M + bm
                err = accumulate(carried, model_coef(fm, n, n + 2, F64) * M + model_floor(fm, n))
            shape = node.shape
    return _flat(err)


@dataclass(frozen=True)
class _Affine:
    """z = W x + b within eps (r,) for x the kept elements of the segment's input in their box:
    W (r, q), b (r,), rows: the segment output's elements kept (r,)."""

    W: np.ndarray
    b: np.ndarray
    eps: np.ndarray


def _affine(graph, dense, nodes, in_name, cols, M, boxes, rows) -> _Affine:
    """The segment restricted to its input's kept elements cols (magnitudes M (q,)), the others
    being 0 at every point (dropping their columns is exact), and to its output's elements rows
    (None: all)."""
    b, rb = _segment_bias(graph, nodes, in_name)
    fm = _model_slack(graph, nodes, in_name, boxes)
    eps = _sum_up(_dot_up(dense.E[:, cols], M), rb, fm)
    eps = np.where(np.isfinite(eps), eps, np.inf)
    rows = slice(None) if rows is None else rows
    return _Affine(dense.W[rows][:, cols], b[rows], eps[rows])


# ---- rows ------------------------------------------------------------------------------------------
class _Rows:
    """Accumulates rows in coordinate form over P's entries (a, b), stored at a <= b."""

    def __init__(self, dim: int):
        self.dim = dim
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.rhs: list[np.ndarray] = []
        self.slack: list[np.ndarray] = []
        self.count = 0

    def add(self, r, a, b, v, rhs, slack=None) -> None:
        """Rows r (local numbers 0..len(rhs) - 1) with entries v at P[a, b]."""
        r, a, b = (np.asarray(t, np.int64).reshape(-1) for t in (r, a, b))
        v = np.asarray(v, np.float64).reshape(-1)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        self.parts.append((r + self.count, lo * self.dim + hi, v))
        rhs = np.asarray(rhs, np.float64).reshape(-1)
        self.rhs.append(rhs)
        self.slack.append(np.zeros_like(rhs) if slack is None else np.asarray(slack, np.float64).reshape(-1))
        self.count += rhs.size

    def matrix(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        cat = lambda k: np.concatenate([p[k] for p in self.parts]) if self.parts else np.zeros(0)  # noqa: E731
        r, c, v = cat(0).astype(np.int64), cat(1).astype(np.int64), cat(2)
        keep = v != 0
        assert np.unique(r * self.dim ** 2 + c).size == r.size, "an entry twice in a row: its sum would round"
        M = sp.csr_matrix((v[keep], (r[keep], c[keep])), shape=(self.count, self.dim ** 2))
        rhs = np.concatenate(self.rhs) if self.rhs else np.zeros(0)
        slack = np.concatenate(self.slack) if self.slack else np.zeros(0)
        return M, rhs, slack


def _linear(rows: _Rows, idx: np.ndarray, coefs: np.ndarray, rhs: np.ndarray, slack=None) -> None:
    """Rows k: sum_j coefs[k, j] v[idx[j]] (<= or =) rhs[k], v at positions idx (q,) of P."""
    r, j = np.nonzero(coefs)
    rows.add(r, np.zeros_like(j), idx[j], coefs[r, j], rhs, slack)


def _box_rows(ineq: _Rows, eq: _Rows, pos: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """l <= x <= u and (x - l)(x - u) <= 0 for the lifted x at positions pos; a point box is one
    equality x = l."""
    k = pos.size
    fixed = lo == hi
    one = np.eye(k)
    _linear(eq, pos, one[fixed], lo[fixed])
    free = ~fixed
    _linear(ineq, pos, one[free], hi[free])
    _linear(ineq, pos, -one[free], -lo[free])
    p, l, u = pos[free], lo[free], hi[free]
    s, q = l + u, l * u          # each within u of its exact value (one rounding)
    M = np.maximum(np.abs(l), np.abs(u))
    rhs = _sum_up(-q, 2 * U * np.abs(s) * M, 2 * U * np.abs(q))
    n = p.size
    ineq.add(np.r_[np.arange(n), np.arange(n)], np.r_[p, np.zeros(n, np.int64)], np.r_[p, p], np.r_[np.ones(n), -s],
             rhs)


def _relu_rows(ineq: _Rows, eq: _Rows, aff: _Affine, pin: np.ndarray, pout: np.ndarray,
               zlo: np.ndarray, zhi: np.ndarray, xhi: np.ndarray) -> None:
    """The rows of x = relu(z), z = W x_in + b within eps, x_in at positions pin (q,), x at
    pout (r,); zlo, zhi: z's box (zhi > 0); xhi: x's upper bound (r,)."""
    W, b, eps = aff.W, aff.b, aff.eps
    r = pout.size
    both = np.r_[pin, pout]
    act, unst = zlo >= 0, ~(zlo >= 0)
    # where lz >= 0, x = z:  x - W x_in = b within eps
    _linear(eq, both, np.hstack([-W, np.eye(r)])[act], b[act], eps[act])
    # where lz < 0, x >= z:  W x_in - x <= -b + eps
    _linear(ineq, both, np.hstack([W, -np.eye(r)])[unst], _sum_up(-b, eps)[unst])
    # and the chord:  t x - W x_in <= b - lz + eps, t = fl((uz - lz) / uz) within 2u t of the
    # exact (uz - lz) / uz, which costs 4u t xhi at most
    t = (zhi - zlo) / zhi
    _linear(ineq, both, np.hstack([-W, np.diag(t)])[unst], _sum_up(b, -zlo, eps, 4 * U * t * xhi)[unst])
    # x^2 = x z:  V_ii - sum_j W_ij V_{j,i} - b_i x_i = x_i d_i, |x_i d_i| <= xhi_i eps_i
    i, j = np.nonzero(W)
    rr = np.r_[np.arange(r), np.arange(r), i]
    aa = np.r_[pout, np.zeros(r, np.int64), pin[j]]
    bb = np.r_[pout, pout, pout[i]]
    eq.add(rr, aa, bb, np.r_[np.ones(r), -b, -W[i, j]], np.zeros(r), _up(xhi * eps) + 2 * TINY)


# ---- the problem ---------------------------------------------------------------------------------
def build_sdp(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, c: np.ndarray,
              input_rows: tuple[np.ndarray, np.ndarray] | None = None) -> SdpProblem:
    """The SDP relaxation of min c . y over inputs x in [lo, hi] (flat (n_in,)) with A x <= b
    (input_rows = (A (r, n_in), b (r,)), as lp_bounds takes them), given the bounds pre[act] of
    every ReLU's input (batch element 0, as crown_intermediate gives them); c: (n_out,).  Raises
    SdpError (not a ReLU chain, too large, a non-finite bound)."""
    graph = graph.to("cpu", F64)
    segs, acts = _segments(graph)
    try:
        chain = extract_chain(graph)
    except ChainError as e:
        raise SdpError(str(e)) from None
    boxes = value_boxes(graph, lo, hi, pre, graph.output_name)
    names = [graph.input_name] + [a.name for a in acts]
    keeps, blo, bhi = _lifted_boxes(boxes, names)
    starts = np.r_[1, 1 + np.cumsum([k.size for k in keeps])]
    dim = int(starts[-1])
    pos = [np.arange(starts[k], starts[k + 1]) for k in range(len(names))]
    ineq, eq = _Rows(dim), _Rows(dim)
    Ms = [np.maximum(np.abs(l), np.abs(u)) for l, u in zip(blo, bhi)]
    for k in range(len(names)):
        _box_rows(ineq, eq, pos[k], blo[k], bhi[k])
    if input_rows is not None:
        A, b = (np.asarray(t, np.float64) for t in input_rows)
        _linear(ineq, pos[0], A.reshape(-1, pos[0].size), b.reshape(-1))
    for k, act in enumerate(acts):
        aff = _affine(graph, chain.dense[k], segs[k], names[k], keeps[k], Ms[k], boxes, keeps[k + 1])
        zlo, zhi = (_flat(t)[keeps[k + 1]] for t in boxes[act.inputs[0]])
        if not (np.all(np.isfinite(zlo)) and np.all(np.isfinite(zhi)) and np.all(np.isfinite(aff.eps))):
            raise SdpError(f"the SDP needs finite bounds of the input of {act.name!r}")
        _relu_rows(ineq, eq, aff, pos[k], pos[k + 1], zlo, zhi, bhi[k + 1])
    last = _affine(graph, chain.dense[-1], segs[-1], names[-1], keeps[-1], Ms[-1], boxes, None)
    C, k0, k_err = _objective(last, np.asarray(c, np.float64).reshape(-1), pos[-1], Ms[-1], dim)
    lifted = {name: (p, k) for name, p, k in zip(names, pos, keeps)}
    return _centred_problem(ineq, eq, C, k0, k_err, blo, bhi, lifted, tuple(pos))


def _lifted_boxes(boxes: Mapping, names: list[str]):
    """(keeps, lo, hi): per lifted value, the flat indices of the elements kept (all of the
    input; of a ReLU output those whose box is not [0, 0]) and their boxes."""
    keeps, blo, bhi = [], [], []
    for k, name in enumerate(names):
        l, u = (_flat(t) for t in boxes[name])
        keep = np.arange(l.size) if k == 0 else np.flatnonzero(~(u <= 0))   # NaN kept (and refused below)
        keeps.append(keep)
        blo.append(l[keep])
        bhi.append(u[keep])
    if not all(np.all(np.isfinite(t)) for t in blo + bhi):
        raise SdpError("the SDP needs finite bounds of every lifted value")
    return keeps, blo, bhi


def _centred_problem(ineq: _Rows, eq: _Rows, C, k0, k_err, blo, bhi, lifted, layers) -> SdpProblem:
    """The problem in the centred P' (v = m + w, m the boxes' midpoints, |w| <= r; _centre):
    the constants moved to the right-hand sides, the roundings to the slacks."""
    m = np.r_[0.0, np.concatenate([l + (u - l) / 2 for l, u in zip(blo, bhi)])]
    r = np.r_[0.0, _up(np.maximum(np.concatenate(bhi) - m[1:], m[1:] - np.concatenate(blo)) * (1 + 2 * U))]
    A, h, _ = ineq.matrix()
    A, c0, slack = _centre(A, m, r)
    h = _sum_up(h, -c0, slack)
    B, f, e = eq.matrix()
    B, c0, slack = _centre(B, m, r)
    f = f - c0
    e = _sum_up(e, slack, 2 * U * np.abs(f))
    Cm, c0, slack = _centre(sp.csr_matrix(C[None, :]), m, r)
    k0 = k0 + float(c0[0])
    k_err = float(_sum_up(k_err, slack[0], 2 * U * abs(k0)))
    trace = float(_sum_up(1.0, _dot_up((r[1:] ** 2 * (1 + 2 * U))[None, :], np.ones(m.size - 1))[0]))
    return SdpProblem(m.size, A, h, B, f, e, Cm.toarray().reshape(-1), k0, k_err, trace, lifted, layers, m[1:])


def _centre(M: sp.csr_matrix, m: np.ndarray, r: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Rows of P (vec, entries a <= b) rewritten for the centred P' = [1; w][1; w]^T, v = m' + w
    (m (dim,), m[0] = 0; |w| <= r (dim,), r[0] = 0): <A, P> = <A', P'> + c0 with A' the same
    quadratic entries, linear entries a + Q m + Q^T m at P'[0, k] and c0 = A_00 + a . m +
    sum Q_ij m_i m_j.  Returns (A' (k, dim^2) CSR, fl(c0) (k,), slack (k,)) with
    |<fl(A'), P'> + fl(c0) - <A, P>| <= slack at every |w| <= r: each coefficient sums at most
    2 nnz + 1 terms of one or two products, gamma(2 nnz + 4) of their magnitudes."""
    d = m.size
    coo = M.tocoo()
    row, col, val = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    a, b = col // d, col % d
    quad, lin, const = a > 0, (a == 0) & (b > 0), col == 0
    k = M.shape[0]
    nnz = int(np.diff(M.indptr).max(initial=0))
    g = gamma(2 * nnz + 4, F64) * (1 + 4 * U)
    lr = np.r_[row[lin], row[quad], row[quad]]
    lk = np.r_[b[lin], b[quad], a[quad]]
    lv = np.r_[val[lin], val[quad] * m[a[quad]], val[quad] * m[b[quad]]]
    lin_new = sp.csr_matrix((lv, (lr, lk)), shape=(k, d))
    lin_new.sum_duplicates()
    lin_mag = sp.csr_matrix((np.abs(lv), (lr, lk)), shape=(k, d))
    cr = np.r_[row[const], row[lin], row[quad]]
    cv = np.r_[val[const], val[lin] * m[b[lin]], val[quad] * m[a[quad]] * m[b[quad]]]
    c0 = np.bincount(cr, weights=cv, minlength=k)
    c0_mag = np.bincount(cr, weights=np.abs(cv), minlength=k)
    slack = _sum_up(g * (lin_mag @ r), g * c0_mag) * (1 + 4 * U) + 4 * (2 * nnz + 4) * TINY
    lc = lin_new.tocoo()
    rows = np.r_[row[quad], lc.row]
    cols = np.r_[col[quad], lc.col]
    vals = np.r_[val[quad], lc.data]
    out = sp.csr_matrix((vals, (rows, cols)), shape=M.shape)
    out.sum_duplicates()
    return out, c0, _up(slack)


def _objective(last: _Affine, c: np.ndarray, pos: np.ndarray, M: np.ndarray, dim: int):
    """(C (dim^2,), k0, k_err): g = fl(W^T c) at P[0, pos], k0 = fl(c . b); c . y - g . x - k0
    is at most |c| . eps + gamma(n_out + 2) (|W|^T |c| . M + |c| . |b|) in magnitude."""
    if not np.all(np.isfinite(c)):
        raise SdpError("the objective must be finite")
    g = last.W.T @ c
    k0 = float(c @ last.b)
    n = c.size
    ac = np.abs(c)
    k_err = _sum_up(_dot_up(ac[None, :], last.eps),
                    gamma(n + 2, F64) * _dot_up(_dot_up(np.abs(last.W).T, ac)[None, :], M),
                    gamma(n + 2, F64) * _dot_up(ac[None, :], np.abs(last.b)))
    C = np.zeros(dim * dim)
    C[pos] = g                     # P[0, pos[j]] sits at 0 * dim + pos[j]
    return C, k0, float(_up(k_err[0] * (1 + 4 * U)))


# ---- the certificate -------------------------------------------------------------------------------
def check_sdp_certificate(problem: SdpProblem, y) -> float:
    """A rigorous lower bound of the network's min c . y from ANY multipliers y = (mu (m_i,),
    lam (m_e,)): mu clipped to >= 0, non-finite entries taken as 0; -inf when nothing is proved.
    tau and delta are chosen here (module doc)."""
    p = problem
    mi, me = p.h.size, p.f.size
    y = np.zeros(mi + me) if y is None else np.asarray(y, np.float64).reshape(-1)
    if y.size != mi + me:
        raise ValueError(f"{y.size} multipliers for {mi + me} rows")
    y = np.where(np.isfinite(y), y, 0.0)
    mu = np.where(np.isfinite(p.h), np.maximum(y[:mi], 0.0), 0.0)
    lam = np.where(np.isfinite(p.e), y[mi:], 0.0)
    S, err = _dual_matrix(p, mu, lam)
    h, e = np.where(np.isfinite(p.h), p.h, 0.0), np.where(np.isfinite(p.e), p.e, 0.0)
    const = -float(mu @ h) - float(lam @ p.f) - float(np.abs(lam) @ e) + p.k0 - p.k_err
    mag = float(mu @ np.abs(h)) + float(np.abs(lam) @ np.abs(p.f)) + float(np.abs(lam) @ e) + abs(p.k0) + p.k_err
    got = _shift(S, err, p.trace)
    if got is None or not math.isfinite(const):
        return -math.inf
    tau, delta = got
    dT = delta * p.trace
    value = tau - dT + const
    m = mi + me
    rounding = coef(m + 8, m + 8, F64) * (abs(tau) + dT + mag) + 4 * (m + 8) * TINY * (1 + mag)
    bound = _down(_down(value) - rounding * (1 + 8 * U))
    return bound if math.isfinite(bound) else -math.inf


def _dual_matrix(p: SdpProblem, mu: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, float]:
    """(S, err): the symmetric S = sym(C + A^T mu + B^T lam) (dim, dim) in float64 and a bound
    of the spectral norm of its error: entry (a, b) sums K terms (K - 1 rows touching it, and
    C), off by gamma(K + 1) of its magnitudes (computed low by gamma(K + 1) at most: coef);
    halving off-diagonal entries is exact but for subnormals; ||F||_2 <= ||F||_F."""
    d = p.dim
    s = p.C + p.A.T @ mu + p.B.T @ lam
    mag = np.abs(p.C) + abs(p.A).T @ mu + abs(p.B).T @ np.abs(lam)
    K = int(max(p.A.getnnz(axis=0).max(initial=0) + p.B.getnnz(axis=0).max(initial=0), 0)) + 1
    S, Mag = s.reshape(d, d), mag.reshape(d, d)
    S = (S + S.T) / 2
    Mag = (Mag + Mag.T) / 2
    F = coef(K + 1, K + 1, F64) * Mag + 4 * (K + 2) * TINY
    fro = math.sqrt(float(_sum_up(float(np.sum(F * F) * (1 + 2 * gamma(d * d + 2, F64))))))
    return S, float(_up(fro * (1 + 4 * U)))


def _shift(S: np.ndarray, err: float, trace: float) -> tuple[float, float] | None:
    """(tau, delta) with S + delta I - tau E_00 proved positive definite (within err of S), the
    best tau - delta trace found: delta from 0 (where S_11 looks definite) up a ladder above
    -lambda_min(S_11), tau the Schur complement backed off a ladder of gaps.  None: nothing."""
    d = S.shape[0]
    if not (np.all(np.isfinite(S)) and math.isfinite(err) and math.isfinite(trace)):
        return None
    scale = max(float(np.abs(S).max()), TINY)
    S11, s = S[1:, 1:], S[1:, 0]
    lam = float(np.linalg.eigvalsh(S11).min()) if d > 1 else math.inf
    base = max(0.0, -lam)
    deltas = ([0.0] if lam > 0 else []) + [base + scale * r for r in 10.0 ** np.arange(-14, 3, 2)]
    best = None
    for delta in deltas:
        got = _tau(S, err, delta, scale)
        if got is not None and (best is None or got - delta * trace > best[0] - best[1] * trace):
            best = (got, delta)
    return best


def _tau(S: np.ndarray, err: float, delta: float, scale: float) -> float | None:
    """The largest tau on a ladder below the Schur complement s_00 + delta - s^T (S_11 +
    delta I)^-1 s for which S + delta I - tau E_00 is proved positive definite; None if none."""
    d = S.shape[0]
    I = np.eye(d)
    try:
        L = np.linalg.cholesky(S[1:, 1:] + delta * I[1:, 1:])
    except np.linalg.LinAlgError:
        return None
    w = np.linalg.solve(L, S[1:, 0])
    star = float(S[0, 0] + delta - w @ w)
    x = np.linalg.solve(L.T, w)
    # the smallest eigenvalue along the null vector [1; -x] is about gap / (1 + |x|^2); it must beat
    # err and the Cholesky test's own margin (~ (d + 1) u times the trace)
    tr = float(np.sum(np.abs(np.diag(S)))) + d * delta
    gap = 2 * (err + gamma(d + 2, F64) * tr + 4 * U * scale) * (1 + float(x @ x)) + TINY
    for _ in range(16):
        tau = star - gap
        M = S + delta * I
        M[0, 0] -= tau
        diag_err = 4 * U * (float(np.abs(np.diag(M)).max()) + delta + abs(tau)) + 4 * TINY
        if math.isfinite(tau) and certainly_pd(M, err + diag_err):
            return tau
        gap *= 4
    return None


# ---- solving ---------------------------------------------------------------------------------------
def solve_sdp(problem: SdpProblem, time_limit: float = 60.0) -> SdpResult:
    """The best certified result of the solvers in turn (_attempts), within time_limit seconds;
    a later solver runs only while no bound within CLOSE of its solver's objective is
    certified.  Never raises for a solver's failure."""
    deadline = time.monotonic() + time_limit
    best = SdpResult(-math.inf, math.nan, "not solved")
    for solver in _attempts(problem):
        left = deadline - time.monotonic()
        if left <= 0.05:
            break
        status, obj, y = _run(problem, solver, left)
        bound = check_sdp_certificate(problem, y) if y is not None else -math.inf
        if bound > best.bound or best.y is None:
            best = SdpResult(bound, obj, f"{solver} {status}", y)
        if math.isfinite(bound) and bound >= obj - CLOSE * (1 + abs(obj)):
            break
    return best


def _attempts(problem: SdpProblem) -> list[str]:
    """Clarabel then SCS while the largest clique cone is at most CLARABEL_MAX_CLIQUE, else SCS."""
    sizes = [pos.size for pos in problem.layers]
    clique = 1 + max([a + b for a, b in zip(sizes, sizes[1:])] or sizes)
    return (["CLARABEL"] if clique <= CLARABEL_MAX_CLIQUE else []) + ["SCS"]


def _lifted_matrix(p: SdpProblem):
    """(P, cliques): P (dim, dim) as a cvxpy expression of blocks: the first row, each layer's
    diagonal block and the blocks between neighbouring layers are variables, the blocks of
    layers two or more apart 0 (no row reads them); cliques: the principal submatrices
    [0, layer k, layer k + 1] (all of P for a chain without ReLUs).  Their pattern is chordal
    (a path of cliques), so the cliques being PSD is the same as P having a PSD completion
    (Grone et al. 1984): the same SDP value, with cones of size 1 + n_k + n_{k+1}, not dim."""
    import cvxpy as cp

    sizes = [pos.size for pos in p.layers]
    L = len(sizes)
    first = [cp.Variable((n, 1)) for n in sizes]
    diag = [cp.Variable((n, n), symmetric=True) for n in sizes]
    side = [cp.Variable((sizes[k], sizes[k + 1])) for k in range(L - 1)]

    def block(j, k):
        if j == k:
            return diag[j]
        if abs(j - k) > 1:
            return np.zeros((sizes[j], sizes[k]))
        return side[j] if j < k else side[k].T

    one = np.ones((1, 1))
    P = cp.bmat([[one] + [f.T for f in first]] + [[first[j]] + [block(j, k) for k in range(L)] for j in range(L)])
    groups = [[k, k + 1] for k in range(L - 1)] or [[0]]
    cliques = [cp.bmat([[one] + [first[k].T for k in g]] + [[first[j]] + [block(j, k) for k in g] for j in g])
               for g in groups]
    return P, cliques


def _run(p: SdpProblem, solver: str, time_limit: float):
    """(status, objective + k0, y) of one solve (y None when the solver gave no multipliers)."""
    import cvxpy as cp

    P, cliques = _lifted_matrix(p)
    v = cp.vec(P, order="C")
    fin = np.isfinite(p.h)
    cons = [(Z + Z.T) / 2 >> 0 for Z in cliques]
    ineq = p.A[fin] @ v <= p.h[fin] if fin.any() else None
    eq = p.B @ v == p.f if p.f.size else None
    cons += [c for c in (ineq, eq) if c is not None]
    prob = cp.Problem(cp.Minimize(cp.sum(sp.csr_matrix(p.C[None, :]) @ v)), cons)
    opts = dict(SOLVER_OPTIONS[solver])
    opts["time_limit" if solver == "CLARABEL" else "time_limit_secs"] = max(time_limit, 1e-3)
    try:
        with warnings.catch_warnings():   # "solution may be inaccurate": the status says so
            warnings.simplefilter("ignore")
            with timed("SDP"):
                prob.solve(solver=solver, **opts)
    except Exception as e:   # cvxpy.SolverError and whatever a solver raises: no bound, never a crash
        return f"error: {type(e).__name__}", math.nan, None
    obj = float(prob.value) + p.k0 if prob.value is not None and np.isfinite(prob.value) else math.nan
    y = np.zeros(p.m)
    if ineq is not None:
        if ineq.dual_value is None:
            return str(prob.status), obj, None
        y[np.flatnonzero(fin)] = np.asarray(ineq.dual_value, np.float64).reshape(-1)
    if eq is not None:
        if eq.dual_value is None:
            return str(prob.status), obj, None
        y[p.h.size:] = np.asarray(eq.dual_value, np.float64).reshape(-1)
    return str(prob.status), obj, y


def sdp_lower(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, c: np.ndarray,
              time_limit: float = 60.0, input_rows=None) -> SdpResult:
    """A rigorous lower bound of min c . y (c: (n_out,)) over inputs in [lo, hi] (flat (n_in,))
    and input_rows (see build_sdp) from the SDP relaxation, given ReLU input bounds pre
    (crown_intermediate's, or tighten_pre's).  Raises SdpError for a graph that is not a ReLU
    chain or is too large (before any solve)."""
    problem = build_sdp(graph, lo, hi, pre, c, input_rows)
    return solve_sdp(problem, time_limit)
