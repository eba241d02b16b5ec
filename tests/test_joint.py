"""VNN-LIB 2.0 queries over several networks, several inputs and outputs, and hidden tensors.

Each query is decided both ways on small networks whose answer is known by construction: an
`unsat` from an argument written next to it (the copies are the same function, the difference
of two copies is bounded by the weights' difference, a network with non-negative weights is
monotone, a ReLU's output is never negative), a `sat` confirmed by onnxruntime on every model
and checked here again, element by element, against the query's comparisons.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import verifier
from helpers_nets import one_torch_thread  # noqa: F401 (autouse fixture)
from verifier.api import InputError
from verifier.verdict import Verdict

F32 = TensorProto.FLOAT
HEAD = "(vnnlib-version <2.0>)\n"


# --------------------------------------------------------------------------- models
def mlp(path: Path, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray, b2: np.ndarray) -> Path:
    """y = W2 relu(W1 x + b1) + b2 with x (1, n), hidden tensor "hidden" (the ReLU's output)."""
    n, h, m = W1.shape[1], W1.shape[0], W2.shape[0]
    inits = [numpy_helper.from_array(a.astype(np.float32), k) for k, a in
             (("W1", W1.T), ("b1", b1), ("W2", W2.T), ("b2", b2))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a1"]), helper.make_node("Add", ["a1", "b1"], ["z1"]),
             helper.make_node("Relu", ["z1"], ["hidden"]), helper.make_node("MatMul", ["hidden", "W2"], ["a2"]),
             helper.make_node("Add", ["a2", "b2"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", F32, [1, n])],
                          [helper.make_tensor_value_info("y", F32, [1, m])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def random_mlp(path: Path, seed: int, n: int = 3, h: int = 8, m: int = 2, positive: bool = False):
    rng = np.random.default_rng(seed)
    W1, W2 = rng.normal(size=(h, n)), rng.normal(size=(m, h))
    if positive:
        W1, W2 = np.abs(W1), np.abs(W2)
    return mlp(path, W1, rng.normal(size=h) * 0.3, W2, rng.normal(size=m) * 0.3), (W1, W2)


def two_in_two_out(path: Path) -> Path:
    """Inputs a (1, 2) and b (1, 2); outputs s = relu(a + b) and d = a - b."""
    nodes = [helper.make_node("Add", ["a", "b"], ["t"]), helper.make_node("Relu", ["t"], ["s"]),
             helper.make_node("Sub", ["a", "b"], ["d"])]
    vi = lambda k: helper.make_tensor_value_info(k, F32, [1, 2])
    g = helper.make_graph(nodes, "mio", [vi("a"), vi("b")], [vi("s"), vi("d")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def run(path: Path, x: np.ndarray, tensor: str = "y") -> np.ndarray:
    m = onnx.load(path)
    if tensor not in [o.name for o in m.graph.output]:
        m.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run([tensor], {"x": np.asarray(x, dtype=np.float32).reshape(1, -1)})[0].reshape(-1)


# --------------------------------------------------------------------------- queries
def box(var: str, n: int, lo: float = -1.0, hi: float = 1.0) -> str:
    return "".join(f"(assert (>= {var}[0,{i}] {lo}))\n(assert (<= {var}[0,{i}] {hi}))\n" for i in range(n))


def ties(a: str, b: str, n: int, skip=()) -> str:
    return "".join(f"(assert (== {a}[0,{i}] {b}[0,{i}]))\n" for i in range(n) if i not in skip)


def net(name: str, n: int, m: int, x: str, y: str, relation: str = "", hidden: str = "") -> str:
    return (f"(declare-network {name} {relation}(declare-input {x} real [1,{n}]) {hidden}"
            f"(declare-output {y} real [1,{m}]))\n")


def write(tmp_path: Path, text: str, name: str = "q.vnnlib") -> Path:
    p = tmp_path / name
    p.write_text(HEAD + text)
    return p


def decide(models, query: Path, timeout: float = 60.0):
    return verifier.verify(models, query, timeout=timeout)


# --------------------------------------------------------------------------- equal-to
def test_identical_copies_on_tied_inputs_differ_nowhere(tmp_path):
    f, _ = random_mlp(tmp_path / "f.onnx", 0)
    diff = " ".join(f"(> (- Y[0,{k}] Z[0,{k}]) 0.001) (< (- Y[0,{k}] Z[0,{k}]) -0.001)" for k in range(2))
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(equal-to f) ")
              + box("X", 3) + ties("X", "W", 3) + f"(assert (or {diff}))\n")
    r = decide({"f": f}, q)
    assert r.verdict is Verdict.UNSAT, r.reason


def test_identical_copies_on_untied_inputs_differ(tmp_path):
    f, _ = random_mlp(tmp_path / "f.onnx", 1)
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(equal-to f) ")
              + box("X", 3) + box("W", 3) + "(assert (> (- Y[0,0] Z[0,0]) 0.01))\n")
    r = decide({"f": f}, q)
    assert r.verdict is Verdict.SAT
    x, w, y, z = r.x[:3], r.x[3:], r.y[:2], r.y[2:]
    np.testing.assert_array_equal(y, run(f, x))
    np.testing.assert_array_equal(z, run(f, w))
    assert y[0] - z[0] > 0.01 and np.all(np.abs(r.x) <= 1)


# --------------------------------------------------------------------------- isomorphic-to
def _perturbed(tmp_path: Path, seed: int, delta: float):
    rng = np.random.default_rng(seed)
    W1, W2 = rng.normal(size=(8, 3)), rng.normal(size=(2, 8))
    b1, b2 = rng.normal(size=8) * 0.3, rng.normal(size=2) * 0.3
    E = np.abs(rng.normal(size=W2.shape)) * delta
    f = mlp(tmp_path / "f.onnx", W1, b1, W2, b2)
    g = mlp(tmp_path / "g.onnx", W1, b1, W2 + E, b2)
    return f, g, (W1, b1, E)


def test_perturbed_copy_stays_within_its_bound(tmp_path):
    f, g, (W1, b1, E) = _perturbed(tmp_path, 2, 0.01)
    # g - f = E relu(W1 x + b1), and relu(W1 x + b1) <= |W1| 1 + |b1| on [-1, 1]^3
    h_max = np.abs(W1).sum(1) + np.abs(b1)
    bound = float((np.abs(E) @ h_max).max()) * 1.01 + 1e-4
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(isomorphic-to f) ")
              + box("X", 3) + ties("X", "W", 3)
              + f"(assert (or (> (- Z[0,0] Y[0,0]) {bound}) (> (- Z[0,1] Y[0,1]) {bound})))\n")
    r = decide({"f": f, "g": g}, q)
    assert r.verdict is Verdict.UNSAT, r.reason


def test_perturbed_copy_differs_where_its_hidden_layer_is_active(tmp_path):
    f, g, _ = _perturbed(tmp_path, 3, 0.01)
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(isomorphic-to f) ")
              + box("X", 3) + ties("X", "W", 3) + "(assert (> (- Z[0,0] Y[0,0]) 0.0001))\n")
    r = decide({"f": f, "g": g}, q)
    assert r.verdict is Verdict.SAT
    x = r.x[:3]
    np.testing.assert_array_equal(r.x[3:], x)
    assert run(g, x)[0] - run(f, x)[0] > 0.0001


# --------------------------------------------------------------------------- monotonicity
def _monotone_query(tmp_path: Path, decreasing_violation: bool) -> str:
    """Input 0 of the first copy at least that of the second, the others equal; the violation:
    the first copy's output 0 below the second's by more than 0.001 (or above it).  Without the
    margin the violation's boundary is the diagonal itself, where the two copies are equal: a
    bound computed in floating point cannot show that a difference is exactly >= 0 there."""
    return (net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(equal-to f) ") + box("X", 3) + box("W", 3)
            + ties("X", "W", 3, skip=(0,)) + "(assert (>= X[0,0] W[0,0]))\n"
            + ("(assert (< (- Y[0,0] Z[0,0]) -0.001))\n" if decreasing_violation else "(assert (> Y[0,0] Z[0,0]))\n"))


def test_network_with_positive_weights_is_monotone(tmp_path):
    rng = np.random.default_rng(4)
    W1, W2 = np.abs(rng.normal(size=(8, 3))), np.abs(rng.normal(size=(2, 8)))
    # biases above sum |W1| keep every ReLU active on [-1, 1]^3: the order must be used in the
    # bound itself (the box alone holds points with X[0,0] < W[0,0], where Y[0,0] < Z[0,0])
    f = mlp(tmp_path / "f.onnx", W1, W1.sum(1) + 0.5, W2, np.zeros(2))
    r = decide({"f": f}, write(tmp_path, _monotone_query(tmp_path, True)))
    assert r.verdict is Verdict.UNSAT, r.reason


def test_monotone_network_increases_somewhere(tmp_path):
    f, _ = random_mlp(tmp_path / "f.onnx", 4, positive=True)
    r = decide({"f": f}, write(tmp_path, _monotone_query(tmp_path, False)))
    assert r.verdict is Verdict.SAT
    x, w = r.x[:3], r.x[3:]
    assert x[0] >= w[0] and np.array_equal(x[1:], w[1:])
    assert run(f, x)[0] > run(f, w)[0]


def test_network_with_negative_weight_is_not_monotone(tmp_path):
    W1 = np.array([[1.0, 0.5, 0.0], [-1.0, 0.2, 0.3]])
    f = mlp(tmp_path / "f.onnx", W1, np.zeros(2), np.array([[1.0, 1.0], [1.0, -1.0]]), np.zeros(2))
    # y0 = relu(x0 + ..) + relu(-x0 + ..): decreasing in x0 where the second unit dominates
    r = decide({"f": f}, write(tmp_path, _monotone_query(tmp_path, True)))
    assert r.verdict is Verdict.SAT
    x, w = r.x[:3], r.x[3:]
    assert x[0] >= w[0] and np.array_equal(x[1:], w[1:])
    assert run(f, x)[0] < run(f, w)[0]


# --------------------------------------------------------------------------- hidden tensors
def test_hidden_relu_output_is_never_negative(tmp_path):
    f, _ = random_mlp(tmp_path / "f.onnx", 5)
    q = write(tmp_path, net("f", 3, 2, "X", "Y", hidden='(declare-hidden H real [1,8] "hidden") ')
              + box("X", 3) + "(assert (or (< H[0,0] 0) (< H[0,5] -0.5)))\n")
    assert decide({"f": f}, q).verdict is Verdict.UNSAT


def test_hidden_tensor_reaches_a_value_and_is_reported(tmp_path):
    f, (W1, _) = random_mlp(tmp_path / "f.onnx", 6)
    q = write(tmp_path, net("f", 3, 2, "X", "Y", hidden='(declare-hidden H real [1,8] "hidden") ')
              + box("X", 3) + "(assert (> H[0,2] 0.5))\n(assert (> Y[0,0] -100))\n")
    r = decide({"f": f}, q)
    assert r.verdict is Verdict.SAT
    x = r.x
    np.testing.assert_array_equal(r.y[:8], run(f, x, "hidden"))
    np.testing.assert_array_equal(r.y[8:], run(f, x))
    assert r.y[2] > 0.5


# --------------------------------------------------------------------------- several inputs, outputs
def test_several_inputs_and_outputs(tmp_path):
    m = two_in_two_out(tmp_path / "m.onnx")
    text = ("(declare-network m (declare-input A real [1,2]) (declare-input B real [1,2]) "
            "(declare-output S real [1,2]) (declare-output D real [1,2]))\n" + box("A", 2) + box("B", 2, 0.0, 0.5))
    unsat = write(tmp_path, text + "(assert (or (< S[0,0] 0) (> D[0,1] 1.0001) (< D[0,1] -1.5001)))\n", "u.vnnlib")
    assert decide({"m": m}, unsat).verdict is Verdict.UNSAT
    sat = write(tmp_path, text + "(assert (> D[0,1] 0.9))\n(assert (> S[0,0] 1.2))\n", "s.vnnlib")
    r = decide({"m": m}, sat)
    assert r.verdict is Verdict.SAT
    a, b = r.x[:2], r.x[2:]
    s, d = r.y[:2], r.y[2:]
    assert d[1] > 0.9 and s[0] > 1.2
    np.testing.assert_allclose(d, (a.astype(np.float32) - b.astype(np.float32)), rtol=0, atol=0)


def test_onnx_names_pick_the_tensors(tmp_path):
    m = two_in_two_out(tmp_path / "m.onnx")
    # the query lists the inputs and outputs in the model's order but names them
    text = ('(declare-network m (declare-input A real [1,2] "a") (declare-input B real [1,2] "b") '
            '(declare-output S real [1,2] "s") (declare-output D real [1,2] "d"))\n' + box("A", 2) + box("B", 2))
    q = write(tmp_path, text + "(assert (< S[0,1] 0))\n")
    assert decide({"m": m}, q).verdict is Verdict.UNSAT
    bad = write(tmp_path, text.replace('"s"', '"nope"') + "(assert (< S[0,1] 0))\n", "bad.vnnlib")
    with pytest.raises(InputError, match="no output named 'nope'"):
        decide({"m": m}, bad)


# --------------------------------------------------------------------------- arithmetic, bounds
def test_not_equal_is_its_disjunction(tmp_path):
    f, _ = random_mlp(tmp_path / "f.onnx", 7)
    # X[0,0] != X[0,0] can never hold; Y[0,0] != 12345 always can
    never = write(tmp_path, net("f", 3, 2, "X", "Y") + box("X", 3) + "(assert (!= (+ X[0,0] 0) X[0,0]))\n", "n.vnnlib")
    assert decide({"f": f}, never).verdict is Verdict.UNSAT
    always = write(tmp_path, net("f", 3, 2, "X", "Y") + box("X", 3) + "(assert (!= Y[0,0] 12345))\n", "a.vnnlib")
    assert decide({"f": f}, always).verdict is Verdict.SAT


def test_unbounded_input_is_unknown_not_an_error(tmp_path):
    f, _ = random_mlp(tmp_path / "f.onnx", 8)
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + box("X", 2) + "(assert (> Y[0,0] 1000))\n")
    r = decide({"f": f}, q)
    assert r.verdict is Verdict.UNKNOWN and "no finite bounds" in r.reason


def test_bounds_reach_an_undeclared_copy_through_its_ties(tmp_path):
    f, _ = random_mlp(tmp_path / "f.onnx", 9)
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(equal-to f) ")
              + box("X", 3) + ties("X", "W", 3) + "(assert (> (- Y[0,0] Z[0,0]) 0.001))\n")
    assert decide({"f": f}, q).verdict is Verdict.UNSAT


# --------------------------------------------------------------------------- the command line
def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "verifier", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_cli_prints_every_network_s_variables_in_order(tmp_path):
    f, _ = random_mlp(tmp_path / "f.onnx", 1)
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(equal-to f) ")
              + box("X", 3) + box("W", 3) + "(assert (> (- Y[0,0] Z[0,0]) 0.01))\n")
    r = _cli("verify", q, "--network", f"f={f}", "--timeout", "60", "-q")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "sat"
    headers = [ln for ln in lines[1:] if " " in ln]
    assert headers == ["X real [1,3]", "Y real [1,2]", "W real [1,3]", "Z real [1,2]"]


@pytest.mark.parametrize("networks, message", [
    ([], "gave none"),
    (["f={f}", "g={f}"], "take a model"),
    (["h={f}"], "take a model"),
])
def test_cli_refuses_network_options_that_do_not_match(tmp_path, networks, message):
    f, _ = random_mlp(tmp_path / "f.onnx", 1)
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(equal-to f) ")
              + box("X", 3) + ties("X", "W", 3) + "(assert (> Y[0,0] Z[0,0]))\n")
    args = []
    for item in networks:
        args += ["--network", item.format(f=f)]
    r = _cli("verify", q, *args)
    assert r.returncode == 2 and r.stdout == ""
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- the difference rule
def _delta_boxes():
    end = st.one_of(st.floats(-50, 50), st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 1e-12, -1e-12]))
    pair = st.tuples(end, end).map(sorted)
    return st.lists(st.tuples(pair, pair, st.booleans()), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(boxes=_delta_boxes(), seed=st.integers(0, 2 ** 16))
def test_relu_delta_planes_and_interval_hold_for_every_a(boxes, seed):
    """relu(a + d) - relu(a) for sampled d and a in their boxes (a's box known or not) lies
    inside the interval and between the planes in d."""
    from verifier.ir import Node
    from verifier.ops import RULES

    rule = RULES["ReluDelta"]
    dl = torch.tensor([b[0][0] for b in boxes], dtype=torch.float64)
    dh = torch.tensor([b[0][1] for b in boxes], dtype=torch.float64)
    al = torch.tensor([b[1][0] for b in boxes], dtype=torch.float64)
    ah = torch.tensor([b[1][1] for b in boxes], dtype=torch.float64)
    known = torch.tensor([b[2] for b in boxes])
    al = torch.where(known, al, torch.full_like(al, -torch.inf))
    ah = torch.where(known, ah, torch.full_like(ah, torch.inf))
    node = Node("d", "ReluDelta", ("d", "a"), {}, (len(boxes),))
    lw, lb, uw, ub = rule.relax(node, dl, dh, (al, ah))
    ilo, ihi = rule.interval(node, dl, dh, (al, ah))
    g = torch.Generator().manual_seed(seed)
    for _ in range(8):
        t, s = torch.rand(dl.shape, generator=g, dtype=torch.float64), torch.rand(dl.shape, generator=g, dtype=torch.float64)
        d = torch.cat([dl, dh, dl + (dh - dl) * t]).reshape(3, -1)
        a_lo = torch.where(known, al, torch.full_like(al, -60.0))
        a_hi = torch.where(known, ah, torch.full_like(ah, 60.0))
        a = torch.cat([a_lo, a_hi, a_lo + (a_hi - a_lo) * s]).reshape(3, -1)
        for i in range(3):
            for j in range(3):
                v = rule.evaluate(node, d[i], a[j])
                slack = 4e-16 * (d[i].abs() + a[j].abs() + 1e-300)   # evaluating v itself rounds
                assert (ilo <= v + slack).all() and (v - slack <= ihi).all()
                assert (lw * d[i] + lb <= v + slack + 4e-16 * (lw * d[i]).abs()).all()
                assert (v - slack - 4e-16 * (uw * d[i]).abs() <= uw * d[i] + ub).all()


def _both_forms(query: Path, f: Path, g: Path):
    """({differential: CROWN's bound of the query's first row}, the difference-form graph), each
    bound checked against 4096 sampled points of the region."""
    import vnnlib
    from verifier.evaluate import forward
    from verifier.incomplete import crown_lower
    from verifier.joint import load_joint
    from verifier.spec import build_cases

    prop = vnnlib.parse_file(query)
    bounds, graph = {}, None
    for differential in (False, True):
        graph, _, tied = load_joint(prop, {"f": str(f), "g": str(g)}, differential=differential)
        cs = build_cases(tied, graph.input_shape, graph.output_size, torch.float64, torch.device("cpu"))
        lb, _ = crown_lower(graph, cs)
        xs = cs.lo + (cs.hi - cs.lo) * torch.rand((4096,) + tuple(cs.lo.shape[1:]), dtype=torch.float64)
        rows = forward(graph, xs) @ cs.C[0].T + cs.d[0]
        assert (lb[0] <= rows.min(0).values).all()
        bounds[differential] = float(lb[0, 0])
    return bounds, graph


def test_copies_bounded_as_a_difference_are_sound_and_tighter(tmp_path):
    """On a perturbed copy, CROWN over the difference form contains every sampled difference
    and is at least as tight as over two separate copies (the same input box, tied inputs)."""
    f, g, _ = _perturbed(tmp_path, 11, 0.05)
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(isomorphic-to f) ")
              + box("X", 3) + ties("X", "W", 3) + "(assert (> (- Z[0,0] Y[0,0]) 100))\n")
    bounds, graph = _both_forms(q, f, g)
    assert "ReluDelta" in {n.op for n in graph.nodes}
    assert bounds[True] >= bounds[False] - 1e-9


# --------------------------------------------------------------------------- comparisons across nodes
def test_comparisons_mixing_inputs_and_outputs(tmp_path):
    """MNC: Y[0,1] = X[0,0] + X[0,1] exactly here (the model's second output is a - b for inputs
    a, b: D = A - B), so D[0,1] + B[0,1] - A[0,1] is 0 everywhere."""
    m = two_in_two_out(tmp_path / "m.onnx")
    text = ("(declare-network m (declare-input A real [1,2]) (declare-input B real [1,2]) "
            "(declare-output S real [1,2]) (declare-output D real [1,2]))\n" + box("A", 2) + box("B", 2))
    never = write(tmp_path, text + "(assert (or (> (- (+ D[0,1] B[0,1]) A[0,1]) 0.0001) "
                                   "(< (- (+ D[0,1] B[0,1]) A[0,1]) -0.0001)))\n", "u.vnnlib")
    assert decide({"m": m}, never).verdict is Verdict.UNSAT
    # S[0,0] = relu(A + B) exceeds A[0,0] somewhere (where B[0,0] > 0)
    some = write(tmp_path, text + "(assert (> S[0,0] (+ A[0,0] 0.5)))\n", "s.vnnlib")
    r = decide({"m": m}, some)
    assert r.verdict is Verdict.SAT
    a, b, s = r.x[:2], r.x[2:], r.y[:2]
    assert s[0] > a[0] + 0.5 and s[0] == max(np.float32(a[0]) + np.float32(b[0]), 0)


def test_mixed_comparison_parses_through_the_inputs_copy():
    import vnnlib
    from vnnlib.v2 import ECHO

    prop = vnnlib.parse_text(HEAD + net("f", 2, 1, "X", "Y") + box("X", 2) + "(assert (<= Y[0,0] (* 2 X[0,1])))\n")
    assert [v.name for v in prop.outputs] == ["Y", ECHO] and prop.n_out == 3
    (conj,) = prop.cases[0].region
    assert conj.C.tolist() == [[1.0, 0.0, -2.0]] and conj.d.tolist() == [0.0]
    assert conj.holds(np.array([1.0, 9.0, 0.5])) and not conj.holds(np.array([1.5, 9.0, 0.5]))


def test_unbounded_input_can_still_be_sat(tmp_path):
    """D = A - B with A[0,0] unbounded: D[0,0] > 50 needs A[0,0] > 50, found by searching wider
    regions; the counterexample meets the query as written (no bound on A[0,0])."""
    m = two_in_two_out(tmp_path / "m.onnx")
    text = ("(declare-network m (declare-input A real [1,2]) (declare-input B real [1,2]) "
            "(declare-output S real [1,2]) (declare-output D real [1,2]))\n"
            "(assert (>= A[0,1] -1))\n(assert (<= A[0,1] 1))\n" + box("B", 2, 0.0, 0.5))
    r = decide({"m": m}, write(tmp_path, text + "(assert (> D[0,0] 50))\n"))
    assert r.verdict is Verdict.SAT and r.y[2] > 50 and r.x[0] > 50


def test_rows_over_several_inputs_prune_the_search(tmp_path):
    """y = x0 + x1 on [-1, 1]^2 with x0 + x1 <= -1.5: y > -1.2 is impossible there, but not over
    the box; input splitting drops the sub-boxes that hold no point of the row (a rigorous lower
    bound of the row above 0) and refutes the rest."""
    f = mlp(tmp_path / "f.onnx", np.eye(2), np.full(2, 5.0), np.ones((1, 2)), np.array([-10.0]))
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + "(declare-const Y_0 Real)\n"
    text += "".join(f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))\n" for i in range(2))
    text += "(assert (<= (+ X_0 X_1) -1.5))\n"
    q = tmp_path / "q.vnnlib"
    q.write_text(text + "(assert (> Y_0 -1.2))\n")
    assert verifier.verify(f, q, timeout=60).verdict is Verdict.UNSAT
    q.write_text(text + "(assert (> Y_0 -1.6))\n")
    r = verifier.verify(f, q, timeout=60)
    assert r.verdict is Verdict.SAT and r.x[0] + r.x[1] <= -1.5 and r.y[0] > -1.6


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
@settings(max_examples=150, deadline=None)
@given(boxes=_delta_boxes(), seed=st.integers(0, 2 ** 16))
def test_monotone_delta_planes_and_interval_hold_for_every_a(op, boxes, seed):
    """f(a + d) - f(a) for sampled d and a (a's box known or not) lies inside the interval and
    between the planes in d."""
    from verifier.ir import Node
    from verifier.ops import RULES

    rule = RULES["MonotoneDelta"]
    t = lambda k, j: torch.tensor([b[k][j] for b in boxes], dtype=torch.float64)
    dl, dh, al, ah = t(0, 0), t(0, 1), t(1, 0), t(1, 1)
    known = torch.tensor([b[2] for b in boxes])
    al = torch.where(known, al, torch.full_like(al, -torch.inf))
    ah = torch.where(known, ah, torch.full_like(ah, torch.inf))
    node = Node("d", "MonotoneDelta", ("d", "a"), {"of": op}, (len(boxes),))
    lw, lb, uw, ub = rule.relax(node, dl, dh, (al, ah))
    ilo, ihi = rule.interval(node, dl, dh, (al, ah))
    g = torch.Generator().manual_seed(seed)
    a_lo = torch.where(known, al, torch.full_like(al, -60.0))
    a_hi = torch.where(known, ah, torch.full_like(ah, 60.0))
    for _ in range(6):
        u, v = (torch.rand(dl.shape, generator=g, dtype=torch.float64) for _ in range(2))
        for d in (dl, dh, dl + (dh - dl) * u):
            for a in (a_lo, a_hi, a_lo + (a_hi - a_lo) * v):
                val = rule.evaluate(node, d, a)
                slack = 1e-14 * (1 + d.abs())     # evaluating f twice and subtracting
                assert (ilo <= val + slack).all() and (val - slack <= ihi).all()
                assert (lw * d + lb <= val + slack).all() and (val - slack <= uw * d + ub).all()


def _sigmoid_mlp(path: Path, W1, b1, W2, b2) -> Path:
    m = onnx.load(mlp(path, W1, b1, W2, b2))
    for node in m.graph.node:
        if node.op_type == "Relu":
            node.op_type = "Sigmoid"
    onnx.save(m, path)
    return path


def test_sigmoid_copies_bounded_as_a_difference(tmp_path):
    """A perturbed copy of a Sigmoid network: the difference form (MonotoneDelta) proves a bound
    that two separate copies do not, and stays sound against samples."""
    rng = np.random.default_rng(12)
    W1, W2 = rng.normal(size=(8, 3)) * 2, rng.normal(size=(2, 8))
    b1, b2 = rng.normal(size=8), rng.normal(size=2)
    f = _sigmoid_mlp(tmp_path / "f.onnx", W1, b1, W2, b2)
    g = _sigmoid_mlp(tmp_path / "g.onnx", W1 * (1 + 1e-3 * rng.normal(size=W1.shape)), b1, W2, b2)
    q = write(tmp_path, net("f", 3, 2, "X", "Y") + net("g", 3, 2, "W", "Z", "(isomorphic-to f) ")
              + box("X", 3) + ties("X", "W", 3) + "(assert (> (- Z[0,0] Y[0,0]) 0.05))\n")
    bounds, graph = _both_forms(q, f, g)
    assert "MonotoneDelta" in {n.op for n in graph.nodes}
    assert bounds[True] > 0 >= bounds[False]
    assert decide({"f": f, "g": g}, q).verdict is Verdict.UNSAT


def test_a_bound_of_exactly_zero_refutes_only_strict_rows(tmp_path):
    """A ReLU output's lower bound is exactly 0: it refutes H < 0 (never holds) but must not
    refute H <= 0, which holds wherever the neuron is off (a known answer: sat)."""
    f, (W1, _) = random_mlp(tmp_path / "f.onnx", 5)
    m = onnx.load(f)
    b1 = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "b1"))
    off = [j for j in range(8) if b1[j] - np.abs(W1[j]).sum() < -0.1]    # can be switched off in the box
    assert off
    j = off[0]
    hidden = '(declare-hidden H real [1,8] "hidden") '
    r = decide({"f": f}, write(tmp_path, net("f", 3, 2, "X", "Y", hidden=hidden) + box("X", 3)
                               + f"(assert (<= H[0,{j}] 0))\n", "le.vnnlib"))
    assert r.verdict is Verdict.SAT and r.y[j] == 0.0
    r = decide({"f": f}, write(tmp_path, net("f", 3, 2, "X", "Y", hidden=hidden) + box("X", 3)
                               + f"(assert (< H[0,{j}] 0))\n", "lt.vnnlib"))
    assert r.verdict is Verdict.UNSAT


def test_copies_are_bounded_without_any_widening():
    """Reshape, Gather (no repeats) and Concat only copy: interval bounds through them are the
    input's bounds to the last bit, and back-substitution along a chain of them carries the
    coefficients over exactly with no error term (where two paths meet, adding coefficients is
    charged its rounding; the final dot product with the box is charged as always)."""
    from verifier.bounds.backward import Relaxation, backward_linear, mags_of
    from verifier.bounds.interval import interval_bounds
    from verifier.ir import Graph, Node

    nodes = (Node("g", "Gather", ("x",), {"axis": 1, "indices": torch.tensor([2, 0, 1])}, (3,)),
             Node("r", "Reshape", ("g",), {}, (3, 1)),
             Node("f", "Reshape", ("r",), {}, (3,)),
             Node("c", "Concat", ("f", "x"), {"axis": 1, "parts": [None, None]}, (6,)))
    graph = Graph("x", (3,), nodes, "c", (3,))
    lo = torch.tensor([[0.1, -0.3, 1e-300]], dtype=torch.float64)
    hi = torch.tensor([[0.7, 2.0 / 3.0, 5.0]], dtype=torch.float64)
    ylo, yhi = interval_bounds(graph, lo, hi)["c"]
    assert torch.equal(ylo, torch.cat([lo[:, [2, 0, 1]], lo], 1)) and torch.equal(yhi, torch.cat([hi[:, [2, 0, 1]], hi], 1))
    C = torch.eye(3, dtype=torch.float64).unsqueeze(0)
    A, const, err = backward_linear(graph, "f", C, Relaxation({}, mags=mags_of(interval_bounds(graph, lo, hi))))
    assert torch.equal(A[0], torch.eye(3, dtype=torch.float64)[[2, 0, 1]])   # row k reads x[index k]
    assert torch.equal(const, torch.zeros(1, 3, dtype=torch.float64)) and torch.equal(err, torch.zeros(1, 3, dtype=torch.float64))
