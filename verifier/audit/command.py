"""``verifier audit``: certify a classifier over a data set (see verifier/audit/run.py)."""
from __future__ import annotations

import argparse
import logging
import sys

EXIT_OK, EXIT_USAGE = 0, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, as every other bad input
        print(f"verifier audit: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="verifier audit",
                description="Certify a classifier over a data set: certified accuracy at each radius, certified "
                            "radii and their average, by formal bounds, Lipschitz bounds and randomized smoothing, "
                            "beside what an attack breaks.  Writes DIR/report.json, report.md and "
                            "certified_accuracy.png; a rerun of the same audit resumes.")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--data", required=True, metavar="DATA.npz",
                   help="x (N, *s) for a model input of shape (1, *s), y (N,) integer labels")
    p.add_argument("--eps", required=True, help="radii, comma-separated (e.g. 0.005,0.01,0.02)")
    p.add_argument("--norm", default="linf", choices=("linf", "l2"))
    p.add_argument("--input-range", metavar="LO,HI", help="valid input domain: every ball is clipped to it")
    p.add_argument("--methods", default="formal,lipschitz,smoothing,attack",
                   help="comma-separated: formal, lipschitz, smoothing, attack (default all)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--timeout-per-sample", type=float, default=30.0, metavar="S",
                   help="the formal method's whole budget for one sample (default 30)")
    p.add_argument("--radius-steps", type=int, default=4, metavar="K",
                   help="bisection steps for each sample's certified radius after the eps grid (default 4; 0: the grid only)")
    p.add_argument("--lipsdp", default="auto", choices=("auto", "on", "off"),
                   help="LipSDP for the Lipschitz method (auto: networks of at most 64 hidden neurons; it costs "
                        "seconds to minutes per class pair on larger ones)")
    p.add_argument("--sigma", type=float, default=0.25, help="smoothing noise level (default 0.25)")
    p.add_argument("--smoothing-alpha", type=float, default=0.001, metavar="A",
                   help="smoothing's guarantee holds with probability 1 - A (default 0.001)")
    p.add_argument("--smoothing-n", type=int, default=10_000, metavar="N", help="smoothing's estimation samples")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="samples audited at once, in processes")
    p.add_argument("--ray", metavar="ADDRESS", help="run samples as Ray tasks (auto, HOST:PORT, or 'local')")
    p.add_argument("--limit", type=int, metavar="N", help="the first N samples only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def _range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(_usage(f"--input-range {text!r}: two numbers LO,HI expected")) from None
    return a, b


def _usage(msg: str) -> int:
    print(f"verifier audit: {msg}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from .data import AuditInputError
    from .run import audit

    logging.getLogger("verifier").setLevel(logging.ERROR)   # the engine's per-query chatter
    if args.jobs < 1 or (args.limit is not None and args.limit < 1) or args.smoothing_n < 1 or args.radius_steps < 0:
        return _usage("--jobs, --limit and --smoothing-n must be positive, --radius-steps at least 0")
    try:
        report = audit(args.model, args.data, [e.strip() for e in args.eps.split(",") if e.strip()], args.out,
                       norm=args.norm, input_range=_range(args.input_range),
                       methods=[m.strip() for m in args.methods.split(",") if m.strip()],
                       timeout_per_sample=args.timeout_per_sample, sigma=args.sigma,
                       smoothing_alpha=args.smoothing_alpha, smoothing_n=args.smoothing_n,
                       radius_steps=args.radius_steps, lipsdp=args.lipsdp, jobs=args.jobs,
                       ray=args.ray, limit=args.limit, seed=args.seed, progress=not args.quiet)
    except AuditInputError as e:
        return _usage(str(e))
    from .report import markdown

    print(markdown(report), end="")
    return EXIT_OK
