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
