"""alpha-CROWN: the lower relaxation slopes of every activation become parameters, one per
(subproblem, output row, neuron), optimised with Adam to raise the final lower bound.  Every
slope inside its valid range gives a sound bound, so the bound is sound whatever the optimiser
does; we keep the best bound seen per row."""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

from ..budget import Deadline
from ..config import AlphaConfig
from ..ir import Graph
from ..ops import RULES
from .interval import interval_bounds
from .backward import (CHUNK_ELEMS, Relaxation, activation_inputs, ancestors, backward_lower, bound_rows, bounds_of_value,
                       crown_output, magnitudes, tighten, unstable_order)
from .rounding import lower


class Adam:
    """Plain Adam on a list of tensors (torch.optim would import torch._dynamo: +1.8 s start-up)."""

    def __init__(self, params: list[Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            mhat = m / (1 - b1 ** self.t)
            vhat = v / (1 - b2 ** self.t)
            p.sub_(self.lr * mhat / (vhat.sqrt() + self.eps))
            p.grad = None


def alpha_lower(graph: Graph, lo: Tensor, hi: Tensor, C: Tensor, d: Tensor,
                pre: Mapping[str, tuple[Tensor, Tensor]], cfg: AlphaConfig, deadline: Deadline,
                done: Callable[[Tensor], bool], signs: Mapping[str, Tensor] | None = None,
                start: str | None = None, warm: Mapping[str, Mapping[str, Tensor]] | None = None,
                keep: dict | None = None, points: Mapping[str, Tensor] | None = None,
                ball=None) -> Tensor:
    """Best lower bounds of C @ y + d found, (B, q).  Stops early once done(best) (the caller's
    refutation test) holds or the deadline passes.  signs: branch-and-bound split decisions
    (name -> (B, *shape) in {-1, 0, 1}: input below or above its split point, points[name], 0
    where not given); their beta multipliers are optimised with the slopes.
    start: bound the value of that name instead of the output (C: (B, q, *its shape)); pre then
    needs only the activations before it.  warm: {"slopes": ..., "betas": ...} to start from
    (a parent domain's, (B, q, *shape) each; any value is sound: slopes are clamped to their
    range and betas to >= 0).  keep: receives the last slopes and betas in the same form.
    ball: the inputs also lie in this L2 ball (bounds/ball.py)."""
    q = C.shape[1]
    with torch.no_grad():  # the magnitudes for the rounding error depend on pre only: once for all iterations
        mags = magnitudes(graph, lo, hi, pre, upto=start)
    planes: dict = {}   # the rules' planes on pre: the same in every iteration
    if start is None:
        bound = lambda *a, **k: crown_output(graph, lo, hi, C, *a, mags=mags, points=points, planes=planes,
                                             ball=ball, **k)
    else:
        bound = lambda p, slopes=None, signs=None, betas=None: backward_lower(
            graph, lo, hi, start, C, Relaxation(p, slopes, signs, betas, mags, points, planes), ball=ball)
    params: dict = {}
    ranges: dict = {}
    for node in graph.nodes:
        rule = RULES[node.op]
        if rule.linear or node.name not in pre:
            continue
        plo, phi = pre[node.name]
        # the lower plane's parameter under the node's name, the upper one's under (name, "upper")
        for key, rng, upper in ((node.name, rule.lower_slope_range(node, plo, phi), False),
                                ((node.name, "upper"), rule.upper_slope_range(node, plo, phi), True)):
            if rng is None:
                continue
            if warm is not None and key in warm.get("slopes", {}):
                start_at = warm["slopes"][key].to(lo.dtype).clone()
            else:
                init = rule.slope_start(node, plo, phi, upper)
                start_at = init.unsqueeze(1).expand((-1, q) + init.shape[1:]).clone()
            params[key] = start_at.requires_grad_(True)
            ranges[key] = (rng[0].unsqueeze(1), rng[1].unsqueeze(1))
    betas: dict[str, Tensor] = {}
    for name, sg in (signs or {}).items():
        if bool((sg != 0).any()):
            if warm is not None and name in warm.get("betas", {}):
                betas[name] = warm["betas"][name].to(lo.dtype).clone().requires_grad_(True)
            else:
                betas[name] = torch.zeros((sg.shape[0], q) + tuple(sg.shape[1:]), dtype=lo.dtype,
                                          device=lo.device, requires_grad=True)
    clamp = lambda: ({k: torch.minimum(torch.maximum(v, ranges[k][0]), ranges[k][1]) for k, v in params.items()},
                     {k: v.clamp(min=0) for k, v in betas.items()})
    with torch.no_grad():
        best = lower(bound(pre) + d)  # + d rounds once more
        if warm is not None and (params or betas):
            sl, bt = clamp()
            best = torch.maximum(best, lower(bound(pre, sl, signs=signs, betas=bt or None) + d))
    if keep is not None:
        keep["slopes"], keep["betas"] = {k: v.detach() for k, v in params.items()}, {k: v.detach() for k, v in betas.items()}
    if not params and not betas:
        return best
    opt = Adam(list(params.values()) + list(betas.values()), lr=cfg.lr)
    for _ in range(cfg.iterations):
        if deadline.expired() or done(best):
            break
        with torch.enable_grad():
            slopes, bt = clamp()
            lb = lower(bound(pre, slopes, signs=signs, betas=bt or None) + d)
            if not lb.requires_grad:  # no parameter reaches these rows
                break
            (-lb.sum()).backward()
        opt.step()
        with torch.no_grad():
            best = torch.maximum(best, lb.detach())
    if keep is not None:
        with torch.no_grad():
            keep["slopes"], keep["betas"] = clamp()
    return best.detach()


def alpha_intermediate(graph: Graph, lo: Tensor, hi: Tensor, pre: Mapping[str, tuple[Tensor, Tensor]],
                       cfg: AlphaConfig, deadline: Deadline, budget_elems: int = 2_000_000
                       ) -> dict[str, tuple[Tensor, Tensor]]:
    """Tighter activation input bounds: layer after layer, the lower and upper bounds of each
    still unstable neuron get their own optimised slopes for the layers before it (the bounds
    of later layers then start from the tighter ones).  Layers whose rows would need more than
    budget_elems slope parameters get CROWN's bounds again, computed on the tighter earlier ones.
    Every bound is intersected with the given one, so the result is never looser."""
    out = dict(pre)
    known: dict[str, tuple[Tensor, Tensor]] = {}
    ibp, last = None, None
    for act in activation_inputs(graph):
        upstream = {n.name for n in ancestors(graph, act.inputs[0])}
        earlier = [a.name for a in activation_inputs(graph) if a.name in upstream]
        # the interval pass through the earlier layers' tighter bounds can settle some neurons
        with torch.no_grad():
            ibp = interval_bounds(graph, lo, hi, known, reuse=ibp, changed=frozenset([last] if last else []),
                                  upto=act.inputs[0])
        ilo, ihi = ibp[act.inputs[0]]
        plo, phi = torch.maximum(out[act.name][0], ilo), torch.minimum(out[act.name][1], ihi)
        out[act.name] = known[act.inputs[0]] = (plo, phi)
        last = act.inputs[0]
        B = plo.shape[0]
        order, live = unstable_order(plo, phi, RULES[act.op].loose(act, plo, phi))
        U = order.shape[1]
        params = 2 * U * B * sum(graph.by_name[e].size for e in earlier)
        if not U or not earlier or deadline.expired():
            continue
        if params <= budget_elems:
            C = bound_rows(order, live, plo)
            lb = alpha_lower(graph, lo, hi, C, C.new_zeros(B, 2 * U), {e: out[e] for e in earlier}, cfg,
                             deadline, lambda b: False, start=act.inputs[0])
            new_lo, new_hi = plo.reshape(B, -1).clone(), phi.reshape(B, -1).clone()
            tighten(new_lo, new_hi, order, live, lb)
            out[act.name] = known[act.inputs[0]] = (new_lo.reshape(plo.shape), new_hi.reshape(phi.shape))
        else:  # too many slopes: CROWN again, on the earlier layers' tighter bounds
            with torch.no_grad():
                out[act.name] = known[act.inputs[0]] = bounds_of_value(
                    graph, lo, hi, act.inputs[0], (plo, phi), Relaxation({e: out[e] for e in earlier}),
                    CHUNK_ELEMS, deadline)
    return out
