"""The audit's report: per-method figures from the per-sample records, written as report.json,
report.md (a table) and certified_accuracy.png (certified accuracy against the radius)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CERTIFYING = ("formal", "lipschitz", "smoothing")
TITLES = {"formal": "formal (our engine)", "lipschitz": "Lipschitz", "attack": "attack (PGD, empirical)",
          "smoothing": "randomized smoothing"}


@dataclass
class MethodSummary:
    """certified_accuracy: radius -> share of all samples certified there (for the attack: the
    share it could not break, an upper bound on robust accuracy); acr: the average certified
    radius (0 for samples not certified), in the audit's norm; seconds: summed per-sample time."""

    certified_accuracy: dict[str, float] = field(default_factory=dict)
    acr: float | None = None
    seconds: float = 0.0


@dataclass
class Report:
    model: str
    n: int
    clean_accuracy: float
    norm: str
    eps: list[str]
    methods: dict[str, MethodSummary]
    samples: list[dict]
    notes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def summarise(model: str, norm: str, eps: list[str], methods: list[str], samples: list[dict],
              notes: dict[str, str]) -> Report:
    samples = sorted(samples, key=lambda s: s["index"])
    n = len(samples)
    clean = sum(s["predicted"] == s["label"] for s in samples) / max(n, 1)
    out: dict[str, MethodSummary] = {}
    for m in methods:
        rows = [s[m] for s in samples if m in s]
        good = {"attack": "survived"}.get(m, "certified")
        acc = {e: sum(r["status"].get(e) == good for r in rows) / max(n, 1) for e in eps}
        acr = None
        if m in CERTIFYING:
            acr = sum(float(r.get("radius_lower") or 0.0) for r in rows) / max(n, 1)
        out[m] = MethodSummary(acc, acr, round(sum(r.get("seconds", 0.0) for r in rows), 3))
    return Report(model, n, clean, norm, list(eps), out, samples, notes)


def write(report: Report, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    (out / "report.md").write_text(markdown(report))
    plot(report, out / "certified_accuracy.png")


def markdown(r: Report) -> str:
    norm = {"linf": "L-inf", "l2": "L2"}[r.norm]
    lines = [f"# Audit of {r.model}", "",
             f"{r.n} samples, clean accuracy {r.clean_accuracy:.1%}, {norm} balls.", "",
             "| method | " + " | ".join(f"eps {e}" for e in r.eps) + " | ACR | seconds |",
             "|---|" + "---:|" * (len(r.eps) + 2)]
    for m, s in r.methods.items():
        acr = "" if s.acr is None else f"{s.acr:.4g}"
        cells = " | ".join(f"{s.certified_accuracy[e]:.1%}" for e in r.eps)
        lines.append(f"| {TITLES.get(m, m)} | {cells} | {acr} | {s.seconds:.1f} |")
    certifying = [m for m in CERTIFYING if m in r.methods]
    if "attack" in r.methods and certifying:
        gap = []
        for e in r.eps:
            best = max(r.methods[m].certified_accuracy[e] for m in certifying)
            gap.append(f"{r.methods['attack'].certified_accuracy[e] - best:.1%}")
        lines.append(f"| gap (attack minus best certified) | {' | '.join(gap)} | | |")
    lines.append("")
    lines += [f"- {v}" for v in r.notes.values()]
    return "\n".join(lines) + "\n"


def _radii(r: Report, m: str) -> np.ndarray:
    return np.array([float(s[m].get("radius_lower") or 0.0) for s in r.samples if m in s])


def plot(r: Report, path: Path) -> None:
    """Certified accuracy against the radius: a step curve per certifying method (the share of
    samples whose certified radius reaches r) and the attack's points at each eps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [float(e) for e in r.eps]
    top = max(eps + [0.0]) * 1.25 or 1.0
    grid = np.linspace(0.0, top, 400)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in CERTIFYING:
        if m in r.methods:
            radii = _radii(r, m)
            ax.plot(grid, [(radii >= g).sum() / max(r.n, 1) if g > 0 else (radii > 0).sum() / max(r.n, 1)
                           for g in grid], label=TITLES[m])
    if "attack" in r.methods:
        acc = r.methods["attack"].certified_accuracy
        ax.plot(eps, [acc[e] for e in r.eps], "k--o", label=TITLES["attack"])
    ax.set_xlabel(f"radius ({'L-inf' if r.norm == 'linf' else 'L2'})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{r.model}: certified accuracy ({r.n} samples)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
