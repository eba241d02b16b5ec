"""Input-split branch and bound, for networks with few inputs (ACAS Xu has 5).

Domains are sub-boxes of a case.  Each round bounds a batch of domains with CROWN, drops the
refuted ones (and, inside a domain, the conjuncts already refuted), tries the corner that
minimises each open domain's linear bound as a counterexample, and halves the rest along the
input dimension whose coefficient times width is largest.
"""
from __future__ import annotations

import numpy as np
import torch

from ..bounds.backward import crown_intermediate, crown_output
from ..spec import Cases, conjuncts_refuted
from ..verdict import Result, Verdict
from .domains import Progress, cat_cases, lower_bound_minimisers, violations


def _bound(graph, cs: Cases):
    record: dict = {}
    with torch.no_grad():
        pre = crown_intermediate(graph, cs.lo, cs.hi)
        lb = crown_output(graph, cs.lo, cs.hi, cs.C, pre, record=record) + cs.d
    return lb, record[graph.input_name]


def _split(cs: Cases, lb: torch.Tensor, A_in: torch.Tensor) -> Cases:
    """Halve every domain along its most influential dimension."""
    N = len(cs)
    open_rows = (cs.member & cs.valid.unsqueeze(-1)).any(1) & (lb <= 0)
    width = (cs.hi - cs.lo).reshape(N, -1)
    influence = (A_in.abs().reshape(N, A_in.shape[1], -1) * open_rows.unsqueeze(-1)).sum(1)
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
    return cs.with_box(new_lo, new_hi, parent)


def input_split_bab(q, cases: Cases) -> Result:
    """Decide the open cases by input splitting; q is the pipeline's Query."""
    from ..pipeline import try_confirm

    cfg = q.cfg.bab
    stack = [cases]
    total = float(((cases.hi - cases.lo).reshape(len(cases), -1).prod(-1)).sum())
    proved = 0.0
    rounds = 0
    progress = Progress()
    while stack:
        q.deadline.check()
        queue = cat_cases(stack)
        if len(queue) > cfg.max_domains:
            q.stats["bab_domains"] = len(queue)
            return Result(Verdict.UNKNOWN, reason="too many open domains")
        take = min(cfg.batch, len(queue))
        batch = queue.select(np.arange(len(queue) - take, len(queue)))
        stack = [queue.select(np.arange(0, len(queue) - take))] if len(queue) > take else []
        lb, A_in = _bound(q.graph, batch)
        valid = batch.valid & ~conjuncts_refuted(batch, lb, q.tol)
        batch = Cases(batch.lo, batch.hi, batch.C, batch.d, batch.member, valid, batch.case)
        open_ = valid.any(-1)
        vol = (batch.hi - batch.lo).reshape(len(batch), -1).prod(-1)
        proved += float(vol[~open_].sum())
        rounds += 1
        if not bool(open_.any()):
            continue
        idx = open_.nonzero().flatten()
        batch, lb, A_in = batch.select(idx.cpu().numpy()), lb[idx], A_in[idx]
        x = torch.cat([lower_bound_minimisers(batch, lb, A_in), (batch.lo + batch.hi) / 2])
        both = cat_cases([batch, batch])
        found = try_confirm(q, both, x, violations(q.graph, both, x))
        if found is not None:
            q.stats["bab_rounds"] = rounds
            return found
        stack.append(_split(batch, lb, A_in))
        progress.maybe("input BaB: %d open domains, %.4f%% of the volume proved, worst bound %.4g",
                       sum(len(s) for s in stack), 100 * proved / max(total, 1e-300), float(lb.max(-1).values.min()))
    q.stats["bab_rounds"] = rounds
    return Result(Verdict.UNSAT)
