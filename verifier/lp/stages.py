"""The solver stages of the pipeline (--engine sdp, --engine milp): per open case, on the
float64 CPU graph, with a share of the time left.  Every bound they add is certified by our own
code (lp/sdp.py, lp/relax.py); every candidate goes to onnxruntime (confirm.confirm_sat)."""
from __future__ import annotations

import functools
import logging
import time

import numpy as np
import torch

from ..bounds.rounding import lower
from ..confirm import confirm_sat
from ..verdict import Result, Verdict

log = logging.getLogger("verifier")


def metered(name: str):
    """Log, after the stage, its wall time and its solver calls (count, time per call)."""
    def wrap(stage):
        @functools.wraps(stage)
        def run(*args, **kwargs):
            from .highs import calls_since, snapshot

            before, t0 = snapshot(), time.monotonic()
            try:
                return stage(*args, **kwargs)
            finally:
                log.info("%s stage: %.2f s; %s", name, time.monotonic() - t0, calls_since(before))
        return run
    return wrap


def cpu64(q):
    return q.graph if (q.device.type == "cpu" and q.dtype == torch.float64) else q.graph.to("cpu", torch.float64)


def case_inputs(sub, b: int):
    """(lo, hi, input_rows) of case b as float64 numpy: the box, flat, and its rows A x <= c
    (None when it has none)."""
    flat = lambda t: t[b].reshape(-1).detach().cpu().double().numpy()
    rows = None
    if sub.rows is not None:
        G, g = sub.rows[0][b].reshape(len(sub.rows[1][b]), -1).cpu().double().numpy(), sub.rows[1][b].cpu().double().numpy()
        keep = np.isfinite(g)
        rows = (G[keep], -g[keep]) if keep.any() else None
    return flat(sub.lo), flat(sub.hi), rows


def case_pre(pre: dict, b: int) -> dict:
    return {key: (v[0][b:b + 1].cpu().double(), v[1][b:b + 1].cpu().double()) for key, v in pre.items()}


def _seconds(q, t0: float, share: float, left: int) -> float:
    """What the next of `left` pieces of work may take: an even part of the stage's share."""
    return (t0 * share - (t0 - q.deadline.left())) / max(left, 1)


def _budgeted(q, share: float, work: list):
    """Each piece of work with budget(): the seconds it may still take, an even part of what is
    left of the stage's share of the time (asked again as the piece goes on).  Stops once that
    is 0.05 s or less."""
    t0 = q.deadline.left()
    for k, item in enumerate(work):
        budget = lambda k=k: _seconds(q, t0, share, len(work) - k)
        if budget() <= 0.05:
            return
        yield item, budget


@metered("LP")
def stage_lp(q, sub, pre: dict, lb: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, dict]:
    """For the open cases idx: LP-tightened activation input bounds (lp/relax.tighten_pre), the LP
    relaxation's bound on every row (certified from HiGHS's duals), then alpha-CROWN again on the
    tighter bounds.  Returns the improved (lb, pre); a graph the LP cannot encode, or one too
    large for it, returns them unchanged."""
    from ..incomplete import alpha_crown_lower
    from .encode import LPEncodeError
    from .relax import lp_bounds, tighten_pre

    g64 = cpu64(q)
    if sum(n.size for n in g64.nodes) + g64.input_size > q.cfg.lp.max_columns:
        return lb, pre
    lb = lb.clone()
    try:
        for b, budget in _budgeted(q, q.cfg.lp.share, list(idx)):
            lo, hi, rows = case_inputs(sub, b)
            pre_b = tighten_pre(g64, lo, hi, case_pre(pre, b), q.cfg.lp.max_neurons, budget() / 2, rows)
            got = lp_bounds(g64, lo, hi, pre_b, sub.C[b].cpu().double().numpy(), budget(), rows)
            new = lower(torch.as_tensor(got, dtype=torch.float64) + sub.d[b].cpu().double())
            lb[b] = torch.maximum(lb[b], new.to(lb.dtype).to(lb.device))
            pre = with_case_bounds(pre, pre_b, b)
    except LPEncodeError as e:
        log.info("LP: skipped (%s)", e)
        return lb, pre
    q.deadline.check()
    again = alpha_crown_lower(q.graph, sub, pre, q.cfg.alpha_cfg, q.deadline, q.tol, q.memory, lb)
    return torch.maximum(lb, again), pre


def with_case_bounds(pre: dict, part: dict, b: int) -> dict:
    """pre with case b's bounds replaced by part's (batch of one, float64), cast outwards to
    pre's type."""
    def outward(t: torch.Tensor, like: torch.Tensor, direction: int) -> torch.Tensor:
        c = t.to(like.dtype)
        off = (c.double() > t) if direction < 0 else (c.double() < t)
        return torch.where(off, torch.nextafter(c, torch.full_like(c, direction * torch.inf)), c).to(like.device)

    out = {}
    for key, (lo, hi) in pre.items():
        lo, hi = lo.clone(), hi.clone()
        lo[b], hi[b] = outward(part[key][0][0], lo, -1), outward(part[key][1][0], hi, +1)
        out[key] = (lo, hi)
    return out


@metered("SDP")
def stage_sdp(q, sub, pre: dict, lb: torch.Tensor, idx: np.ndarray, share: float = 0.5) -> torch.Tensor:
    """For the open cases idx: the SDP bound (lp/sdp.py) of each open conjunct's most promising row
    (its highest lower bound so far).  Returns the improved lb; graphs the SDP does not cover
    (not a ReLU chain, too large) leave it unchanged."""
    from .sdp import SdpError, sdp_lower

    g64, lb = cpu64(q), lb.clone()
    conj = sub.conj.cpu().numpy()
    work = []
    for b in idx:
        for j in np.flatnonzero(sub.valid[b].cpu().numpy()):
            rows = np.flatnonzero(conj[b] == j)
            if rows.size and not bool((lb[b, rows] > 0).any()):
                work.append((b, int(rows[int(torch.argmax(lb[b, rows]))])))
    try:
        for (b, r), budget in _budgeted(q, share, work):
            lo, hi, rows = case_inputs(sub, b)
            got = sdp_lower(g64, lo, hi, case_pre(pre, b), sub.C[b, r].cpu().double().numpy(), budget(), rows)
            new = lower(torch.tensor(got.bound, dtype=torch.float64) + sub.d[b, r].cpu().double())
            lb[b, r] = torch.maximum(lb[b, r], new.to(lb.dtype).to(lb.device))
    except SdpError as e:
        log.info("SDP: skipped (%s)", e)
    return lb


POINT_SHARE = 0.03       # of the time left, what the LP's candidates may take, and at most
POINT_SECONDS = 3.0      # seconds in all (on oval21's conv nets one LP takes about 1 s: 10 % of the
#                          time cost an unsat instance its proof, for candidates that rarely pay)
POINT_CONJUNCTS = 64     # (case, conjunct) pairs whose LP point is tried, at most
POINT_MAX_COLUMNS = 20_000


@metered("LP points")
def stage_points(q, sub, pre: dict | None) -> Result | None:
    """Counterexample candidates from the LP relaxation (lp/points.py) of each open case's
    conjuncts, given the activation input bounds pre of the cases sub: SAT on the first that
    onnxruntime confirms, else None.  Conjuncts whose rows the bounds already refute are skipped
    by the caller (sub holds the open cases only)."""
    from .encode import LPEncodeError
    from .points import conjunct_points

    if pre is None or q.ref is None:
        return None
    g64 = cpu64(q)
    if sum(n.size for n in g64.nodes) + g64.input_size > POINT_MAX_COLUMNS:
        return None
    valid = sub.valid.cpu().numpy()
    work, total = [], 0
    for b in range(len(sub)):
        if total >= POINT_CONJUNCTS:
            break
        js = np.flatnonzero(valid[b])[:POINT_CONJUNCTS - total]
        if js.size:
            work.append((b, js))
            total += js.size
    t0, tried = q.deadline.left(), 0
    share = min(POINT_SHARE, POINT_SECONDS / max(t0, 1e-9))
    left = lambda: _seconds(q, t0, share, total - tried)
    for b, js in work:
        lo, hi, rows = case_inputs(sub, b)
        case = q.prop.cases[int(sub.case[b])]
        conj, C, d = sub.conj[b].cpu().numpy(), sub.C[b].cpu().double().numpy(), sub.d[b].cpu().double().numpy()
        parts = [(C[conj == j], d[conj == j]) for j in js]
        try:
            for x in conjunct_points(g64, lo, hi, case_pre(pre, b), parts, left, rows):
                tried += 1
                found = _confirmed(q, case, x)
                if found is not None:
                    log.info("LP points: a counterexample (case %d)", int(sub.case[b]))
                    return found
        except LPEncodeError as e:
            log.info("LP points: skipped (%s)", e)
            return None
        if left() <= 0:
            break
    return None


def _confirmed(q, case, x) -> Result | None:
    """SAT when onnxruntime confirms the candidate x (None: no candidate) in the case."""
    hit = None if x is None else confirm_sat(q.ref, case, x)
    return None if hit is None else Result(Verdict.SAT, x=hit.x, y=hit.y)


@metered("MILP")
def stage_milp(q, sub, pre: dict, share: float = 1.0) -> Result:
    """Decide the open cases conjunct by conjunct: HiGHS's MILP proposes a counterexample
    (onnxruntime decides), and our own LP branch and bound (lp/milp.py, every node bound
    certified from duals) proves a conjunct unreachable.  UNSAT when every conjunct of every
    case is proved, SAT on a confirmed counterexample, else UNKNOWN."""
    from .encode import LPEncodeError
    from .milp import MilpError, lp_branch_and_bound, milp_search

    if pre is None:   # interval bounds only so far (--no-crown): the MILP wants CROWN's
        from ..bounds.backward import crown_intermediate

        with torch.no_grad():
            pre = crown_intermediate(q.graph, sub.lo, sub.hi, deadline=q.deadline)
    g64 = cpu64(q)
    conj = sub.conj.cpu().numpy()
    work = [(b, j) for b in range(len(sub)) for j in np.flatnonzero(sub.valid[b].cpu().numpy())]
    proved = 0
    try:
        for (b, j), budget in _budgeted(q, share, work):
            lo, hi, rows = case_inputs(sub, b)
            mask = conj[b] == j
            C, d = sub.C[b].cpu().double().numpy(), sub.d[b].cpu().double().numpy()
            pre_b, case = case_pre(pre, b), q.prop.cases[int(sub.case[b])]
            found = milp_search(g64, lo, hi, pre_b, C, d, mask, budget() / 3, input_rows=rows)
            hit = _confirmed(q, case, found.candidate if found.claims_violation else None)
            if hit is not None:
                return hit
            bnb = lp_branch_and_bound(g64, lo, hi, pre_b, C, d, budget(),
                                      member_rows=mask, input_rows=rows)
            hit = _confirmed(q, case, bnb.candidate if bnb.proved is False else None)
            if hit is not None:
                return hit
            if bnb.proved is not True:
                return Result(Verdict.UNKNOWN, reason=f"MILP stage: case {int(sub.case[b])} open ({bnb.why})")
            proved += 1
    except (MilpError, LPEncodeError) as e:
        return Result(Verdict.UNKNOWN, reason=f"MILP stage: {e}")
    q.stats["milp_proved_conjuncts"] = proved
    if proved == len(work):
        return Result(Verdict.UNSAT)
    return Result(Verdict.UNKNOWN, reason="MILP stage: out of time")
