"""Running instances: one verifier subprocess each, locally on N threads or as Ray tasks.

Each instance runs the real command line,
``<verifier> verify SPEC --network NAME=MODEL --timeout T``, in its own process group, so that a
timeout or a Ctrl-C kills the verifier and everything it started.  The verifier gets T seconds
(the instance's limit, optionally capped) and is killed at T + grace: the grace covers the
interpreter's and torch's start-up, which the verifier's own deadline does not see.  Wall-clock
seconds are measured around the whole subprocess.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .check import Check, check_counterexample
from .instances import Instance, network_name
from .score import judge, points

VERDICTS = {"sat": "sat", "unsat": "unsat", "unknown": "unknown", "timed-out": "timeout"}
LOG_CHARS = 8000  # of stdout (head) and stderr (tail) kept per instance: enough for a traceback


@dataclass(frozen=True)
class RunConfig:
    """How to run each instance.  ``verifier`` is the command prefix (``python -m verifier``)."""

    verifier: tuple[str, ...] = (sys.executable, "-m", "verifier")
    timeout_cap: float | None = None
    grace: float = 10.0
    cpus_per_task: float = 1.0  # Ray only: resources one task reserves
    extra: tuple[str, ...] = ()  # options appended to every verify command (e.g. --no-bab)


@dataclass(frozen=True)
class Result:
    """One row of results.csv (``log`` is written to logs/, not to the CSV)."""

    bench: str
    onnx: str
    vnnlib: str
    expected: str
    verdict: str
    seconds: float
    check: str
    correct: str
    points: int
    timeout: float
    spec: str
    detail: str
    row: int = 0
    log: str = ""
    peak_mb: float | None = None    # the verifier process's peak resident memory (None: not measured)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.bench, self.onnx, self.vnnlib)


@dataclass(frozen=True)
class Outcome:
    verdict: str
    seconds: float
    stdout: str
    log: str
    detail: str = ""
    peak_mb: float | None = None


def time_limit(inst: Instance, cfg: RunConfig) -> float:
    return min(inst.timeout, cfg.timeout_cap) if cfg.timeout_cap else inst.timeout


def command(inst: Instance, cfg: RunConfig) -> list[str]:
    limit = time_limit(inst, cfg)
    seconds = str(int(limit)) if float(limit).is_integer() else repr(float(limit))
    nets = inst.networks
    pairs = [f"{k}={v}" for k, v in nets.items()] if nets is not None else [f"{network_name(inst.spec)}={inst.onnx_path}"]
    options = [a for p in pairs for a in ("--network", p)]
    return [*cfg.verifier, "verify", str(inst.spec), *options, "--timeout", seconds, *cfg.extra]


class Processes:
    """The verifier processes running now, so that Ctrl-C can kill every one of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = threading.Event()

    def start(self, argv: list[str], stdout, stderr) -> subprocess.Popen:
        with self._lock:
            if self.stopping.is_set():
                raise KeyboardInterrupt
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                    start_new_session=True)
            self._procs.add(proc)
            return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping.set()
            for proc in self._procs:
                kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_verifier(inst: Instance, cfg: RunConfig, procs: Processes) -> Outcome:
    """Run one instance's subprocess and read its verdict from the first stdout line.

    Output goes to temporary files, not pipes: a child the verifier leaves behind may hold a pipe
    open for ever, but only the verifier's own exit counts.  Whatever is left of its process group
    then is killed, so that it cannot slow down the next instance.
    """
    argv = command(inst, cfg)
    limit = time_limit(inst, cfg)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = procs.start(argv, out, err)
        killed, peak = False, None
        try:
            killed, peak = _wait(proc, limit + cfg.grace)
            seconds = time.perf_counter() - start
        finally:  # also on Ctrl-C or a Ray cancel: never leave a verifier running
            kill_group(proc)
            proc.wait()
            procs.done(proc)
        stdout, stderr = _read(out), _read(err)
    memory = "" if peak is None else f", peak {peak:.0f} MB"
    log = (f"$ {shlex.join(argv)}\nexit {proc.returncode} after {seconds:.3f} s{memory}"
           f"{' (killed)' if killed else ''}\n"
           f"--- stdout (head)\n{stdout[:LOG_CHARS]}\n--- stderr (tail)\n{stderr[-LOG_CHARS:]}\n")
    first, _, rest = stdout.lstrip("\n").partition("\n")
    if killed:
        return Outcome("timeout", seconds, "", log, f"killed at {limit + cfg.grace:g} s", peak)
    if proc.returncode != 0:
        return Outcome("error", seconds, "", log, f"exit status {proc.returncode}: {_last_line(stderr)}", peak)
    verdict = VERDICTS.get(first.strip())
    if verdict is None:
        return Outcome("error", seconds, "", log, f"first stdout line {first.strip()[:60]!r}", peak)
    return Outcome(verdict, seconds, rest, log, "", peak)


def _hwm_mb(status: str) -> float | None:
    """VmHWM (the peak resident memory of the process image) from /proc/PID/status, in MB; None
    when it cannot be read (no /proc, the process gone or a zombie)."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[bool, float | None]:
    """Wait up to timeout seconds for proc: (killed, its peak resident memory in MB).  The peak is
    the largest VmHWM read while it ran (polled every few ms, at most 20 ms apart): the high-water
    mark of the verifier's own image, which wait4's ru_maxrss is not (it keeps the pages the
    process had as a fork of this one before its exec).  None where /proc gives nothing."""
    end, step, peak = time.monotonic() + timeout, 0.001, None
    status = f"/proc/{proc.pid}/status"
    while True:
        hwm = _hwm_mb(status)
        if hwm is not None:
            peak = hwm if peak is None else max(peak, hwm)
        try:
            proc.wait(timeout=step)
            return False, peak
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= end:
            return True, peak
        step = min(2 * step, 0.02)


def _read(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def evaluate(inst: Instance, cfg: RunConfig, procs: Processes | None = None) -> Result:
    """Run one instance, check a sat answer independently, and score it."""
    try:
        outcome = run_verifier(inst, cfg, procs or Processes())
    except (OSError, ValueError) as e:  # a missing file, a verifier command that does not exist
        outcome = Outcome("error", 0.0, "", f"runner: {e}\n", f"runner: {e}")
    check, detail = "", outcome.detail
    if outcome.verdict == "sat":
        try:
            models = inst.networks if inst.networks is not None else inst.onnx_path
            verdict_check = check_counterexample(inst.spec, models, outcome.stdout)
        except Exception as e:  # the check must never take the campaign down; unconfirmed is wrong
            verdict_check = Check("error", f"checker: {type(e).__name__}: {e}")
        check, detail = verdict_check.status, verdict_check.detail
    correct = judge(inst.expected, outcome.verdict, check)
    return Result(inst.bench, inst.onnx, inst.vnnlib, inst.expected, outcome.verdict, outcome.seconds,
                  check, correct, points(correct), time_limit(inst, cfg), inst.spec_version, detail,
                  inst.row, outcome.log, outcome.peak_mb)


OnResult = Callable[[Result], None]


def run_local(instances: list[Instance], cfg: RunConfig, jobs: int, on_result: OnResult) -> bool:
    """Run on ``jobs`` threads; returns False when interrupted (the finished results stay reported)."""
    procs = Processes()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    pending = {pool.submit(evaluate, inst, cfg, procs) for inst in instances}
    try:
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(fut.result())
    except KeyboardInterrupt:
        procs.stop_all()
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        return False
    pool.shutdown(wait=True)
    return True


def run_ray(instances: list[Instance], cfg: RunConfig, address: str, on_result: OnResult) -> bool:
    """Run as Ray tasks on the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://...``).

    Every node must see the benchmarks and this repository at the same paths (a shared file
    system), and have the verifier's dependencies installed.
    """
    try:
        import ray
    except ImportError:
        raise SystemExit("--ray needs Ray: pip install 'ray[default]' (or the project's ray extra)") from None
    owns = not ray.is_initialized()
    if owns:
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": path}},
                 log_to_driver=False, logging_level="ERROR")
    task = ray.remote(num_cpus=cfg.cpus_per_task, max_retries=0)(evaluate)
    pending = [task.remote(inst, cfg) for inst in instances]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                on_result(ray.get(ref))
        return True
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # not forced: the task gets KeyboardInterrupt and kills its verifier
        return False
    finally:
        if owns:
            ray.shutdown()
