"""Never wrong, part 3: a float-typed VNN-LIB 2.0 query asks about the network as onnxruntime
computes it in that type, not over the reals.

The network y = (x + 2^24) - 2^24 is y = x over the reals, but in float32 x + 2^24 rounds to
2^24 for x in [0.25, 0.49], so onnxruntime gives y = 0.  "y <= 0" is then unsat over the reals
and sat for the float model: a float32 query must never be answered unsat, and every bound on
the float model must allow y = 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import verifier
from verifier.api import load_checked
from verifier.bounds.backward import crown_intermediate, crown_output
from verifier.bounds.forward import forward_bounds
from verifier.bounds.interval import interval_bounds
from verifier.verdict import Verdict

BIG = 2.0 ** 24


def absorbing(path: Path) -> Path:
    """Y = relu((X + 2^24) - 2^24) in float32, X: (1, 1)."""
    inits = [numpy_helper.from_array(np.array([BIG], dtype=np.float32), "c")]
    nodes = [helper.make_node("Add", ["X", "c"], ["s"]), helper.make_node("Sub", ["s", "c"], ["d"]),
             helper.make_node("Relu", ["d"], ["Y"])]
    return save(nodes, inits, (1, 1), (1, 1), path)


def save(nodes, inits, x_shape, y_shape, path: Path) -> Path:
    """A float32 model X -> Y of these nodes and initialisers, saved at path."""
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(y_shape))], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def query(dtype: str) -> str:
    return (f"(vnnlib-version <2.0>)\n(declare-network net (declare-input X {dtype} [1,1]) "
            f"(declare-output Y {dtype} [1,1]))\n"
            "(assert (>= X[0,0] 0.25))\n(assert (<= X[0,0] 0.49))\n(assert (<= Y[0,0] 0.0))\n")


@pytest.fixture
def net(tmp_path) -> Path:
    return absorbing(tmp_path / "absorb.onnx")


def test_onnxruntime_really_absorbs(net):
    _, ref = load_checked(net)
    assert ref.run(np.array([0.3], dtype=np.float32))[0] == 0.0


def test_float32_query_is_not_unsat(net, tmp_path):
    spec = tmp_path / "q.vnnlib"
    spec.write_text(query("float32"))
    r = verifier.verify(net, spec, timeout=20)
    assert r.verdict is not Verdict.UNSAT
    assert r.verdict is Verdict.SAT and r.y[0] == 0.0


def test_real_query_is_about_the_reals(net, tmp_path):
    """Over the reals y = x >= 0.25: the bounds prove it; onnxruntime's 0 is a float effect
    (README: Soundness, for what each answer means on a `real` query)."""
    graph, _ = load_checked(net)
    graph = graph.to("cpu", torch.float64)
    real = type(graph)(**{**graph.__dict__, "float_model": None})
    lo = torch.tensor([[0.25]], dtype=torch.float64)
    hi = torch.tensor([[0.49]], dtype=torch.float64)
    assert interval_bounds(real, lo, hi)[real.output_name][0].item() > 0.2


@pytest.mark.parametrize("method", ["interval", "crown", "forward"])
def test_float_model_bounds_allow_what_onnxruntime_computes(net, method):
    graph, _ = load_checked(net)
    graph = graph.to("cpu", torch.float64)
    assert graph.float_model is torch.float32
    lo = torch.tensor([[0.25]], dtype=torch.float64)
    hi = torch.tensor([[0.49]], dtype=torch.float64)
    if method == "interval":
        ylo = interval_bounds(graph, lo, hi)[graph.output_name][0]
    elif method == "crown":
        pre = crown_intermediate(graph, lo, hi)
        ylo = crown_output(graph, lo, hi, torch.ones(1, 1, 1, dtype=torch.float64), pre)
    else:
        act = [n for n in graph.nodes if n.op == "Relu"][0]
        ylo = forward_bounds(graph, lo, hi)[act.name][0]
    assert ylo.item() <= 0.0        # the model's y is 0 at every float input of the box


def test_bundled_float32_examples_still_prove(examples):
    """The float model costs little on ordinary networks: the bundled float32-typed 2.0 unsat
    queries are still proved."""
    for net_name in ("acas_like", "conv_small"):
        r = verifier.verify(examples / "onnx" / f"{net_name}.onnx",
                            examples / "vnnlib2" / f"{net_name}_unsat.vnnlib", timeout=60)
        assert r.verdict is Verdict.UNSAT, net_name


def random_float32_net(path: Path, seed: int, offset: float) -> Path:
    """Gemm -> BatchNormalization (means and shifts near `offset`, cancelling) -> Relu -> Gemm,
    float32: a net whose onnxruntime outputs stray from the real function by rounding."""
    r = np.random.default_rng(seed)
    f = lambda a: np.asarray(a, dtype=np.float32)
    h = 6
    inits = [numpy_helper.from_array(f(r.normal(size=(h, 3))), "W1"),
             numpy_helper.from_array(f(r.normal(size=h) * offset), "b1"),
             numpy_helper.from_array(f(r.uniform(0.5, 2, h)), "g"),
             numpy_helper.from_array(f(r.normal(size=h) * offset), "beta"),
             numpy_helper.from_array(f(r.normal(size=h) * offset), "mean"),
             numpy_helper.from_array(f(r.uniform(0.5, 2, h)), "var"),
             numpy_helper.from_array(f(r.normal(size=(2, h))), "W2"),
             numpy_helper.from_array(f(r.normal(size=2) * offset), "b2")]
    nodes = [helper.make_node("Gemm", ["X", "W1", "b1"], ["a"], transB=1),
             helper.make_node("BatchNormalization", ["a", "g", "beta", "mean", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["Y"], transB=1)]
    return save(nodes, inits, (1, 3), (1, 2), path)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("offset", [1.0, 1e4, 1e7])
def test_float_model_bounds_contain_onnxruntime(tmp_path, seed, offset):
    """IBP and CROWN bounds of the float model contain onnxruntime's outputs at sampled float32
    points of the box and at its corners (exactly: no tolerance)."""
    graph, ref = load_checked(random_float32_net(tmp_path / "r.onnx", seed, offset))
    graph = graph.to("cpu", torch.float64)
    r = np.random.default_rng(seed)
    c = r.normal(size=3)
    lo32, hi32 = np.float32(c - 0.1 * (1 + abs(c))), np.float32(c + 0.1 * (1 + abs(c)))
    lo = torch.tensor(lo32, dtype=torch.float64).reshape(1, 3)
    hi = torch.tensor(hi32, dtype=torch.float64).reshape(1, 3)
    ylo, yhi = interval_bounds(graph, lo, hi)[graph.output_name]
    pre = crown_intermediate(graph, lo, hi)
    eye = torch.eye(2, dtype=torch.float64).reshape(1, 2, 2)
    clo = crown_output(graph, lo, hi, eye, pre)[0]
    chi = -crown_output(graph, lo, hi, -eye, pre)[0]
    corners = np.array([[lo32[i] if (k >> i) & 1 else hi32[i] for i in range(3)] for k in range(8)])
    pts = np.concatenate([corners, r.uniform(lo32, hi32, size=(200, 3)).astype(np.float32)])
    for x in pts:
        y = ref.run(x.astype(np.float32))
        assert np.all(ylo[0].numpy() <= y) and np.all(y <= yhi[0].numpy())
        assert np.all(clo.numpy() <= y) and np.all(y <= chi.numpy())


def test_graph_is_computed_in_float32_only_when_its_constants_are_float32_values():
    """On a GPU the engine computes in float32; a float64 model's weights rounded there would be
    another function, so such a graph keeps float64 (api.verify checks holds_exactly_in)."""
    import torch

    from verifier.ir import Graph, Node

    def graph(w: float, p: float = 2.0) -> Graph:
        W = torch.tensor([[w, 1.0]], dtype=torch.float64).T
        nodes = (Node("y", "MatMul", ("x",), {"W": W, "b": None}, (1,)), Node("z", "Pow", ("y",), {"p": p}, (1,)))
        return Graph("x", (2,), nodes, "z", (1, 2))

    assert graph(0.5).holds_exactly_in(torch.float32)
    assert not graph(0.1).holds_exactly_in(torch.float32)
    assert not graph(0.5, p=0.1).holds_exactly_in(torch.float32)
    assert graph(0.1).holds_exactly_in(torch.float64)


# ---- functions whose float evaluation rounds a product: x * y, LeakyRelu, PRelu ----------------
def product_net(path: Path) -> Path:
    """Y = X[0] * X[1] in float32, X: (1, 2)."""
    inits = [numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "sp")]
    nodes = [helper.make_node("Split", ["X", "sp"], ["x0", "x1"], axis=1), helper.make_node("Mul", ["x0", "x1"], ["Y"])]
    return save(nodes, inits, (1, 2), (1, 1), path)


def exact(v: float) -> str:
    from decimal import Decimal

    return format(Decimal(float(v)), "f")


@pytest.mark.parametrize("box", ["point", "two floats"])
@pytest.mark.parametrize("engine", ["default", "relu-split", "lp"])
def test_a_rounded_product_is_not_unsat(tmp_path, box, engine):
    """float32(1.1) * float32(1.3) is 1.42999997...; onnxruntime rounds it down to 1.42999994...
    "Y <= that" is false over the reals and true in the float model: never unsat (it was: the
    backward pass took a product's planes without the model's rounding of it)."""
    import dataclasses

    from verifier.config import BabConfig, LPConfig, VerifyConfig

    a, b = np.float32(1.1), np.float32(1.3)
    rounded = float(np.float32(a * b))
    assert rounded < float(a) * float(b)
    a_hi = a if box == "point" else np.nextafter(a, np.float32(2))
    spec = tmp_path / "q.vnnlib"
    spec.write_text("(vnnlib-version <2.0>)\n(declare-network f (declare-input X float32 [1,2]) "
                    "(declare-output Y float32 [1,1]))\n"
                    f"(assert (and (>= X[0,0] {exact(a)}) (<= X[0,0] {exact(a_hi)})))\n"
                    f"(assert (and (>= X[0,1] {exact(b)}) (<= X[0,1] {exact(b)})))\n"
                    f"(assert (<= Y[0,0] {exact(rounded)}))\n")
    cfg = {"default": VerifyConfig(), "relu-split": VerifyConfig(bab=BabConfig(branching="activation")),
           "lp": VerifyConfig(lp=LPConfig(enabled=True))}[engine]
    r = verifier.verify(product_net(tmp_path / "mul.onnx"), spec, timeout=30, config=dataclasses.replace(cfg, timeout_s=30))
    assert r.verdict is Verdict.SAT, (r.verdict, r.reason)


def _onnxruntime(op: str, xs: list[np.ndarray], inits=(), **attrs) -> np.ndarray:
    """onnxruntime's op on float32 vectors xs (inputs X0, X1, ...; then the initialisers), run
    with IEEE arithmetic (subnormals kept), as counterexamples are confirmed."""
    import onnxruntime as ort

    from verifier.confirm import ieee_numerics

    n = xs[0].size
    names = [f"X{i}" for i in range(len(xs))]
    g = helper.make_graph([helper.make_node(op, names + [t.name for t in inits], ["Y"], **attrs)], "g",
                          [helper.make_tensor_value_info(v, TensorProto.FLOAT, [n]) for v in names],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n])], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    with ieee_numerics():
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, dict(zip(names, xs)))[0]


def _floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 values of every magnitude, 1e-45 (subnormal) to 1e19, both signs, and zeros."""
    x = (rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-45, 19, n)).astype(np.float32)
    x[::50] = 0.0
    return x


@pytest.mark.parametrize("op", ["Mul", "LeakyRelu", "PRelu"])
def test_model_error_of_a_rounded_product_covers_onnxruntime(op):
    """A rule's model_error over point boxes bounds |onnxruntime's value - the real function| at
    float32 points of every magnitude, checked in rational arithmetic (no tolerance)."""
    from fractions import Fraction

    from verifier.ir import Node
    from verifier.ops import RULES

    rng = np.random.default_rng(7)
    n = 4000
    x = _floats(rng, n)
    as_box = lambda v: (torch.tensor(v, dtype=torch.float64).reshape(1, n),) * 2
    if op == "Mul":
        y = _floats(rng, n)
        got = _onnxruntime("Mul", [x, y])
        real = [Fraction(float(a)) * Fraction(float(b)) for a, b in zip(x, y)]
        e = RULES["MulVar"].model_error(Node("p", "MulVar", ("x", "y"), {}, (n,)), torch.float32, as_box(x), as_box(y))
    else:
        slope = rng.uniform(-3, 3, n).astype(np.float32) if op == "PRelu" else np.full(n, np.float32(0.0137))
        if op == "PRelu":
            got = _onnxruntime("PRelu", [x], [numpy_helper.from_array(slope, "s")])
            node = Node("k", "PRelu", ("x",), {"slope": torch.tensor(slope, dtype=torch.float64)}, (n,))
        else:
            got = _onnxruntime("LeakyRelu", [x], alpha=float(slope[0]))
            node = Node("k", "LeakyRelu", ("x",), {"alpha": float(slope[0])}, (n,))
        real = [Fraction(float(v)) if v >= 0 else Fraction(float(a)) * Fraction(float(v)) for v, a in zip(x, slope)]
        e = RULES[op].model_error(node, torch.float32, as_box(x))
    e = e.reshape(-1).numpy()
    finite = np.isfinite(got)
    assert finite.mean() > 0.9
    for k in np.flatnonzero(finite):
        assert abs(Fraction(float(got[k])) - real[k]) <= Fraction(float(e[k])), (op, k, x[k], got[k])
    assert np.all(np.isinf(e[~finite]))      # where onnxruntime overflows, no finite error is claimed


@pytest.mark.parametrize("seed", range(4))
def test_float_model_bounds_of_products_and_kinks_contain_onnxruntime(tmp_path, seed):
    """IBP and CROWN bounds of a float32 net with LeakyRelu, PRelu and a product of two of its
    values contain onnxruntime's outputs at sampled float32 points and corners (exactly)."""
    r = np.random.default_rng(seed)
    f = lambda a: numpy_helper.from_array(np.asarray(a, dtype=np.float32))
    inits = [f(r.normal(size=(4, 2))), f(r.normal(size=4)), f(r.uniform(-2, 2, 4)), f(r.normal(size=(2, 4)))]
    for t, name in zip(inits, ["W1", "b1", "s", "W2"]):
        t.name = name
    nodes = [helper.make_node("Gemm", ["X", "W1", "b1"], ["a"], transB=1),
             helper.make_node("LeakyRelu", ["a"], ["l"], alpha=0.3),
             helper.make_node("PRelu", ["a", "s"], ["p"]),
             helper.make_node("Mul", ["l", "p"], ["m"]),
             helper.make_node("Gemm", ["m", "W2"], ["Y"], transB=1)]
    graph, ref = load_checked(save(nodes, inits, (1, 2), (1, 2), tmp_path / "k.onnx"))
    graph = graph.to("cpu", torch.float64)
    assert graph.float_model is torch.float32
    c = r.normal(size=2)
    lo32, hi32 = np.float32(c - 0.5), np.float32(c + 0.5)
    lo, hi = (torch.tensor(v, dtype=torch.float64).reshape(1, 2) for v in (lo32, hi32))
    ylo, yhi = interval_bounds(graph, lo, hi)[graph.output_name]
    pre = crown_intermediate(graph, lo, hi)
    eye = torch.eye(2, dtype=torch.float64).reshape(1, 2, 2)
    clo, chi = crown_output(graph, lo, hi, eye, pre)[0], -crown_output(graph, lo, hi, -eye, pre)[0]
    assert torch.isfinite(clo).all() and torch.isfinite(chi).all()    # the float model is bounded
    corners = np.array([[lo32[0], lo32[1]], [lo32[0], hi32[1]], [hi32[0], lo32[1]], [hi32[0], hi32[1]]])
    for x in np.concatenate([corners, r.uniform(lo32, hi32, size=(300, 2)).astype(np.float32)]):
        y = ref.run(x.astype(np.float32))
        assert np.all(ylo[0].numpy() <= y) and np.all(y <= yhi[0].numpy())
        assert np.all(clo.numpy() <= y) and np.all(y <= chi.numpy())


@pytest.mark.parametrize("engine", ["bab", "milp"])
def test_a_float32_leaky_relu_query_is_proved(tmp_path, engine):
    """LeakyRelu's float evaluation rounds one product: bounded, so a float32 query on it is
    decided (it timed out with infinite bounds before: no model error was known), by the bounds
    and branch and bound, and by the MILP engine (its kink rows carry the error per element)."""
    from verifier.config import VerifyConfig

    nodes = [helper.make_node("Gemm", ["X", "W"], ["h"], transB=1), helper.make_node("LeakyRelu", ["h"], ["Y"], alpha=0.1)]
    inits = [numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "W")]
    net = save(nodes, inits, (1, 1), (1, 1), tmp_path / "leaky.onnx")
    cfg = VerifyConfig(timeout_s=30, engine=engine)
    spec = tmp_path / "q.vnnlib"
    spec.write_text("(vnnlib-version <2.0>)\n(declare-network f (declare-input X float32 [1,1]) "
                    "(declare-output Y float32 [1,1]))\n(assert (>= X[0,0] -1.0))\n(assert (<= X[0,0] 1.0))\n"
                    "(assert (<= Y[0,0] -0.1000001))\n")
    assert verifier.verify(net, spec, timeout=30, config=cfg).verdict is Verdict.UNSAT
    spec.write_text(spec.read_text().replace("-0.1000001", "-0.1"))
    assert verifier.verify(net, spec, timeout=30, config=cfg).verdict is Verdict.SAT
