"""``verifier bench``: run benchmark instances through the real command line, check and score them.

A story in five phases: choose instances, describe the run, run them (locally or on Ray), write
results.csv as each finishes, then the summary and the cactus plot.  Imports neither torch nor
the engine: the verifier under test only ever runs in subprocesses.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from .instances import Instance, InstancesError, Selection, read_instances, select
from .progress import Progress
from .report import Run, cactus, read_results, restrict, tally, write_results, write_summary
from .runner import Result, RunConfig, command, run_local, run_ray

EXIT_OK, EXIT_WRONG, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="verifier bench",
        description="Run every instance of one or more benchmarks (folders with an instances.csv) "
                    "through the verifier's command line, check sat answers with onnxruntime, score "
                    "them VNN-COMP style, and write results.csv, summary.md and cactus.png.")
    p.add_argument("benches", nargs="+", type=Path, metavar="BENCH_DIR",
                   help="benchmark folder holding instances.csv (or the csv itself)")
    p.add_argument("--spec", choices=("v1", "v2"), default="v1",
                   help="VNN-LIB version: v2 reads the vnnlib2/ twin of each property (default v1)")
    p.add_argument("--timeout-cap", type=float, metavar="S", help="cap every instance's time limit at S seconds")
    p.add_argument("--grace", type=float, default=10.0, metavar="S",
                   help="kill the verifier at its limit + S seconds and record a timeout (default 10)")
    p.add_argument("--every", type=int, default=1, metavar="K", help="keep every K-th instance per benchmark")
    p.add_argument("--limit", type=int, metavar="N", help="keep at most N instances per benchmark")
    p.add_argument("--filter", metavar="REGEX", help="keep instances whose 'bench/onnx/vnnlib' matches REGEX")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="instances run at once on this machine (default 1, so that timings compare)")
    p.add_argument("--ray", metavar="ADDRESS", help="run as Ray tasks on this cluster (auto, HOST:PORT, ray://...)")
    p.add_argument("--cpus-per-task", type=float, default=1.0, metavar="C", help="Ray CPUs per instance (default 1)")
    p.add_argument("--out", type=Path, help="output folder (default bench-results/<timestamp>)")
    p.add_argument("--label", help="name of this run in the table and the plot (default: the output folder's)")
    p.add_argument("--baseline", type=Path, action="append", default=[], metavar="OLD.csv",
                   help="an earlier results.csv to show beside this run (repeatable)")
    p.add_argument("--verifier-cmd", metavar="CMD",
                   help="command prefix replacing 'python -m verifier', e.g. 'python tests/fake_verifier.py'")
    p.add_argument("--verifier-args", default="", metavar="ARGS",
                   help="extra options appended to every verify command; write it with = since they start with dashes: --verifier-args=\"--no-bab\" (the incomplete engine alone)")
    p.add_argument("--dry-run", action="store_true", help="print the commands that would run, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    return p


def main(argv: list[str]) -> int:
    # a shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN:
    # Ctrl-C (or a harness's SIGINT) must still stop a run and keep its partial results
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = parser().parse_args(argv)
    try:
        instances, skipped = choose(args)
    except InstancesError as e:
        print(f"verifier bench: {e}", file=sys.stderr)
        return EXIT_USAGE
    verifier = tuple(shlex.split(args.verifier_cmd)) if args.verifier_cmd else (sys.executable, "-m", "verifier")
    cfg = RunConfig(verifier, args.timeout_cap, args.grace, args.cpus_per_task, tuple(shlex.split(args.verifier_args)))
    if args.dry_run:
        for inst in instances:
            print(shlex.join(command(inst, cfg)))
        return EXIT_OK
    out = args.out or Path("bench-results") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    label = args.label or out.resolve().name
    header = describe(args, argv, cfg, len(instances))
    results, finished = execute(instances, cfg, args, out)
    keys = {r.key for r in results}
    baselines = [Run(_baseline_label(b), tuple(restrict(read_results(b), keys))) for b in args.baseline]
    runs = [Run(label, tuple(results)), *baselines]
    text = write_summary(out / "summary.md", header, runs, skipped, interrupted=not finished)
    cactus(out / "cactus.png", runs, title=", ".join(sorted({i.bench for i in instances})))
    sys.stdout.write(text)
    sys.stdout.flush()
    print(f"wrote {out / 'results.csv'}, {out / 'summary.md'}, {out / 'cactus.png'}", file=sys.stderr)
    if not finished:
        return EXIT_INTERRUPTED
    return EXIT_WRONG if tally(results).wrong else EXIT_OK


def choose(args: argparse.Namespace) -> tuple[list[Instance], list[str]]:
    sel = Selection(args.filter, args.every, args.limit)
    if args.filter:
        try:
            re.compile(args.filter)
        except re.error as e:
            raise InstancesError(f"--filter: {e}") from None
    chosen: list[Instance] = []
    skipped: list[str] = []
    for bench in args.benches:
        found, missing = read_instances(bench, args.spec)
        chosen += select(found, sel)
        skipped += missing
    if skipped:
        print(f"verifier bench: {len(skipped)} instances have no VNN-LIB 2.0 twin and are skipped", file=sys.stderr)
    return chosen, skipped


def execute(instances: list[Instance], cfg: RunConfig, args: argparse.Namespace, out: Path) -> tuple[list[Result], bool]:
    """Run everything; results.csv is rewritten after every instance, so Ctrl-C or a crash keeps it."""
    results: list[Result] = []
    progress = Progress(len(instances), enabled=not args.no_progress)
    write_results(out / "results.csv", results)

    def on_result(r: Result) -> None:
        results.append(r)
        write_results(out / "results.csv", results)
        log = out / "logs" / r.bench / f"{r.row:04d}-{Path(r.onnx).stem}-{Path(r.vnnlib).stem}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(r.log)
        progress.update(r)

    try:
        if args.ray:
            finished = run_ray(instances, cfg, args.ray, on_result)
        else:
            finished = run_local(instances, cfg, args.jobs, on_result)
    except KeyboardInterrupt:
        finished = False
    progress.close()
    if not finished:
        print(f"verifier bench: interrupted; {len(results)} of {len(instances)} instances finished", file=sys.stderr)
    return results, finished


def _baseline_label(path: Path) -> str:
    return path.resolve().parent.name if path.name == "results.csv" else path.stem


def describe(args: argparse.Namespace, argv: list[str], cfg: RunConfig, n: int) -> list[str]:
    """The run's provenance, for the summary's head: enough to run it again and to trust it."""
    where = f"Ray at {args.ray}" if args.ray else f"{args.jobs} job(s) on {platform.node()}"
    cap = f", limits capped at {args.timeout_cap:g} s" if args.timeout_cap else ""
    return [
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `verifier bench {shlex.join(argv)}`",
        f"- verifier: `{shlex.join(cfg.verifier)}` version {_version(cfg)}; commit {_commit()}",
        f"- {n} instances, VNN-LIB {args.spec}{cap}, kill after limit + {args.grace:g} s; {where}",
        f"- host: {platform.platform()}, Python {platform.python_version()}",
    ]


def _version(cfg: RunConfig) -> str:
    try:
        done = subprocess.run([*cfg.verifier, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({type(e).__name__})"
    first = (done.stdout.strip().splitlines() or [""])[0]
    return first if done.returncode == 0 and first else "unknown"


def _commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{head or 'unknown'}{' (with uncommitted changes)' if dirty else ''}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
