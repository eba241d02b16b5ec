"""The decision, as a story: attack -> IBP -> CROWN -> alpha-CROWN -> branch and bound.

Each stage sees only the cases still open and may end the query: a confirmed counterexample
ends it with sat, and the query is unsat once every case is refuted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vnnlib.property import Property

from .attack import AttackConfig, attack
from .bab.domains import cat_cases, take_bounds, weakest_open_bound
from .bounds.alpha import alpha_intermediate
from .budget import Deadline, OutOfTime, memory_budget, working_memory
from .config import VerifyConfig
from .confirm import ReferenceModel, confirm_sat
from .incomplete import alpha_crown_lower, crown_lower, ibp_lower
from .ir import Graph
from .spec import Cases, bound_tolerance, build_cases, refuted
from .verdict import Result, Verdict

log = logging.getLogger("verifier")

MAX_CONFIRM = 32  # candidates re-run through onnxruntime per attack round
# before any bound: a few samples and a short PGD per case (cheap even with 10^4 cases); the
# full attack runs on the cases the bounds leave open
QUICK_ATTACK = AttackConfig(samples=16, restarts=2, steps=10, budget_points=20_000, search_steps=20,
                            search_seconds=0.25)
# IBP and CROWN run before the quick attack where they cost less than it: inputs small enough
# for its gradient-free search (a fifth of a second), and a network whose CROWN pass is cheap
# (tensor parameters times values computed, CROWN's work: 8e6 for an ACAS Xu network, 30 ms)
BOUNDS_FIRST_WORK = 5e7


def bounds_first(graph: Graph, cfg: AttackConfig) -> bool:
    params = sum(v.numel() for n in graph.nodes for v in n.params.values() if isinstance(v, torch.Tensor))
    return graph.input_size <= cfg.search_max_dim and params * sum(n.size for n in graph.nodes) <= BOUNDS_FIRST_WORK


@dataclass
class Query:
    graph: Graph
    prop: Property
    ref: ReferenceModel | None
    cfg: VerifyConfig
    deadline: Deadline
    device: torch.device
    dtype: torch.dtype
    stats: dict = field(default_factory=dict)
    _fast: Graph | None = None

    @property
    def fast_graph(self) -> Graph:
        """The graph in float32, for the attack: it only proposes candidates, which
        onnxruntime then checks, so float64 buys nothing there and costs 2x."""
        if self._fast is None:
            self._fast = self.graph.to(self.device, torch.float32)
        return self._fast

    @property
    def tol(self) -> float:
        return bound_tolerance(self.dtype)

    @property
    def memory(self) -> int:
        """Bytes one pass (a bound, an attack step) may use: a share of the query's budget."""
        return working_memory(memory_budget(self.device, self.cfg.bab.memory_mb))


def within_memory(stage):
    """A query that does not fit the memory budget (--memory-mb), even in chunks, or that the
    machine cannot hold, is answered unknown, with the reason on stderr."""
    import functools

    @functools.wraps(stage)
    def run(q: Query, *args) -> Result:
        try:
            return stage(q, *args)
        except MemoryError as e:
            why = f"out of memory: {e or 'the machine could not allocate what the query needs'}"
            log.warning("%s: unknown", why)
            return Result(Verdict.UNKNOWN, reason=why)
    return run


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def numeric_setup(device: torch.device) -> torch.dtype:
    """TF32 would add ~1e-3 relative error to every matmul on Ampere and later GPUs: off.
    On the CPU float64 costs little for these sizes and removes most rounding worries."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # cuDNN may pick Winograd or FFT convolutions, whose error is not a sum's gamma_n bound
    # (bounds/rounding.py): without cuDNN, convolutions are im2col products, which it covers.
    torch.backends.cudnn.enabled = False
    # Subnormal numbers (coefficients that underflow deep in a branch and bound) slow CPU
    # arithmetic ~20x.  Flushing them costs each operation up to tiny (1 + |other operand|),
    # which the error model counts (rounding.floor); the onnxruntime confirmation runs without
    # it (confirm.ieee_numerics).
    torch.set_flush_denormal(True)
    return torch.float32 if device.type == "cuda" else torch.float64


def restore_numerics() -> None:
    """Undo numeric_setup's process-wide switch (the caller's numpy/torch see subnormals again)."""
    torch.set_flush_denormal(False)
    torch.backends.cudnn.enabled = True


def try_confirm(q: Query, cases: Cases, xs: torch.Tensor, vs: torch.Tensor) -> Result | None:
    """Run the most promising candidates through onnxruntime; the first confirmed one wins."""
    if q.ref is None:
        return None
    order = torch.argsort(vs)[:MAX_CONFIRM]
    for i in order.tolist():
        if not bool(vs[i] <= 1e-6 * (1 + abs(float(vs[i])))):
            break
        case = q.prop.cases[int(cases.case[i])]
        hit = confirm_sat(q.ref, case, xs[i].reshape(-1).cpu().numpy())
        if hit is not None:
            return Result(Verdict.SAT, x=hit.x, y=hit.y)
    return None


def _as_float32(cs: Cases) -> Cases:
    f = lambda t: t.to(torch.float32)
    return replace(cs, lo=f(cs.lo), hi=f(cs.hi), C=f(cs.C), d=f(cs.d))


def stage_attack(q: Query, cases: Cases, cfg: AttackConfig | None = None, round_: int = 0) -> Result | None:
    """round_ varies the random stream when the same cases are attacked again."""
    fast = _as_float32(cases)
    xs, vs = attack(q.fast_graph, fast, q.deadline, cfg or q.cfg.attack,
                    torch.Generator(device=cases.lo.device).manual_seed(q.cfg.seed + 7919 * round_), q.memory)
    if len(vs):
        best = float(vs.min())
        q.stats["attack_best"] = min(best, q.stats.get("attack_best", best))
    return try_confirm(q, cases, xs, vs)


class Found(Exception):
    """A stage found a confirmed counterexample (the Result rides along)."""

    def __init__(self, result: Result):
        super().__init__("counterexample")
        self.result = result


CORNER_ROWS = 16     # rows per case whose minimising corners are tried after CROWN
MAX_CORNERS = 4096   # corners tried in all (memory: that many inputs at once)


def stage_corners(q: Query, cases: Cases, lb: torch.Tensor, A_in: torch.Tensor) -> Result | None:
    """For each case, the box corners that minimise the linear lower bounds of its weakest
    CORNER_ROWS rows (CROWN's, A_in (P, k, *in)): cheap candidates for counterexamples that sit
    in a corner of a high-dimensional box, where the attack's gradient is flat."""
    from .bab.domains import violations

    P, k = lb.shape
    take = max(1, min(k, CORNER_ROWS, MAX_CORNERS // max(P, 1)))
    if P * take > MAX_CORNERS:   # many cases: the weakest ones
        keep = torch.topk(lb.amin(1), MAX_CORNERS, largest=False).indices.cpu().numpy()
        cases, lb, A_in, P = cases.select(keep), lb[keep], A_in[keep], MAX_CORNERS
    rows = torch.topk(lb, take, dim=1, largest=False).indices
    a = torch.gather(A_in.reshape(P, k, -1), 1, rows.unsqueeze(-1).expand(-1, -1, A_in[0, 0].numel()))
    lo, hi = cases.lo.reshape(P, 1, -1), cases.hi.reshape(P, 1, -1)
    xs = torch.where(a > 0, lo, hi).reshape((P * take,) + tuple(cases.lo.shape[1:]))
    rep = cases.select(np.repeat(np.arange(P), take))
    return try_confirm(q, rep, xs, violations(q.graph, rep, xs))


@dataclass
class Crowned:
    """What IBP and CROWN leave open: the open cases' indices, their activation input bounds
    (None when CROWN did not run) and CROWN's lower bounds on their rows (None likewise)."""

    open_idx: np.ndarray
    pre: dict | None
    lb: torch.Tensor | None


def stage_crown(q: Query, cases: Cases, corners: bool = True) -> Crowned:
    """IBP, then CROWN on the cases IBP leaves open.  corners: try the box corners CROWN points
    at as counterexamples (raises Found)."""
    open_idx = np.arange(len(cases))
    with torch.no_grad():
        done = refuted(cases, ibp_lower(q.graph, cases, q.memory), q.tol).cpu().numpy()
    open_idx = open_idx[~done]
    q.stats["open_after_ibp"] = int(open_idx.size)
    log.info("IBP: %d of %d cases open", open_idx.size, len(cases))
    if open_idx.size == 0 or not q.cfg.crown:
        return Crowned(open_idx, None, None)
    q.deadline.check()
    sub = cases.select(open_idx)
    record: dict = {}
    lb, pre = crown_lower(q.graph, sub, q.deadline, record, q.memory)
    done = refuted(sub, lb, q.tol).cpu().numpy()
    if corners and not done.all() and q.graph.input_name in record:
        found = stage_corners(q, sub, lb, record[q.graph.input_name])
        if found is not None:
            raise Found(found)
    q.stats["open_after_crown"] = int((~done).sum())
    log.info("CROWN: %d of %d cases open", (~done).sum(), len(cases))
    keep = np.nonzero(~done)[0]
    return Crowned(open_idx[keep], take_bounds(pre, keep), lb[keep])


def stage_bounds(q: Query, cases: Cases, corners: bool = True,
                 crowned: Crowned | None = None) -> tuple[np.ndarray, dict | None]:
    """Indices of the cases that IBP, CROWN and alpha-CROWN (then the opt-in LP and SDP stages)
    leave open, and the activation input bounds found for them (None after IBP alone), which
    branch and bound starts from.  crowned: stage_crown's result on these cases, if it ran."""
    crowned = crowned or stage_crown(q, cases, corners)
    open_idx, pre, lb = crowned.open_idx, crowned.pre, crowned.lb
    if open_idx.size == 0 or pre is None or not q.cfg.alpha:
        return open_idx, pre
    q.deadline.check()
    sub = cases.select(open_idx)
    lb = torch.maximum(alpha_crown_lower(q.graph, sub, pre, q.cfg.alpha_cfg, q.deadline, q.tol, q.memory, lb), lb)
    done2 = refuted(sub, lb, q.tol).cpu().numpy()
    if not done2.all() and q.cfg.alpha_cfg.intermediate_iterations > 0 and not q.deadline.expired():
        # optimised slopes for the intermediate bounds too: dearer, so only where the cheap form failed
        pre = alpha_intermediate(q.graph, sub.lo, sub.hi, pre,
                                 replace(q.cfg.alpha_cfg, iterations=q.cfg.alpha_cfg.intermediate_iterations),
                                 q.deadline)
        q.deadline.check()
        lb = torch.maximum(alpha_crown_lower(q.graph, sub, pre, q.cfg.alpha_cfg, q.deadline, q.tol, q.memory, lb), lb)
        done2 = refuted(sub, lb, q.tol).cpu().numpy()
    q.stats["open_after_alpha"] = int((~done2).sum())
    log.info("alpha-CROWN: %d of %d cases open", (~done2).sum(), len(cases))
    for name, on in (("LP", q.cfg.lp.enabled), ("SDP", q.cfg.engine == "sdp")):
        if on and not done2.all() and not q.deadline.expired():
            from .lp.stages import stage_lp, stage_sdp

            before = float(weakest_open_bound(sub, lb).min())
            if name == "LP":
                lb, pre = stage_lp(q, sub, pre, lb, np.nonzero(~done2)[0])
            else:
                lb = stage_sdp(q, sub, pre, lb, np.nonzero(~done2)[0])
            done2 = refuted(sub, lb, q.tol).cpu().numpy()
            q.stats[f"open_after_{name.lower()}"] = int((~done2).sum())
            log.info("%s: %d of %d cases open (weakest bound %.4g -> %.4g)", name, (~done2).sum(), len(cases),
                     before, float(weakest_open_bound(sub, lb).min()))
    left = np.nonzero(~done2)[0]
    return open_idx[left], take_bounds(pre, left)


SEARCH_WIDTHS = (1.0, 10.0, 100.0, 1000.0)   # how far past its finite bounds an unbounded input is searched


def searched_region(prop: Property, width: float) -> Property:
    """The property with every infinite input bound replaced by a finite one, `width` times
    max(1, the case's largest finite bound) beyond the other end (or around 0): a region for the
    attack to search, never for a bound (an unsat over it says nothing about the query)."""
    cases = []
    for c in prop.cases:
        finite = np.concatenate([c.lo[np.isfinite(c.lo)], c.hi[np.isfinite(c.hi)]])
        w = width * max(1.0, float(np.abs(finite).max()) if finite.size else 1.0)
        lo = np.where(np.isfinite(c.lo), c.lo, np.where(np.isfinite(c.hi), c.hi - w, -w))
        hi = np.where(np.isfinite(c.hi), c.hi, np.where(np.isfinite(c.lo), c.lo + w, w))
        cases.append(replace(c, lo=lo, hi=hi, _memo={}))
    return replace(prop, cases=tuple(cases))


@within_memory
def search(q: Query, why: str) -> Result:
    """For a query with unbounded inputs: attacks over finite regions of growing width
    (searched_region), each candidate confirmed against the query as written (its unbounded
    inputs admit any finite value); sat, or unknown with `why`.  No bound is computed."""
    try:
        for r, width in enumerate(SEARCH_WIDTHS * 4):
            prop = searched_region(q.prop, width)
            cases = build_cases(prop, q.graph.input_shape, q.graph.output_size, q.dtype, q.device)
            found = stage_attack(q, cases, None, round_=r)
            if found is not None:
                return found
            if q.deadline.expired():
                return Result(Verdict.TIMEOUT)
        return Result(Verdict.UNKNOWN, reason=f"{why}; no counterexample found where the inputs were searched")
    except OutOfTime:
        return Result(Verdict.TIMEOUT)


@within_memory
def refute_in_ball(q: Query, centre: np.ndarray, radius: float) -> Result:
    """UNSAT when CROWN, then alpha-CROWN, concretised over each case's box intersected with the
    L2 ball |x - centre|_2 <= radius (bounds/ball.py), then branch and bound over that
    intersection (split_in_ball for small inputs, activation splitting after it or for larger
    ones: ball_bab) refute every case; else UNKNOWN, or TIMEOUT at the deadline.  Never SAT."""
    from .bounds.backward import crown_intermediate
    from .bounds.ball import ball_for
    from .incomplete import alpha_crown_lower, intermediate_elems, output_lower

    try:
        cases = build_cases(q.prop, q.graph.input_shape, q.graph.output_size, q.dtype, q.device)
        K = len(cases)
        c = torch.as_tensor(np.asarray(centre, dtype=np.float64), device=q.device).to(q.dtype)
        if not torch.equal(c.double().cpu(), torch.as_tensor(np.asarray(centre, dtype=np.float64)).reshape(-1)):
            return Result(Verdict.UNKNOWN, reason="the ball's centre is not a value of the engine's type")
        r = torch.tensor(radius, dtype=torch.float64).to(q.dtype)
        if float(r) < radius:
            r = torch.nextafter(r, torch.tensor(float("inf"), dtype=q.dtype))
        ball = (c.reshape((1,) + tuple(q.graph.input_shape)), r.to(q.device).reshape(1))
        each = ball_for(ball, K)
        with torch.no_grad():
            pre = crown_intermediate(q.graph, cases.lo, cases.hi, deadline=q.deadline, ball=each,
                                     budget_elems=intermediate_elems(q.memory // 2, cases.lo.element_size()))
            lb = output_lower(q.graph, cases, pre, q.memory, ball=each)
        done = lambda b: bool(refuted(cases, b, q.tol).all())
        if not done(lb) and q.cfg.alpha:
            lb = torch.maximum(lb, alpha_crown_lower(q.graph, cases, pre, q.cfg.alpha_cfg, q.deadline, q.tol,
                                                     q.memory, prior=lb, ball=each))
        if done(lb):
            return Result(Verdict.UNSAT)
        if not q.cfg.bab.enabled:
            return Result(Verdict.UNKNOWN)
        left = np.flatnonzero(~refuted(cases, lb, q.tol).cpu().numpy())
        return ball_bab(q, cases.select(left), take_bounds(pre, torch.as_tensor(left, device=q.device)), ball)
    except OutOfTime:
        return Result(Verdict.TIMEOUT)


def ball_bab(q: Query, cases: Cases, pre: dict, ball: tuple[torch.Tensor, torch.Tensor]) -> Result:
    """Branch and bound over the cases' boxes intersected with the ball (centre (1, *input_shape),
    radius (1,)); pre: their activation input bounds over it.  Inputs of at most
    BALL_SPLIT_MAX_DIM elements are split first, for half the time left; what that leaves, and
    every larger input, goes to activation splitting, whose bounds all take the ball
    (bab/activation_split.py).  UNSAT, UNKNOWN, or OutOfTime raised."""
    from .bab.activation_split import Exhausted, activation_split_bab

    if q.graph.input_size <= BALL_SPLIT_MAX_DIM:
        try:
            got = split_in_ball(replace(q, deadline=Deadline(q.deadline.left() / 2)), cases, *ball)
            if got.verdict is Verdict.UNSAT:
                return got
        except OutOfTime:
            pass
    try:
        got = activation_split_bab(q, cases, pre, ball=ball)
    except Exhausted as why:
        if q.graph.input_size <= BALL_SPLIT_FALLBACK_DIM:   # smooth activations left unsplittable: boxes
            return split_in_ball(q, cases, *ball)
        return Result(Verdict.UNKNOWN, reason=f"L2 activation splitting: {why}")
    assert got.verdict is not Verdict.SAT, "a ball query is never sat"
    return got


# Inputs of at most this many elements are split first.  On 2-16-16-2 to 16-16-16-2 ReLU nets
# (r = 0.4, bounds between alpha-CROWN's and the attack's, 10 s): input splitting proved each
# 2-input case in 0.03-0.17 s against activation splitting's 0.03-0.49 s, at 4 inputs it was
# 2x faster on most but 3x slower on one; at 8 and 16 inputs it timed out on 22 of 24 that
# activation splitting proved in 0.1-2 s.
BALL_SPLIT_MAX_DIM = 4
BALL_SPLIT_FALLBACK_DIM = 16   # where activation splitting gives up, inputs up to this size are split
BALL_SPLIT_BATCH = 64          # domains split per round of split_in_ball
BALL_SPLIT_MAX = 100_000       # open domains beyond which it gives up


def split_in_ball(q: Query, cases: Cases, centre: torch.Tensor, radius: torch.Tensor) -> Result:
    """Input splitting over L2 balls: the open boxes are halved along their widest element, each
    half bounded by CROWN over it and the ball; a half that misses the ball (its nearest point to
    the centre is farther than the radius, with a margin for the distance's rounding) holds no
    input.  centre: (1, *input_shape); radius: (1,), at or above the ball's exact radius.  UNSAT once every box is refuted; UNKNOWN at the domain cap, TIMEOUT at the deadline."""
    from .bounds.backward import crown_intermediate, crown_output
    from .bounds.ball import ball_for
    from .bounds.rounding import lower

    domains = cases
    while len(domains):
        q.deadline.check()
        if len(domains) > BALL_SPLIT_MAX:
            return Result(Verdict.UNKNOWN, reason="L2 input splitting: too many open boxes")
        now, rest = domains.select(np.arange(min(BALL_SPLIT_BATCH, len(domains)))), \
            domains.select(np.arange(min(BALL_SPLIT_BATCH, len(domains)), len(domains)))
        width = (now.hi - now.lo).reshape(len(now), -1)
        dim = width.argmax(1)
        mid = (now.lo.reshape(len(now), -1).gather(1, dim[:, None]) + now.hi.reshape(len(now), -1).gather(1, dim[:, None])) / 2
        lo2, hi2 = now.lo.reshape(len(now), -1).clone(), now.hi.reshape(len(now), -1).clone()
        hi_left, lo_right = hi2.clone(), lo2.clone()
        hi_left.scatter_(1, dim[:, None], mid)
        lo_right.scatter_(1, dim[:, None], mid)
        shape = (2 * len(now),) + tuple(q.graph.input_shape)
        lo_c, hi_c = torch.cat([lo2, lo_right]).reshape(shape), torch.cat([hi_left, hi2]).reshape(shape)
        parent = torch.arange(len(now), device=lo_c.device).repeat(2)
        kids = now.with_box(lo_c, hi_c, parent)
        near = torch.minimum(torch.maximum(centre.reshape(1, -1), lo_c.reshape(len(kids), -1)), hi_c.reshape(len(kids), -1))
        dist2 = ((near.double() - centre.reshape(1, -1).double()) ** 2).sum(1)
        misses = dist2 > radius.double() ** 2 * (1 + 1e-9) + 1e-300
        kball = ball_for((centre, radius), len(kids))
        with torch.no_grad():
            pre = crown_intermediate(q.graph, kids.lo, kids.hi, deadline=q.deadline, ball=kball)
            lb = lower(crown_output(q.graph, kids.lo, kids.hi, kids.C, pre, ball=kball) + kids.d)
        keep = ~(refuted(kids, lb, q.tol) | misses.to(lb.device))
        domains = cat_cases([kids.select(np.flatnonzero(keep.cpu().numpy())), rest])
    return Result(Verdict.UNSAT)


@within_memory
def refute_each(q: Query) -> Result:
    """Bounds only (IBP, CROWN, alpha-CROWN, the LP stage when enabled), every case at once:
    q.stats["refuted"] holds, per case of the property, whether it is refuted.  UNSAT when all
    are, else UNKNOWN; TIMEOUT when the deadline cut the bounds short (nothing refuted then)."""
    cases = build_cases(q.prop, q.graph.input_shape, q.graph.output_size, q.dtype, q.device,
                        rows=q.ref is None or q.ref.inputs_as_given)
    refuted_ = np.zeros(len(q.prop.cases), dtype=bool)
    q.stats["refuted"] = refuted_
    try:
        open_idx, _ = stage_bounds(q, cases, corners=False)
    except OutOfTime:
        return Result(Verdict.TIMEOUT)
    done = np.ones(len(cases), dtype=bool)
    done[open_idx] = False
    refuted_[:] = True                       # cases without a row (an empty region) stay refuted
    refuted_[np.unique(cases.case[~done])] = False
    return Result(Verdict.UNSAT if refuted_.all() else Verdict.UNKNOWN)


@within_memory
def decide(q: Query) -> Result:
    """The verdict for a loaded query; never raises OutOfTime."""
    try:
        cases = build_cases(q.prop, q.graph.input_shape, q.graph.output_size, q.dtype, q.device,
                            rows=q.ref is None or q.ref.inputs_as_given)
        if len(cases) == 0:
            # a contradiction in the query itself, most likely a mistake: said even under -q
            log.warning("warning: no input meets the query's input constraints (the region is "
                        "empty), so nothing can violate it: unsat")
            return Result(Verdict.UNSAT, reason="the property has no input region")
        try:
            crowned = stage_crown(q, cases) if bounds_first(q.graph, q.cfg.attack) else None
            if crowned is not None and crowned.open_idx.size == 0:
                return Result(Verdict.UNSAT)
            found = stage_attack(q, cases if crowned is None else cases.select(crowned.open_idx), QUICK_ATTACK)
            if found is not None:
                return found
            q.deadline.check()
            open_idx, pre = stage_bounds(q, cases, crowned=crowned)
        except Found as f:
            return f.result
        if open_idx.size == 0:
            return Result(Verdict.UNSAT)
        q.deadline.check()
        from .lp.stages import stage_points

        found = stage_points(q, cases.select(open_idx), pre) or stage_attack(q, cases.select(open_idx))
        if found is not None:
            return found
        q.deadline.check()
        if q.cfg.engine == "milp":
            from .lp.stages import stage_milp

            return stage_milp(q, cases.select(open_idx), pre)
        if q.cfg.bab.enabled:
            from .bab.driver import branch_and_bound

            return branch_and_bound(q, cases.select(open_idx), pre)
        return Result(Verdict.UNKNOWN)
    except OutOfTime:
        return Result(Verdict.TIMEOUT)
