"""Formal certification of one sample: the full pipeline (attack -> IBP -> CROWN -> alpha-CROWN ->
branch and bound) on the clipped ball at each radius, then the certified radius by bisection.

Balls are nested, so answers propagate: a counterexample found at eps is one at every larger
radius (it is checked there again, exactly), and a certificate at eps covers every smaller one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from ..budget import Deadline
from ..verdict import Result, Verdict
from .queries import batch_query, distance, in_ball, robustness_query, up

CERTIFIED, FALSIFIED, UNKNOWN = "certified", "falsified", "unknown"


@dataclass(frozen=True)
class FormalConfig:
    seconds: float = 30.0     # the whole budget of one sample: every radius and the bisection
    radius_steps: int = 4     # bisection steps between the largest certified and the next radius


@dataclass
class FormalOutcome:
    """status: radius (as written) -> certified | falsified | unknown; radius_lower: the largest
    certified radius (a sound lower bound on the sample's true radius, 0 when none);
    radius_upper: the distance of the nearest confirmed counterexample (rounded up), None when
    none was found; counterexample: that input (flat, the model's input type)."""

    status: dict[str, str] = field(default_factory=dict)
    radius_lower: float = 0.0
    radius_upper: float | None = None
    counterexample: list[float] | None = None


class _Sample:
    """One sample's queries on a loaded session, with what was learnt so far."""

    def __init__(self, session, x0: np.ndarray, label: int, input_range, deadline: Deadline, norm: str,
                 graph32=None):
        self.session, self.x0, self.label, self.norm, self.graph32 = session, x0, label, norm, graph32
        self.range, self.deadline = input_range, deadline
        g = session.graph
        self.shapes = (tuple(session.ref.input_shape), tuple(g.onnx_output_shape or (1, g.output_size)))
        self.n_classes = g.output_size
        self.certified = Decimal(0)
        self.cex: np.ndarray | None = None
        self.cex_dist: Decimal | None = None

    def ask(self, eps: Decimal, share: float) -> str:
        """Decide the ball of radius eps with `share` seconds (never past the sample's deadline)."""
        if eps <= self.certified:
            return CERTIFIED
        if self.cex is not None and in_ball(self.cex, self.x0, str(eps), self.norm, self.range):
            return FALSIFIED
        seconds = min(share, self.deadline.left())
        if seconds <= 0.05:
            return UNKNOWN
        import vnnlib

        # L-inf: the query is the clipped ball; L2: its bounding box, the ball given to the bounds
        text = robustness_query(self.x0, self.label, self.n_classes, str(eps), self.range, *self.shapes)
        prop = vnnlib.parse_text(text, source="<audit>")
        if self.norm == "l2":
            result = self._l2(prop, eps, Deadline(seconds))
        else:
            result = self.session.decide(prop, Deadline(seconds))
        if result.verdict is Verdict.UNSAT:
            self.certified = max(self.certified, eps)
            return CERTIFIED
        if result.verdict is Verdict.SAT and in_ball(result.x, self.x0, str(eps), self.norm, self.range):
            self._keep(np.asarray(result.x))
            return FALSIFIED
        return UNKNOWN

    def _l2(self, prop, eps: Decimal, deadline: Deadline) -> Result:
        """A PGD attack in the ball, then bounds concretised over it (Session.refute_in_ball)."""
        from .attack import AttackConfig, confirmed, pgd

        cands = pgd(self.graph32, self.x0, self.label, float(eps), "l2", self.range, AttackConfig())
        x = confirmed(self.session.ref, cands, self.x0, self.label, str(eps), "l2", self.range)
        if x is not None:
            return Result(Verdict.SAT, x=x)
        return self.session.refute_in_ball(prop, self.x0, up(str(eps)), deadline)

    def _keep(self, x: np.ndarray) -> None:
        d = distance(x, self.x0, self.norm)
        if self.cex_dist is None or d < self.cex_dist:
            self.cex, self.cex_dist = x.reshape(-1), d


def prepass(session, xs: list[np.ndarray], labels: list[int], eps: list[str], input_range,
            seconds: float) -> list[Decimal]:
    """Per sample, the largest L-inf radius of the grid that bounds alone certify, all the samples'
    balls bounded at once (IBP, CROWN, alpha-CROWN over one query with a case per sample:
    Session.refute_each); 0 where none.  The cheap first pass of a batch of samples."""
    import vnnlib

    best = [Decimal(0)] * len(xs)
    pending = list(range(len(xs)))
    deadline = Deadline(seconds)
    g = session.graph
    shapes = (tuple(session.ref.input_shape), tuple(g.onnx_output_shape or (1, g.output_size)))
    for e in sorted(eps, key=Decimal):
        if not pending or deadline.left() <= 0.05:
            break
        text = batch_query([xs[i] for i in pending], [labels[i] for i in pending], g.output_size, e,
                           input_range, *shapes)
        prop = vnnlib.parse_text(text, source="<audit batch>")
        if len(prop.cases) != len(pending):
            break
        ok = session.refute_each(prop, Deadline(deadline.left())).stats.get("refuted")
        if ok is None:
            break
        for k, i in enumerate(pending):
            if ok[k]:
                best[i] = Decimal(e)
        pending = [i for k, i in enumerate(pending) if ok[k]]   # a larger ball needs the smaller one
    return best


def certify(session, x0: np.ndarray, label: int, eps: list[str], input_range, cfg: FormalConfig,
            norm: str = "linf", graph32=None, certified: Decimal = Decimal(0)) -> FormalOutcome:
    """Certify the correctly classified sample x0 (flat) at each radius in `eps` (decimal
    strings), then bisect for its radius, within cfg.seconds in all.  L-inf: the full pipeline
    on the clipped ball; L2: an attack, then CROWN, alpha-CROWN and branch and bound over the
    box and the ball (pipeline.refute_in_ball); graph32: the float32 graph the L2 attack runs on.  certified: a
    radius already certified (prepass)."""
    deadline = Deadline(cfg.seconds)
    s = _Sample(session, np.asarray(x0).reshape(-1), label, input_range, deadline, norm, graph32)
    s.certified = certified
    grid = sorted(eps, key=Decimal)
    out = FormalOutcome()
    for k, e in enumerate(grid):
        left = len(grid) - k + (1 if cfg.radius_steps else 0)
        out.status[e] = s.ask(Decimal(e), deadline.left() / left)
    for e in grid:   # a later certificate covers earlier unknowns, a counterexample later ones
        if out.status[e] == UNKNOWN:
            out.status[e] = s.ask(Decimal(e), 0.0)
    _bisect(s, grid, out.status, cfg.radius_steps)
    out.radius_lower = float(s.certified)       # an exact decimal radius as written: rounds to nearest
    if Decimal(out.radius_lower) > s.certified:
        out.radius_lower = float(np.nextafter(out.radius_lower, 0.0))
    if s.cex is not None:
        out.radius_upper = up(str(s.cex_dist))
        out.counterexample = [float(v) for v in s.cex]
    return out


def _bisect(s: _Sample, grid: list[str], status: dict[str, str], steps: int) -> None:
    """Narrow the gap between the largest certified radius and the smallest one not certified;
    when every radius of the grid is certified, double the largest until one is not."""
    above = [Decimal(e) for e in grid if status[e] != CERTIFIED]
    hi = min(above) if above else None
    for k in range(steps):
        mid = s.certified * 2 if hi is None else (s.certified + hi) / 2
        if s.ask(mid, s.deadline.left() / (steps - k)) != CERTIFIED:
            hi = mid
