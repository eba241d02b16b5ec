"""Back-substitution of linear bounds (CROWN / DeepPoly) through the IR as a DAG.

A linear objective sum(C * v) on a value v is pushed backwards node by node: affine nodes
transpose their map exactly, activations replace themselves by a relaxation plane (the lower
plane where the coefficient is positive, the upper one where it is negative), and at the input
the remaining linear function is minimised over the box in closed form.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from ..ir import Graph, Node
from ..ops import RULES
from .interval import Bounds, interval_bounds


@dataclass(frozen=True)
class Relaxation:
    """What the backward pass needs beyond the graph: bounds on the input of every activation
    (pre[name_of_activation_node] = (lo, hi), (B, *shape)), optional optimisable lower slopes
    (slopes[name]: (B, q, *shape), already clamped to their valid range), and for branch and
    bound the split decisions (signs[name]: (B, *shape) in {-1, 0, +1}: input <= 0, free,
    input >= 0) with their multipliers (betas[name]: (B, q, *shape), >= 0).  On a domain where
    every decision holds, s * input >= 0, so f >= f - beta * s * input for any beta >= 0: adding
    that term to the objective keeps the bound sound and lets the optimiser make the decisions
    bite on the earlier layers too (beta-CROWN)."""

    pre: Mapping[str, tuple[Tensor, Tensor]]
    slopes: Mapping[str, Tensor] | None = None
    signs: Mapping[str, Tensor] | None = None
    betas: Mapping[str, Tensor] | None = None


def ancestors(graph: Graph, start: str) -> list[Node]:
    need = {start}
    out = []
    for n in reversed(graph.nodes):
        if n.name in need:
            out.append(n)
            need.update(n.inputs)
    return out  # reverse topological order, start first


def backward_lower(graph: Graph, lo: Tensor, hi: Tensor, start: str, C: Tensor,
                   relax: Relaxation, record: dict | None = None) -> Tensor:
    """Lower bounds of sum(C[b, j] * v[b]) over inputs in [lo, hi], v = value `start`.

    lo, hi: (B, *input_shape); C: (B, q, *shape_of(start)).  Returns (B, q).
    record: if given, receives the coefficients reaching every activation's output
    (record[act_name]: (B, q, *shape)) and the input (record[graph.input_name]).
    """
    B, q = C.shape[:2]
    A: dict[str, Tensor] = {start: C}
    const = C.new_zeros(B, q)
    for node in ancestors(graph, start):
        a = A.pop(node.name, None)
        if a is None:
            continue
        rule = RULES[node.op]
        in_shapes = [graph.shape_of(i) for i in node.inputs]
        if rule.linear:
            b = rule.bias(node, a, in_shapes)
            if b is not None:
                const = const + (a * b).flatten(2).sum(-1)
            flat = a.reshape((B * q,) + node.shape)
            for name, s, g in zip(node.inputs, in_shapes, rule.apply_t(node, flat, in_shapes)):
                g = g.reshape((B, q) + tuple(s))
                A[name] = A[name] + g if name in A else g
        else:
            if record is not None:
                record[node.name] = a
            plo, phi = relax.pre[node.name]
            lw, lb, uw, ub = rule.relax(node, plo, phi)
            lw, lb, uw, ub = (t.unsqueeze(1) for t in (lw, lb, uw, ub))
            if relax.slopes is not None and node.name in relax.slopes:
                lw, lb = rule.lower_with_slope(node, plo.unsqueeze(1), phi.unsqueeze(1), relax.slopes[node.name])
            up = a < 0  # a negative coefficient takes the upper plane, a positive one the lower
            const = const + (a * torch.where(up, ub, lb)).flatten(2).sum(-1)
            g = a * torch.where(up, uw, lw)
            if relax.betas is not None and node.name in relax.betas:
                g = g - relax.betas[node.name] * relax.signs[node.name].unsqueeze(1).to(g.dtype)
            name = node.inputs[0]
            A[name] = A[name] + g if name in A else g
    a = A.pop(graph.input_name, None)
    if a is None:
        return const
    if record is not None:
        record[graph.input_name] = a
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    x_lo, x_hi = lo.unsqueeze(1), hi.unsqueeze(1)
    return const + (pos * x_lo + neg * x_hi).flatten(2).sum(-1)


CHUNK_ELEMS = 40_000_000  # elements of the coefficient tensors back-substituted at once (memory)


def activation_inputs(graph: Graph) -> list[Node]:
    """Activation nodes in topological order (the nodes whose input bounds CROWN needs)."""
    return [n for n in graph.nodes if not RULES[n.op].linear]


def bounds_of_value(graph: Graph, lo: Tensor, hi: Tensor, value: str, prior: tuple[Tensor, Tensor],
                     relax: Relaxation, budget_elems: int, deadline=None) -> tuple[Tensor, Tensor]:
    """CROWN bounds of the elements of `value` whose prior interval straddles 0; the others keep
    their prior bounds.  Each domain b gets objective rows only for its own unstable elements
    (padded to the batch's largest count U), so small, mostly stable domains cost little."""
    plo, phi = prior
    B = plo.shape[0]
    order, live = unstable_order(plo, phi)
    U = order.shape[1]
    if U == 0:
        return plo, phi
    per_row = max(1, graph.input_size + max(nd.size for nd in graph.nodes))
    chunk = max(1, budget_elems // (2 * B * per_row))
    new_lo, new_hi = plo.reshape(B, -1).clone(), phi.reshape(B, -1).clone()
    for start in range(0, U, chunk):
        if deadline is not None:
            deadline.check()
        idx, ok = order[:, start:start + chunk], live[:, start:start + chunk]
        lb = backward_lower(graph, lo, hi, value, bound_rows(idx, ok, plo), relax)
        tighten(new_lo, new_hi, idx, ok, lb)
    return new_lo.reshape(plo.shape), new_hi.reshape(phi.shape)


def unstable_order(plo: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
    """Per domain, the flat indices of the elements whose interval straddles 0, first, padded to
    the batch's largest count U: (order (B, U), live (B, U) bool, False on padding)."""
    B = plo.shape[0]
    mask = (plo.reshape(B, -1) < 0) & (phi.reshape(B, -1) > 0)
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
                       budget_elems: int = CHUNK_ELEMS, deadline=None, first: int = 0
                       ) -> dict[str, tuple[Tensor, Tensor]]:
    """Bounds on the input of every activation, by back-substitution layer after layer.

    Returns pre[act_name] = (lo, hi) of the activation's input, (B, *shape).  fixed: bounds to
    intersect with (e.g. split decisions clamping a neuron's input to >= 0 or <= 0), keyed by
    activation name; they are applied before later layers use them.  first: the activations
    before this index (topological order) take their bounds from `fixed` as they are (bounds
    already computed, valid on these boxes); the back-substitution starts at it.  deadline:
    checked between back-substitution chunks (raises OutOfTime).
    """
    acts = activation_inputs(graph)
    pre: dict[str, tuple[Tensor, Tensor]] = {a.name: fixed[a.name] for a in acts[:first]}
    known: dict[str, tuple[Tensor, Tensor]] = {a.inputs[0]: fixed[a.name] for a in acts[:first]}
    if ibp is None:
        ibp = interval_bounds(graph, lo, hi, known or None)
    last = None
    for act in acts[first:]:
        if last is not None:  # re-run the cheap interval pass so that later priors use the tighter bounds
            ibp = interval_bounds(graph, lo, hi, known, reuse=ibp, changed=frozenset([last]), upto=act.inputs[0])
        prior = ibp[act.inputs[0]]
        if fixed is not None and act.name in fixed:
            prior = (torch.maximum(prior[0], fixed[act.name][0]), torch.minimum(prior[1], fixed[act.name][1]))
        plo, phi = bounds_of_value(graph, lo, hi, act.inputs[0], prior, Relaxation(pre), budget_elems, deadline)
        if fixed is not None and act.name in fixed:
            plo, phi = torch.maximum(plo, fixed[act.name][0]), torch.minimum(phi, fixed[act.name][1])
        pre[act.name] = (plo, phi)
        known[act.inputs[0]] = (plo, phi)
        last = act.inputs[0]
    return pre


def crown_output(graph: Graph, lo: Tensor, hi: Tensor, C: Tensor, pre: Mapping[str, tuple[Tensor, Tensor]],
                 slopes: Mapping[str, Tensor] | None = None, record: dict | None = None,
                 signs: Mapping[str, Tensor] | None = None, betas: Mapping[str, Tensor] | None = None) -> Tensor:
    """Lower bounds of C @ y (C: (B, q, n_out)) given activation input bounds pre.  (B, q)."""
    B, q = C.shape[:2]
    C = C.reshape((B, q) + graph.output_shape)
    return backward_lower(graph, lo, hi, graph.output_name, C, Relaxation(pre, slopes, signs, betas), record)
