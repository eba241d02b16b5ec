"""What a run leaves behind: results.csv, summary.md and cactus.png (and a baseline beside them).

Summary columns, per benchmark and run:

* solved: answers that count (correct ``yes``, ``unverified`` or ``disputed``, see score.py);
  sat / unsat split them by verdict;
* unknown, timeout, error: verdicts;  wrong: correct ``no`` (-150 each);
* unverified: unsat where no reference answer exists, plus disputed sats (0 points each);
* points: VNN-COMP's +10 / -150, without its time bonus;
* total s: wall-clock over every instance run; median s: over the solved ones;
* peak MB: the largest peak resident memory of a verifier process (VmHWM polled from /proc; "-"
  where the platform gives none, or in results read from an older results.csv).
"""
from __future__ import annotations

import csv
import os
import statistics
from dataclasses import dataclass, fields
from pathlib import Path

from .runner import Result
from .score import POINTS, SOLVED

COLUMNS = ("bench", "onnx", "vnnlib", "expected", "verdict", "seconds", "check", "correct",
           "points", "timeout", "spec", "detail", "peak_mb")


@dataclass(frozen=True)
class Run:
    """One run's results under a label (the new run, or a baseline)."""

    label: str
    results: tuple[Result, ...]


def write_results(path: Path, results: list[Result]) -> None:
    """Write results.csv atomically (a reader never sees half a file; Ctrl-C never truncates it)."""
    rows = sorted(results, key=lambda r: (r.bench, r.row, r.onnx, r.vnnlib))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r.bench, r.onnx, r.vnnlib, r.expected, r.verdict, f"{r.seconds:.3f}", r.check,
                        r.correct, r.points, f"{r.timeout:g}", r.spec, r.detail,
                        "" if r.peak_mb is None else f"{r.peak_mb:.0f}"])
    os.replace(tmp, path)


def read_results(path: Path) -> list[Result]:
    """Read a results.csv written by this runner (a baseline)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"bench", "onnx", "vnnlib", "verdict", "seconds", "correct"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: not a results.csv (needs columns {sorted(need)})")
        out = []
        for i, row in enumerate(reader):
            correct = row.get("correct", "")
            out.append(Result(row["bench"], row["onnx"], row["vnnlib"], row.get("expected", ""), row["verdict"],
                              float(row["seconds"] or 0), row.get("check", ""), correct,
                              int(row.get("points") or POINTS.get(correct, 0)), float(row.get("timeout") or 0),
                              row.get("spec", ""), row.get("detail", ""), i, "",
                              float(row["peak_mb"]) if row.get("peak_mb") else None))
    return out


# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tally:
    instances: int = 0
    solved: int = 0
    sat: int = 0
    unsat: int = 0
    unknown: int = 0
    timeout: int = 0
    error: int = 0
    wrong: int = 0
    unverified: int = 0
    points: int = 0
    total_s: float = 0.0
    median_s: float | None = None
    peak_mb: float | None = None


def tally(results: list[Result] | tuple[Result, ...]) -> Tally:
    solved = [r for r in results if r.correct in SOLVED]
    return Tally(
        instances=len(results),
        solved=len(solved),
        sat=sum(r.verdict == "sat" for r in solved),
        unsat=sum(r.verdict == "unsat" for r in solved),
        unknown=sum(r.verdict == "unknown" for r in results),
        timeout=sum(r.verdict == "timeout" for r in results),
        error=sum(r.verdict == "error" for r in results),
        wrong=sum(r.correct == "no" for r in results),
        unverified=sum(r.correct in ("unverified", "disputed") for r in results),
        points=sum(r.points for r in results),
        total_s=sum(r.seconds for r in results),
        median_s=statistics.median(r.seconds for r in solved) if solved else None,
        peak_mb=max((r.peak_mb for r in results if r.peak_mb is not None), default=None),
    )


_HEAD = ("bench", "run", "instances", "solved", "sat", "unsat", "unknown", "timeout", "error", "wrong",
         "unverified", "points", "total s", "median s", "peak MB")


def _row(bench: str, label: str, t: Tally) -> str:
    median = "-" if t.median_s is None else f"{t.median_s:.2f}"
    peak = "-" if t.peak_mb is None else f"{t.peak_mb:.0f}"
    cells = [bench, label, *(str(getattr(t, f.name)) for f in fields(Tally)[:10]), f"{t.total_s:.1f}", median, peak]
    return "| " + " | ".join(cells) + " |"


def summary_table(runs: list[Run]) -> str:
    """The markdown table: one row per benchmark and run (the new run first), then totals."""
    benches = sorted({r.bench for run in runs for r in run.results})
    lines = ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * 2 + "---:|" * (len(_HEAD) - 2)]
    for bench in benches:
        for run in runs:
            lines.append(_row(bench, run.label, tally([r for r in run.results if r.bench == bench])))
    if len(benches) > 1:
        for run in runs:
            lines.append(_row("**all**", run.label, tally(run.results)))
    return "\n".join(lines)


def notes(run: Run, limit: int = 50) -> list[str]:
    """Instances that need a human look: wrong, disputed, unverified (VNN-LIB paths, with why)."""
    out = []
    for kind, title in (("no", "Wrong"), ("disputed", "Disputed"), ("unverified", "Unverified")):
        hits = [r for r in run.results if r.correct == kind]
        if hits:
            out.append(f"\n{title} ({len(hits)}):\n")
            for r in hits[:limit]:
                why = f" ({r.check}: {r.detail})" if r.check else ""
                out.append(f"- {r.bench} {r.onnx} {r.vnnlib}: {r.verdict}, expected {r.expected or '?'}{why}")
            if len(hits) > limit:
                out.append(f"- ... and {len(hits) - limit} more (see results.csv)")
    return out


def changes(new: Run, old: Run, limit: int = 20) -> list[str]:
    """Instances solved by one run and not the other, and the speed on those both solve."""
    solved_new = {r.key: r for r in new.results if r.correct in SOLVED}
    solved_old = {r.key: r for r in old.results if r.correct in SOLVED}
    gained = sorted(set(solved_new) - set(solved_old))
    lost = sorted(set(solved_old) - set(solved_new))
    both = set(solved_new) & set(solved_old)
    out = [f"\nAgainst {old.label}: {len(gained)} newly solved, {len(lost)} no longer solved, {len(both)} solved by both."]
    if both:
        t_new = sum(solved_new[k].seconds for k in both)
        t_old = sum(solved_old[k].seconds for k in both)
        out.append(f"On those solved by both: {t_new:.1f} s now against {t_old:.1f} s"
                   f" (speed-up {t_old / t_new:.2f}x)." if t_new > 0 else "")
    for title, keys in (("Newly solved", gained), ("No longer solved", lost)):
        if keys:
            out.append(f"\n{title}:\n")
            out += [f"- {' '.join(k)}" for k in keys[:limit]]
            if len(keys) > limit:
                out.append(f"- ... and {len(keys) - limit} more")
    return out


def write_summary(path: Path, header: list[str], runs: list[Run], skipped: list[str], interrupted: bool) -> str:
    """Write summary.md and return its text."""
    new = runs[0]
    parts = [f"# Benchmark run: {new.label}", "", *header, ""]
    if interrupted:
        parts += ["**Interrupted**: partial results, only the instances that finished are counted.", ""]
    parts.append(summary_table(runs))
    parts.append("\nsolved = correct sat/unsat (+10 each) plus unverified; wrong costs -150;"
                 " total s over all instances, median s over solved ones.")
    parts += notes(new)
    for old in runs[1:]:
        parts += changes(new, old)
    if skipped:
        parts.append(f"\nSkipped for want of a VNN-LIB 2.0 twin: {len(skipped)} instances.")
    text = "\n".join(parts) + "\n"
    path.write_text(text)
    return text


def restrict(baseline: list[Result], keys: set[tuple[str, str, str]]) -> list[Result]:
    """The baseline rows for the instances of the new run (a subset run compares like with like)."""
    return [r for r in baseline if r.key in keys]


# ----------------------------------------------------------------------------------------------

def cactus(path: Path, runs: list[Run], title: str = "") -> None:
    """Instances solved (y) within a per-instance time (x, log scale), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for run in runs:
        times = sorted(max(r.seconds, 1e-3) for r in run.results if r.correct in SOLVED)
        xs = [times[0] if times else 1e-3, *times]
        ys = [0, *range(1, len(times) + 1)]
        ax.step(xs, ys, where="post", label=f"{run.label} ({len(times)} solved)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("time per instance (s)")
    ax.set_ylabel("instances solved")
    ax.set_title(title or "cactus plot")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
