"""Searching for counterexamples: random sampling, then PGD with restarts, on the IR in torch.

The attack only proposes candidates; confirm.confirm_sat decides.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .budget import Deadline
from .config import AttackConfig
from .evaluate import forward
from .ir import Graph
from .spec import Cases, violation


def _objective(graph: Graph, sp: Cases, x: Tensor) -> Tensor:
    """x: (P, R, *in) -> violation (P, R); <= 0 means a candidate counterexample."""
    P, R = x.shape[:2]
    y = forward(graph, x.reshape((P * R,) + x.shape[2:])).reshape(P, R, -1)
    return violation(sp, y)


def _chunks(P: int, R: int, in_size: int, cfg: AttackConfig) -> int:
    return max(1, min(P, cfg.max_points // max(1, R * max(1, in_size // 64))))


def attack(graph: Graph, sp: Cases, deadline: Deadline, cfg: AttackConfig = AttackConfig(),
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Best point found per subproblem and its violation: ((P, *in), (P,))."""
    P = len(sp)
    in_size = sp.lo[0].numel() if P else 0
    if P:
        samples = max(1, min(cfg.samples, cfg.budget_points // P))
        cfg = replace(cfg, samples=samples, restarts=max(1, min(cfg.restarts, samples)))
    best_x, best_v = sp.lo.clone(), torch.full((P,), float("inf"), dtype=sp.lo.dtype, device=sp.lo.device)
    step = _chunks(P, max(cfg.samples, cfg.restarts), in_size, cfg)
    for s in range(0, P, step):
        if deadline.expired():
            break
        part = sp.select(range(s, min(P, s + step)))
        x, v = _attack_part(graph, part, deadline, cfg, generator)
        best_x[s:s + len(part)], best_v[s:s + len(part)] = x, v
    return best_x, best_v


def _attack_part(graph: Graph, sp: Cases, deadline: Deadline, cfg: AttackConfig,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    lo, hi = sp.lo.unsqueeze(1), sp.hi.unsqueeze(1)
    P = lo.shape[0]
    width = hi - lo
    u = torch.rand((P, cfg.samples) + tuple(lo.shape[2:]), dtype=lo.dtype, device=lo.device, generator=generator)
    pts = torch.cat([(lo + hi) / 2, lo + width * u], dim=1)
    with torch.no_grad():
        v = _objective(graph, sp, pts)
    order = v.argsort(dim=1)[:, :cfg.restarts]
    x = torch.gather(pts, 1, order.reshape(order.shape + (1,) * (pts.dim() - 2)).expand((P, order.shape[1]) + pts.shape[2:]))
    best_x, best_v = pts[torch.arange(P), order[:, 0]], v[torch.arange(P), order[:, 0]]
    for it in range(cfg.steps):
        if deadline.expired() or bool((best_v <= 0).all()):
            break
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            vx = _objective(graph, sp, x)
            (g,) = torch.autograd.grad(vx.sum(), x)
        with torch.no_grad():
            better = vx.min(1)
            improve = better.values < best_v
            best_v = torch.where(improve, better.values, best_v)
            cand = x[torch.arange(P), better.indices]
            best_x = torch.where(improve.reshape((P,) + (1,) * (cand.dim() - 1)), cand, best_x)
            # geometric decay from step_frac to step_frac / 1000 of the width: the first steps
            # cross the box, the last ones settle into thin violating regions
            eta = cfg.step_frac * (1e-3 ** (it / max(1, cfg.steps - 1)))
            x = torch.minimum(torch.maximum(x - eta * width * g.sign(), lo), hi)
    with torch.no_grad():
        vx = _objective(graph, sp, x)
        better = vx.min(1)
        improve = better.values < best_v
        best_v = torch.where(improve, better.values, best_v)
        cand = x[torch.arange(P), better.indices]
        best_x = torch.where(improve.reshape((P,) + (1,) * (cand.dim() - 1)), cand, best_x)
    return best_x.detach(), best_v.detach()
