"""Forward linear bounds (symbolic intervals): every value gets a lower and an upper linear
function of the network input, carried forward layer by layer.

For an input of n elements each value carries (n + 1) coefficient channels, so the cost grows
with n: for low-dimensional inputs (ACAS Xu: 5) this is far cheaper than back-substituting from
every layer, at a small loss of tightness.  Activations are relaxed with the same planes as in
the backward pass, from the concrete bounds of their input.

Rounding: each value also carries err >= 0 with lower(x) - err <= v(x) <= upper(x) + err over
the domain.  A function f(x) = c . x + k whose computed coefficients are off by delta costs at
most sum_i |delta_i| m_i + |delta_k| (m_i = max(|lo_i|, |hi_i|)), and every coefficient of a
map's output is a sum whose error is gamma(n) of its magnitudes, so the error of a layer is
gamma(n) times |L| applied to the "size" sum_i |c_i| m_i + |k| of its input functions.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..ir import Graph
from ..ops import RULES, side_boxes
from .rounding import (accumulate, clean_bounds, coef, floor, lower, magnitude, model_coef, model_floor,
                       model_planes, upper)

# A linear function of the flat input x (n elements): coef (B, n, *shape), const (B, *shape),
# err (B, *shape): f(x)[...] = sum_i coef[:, i, ...] * x_i + const[...], exact within err
Linear = tuple[Tensor, Tensor, Tensor]


def _per_input(t: Tensor, like: Tensor) -> Tensor:
    """(B, n) -> (B, n, 1, ...) to broadcast against coef channels shaped like `like`."""
    return t.reshape(t.shape[:2] + (1,) * (like.dim() - 2))


def _size(fn: Linear, mx: Tensor) -> Tensor:
    """sum_i |c_i| m_i + |k| (B, *shape): bounds |f(x)| on the box, and scales f's rounding."""
    c, k = fn[0], fn[1]
    return (c.abs() * _per_input(mx, c)).sum(1) + k.abs()


def _concretise(fn: Linear, lo: Tensor, hi: Tensor, upper_side: bool) -> Tensor:
    """Rigorous min (or max) of the function over the box, minus (plus) its error."""
    c, k, err = fn
    n = c.shape[1]
    xl, xh = _per_input(lo, c), _per_input(hi, c)
    if upper_side:
        t = c.clamp(min=0) * xh + c.clamp(max=0) * xl
    else:
        t = c.clamp(min=0) * xl + c.clamp(max=0) * xh
    value = t.sum(1) + k
    e = coef(n + 1, n + 3, c.dtype) * (t.abs().sum(1) + k.abs())
    mx = magnitude(lo, hi).sum(1).reshape((c.shape[0],) + (1,) * (k.dim() - 1))
    e = accumulate(err, e + floor(c.dtype, 2 * n + 2, c.abs().sum(1), mx))
    return upper(value, e) if upper_side else lower(value, e)


def _linear_map(rule, node, fns: list[Linear], pos_part: bool) -> tuple[Tensor, Tensor]:
    """Apply the positive (pos_part) or negative part of the op's linear map to stacked
    coefficient channels; the constant channel rides along as one more channel."""
    parts = []
    for c, k, _ in fns:
        B, n = c.shape[:2]
        parts.append(torch.cat([c, k.unsqueeze(1)], 1).reshape((B * (n + 1),) + c.shape[2:]))
    lin = rule.apply(node, *parts)
    ab = rule.apply_abs(node, *parts)
    out = (lin + ab) / 2 if pos_part else (lin - ab) / 2
    B, n = fns[0][0].shape[:2]
    out = out.reshape((B, n + 1) + out.shape[1:])
    return out[:, :n], out[:, n]


def _linear_error(graph: Graph, node, rule, lows: list[Linear], ups: list[Linear], mx: Tensor,
                  b: Tensor | None) -> Tensor:
    """err of a linear node's output functions (both sides).  The input errors pass through
    |L| (computed low by at most gamma(n): doubled gamma back); each output channel is L(c) or
    |L|(c), halved, summed with the other side and the bias: gamma(n + 4) of |L| applied to the
    input sizes, plus |b|.  Subnormals: tiny per operand and operation, weighted by m."""
    in_shapes = [graph.shape_of(i) for i in node.inputs]
    n = rule.sum_terms(node, in_shapes)
    dt = mx.dtype
    E = rule.apply_abs(node, *[torch.maximum(l[2], u[2]) for l, u in zip(lows, ups)])
    if rule.is_exact(node) and b is None:   # copies: each channel and error moves as it is
        return E
    sizes = [_size(l, mx) + _size(u, mx) for l, u in zip(lows, ups)]
    Ls = rule.apply_abs(node, *sizes)
    LM = Ls if b is None else Ls + b.abs()
    B = mx.shape[0]
    ones = [torch.ones((1,) + tuple(s), dtype=dt, device=mx.device) for s in in_shapes]
    L1 = rule.apply_abs(node, *ones)
    MX = (mx.sum(1) + 1).reshape((B,) + (1,) * len(node.shape))
    M1 = sum(s.reshape(B, -1).sum(-1) for s in sizes).reshape(MX.shape)
    # the sizes sum n_in + 1 channels, then |L| sums n of them: low by gamma(n + n_in + 6) at most
    e = coef(n + 4, n + mx.shape[1] + 6, dt) * LM + 2 * floor(dt, 1, (L1 + 2 * n + 2) * MX, M1)
    # the function's own error against the IR's map (rounding.model_coef), on |L| sizes + |bias terms|
    bm = rule.bias_magnitude(node, mx, in_shapes)
    M = Ls if bm is None else Ls + bm
    e = e + model_coef(graph.float_model, n, n + mx.shape[1] + 6, dt) * M + model_floor(graph.float_model, n)
    return accumulate(E + 2 * coef(n + 2, n + 2, dt) * E, e)


def _scale(same: Linear, other: Linear, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """w * g + b where g is bounded by `same` on the side w >= 0 and by `other` where w < 0
    (monotone activations have w >= 0, so `other` only matters for generality)."""
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    c = same[0] * wp.unsqueeze(1) + other[0] * wn.unsqueeze(1)
    return c, same[1] * wp + other[1] * wn + b


def _activation_error(low: Linear, up: Linear, planes, mx: Tensor) -> Tensor:
    """err of the planes applied to the input functions (both sides): the input error scaled by
    the slope, plus the rounding of the products w * c, their sum and + b: gamma(3) of
    |w| size + |b|; subnormals: tiny (|w| + |c_i| + 2) per channel, weighted by m."""
    lw, lb, uw, ub = planes
    W, Bb = torch.maximum(lw.abs(), uw.abs()), torch.maximum(lb.abs(), ub.abs())
    size = _size(low, mx) + _size(up, mx)
    MX = (mx.sum(1) + 1).reshape((mx.shape[0],) + (1,) * (W.dim() - 1))
    e = coef(3, mx.shape[1] + 5, W.dtype) * (W * size + Bb) + 2 * floor(W.dtype, 1, (W + 2) * MX, size)
    return accumulate(W * torch.maximum(low[2], up[2]), e)


def forward_bounds(graph: Graph, lo: Tensor, hi: Tensor,
                   fixed: Mapping[str, tuple[Tensor, Tensor]] | None = None,
                   known: Mapping[str, tuple[Tensor, Tensor]] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Rigorous bounds on the input of every activation, pre[act_name] = (lo, hi) (B, *shape)
    (NaN comes out as -inf / +inf).

    lo, hi: (B, *input_shape).  fixed: bounds to intersect activation inputs with (split
    decisions, or a parent domain's bounds), keyed by activation name.  known: interval bounds
    of values (e.g. IBP), keyed by value name, also intersected.
    """
    B = lo.shape[0]
    n = lo[0].numel()
    eye = torch.eye(n, dtype=lo.dtype, device=lo.device).reshape((1, n) + tuple(graph.input_shape)).expand(
        (B, n) + tuple(graph.input_shape))
    zero = torch.zeros_like(lo)
    low: dict[str, Linear] = {graph.input_name: (eye, zero, zero)}
    up: dict[str, Linear] = {graph.input_name: (eye, zero, zero)}
    flat_lo, flat_hi = lo.reshape(B, -1), hi.reshape(B, -1)
    mx = magnitude(flat_lo, flat_hi)
    pre: dict[str, tuple[Tensor, Tensor]] = {}
    for node in graph.nodes:
        rule = RULES[node.op]
        if rule.linear:
            in_shapes = [graph.shape_of(i) for i in node.inputs]
            b = rule.bias(node, lo, in_shapes)
            lows, ups = [low[i] for i in node.inputs], [up[i] for i in node.inputs]
            lp, ln = _linear_map(rule, node, lows, True), _linear_map(rule, node, ups, False)
            upp, upn = _linear_map(rule, node, ups, True), _linear_map(rule, node, lows, False)
            lc, lk = lp[0] + ln[0], lp[1] + ln[1]
            uc, uk = upp[0] + upn[0], upp[1] + upn[1]
            if b is not None:
                lk, uk = lk + b, uk + b
            err = _linear_error(graph, node, rule, lows, ups, mx, b)
            low[node.name], up[node.name] = (lc, lk, err), (uc, uk, err)
            continue
        x = node.inputs[0]
        plo = _concretise(low[x], flat_lo, flat_hi, upper_side=False)
        phi = _concretise(up[x], flat_lo, flat_hi, upper_side=True)
        if known is not None and x in known:
            plo, phi = torch.maximum(plo, known[x][0]), torch.minimum(phi, known[x][1])
        if fixed is not None and node.name in fixed:
            plo, phi = torch.maximum(plo, fixed[node.name][0]), torch.minimum(phi, fixed[node.name][1])
        pre[node.name] = plo, phi = clean_bounds(plo, phi)
        # (a multi_planes rule's relax is planes in its first input alone: flat ones, always valid)
        side = side_boxes(graph, node, pre)
        planes = model_planes(graph.float_model, rule, node, rule.relax(node, plo, phi, *side), (plo, phi), *side)
        lw, lb, uw, ub = planes
        err = _activation_error(low[x], up[x], planes, mx)
        low[node.name] = _scale(low[x], up[x], lw, lb) + (err,)
        up[node.name] = _scale(up[x], low[x], uw, ub) + (err,)
    return pre
