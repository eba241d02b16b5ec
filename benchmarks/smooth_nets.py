"""Sigmoid, Tanh and mixed networks of the project's own, with local-robustness queries, to
measure branch and bound over general nonlinearities (issue 14).

    python benchmarks/smooth_nets.py OUT_DIR
    verifier bench OUT_DIR

A synthetic image task (10 x 10 pixels in [0, 1], so 100 inputs: activation splitting, not
input splitting): four classes of strokes (a horizontal bar, a vertical bar, a diagonal, an
anti-diagonal) at random positions, with noise.  Three MLPs trained on it with a fixed seed
(100-48-48-4): all Sigmoid, all Tanh, and ReLU then Sigmoid.  For each, the first test images it
classifies correctly, at L-inf radii just below the smallest one at which a PGD attack here
breaks the image (fractions FRACTIONS of it, where the properties are hard: bounds alone do not
reach that far, and counterexamples, where there are any, are rare): "some other class scores
at least as high as the true one somewhere in the ball" (unsat = robust).  Everything is
generated here, deterministically.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

SIDE = 10
CLASSES = 4
HIDDEN = (48, 48)
NETS = {"sigmoid": ("Sigmoid", "Sigmoid"), "tanh": ("Tanh", "Tanh"), "relu_sigmoid": ("Relu", "Sigmoid")}
FRACTIONS = (0.5, 0.7, 0.85, 0.95)
IMAGES = 4
TIMEOUT = 30


def strokes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, SIDE * SIDE) in [0, 1] and their labels."""
    y = rng.integers(0, CLASSES, n)
    x = np.zeros((n, SIDE, SIDE))
    idx = np.arange(SIDE)
    for i, c in enumerate(y):
        k = rng.integers(2, SIDE - 2)
        if c == 0:
            x[i, k, :] = 1
        elif c == 1:
            x[i, :, k] = 1
        elif c == 2:
            x[i, idx, np.clip(idx + k - SIDE // 2, 0, SIDE - 1)] = 1
        else:
            x[i, idx, np.clip(SIDE // 2 - k + SIDE - 1 - idx, 0, SIDE - 1)] = 1
    x = np.clip(x * rng.uniform(0.6, 1.0, (n, 1, 1)) + rng.normal(0, 0.15, x.shape), 0, 1)
    return x.reshape(n, -1).astype(np.float32), y


def train(acts: tuple[str, ...], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = strokes(rng, 4000)
    fns = {"Sigmoid": torch.nn.Sigmoid, "Tanh": torch.nn.Tanh, "Relu": torch.nn.ReLU}
    layers, width = [], SIDE * SIDE
    for h, a in zip(HIDDEN, acts):
        layers += [torch.nn.Linear(width, h), fns[a]()]
        width = h
    layers.append(torch.nn.Linear(width, CLASSES))
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for epoch in range(30):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 100):
            b = perm[i:i + 100]
            loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net if isinstance(m, torch.nn.Linear)]


def to_onnx(params, acts) -> onnx.ModelProto:
    nodes, inits, h = [], [], "input"
    for i, (W, b) in enumerate(params):
        inits += [numpy_helper.from_array(W.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        out = "output" if i == len(params) - 1 else f"z{i}"
        nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"b{i}"], [out], transB=1))
        if i < len(acts):
            nodes.append(helper.make_node(acts[i], [out], [f"a{i}"]))
            h = f"a{i}"
    graph = helper.make_graph(nodes, "smooth", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, SIDE * SIDE])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, CLASSES])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def predict(params, acts, x: np.ndarray) -> np.ndarray:
    fns = {"Sigmoid": lambda v: 1 / (1 + np.exp(-v)), "Tanh": np.tanh, "Relu": lambda v: np.maximum(v, 0)}
    h = x.astype(np.float64)
    for i, (W, b) in enumerate(params):
        h = h @ W.T.astype(np.float64) + b
        if i < len(acts):
            h = fns[acts[i]](h)
    return h


def attack_radius(params, acts, x: np.ndarray, label: int) -> float:
    """The least radius (bisection over [0, 0.5], to 1e-4) at which PGD (40 steps, 4 starts)
    finds a point of the clipped ball where another class scores at least as high."""
    fns = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu}
    Ws = [(torch.as_tensor(W, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)) for W, b in params]

    def margin(z):
        h = z
        for i, (W, b) in enumerate(Ws):
            h = h @ W.T + b
            if i < len(acts):
                h = fns[acts[i]](h)
        other = h.clone()
        other[:, label] = -np.inf
        return h[:, label] - other.max(1).values

    x0 = torch.as_tensor(x, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)

    def broken(eps: float) -> bool:
        lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
        z = lo + (hi - lo) * torch.rand((4, x0.numel()), generator=gen, dtype=torch.float64)
        for _ in range(40):
            z.requires_grad_(True)
            m = margin(z)
            if bool((m <= 0).any()):
                return True
            m.sum().backward()
            z = torch.minimum(torch.maximum(z.detach() - eps / 8 * z.grad.sign(), lo), hi)
        return bool((margin(z) <= 0).any())

    a, b = 0.0, 0.5
    while b - a > 1e-4:
        m = (a + b) / 2
        a, b = (a, m) if broken(m) else (m, b)
    return b


def query(x: np.ndarray, label: int, eps: float) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(x.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(CLASSES)]
    for i, v in enumerate(x):
        lines.append(f"(assert (>= X_{i} {max(0.0, float(v) - eps)!r}))")
        lines.append(f"(assert (<= X_{i} {min(1.0, float(v) + eps)!r}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(CLASSES) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx").mkdir(exist_ok=True)
    (out / "vnnlib").mkdir(exist_ok=True)
    xs, ys = strokes(np.random.default_rng(1234), 200)
    rows = []
    for name, acts in NETS.items():
        params = train(acts)
        onnx.save(to_onnx(params, acts), out / "onnx" / f"{name}.onnx")
        pred = predict(params, acts, xs).argmax(1)
        print(f"{name}: test accuracy {float((pred == ys).mean()):.3f}")
        chosen = [i for i in range(len(xs)) if pred[i] == ys[i]][:IMAGES]
        for i in chosen:
            radius = attack_radius(params, acts, xs[i], int(ys[i]))
            for frac in FRACTIONS:
                eps = round(frac * radius, 5)
                spec = f"vnnlib/{name}_img{i}_eps{eps}.vnnlib"
                (out / spec).write_text(query(xs[i], int(ys[i]), eps))
                rows.append([f"onnx/{name}.onnx", spec, TIMEOUT])
    with open(out / "instances.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    print(f"wrote {len(rows)} instances to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/smooth_nets.py OUT_DIR")
    main(Path(sys.argv[1]))
