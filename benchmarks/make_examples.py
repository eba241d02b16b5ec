#!/usr/bin/env python3
"""Build the bundled example benchmark: two small networks, each with one unsat and one sat property,
in VNN-LIB 1.0 and 2.0, with known answers.

    python benchmarks/make_examples.py [--out DIR] [--no-verify]

Writes (DIR defaults to benchmarks/examples/, which git ignores):

    DIR/onnx/acas_like.onnx         MLP, input [1,5], ReLU hidden layers 32-32-16, 5 outputs
    DIR/onnx/conv_small.onnx        input [1,1,8,8]: Conv 3x3, BatchNorm, ReLU, Conv stride 2, ReLU,
                                    MaxPool 2x2, Flatten, Gemm -> 3 classes
    DIR/vnnlib/<net>_<answer>.vnnlib   VNN-LIB 1.0 (X_i / Y_j over the flattened tensors)
    DIR/vnnlib2/<net>_<answer>.vnnlib  the same queries in VNN-LIB 2.0; network name = <net>
    DIR/instances.csv               onnx,vnnlib,timeout,expected (for `verifier bench DIR`)

The answers do not rest on the verifier.  An `unsat` answer is proved here by interval arithmetic in
float64 (over input sub-boxes for the MLP), with a margin far above float32 rounding; a `sat` answer
comes with a witness that onnxruntime, running the written ONNX file, puts inside the box and
strictly inside the violating region.  Unless --no-verify is given, the verifier then decides every
instance as a cross-check (exit status 1 if it disagrees with a known answer).

The output is deterministic: same bytes on every run (fixed seeds, no timestamps).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # loadable by onnxruntime >= 1.10; onnx's newest IR version would shut out older runtimes
TIMEOUT = 60
DEFAULT_OUT = Path(__file__).resolve().parent / "examples"


# --------------------------------------------------------------------------- networks as layer lists
# One description drives three things: the ONNX graph, a float64 forward pass (to screen samples) and
# a float64 interval pass (to prove unsat).  Shapes exclude the batch dimension of 1.

@dataclass(frozen=True)
class Layer:
    kind: str               # dense | relu | conv | bn | maxpool | flatten
    W: np.ndarray | None = None
    b: np.ndarray | None = None
    stride: int = 1
    pad: int = 0
    extra: tuple = ()       # bn: (gamma, beta, mean, var, eps); maxpool: (kernel,)


def mlp_layers(rng: np.random.Generator) -> list[Layer]:
    sizes = [5, 32, 32, 16, 5]
    layers = []
    for i, (n, m) in enumerate(zip(sizes, sizes[1:])):
        W = rng.normal(0.0, np.sqrt(2.0 / n), size=(m, n))
        b = rng.normal(0.0, 0.1, size=m)
        layers.append(Layer("dense", W.astype(np.float32), b.astype(np.float32)))
        if i < len(sizes) - 2:
            layers.append(Layer("relu"))
    return layers


def conv_layers(rng: np.random.Generator) -> list[Layer]:
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    W1 = f32(rng.normal(0.0, np.sqrt(2.0 / 9), size=(4, 1, 3, 3)))
    b1 = f32(rng.normal(0.0, 0.1, size=4))
    bn = (f32(rng.uniform(0.5, 1.5, 4)), f32(rng.normal(0.0, 0.1, 4)), f32(rng.normal(0.0, 0.2, 4)),
          f32(rng.uniform(0.5, 2.0, 4)), 1e-5)
    W2 = f32(rng.normal(0.0, np.sqrt(2.0 / 36), size=(8, 4, 3, 3)))
    b2 = f32(rng.normal(0.0, 0.1, size=8))
    W3 = f32(rng.normal(0.0, np.sqrt(2.0 / 32), size=(3, 32)))
    b3 = f32(rng.normal(0.0, 0.1, size=3))
    return [Layer("conv", W1, b1, stride=1, pad=1), Layer("bn", extra=bn), Layer("relu"),
            Layer("conv", W2, b2, stride=2, pad=1), Layer("relu"),
            Layer("maxpool", extra=(2,)), Layer("flatten"), Layer("dense", W3, b3)]


def onnx_model(name: str, layers: list[Layer], in_shape: list[int], n_out: int) -> onnx.ModelProto:
    nodes, inits, x = [], [], "X"

    def init(arr, tag):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), f"{tag}"))
        return tag

    for i, L in enumerate(layers):
        out = "Y" if i == len(layers) - 1 else f"t{i}"
        if L.kind == "dense" and len(in_shape) == 2:  # the MLP: MatMul + Add, as ACAS Xu's files do
            w = init(L.W.T, f"W{i}")
            mm = f"t{i}_mm"
            nodes += [helper.make_node("MatMul", [x, w], [mm], name=f"matmul{i}"),
                      helper.make_node("Add", [mm, init(L.b, f"B{i}")], [out], name=f"add{i}")]
        elif L.kind == "dense":
            nodes.append(helper.make_node("Gemm", [x, init(L.W, f"W{i}"), init(L.b, f"B{i}")], [out],
                                          name=f"gemm{i}", transB=1))
        elif L.kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [out], name=f"relu{i}"))
        elif L.kind == "conv":
            k = L.W.shape[-1]
            nodes.append(helper.make_node("Conv", [x, init(L.W, f"W{i}"), init(L.b, f"B{i}")], [out],
                                          name=f"conv{i}", kernel_shape=[k, k], strides=[L.stride] * 2,
                                          pads=[L.pad] * 4))
        elif L.kind == "bn":
            g, beta, mean, var, eps = L.extra
            names = [init(a, f"bn{i}_{t}") for a, t in zip((g, beta, mean, var), ("scale", "bias", "mean", "var"))]
            nodes.append(helper.make_node("BatchNormalization", [x, *names], [out], name=f"bn{i}", epsilon=eps))
        elif L.kind == "maxpool":
            k = L.extra[0]
            nodes.append(helper.make_node("MaxPool", [x], [out], name=f"maxpool{i}", kernel_shape=[k, k],
                                          strides=[k, k]))
        elif L.kind == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [out], name=f"flatten{i}", axis=1))
        else:
            raise ValueError(L.kind)
        x = out
    graph = helper.make_graph(nodes, name,
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="verifier/benchmarks/make_examples.py")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _patches(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """x: (N, C, H, W) -> (N, OH, OW, C*k*k), the receptive fields of a k x k convolution."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    cols = np.empty((n, oh, ow, c, k, k))
    for i, j in itertools.product(range(k), range(k)):
        cols[..., i, j] = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride].transpose(0, 2, 3, 1)
    return cols.reshape(n, oh, ow, c * k * k)


def _pool(x: np.ndarray, k: int) -> np.ndarray:
    n, c, h, w = x.shape
    return x[:, :, :h // k * k, :w // k * k].reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))


def interval(layers: list[Layer], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sound float64 bounds on every output over the boxes [lo, hi] (N, *in_shape): each layer is
    monotone or affine, so interval arithmetic with W+ / W- is exact per layer.  With lo == hi this
    is the float64 forward pass."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    for L in layers:
        if L.kind == "dense":
            W = L.W.astype(np.float64)
            Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
            lo, hi = lo @ Wp.T + hi @ Wn.T + L.b, hi @ Wp.T + lo @ Wn.T + L.b
        elif L.kind == "conv":
            k, cout = L.W.shape[-1], L.W.shape[0]
            W = L.W.reshape(cout, -1).astype(np.float64)
            Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
            pl, ph = _patches(lo, k, L.stride, L.pad), _patches(hi, k, L.stride, L.pad)
            lo, hi = pl @ Wp.T + ph @ Wn.T + L.b, ph @ Wp.T + pl @ Wn.T + L.b
            lo, hi = lo.transpose(0, 3, 1, 2), hi.transpose(0, 3, 1, 2)
        elif L.kind == "bn":
            g, beta, mean, var, eps = (np.asarray(a, np.float64) for a in L.extra)
            s = (g / np.sqrt(var + eps))[:, None, None]
            t = (beta - mean * g / np.sqrt(var + eps))[:, None, None]
            lo, hi = np.minimum(s * lo, s * hi) + t, np.maximum(s * lo, s * hi) + t
        elif L.kind == "relu":
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
        elif L.kind == "maxpool":
            lo, hi = _pool(lo, L.extra[0]), _pool(hi, L.extra[0])
        elif L.kind == "flatten":
            lo, hi = lo.reshape(len(lo), -1), hi.reshape(len(hi), -1)
    return lo, hi


def forward(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    return interval(layers, x, x)[0]


# --------------------------------------------------------------------------- properties
@dataclass(frozen=True)
class Prop:
    """Input box lo <= x <= hi (flat) and the violating output region: any of `disjuncts` holds,
    each a list of (j, k) meaning Y_j >= Y_k (k an int) or Y_j >= c (k a float)."""

    net: str
    answer: str
    comment: str
    lo: np.ndarray
    hi: np.ndarray
    disjuncts: tuple[tuple[tuple[int, int | float], ...], ...]


def _num(v: float) -> str:
    return repr(float(v))


def _v1_atom(j: int, k: int | float) -> str:
    return f"(>= Y_{j} {_num(k) if isinstance(k, float) else f'Y_{k}'})"


def _v2_atom(j: int, k: int | float) -> str:
    return f"(>= Y[0,{j}] {_num(k) if isinstance(k, float) else f'Y[0,{k}]'})"


def _region(p: Prop, atom) -> list[str]:
    if len(p.disjuncts) == 1:
        return [f"(assert {atom(j, k)})" for j, k in p.disjuncts[0]]
    ors = " ".join("(and " + " ".join(atom(j, k) for j, k in d) + ")" for d in p.disjuncts)
    return [f"(assert (or {ors}))"]


def vnnlib1(p: Prop, n_out: int) -> str:
    lines = [f"; {p.net}: {p.comment}", f"; expected answer: {p.answer}", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(p.lo.size)] + [""]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)] + [""]
    for i, (a, b) in enumerate(zip(p.lo, p.hi)):
        lines += [f"(assert (>= X_{i} {_num(a)}))", f"(assert (<= X_{i} {_num(b)}))"]
    return "\n".join(lines + [""] + _region(p, _v1_atom)) + "\n"


def vnnlib2(p: Prop, in_shape: list[int], n_out: int) -> str:
    dims = ",".join(map(str, in_shape))
    lines = ["(vnnlib-version <2.0>)", f"; {p.net}: {p.comment}", f"; expected answer: {p.answer}",
             f"(declare-network {p.net}", f"    (declare-input X float32 [{dims}])",
             f"    (declare-output Y float32 [1,{n_out}]))", ""]
    for flat, (a, b) in enumerate(zip(p.lo, p.hi)):
        idx = ",".join(map(str, np.unravel_index(flat, in_shape)))
        lines.append(f"(assert (and (>= X[{idx}] {_num(a)}) (<= X[{idx}] {_num(b)})))")
    return "\n".join(lines + [""] + _region(p, _v2_atom)) + "\n"


def _box(center: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    c = center.astype(np.float64)
    return c - eps, c + eps


def _sub_boxes(lo: np.ndarray, hi: np.ndarray, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The box split into parts**n equal sub-boxes: (parts**n, n) each (edges shared exactly)."""
    edges = [np.linspace(a, b, parts + 1) for a, b in zip(lo, hi)]
    idx = np.array(list(itertools.product(range(parts), repeat=len(lo))))
    sl = np.stack([edges[d][idx[:, d]] for d in range(len(lo))], axis=1)
    sh = np.stack([edges[d][idx[:, d] + 1] for d in range(len(lo))], axis=1)
    sl[:, :], sh[:, :] = np.maximum(sl, lo), np.minimum(sh, hi)
    return sl, sh


def acas_props(layers: list[Layer], rng: np.random.Generator) -> tuple[Prop, Prop, np.ndarray]:
    n_out = 5
    center = rng.uniform(-0.5, 0.5, size=5).astype(np.float32)
    # unsat, ACAS property 1 style (a single output stays below a threshold).  Plain IBP over the box
    # cannot prove the threshold; IBP over 6^5 sub-boxes can, so the verifier needs CROWN or a split.
    lo, hi = _box(center, 0.08)
    whole_hi = interval(layers, lo[None], hi[None])[1][0, 0]
    split_hi = interval(layers, *_sub_boxes(lo, hi, 6))[1][:, 0].max()
    sample_hi = forward(layers, rng.uniform(lo, hi, size=(4096, 5)))[:, 0].max()
    threshold = split_hi + 0.02 * (whole_hi - split_hi) + 0.01
    assert sample_hi < split_hi < threshold < whole_hi, (sample_hi, split_hi, threshold, whole_hi)
    unsat = Prop("acas_like", "unsat",
                 f"Y_0 stays below {threshold:.4f} on the box (sampled max {sample_hi:.4f}, sound bound "
                 f"{split_hi:.4f} from 6^5 sub-boxes, plain interval bound {whole_hi:.4f})",
                 lo, hi, (((0, float(threshold)),),))
    # sat, ACAS property 3 style (output j is the minimal score, i.e. advisory j is chosen) for an
    # advisory j that is not chosen at the centre but is, by a clear margin, somewhere in the box
    lo, hi = _box(center, 0.3)
    y0 = forward(layers, center[None])[0]
    xs = rng.uniform(lo + 0.1 * 0.3, hi - 0.1 * 0.3, size=(4096, 5)).astype(np.float32)
    ys = forward(layers, xs)
    margin = np.sort(ys, axis=1)[:, 1] - ys.min(axis=1)
    arg = ys.argmin(axis=1)
    ok = (arg != y0.argmin()) & (margin > 0.05)
    assert ok.mean() > 0.01, ok.mean()
    j = int(np.bincount(arg[ok]).argmax())
    witness = xs[ok & (arg == j)][0]
    sat = Prop("acas_like", "sat", f"Y_{j} is the minimal score somewhere in the box "
               f"(not at its centre, where Y_{int(y0.argmin())} is)", lo, hi,
               (tuple((k, j) for k in range(n_out) if k != j),))
    return unsat, sat, witness


def conv_props(layers: list[Layer], rng: np.random.Generator) -> tuple[Prop, Prop, np.ndarray]:
    n_out = 3
    center = rng.uniform(0.0, 1.0, size=(1, 1, 8, 8)).astype(np.float32)
    y0 = forward(layers, center)[0]
    c = int(y0.argmax())
    others = [k for k in range(n_out) if k != c]
    # robustness: the violating region is "some other class scores at least as high as c"
    region = tuple(((k, c),) for k in others)

    def ibp_margin(eps: float) -> float:
        """Sound lower bound of min_k (Y_c - Y_k) over the box: the last layer folded with C."""
        lo, hi = interval(layers[:-1], center - eps, center + eps)
        last = layers[-1]
        W = last.W.astype(np.float64)
        worst = np.inf
        for k in others:
            w, b = W[c] - W[k], float(last.b[c]) - float(last.b[k])
            worst = min(worst, float((np.maximum(w, 0) @ lo[0] + np.minimum(w, 0) @ hi[0]) + b))
        return worst

    eps = 0.05  # halved until interval arithmetic alone proves a margin far above float32 rounding
    while ibp_margin(eps) < max(0.02, 0.2 * (y0[c] - max(y0[k] for k in others))):
        eps /= 2
    lo, hi = _box(center.reshape(-1), eps)
    unsat = Prop("conv_small", "unsat",
                 f"class {c} is robust in an L-inf ball of radius {eps} (interval bound on the margin: "
                 f"{ibp_margin(eps):.4f})", lo, hi, region)
    eps_sat = 0.1
    while True:
        xs = center + rng.uniform(-0.9 * eps_sat, 0.9 * eps_sat, size=(2048, 1, 8, 8))
        xs = xs.astype(np.float32)
        ys = forward(layers, xs)
        gap = np.max(ys[:, others], axis=1) - ys[:, c]
        if (gap > 0.05).mean() > 0.02:
            break
        eps_sat *= 1.5
    witness = xs[gap > 0.05][0].reshape(-1)
    lo, hi = _box(center.reshape(-1), eps_sat)
    sat = Prop("conv_small", "sat", f"class {c} is not robust in an L-inf ball of radius {eps_sat:g}",
               lo, hi, region)
    return unsat, sat, witness


# --------------------------------------------------------------------------- checks
def check_witness(model: onnx.ModelProto, p: Prop, x: np.ndarray, in_shape: list[int]) -> None:
    """onnxruntime on the written model: x (float32) inside the box, output strictly violating."""
    import onnxruntime as ort

    x = np.asarray(x, dtype=np.float32).reshape(-1)
    assert np.all(x >= p.lo) and np.all(x <= p.hi), f"{p.net}: witness outside the box"
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"X": x.reshape(in_shape)})[0].reshape(-1).astype(np.float64)
    hit = any(all(y[j] - (k if isinstance(k, float) else y[k]) > 1e-3 for j, k in d) for d in p.disjuncts)
    assert hit, f"{p.net}: onnxruntime does not confirm the witness (y = {y})"


def check_forward(model: onnx.ModelProto, layers: list[Layer], in_shape: list[int],
                  rng: np.random.Generator) -> None:
    """The float64 layer description is the network that the ONNX file holds."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for _ in range(8):
        x = rng.uniform(-1, 1, size=in_shape).astype(np.float32)
        got = sess.run(None, {"X": x})[0].reshape(-1)
        want = forward(layers, x)[0]
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4), (got, want)


def cross_check(out: Path, rows: list[tuple[str, str, str]]) -> list[str]:
    """The verifier's answers against the known ones (both VNN-LIB versions); the disagreements."""
    try:
        import verifier
    except ImportError as e:
        print(f"make_examples: verifier not importable ({e}); cross-check skipped", file=sys.stderr)
        return []
    bad = []
    for onnx_rel, spec_rel, expected in rows:
        for spec in (out / spec_rel, out / "vnnlib2" / Path(spec_rel).name):
            got = verifier.verify(out / onnx_rel, spec, timeout=TIMEOUT).verdict.value
            print(f"  {spec.relative_to(out)}: {got} (expected {expected})", file=sys.stderr)
            if got != expected:
                bad.append(f"{spec}: verifier says {got}, expected {expected}")
    return bad


# --------------------------------------------------------------------------- main
def build(out: Path) -> list[tuple[str, str, str]]:
    """Write every file under out; returns the instances (onnx, vnnlib, expected)."""
    for sub in ("onnx", "vnnlib", "vnnlib2"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    nets = [("acas_like", mlp_layers, acas_props, [1, 5], 5, 20240501),
            ("conv_small", conv_layers, conv_props, [1, 1, 8, 8], 3, 20240502)]
    for name, make_layers, make_props, in_shape, n_out, seed in nets:
        rng = np.random.default_rng(seed)
        layers = make_layers(rng)
        model = onnx_model(name, layers, in_shape, n_out)
        check_forward(model, layers, in_shape, np.random.default_rng(seed + 1))
        unsat, sat, witness = make_props(layers, rng)
        check_witness(model, sat, witness, in_shape)
        (out / "onnx" / f"{name}.onnx").write_bytes(model.SerializeToString())
        for p in (unsat, sat):
            fname = f"{name}_{p.answer}.vnnlib"
            (out / "vnnlib" / fname).write_text(vnnlib1(p, n_out))
            (out / "vnnlib2" / fname).write_text(vnnlib2(p, in_shape, n_out))
            rows.append((f"onnx/{name}.onnx", f"vnnlib/{fname}", p.answer))
    lines = ["onnx,vnnlib,timeout,expected"] + [f"{o},{v},{TIMEOUT},{e}" for o, v, e in rows]
    (out / "instances.csv").write_text("\n".join(lines) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--no-verify", action="store_true", help="skip the cross-check with the verifier")
    args = ap.parse_args(argv)
    rows = build(args.out)
    print(f"make_examples: wrote {len(rows)} instances (VNN-LIB 1.0 and 2.0) to {args.out}", file=sys.stderr)
    if args.no_verify:
        return 0
    bad = cross_check(args.out, rows)
    for line in bad:
        print(f"make_examples: MISMATCH {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
