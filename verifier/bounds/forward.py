"""Forward linear bounds (symbolic intervals): every value gets a lower and an upper linear
function of the network input, carried forward layer by layer.

For an input of n elements each value carries (n + 1) coefficient channels, so the cost grows
with n: for low-dimensional inputs (ACAS Xu: 5) this is far cheaper than back-substituting from
every layer, at a small loss of tightness.  Activations are relaxed with the same planes as in
the backward pass, from the concrete bounds of their input.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..ir import Graph
from ..ops import RULES

# A linear function of the flat input x (n elements): coef (B, n, *shape) and const (B, *shape):
# f(x)[...] = sum_i coef[:, i, ...] * x_i + const[...]
Linear = tuple[Tensor, Tensor]


def _concretise(fn: Linear, lo: Tensor, hi: Tensor, upper: bool) -> Tensor:
    coef, const = fn
    B, n = coef.shape[:2]
    extra = coef.dim() - 2
    xl = lo.reshape((B, n) + (1,) * extra)
    xh = hi.reshape((B, n) + (1,) * extra)
    if upper:
        return (coef.clamp(min=0) * xh + coef.clamp(max=0) * xl).sum(1) + const
    return (coef.clamp(min=0) * xl + coef.clamp(max=0) * xh).sum(1) + const


def _linear_map(rule, node, fns: list[Linear], bias: Tensor | None, pos_part: bool) -> Linear:
    """Apply the positive (pos_part) or negative part of the op's linear map to stacked
    coefficient channels; the constant channel rides along as one more channel."""
    parts = []
    for coef, const in fns:
        B, n = coef.shape[:2]
        parts.append(torch.cat([coef, const.unsqueeze(1)], 1).reshape((B * (n + 1),) + coef.shape[2:]))
    lin = rule.apply(node, *parts)
    ab = rule.apply_abs(node, *parts)
    out = (lin + ab) / 2 if pos_part else (lin - ab) / 2
    B, n = fns[0][0].shape[:2]
    out = out.reshape((B, n + 1) + out.shape[1:])
    return out[:, :n], out[:, n]


def _scale(same: Linear, other: Linear, w: Tensor, b: Tensor) -> Linear:
    """w * g + b where g is bounded by `same` on the side w >= 0 and by `other` where w < 0
    (monotone activations have w >= 0, so `other` only matters for generality)."""
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    coef = same[0] * wp.unsqueeze(1) + other[0] * wn.unsqueeze(1)
    return coef, same[1] * wp + other[1] * wn + b


def forward_bounds(graph: Graph, lo: Tensor, hi: Tensor,
                   fixed: Mapping[str, tuple[Tensor, Tensor]] | None = None,
                   known: Mapping[str, tuple[Tensor, Tensor]] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Bounds on the input of every activation, pre[act_name] = (lo, hi) (B, *shape).

    lo, hi: (B, *input_shape).  fixed: bounds to intersect activation inputs with (split
    decisions, or a parent domain's bounds), keyed by activation name.  known: interval bounds
    of values (e.g. IBP), keyed by value name, also intersected.
    """
    B = lo.shape[0]
    n = lo[0].numel()
    eye = torch.eye(n, dtype=lo.dtype, device=lo.device).reshape((1, n) + tuple(graph.input_shape)).expand(
        (B, n) + tuple(graph.input_shape))
    zero = torch.zeros_like(lo)
    low: dict[str, Linear] = {graph.input_name: (eye, zero)}
    up: dict[str, Linear] = {graph.input_name: (eye, zero)}
    flat_lo, flat_hi = lo.reshape(B, -1), hi.reshape(B, -1)
    pre: dict[str, tuple[Tensor, Tensor]] = {}
    for node in graph.nodes:
        rule = RULES[node.op]
        if rule.linear:
            in_shapes = [graph.shape_of(i) for i in node.inputs]
            b = rule.bias(node, lo, in_shapes)
            lp = _linear_map(rule, node, [low[i] for i in node.inputs], b, True)
            ln = _linear_map(rule, node, [up[i] for i in node.inputs], b, False)
            upp = _linear_map(rule, node, [up[i] for i in node.inputs], b, True)
            upn = _linear_map(rule, node, [low[i] for i in node.inputs], b, False)
            lc, lk = lp[0] + ln[0], lp[1] + ln[1]
            uc, uk = upp[0] + upn[0], upp[1] + upn[1]
            if b is not None:
                lk, uk = lk + b, uk + b
            low[node.name], up[node.name] = (lc, lk), (uc, uk)
            continue
        x = node.inputs[0]
        plo = _concretise(low[x], flat_lo, flat_hi, upper=False)
        phi = _concretise(up[x], flat_lo, flat_hi, upper=True)
        if known is not None and x in known:
            plo, phi = torch.maximum(plo, known[x][0]), torch.minimum(phi, known[x][1])
        if fixed is not None and node.name in fixed:
            plo, phi = torch.maximum(plo, fixed[node.name][0]), torch.minimum(phi, fixed[node.name][1])
        pre[node.name] = (plo, phi)
        lw, lb, uw, ub = rule.relax(node, plo, phi)
        low[node.name] = _scale(low[x], up[x], lw, lb)
        up[node.name] = _scale(up[x], low[x], uw, ub)
    return pre
