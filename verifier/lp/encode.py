"""The LP relaxation of a network: one variable per element of every value, rows per node.

z stacks the input and every value the objective depends on.  Each node adds rows through the
encoder of its rule's kind (ENCODERS, looked up along the rule class's MRO, never by op name):

  * affine rules (LinearRule): equality rows  z_out - L z_in = bias,  L obtained densely by
    pushing the identity basis of the output through the rule's transposed map (apply_t, the
    map CROWN uses).  A row may miss the IR's exact map by its rounding (gamma(n) of |L| m, the
    error model backward.py charges) and, for a float model, by the model's own evaluation error:
    each equality row carries that slack eps, |E z - f| <= eps at every network point;
  * kinks at 0 (ReLU, LeakyRelu/PRelu/Abs): the two exact pieces as rows on the convex side
    (y >= x, y >= a x; the triangle for ReLU) and the rule's chord on the other; a stable neuron
    is its piece (two opposite planes);
  * any other elementwise activation: its rule's planes lw x + lb <= y <= uw x + ub over the input
    box, in every input for rules with planes in all of them (multi_planes).

Every variable is boxed: the input by [lo, hi], every value by interval bounds through the
activation input bounds `pre` (which they are intersected with).  The rows then hold at every
point the network can reach from the box, so any Lagrangian of the LP bounds the network
(relax.py).  A node none of these encoders takes is reported, with the others, in one
LPEncodeError before any work.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..bounds.backward import ancestors
from ..bounds.interval import interval_bounds
from ..bounds.rounding import coef, floor, lower, model_coef, model_floor, model_function_error, upper
from ..ir import Graph, Node
from ..ops import RULES
from ..ops.activation import ReluRule
from ..ops.piecewise import Kinked
from ..ops.registry import ActivationRule, LinearRule

F64 = torch.float64


class LPEncodeError(Exception):
    """The graph has nodes the LP encoding does not cover (all named in the message)."""


@dataclass(frozen=True)
class Problem:
    """min c . z  s.t.  |E z - f| <= eps (rows exact up to eps),  G z <= h,  l <= z <= u.

    E: (m_e, n) CSR, f, eps: (m_e,); G: (m_g, n) CSR, h: (m_g,); l, u, c: (n,), float64.
    offsets[value] = (start, size): the value's elements (flattened) in z.  determined: (n,) bool,
    the variables that equality rows fix from others (affine nodes' outputs): a solver may
    leave them unbounded (their boxes only make the LP degenerate: 37k simplex iterations
    instead of ~200 on a 784-256-256 net), the certificate still uses every box."""

    E: sp.csr_matrix
    f: np.ndarray
    eps: np.ndarray
    G: sp.csr_matrix
    h: np.ndarray
    l: np.ndarray
    u: np.ndarray
    c: np.ndarray
    offsets: Mapping[str, tuple[int, int]]
    determined: np.ndarray

    @property
    def n(self) -> int:
        return self.l.size

    def cols(self, value: str) -> np.ndarray:
        """Indices in z of the value's elements, (size,)."""
        start, size = self.offsets[value]
        return np.arange(start, start + size)


def with_objective(problem: Problem, value: str, w: np.ndarray) -> Problem:
    """The problem minimising w . value (w: (size of value,)), nothing else."""
    c = np.zeros(problem.n)
    c[problem.cols(value)] = np.asarray(w, dtype=np.float64).reshape(-1)
    return replace(problem, c=c)


# ---- what an encoder sees and returns ------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    """One node as its encoder sees it.  out: (size,) columns of its elements; ins[k]: columns of
    input k (flat, the input's own shape in_shapes[k]); boxes[k]: (lo, hi) of input k,
    (1, *in_shapes[k]) float64 tensors."""

    node: Node
    rule: object
    out: np.ndarray
    ins: tuple[np.ndarray, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    boxes: tuple[tuple[Tensor, Tensor], ...]
    float_model: torch.dtype | None


@dataclass(frozen=True)
class Rows:
    """Rows in coordinate form, row numbers local to the block: equalities (er, ec, ev) with
    right-hand sides f and slacks eps, inequalities (gr, gc, gv) <= h."""

    er: np.ndarray
    ec: np.ndarray
    ev: np.ndarray
    f: np.ndarray
    eps: np.ndarray
    gr: np.ndarray
    gc: np.ndarray
    gv: np.ndarray
    h: np.ndarray


def _empty_i() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _empty_f() -> np.ndarray:
    return np.zeros(0)


def eq_rows(er, ec, ev, f, eps) -> Rows:
    return Rows(er, ec, ev, f, eps, _empty_i(), _empty_i(), _empty_f(), _empty_f())


def le_rows(gr, gc, gv, h) -> Rows:
    return Rows(_empty_i(), _empty_i(), _empty_f(), _empty_f(), _empty_f(), gr, gc, gv, h)


def concat_rows(parts: list[Rows]) -> Rows:
    """The blocks one below the other (row numbers shifted)."""
    def stack(rows, n_of):
        out, base = [], 0
        for p in parts:
            out.append(getattr(p, rows) + base)
            base += n_of(p).size
        return np.concatenate(out) if out else _empty_i()

    cat = lambda k: np.concatenate([getattr(p, k) for p in parts]) if parts else _empty_f()  # noqa: E731
    return Rows(stack("er", lambda p: p.f), cat("ec").astype(np.int64), cat("ev"), cat("f"), cat("eps"),
                stack("gr", lambda p: p.h), cat("gc").astype(np.int64), cat("gv"), cat("h"))


# ---- the registry: rule kind -> encoder ----------------------------------------------------------
ENCODERS: dict[type, Callable[[Site], Rows]] = {}


def encodes(*kinds: type):
    """Function decorator registering an encoder for rules of these classes (and subclasses)."""
    def add(fn):
        for k in kinds:
            assert k not in ENCODERS, f"duplicate LP encoder for {k.__name__}"
            ENCODERS[k] = fn
        return fn
    return add


def encoder_of(rule) -> Callable[[Site], Rows] | None:
    """The encoder of the nearest class in the rule's MRO that has one."""
    for cls in type(rule).__mro__:
        if cls in ENCODERS:
            return ENCODERS[cls]
    return None


def unsupported(graph: Graph, nodes=None) -> list[str]:
    """'name (op)' of every node (of `nodes`, default all) that no encoder takes."""
    bad = []
    for n in graph.nodes if nodes is None else nodes:
        r = RULES.get(n.op)
        if r is None or encoder_of(r) is None:
            bad.append(f"{n.name} ({n.op})")
    return bad


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to(F64).reshape(-1).cpu().numpy()


# ---- affine nodes: exact rows with their rounding slack ------------------------------------------
@encodes(LinearRule)
def _affine(site: Site) -> Rows:
    """z_out - sum_k L_k z_in_k = bias, row i within eps_i of the IR's exact map: the rows of L
    come from apply_t(e_i), whose sums round by at most gamma(n) |L_i.| elementwise (n =
    rule.sum_terms), which at |z_in| <= m costs gamma(n) (|L| m)_i; a float model adds
    model_coef (|L| m + |bias terms|) + model_floor (bounds/rounding.py).  Copies (is_exact)
    round nowhere: eps = 0."""
    node, rule = site.node, site.rule
    size = node.size
    basis = torch.eye(size, dtype=F64).reshape((size,) + node.shape)
    Ls = rule.apply_t(node, basis, list(site.in_shapes))
    rows, cols, vals = [np.arange(size)], [site.out], [np.ones(size)]
    for L, idx in zip(Ls, site.ins):
        L = L.detach().reshape(size, -1).cpu().numpy()
        r, k = np.nonzero(L)
        rows.append(r)
        cols.append(idx[k])
        vals.append(-L[r, k])
    like = torch.zeros(1, dtype=F64)
    b = rule.bias(node, like, list(site.in_shapes))
    f = np.zeros(size) if b is None else _np(b.expand(node.shape))
    eps = np.zeros(size) if rule.is_exact(node) else _affine_slack(site)
    return eq_rows(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), f, eps)


def _affine_slack(site: Site) -> np.ndarray:
    """eps (size,) of an affine node's rows (see _affine); subnormals flushed in the n products
    of a coefficient's sum lose 2 tiny each, times sum m: floor(2n + 2, n m1 + |L| m)."""
    node, rule = site.node, site.rule
    in_shapes = list(site.in_shapes)
    n = rule.sum_terms(node, in_shapes)
    mags = [torch.maximum(lo.abs(), hi.abs()) for lo, hi in site.boxes]
    with torch.no_grad():
        Lm = rule.apply_abs(node, *mags).reshape(-1)
        m1 = float(sum(float(m.sum()) for m in mags))
        like = torch.zeros(1, dtype=F64)
        bm = rule.bias_magnitude(node, like, in_shapes)
        bm = torch.zeros_like(Lm) if bm is None else bm.expand(node.shape).reshape(-1)
        mc = model_coef(site.float_model, n, n + node.size + 2, F64)
        eps = coef(n, n + node.size + 2, F64) * Lm + mc * (Lm + bm) + model_floor(site.float_model, n)
        eps = eps + floor(F64, 2 * n + 2, n * m1, Lm)
    eps = _np(eps) * (1 + 8 * np.finfo(np.float64).eps)   # the few roundings of this sum, upwards
    return np.where(np.isfinite(eps), eps, np.inf)


# ---- activations: planes, and the exact pieces of a kink -----------------------------------------
def _bcast_cols(site: Site, k: int) -> np.ndarray:
    """Columns of input k broadcast to the node's output elements, (size,)."""
    return np.broadcast_to(site.ins[k].reshape(site.in_shapes[k]), site.node.shape).reshape(-1)


def _plane_rows(site: Site, slopes: list[np.ndarray], icpt: np.ndarray, upper: bool) -> Rows:
    """One row per output element i: sum_k slopes[k]_i x_k,i + icpt_i <= y_i (upper: >=), as
    sum_k s x - y <= -icpt (upper: y - sum_k s x <= icpt).  Elements with a non-finite number
    get no row (a missing row only weakens the relaxation)."""
    size = site.node.size
    ok = np.isfinite(icpt)
    for s in slopes:
        ok &= np.isfinite(s)
    sign = -1.0 if upper else 1.0
    rows, cols, vals = [np.arange(size)], [site.out], [np.full(size, -sign)]
    for k, s in enumerate(slopes):
        rows.append(np.arange(size))
        cols.append(_bcast_cols(site, k))
        vals.append(sign * s)
    r, c, v = (np.concatenate(t) for t in (rows, cols, vals))
    keep = ok[r] & (v != 0)
    # renumber the kept elements' rows densely
    new = np.cumsum(ok) - 1
    return le_rows(new[r[keep]], c[keep], v[keep], (icpt if upper else -icpt)[ok])


def _planes(site: Site) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """The rule's planes, in every input (multi_planes) or in the first (the others' boxes
    given, as the rule's relax asks), moved apart by a float model's error of the function;
    each flattened to the output's (size,)."""
    node, rule = site.node, site.rule
    shape = node.shape
    with torch.no_grad():
        if rule.multi_planes:
            lws, lb, uws, ub = rule.relax_all(node, *site.boxes)
        else:
            lw, lb, uw, ub = rule.relax(node, *site.boxes[0], *site.boxes[1:])
            zero = torch.zeros(shape, dtype=F64)
            lws, uws = [lw] + [zero] * (len(site.ins) - 1), [uw] + [zero] * (len(site.ins) - 1)
        e = model_function_error(site.float_model, rule, node, *site.boxes)
        if isinstance(e, torch.Tensor) or e != 0.0:
            # the model's output lies within e of f: lb - e and ub + e, rounded outwards
            lb, ub = lower(torch.as_tensor(lb, dtype=F64), e), upper(torch.as_tensor(ub, dtype=F64), e)
    return [_out(t, shape) for t in lws], _out(lb, shape), [_out(t, shape) for t in uws], _out(ub, shape)


def _out(t, shape: tuple[int, ...]) -> np.ndarray:
    """A plane's numbers (broadcastable to (1, *shape)) as (size,)."""
    return _np(torch.broadcast_to(torch.as_tensor(t, dtype=F64), (1,) + tuple(shape))[0])


@encodes(ActivationRule)
def _activation(site: Site) -> Rows:
    """The rule's lower and upper planes (rigorous for the real function, rounding included)."""
    lws, lb, uws, ub = _planes(site)
    return concat_rows([_plane_rows(site, lws, lb, upper=False), _plane_rows(site, uws, ub, upper=True)])


def kink_model_error(float_model, rule, node, lo: torch.Tensor, hi: torch.Tensor) -> np.ndarray:
    """A float model's error of a kink's function per element (size,), rounded up for the rows
    that carry it (0 where exact): the pieces' right-hand sides."""
    e = model_function_error(float_model, rule, node, (lo, hi))
    e = _out(e, node.shape) if isinstance(e, torch.Tensor) else np.full(node.size, float(e))
    return np.where(e == 0.0, 0.0, e * (1 + 4 * np.finfo(np.float64).eps) + 4 * np.finfo(np.float64).tiny)


def _kink(site: Site, a: np.ndarray) -> Rows:
    """f = x above 0, a x below: the planes of the rule, and for unstable elements (lo < 0 < hi)
    the two pieces themselves on the side where they bound f (y >= x and y >= a x where a <= 1,
    f convex: with the chord above, the convex hull (the triangle for ReLU); <= where a > 1).
    The pieces are exact for the real function; a float model's error of it widens them."""
    node = site.node
    lo, hi = (_np(t) for t in site.boxes[0])
    a = np.broadcast_to(a, node.shape).reshape(-1)
    unstable = (lo < 0) & (hi > 0)
    e = kink_model_error(site.float_model, site.rule, node, *site.boxes[0])
    convex = a <= 1
    parts = [_activation(site)]
    for slope in (np.ones_like(a), a):   # NaN: no row for that element
        s = np.where(unstable, slope, np.nan)
        # convex: slope x - y <= e (a lower piece); concave: y - slope x <= e (an upper piece)
        parts.append(_plane_rows(site, [np.where(convex, s, np.nan)], -e, upper=False))
        parts.append(_plane_rows(site, [np.where(convex, np.nan, s)], e, upper=True))
    return concat_rows(parts)


@encodes(ReluRule)
def _relu(site: Site) -> Rows:
    return _kink(site, np.zeros(1))


@encodes(Kinked)
def _kinked(site: Site) -> Rows:
    return _kink(site, _np(site.rule.slope(site.node, torch.zeros(1, dtype=F64))))


# ---- the whole problem ---------------------------------------------------------------------------
def _first(t, shape: tuple[int, ...]) -> Tensor:
    """Batch element 0 of a bound tensor (B, *shape) or (*shape), as (1, *shape) float64."""
    t = torch.as_tensor(t).detach().to(F64).cpu()
    if tuple(t.shape) == tuple(shape):
        return t.unsqueeze(0)
    return t.reshape((-1,) + tuple(shape))[:1]


def value_boxes(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, upto: str) -> dict:
    """Rigorous (lo, hi) of every value up to `upto` for inputs in the box, (1, *shape): interval
    bounds through the activation input bounds pre (batch element 0), intersected with them."""
    shape = graph.input_shape
    tl = torch.as_tensor(np.asarray(lo, dtype=np.float64)).reshape((1,) + shape)
    th = torch.as_tensor(np.asarray(hi, dtype=np.float64)).reshape((1,) + shape)
    known = {}
    for key, (plo, phi) in pre.items():
        name, k = (key, 0) if isinstance(key, str) else key
        if name in graph.by_name:
            v = graph.by_name[name].inputs[k]
            s = graph.shape_of(v)
            known[v] = (_first(plo, s), _first(phi, s))
    return interval_bounds(graph, tl, th, known or None, upto=upto)


def encode(graph: Graph, lo: np.ndarray, hi: np.ndarray, pre: Mapping, upto: str | None = None,
           input_rows: tuple[np.ndarray, np.ndarray] | None = None) -> Problem:
    """The LP relaxation of the values up to `upto` (default the output) for inputs x in
    [lo, hi] (flat (n_in,)) with A x <= b (input_rows = (A (r, n_in), b (r,))), given the bounds
    pre[act] = (lo, hi) of every activation's input (batch element 0 is used).  The objective
    is zero (with_objective sets one).  Raises LPEncodeError naming every node not covered."""
    upto = upto or graph.output_name
    graph = _in_float64(graph)
    nodes = list(reversed(ancestors(graph, upto)))
    bad = unsupported(graph, nodes)
    if bad:
        raise LPEncodeError(f"no LP encoding for {len(bad)} node(s): {', '.join(bad)}")
    boxes = value_boxes(graph, lo, hi, pre, upto)
    names = [graph.input_name] + [n.name for n in nodes]
    offsets, start = {}, 0
    for v in names:
        size = int(np.prod(graph.shape_of(v), dtype=np.int64))
        offsets[v] = (start, size)
        start += size
    cols = {v: np.arange(s, s + k) for v, (s, k) in offsets.items()}
    parts = [_input_rows(cols[graph.input_name], input_rows)]
    determined = np.zeros(start, dtype=bool)
    for node in nodes:
        determined[cols[node.name]] = RULES[node.op].linear
        rule = RULES[node.op]
        site = Site(node, rule, cols[node.name], tuple(cols[i] for i in node.inputs),
                    tuple(graph.shape_of(i) for i in node.inputs), tuple(boxes[i] for i in node.inputs),
                    graph.float_model)
        parts.append(encoder_of(rule)(site))
    return _assemble(concat_rows(parts), [boxes[v] for v in names], offsets, determined)


def _in_float64(graph: Graph) -> Graph:
    """The graph with float64 CPU parameters (a copy only when some are not: the rows are
    built in float64, and float32 weights widen exactly)."""
    def ok(v) -> bool:
        return not isinstance(v, Tensor) or not v.is_floating_point() or (v.dtype == F64 and v.device.type == "cpu")
    if all(ok(v) for n in graph.nodes for v in n.params.values()):
        return graph
    return graph.to("cpu", F64)


def _input_rows(cols: np.ndarray, input_rows) -> Rows:
    if input_rows is None:
        return le_rows(_empty_i(), _empty_i(), _empty_f(), _empty_f())
    A, b = (np.asarray(t, dtype=np.float64) for t in input_rows)
    r, k = np.nonzero(A)
    return le_rows(r, cols[k], A[r, k], b.reshape(-1))


def _assemble(rows: Rows, boxes: list, offsets: dict, determined: np.ndarray) -> Problem:
    n = determined.size
    E = sp.csr_matrix((rows.ev, (rows.er, rows.ec)), shape=(rows.f.size, n))
    G = sp.csr_matrix((rows.gv, (rows.gr, rows.gc)), shape=(rows.h.size, n))
    E.sum_duplicates()
    G.sum_duplicates()
    l = np.concatenate([_np(b[0]) for b in boxes])
    u = np.concatenate([_np(b[1]) for b in boxes])
    return Problem(E, rows.f, rows.eps, G, rows.h, l, u, np.zeros(n), offsets, determined)
