"""Tightness and speed of the incomplete bounds (IBP, CROWN, alpha-CROWN) on real instances.

    python benchmarks/bound_stats.py tightness ../shared/benchmarks/mnist_fc [--every K]
    python benchmarks/bound_stats.py speed ../shared/benchmarks/mnist_fc/onnx/mnist-net_256x6.onnx \
        ../shared/benchmarks/mnist_fc/vnnlib/prop_0_0.03.vnnlib [--device cpu|cuda] [--batch B]

`tightness` prints, per instance and on average, the mean over the property's rows of the lower
bound of c.y + d given by each method (higher is tighter; > 0 proves the row), and checks the
ordering IBP <= CROWN <= alpha-CROWN that the engine relies on (CROWN's intermediate bounds are
intersected with IBP's, and alpha starts from CROWN's slopes and keeps the best).  `speed`
measures bounds per second (one "bound" = all rows of the property over one input box) for CROWN
and alpha-CROWN, batching B copies of the box.
"""
from __future__ import annotations

import argparse
import csv
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vnnlib  # noqa: E402
from verifier.bounds.alpha import AlphaConfig  # noqa: E402
from verifier.budget import Deadline  # noqa: E402
from verifier.incomplete import alpha_crown_lower, crown_lower, ibp_lower  # noqa: E402
from verifier.onnx_import import load_graph  # noqa: E402
from verifier.pipeline import choose_device, numeric_setup  # noqa: E402
from verifier.simplify import simplify  # noqa: E402
from verifier.spec import build_cases, bound_tolerance  # noqa: E402


def _load(onnx: str, spec: str, device: torch.device):
    dtype = numeric_setup(device)
    g = simplify(load_graph(onnx)).to(device, dtype)
    cs = build_cases(vnnlib.parse_file(spec), g.input_shape, g.output_size, dtype, device)
    return g, cs, dtype


def _mean_rows(cs, lb) -> float:
    rows = cs.conj >= 0
    return float(lb[rows].mean())


def tightness(args) -> int:
    device = choose_device(args.device)
    bench = Path(args.bench)
    rows = list(csv.DictReader(open(bench / "instances.csv")))[:: args.every]
    sums = [0.0, 0.0, 0.0]
    bad = 0
    print("instance,ibp,crown,alpha")
    for r in rows:
        g, cs, dtype = _load(str(bench / r["onnx"]), str(bench / r["vnnlib"]), device)
        with torch.no_grad():
            ibp = ibp_lower(g, cs)
        crown, pre = crown_lower(g, cs)
        alpha = alpha_crown_lower(g, cs, pre, AlphaConfig(iterations=args.alpha_iterations), Deadline(60),
                                  bound_tolerance(dtype))
        m = [_mean_rows(cs, t) for t in (ibp, crown, alpha)]
        ok = bool((crown >= ibp - 1e-9).all() and (alpha >= crown - 1e-9).all())
        bad += not ok
        sums = [a + b for a, b in zip(sums, m)]
        print(f"{r['onnx']}:{r['vnnlib']},{m[0]:.6g},{m[1]:.6g},{m[2]:.6g}{'' if ok else ',ORDER-VIOLATED'}")
    n = max(1, len(rows))
    print(f"mean over {len(rows)} instances: IBP {sums[0] / n:.6g}  CROWN {sums[1] / n:.6g}  alpha {sums[2] / n:.6g}; "
          f"ordering violated on {bad}")
    return 1 if bad else 0


def speed(args) -> int:
    device = choose_device(args.device)
    g, cs, dtype = _load(args.onnx, args.spec, device)
    cs = cs.select([0] * args.batch)

    def timed(fn, reps=3):
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / reps

    t_crown = timed(lambda: crown_lower(g, cs))
    _, pre = crown_lower(g, cs)
    cfg = AlphaConfig(iterations=args.alpha_iterations)
    never = Deadline(1e9)
    t_alpha = timed(lambda: alpha_crown_lower(g, cs, pre, cfg, never, float("inf")), reps=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{Path(args.onnx).name} on {device} ({dtype}), batch {args.batch}: "
          f"CROWN {args.batch / t_crown:.2f} bounds/s ({t_crown:.3f} s per batch), "
          f"alpha-CROWN ({args.alpha_iterations} it.) {args.batch / t_alpha:.2f} bounds/s ({t_alpha:.3f} s); "
          f"peak RSS {peak:.0f} MiB")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tightness")
    t.add_argument("bench")
    t.add_argument("--every", type=int, default=1)
    t.add_argument("--device", default="cpu")
    t.add_argument("--alpha-iterations", type=int, default=20)
    s = sub.add_parser("speed")
    s.add_argument("onnx")
    s.add_argument("spec")
    s.add_argument("--device", default="cpu")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--alpha-iterations", type=int, default=20)
    args = p.parse_args()
    return tightness(args) if args.cmd == "tightness" else speed(args)


if __name__ == "__main__":
    sys.exit(main())
