"""Soundness fuzzing: random small networks and properties whose answer is partly known, decided
by every engine configuration; any wrong or contradictory verdict is saved for a regression test.

For each seed: a random network (ReLU / smooth MLPs, conv nets with pooling and batch norm, a
residual block, slicing branches, unusual wiring, a product of two values with PRelu), a random
float32 box, and a search (uniform samples, box corners, coordinate hill-climbing on the IR) for
the point that maximises a random output objective.  onnxruntime evaluates the best points on
the model as given; the property is then written around that value:

- "below": the violation threshold sits at or just under what onnxruntime reached (margins
  0, 1e-9, 1e-6, 1e-3 of the output scale).  A violating float32 input is in hand, so `unsat` is
  wrong.  These queries are VNN-LIB 2.0 with float32 variables: the question is about the float
  model, which is what onnxruntime runs.
- "above": the threshold sits just over the best value found (the answer is not known).  Here a
  `sat` from one configuration (confirmed by onnxruntime) and an `unsat` from another contradict.

Objectives: one output, a difference of two, a conjunction of two rows, a disjunction with one
unreachable disjunct.  Not collected by pytest (tests/test_fuzz_soundness.py runs a few seeds);
run it as

    python tests/fuzz_soundness.py --seeds 0:200 --timeout 5 --out /tmp/fuzz

Exit status 1 when any finding was saved (the model, the query and the verdicts).
"""
from __future__ import annotations

import argparse
import dataclasses
import decimal
import json
import pathlib
import sys
import time
from typing import Callable

import numpy as np
import onnx
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from helpers_nets import (Builder, random_branches, random_convnet, random_exotic, random_mlp,  # noqa: E402
                          random_residual, run_float64, run_onnxruntime)

from verifier.config import AlphaConfig, BabConfig, LPConfig, VerifyConfig  # noqa: E402

MARGINS = (0.0, 1e-9, 1e-6, 1e-3)


# --------------------------------------------------------------------------- networks
def _leaky_mlp(rng: np.random.Generator) -> onnx.ModelProto:
    b = Builder(rng, 13)
    n_in = int(rng.integers(2, 6))
    h = b.gemm("x", n_in, 8)
    h = b.op("LeakyRelu", [h], alpha=float(rng.uniform(0.01, 0.3)))
    h = b.op("Relu", [b.gemm(h, 8, 6)])
    return b.finish("x", [1, n_in], b.gemm(h, 6, 3))


def _product_net(rng: np.random.Generator) -> onnx.ModelProto:
    """Gemm, then the product of its two halves (x * y of two variables), PRelu, Gemm."""
    b = Builder(rng, 13)
    n_in = int(rng.integers(2, 5))
    h = b.gemm("x", n_in, 8)
    left = b.op("Slice", [h, b.ints([0]), b.ints([4]), b.ints([1])])
    right = b.op("Slice", [h, b.ints([4]), b.ints([8]), b.ints([1])])
    h = b.op("Mul", [left, right])
    h = b.op("PRelu", [h, b.const(rng.uniform(-0.5, 0.5, (1, 4)))])
    return b.finish("x", [1, n_in], b.gemm(h, 4, 3))


def _maxpool_net(rng: np.random.Generator) -> onnx.ModelProto:
    return random_convnet(rng, c=1, hw=5, pool="max")


NETWORKS: dict[str, Callable[[np.random.Generator], onnx.ModelProto]] = {
    "relu_mlp": lambda r: random_mlp(r, int(r.integers(2, 8)), [int(r.integers(4, 16))] * int(r.integers(1, 4)),
                                     int(r.integers(2, 5)), ["Relu"]),
    "smooth_mlp": lambda r: random_mlp(r, int(r.integers(2, 6)), [int(r.integers(4, 10))] * int(r.integers(1, 3)),
                                       3, [str(r.choice(["Sigmoid", "Tanh"])), "Relu"]),
    "leaky_mlp": _leaky_mlp,
    "convnet": lambda r: random_convnet(r, c=2, hw=5, pool="avg"),
    "maxpool": _maxpool_net,
    "residual": lambda r: random_residual(r, c=1, hw=4),
    "branches": lambda r: random_branches(r, n_in=4),
    "exotic": random_exotic,
    "product": _product_net,
}


# --------------------------------------------------------------------------- configurations
def configurations(n_in: int, smooth: bool) -> dict[str, VerifyConfig]:
    base = VerifyConfig()
    out = {
        "default": base,
        "relu_split": dataclasses.replace(base, bab=BabConfig(branching="activation")),
        "input_split": dataclasses.replace(base, bab=BabConfig(branching="input")),
        "no_alpha": dataclasses.replace(base, alpha=False, bab_alpha_iterations=0),
        "ibp_only": dataclasses.replace(base, crown=False, alpha=False, bab=BabConfig(enabled=False)),
        "incomplete": dataclasses.replace(base, bab=BabConfig(enabled=False)),
        "lp": dataclasses.replace(base, lp=LPConfig(enabled=True)),
        "alpha_heavy": dataclasses.replace(base, alpha_cfg=AlphaConfig(iterations=50, lr=0.5)),
        "hybrid_bounds": dataclasses.replace(base, bab=BabConfig(branching="input", input_split_bounds="hybrid")),
    }
    if not smooth:
        out["milp"] = dataclasses.replace(base, engine="milp")
    if n_in <= 8 and not smooth:
        out["sdp"] = dataclasses.replace(base, engine="sdp")
    return out


# --------------------------------------------------------------------------- the search
@dataclasses.dataclass
class Problem:
    model: onnx.ModelProto
    shape: tuple[int, ...]
    lo: np.ndarray            # float32, flat
    hi: np.ndarray
    n_out: int
    inputs: tuple = ()        # Rows over input indices, each sum coef x <= t (the witness meets them)


def _box(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    centre = rng.uniform(-1, 1, n)
    rad = float(rng.choice([0.01, 0.1, 0.5, 1.0])) * rng.uniform(0.5, 1.0, n)
    lo = (centre - rad).astype(np.float32)
    hi = (centre + rad).astype(np.float32)
    if rng.random() < 0.15:   # a degenerate coordinate: a point interval
        k = int(rng.integers(n))
        hi[k] = lo[k]
    return lo, np.maximum(lo, hi)


def _ir_forward(graph, xs: np.ndarray) -> np.ndarray:
    from verifier.evaluate import forward

    with torch.no_grad():
        t = torch.as_tensor(xs.astype(np.float64)).reshape((len(xs),) + tuple(graph.input_shape))
        return forward(graph, t).reshape(len(xs), -1).numpy()


def _search(graph, p: Problem, objective: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator,
            n: int = 4000, steps: int = 30) -> np.ndarray:
    """Candidate maximisers of objective(y) over the box (float32 points, best first)."""
    d = p.lo.size
    xs = rng.uniform(p.lo, p.hi, (n, d))
    corners = np.where(rng.random((n // 4, d)) < 0.5, p.lo, p.hi)
    xs = np.concatenate([xs, corners]).astype(np.float32)
    vals = objective(_ir_forward(graph, xs))
    elite = xs[np.argsort(-vals)[:16]]
    width = (p.hi - p.lo).astype(np.float64)
    for s in range(steps):       # hill-climbing around the elites, shrinking steps
        step = width * 0.3 * (0.8 ** s)
        kids = elite[:, None, :] + rng.normal(0, 1, (len(elite), 32, d)) * step
        kids = np.clip(kids.reshape(-1, d), p.lo, p.hi).astype(np.float32)
        pool = np.concatenate([elite, kids])
        v = objective(_ir_forward(graph, pool))
        elite = pool[np.argsort(-v)[:16]]
    return elite


# --------------------------------------------------------------------------- properties
@dataclasses.dataclass
class Row:
    """sum_k coef[k] * v[k] against t: >= t on outputs (the violation side), <= t on inputs."""
    coef: dict[int, int]
    t: float
    strict: bool = False    # > (or <) instead of >= (<=)


def _value(row: Row, y: np.ndarray) -> float:
    return float(sum(c * np.float64(y[k]) for k, c in row.coef.items()))


def _objectives(rng: np.random.Generator, n_out: int) -> tuple[str, list[dict[int, int]]]:
    i, j = rng.choice(n_out, 2, replace=False) if n_out > 1 else (0, 0)
    kind = str(rng.choice(["single", "difference", "conjunction", "disjunction"]))
    s = int(rng.choice([-1, 1]))
    if kind == "single" or n_out == 1:
        return "single", [{int(i): s}]
    if kind == "difference":
        return kind, [{int(i): 1, int(j): -1}]
    return kind, [{int(i): s}, {int(j): int(rng.choice([-1, 1]))}]


def _fmt(x: float) -> str:
    """The float's exact value as a decimal (a shortest repr is not the same rational)."""
    return format(decimal.Decimal(float(x)), "f")


def _term(coef: dict[int, int], name: Callable[[int], str]) -> str:
    parts = [name(k) if c == 1 else f"(* -1.0 {name(k)})" for k, c in coef.items()]
    return parts[0] if len(parts) == 1 else "(+ " + " ".join(parts) + ")"


def vnnlib2(p: Problem, kind: str, rows: list[Row]) -> str:
    def idx(k: int, shape) -> str:
        return ",".join(str(int(v)) for v in np.unravel_index(k, shape))
    xs = lambda k: f"X[{idx(k, p.shape)}]"
    ys = lambda k: f"Y[{idx(k, (1, p.n_out))}]"
    lines = ["(vnnlib-version <2.0>)",
             f"(declare-network f (declare-input X float32 [{','.join(map(str, p.shape))}])"
             f" (declare-output Y float32 [1,{p.n_out}]))"]
    for k in range(p.lo.size):
        lines.append(f"(assert (and (>= {xs(k)} {_fmt(p.lo[k])}) (<= {xs(k)} {_fmt(p.hi[k])})))")
    lines += [f"(assert (<= {_term(r.coef, xs)} {_fmt(r.t)}))" for r in p.inputs]
    atoms = [f"({'>' if r.strict else '>='} {_term(r.coef, ys)} {_fmt(r.t)})" for r in rows]
    if kind == "conjunction":
        lines.append(f"(assert (and {' '.join(atoms)}))")
    elif kind == "disjunction":
        lines.append(f"(assert (or {' '.join(atoms)}))")
    else:
        lines.append(f"(assert {atoms[0]})")
    return "\n".join(lines) + "\n"


def vnnlib1(p: Problem, kind: str, rows: list[Row]) -> str:
    lines = [f"(declare-const X_{k} Real)" for k in range(p.lo.size)]
    lines += [f"(declare-const Y_{k} Real)" for k in range(p.n_out)]
    for k in range(p.lo.size):
        lines += [f"(assert (>= X_{k} {_fmt(p.lo[k])}))", f"(assert (<= X_{k} {_fmt(p.hi[k])}))"]
    lines += [f"(assert (<= {_term(r.coef, lambda k: f'X_{k}')} {_fmt(r.t)}))" for r in p.inputs]
    atoms = [f"({'>' if r.strict else '>='} {_term(r.coef, lambda k: f'Y_{k}')} {_fmt(r.t)})" for r in rows]
    if kind == "disjunction":
        lines.append(f"(assert (or {' '.join(f'(and {a})' for a in atoms)}))")
    else:
        lines += [f"(assert {a})" for a in atoms]
    return "\n".join(lines) + "\n"


def properties(p: Problem, graph, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """(x, [(mode, label, query text)]) for this problem: x (float32, flat) violates every
    'below' query."""
    kind, coefs = _objectives(rng, p.n_out)
    first = lambda y: sum(c * y[:, k] for k, c in coefs[0].items())
    cands = _search(graph, p, first, rng)
    ys = [np.asarray(run_onnxruntime(p.model, x.reshape(p.shape)), dtype=np.float32).reshape(-1) for x in cands[:4]]
    rows0 = [Row(c, 0.0) for c in coefs]
    best = max(range(len(ys)), key=lambda i: _value(rows0[0], ys[i]))
    x, y = cands[best], ys[best]
    if p.lo.size > 1 and rng.random() < 0.5:   # a row over two inputs through the witness (or just past it)
        i, j = (int(v) for v in rng.choice(p.lo.size, 2, replace=False))
        coef = {i: 1, j: int(rng.choice([-1, 1]))}
        slack = float(rng.choice([0.0, 1e-7, 1e-2])) * float(1 + np.abs(x).max())
        p.inputs = (Row(coef, _value(Row(coef, 0.0), x) + slack),)   # exact: two float32 terms in float64
    scale = max(1e-3, float(np.abs(y).max()))
    out = []
    for m in MARGINS:
        # a margin leaves room for a strict comparison: the witness still meets it
        rows = [Row(c, _value(Row(c, 0.0), y) - m * scale, strict=m > 0 and bool(rng.random() < 0.5)) for c in coefs]
        if kind == "disjunction":   # the second disjunct far out of reach
            rows[1] = Row(coefs[1], _value(Row(coefs[1], 0.0), y) + 1e3 * scale)
        out.append(("below", f"{kind}-below-{m:g}", vnnlib2(p, kind, rows)))
    # over the reals (VNN-LIB 1.0): the network in float64 at x, whose own rounding (~1e-15
    # relative) is far below the smallest margin, so x violates these too
    y64 = np.asarray(run_float64(p.model, x.reshape(p.shape)), dtype=np.float64).reshape(-1)
    # the float64 oracle must agree with onnxruntime's float32 run (it once did not: the
    # reference evaluator's BatchNormalization, fixed in helpers_nets); else no real-valued queries
    agree = np.abs(y64 - y).max() <= 1e-4 * scale
    for m in (1e-9, 1e-3) if agree else ():
        rows = [Row(c, _value(Row(c, 0.0), y64) - m * scale) for c in coefs]
        if kind == "disjunction":
            rows[1] = Row(coefs[1], _value(Row(coefs[1], 0.0), y64) + 1e3 * scale)
        out.append(("below", f"{kind}-below-{m:g}-reals", vnnlib1(p, kind, rows)))
    for m in (1e-6, 1e-3, 1e-1):
        rows = [Row(c, _value(Row(c, 0.0), y) + (m * scale if i == 0 else -m * scale)) for i, c in enumerate(coefs)]
        if kind == "disjunction":
            rows[1] = Row(coefs[1], _value(Row(coefs[1], 0.0), y) + 1e3 * scale)
        out.append(("above", f"{kind}-above-{m:g}", vnnlib2(p, kind, rows)))
    return x, out


# --------------------------------------------------------------------------- the run
def _witnessed(model: onnx.ModelProto, shape, prop, x: np.ndarray | None) -> bool:
    """Our own check of a sat: x lies in some case's input region and onnxruntime's output for
    it (the float32 model as given) lies in that case's violating region, exactly."""
    if x is None:
        return False
    x32 = np.asarray(x, dtype=np.float32).reshape(-1)
    y = np.asarray(run_onnxruntime(model, x32.reshape(shape))).reshape(-1)
    return any(c.contains_input(x32.astype(np.float64)) and c.violated_by(y) for c in prop.cases)


def run_seed(seed: int, timeout: float, out: pathlib.Path, only: set[str] | None = None,
             log=print, per_query: int = 0) -> list[dict]:
    import verifier
    from verifier.onnx_import import to_graph
    from verifier.verdict import Verdict
    from vnnlib import parse_text

    rng = np.random.default_rng(seed)
    family = list(NETWORKS)[seed % len(NETWORKS)]
    model = NETWORKS[family](rng)
    graph = to_graph(model)
    shape = tuple(int(d.dim_value) for d in model.graph.input[0].type.tensor_type.shape.dim)
    lo, hi = _box(rng, int(np.prod(shape)))
    n_out = int(np.prod([d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]))
    p = Problem(model, shape, lo, hi, n_out)
    smooth = family in ("smooth_mlp", "branches", "exotic", "product")
    cfgs = configurations(lo.size, smooth)
    findings = []
    folder = out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "net.onnx")
    for mode, label, text in properties(p, graph, rng)[1]:
        q = folder / f"{label}.vnnlib"
        q.write_text(text)
        verdicts = {}
        names = [n for n in cfgs if not only or n in only]
        if per_query and len(names) > per_query:   # default, and a rotating sample of the others
            head = names[:1] if names[0] == "default" else []
            names = head + list(rng.choice(names[len(head):], per_query - len(head), replace=False))
        for name in names:
            cfg = cfgs[name]
            t0 = time.monotonic()
            try:
                r = verifier.verify(folder / "net.onnx", q, timeout=timeout, config=cfg)
                v = r.verdict.value
                if r.verdict is Verdict.SAT and not _witnessed(model, shape, parse_text(text), r.x):
                    v = "error: a sat whose counterexample onnxruntime does not confirm"
            except Exception as e:   # an internal error is a finding too
                v = f"error: {type(e).__name__}: {e}"
            verdicts[name] = (v, round(time.monotonic() - t0, 2))
        vs = {v for v, _ in verdicts.values()}
        bad = (mode == "below" and Verdict.UNSAT.value in vs) or \
              (mode == "above" and {"sat", "unsat"} <= vs) or any(v.startswith("error") for v in vs)
        log(f"seed {seed} {family} {label}: " + " ".join(f"{k}={v}" for k, (v, _) in verdicts.items())
            + ("   <-- FINDING" if bad else ""))
        if bad:
            findings.append({"seed": seed, "family": family, "query": str(q), "mode": mode, "verdicts": verdicts})
    if not findings:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    return findings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0:20", help="first:last (exclusive)")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--out", default="fuzz-findings")
    ap.add_argument("--only", default="", help="comma-separated configuration names")
    ap.add_argument("--per-query", type=int, default=0,
                    help="configurations per query: default and a random sample of the others (0: all)")
    a = ap.parse_args(argv)
    first, last = (int(v) for v in a.seeds.split(":"))
    out = pathlib.Path(a.out)
    only = set(filter(None, a.only.split(","))) or None
    findings = []
    for seed in range(first, last):
        findings += run_seed(seed, a.timeout, out, only, per_query=a.per_query)
    (out / "findings.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "findings.json").write_text(json.dumps(findings, indent=1))
    print(f"{len(findings)} findings over seeds {first}..{last - 1}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
