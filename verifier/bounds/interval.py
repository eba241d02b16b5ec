"""Interval bound propagation (IBP) through the IR."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..ir import Graph
from ..ops import RULES

Bounds = dict[str, tuple[Tensor, Tensor]]


def _outward(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Widen by a few ulps of the magnitude: covers the rounding of one affine layer's sums
    (mid/rad arithmetic loses at most ~n ulps of sum|w||x|; 1e-12 relative in float64)."""
    eps = 64 * torch.finfo(lo.dtype).eps
    m = torch.maximum(lo.abs(), hi.abs())
    return lo - eps * m, hi + eps * m


def interval_bounds(graph: Graph, lo: Tensor, hi: Tensor,
                    known: Mapping[str, tuple[Tensor, Tensor]] | None = None,
                    reuse: Bounds | None = None, changed: frozenset[str] = frozenset(),
                    upto: str | None = None) -> Bounds:
    """Sound elementwise bounds of every value for inputs in [lo, hi].

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
        if rule.linear:
            mids = [(a + b) / 2 for a, b in ins]
            rads = [(b - a) / 2 for a, b in ins]
            mid = rule.evaluate(node, *mids)
            rad = rule.apply_abs(node, *rads)
            l, h = _outward(mid - rad, mid + rad)
        else:
            l, h = rule.interval(node, *ins[0])
        if known is not None and node.name in known:
            kl, kh = known[node.name]
            l, h = torch.maximum(l, kl), torch.minimum(h, kh)
        out[node.name] = (l, h)
        if node.name == upto:
            break
    return out
