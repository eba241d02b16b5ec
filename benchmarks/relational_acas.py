"""Relational VNN-LIB 2.0 queries in the style of VNN-COMP 2026, built from the ACAS Xu networks.

    python benchmarks/relational_acas.py ../shared/benchmarks/acasxu_2023 OUT_DIR
    verifier bench OUT_DIR

For a few ACAS Xu networks it writes into OUT_DIR (models it makes itself, queries and an
``instances.csv`` whose onnx column names each network, ``f=...;g=...``):

- ``equal``: two copies of the network (``equal-to``) on tied inputs over a property-1-like box,
  their outputs more than 1e-4 apart somewhere: unsat (the same function);
- ``shifted``: the same two copies, the second one's input 0 shifted by 2^-7 = 0.0078125 (a tie with a float
  offset, which the composed graph adds exactly), their output 0 more than 0.05 apart: decided by the
  bounds over the pair;
- ``perturbed``: the network and a copy whose weights are scaled by 1 + 1e-3 noise
  (``isomorphic-to``), outputs more than 0.05 apart: epsilon-equivalence;
- ``monotone``: two copies whose inputs are equal but input 0 (the intruder's distance), with
  the first copy's distance at least the second's, the first copy's output 0 (clear of
  conflict) below the second's by more than 0.01: "moving the intruder away never makes clear
  of conflict clearly less advisable" (whether it holds is for the verifier to find);
- ``hidden``: the first ReLU layer's output, read as a hidden tensor, negative somewhere: unsat.

Expected answers are given where the construction fixes them (``equal``, ``hidden``).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

NETWORKS = ("1_1", "2_3", "3_3", "4_5", "5_9")
# property 1's box (normalised inputs), the ACAS Xu domain on the angles and speeds
BOX = [(0.6, 0.679857769), (-0.5, 0.5), (-0.5, 0.5), (0.45, 0.5), (-0.5, -0.45)]
X = "[1,1,1,5]"
Y = "[1,5]"


def perturbed(src: Path, dst: Path, seed: int, scale: float = 1e-3) -> None:
    """The model with every weight matrix multiplied elementwise by 1 + scale * N(0, 1)."""
    model = onnx.load(src)
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.ndim == 2:
            b = (a * (1 + scale * rng.standard_normal(a.shape))).astype(a.dtype)
            init.CopyFrom(numpy_helper.from_array(b, init.name))
    onnx.save(model, dst)


def _bounds(var: str, box=BOX) -> str:
    return "".join(f"(assert (>= {var}[0,0,0,{i}] {lo}))\n(assert (<= {var}[0,0,0,{i}] {hi}))\n"
                   for i, (lo, hi) in enumerate(box))


def _ties(a: str, b: str, skip=()) -> str:
    return "".join(f"(assert (== {a}[0,0,0,{i}] {b}[0,0,0,{i}]))\n" for i in range(5) if i not in skip)


def _net(name: str, x: str, y: str, relation: str = "", hidden: str = "") -> str:
    return f"(declare-network {name} {relation}(declare-input {x} real {X}) {hidden}(declare-output {y} real {Y}))\n"


def _apart(a: str, b: str, eps: float, outputs=range(5)) -> str:
    terms = " ".join(f"(> (- {a}[0,{k}] {b}[0,{k}]) {eps}) (< (- {a}[0,{k}] {b}[0,{k}]) -{eps})" for k in outputs)
    return f"(assert (or {terms}))\n"


HEAD = "(vnnlib-version <2.0>)\n"


def queries() -> dict[str, tuple[str, bool, str]]:
    """name -> (text, needs the perturbed model, expected answer or '')."""
    pair = _net("f", "X", "Y") + _net("g", "W", "Z", "(equal-to f) ")
    iso = _net("f", "X", "Y") + _net("g", "W", "Z", "(isomorphic-to f) ")
    shifted = _ties("X", "W", skip=(0,)) + "(assert (== W[0,0,0,0] (+ X[0,0,0,0] 0.0078125)))\n"
    return {
        "equal": (HEAD + pair + _bounds("X") + _ties("X", "W") + _apart("Y", "Z", 1e-4), False, "unsat"),
        "shifted": (HEAD + pair + _bounds("X") + _bounds("W") + shifted + _apart("Y", "Z", 0.05, [0]), False, ""),
        "perturbed": (HEAD + iso + _bounds("X") + _ties("X", "W") + _apart("Y", "Z", 0.05), True, ""),
        "monotone": (HEAD + pair + _bounds("X") + _bounds("W") + _ties("X", "W", skip=(0,))
                     + "(assert (>= X[0,0,0,0] W[0,0,0,0]))\n(assert (< (- Y[0,0] Z[0,0]) -0.01))\n", False, ""),
        "hidden": (HEAD + _net("f", "X", "Y", hidden='(declare-hidden H real [1,50] "relu_1") ') + _bounds("X")
                   + "(assert (or (< H[0,0] 0) (< H[0,17] 0) (< H[0,49] 0)))\n", False, "unsat"),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    src, out = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    (out / "vnnlib").mkdir(exist_ok=True)
    rows = [("onnx", "vnnlib", "timeout", "expected")]
    for k, name in enumerate(NETWORKS):
        model = src / "onnx" / f"ACASXU_run2a_{name}_batch_2000.onnx"
        copy = out / "onnx" / f"ACASXU_run2a_{name}_perturbed.onnx"
        perturbed(model, copy, seed=k)
        for q, (text, needs_copy, expected) in queries().items():
            spec = Path("vnnlib") / f"{q}_{name}.vnnlib"
            (out / spec).write_text(text)
            models = f"f={model}" + (f";g={copy}" if needs_copy else "")
            rows.append((models, str(spec), "60", expected))
    with open(out / "instances.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    print(f"{len(rows) - 1} instances in {out / 'instances.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
