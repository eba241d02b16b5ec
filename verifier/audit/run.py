"""The audit as a job: check the inputs, skip what a previous run of the same audit finished,
run the rest (in this process, in N processes, or as Ray tasks), append each sample's record as
it finishes, then write the report.

DIR/audit.json records a hash of the model's and the data's bytes and of the arguments that
decide the per-sample results; DIR/samples.jsonl holds one record per finished sample.  A rerun
with the same hash skips the samples found there; any other starts afresh.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .data import AuditInputError, load_data
from .report import Report, summarise, write
from .sample import AuditConfig, Auditor, worker_run

METHODS = ("formal", "lipschitz", "smoothing", "attack")


def _digest(model: Path, data: Path, cfg: AuditConfig) -> str:
    h = hashlib.sha256()
    for p in (model, data):
        h.update(p.read_bytes())
    h.update(json.dumps(cfg.key(), sort_keys=True).encode())
    return h.hexdigest()


def _resume(out: Path, digest: str) -> dict[int, dict]:
    """The finished records of an earlier run of the same audit (none for another one)."""
    meta, lines = out / "audit.json", out / "samples.jsonl"
    done: dict[int, dict] = {}
    if meta.exists() and lines.exists() and json.loads(meta.read_text()).get("hash") == digest:
        for line in lines.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:   # a line cut short by a kill: that sample reruns
                continue
            done[int(rec["index"])] = rec
    # rewritten with the whole records only: a line cut short would swallow the next one
    lines.write_text("".join(json.dumps(rec) + "\n" for rec in done.values()))
    meta.write_text(json.dumps({"hash": digest}) + "\n")
    return done


def check_config(cfg: AuditConfig) -> None:
    if cfg.norm not in ("linf", "l2"):
        raise AuditInputError(f"--norm {cfg.norm}: linf or l2")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad or not cfg.methods:
        raise AuditInputError(f"--methods: unknown method {bad[0]!r} (choose from {', '.join(METHODS)})"
                              if bad else "--methods: none given")
    if cfg.lipsdp not in ("auto", "on", "off"):
        raise AuditInputError(f"--lipsdp {cfg.lipsdp}: auto, on or off")
    if not cfg.eps:
        raise AuditInputError("--eps: give at least one radius")
    from decimal import Decimal, InvalidOperation

    for e in cfg.eps:
        try:
            ok = Decimal(e).is_finite() and Decimal(e) > 0
        except InvalidOperation:
            ok = False
        if not ok:
            raise AuditInputError(f"--eps: {e!r} is not a positive number")
    if cfg.input_range is not None and not (cfg.input_range[0] < cfg.input_range[1]):
        raise AuditInputError(f"--input-range: {cfg.input_range[0]},{cfg.input_range[1]} is empty")
    if not (cfg.timeout_per_sample > 0 and cfg.sigma > 0 and 0 < cfg.smoothing_alpha < 1):
        raise AuditInputError("--timeout-per-sample and --sigma must be positive, --smoothing-alpha in (0, 1)")


def audit(model: str | Path, data: str | Path, eps: Iterable[str | float], out: str | Path, *,
          norm: str = "linf", input_range: tuple[float, float] | None = None,
          methods: Iterable[str] = METHODS, timeout_per_sample: float = 30.0, sigma: float = 0.25,
          smoothing_alpha: float = 0.001, smoothing_n: int = 10_000, radius_steps: int = 4, lipsdp: str = "auto",
          jobs: int = 1, ray: str | None = None,
          limit: int | None = None, seed: int = 0, progress: bool = True) -> Report:
    """Certify the classifier `model` over the data set `data` (an .npz with x and y) at each
    radius in `eps`, by each method; write DIR/report.json, report.md and certified_accuracy.png
    and return the Report.  Raises AuditInputError for unusable inputs, before any work."""
    cfg = AuditConfig(eps=tuple(str(e) for e in eps), norm=norm,
                      input_range=None if input_range is None else (float(input_range[0]), float(input_range[1])),
                      methods=tuple(methods), timeout_per_sample=float(timeout_per_sample), sigma=float(sigma),
                      smoothing_alpha=float(smoothing_alpha), smoothing_n=int(smoothing_n),
                      radius_steps=int(radius_steps), lipsdp=lipsdp, seed=int(seed))
    check_config(cfg)
    model, data, out = Path(model), Path(data), Path(out)
    from ..api import InputError, load_checked

    try:
        graph, ref = load_checked(model)
    except InputError as e:
        raise AuditInputError(str(e)) from None
    if graph.output_size < 2:
        raise AuditInputError(f"{model}: {graph.output_size} output; a classifier needs one score per class (2 or more)")
    x, y = load_data(data, tuple(ref.input_shape), graph.output_size, cfg.input_range, ref.input_dtype)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    out.mkdir(parents=True, exist_ok=True)
    done = _resume(out, _digest(model, data, cfg))
    todo = [i for i in range(len(x)) if i not in done]
    bar = Bar(len(x), len(x) - len(todo), enabled=progress)
    with (out / "samples.jsonl").open("a") as sink:
        def finished(rec: dict) -> None:
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
            done[rec["index"]] = rec
            bar.step(rec)

        runner = _ray if ray else (_pool if jobs > 1 else _serial)
        runner(str(model), cfg, x, y, todo, finished, jobs=jobs, address=ray)
    bar.close()
    report = summarise(model.name, cfg.norm, list(cfg.eps), list(cfg.methods),
                       [done[i] for i in range(len(x))], _notes(cfg, x[0].size))
    write(report, out)
    return report


def _notes(cfg: AuditConfig, d: int) -> dict[str, str]:
    notes = {}
    if "formal" in cfg.methods:
        how = ("attack, IBP, CROWN, alpha-CROWN, branch and bound" if cfg.norm == "linf" else
               "attack, then CROWN and alpha-CROWN concretised over the L2 ball; no branch and bound")
        notes["formal"] = (f"formal: proved by the engine ({how}) on the {'clipped ' if cfg.input_range else ''}"
                           f"ball, {cfg.timeout_per_sample:g} s per sample; ACR from the largest certified radius "
                           f"(grid and bisection)")
    if "smoothing" in cfg.methods:
        extra = (f" (L2 radius >= eps * sqrt({d}) for each L-inf ball)" if cfg.norm == "linf" else "")
        notes["smoothing"] = (f"randomized smoothing: a guarantee for the smoothed classifier (sigma {cfg.sigma:g}, "
                              f"n {cfg.smoothing_n}), holding with probability {1 - cfg.smoothing_alpha:g}{extra}; "
                              f"not a property of the model itself")
    if "attack" in cfg.methods:
        notes["attack"] = "attack: the share of samples PGD could not break: an upper bound on robust accuracy"
    return notes


CHUNK = 16   # samples per batch: the formal method bounds their balls at once first


def _chunks(todo: list[int], size: int) -> list[list[int]]:
    return [todo[k:k + size] for k in range(0, len(todo), size)]


def _batch(x, y, idx):
    return idx, [x[i] for i in idx], [int(y[i]) for i in idx]


def _serial(model, cfg, x, y, todo, finished, **_):
    auditor = Auditor(model, cfg)
    for idx in _chunks(todo, CHUNK):
        for rec in auditor.run_chunk(*_batch(x, y, idx)):
            finished(rec)


def _pool(model, cfg, x, y, todo, finished, jobs: int, **_):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    size = max(1, min(CHUNK, len(todo) // (2 * jobs)))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
        futures = [ex.submit(worker_run, model, cfg, None, *_batch(x, y, idx)) for idx in _chunks(todo, size)]
        for f in as_completed(futures):
            for rec in f.result():
                finished(rec)


def _ray(model, cfg, x, y, todo, finished, address: str, **_):
    try:
        import ray
    except ImportError:
        raise AuditInputError("--ray needs Ray: pip install 'ray[default]'") from None
    owns = not ray.is_initialized()
    if owns:
        root = str(Path(__file__).resolve().parents[2])
        ray.init(address=None if address == "local" else address,
                 runtime_env={"env_vars": {"PYTHONPATH": root}}, include_dashboard=False,
                 log_to_driver=False, **({"num_cpus": 2} if address == "local" else {}))
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(worker_run)
        size = max(1, min(CHUNK, len(todo) // 8))
        pending = [task.remote(model, cfg, None, *_batch(x, y, idx)) for idx in _chunks(todo, size)]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for rec in ray.get(ready[0]):
                finished(rec)
    finally:
        if owns:
            ray.shutdown()


class Bar:
    """Progress on stderr: a redrawn line on a terminal, one line per sample otherwise."""

    def __init__(self, total: int, done: int, enabled: bool = True):
        self.total, self.done, self.enabled = total, done, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.start = time.monotonic()

    def step(self, rec: dict) -> None:
        self.done += 1
        if not self.enabled:
            return
        s = f"[{self.done}/{self.total}] sample {rec['index']}"
        if "formal" in rec:
            s += " formal " + " ".join(v[0] for v in rec["formal"]["status"].values())
        s += f" {time.monotonic() - self.start:.0f} s"
        sys.stderr.write(("\r" + s + "\x1b[K") if self.tty else s + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
