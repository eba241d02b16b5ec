"""One sample through every method of the audit, on a model loaded once per process."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from .attack import AttackConfig, attack_sample, predicted
from .formal import CERTIFIED, FALSIFIED, UNKNOWN, FormalConfig, certify, prepass
from .queries import up


@dataclass(frozen=True)
class AuditConfig:
    """What an audit computes (the per-sample results depend on these and nothing else)."""

    eps: tuple[str, ...]
    norm: str = "linf"                     # linf | l2
    input_range: tuple[float, float] | None = None
    methods: tuple[str, ...] = ("formal", "lipschitz", "smoothing", "attack")
    timeout_per_sample: float = 30.0       # the formal method's whole budget for one sample
    radius_steps: int = 4                  # the formal radius's bisection steps after the grid
    sigma: float = 0.25
    smoothing_alpha: float = 0.001
    smoothing_n: int = 10_000
    smoothing_n0: int = 100
    lipsdp: str = "auto"                   # auto (small networks) | on | off
    seed: int = 0

    def key(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class Auditor:
    """The model as every method needs it: the engine's session (formal), its float32 graph
    (attack, smoothing), the Lipschitz bounds (built on first use, shared by all samples)."""

    def __init__(self, model_path: str, cfg: AuditConfig, verify_cfg=None):
        import torch

        from ..api import Session
        from ..config import VerifyConfig

        self.cfg = cfg
        self.session = Session.open(model_path, verify_cfg or VerifyConfig(seed=cfg.seed))
        self.ref = self.session.ref
        self.graph32 = self.session.graph.to(self.session.device, torch.float32)
        self._lip_model = None

    @property
    def n_classes(self) -> int:
        return self.session.graph.output_size

    def run_chunk(self, indices, xs, labels) -> list[dict]:
        """The records of a batch of samples: the formal method's batched first pass over the
        correctly classified ones (formal.prepass, its time charged to them equally), then each
        sample through every method."""
        xs = [np.asarray(x).reshape(-1) for x in xs]
        preds = [predicted(self.ref.run(x)) for x in xs]
        start = [Decimal(0)] * len(xs)
        spent = 0.0
        good = [k for k in range(len(xs)) if preds[k] == labels[k]]
        if "formal" in self.cfg.methods and self.cfg.norm == "linf" and len(good) > 1:
            t0 = time.monotonic()
            found = prepass(self.session, [xs[k] for k in good], [int(labels[k]) for k in good], list(self.cfg.eps),
                            self.cfg.input_range, PREPASS_SHARE * self.cfg.timeout_per_sample * len(good))
            for k, r in zip(good, found):
                start[k] = r
            spent = (time.monotonic() - t0) / len(good)
        return [self.run(i, x, int(y), p, start[k] if k in good else Decimal(0), spent if k in good else 0.0)
                for k, (i, x, y, p) in enumerate(zip(indices, xs, labels, preds))]

    def run(self, index: int, x: np.ndarray, label: int, pred: int | None = None,
            certified: Decimal = Decimal(0), spent: float = 0.0) -> dict:
        """The sample's record: label, prediction and one entry per method.  certified, spent:
        a radius the batched first pass certified and the seconds it took for this sample."""
        x = np.asarray(x).reshape(-1)
        pred = predicted(self.ref.run(x)) if pred is None else pred
        rec: dict = {"index": int(index), "label": int(label), "predicted": pred}
        for m in self.cfg.methods:
            t0 = time.monotonic()
            extra = {"start": (certified, spent)} if m == "formal" else {}
            rec[m] = getattr(self, "_" + m)(index, x, int(label), pred, **extra)
            rec[m]["seconds"] = round(time.monotonic() - t0 + (spent if m == "formal" else 0.0), 4)
        return rec

    def _formal(self, index, x, label, pred, start=(Decimal(0), 0.0)) -> dict:
        """start: a radius the batched first pass certified, and its time for this sample."""
        if pred != label:   # the sample itself is a confirmed counterexample at every radius
            return {"status": {e: FALSIFIED for e in self.cfg.eps}, "radius_lower": 0.0, "radius_upper": 0.0}
        certified, spent = start
        budget = max(0.0, self.cfg.timeout_per_sample - spent)
        out = certify(self.session, x, label, list(self.cfg.eps), self.cfg.input_range,
                      FormalConfig(budget, self.cfg.radius_steps), self.cfg.norm, self.graph32, certified)
        return {"status": out.status, "radius_lower": out.radius_lower, "radius_upper": out.radius_upper,
                "counterexample": out.counterexample}

    def _attack(self, index, x, label, pred) -> dict:
        if pred != label:
            return {"status": {e: FALSIFIED for e in self.cfg.eps}}
        cfg = AttackConfig(seed=self.cfg.seed + index)
        return {"status": attack_sample(self.graph32, self.ref, x, label, list(self.cfg.eps), self.cfg.norm,
                                        self.cfg.input_range, cfg)}

    def _lipschitz_model(self):
        if self._lip_model is None:
            from .lipschitz import LipschitzModel

            model = LipschitzModel(self.session.graph, sdp=False)
            hidden = sum(d.W.shape[0] for d in model.chain.dense[:-1])
            if self.cfg.lipsdp == "on" or (self.cfg.lipsdp == "auto" and 0 < hidden <= LIPSDP_AUTO_HIDDEN):
                model = LipschitzModel(self.session.graph, sdp=True)
            self._lip_model = model
        return self._lip_model

    def _lipschitz(self, index, x, label, pred) -> dict:
        from .lipschitz import LipschitzError, certified_radius, margin_lower_bounds

        if pred != label:
            return {"status": {e: UNKNOWN for e in self.cfg.eps}, "radius_lower": 0.0}
        try:
            lip = self._lipschitz_model().margins(label)
        except LipschitzError as e:
            return {"status": {e_: UNKNOWN for e_ in self.cfg.eps}, "radius_lower": 0.0, "reason": str(e)}
        margins = margin_lower_bounds(self.session.graph, x, label)
        consts = lip.linf if self.cfg.norm == "linf" else lip.l2
        radius = certified_radius(margins, consts, label)
        status = {e: CERTIFIED if radius >= up(e) else UNKNOWN for e in self.cfg.eps}
        rec = {"status": status, "radius_lower": radius, "method": "layers"}
        if self.cfg.norm == "l2" and lip.method_l2 == "lipsdp":   # what LipSDP added to the layer bounds
            rec.update(method="lipsdp", radius_layers=certified_radius(margins, lip.l2_layers, label))
        return rec

    def _smoothing(self, index, x, label, pred) -> dict:
        import torch

        from .smoothing import SmoothingConfig, certify as smooth_certify, linf_certified

        cfg = SmoothingConfig(sigma=self.cfg.sigma, n0=self.cfg.smoothing_n0, n=self.cfg.smoothing_n,
                              alpha=self.cfg.smoothing_alpha, seed=self.cfg.seed)
        g = self.graph32
        f = lambda xb: _logits(g, xb)
        xt = torch.as_tensor(x, dtype=torch.float32, device=self.session.device).reshape(g.input_shape)
        r = smooth_certify(f, xt, cfg, index=index)
        d = x.size
        ok = r.predicted == label and r.radius is not None
        if self.cfg.norm == "linf":
            status = {e: CERTIFIED if ok and linf_certified(r.radius, up(e), d) else UNKNOWN for e in self.cfg.eps}
            lower = _down(r.radius / math.sqrt(d)) if ok else 0.0
        else:
            status = {e: CERTIFIED if ok and r.radius >= up(e) else UNKNOWN for e in self.cfg.eps}
            lower = r.radius if ok else 0.0
        return {"sigma": cfg.sigma, "predicted": r.predicted, "pA_lower": r.pA_lower, "radius": r.radius,
                "status": status, "radius_lower": lower}


def _logits(graph, xb):
    import torch

    from ..evaluate import forward

    with torch.no_grad():
        return forward(graph, xb.reshape((len(xb),) + tuple(graph.input_shape))).reshape(len(xb), -1)


def _down(v: float) -> float:
    """v rounded down by an ulp: a quotient rounded to nearest may sit above the exact one."""
    return float(np.nextafter(v, 0.0)) if v > 0 else 0.0


PREPASS_SHARE = 0.25       # of each sample's formal budget, what the batched first pass may take
LIPSDP_AUTO_HIDDEN = 64   # LipSDP by default up to this many hidden neurons (seconds per class pair;
                          # a 64-50-50-10 MLP takes ~10 s per pair with SCS, 45 pairs)
_WORKER: dict = {}


def worker_run(model_path: str, cfg: AuditConfig, verify_cfg, indices, xs, labels) -> list[dict]:
    """For process pools and Ray tasks: the records of a batch of samples; the Auditor is built
    once per process and model."""
    key = (model_path, cfg)
    if key not in _WORKER:
        _WORKER.clear()
        _WORKER[key] = Auditor(model_path, cfg, verify_cfg)
    return _WORKER[key].run_chunk(indices, xs, labels)
