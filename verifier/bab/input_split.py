"""Input-split branch and bound, for networks with few inputs (ACAS Xu has 5).

Domains are sub-boxes of a case.  Each round bounds a batch of domains with CROWN (children
start from their parent's intermediate bounds, which stay valid on a sub-box), drops the refuted
ones (and, inside a domain, the conjuncts already refuted), tries the corner that minimises each
open domain's linear bound as a counterexample, and halves the rest along the input dimension
whose coefficient times width is largest.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from ..budget import memory_budget, working_memory
from ..config import AttackConfig
from ..bounds.backward import crown_intermediate
from ..bounds.forward import forward_bounds
from ..incomplete import case_bytes, crown_pair_bytes, intermediate_elems, output_lower
from ..spec import Cases, conjuncts_refuted, infeasible, open_rows
from ..verdict import Result, Verdict
from .clip import clip_boxes
from .domains import (AdaptiveBatch, Progress, cat_bounds, cat_cases, lower_bound_minimisers, nbytes, next_batch,
                      take_bounds, violations, weakest_open_bound)


@dataclass
class Pending:
    """Domains waiting to be bounded, with bounds inherited from their parents (or None)."""

    cs: Cases
    pre: dict[str, tuple[Tensor, Tensor]] | None

    def __len__(self) -> int:
        return len(self.cs)

    def take(self, idx: np.ndarray) -> "Pending":
        return Pending(self.cs.select(idx), take_bounds(self.pre, idx))


def _join(parts: list[Pending]) -> Pending:
    if len(parts) == 1:
        return parts[0]
    return Pending(cat_cases([p.cs for p in parts]), cat_bounds([p.pre for p in parts]))


def _bound(graph, p: Pending, method: str, deadline, memory: int):
    record: dict = {}
    cs = p.cs
    elems = intermediate_elems(memory // 2, cs.d.element_size())   # the other half: the batch's own bounds
    with torch.no_grad():
        if method == "forward":
            pre = forward_bounds(graph, cs.lo, cs.hi, fixed=p.pre)
        elif method == "hybrid":  # cheap forward bounds first: back-substitute only what they leave unstable
            pre = forward_bounds(graph, cs.lo, cs.hi, fixed=p.pre)
            pre = crown_intermediate(graph, cs.lo, cs.hi, fixed=pre, deadline=deadline, budget_elems=elems)
        else:
            pre = crown_intermediate(graph, cs.lo, cs.hi, fixed=p.pre, deadline=deadline, budget_elems=elems)
        lb = output_lower(graph, cs, pre, memory, record)
    return lb, record[graph.input_name], pre


def _batch_cap(graph, cases: Cases, work: int) -> int:
    """Domains bounded at once within work bytes: each holds its rows' input coefficients and
    bounds (the clipping's tensors are a few times those) besides its own interval bounds and
    one row's CROWN pass."""
    Q, item = cases.C.shape[1], cases.d.element_size()
    per_domain = 8 * Q * (graph.input_size + 2) * item + crown_pair_bytes(graph, item) + case_bytes(graph, item)
    return max(1, work // per_domain)


def _split(p: Pending, lb: Tensor, A_in: Tensor) -> Pending:
    """Halve every domain along its most influential dimension."""
    cs = p.cs
    N = len(cs)
    live = open_rows(cs) & (lb <= 0)
    width = (cs.hi - cs.lo).reshape(N, -1)
    influence = (A_in.abs().reshape(N, A_in.shape[1], -1) * live.unsqueeze(-1)).sum(1)
    # the final coefficients miss how a dimension loosens the ReLU relaxations on the way (a
    # dimension with a near-zero final coefficient can still keep many neurons unstable); a floor
    # of a tenth of the mean coefficient keeps any dimension from staying wide for ever
    influence = influence + 0.1 * influence.mean(-1, keepdim=True)
    score = influence * width
    score = torch.where(score.sum(-1, keepdim=True) > 0, score, width)  # no gradient: widest side
    dim = score.argmax(-1)
    rows = torch.arange(N, device=cs.lo.device)
    lo, hi = cs.lo.reshape(N, -1), cs.hi.reshape(N, -1)
    mid = (lo[rows, dim] + hi[rows, dim]) / 2
    lo2, hi1 = lo.clone(), hi.clone()
    hi1[rows, dim] = mid
    lo2[rows, dim] = mid
    new_lo = torch.cat([lo, lo2]).reshape((2 * N,) + cs.lo.shape[1:])
    new_hi = torch.cat([hi1, hi]).reshape((2 * N,) + cs.lo.shape[1:])
    parent = torch.cat([rows, rows])
    return Pending(cs.with_box(new_lo, new_hi, parent), take_bounds(p.pre, parent))


# every few rounds, PGD inside the open domains whose bound is worst: small boxes around the
# places the bounds cannot exclude are where thin violating regions hide
ATTACK_EVERY = 8
ATTACK_DOMAINS = 256
DOMAIN_ATTACK = AttackConfig(samples=8, restarts=2, steps=30, budget_points=16384, search_steps=10,
                             search_seconds=0.25)


def _most_promising(cs: Cases, lb: Tensor, k: int) -> np.ndarray:
    """Indices of the k domains whose weakest open conjunct has the lowest bound."""
    return torch.argsort(weakest_open_bound(cs, lb))[:k].cpu().numpy()


def input_split_bab(q, cases: Cases, pre: dict | None = None) -> Result:
    """Decide the open cases by input splitting; q is the pipeline's Query."""
    from ..pipeline import stage_attack, try_confirm

    cfg = q.cfg.bab
    stack = [Pending(cases, pre)]
    total = float(((cases.hi - cases.lo).reshape(len(cases), -1).prod(-1)).sum())
    proved, rounds, domains = 0.0, 0, 0
    progress = Progress()
    size = AdaptiveBatch(1024, cfg.batch, fast=1.0, slow=4.0)  # big batches amortise; CROWN checks the deadline inside
    budget = memory_budget(cases.lo.device, cfg.memory_mb)
    work = working_memory(budget)
    size.cap = min(size.cap, _batch_cap(q.graph, cases, work))
    size.size = min(size.size, size.cap)
    while stack:
        batch, stack = next_batch(q, stack, size.size, _join)
        if batch is None:
            return Result(Verdict.UNKNOWN, reason="too many open domains")
        if sum(nbytes(part) for part in stack) + nbytes(batch) > budget - work:
            return Result(Verdict.UNKNOWN, reason="the open domains outgrow the memory budget")
        t0 = time.monotonic()
        lb, A_in, pre = _bound(q.graph, batch, cfg.input_split_bounds, q.deadline, work // 2)
        size.update(len(batch), time.monotonic() - t0)
        cs = batch.cs
        valid = cs.valid & ~conjuncts_refuted(cs, lb, q.tol) & ~infeasible(cs).unsqueeze(1)
        vol = (cs.hi - cs.lo).reshape(len(cs), -1).prod(-1)
        lo, hi, valid = clip_boxes(replace(cs, valid=valid), lb, A_in, q.tol)
        cs = replace(cs, lo=lo, hi=hi, valid=valid)
        open_ = valid.any(-1)
        proved += float(vol.sum() - (cs.hi - cs.lo).reshape(len(cs), -1).prod(-1)[open_].sum())
        rounds += 1
        domains += len(cs)
        q.stats.update(bab_rounds=rounds, bab_domains=domains, proved_volume=proved / max(total, 1e-300))
        if not bool(open_.any()):
            continue
        idx = open_.nonzero().flatten().cpu().numpy()
        cs, lb, A_in = cs.select(idx), lb[idx], A_in[idx]
        x = torch.cat([lower_bound_minimisers(cs, lb, A_in), (cs.lo + cs.hi) / 2])
        both = cat_cases([cs, cs])
        found = try_confirm(q, both, x, violations(q.graph, both, x))
        if found is not None:
            q.stats.update(bab_rounds=rounds, bab_domains=domains)
            return found
        if rounds % ATTACK_EVERY == 0:
            # alternately: PGD in the worst domains, and a fresh search over the whole cases
            # (where a thin violating region hides, a new random stream often lands in it)
            if rounds % (2 * ATTACK_EVERY):
                found = stage_attack(q, cs.select(_most_promising(cs, lb, ATTACK_DOMAINS)), DOMAIN_ATTACK,
                                     round_=rounds)
            else:
                found = stage_attack(q, cases, q.cfg.attack, round_=rounds)
            if found is not None:
                q.stats.update(bab_rounds=rounds, bab_domains=domains)
                return found
        stack.append(_split(Pending(cs, take_bounds(pre, idx)), lb, A_in))
        progress.maybe("input BaB: %d open domains, %.4f%% of the volume proved, worst bound %.4g",
                       sum(len(s) for s in stack), 100 * proved / max(total, 1e-300),
                       float(weakest_open_bound(cs, lb).min()))
    q.stats.update(bab_rounds=rounds, bab_domains=domains)
    return Result(Verdict.UNSAT)
