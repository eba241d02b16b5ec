"""The empirical baseline: PGD on the margin in the clipped L-inf or L2 ball, every find
confirmed by onnxruntime (the label changes) and by an exact membership test of the ball.

What the attack cannot break is an upper bound on robust accuracy, not a certificate; the report
shows it beside the certified figures so the gap between them is visible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..evaluate import forward
from .queries import in_ball


@dataclass(frozen=True)
class AttackConfig:
    steps: int = 50
    restarts: int = 8
    seed: int = 0


def predicted(logits: np.ndarray) -> int:
    """The label of a logit vector: argmax, the first index winning ties (numpy's rule)."""
    return int(np.argmax(np.asarray(logits).reshape(-1)))


def _margin(graph, x: torch.Tensor, label: int) -> torch.Tensor:
    """(B,) max over j != label of f_j - f_label: positive where the label changes."""
    y = forward(graph, x.reshape((len(x),) + tuple(graph.input_shape))).reshape(len(x), -1)
    others = torch.cat([y[:, :label], y[:, label + 1:]], dim=1)
    return others.max(dim=1).values - y[:, label]


def _project(x: torch.Tensor, x0: torch.Tensor, eps: float, norm: str, lo, hi) -> torch.Tensor:
    d = x - x0
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = d.norm(dim=1, keepdim=True).clamp_min(1e-30)
        d = d * torch.clamp(eps / n, max=1.0)
    x = x0 + d
    # clipping to the valid range only moves an element towards x0's (inside it): still in the ball
    return x if lo is None else torch.minimum(torch.maximum(x, lo), hi)


def _start(x0: torch.Tensor, eps: float, norm: str, k: int, gen: torch.Generator) -> torch.Tensor:
    """x0 and k - 1 random points of the ball (B, n)."""
    n = x0.shape[-1]
    if norm == "linf":
        d = (torch.rand(k, n, generator=gen, dtype=x0.dtype) * 2 - 1) * eps
    else:
        d = torch.randn(k, n, generator=gen, dtype=x0.dtype)
        d = d / d.norm(dim=1, keepdim=True) * eps * torch.rand(k, 1, generator=gen, dtype=x0.dtype)
    d[0] = 0
    return x0 + d


def pgd(graph32, x0: np.ndarray, label: int, eps: float, norm: str, input_range, cfg: AttackConfig
        ) -> np.ndarray | None:
    """Candidates for a label change in the ball, best first ((k, n) float32), or None."""
    x0t = torch.as_tensor(np.asarray(x0, dtype=np.float32).reshape(1, -1))
    lo = hi = None
    if input_range is not None:
        lo, hi = (torch.full_like(x0t, float(v)) for v in input_range)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = _project(_start(x0t, eps, norm, cfg.restarts, gen), x0t, eps, norm, lo, hi)
    for t in range(cfg.steps):
        x = x.detach().requires_grad_(True)
        m = _margin(graph32, x, label)
        if bool((m > 0).any()):
            break
        (g,) = torch.autograd.grad(m.sum(), x)
        step = eps * (0.5 * (1 - t / cfg.steps) + 0.02)
        if norm == "linf":
            x = x + step * g.sign()
        else:
            x = x + step * g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
        x = _project(x.detach(), x0t, eps, norm, lo, hi)
    with torch.no_grad():
        m = _margin(graph32, x, label)
    order = torch.argsort(m, descending=True)
    return x[order].detach().numpy()


def confirmed(ref, candidates: np.ndarray | None, x0: np.ndarray, label: int, eps: str, norm: str,
              input_range) -> np.ndarray | None:
    """The first candidate onnxruntime gives another label that lies in the ball exactly."""
    if candidates is None:
        return None
    x0 = np.asarray(x0).reshape(-1)
    for x in candidates[:4]:
        x = x.astype(ref.input_dtype)
        if not in_ball(x, x0, eps, norm, input_range):
            # float rounding may leave the ball by an ulp: pull the point a hair towards x0
            x = (x0 + (x.astype(np.float64) - x0) * (1 - 1e-6)).astype(ref.input_dtype)
            if not in_ball(x, x0, eps, norm, input_range):
                continue
        if predicted(ref.run(x)) != label:
            return x
    return None


def attack_sample(graph32, ref, x0: np.ndarray, label: int, eps: list[str], norm: str, input_range,
                  cfg: AttackConfig) -> dict[str, str]:
    """Per radius: "falsified" (a confirmed counterexample) or "survived" (none found)."""
    status: dict[str, str] = {}
    found: np.ndarray | None = None
    for e in sorted(eps, key=float):
        if found is None:
            found = confirmed(ref, pgd(graph32, x0, label, float(e), norm, input_range, cfg),
                              x0, label, e, norm, input_range)
        status[e] = "falsified" if found is not None else "survived"
    return status
