"""Interval bound propagation (IBP) through the IR."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..ir import Graph, Node
from ..ops import RULES
from .rounding import (accumulate, clean_bounds, coef, floor, lower, magnitude, model_coef, model_floor,
                       model_function_error, upper)

Bounds = dict[str, tuple[Tensor, Tensor]]


def _linear_interval(node: Node, rule, ins: list[tuple[Tensor, Tensor]], in_shapes,
                     float_model: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """mid +- rad with mid = L(mid_in) + b and rad = |L|(rad_in), widened by their rounding.

    x in [lo, hi] lies within rad_in + 2u m + 2 tiny of the computed mid_in (m = max(|lo|, |hi|):
    (a + b) / 2 and (b - a) / 2 each round once), and L(mid_in) + b, |L|(rad_in) and the final
    mid -+ rad round by at most gamma(n + 1) of |L| m + |b| each (n terms per sum), so
    gamma(n + 5) (|L| m + |b|) covers everything.  Flushed subnormals add at most
    tiny (|L| 1 + sum m + 2n + 2) per evaluation of L (three, plus the bias and the last step:
    4 floor terms).  The function bounded may differ from the IR's map by the model error
    (rounding.model_coef) of the term magnitudes |L| m + |bias terms|: widened by that too."""
    mids = [(a + b) / 2 for a, b in ins]
    rads = [(b - a) / 2 for a, b in ins]
    mags = [magnitude(a, b) for a, b in ins]
    mid = rule.evaluate(node, *mids)
    rad = rule.apply_abs(node, *rads)
    Lm = rule.apply_abs(node, *mags)
    b = rule.bias(node, mid, in_shapes)
    bm = rule.bias_magnitude(node, mid, in_shapes)
    M = Lm if bm is None else Lm + bm
    if b is not None:
        Lm = Lm + b.abs()
    n = rule.sum_terms(node, in_shapes)
    ones = [torch.ones((1,) + tuple(s), dtype=mid.dtype, device=mid.device) for s in in_shapes]
    L1 = rule.apply_abs(node, *ones)
    B = mid.shape[0]
    m1 = sum(m.reshape(B, -1).sum(-1) for m in mags).reshape((B,) + (1,) * (mid.dim() - 1))
    err = coef(n + 5, n + 2, mid.dtype) * Lm + 4 * floor(mid.dtype, 2 * n + 2, L1, m1)
    err = accumulate(err, model_coef(float_model, n, n + 2, mid.dtype) * M + model_floor(float_model, n))
    return lower(mid - rad, err), upper(mid + rad, err)


def interval_bounds(graph: Graph, lo: Tensor, hi: Tensor,
                    known: Mapping[str, tuple[Tensor, Tensor]] | None = None,
                    reuse: Bounds | None = None, changed: frozenset[str] = frozenset(),
                    upto: str | None = None) -> Bounds:
    """Sound elementwise bounds of every value for inputs in [lo, hi], rounding included; a
    NaN bound comes out as -inf / +inf.

    lo, hi: (B, *graph.input_shape).  known: tighter bounds already proved for some values
    (B, *shape); they are intersected with the interval result.  Returns {name: (lo, hi)}.
    reuse: an earlier result for the same boxes; only the values in `changed` (whose known
    bounds are new) and those downstream of them are recomputed.  upto: stop once that value is
    computed (later values are left out).
    """
    out: Bounds = {graph.input_name: (lo, hi)}
    dirty = set(changed)
    for node in graph.nodes:
        if reuse is not None and node.name in reuse and node.name not in dirty \
                and not any(i in dirty for i in node.inputs):
            out[node.name] = reuse[node.name]
            if node.name == upto:
                break
            continue
        dirty.add(node.name)
        rule = RULES[node.op]
        ins = [out[i] for i in node.inputs]
        if rule.linear and rule.is_exact(node):   # copies: each bound moves as it is
            l, h = rule.evaluate(node, *[b[0] for b in ins]), rule.evaluate(node, *[b[1] for b in ins])
        elif rule.linear:
            l, h = _linear_interval(node, rule, ins, [graph.shape_of(i) for i in node.inputs], graph.float_model)
        else:
            l, h = rule.interval(node, *ins[0], *ins[1:])
            if graph.float_model is not None:
                e = model_function_error(graph.float_model, rule, node, *ins)
                l, h = lower(l, e), upper(h, e)
        if known is not None and node.name in known:
            kl, kh = known[node.name]
            l, h = torch.maximum(l, kl), torch.minimum(h, kh)
        out[node.name] = clean_bounds(l, h)
        if node.name == upto:
            break
    return out
