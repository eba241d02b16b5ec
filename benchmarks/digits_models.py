#!/usr/bin/env python3
"""Four digit classifiers for a certified-robustness audit: a normally trained and an IBP-trained
(Gowal et al. 2018) version of a small MLP and of a small CNN, on scikit-learn's bundled digits
(8 x 8 images, 10 classes, 1797 samples, pixels scaled to [0, 1]), with the held-out test split.

    python benchmarks/digits_models.py [OUT_DIR] [--quick]

Writes (OUT_DIR defaults to benchmarks/examples/digits/, which git ignores):

    OUT_DIR/digits_mlp.onnx        input [1,64]: Gemm 50, Relu, Gemm 50, Relu, Gemm 10
    OUT_DIR/digits_mlp_ibp.onnx    the same, IBP-trained
    OUT_DIR/digits_cnn.onnx        input [1,1,8,8]: Conv 3x3 (8 ch, pad 1), Relu, Conv 3x3 stride 2
                                   (16 ch, pad 1), Relu, Flatten, Gemm 32, Relu, Gemm 10
    OUT_DIR/digits_cnn_ibp.onnx    the same, IBP-trained
    OUT_DIR/digits_test.npz        x float32 (N, 64), y int64 (N,): the test split, for the MLPs
    OUT_DIR/digits_test_img.npz    x float32 (N, 1, 8, 8), y: the same samples in the same order, for the CNNs

The test split is a fixed stratified 25 %.  IBP training ramps the L-inf radius from 0 to EPS_TRAIN
after a natural warm-up and mixes kappa * natural + (1 - kappa) * robust loss, kappa going from 1 to
KAPPA_END; the robust loss is the cross-entropy of the worst-case logits, from interval bounds with
the last layer elided (bounds on z_y - z_j directly).  Per model the script prints the clean test
accuracy and the fraction of test samples that IBP certifies at L-inf radii CERT_EPS (box clipped to
[0, 1]).  Seeded, single-threaded, deterministic algorithms, ONNX written with onnx.helper (no
timestamps): two runs give the same bytes.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

OPSET = 17
IR_VERSION = 8  # as make_examples.py: loadable by older onnxruntimes
DEFAULT_OUT = Path(__file__).resolve().parent / "examples" / "digits"
SEED = 0
TEST_FRACTION = 0.25
CERT_EPS = (0.05, 0.1)
MLP_SHAPE, CNN_SHAPE = (64,), (1, 8, 8)  # without the batch dimension


@dataclass(frozen=True)
class TrainConfig:
    """Adam for `epochs` epochs (lr divided by 10 for the last `decay_epochs`).  robust: IBP
    training, eps 0 for `warmup` epochs, then ramped linearly to `eps` over `ramp` epochs."""

    epochs: int
    lr: float = 2e-3
    batch: int = 50
    decay_epochs: int = 0
    robust: bool = False
    eps: float = 0.0
    warmup: int = 0
    ramp: int = 1
    kappa_end: float = 0.5

    def schedule(self, epoch: float) -> tuple[float, float]:
        """(eps, kappa) at a fractional epoch."""
        if not self.robust:
            return 0.0, 1.0
        t = min(max((epoch - self.warmup) / self.ramp, 0.0), 1.0)
        return t * self.eps, 1.0 - t * (1.0 - self.kappa_end)


EPS_TRAIN = 0.11
FULL = {"normal": TrainConfig(epochs=60, decay_epochs=15),
        "ibp": TrainConfig(epochs=120, decay_epochs=20, robust=True, eps=EPS_TRAIN, warmup=5, ramp=60)}
QUICK = {"normal": TrainConfig(epochs=8),
         "ibp": TrainConfig(epochs=16, robust=True, eps=EPS_TRAIN, warmup=1, ramp=8)}


# --------------------------------------------------------------------------- data and networks
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train (n, 64) float32 in [0, 1], y_train int64, x_test, y_test (stratified, seeded)."""
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y)
    return x_tr, y_tr, x_te, y_te


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 10))


def cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=1, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


# --------------------------------------------------------------------------- interval bound propagation
def interval(layers: nn.Sequential, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the output of `layers` over the box [lo, hi] (B, *in): centre / radius form for
    the affine layers, monotone for ReLU and Flatten."""
    for m in layers:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            mid = m(mid)
            rad = (nn.functional.linear(rad, m.weight.abs()) if isinstance(m, nn.Linear) else
                   nn.functional.conv2d(rad, m.weight.abs(), None, m.stride, m.padding))
            lo, hi = mid - rad, mid + rad
        elif isinstance(m, (nn.ReLU, nn.Flatten)):
            lo, hi = m(lo), m(hi)
        else:
            raise TypeError(f"no interval rule for {type(m).__name__}")
    return lo, hi


def margin_lower(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Lower bounds on z_y - z_j over the L-inf ball of radius eps around x, clipped to [0, 1],
    with the last (Linear) layer elided into the margins.  x: (B, *in), y: (B,).  Returns (B, 10),
    0 at j = y."""
    lo, hi = interval(net[:-1], (x - eps).clamp(0, 1), (x + eps).clamp(0, 1))
    last = net[-1]
    W = last.weight[y][:, None, :] - last.weight[None]  # (B, 10, h): rows w_y - w_j
    b = last.bias[y][:, None] - last.bias[None]
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    return torch.einsum("bjh,bh->bj", W, mid) - torch.einsum("bjh,bh->bj", W.abs(), rad) + b


def certified(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    """Fraction of samples whose every margin is provably positive over the ball."""
    with torch.no_grad():
        m = margin_lower(net, x, y, eps)
        m[torch.arange(len(y)), y] = 1.0
        return float((m > 0).all(1).float().mean())


def accuracy(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- training
def train(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, seed: int) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps = (len(x) + cfg.batch - 1) // cfg.batch
    for epoch in range(cfg.epochs):
        if epoch == cfg.epochs - cfg.decay_epochs:
            for g in opt.param_groups:
                g["lr"] = cfg.lr / 10
        perm = torch.randperm(len(x), generator=gen)
        for s in range(steps):
            idx = perm[s * cfg.batch:(s + 1) * cfg.batch]
            eps, kappa = cfg.schedule(epoch + s / steps)
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            if eps > 0:
                robust = nn.functional.cross_entropy(-margin_lower(net, x[idx], y[idx], eps), y[idx])
                loss = kappa * loss + (1 - kappa) * robust
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


# --------------------------------------------------------------------------- export
def to_onnx(net: nn.Sequential, in_shape: tuple[int, ...], name: str) -> onnx.ModelProto:
    """The network as Gemm / Conv / Relu / Flatten nodes, input "input" [1, *in_shape], output
    "output" [1, 10], float32."""
    nodes, inits, x = [], [], "input"

    def init(t: torch.Tensor, tag: str) -> str:
        inits.append(numpy_helper.from_array(t.detach().numpy().astype(np.float32), tag))
        return tag

    for i, m in enumerate(net):
        out = "output" if i == len(net) - 1 else f"t{i}"
        if isinstance(m, nn.Linear):
            nodes.append(helper.make_node("Gemm", [x, init(m.weight, f"W{i}"), init(m.bias, f"B{i}")], [out],
                                          name=f"gemm{i}", transB=1))
        elif isinstance(m, nn.Conv2d):
            nodes.append(helper.make_node("Conv", [x, init(m.weight, f"W{i}"), init(m.bias, f"B{i}")], [out],
                                          name=f"conv{i}", kernel_shape=list(m.kernel_size),
                                          strides=list(m.stride), pads=list(m.padding) * 2))
        elif isinstance(m, nn.ReLU):
            nodes.append(helper.make_node("Relu", [x], [out], name=f"relu{i}"))
        elif isinstance(m, nn.Flatten):
            nodes.append(helper.make_node("Flatten", [x], [out], name=f"flatten{i}", axis=1))
        else:
            raise TypeError(f"no ONNX export for {type(m).__name__}")
        x = out
    graph = helper.make_graph(nodes, name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *in_shape])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="verifier/benchmarks/digits_models.py")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- the whole build
MODELS = {"digits_mlp": (mlp, MLP_SHAPE, "normal"), "digits_mlp_ibp": (mlp, MLP_SHAPE, "ibp"),
          "digits_cnn": (cnn, CNN_SHAPE, "normal"), "digits_cnn_ibp": (cnn, CNN_SHAPE, "ibp")}


def build(out_dir: Path, quick: bool = False, verbose: bool = False) -> dict[str, Path]:
    """Train the four models, write them and the two test files into out_dir; returns
    {name: path} for digits_mlp, digits_mlp_ibp, digits_cnn, digits_cnn_ibp, digits_test and
    digits_test_img."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_te, y_te = split()
    paths = {"digits_test": out_dir / "digits_test.npz", "digits_test_img": out_dir / "digits_test_img.npz"}
    np.savez(paths["digits_test"], x=x_te, y=y_te)
    np.savez(paths["digits_test_img"], x=x_te.reshape(-1, *CNN_SHAPE), y=y_te)
    configs = QUICK if quick else FULL
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        for i, (name, (make, shape, kind)) in enumerate(MODELS.items()):
            start = time.perf_counter()
            torch.manual_seed(SEED + i)
            xt, xe = torch.from_numpy(x_tr).reshape(-1, *shape), torch.from_numpy(x_te).reshape(-1, *shape)
            net = train(make(), xt, torch.from_numpy(y_tr), configs[kind], seed=SEED + i)
            paths[name] = out_dir / f"{name}.onnx"
            onnx.save(to_onnx(net, shape, name), paths[name])
            if verbose:
                ye = torch.from_numpy(y_te)
                cert = "  ".join(f"IBP-certified@{e}: {certified(net, xe, ye, e):.3f}" for e in CERT_EPS)
                print(f"{name:16s} clean accuracy {accuracy(net, xe, ye):.3f}  {cert}  "
                      f"({time.perf_counter() - start:.1f} s)")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="few epochs (seconds; for tests)")
    args = p.parse_args(argv)
    paths = build(args.out, quick=args.quick, verbose=True)
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
