"""A stand-in for ``python -m verifier`` that lets the benchmark runner be tested on its own.

    python tests/fake_verifier.py [--mode MODE] verify SPEC --network NAME=MODEL --timeout T
    python tests/fake_verifier.py --version

It speaks the verifier's command-line contract (first stdout line a verdict, then for ``sat`` the
assignment in the VNN-LIB 2.0 form) and is deliberately UNSOUND: ``search`` tries the box centre,
its corners and random points with onnxruntime, answers ``sat`` with the first counterexample and
``unsat`` when it finds none.  The other modes misbehave on purpose:

  tamper-input   a real counterexample, then X[0] moved 1e-3 outside its upper bound
  tamper-output  ``sat`` with the box centre and invented outputs (not a counterexample)
  no-assignment  ``sat`` and nothing else
  sleep          never answers (the runner must kill it)
  crash          a traceback and exit status 3
  garbage        a first line that is not a verdict
  timed-out, unknown   that answer
  pairs          like search, but the assignment in VNN-COMP's ((X_0 v) ...) form

--nap S sleeps before answering; --pid-dir D records the process ids (with --spawn-child, also
that of a sleeping child) so that tests can see the runner kill the whole process group.

Candidate points are judged with the runner's own evaluator (verifier.bench.check): a test
scaffold, not an oracle; tests/test_bench_check.py checks that evaluator against hand-made cases.
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier.bench.check import INPUT, OUTPUT, holds, parse_spec, read_text, run_model  # noqa: E402


def main(argv: list[str]) -> int:
    if "--version" in argv:
        print("fake-verifier 0.0.1")
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="search")
    p.add_argument("--samples", type=int, default=3000)
    p.add_argument("--nap", type=float, default=0.0, help="sleep this long before answering")
    p.add_argument("--pid-dir", type=Path, help="record this process's id (and its child's) here")
    p.add_argument("--spawn-child", action="store_true", help="start a sleeping child process first")
    p.add_argument("cmd", choices=["verify"])
    p.add_argument("spec", type=Path)
    p.add_argument("--network", action="append", required=True)
    p.add_argument("--timeout", type=float, required=True)
    a = p.parse_args(argv)
    pids = [os.getpid()]
    if a.spawn_child:
        pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]).pid)
    if a.pid_dir:
        for pid in pids:
            (a.pid_dir / str(pid)).touch()
    time.sleep(a.nap)
    if a.mode == "sleep":
        time.sleep(3600)
    if a.mode == "crash":
        print("Traceback (most recent call last):\nRuntimeError: fake crash", file=sys.stderr)
        return 3
    if a.mode in ("garbage", "timed-out", "unknown"):
        print({"garbage": "maybe"}.get(a.mode, a.mode))
        return 0
    if a.mode == "no-assignment":
        print("sat")
        return 0
    spec = parse_spec(read_text(a.spec))
    name, _, model = a.network[0].partition("=")
    if spec.networks and spec.networks[0] != name:
        print(f"network {name} is not declared (the property declares {spec.networks})", file=sys.stderr)
        return 2
    x_name = next(t.name for t in spec.tensors.values() if t.role == INPUT)
    lo, hi = box(spec, x_name)
    if a.mode == "tamper-output":
        x = (lo + hi) / 2
        print_sat(spec, x_name, x, np.full(8, 1e9), pairs=False)
        return 0
    found = search(spec, x_name, Path(model), lo, hi, a.samples)
    if found is None:
        print("unsat")
        return 0
    x, y = found
    if a.mode == "tamper-input":
        x = x.copy()
        x[0] = hi[0] + 1e-3
    print_sat(spec, x_name, x, y, pairs=a.mode == "pairs")
    return 0


def box(spec, x_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-element bounds from the property's simple input comparisons (X op const)."""
    n = max(spec.tensors[x_name].shape[0], 1)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    stack = [spec.formula]
    while stack:
        node = stack.pop()
        if node[0] in ("and", "or"):
            stack.extend(node[1])
            continue
        _, op, terms, input_only = node
        if input_only and len(terms) == 2 and terms[0][0] == "var" and terms[1][0] == "const":
            i, c = terms[0][2], terms[1][1]
            if i >= n:
                lo, hi = np.resize(lo, i + 1), np.resize(hi, i + 1)
                lo[n:], hi[n:], n = -np.inf, np.inf, i + 1
            if op in ("<=", "<"):
                hi[i] = min(hi[i], c)
            elif op in (">=", ">"):
                lo[i] = max(lo[i], c)
    return np.where(np.isfinite(lo), lo, -1.0), np.where(np.isfinite(hi), hi, 1.0)


def search(spec, x_name, model, lo, hi, samples):
    rng = np.random.default_rng(0)
    corners = (np.array(c) for c in itertools.product(*zip(lo, hi))) if lo.size <= 10 else iter(())
    points = itertools.chain([(lo + hi) / 2], corners, (rng.uniform(lo, hi) for _ in range(samples)))
    out_name = next(t.name for t in spec.tensors.values() if t.role == OUTPUT)
    for x in points:
        seen, outs = run_model(model, [x])
        env = {x_name: seen[0].tolist(), out_name: outs[0].tolist()}
        if holds(spec.formula, env):
            return seen[0], outs[0]
    return None


def print_sat(spec, x_name, x, y, pairs: bool) -> None:
    print("sat")
    y_name = next(t.name for t in spec.tensors.values() if t.role == OUTPUT)
    if pairs:
        cells = [f"(X_{i} {float(v)!r})" for i, v in enumerate(x)] + [f"(Y_{i} {float(v)!r})" for i, v in enumerate(y)]
        print("(" + "\n ".join(cells) + ")")
        return
    for name, vals in ((x_name, x), (y_name, y)):
        print(f"{name} Real [{len(vals)}]")
        for v in vals:
            print(repr(float(v)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
