"""The benchmark runner's independent counterexample check: reader, evaluator, onnxruntime, verdicts."""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier.bench.check import (SpecError, check_counterexample, holds, parse_assignment, parse_spec,
                                  read_sexprs, read_text)

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"

# y = W x + b, with W, b chosen so that every value below is exact in float32.
W = np.array([[1.0, 2.0], [3.0, -1.0]])
B = np.array([0.5, -0.25])


def linear_model(path: Path, elem=TensorProto.FLOAT, in_shape=(1, 2), hidden_relu=False) -> Path:
    dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
    nodes = [helper.make_node("Flatten", ["x"], ["xf"]),
             helper.make_node("Gemm", ["xf", "W", "b"], ["h"], transB=1)]
    if hidden_relu:
        nodes.append(helper.make_node("Relu", ["h"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["h"], ["y"]))
    graph = helper.make_graph(
        nodes, "lin", [helper.make_tensor_value_info("x", elem, list(in_shape))],
        [helper.make_tensor_value_info("y", elem, [1, 2])],
        [numpy_helper.from_array(W.astype(dtype), "W"), numpy_helper.from_array(B.astype(dtype), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = model.SerializeToString()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def forward(x) -> np.ndarray:
    return W @ np.asarray(x, dtype=np.float64) + B


V1_BOX = """; box [0,1]^2
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 0.0))
(assert (<= X_0 1.0))
(assert (>= X_1 0.0))
(assert (<= X_1 1.0))
"""


def assignment(x, y=None, name_x="X", name_y="Y", shape_x=None) -> str:
    x = np.asarray(x, dtype=np.float64)
    y = forward(x.ravel()) if y is None else np.asarray(y)
    dims = ",".join(str(d) for d in (shape_x or [x.size]))
    lines = [f"{name_x} Real [{dims}]", *map(repr, x.ravel().tolist()), f"{name_y} Real [{y.size}]",
             *map(repr, y.tolist())]
    return "\n".join(lines) + "\n"


@pytest.fixture
def model(tmp_path) -> Path:
    return linear_model(tmp_path / "lin.onnx")


def spec_file(tmp_path: Path, text: str, name: str = "p.vnnlib") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_counterexample_is_ok(tmp_path, model):
    # y0 - y1 = -2 x0 + 3 x1 + 0.75 >= 0 at x = (0, 0)
    spec = spec_file(tmp_path, V1_BOX + "(assert (>= Y_0 Y_1))\n")
    assert check_counterexample(spec, model, assignment([0.0, 0.0])).status == "ok"


def test_output_region_missed_is_bad_output(tmp_path, model):
    spec = spec_file(tmp_path, V1_BOX + "(assert (>= Y_0 Y_1))\n")
    # at x = (1, 0): y = (1.5, 2.75), so y0 < y1; the claimed outputs are lies and are ignored
    c = check_counterexample(spec, model, assignment([1.0, 0.0], y=[9.0, 0.0]))
    assert c.status == "bad-output"


def test_outputs_are_judged_exactly(tmp_path, model):
    x = [0.25, 0.5]
    y0 = float(forward(x)[0])  # 1.75, exact in float32
    at = spec_file(tmp_path, V1_BOX + f"(assert (>= Y_0 {y0!r}))\n", "at.vnnlib")
    above = spec_file(tmp_path, V1_BOX + f"(assert (>= Y_0 {y0 + 1e-12!r}))\n", "above.vnnlib")
    assert check_counterexample(at, model, assignment(x)).status == "ok"
    assert check_counterexample(above, model, assignment(x)).status == "bad-output"


def test_inputs_get_vnncomp_tolerance(tmp_path, model):
    spec = spec_file(tmp_path, V1_BOX + "(assert (>= Y_0 Y_1))\n")
    assert check_counterexample(spec, model, assignment([-5e-7, 0.0])).status == "ok"
    assert check_counterexample(spec, model, assignment([-2e-6, 0.0])).status == "bad-input"
    assert check_counterexample(spec, model, assignment([0.0, 1.0 + 1e-3])).status == "bad-input"


def test_disjunction_of_input_regions(tmp_path, model):
    # nn4sys style: each disjunct has its own input box and output condition
    text = """(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
    (assert (or (and (>= X_0 0.0) (<= X_0 0.1) (<= X_1 0.0) (>= X_1 0.0) (>= Y_0 100.0))
                (and (>= X_0 0.9) (<= X_0 1.0) (<= X_1 0.0) (>= X_1 0.0) (<= Y_0 2.0))))"""
    spec = spec_file(tmp_path, text)
    assert check_counterexample(spec, model, assignment([0.95, 0.0])).status == "ok"
    assert check_counterexample(spec, model, assignment([0.05, 0.0])).status == "bad-output"
    assert check_counterexample(spec, model, assignment([0.5, 0.0])).status == "bad-input"


def test_missing_and_malformed_assignments(tmp_path, model):
    spec = spec_file(tmp_path, V1_BOX + "(assert (>= Y_0 Y_1))\n")
    assert check_counterexample(spec, model, "").status == "missing"
    assert check_counterexample(spec, model, "X Real [2]\n0.0\n").status == "missing"
    assert check_counterexample(spec, model, "the answer is 42\n").status == "missing"
    assert check_counterexample(spec, model, "Y Real [2]\n1\n2\n").status == "missing"


def test_wrong_element_count_is_bad_input(tmp_path, model):
    spec = spec_file(tmp_path, V1_BOX + "(assert (>= Y_0 Y_1))\n")
    assert check_counterexample(spec, model, assignment([0.0, 0.0, 0.0], y=[0, 0])).status == "bad-input"
    assert check_counterexample(spec, model, "X Real [2]\nnan\n0\n").status == "bad-input"


def test_vnncomp_pair_format(tmp_path, model):
    spec = spec_file(tmp_path, V1_BOX + "(assert (>= Y_0 Y_1))\n")
    assert check_counterexample(spec, model, "((X_0 0.0)\n (X_1 0.0)\n (Y_0 0.5)\n (Y_1 -0.25))").ok
    assert check_counterexample(spec, model, "((X_0 1.0)\n (X_1 0.0))").status == "bad-output"


def test_gzipped_model_and_spec(tmp_path):
    model = linear_model(tmp_path / "lin.onnx.gz")
    spec = tmp_path / "p.vnnlib.gz"
    spec.write_bytes(gzip.compress((V1_BOX + "(assert (>= Y_0 Y_1))\n").encode()))
    assert check_counterexample(spec, model, assignment([0.0, 0.0])).ok


def test_double_model_gets_double_input(tmp_path):
    model = linear_model(tmp_path / "lin64.onnx", elem=TensorProto.DOUBLE)
    x = [0.1, 0.2]  # not float32-exact: a float32 cast would raise y0 by ~7.5e-9
    y0 = float(forward(x)[0])
    spec = spec_file(tmp_path, V1_BOX + f"(assert (<= Y_0 {y0 + 1e-12!r}))\n")
    assert check_counterexample(spec, model, assignment(x)).ok


def test_v2_multi_dimensional_indexing(tmp_path):
    model = linear_model(tmp_path / "lin.onnx", in_shape=(1, 1, 2))
    text = """(vnnlib-version <2.0>)
(declare-network net
    (declare-input X float32 [1,1,2])
    (declare-output Y float32 [1,2]))
(assert (and (>= X[0,0,0] 0.0) (<= X[0,0,0] 1.0) (>= X[0, 0, 1] 0.0) (<= X[0,0,1] 1.0)))
(assert (or (> (- Y[0,0] Y[0,1]) 0.5) (== Y[0,1] 1000.0)))  ; y0 - y1 = -2 x0 + 3 x1 + 0.75
"""
    spec = spec_file(tmp_path, text)
    assert check_counterexample(spec, model, assignment([[[0.0, 0.0]]], shape_x=[1, 1, 2])).ok
    # X[0,0,1] is the second element: x = (0, 1) gives 3.75, x = (1, 0) gives -1.25
    assert check_counterexample(spec, model, assignment([0.0, 1.0], shape_x=[1, 1, 2])).ok
    assert check_counterexample(spec, model, assignment([1.0, 0.0], shape_x=[1, 1, 2])).status == "bad-output"


def test_v2_hidden_node(tmp_path):
    model = linear_model(tmp_path / "relu.onnx", hidden_relu=True)
    text = """(vnnlib-version <2.0>)
(declare-network net
    (declare-input X float32 [1,2])
    (declare-hidden H float32 [1,2] "h")
    (declare-output Y float32 [1,2]))
(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0) (>= X[0,1] 0.0) (<= X[0,1] 1.0)))
(assert (< H[0,1] 0.0))
(assert (== Y[0,1] 0.0))
"""
    spec = spec_file(tmp_path, text)
    # h1 = 3 x0 - x1 - 0.25 < 0 at (0, 0.5); relu then zeroes y1
    assert check_counterexample(spec, model, assignment([0.0, 0.5], y=[0, 0])).ok
    assert check_counterexample(spec, model, assignment([1.0, 0.5], y=[0, 0])).status == "bad-output"


def test_v2_flat_index_on_malformed_shape(tmp_path, model):
    # some converted benchmarks (ACC, drones) declare shape [0] and index the flat tensor
    text = """(vnnlib-version <2.0>)
(declare-network acc (declare-input X Real [0]) (declare-output Y Real [0]))
(declare-fun X[0] () Real)
(assert (and (>= X[0] 0.0) (<= X[0] 1.0) (>= X[1] 0.0) (<= X[1] 1.0)))
(assert (>= Y[0] Y[1]))
"""
    spec = spec_file(tmp_path, text)
    assert check_counterexample(spec, model, assignment([0.0, 0.0])).ok
    assert check_counterexample(spec, model, assignment([1.0, 0.0])).status == "bad-output"


def test_reader_errors_and_comments():
    assert read_sexprs("(a (b c) ; comment (\n d)") == [["a", ["b", "c"], "d"]]
    with pytest.raises(SpecError):
        read_sexprs("(a (b)")
    with pytest.raises(SpecError):
        read_sexprs("(a))")
    with pytest.raises(SpecError):
        parse_spec("(declare-const Z_0 Real)")
    with pytest.raises(SpecError):
        parse_spec("(declare-const X_0 Real)(assert (not (<= X_0 1)))")


def test_assignment_parser_shapes():
    a = parse_assignment("X float32 [1,2]\n1\n2\nS Real []\n7\nY Real [2]\n-1e-3\ninf\n")
    assert a["X"].tolist() == [1.0, 2.0] and a["S"].tolist() == [7.0]
    assert a["Y"][0] == -1e-3 and np.isinf(a["Y"][1])


@st.composite
def linear_specs(draw):
    """A random VNN-LIB 1.0 formula over 3 inputs and 2 outputs, with a reference evaluator."""
    n_terms = draw(st.integers(1, 3))
    coef = st.floats(-4, 4, allow_nan=False).map(lambda v: round(v, 3))

    def atom():
        cs = [draw(coef) for _ in range(n_terms)]
        vs = [draw(st.sampled_from(["X_0", "X_1", "X_2", "Y_0", "Y_1"])) for _ in range(n_terms)]
        rhs = draw(coef)
        op = draw(st.sampled_from(["<=", ">=", "<", ">"]))
        text = f"({op} (+ {' '.join(f'(* {c!r} {v})' for c, v in zip(cs, vs))}) {rhs!r})"

        def ref(env):
            lhs = sum(c * env[v] for c, v in zip(cs, vs))
            tol = 1e-6 if all(v[0] == "X" for v in vs) else 0.0
            return {"<=": lhs <= rhs + tol, ">=": lhs >= rhs - tol, "<": lhs < rhs + tol, ">": lhs > rhs - tol}[op]
        return text, ref

    groups = [[atom() for _ in range(draw(st.integers(1, 3)))] for _ in range(draw(st.integers(1, 3)))]
    text = "(assert (or " + " ".join("(and " + " ".join(t for t, _ in g) + ")" for g in groups) + "))"
    return text, lambda env: any(all(r(env) for _, r in g) for g in groups)


@settings(max_examples=200, deadline=None)
@given(linear_specs(), st.lists(st.floats(-2, 2, allow_nan=False), min_size=5, max_size=5))
def test_evaluator_matches_reference(spec, values):
    text, ref = spec
    decl = "".join(f"(declare-const {v} Real)" for v in ("X_0", "X_1", "X_2", "Y_0", "Y_1"))
    parsed = parse_spec(decl + text)
    env = {"X": values[:3], "Y": values[3:]}
    named = {"X_0": values[0], "X_1": values[1], "X_2": values[2], "Y_0": values[3], "Y_1": values[4]}
    assert holds(parsed.formula, env) == ref(named)


@pytest.mark.skipif(not (BENCHMARKS / "nn4sys_2023").is_dir(), reason="../shared/benchmarks absent")
@pytest.mark.parametrize("version", ["vnnlib", "vnnlib2"])
def test_large_nn4sys_spec_is_fast(version):
    path = BENCHMARKS / "nn4sys_2023" / version / "lindex_10000.vnnlib"  # 1.8 MB
    start = time.perf_counter()
    spec = parse_spec(read_text(path))
    holds(spec.formula, {"X": [0.5], "Y": [0.5]})
    assert time.perf_counter() - start < 3.0


@pytest.mark.skipif(not (BENCHMARKS / "test").is_dir(), reason="../shared/benchmarks absent")
def test_real_sat_instance_and_tamper():
    """test_sat.onnx with ACAS Xu property 3: find a point by search, then break it."""
    from verifier.bench.check import run_model

    bench = BENCHMARKS / "test"
    spec_path, model = bench / "test_prop.vnnlib", bench / "test_sat.onnx"
    spec = parse_spec(read_text(spec_path))
    lo = np.array([-0.30353115613746867, -0.009549296585513092, 0.4933803235848431, 0.3, 0.3])
    hi = np.array([-0.29855281193475053, 0.009549296585513092, 0.49999999998567607, 0.5, 0.5])
    rng = np.random.default_rng(1)
    for x in [(lo + hi) / 2, *rng.uniform(lo, hi, size=(500, 5))]:
        seen, outs = run_model(model, [x])
        if holds(spec.formula, {"X": seen[0].tolist(), "Y": outs[0].tolist()}):
            break
    else:
        pytest.fail("no counterexample found for a sat instance")
    y = outs[0]
    assert check_counterexample(spec_path, model, assignment(x, y)).ok
    bad = x.copy()
    bad[3] = 0.5 + 1e-4
    assert check_counterexample(spec_path, model, assignment(bad, y)).status == "bad-input"


def test_several_networks_run_each_model(tmp_path):
    """Two networks, one an equal-to copy of the first: each runs its model on its own inputs."""
    from verifier.bench.check import parse_spec

    model = linear_model(tmp_path / "m.onnx")
    spec = ("(vnnlib-version <2.0>)\n(declare-network f (declare-input X real [1,2]) (declare-output Y real [1,2]))\n"
            "(declare-network g (equal-to f) (declare-input W real [1,2]) (declare-output Z real [1,2]))\n"
            "(assert (>= X[0,0] 0))\n(assert (<= X[0,0] 1))\n(assert (>= X[0,1] 0))\n(assert (<= X[0,1] 1))\n"
            "(assert (>= W[0,0] 0))\n(assert (<= W[0,0] 1))\n(assert (>= W[0,1] 0))\n(assert (<= W[0,1] 1))\n"
            "(assert (> (- Y[0,0] Z[0,0]) 2))\n")
    path = tmp_path / "q.vnnlib"
    path.write_text(spec)
    x, w = [1.0, 1.0], [0.0, 0.0]
    y, z = forward(x), forward(w)     # y0 - z0 = 3

    def answer(x, w):
        yy, zz = forward(x), forward(w)
        blocks = [("X", x), ("Y", yy), ("W", w), ("Z", zz)]
        return "\n".join(f"{n} real [1,2]\n" + "\n".join(repr(float(v)) for v in vals) for n, vals in blocks)

    assert y[0] - z[0] > 2
    assert check_counterexample(path, {"f": model}, answer(x, w)).status == "ok"
    assert check_counterexample(path, {"f": model}, answer(w, x)).status == "bad-output"
    assert check_counterexample(path, model, answer(x, w)).status == "error"
    assert parse_spec(spec).same_model == {"g": "f"}
