"""Back-substitution of linear bounds (CROWN / DeepPoly) through the IR as a DAG.

A linear objective sum(C * v) on a value v is pushed backwards node by node: affine nodes
transpose their map, activations replace themselves by a relaxation plane (the lower plane
where the coefficient is positive, the upper one where it is negative), and at the input the
remaining linear function is minimised over the box in closed form.

Next to the constant, the pass carries an error bound err >= 0 of everything float arithmetic
got wrong on the way (bounds/rounding.py): the transposed map's sums, the products with the
planes and the constant's sums each round, by at most gamma(n) times the magnitudes involved,
and a coefficient off by delta costs at most |delta| * |v| in the objective.  |v| is bounded
elementwise by interval bounds of every value (`magnitudes`).  The bound returned is
const - err, rounded down.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import torch
from torch import Tensor

from ..ir import Graph, Node
from ..ops import RULES, side_boxes
from .ball import Ball, ball_lower, box_ball_lower
from .interval import Bounds, interval_bounds
from .rounding import (accumulate, clean_bounds, coef, floor, lower, magnitude, model_coef, model_floor,
                       model_planes)


@dataclass(frozen=True)
class Relaxation:
    """What the backward pass needs beyond the graph: bounds on the input of every activation
    (pre[name_of_activation_node] = (lo, hi), (B, *shape)), optional optimisable parameters of
    the lower planes (slopes[name]: (B, q, *shape), already clamped to their valid range) and
    of the upper ones (slopes[(name, "upper")]), and for branch and
    bound the split decisions (signs[name]: (B, *shape) in {-1, 0, +1}: input <= p, free,
    input >= p, with p = points[name] (B, *shape) where given, else 0) with their multipliers
    (betas[name]: (B, q, *shape), >= 0).  On a domain where every decision holds,
    s * (input - p) >= 0, so f >= f - beta * s * (input - p) for any beta >= 0: adding that
    term to the objective keeps the bound sound and lets the optimiser make the decisions bite
    on the earlier layers too (beta-CROWN).  mags[value]: (B, *shape) bounds of |value| over the
    domain, for the rounding error; computed from interval bounds when None."""

    pre: Mapping[str, tuple[Tensor, Tensor]]
    slopes: Mapping[str, Tensor] | None = None
    signs: Mapping[str, Tensor] | None = None
    betas: Mapping[str, Tensor] | None = None
    mags: Mapping[str, Tensor] | None = None
    points: Mapping[str, Tensor] | None = None
    # rule.relax's planes per activation, filled on first use: passes that share pre (alpha's
    # iterations) compute them once
    planes: dict | None = None


def mags_of(bounds: Bounds) -> dict[str, Tensor]:
    """max(|lo|, |hi|) of every value's interval (+inf where unknown)."""
    return {k: magnitude(l, h) for k, (l, h) in bounds.items()}


def magnitudes(graph: Graph, lo: Tensor, hi: Tensor, pre: Mapping[str, tuple[Tensor, Tensor]],
               upto: str | None = None) -> dict[str, Tensor]:
    """Bounds of |value| over the domain for every value up to `upto`: interval bounds through
    the activation input bounds pre (which hold on the domain, split decisions included)."""
    known = {}
    for key, b in pre.items():
        name, k = (key, 0) if isinstance(key, str) else key     # (node, k): the node's input k
        if name in graph.by_name:
            known[graph.by_name[name].inputs[k]] = b
    return mags_of(interval_bounds(graph, lo, hi, known or None, upto=upto))


def with_mags(graph: Graph, lo: Tensor, hi: Tensor, relax: Relaxation, start: str) -> Relaxation:
    """relax with its magnitudes filled in (computed once, for every pass that shares them)."""
    if relax.mags is not None:
        return relax
    return replace(relax, mags=magnitudes(graph, lo, hi, relax.pre, upto=start))


def ancestors(graph: Graph, start: str) -> list[Node]:
    need = {start}
    out = []
    for n in reversed(graph.nodes):
        if n.name in need:
            out.append(n)
            need.update(n.inputs)
    return out  # reverse topological order, start first


def _row_sum(t: Tensor) -> Tensor:
    """(B, q, *shape) -> (B, q)."""
    return t.flatten(2).sum(-1)


def _dot_rows(t: Tensor, w: Tensor) -> Tensor:
    """sum(t * w) over a value's elements, as one batched product (no (B, q, *shape) temporary):
    t (B, q, *shape); w (B, *shape), or (*shape) shared by the batch.  (B, q)."""
    B, q = t.shape[:2]
    tf = t.reshape(B, q, -1)
    if w.dim() == t.dim() - 1 and w.shape[0] == B:
        return torch.bmm(tf, w.reshape(B, -1, 1)).squeeze(-1)
    return tf @ w.reshape(-1)


def _batch_max(t: Tensor) -> Tensor:
    """(B, *shape) -> (B, 1)."""
    return t.reshape(t.shape[0], -1).amax(-1, keepdim=True)


def _batch_sum(t: Tensor) -> Tensor:
    """(B, *shape) -> (B, 1)."""
    return t.reshape(t.shape[0], -1).sum(-1, keepdim=True)


def _add_coefficients(A: dict[str, Tensor], name: str, g: Tensor, err: Tensor, mags) -> Tensor:
    """A[name] += g; where two paths meet, the addition rounds (u |sum| per element, times |v|)."""
    if name not in A:
        A[name] = g
        return err
    A[name] = A[name] + g
    with torch.no_grad():
        e = coef(1, _numel(g) + 2, g.dtype) * _dot_rows(A[name].detach().abs(), mags[name])
        e = e + floor(g.dtype, 1, _batch_sum(mags[name]))
    return accumulate(err, e)


def _numel(t: Tensor) -> int:
    """Elements per row of a (B, q, *shape) tensor."""
    n = 1
    for d in t.shape[2:]:
        n *= d
    return n


def _linear_step(graph: Graph, node: Node, rule, a: Tensor, A: dict, const: Tensor, err: Tensor,
                 mags) -> tuple[Tensor, Tensor]:
    """Push a (B, q, *out) through an affine node.  The transposed map's sums round by at most
    gamma(n) sum_j |a_j| |L_ji| per input element i, which times |v_i| <= m_i sums to
    gamma(n) sum_j |a_j| (|L| m)_j; flushed subnormals add 2 tiny (|a|_1 |m|_1 + ||L| m|_1 + 2n |m|_1).
    The function bounded may miss the IR's exact map by the model error (rounding.model_coef)
    of its term magnitudes |L| m + |bias terms|, which costs that times |a|."""
    B = a.shape[0]
    in_shapes = [graph.shape_of(i) for i in node.inputs]
    if rule.is_exact(node):   # copies (constants included): nothing rounds, no bias term to sum
        flat = a.reshape((a.shape[0] * a.shape[1],) + node.shape)
        for name, s, g in zip(node.inputs, in_shapes, rule.apply_t(node, flat, in_shapes)):
            err = _add_coefficients(A, name, g.reshape(a.shape[:2] + tuple(s)), err, mags)
        b = rule.bias(node, a, in_shapes)
        if b is None:
            return const, err
        return _bias_only(a, b, const, err)
    n = rule.sum_terms(node, in_shapes)
    b = rule.bias(node, a, in_shapes)
    if b is not None:   # the bias sum: node.size products and the constant
        new_const = const + _dot_rows(a, b)
    with torch.no_grad():
        a_abs = a.detach().abs()
        a1 = _row_sum(a_abs)
        m_in = [mags[i] for i in node.inputs]
        Lm = rule.apply_abs(node, *m_in)
        m1 = sum(_batch_sum(m) for m in m_in)
        mc = model_coef(graph.float_model, n, n + node.size + 2, a.dtype)   # the function's own error
        bm = rule.bias_magnitude(node, a, in_shapes)
        # every term below is |a| times a magnitude: one batched product for all of them
        M = (coef(n, n + node.size + 2, a.dtype) + mc) * Lm
        if bm is not None:
            M = M + mc * bm
        e = model_floor(graph.float_model, n) * a1 + floor(a.dtype, 1, _batch_sum(Lm), (2 * n + 1 + a1) * m1)
        if b is not None:
            cb = coef(node.size + 1, node.size + 3, a.dtype)
            M = M + cb * b.abs()
            e = e + cb * const.detach().abs()
            e = e + floor(a.dtype, 2 * node.size + 2, a1, _row_sum(b.abs().reshape((1, 1) + b.shape)))
        err = accumulate(err, accumulate(_dot_rows(a_abs, M), e))
    if b is not None:
        const = new_const
    flat = a.reshape((a.shape[0] * a.shape[1],) + node.shape)
    for name, s, g in zip(node.inputs, in_shapes, rule.apply_t(node, flat, in_shapes)):
        err = _add_coefficients(A, name, g.reshape(a.shape[:2] + tuple(s)), err, mags)
    return const, err


def _bias_only(a: Tensor, b: Tensor, const: Tensor, err: Tensor) -> tuple[Tensor, Tensor]:
    """const + sum(a * b) (the constants a copying node inserts) with its rounding: node.size
    products and the constant, gamma(size + 1) of their magnitudes, plus subnormals."""
    n = b.numel()
    new_const = const + _dot_rows(a, b)
    with torch.no_grad():
        a_abs = a.detach().abs()
        e = coef(n + 1, n + 3, a.dtype) * (const.detach().abs() + _dot_rows(a_abs, b.abs()))
        e = e + floor(a.dtype, 2 * n + 2, _row_sum(a_abs), _row_sum(b.abs().reshape((1, 1) + b.shape)))
    return new_const, accumulate(err, e)


def _planes(node: Node, rule, a: Tensor, relax: Relaxation, graph_model: torch.dtype | None = None,
            side: list | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(w, c, w_e, c_e): the chosen plane per coefficient (upper where a < 0), and elementwise
    bounds of |w| and |c| over the rows (B, *shape).  side: bounds of the node's other inputs."""
    plo, phi = relax.pre[node.name]
    if relax.planes is not None and node.name in relax.planes:
        lw, lb, uw, ub = relax.planes[node.name]
    else:
        lw, lb, uw, ub = rule.relax(node, plo, phi, *(side or []))
        if relax.planes is not None:
            relax.planes[node.name] = (lw, lb, uw, ub)
    lw, lb, uw, ub = (t.unsqueeze(1) for t in (lw, lb, uw, ub))
    if relax.slopes is not None and node.name in relax.slopes:
        lw, lb = rule.lower_with_slope(node, plo.unsqueeze(1), phi.unsqueeze(1), relax.slopes[node.name])
    if relax.slopes is not None and (node.name, "upper") in relax.slopes:
        uw, ub = rule.upper_with_slope(node, plo.unsqueeze(1), phi.unsqueeze(1), relax.slopes[(node.name, "upper")])
    lw, lb, uw, ub = model_planes(graph_model, rule, node, (lw, lb, uw, ub), (plo, phi), *(side or []),
                                  row_axis=True)
    up = a < 0  # a negative coefficient takes the upper plane, a positive one the lower
    with torch.no_grad():
        B = a.shape[0]
        # elementwise over the rows (the planes have a row axis of 1 unless slopes are given)
        w_e = torch.maximum(lw.detach().abs(), uw.detach().abs()).amax(1)
        c_e = torch.maximum(lb.detach().abs(), ub.detach().abs()).amax(1)
    return torch.where(up, uw, lw), torch.where(up, ub, lb), w_e, c_e


def _activation_step(node: Node, rule, a: Tensor, A: dict, const: Tensor, err: Tensor,
                     relax: Relaxation, float_model: torch.dtype | None = None, side: list | None = None
                     ) -> tuple[Tensor, Tensor]:
    """Replace the activation by its planes.  The intercept sum rounds like any sum of n terms;
    each coefficient a_i w_i (- beta_i s_i) rounds by at most gamma(2) of |a w| + |beta| (plus
    tiny (|a| + |w| + 2) for subnormals), which costs that times m_i in the objective.  A split
    at a point p adds beta_i s_i p_i to the constant: n more products in its sum."""
    n = node.size
    w, c, w_e, c_e = _planes(node, rule, a, relax, float_model, side)
    g, ac, beta, point = _split_terms(node, relax, a * w, a * c)
    new_const = const + _row_sum(ac)
    with torch.no_grad():
        dt = a.dtype
        m = relax.mags[node.inputs[0]]
        a_abs = a.detach().abs()
        a1 = _row_sum(a_abs)
        # |a c| <= |a| c_e and |a w| <= |a| w_e elementwise: batched products, no temporaries
        wmax, cabs = _batch_max(w_e), _batch_sum(c_e)
        e = coef(n + 1, n + 3, dt) * (const.detach().abs() + _dot_rows(a_abs, c_e))
        e = e + floor(dt, 2 * n + 2, a1, cabs)
        e = e + coef(3, n + 3, dt) * _dot_rows(a_abs, w_e * m)
        e = e + _split_error(beta, point, m, a_abs, c_e, n)
        mmax = m.reshape(m.shape[0], -1).amax(-1, keepdim=True)
        e = e + floor(dt, 1, a1 * mmax, (wmax + 2) * _batch_sum(m))
        err = accumulate(err, e)
    return new_const, _add_coefficients(A, node.inputs[0], g, err, relax.mags)


def _split_terms(node: Node, relax: Relaxation, g: Tensor, ac: Tensor):
    """The beta terms of the split decisions on node's first input: -beta s on its coefficient g,
    + beta s p on the intercepts a c.  (g, ac, beta or None, point or None)."""
    if relax.betas is None or node.name not in relax.betas:
        return g, ac, None, None
    beta = relax.betas[node.name]
    sign = relax.signs[node.name].unsqueeze(1).to(g.dtype)
    g = g - beta * sign
    point = None
    if relax.points is not None and node.name in relax.points:
        point = relax.points[node.name].unsqueeze(1).to(g.dtype)
        ac = ac + beta * (sign * point)
    return g, ac, beta, point


def _split_error(beta: Tensor | None, point: Tensor | None, m: Tensor, a_abs: Tensor, c_e: Tensor, n: int):
    """The rounding _split_terms adds: a w - beta s rounds by gamma(2) more of |beta| (times |v|
    <= m); a c + beta s p by one more rounding per element, then the sum of n."""
    if beta is None:
        return 0.0
    dt = beta.dtype
    e = coef(3, n + 3, dt) * _row_sum(beta.detach().abs() * m.unsqueeze(1))
    if point is not None:
        bp = _row_sum(beta.detach().abs() * point.abs())
        e = e + coef(n + 3, n + 3, dt) * (bp + _dot_rows(a_abs, c_e)) + floor(dt, 2 * n + 2, bp)
    return e


def _multi_step(node: Node, rule, a: Tensor, A: dict, const: Tensor, err: Tensor, relax: Relaxation,
                side: list, float_model: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Replace a node whose planes are in every input (rule.multi_planes) by them: the
    objective reaches each input through its slope.  Rounding as in _activation_step, per input;
    split decisions on the first input add their beta terms there.  For a float model the
    intercepts move apart by the model's error of the function (model_planes)."""
    n = node.size
    boxes = [relax.pre[node.name]] + list(side)
    lws, lb, uws, ub = model_planes(float_model, rule, node, rule.relax_all(node, *boxes), *boxes)
    up = a < 0
    c = torch.where(up, ub.unsqueeze(1), lb.unsqueeze(1))
    g0, ac, beta, point = _split_terms(node, relax, a * torch.where(up, uws[0].unsqueeze(1), lws[0].unsqueeze(1)),
                                       a * c)
    new_const = const + _row_sum(ac)
    with torch.no_grad():
        dt = a.dtype
        a_abs = a.detach().abs()
        a1 = _row_sum(a_abs)
        c_e = torch.maximum(lb.abs(), ub.abs())
        e = coef(n + 1, n + 3, dt) * (const.detach().abs() + _dot_rows(a_abs, c_e))
        e = e + floor(dt, 2 * n + 2, a1, _batch_sum(c_e))
        for value, lw, uw in zip(node.inputs, lws, uws):
            m = relax.mags[value]
            w_e = torch.maximum(lw.abs(), uw.abs())
            e = e + coef(3, n + 3, dt) * _dot_rows(a_abs, w_e * m)
            mmax = m.reshape(m.shape[0], -1).amax(-1, keepdim=True)
            e = e + floor(dt, 1, a1 * mmax, (_batch_max(w_e) + 2) * _batch_sum(m))
        e = e + _split_error(beta, point, relax.mags[node.inputs[0]], a_abs, c_e, n)
        err = accumulate(err, e)
    for k, (value, lw, uw) in enumerate(zip(node.inputs, lws, uws)):
        g = g0 if k == 0 else a * torch.where(up, uw.unsqueeze(1), lw.unsqueeze(1))
        err = _add_coefficients(A, value, g, err, relax.mags)
    return new_const, err


def backward_linear(graph: Graph, start: str, C: Tensor, relax: Relaxation,
                    record: dict | None = None) -> tuple[Tensor | None, Tensor, Tensor]:
    """The linear lower bound of sum(C[b, j] * v[b]), v = value `start`, over the domain:
    (A_in (B, q, *input_shape) or None when the input is not reached, const (B, q), err (B, q))
    with sum(C * v(x)) >= sum(A_in * x) + const - err for every x in the domain, rounding
    included.  relax.mags must bound every value upstream of start (see with_mags).
    record: if given, receives the coefficients reaching every activation's output
    (record[act_name]: (B, q, *shape))."""
    B, q = C.shape[:2]
    A: dict[str, Tensor] = {start: C}
    const = C.new_zeros(B, q)
    err = C.new_zeros(B, q)
    for node in ancestors(graph, start):
        a = A.pop(node.name, None)
        if a is None:
            continue
        rule = RULES[node.op]
        if rule.linear:
            const, err = _linear_step(graph, node, rule, a, A, const, err, relax.mags)
        elif rule.multi_planes:
            if record is not None:
                record[node.name] = a
            const, err = _multi_step(node, rule, a, A, const, err, relax, side_boxes(graph, node, relax.pre),
                                     graph.float_model)
        else:
            if record is not None:
                record[node.name] = a
            const, err = _activation_step(node, rule, a, A, const, err, relax, graph.float_model,
                                          side_boxes(graph, node, relax.pre))
    return A.pop(graph.input_name, None), const, err


def concretise_lower(a: Tensor | None, const: Tensor, err: Tensor, lo: Tensor, hi: Tensor,
                     ball: Ball | None = None) -> Tensor:
    """Rigorous min over the box [lo, hi] of sum(a * x) + const - err: (B, q): the constant plus
    two batched products (a+ . lo and a- . hi), 2 n_in + 1 terms whose sum rounds by at most
    gamma(2 n_in + 2) of their magnitudes (computed as a+ . |lo| - a- . |hi|, itself low by at
    most gamma(n_in + 3)).  ball: the inputs lie in that L2 ball too (bounds/ball.py): the
    largest of the box's, the ball's and their intersection's minima."""
    if a is None:
        return lower(const, err)
    if ball is not None:   # each a rigorous bound; the intersection's is the tightest unless rounding says otherwise
        box = concretise_lower(a, const, err, lo, hi)
        return torch.maximum(torch.maximum(box, ball_lower(a, const, err, ball)),
                             box_ball_lower(a, const, err, lo, hi, ball))
    ap, an = a.clamp(min=0), a.clamp(max=0)
    value = const + _dot_rows(ap, lo) + _dot_rows(an, hi)   # 2 n products and the constant
    with torch.no_grad():
        n = _numel(a)
        ap, an = ap.detach(), an.detach()
        size = _dot_rows(ap, lo.abs()) - _dot_rows(an, hi.abs())   # sum of |the products|
        e = coef(2 * n + 2, n + 3, a.dtype) * (const.detach().abs() + size)
        a1 = _row_sum(ap) - _row_sum(an)
        e = e + floor(a.dtype, 2 * n + 2, a1, _batch_sum(magnitude(lo, hi)))
        err = accumulate(err, e)
    return lower(value, err)


def backward_lower(graph: Graph, lo: Tensor, hi: Tensor, start: str, C: Tensor,
                   relax: Relaxation, record: dict | None = None, ball: Ball | None = None) -> Tensor:
    """Rigorous lower bounds of sum(C[b, j] * v[b]) over inputs in [lo, hi], v = value `start`
    (never NaN: a bound that cannot be established is -inf).

    lo, hi: (B, *input_shape); C: (B, q, *shape_of(start)).  Returns (B, q).
    record: if given, receives the coefficients reaching every activation's output
    (record[act_name]: (B, q, *shape)) and the input (record[graph.input_name]).  ball: the
    inputs also lie in this L2 ball (bounds/ball.py; [lo, hi] must contain ball and box's
    intersection).
    """
    relax = with_mags(graph, lo, hi, relax, start)
    a, const, err = backward_linear(graph, start, C, relax, record)
    if record is not None and a is not None:
        record[graph.input_name] = a
    return concretise_lower(a, const, err, lo, hi, ball)


CHUNK_ELEMS = 40_000_000  # elements of the coefficient tensors back-substituted at once (memory)


def activation_inputs(graph: Graph) -> list[Node]:
    """Activation nodes in topological order (the nodes whose input bounds CROWN needs)."""
    return [n for n in graph.nodes if not RULES[n.op].linear]


def bounds_of_value(graph: Graph, lo: Tensor, hi: Tensor, value: str, prior: tuple[Tensor, Tensor],
                    relax: Relaxation, budget_elems: int, deadline=None, mask: Tensor | None = None,
                    ball: Ball | None = None) -> tuple[Tensor, Tensor]:
    """CROWN bounds of the elements of `value` in mask (default: whose prior interval straddles
    0; an activation's rule says which of its inputs' bounds matter: ActivationRule.loose); the
    others keep their prior bounds.  Each domain b gets objective rows only for its own such
    elements (padded to the batch's largest count U), so small, mostly stable domains cost little."""
    plo, phi = clean_bounds(*prior)
    B = plo.shape[0]
    order, live = unstable_order(plo, phi, mask)
    U = order.shape[1]
    if U == 0:
        return plo, phi
    relax = with_mags(graph, lo, hi, relax, value)
    per_row = max(1, graph.input_size + max(nd.size for nd in graph.nodes))
    chunk = max(1, budget_elems // (2 * B * per_row))
    new_lo, new_hi = plo.reshape(B, -1).clone(), phi.reshape(B, -1).clone()
    for start in range(0, U, chunk):
        if deadline is not None:
            deadline.check()
        idx, ok = order[:, start:start + chunk], live[:, start:start + chunk]
        lb = backward_lower(graph, lo, hi, value, bound_rows(idx, ok, plo), relax, ball=ball)
        tighten(new_lo, new_hi, idx, ok, lb)
    return new_lo.reshape(plo.shape), new_hi.reshape(phi.shape)


def unstable_order(plo: Tensor, phi: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per domain, the flat indices of the elements in mask (default: whose interval straddles
    0), first, padded to the batch's largest count U: (order (B, U), live (B, U) bool, False on
    padding).  A NaN bound counts as unknown, so its element as unstable."""
    plo, phi = clean_bounds(plo, phi)
    B = plo.shape[0]
    if mask is None:
        mask = (plo < 0) & (phi > 0)
    mask = mask.reshape(B, -1)
    U = int(mask.sum(1).max()) if B else 0
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :U]
    return order, torch.gather(mask, 1, order)


def bound_rows(idx: Tensor, ok: Tensor, like: Tensor) -> Tensor:
    """Objective rows +e_i then -e_i for the elements idx (B, k) of a value shaped like `like`
    (B, *shape); padding rows (ok False) are zero.  (B, 2k, *shape)."""
    B, k = idx.shape
    rows = torch.arange(k, device=idx.device).unsqueeze(0)
    batch = torch.arange(B, device=idx.device).unsqueeze(1)
    C = torch.zeros(B, 2 * k, like[0].numel(), dtype=like.dtype, device=like.device)
    one = ok.to(like.dtype)
    C[batch, rows, idx] = one
    C[batch, k + rows, idx] = -one
    return C.reshape((B, 2 * k) + like.shape[1:])


def tighten(flat_lo: Tensor, flat_hi: Tensor, idx: Tensor, ok: Tensor, lb: Tensor) -> None:
    """Intersect, in place, the bounds (B, n) of the elements idx (B, k) with the lower bounds lb
    (B, 2k) of the rows bound_rows made (+e_i: lower bound, -e_i: minus the upper bound)."""
    k = idx.shape[1]
    cur_lo, cur_hi = torch.gather(flat_lo, 1, idx), torch.gather(flat_hi, 1, idx)
    flat_lo.scatter_(1, idx, torch.where(ok, torch.maximum(cur_lo, lb[:, :k]), cur_lo))
    flat_hi.scatter_(1, idx, torch.where(ok, torch.minimum(cur_hi, -lb[:, k:]), cur_hi))


def crown_intermediate(graph: Graph, lo: Tensor, hi: Tensor, ibp: Bounds | None = None,
                       fixed: Mapping[str, tuple[Tensor, Tensor]] | None = None,
                       budget_elems: int = CHUNK_ELEMS, deadline=None, first: int = 0,
                       ball: Ball | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Bounds on the input of every activation, by back-substitution layer after layer.

    Returns pre[act_name] = (lo, hi) of the activation's input, (B, *shape).  fixed: bounds to
    intersect with (e.g. split decisions clamping a neuron's input to >= 0 or <= 0), keyed by
    activation name; they are applied before later layers use them.  first: the activations
    before this index (topological order) take their bounds from `fixed` as they are (bounds
    already computed, valid on these boxes); the back-substitution starts at it.  deadline:
    checked between back-substitution chunks (raises OutOfTime).  ball: see backward_lower.
    """
    acts = activation_inputs(graph)
    pre: dict[str, tuple[Tensor, Tensor]] = {a.name: clean_bounds(*fixed[a.name]) for a in acts[:first]}
    known: dict[str, tuple[Tensor, Tensor]] = {a.inputs[0]: pre[a.name] for a in acts[:first]}
    for a in acts[:first]:   # the other inputs' bounds of a product before `first`, as they are
        for k, value in enumerate(a.inputs[1:], start=1):
            if (a.name, k) in (fixed or {}):
                pre[(a.name, k)] = clean_bounds(*fixed[(a.name, k)])
                known.setdefault(value, pre[(a.name, k)])
    if ibp is None:
        ibp = interval_bounds(graph, lo, hi, known or None)
    last = None
    for act in acts[first:]:
        if last is not None:  # re-run the cheap interval pass so that later priors use the tighter bounds
            ibp = interval_bounds(graph, lo, hi, known, reuse=ibp, changed=frozenset([last]), upto=act.inputs[0])
        prior = ibp[act.inputs[0]]
        if fixed is not None and act.name in fixed:
            flo, fhi = clean_bounds(*fixed[act.name])
            prior = (torch.maximum(prior[0], flo), torch.minimum(prior[1], fhi))
        plo, phi = bounds_of_value(graph, lo, hi, act.inputs[0], prior, Relaxation(pre, mags=mags_of(ibp)),
                                   budget_elems, deadline, RULES[act.op].loose(act, *prior), ball)
        if fixed is not None and act.name in fixed:
            plo, phi = torch.maximum(plo, flo), torch.minimum(phi, fhi)
        pre[act.name] = (plo, phi)
        known[act.inputs[0]] = (plo, phi)
        last = act.inputs[0]
        if RULES[act.op].multi_planes:   # a product's planes need every input's bounds
            for k, value in enumerate(act.inputs[1:], start=1):
                b = known.get(value) or (fixed or {}).get((act.name, k))
                if b is None:
                    if value not in ibp:
                        ibp = interval_bounds(graph, lo, hi, known, reuse=ibp, upto=value)
                    vlo, vhi = clean_bounds(*ibp[value])
                    b = bounds_of_value(graph, lo, hi, value, ibp[value], Relaxation(pre, mags=mags_of(ibp)),
                                        budget_elems, deadline, vlo < vhi, ball)
                pre[(act.name, k)] = known[value] = b
    return pre


def crown_output(graph: Graph, lo: Tensor, hi: Tensor, C: Tensor, pre: Mapping[str, tuple[Tensor, Tensor]],
                 slopes: Mapping[str, Tensor] | None = None, record: dict | None = None,
                 signs: Mapping[str, Tensor] | None = None, betas: Mapping[str, Tensor] | None = None,
                 mags: Mapping[str, Tensor] | None = None, points: Mapping[str, Tensor] | None = None,
                 planes: dict | None = None, ball: Ball | None = None) -> Tensor:
    """Rigorous lower bounds of C @ y (C: (B, q, n_out)) given activation input bounds pre.
    (B, q).  mags: see Relaxation (pass them when bounding the same domains repeatedly).
    ball: see backward_lower."""
    B, q = C.shape[:2]
    C = C.reshape((B, q) + graph.output_shape)
    return backward_lower(graph, lo, hi, graph.output_name, C,
                          Relaxation(pre, slopes, signs, betas, mags, points, planes), record, ball)
