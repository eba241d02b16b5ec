"""Recover the 15 MNIST test images (and labels) behind VNN-COMP's mnist_fc properties.

Each prop_<i>_<eps>.vnnlib bounds every pixel by [x - eps, x + eps] clipped to [0, 1] and asks
for another label to win.  A pixel whose box is not clipped at either end is its centre; one
clipped at 0 is its upper end minus eps, one clipped at 1 its lower end plus eps (eps as the
file writes it, a float32 value), then snapped to the nearest k / 255 (MNIST's pixel values,
within 2e-8 of what the boxes give) and rounded to float32, the model's input type.

    python benchmarks/mnist_fc_images.py [BENCH_DIR] [OUT.npz]

writes x (15, 784, 1) float32 (the models' input is (1, 784, 1)) and y (15,) int64, by default from ../shared/benchmarks/mnist_fc to
benchmarks/examples/mnist_fc_images.npz, for `verifier audit`.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vnnlib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def recover(path: Path) -> tuple[np.ndarray, int]:
    """(pixels (784,) float32, label) from one property file."""
    prop = vnnlib.parse_file(path)
    case = prop.cases[0]
    lo, hi = case.lo, case.hi
    eps = float(np.float32(float(re.search(r"_([0-9.]+)\.vnnlib$", path.name).group(1))))
    x = np.where(lo <= 0.0, hi - eps, np.where(hi >= 1.0, lo + eps, (lo + hi) / 2))
    x = np.round(np.clip(x, 0.0, 1.0) * 255) / 255   # MNIST's pixels are k / 255
    # every conjunct reads Y_j >= Y_label: the label is the column that all rows share
    cols = [set(np.flatnonzero(c.C[0] != 0)) for c in case.region]
    (label,) = set.intersection(*cols)
    return x.astype(np.float32), int(label)


def main(argv: list[str]) -> int:
    bench = Path(argv[0]) if argv else ROOT.parent / "shared" / "benchmarks" / "mnist_fc"
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "benchmarks" / "examples" / "mnist_fc_images.npz"
    files = sorted((bench / "vnnlib").glob("prop_*_0.03.vnnlib"), key=lambda p: int(p.name.split("_")[1]))
    if not files:
        print(f"no prop_*_0.03.vnnlib under {bench / 'vnnlib'}", file=sys.stderr)
        return 2
    xs, ys = zip(*(recover(p) for p in files))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=np.stack(xs)[:, :, None], y=np.array(ys, dtype=np.int64))
    print(f"{len(xs)} images, labels {list(ys)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
