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
from .backward import crown_output


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
                done: Callable[[Tensor], bool], signs: Mapping[str, Tensor] | None = None) -> Tensor:
    """Best lower bounds of C @ y + d found, (B, q).  Stops early once done(best) (the caller's
    refutation test) holds or the deadline passes.  signs: branch-and-bound split decisions
    (name -> (B, *shape) in {-1, 0, 1}); their beta multipliers are optimised with the slopes."""
    q = C.shape[1]
    params: dict[str, Tensor] = {}
    ranges: dict[str, tuple[Tensor, Tensor]] = {}
    for node in graph.nodes:
        rule = RULES[node.op]
        if rule.linear or node.name not in pre:
            continue
        plo, phi = pre[node.name]
        rng = rule.lower_slope_range(node, plo, phi)
        if rng is None:
            continue
        init = rule.relax(node, plo, phi)[0]
        params[node.name] = init.unsqueeze(1).expand((-1, q) + init.shape[1:]).clone().requires_grad_(True)
        ranges[node.name] = (rng[0].unsqueeze(1), rng[1].unsqueeze(1))
    betas: dict[str, Tensor] = {}
    for name, sg in (signs or {}).items():
        if bool((sg != 0).any()):
            betas[name] = torch.zeros((sg.shape[0], q) + tuple(sg.shape[1:]), dtype=lo.dtype,
                                      device=lo.device, requires_grad=True)
    with torch.no_grad():
        best = crown_output(graph, lo, hi, C, pre) + d
    if not params and not betas:
        return best
    opt = Adam(list(params.values()) + list(betas.values()), lr=cfg.lr)
    for _ in range(cfg.iterations):
        if deadline.expired() or done(best):
            break
        with torch.enable_grad():
            slopes = {k: torch.minimum(torch.maximum(v, ranges[k][0]), ranges[k][1]) for k, v in params.items()}
            lb = crown_output(graph, lo, hi, C, pre, slopes, signs=signs,
                              betas={k: v.clamp(min=0) for k, v in betas.items()} or None) + d
            (-lb.sum()).backward()
        opt.step()
        with torch.no_grad():
            best = torch.maximum(best, lb.detach())
    return best.detach()
