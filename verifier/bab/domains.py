"""Helpers shared by both kinds of branch and bound: candidate checking and progress."""
from __future__ import annotations

import logging
import time

import torch
from torch import Tensor

from ..evaluate import forward
from ..spec import Cases, conjunct_max, open_rows, violation

log = logging.getLogger("verifier")


def cat_cases(parts: list[Cases]) -> Cases:
    import numpy as np

    return Cases(torch.cat([p.lo for p in parts]), torch.cat([p.hi for p in parts]),
                 torch.cat([p.C for p in parts]), torch.cat([p.d for p in parts]),
                 torch.cat([p.conj for p in parts]), torch.cat([p.valid for p in parts]),
                 np.concatenate([p.case for p in parts]),
                 None if any(p.strict is None for p in parts) else torch.cat([p.strict for p in parts]),
                 None if any(p.rows is None for p in parts) else
                 (torch.cat([p.rows[0] for p in parts]), torch.cat([p.rows[1] for p in parts])))


Bounds = dict[str, tuple[Tensor, Tensor]]


def cat_bounds(parts: list[Bounds | None]) -> Bounds | None:
    """Per-activation bounds of several domain batches, stacked; None unless all have some."""
    if any(p is None for p in parts):
        return None
    return {k: (torch.cat([p[k][0] for p in parts]), torch.cat([p[k][1] for p in parts])) for k in parts[0]}


def take_bounds(pre: Bounds | None, idx) -> Bounds | None:
    """The bounds of the domains idx (indices or a mask)."""
    return None if pre is None else {k: (v[0][idx], v[1][idx]) for k, v in pre.items()}


def weakest_open_bound(cs: Cases, lb: Tensor) -> Tensor:
    """Per domain, the lowest over its open conjuncts of the conjunct's best row bound (N,):
    how far the domain is from being refuted (+inf once it is)."""
    return torch.where(cs.valid, conjunct_max(cs, lb), torch.inf).amin(-1)


def nbytes(obj) -> int:
    """Bytes held by the tensors in obj (tensors inside dicts, lists, tuples and dataclasses)."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return sum(nbytes(getattr(obj, f)) for f in obj.__dataclass_fields__)
    return 0


def pop_batch(stack: list, size: int, join):
    """Split off the newest `size` domains of the stack of pending domain batches (depth first),
    joining only the batches they come from.  Domain batches have __len__ and take(indices).
    Returns (queue length, batch, rest of the stack)."""
    import numpy as np

    queued = sum(len(part) for part in stack)
    stack = list(stack)
    taken: list = []
    n = 0
    while stack and n < size:
        part = stack.pop()
        need = size - n
        if len(part) > need:
            stack.append(part.take(np.arange(0, len(part) - need)))
            part = part.take(np.arange(len(part) - need, len(part)))
        taken.append(part)
        n += len(part)
    return queued, join(taken[::-1]), stack


def next_batch(q, stack: list, size: int, join):
    """Each round's start in both searches: the deadline checked (OutOfTime past it), then the
    newest `size` open domains taken off the stack: (batch, rest of the stack), or (None, stack)
    when more than q.cfg.bab.max_domains are open."""
    q.deadline.check()
    queued, batch, rest = pop_batch(stack, size, join)
    return (None, stack) if queued > q.cfg.bab.max_domains else (batch, rest)


def lower_bound_minimisers(cs: Cases, lb: Tensor, A_in: Tensor) -> Tensor:
    """For each domain, the box corner that minimises the linear lower bound of its weakest open
    row: a cheap, often excellent counterexample candidate.  A_in: (N, Q, *in).  (N, *in)."""
    worst = torch.where(open_rows(cs), lb, torch.inf).argmin(-1)
    a = A_in[torch.arange(len(cs), device=A_in.device), worst]
    return torch.where(a > 0, cs.lo, cs.hi)


def violations(graph, cs: Cases, x: Tensor) -> Tensor:
    """Violation of each domain's rows at its own point x (N, *in) -> (N,)."""
    with torch.no_grad():
        y = forward(graph, x).reshape(len(cs), 1, -1)
    return violation(cs, y)[:, 0]


class Progress:
    """Progress lines on stderr, at most one every `every` seconds."""

    def __init__(self, every: float = 2.0):
        self.every = every
        self.last = time.monotonic()

    def maybe(self, fmt: str, *args) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.info(fmt, *args)


class AdaptiveBatch:
    """How many domains to bound per round: doubled while rounds take under `fast` seconds,
    halved when one takes over `slow`, so that rounds stay short and the deadline, checked
    between rounds (and inside CROWN), is honoured within about a second."""

    def __init__(self, start: int, cap: int, fast: float = 0.3, slow: float = 1.0):
        self.size, self.cap, self.fast, self.slow = start, cap, fast, slow

    def update(self, taken: int, seconds: float) -> None:
        if seconds < self.fast and taken >= self.size:
            self.size = min(self.cap, self.size * 2)
        elif seconds > self.slow:
            self.size = max(4, self.size // 2)
