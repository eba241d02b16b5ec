"""The check before any proof: the imported graph must compute what onnxruntime computes on the
query's input region; models onnxruntime cannot load, and opsets outside what `supports` reports,
are refused."""
from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import vnnlib
from helpers_nets import Builder, one_torch_thread  # noqa: F401 (fixture)
from verifier import faithful
from verifier.api import InputError, load_checked, verify
from verifier.capabilities import CAPABILITIES
from verifier.faithful import check_faithful
from verifier.ir import Graph, Node
from verifier.onnx_import import ModelError, to_graph
from verifier.verdict import Verdict

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def identity_net(tmp_path: Path) -> Path:
    """y = x0 + x1 (one Gemm), float32."""
    b = Builder(np.random.default_rng(0), 13)
    y = b.op("Gemm", ["x", b.const([[1.0], [1.0]]), b.const([0.0])])
    path = tmp_path / "sum.onnx"
    path.write_bytes(b.finish("x", [1, 2], y).SerializeToString())
    return path


def sat_query(tmp_path: Path) -> Path:
    """x in [0, 1]^2 and y >= 1.5: reachable (x = (1, 1) gives 2), so the answer is sat."""
    path = tmp_path / "q.vnnlib"
    path.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                    "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n"
                    "(assert (>= Y_0 1.5))\n")
    return path


def shifted(graph: Graph, delta: float) -> Graph:
    """The graph with delta added to its output: a stand-in for a misimported operator."""
    last = graph.nodes[-1]
    b = last.params["b"] if last.params["b"] is not None else 0.0
    nodes = graph.nodes[:-1] + (Node(last.name, last.op, last.inputs, {**last.params, "b": b + delta}, last.shape),)
    return Graph(graph.input_name, graph.input_shape, nodes, graph.output_name, graph.onnx_input_shape,
                 graph.onnx_output_shape)


def test_misimported_graph_is_refused_where_it_would_prove_unsat(tmp_path, monkeypatch):
    import verifier.onnx_import as onnx_import

    real = onnx_import.to_graph
    monkeypatch.setattr(onnx_import, "to_graph", lambda model: shifted(real(model), -10.0))
    net, query = identity_net(tmp_path), sat_query(tmp_path)
    with pytest.raises(InputError, match=r"disagrees with onnxruntime at output 0"):
        verify(net, query, timeout=30)
    # without the check, the shifted graph (y <= -8 on the box) is "proved" to never reach 1.5
    monkeypatch.setattr(faithful, "check_faithful", lambda *a, **k: None)
    assert verify(net, query, timeout=30).verdict is Verdict.UNSAT


def test_faithful_import_answers(tmp_path):
    assert verify(identity_net(tmp_path), sat_query(tmp_path), timeout=30).verdict is Verdict.SAT


def test_small_misimport_is_caught(tmp_path):
    """0.1 % of the output is well above float32 rounding and below any sign flip."""
    graph, ref = load_checked(identity_net(tmp_path))
    prop = vnnlib.parse_file(sat_query(tmp_path))
    check_faithful(graph, ref, prop)
    with pytest.raises(InputError, match="disagrees"):
        check_faithful(shifted(graph, 1e-3), ref, prop)


def test_float32_rounding_with_cancellation_passes(tmp_path):
    """Outputs of ~1 that cancel hidden values of ~1e4: float32 leaves ~1e-3 of the output, 16 times
    REL_TOL; the graph's own float32 noise says so, and the check must not refuse the model."""
    rng = np.random.default_rng(3)
    b = Builder(rng, 13)
    W1 = rng.uniform(0.5, 1.0, (8, 5)) * 1e4
    W1[4:] = W1[:4] + rng.normal(size=(4, 5))  # h[4:] ~ h[:4] + O(1): the outputs cancel
    h = b.op("Relu", [b.op("Gemm", ["x", b.const(W1), b.const(rng.normal(size=8))], transB=1)])
    W2 = np.zeros((3, 8))
    W2[:, :4], W2[:, 4:] = 1.0, -1.0
    y = b.op("Gemm", [h, b.const(W2)], transB=1)
    path = tmp_path / "cancel.onnx"
    path.write_bytes(b.finish("x", [1, 5], y).SerializeToString())
    graph, ref = load_checked(path)
    lo, hi = np.full(5, 0.5), np.full(5, 1.0)
    prop = SimpleNamespace(cases=[SimpleNamespace(lo=lo, hi=hi)])
    x = faithful.sample_points(prop, 5).astype(np.float32).astype(np.float64)
    import torch

    from verifier.evaluate import forward

    err = max(float(np.abs(ref.run(p) - forward(graph, torch.as_tensor(p).reshape(1, 5)).numpy().ravel()).max()
                    / np.abs(ref.run(p)).max()) for p in x)
    assert err > faithful.REL_TOL, f"the model does not exercise the noise term ({err:.2e})"
    check_faithful(graph, ref, prop)


def test_no_case_no_check(tmp_path):
    graph, ref = load_checked(identity_net(tmp_path))
    check_faithful(shifted(graph, 5.0), ref, SimpleNamespace(cases=()))


def test_non_finite_outputs_never_agree():
    with pytest.raises(InputError, match="output 1"):
        faithful._compare(np.array([1.0, np.nan]), np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(InputError, match="not a finite function"):
        faithful._compare(np.array([np.inf]), np.array([np.inf]), np.array([np.inf]))
    with pytest.raises(InputError, match="3 outputs where onnxruntime has 2"):
        faithful._compare(np.zeros(3), np.zeros(3), np.zeros(2))


# --------------------------------------------------------------------------- models we cannot check
def mixed_types_model(path: Path) -> Path:
    """A float64 input fed to float32 Gemm weights (how ACC and drones_1d_hovering are written):
    onnx's checker accepts it, onnxruntime's type check does not."""
    W = numpy_helper.from_array(np.ones((2, 3), dtype=np.float32), "W")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"], name="gemm", transB=1)], "mixed",
                          [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 2])], initializer=[W])
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    return path


def test_model_onnxruntime_cannot_load_is_refused(tmp_path, capsys):
    path = mixed_types_model(tmp_path / "mixed.onnx")
    with pytest.raises(InputError, match="onnxruntime cannot load this model"):
        load_checked(path)
    from verifier.cli import main

    q = tmp_path / "q.vnnlib"
    q.write_text("".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))\n"
                         for i in range(3)) + "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                 "(assert (>= Y_0 5.0))\n")
    capsys.readouterr()
    rc = main(["verify", str(q), "--network", f"N={path}"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "onnxruntime cannot load" in err and "Traceback" not in err


def test_opsets_are_those_supports_reports():
    lo, hi = (int(v) for v in CAPABILITIES["--onnx-opset-versions"])
    for opset in (lo - 1, lo, 13, hi, hi + 1):
        b = Builder(np.random.default_rng(0), opset)
        model = b.finish("x", [1, 3], b.op("Relu", ["x"]))
        if lo <= opset <= hi:
            assert to_graph(model).output_size == 3
        else:
            with pytest.raises(ModelError, match=f"opset {opset}"):
                to_graph(model)


# --------------------------------------------------------------------------- every benchmark network
def _one_instance_per_network() -> list[tuple[Path, Path]]:
    """(network, its smallest property) for every distinct network of every benchmark."""
    if not BENCH.is_dir():
        return []
    out = []
    for csv_path in sorted(BENCH.glob("*/instances.csv")):
        root = csv_path.parent
        rows = [r for r in csv.reader(csv_path.open()) if r and r[0] != "onnx"]
        best: dict[str, Path] = {}
        for r in rows:
            spec = root / r[1]
            if spec.is_file() and (r[0] not in best or spec.stat().st_size < best[r[0]].stat().st_size):
                best[r[0]] = spec
        out += [(root / onnx_rel, spec) for onnx_rel, spec in sorted(best.items())]
    return out


INSTANCES = _one_instance_per_network()
# onnx's checker accepts these, onnxruntime's type check does not (float64 input, float32 weights)
UNLOADABLE = ("ACC", "drones_1d_hovering")


@pytest.mark.skipif(not INSTANCES, reason=f"benchmarks absent ({BENCH})")
def test_every_benchmark_network_matches_onnxruntime():
    """Each network, as the engine bounds it, agrees with onnxruntime at the centre and two random
    points of one of its properties; the two mixed-type benchmarks are refused by name."""
    checked = 0
    for net, spec in INSTANCES:
        bench = net.relative_to(BENCH).parts[0]
        if bench in UNLOADABLE:
            with pytest.raises(InputError, match="onnxruntime cannot load"):
                load_checked(net)
            continue
        graph, ref = load_checked(net)
        check_faithful(graph, ref, vnnlib.parse_file(spec), points=2)
        checked += 1
    assert checked >= 10
