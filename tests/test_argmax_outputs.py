"""ArgMax at a network output, read as an int64 by a VNN-LIB 2.0 query (verifier/argmax.py).

1. The rewrite itself: on integer-valued logits (ties everywhere), the original comparisons on
   Y = first argmax hold exactly when one of the rewritten conjuncts' rows holds on the logits.
2. verify() end to end, both ways: sat answers checked against onnxruntime's own int64 output,
   unsat by construction, and on a random network against a dense grid (never unsat for a class
   the grid reaches); ties resolved to the first index, as onnxruntime does.
3. The forms we do not handle are refused: exit 2, one line on stderr.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import verifier
import vnnlib
from helpers_nets import Builder, case_registry, run_onnxruntime
from verifier.argmax import ArgMaxRead, rewrite
from verifier.verdict import Verdict

CASES, case = case_registry((11, 13, 17, 21))


# --------------------------------------------------------------------------- models and queries
def tie_model(keepdims: int = 1, opset: int = 13) -> onnx.ModelProto:
    """logits (x0, x1, -x0): at x0 = 0 classes 0 and 2 tie (first index wins: 0)."""
    b = Builder(np.random.default_rng(0), opset)
    W = np.array([[1, 0, -1], [0, 1, 0]], dtype=np.float32)
    y = b.op("ArgMax", [b.op("MatMul", ["x", b.const(W)])], axis=-1, keepdims=keepdims)
    return b.finish("x", [1, 2], y)


def mlp_model(seed: int) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed), 13)
    h = b.op("Relu", [b.gemm("x", 2, 12, scale=1.5)])
    y = b.op("ArgMax", [b.gemm(h, 12, 4, scale=1.0)], axis=1, keepdims=0)
    return b.finish("x", [1, 2], y)


@case("argmax_output")
def _(b):
    return [1, 2], b.op("ArgMax", [b.gemm("x", 2, 3)], axis=1, keepdims=1)


def build(name: str, opset: int):
    fn, _ = CASES[name]
    b = Builder(np.random.default_rng(0), opset)
    shape, y = fn(b)
    return b.finish("x", shape, y), shape


def query(body: str, box, y_shape: str = "[1,1]", x_type: str = "float32", y_type: str = "int64") -> str:
    (lo0, hi0), (lo1, hi1) = box
    return f"""(vnnlib-version <2.0>)
(declare-network f (declare-input X {x_type} [1,2]) (declare-output Y {y_type} {y_shape}))
(assert (and (>= X[0,0] {lo0}) (<= X[0,0] {hi0}) (>= X[0,1] {lo1}) (<= X[0,1] {hi1})))
{body}
"""


def write(tmp_path, model, text, name="q"):
    onnx.save(model, tmp_path / f"{name}.onnx")
    (tmp_path / f"{name}.vnnlib").write_text(text)
    return tmp_path / f"{name}.onnx", tmp_path / f"{name}.vnnlib"


def decide(tmp_path, model, text, timeout=30.0):
    m, q = write(tmp_path, model, text)
    return verifier.verify({"f": str(m)}, str(q), timeout=timeout)


def onnx_argmax(model, x) -> int:
    return int(np.asarray(run_onnxruntime(model, np.asarray(x, dtype=np.float32).reshape(1, 2))).reshape(-1)[0])


# --------------------------------------------------------------------------- 1. the rewrite
ATOMS = ["(== Y[0] 1)", "(!= Y[0] 1)", "(<= Y[0] 1)", "(< Y[0] 2)", "(>= Y[0] 2)", "(> Y[0] 0.5)",
         "(== Y[0] 1.5)", "(== (* 2 Y[0]) 4)", "(or (== Y[0] 0) (== Y[0] 3))", "(and (>= Y[0] 1) (<= Y[0] 2))"]


@pytest.mark.parametrize("atom", ATOMS)
def test_rewrite_is_exact_on_ties(atom):
    """For every logit vector over {0, 1, 2}^4 (ties in most of them): the original conjuncts
    hold at Y = first argmax iff some rewritten conjunct's exact rows hold at the logits."""
    text = query(f"(assert {atom})", ((0, 1), (0, 1)), y_shape="[1]")
    prop = vnnlib.parse_text(text)
    read = ArgMaxRead("Y", "y", "logits")
    new = rewrite(prop, {"f": [(read, 4)]})
    assert new.n_out == prop.n_out + 4
    for logits in itertools.product([0.0, 1.0, 2.0], repeat=4):
        y = float(np.argmax(logits))          # numpy: the first maximal index, as ONNX
        want = any(c.holds(np.array([y])) for case in prop.cases for c in case.region)
        rows = np.array([y] + list(logits))
        got = any(bool(np.all(np.where(c.strict, c.C @ rows + c.d < 0, c.C @ rows + c.d <= 0)))
                  for case in new.cases for c in case.region)
        assert got == want, (atom, logits)
        # the exact check still reads Y as written
        assert any(c.holds(rows) for case in new.cases for c in case.region) == want


def test_rewrite_refuses_mixed_comparisons():
    from verifier.argmax import ArgMaxError

    text = query("(assert (<= Y[0] X[0,0]))", ((0, 1), (0, 1)), y_shape="[1]")
    with pytest.raises(ArgMaxError, match="compared with a term over other variables"):
        rewrite(vnnlib.parse_text(text), {"f": [(ArgMaxRead("Y", "y", "logits"), 3)]})


# --------------------------------------------------------------------------- 2. verify end to end
BOX = ((-1.0, 1.0), (-1.0, 1.0))


@pytest.mark.parametrize("body, box, verdict", [
    ("(assert (== Y[0,0] 1))", BOX, "sat"),
    ("(assert (!= Y[0,0] 0))", BOX, "sat"),
    ("(assert (>= Y[0,0] 2))", BOX, "sat"),
    ("(assert (and (== Y[0,0] 2) (>= X[0,0] 0.5)))", BOX, "unsat"),           # class 2 needs x0 < 0
    ("(assert (!= Y[0,0] 0))", ((0.5, 1.0), (-1.0, 0.4)), "unsat"),            # x0 > x1 and x0 > -x0
    ("(assert (<= Y[0,0] 1))", ((-1.0, -0.5), (-1.0, -0.6)), "unsat"),         # -x0 beats both
    ("(assert (== Y[0,0] 3))", BOX, "unsat"),                                  # no class 3
    ("(assert (or (== Y[0,0] 1) (< Y[0,0] 0)))", ((0.5, 1.0), (-1.0, 0.4)), "unsat"),
])
def test_verdicts(tmp_path, body, box, verdict):
    model = tie_model()
    r = decide(tmp_path, model, query(body, box))
    assert r.verdict.value == verdict, (body, r.verdict, r.reason)
    if verdict == "sat":
        y = onnx_argmax(model, r.x)
        assert r.y[0] == y                        # the int64 output onnxruntime computes
        prop = vnnlib.parse_text(query(body, box))
        assert any(c.holds(np.array([float(y)])) for case in prop.cases for c in case.region)
        assert all(lo <= v <= hi for v, (lo, hi) in zip(r.x, box))


def test_ties_go_to_the_first_index(tmp_path):
    """At x0 = 0 the logits of classes 0 and 2 are equal: onnxruntime answers 0, and so must every
    confirmed answer; class 2 is never confirmed there."""
    model = tie_model()
    pinned = ((0.0, 0.0), (-1.0, -0.5))
    r = decide(tmp_path, model, query("(assert (== Y[0,0] 0))", pinned))
    assert r.verdict is Verdict.SAT and r.x[0] == 0.0 and r.y[0] == 0.0
    assert onnx_argmax(model, r.x) == 0
    r = decide(tmp_path, model, query("(assert (== Y[0,0] 2))", pinned), timeout=5.0)
    assert r.verdict is not Verdict.SAT


@pytest.mark.parametrize("keepdims, shape", [(0, "[1]"), (1, "[1,1]")])
def test_keepdims(tmp_path, keepdims, shape):
    model = tie_model(keepdims)
    index = "Y[0]" if keepdims == 0 else "Y[0,0]"
    r = decide(tmp_path, model, query(f"(assert (== {index} 1))", BOX, y_shape=shape))
    assert r.verdict is Verdict.SAT and onnx_argmax(model, r.x) == 1
    r = decide(tmp_path, model, query(f"(assert (== {index} 1))", ((0.5, 1.0), (-1.0, 0.4)), y_shape=shape))
    assert r.verdict is Verdict.UNSAT


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_network_against_a_grid(tmp_path, seed):
    """(== Y k) for every class k of a random 2-12-4 network on a small box: sat answers are
    onnxruntime's, and no class that a 41 x 41 grid reaches is ever called unsat."""
    model = mlp_model(seed)
    box = ((0.1, 0.4), (-0.3, 0.0))
    g = np.stack(np.meshgrid(np.linspace(*box[0], 41), np.linspace(*box[1], 41)), -1).reshape(-1, 2)
    reached = {onnx_argmax(model, x) for x in g}
    answers = {}
    for k in range(4):
        r = decide(tmp_path, model, query(f"(assert (== Y[0] {k}))", box, y_shape="[1]"), timeout=20.0)
        answers[k] = r.verdict
        if r.verdict is Verdict.SAT:
            assert onnx_argmax(model, r.x) == k == r.y[0]
        assert not (k in reached and r.verdict is Verdict.UNSAT), (k, reached)
    assert any(v is Verdict.UNSAT for v in answers.values()) or len(reached) == 4


def test_two_networks_compare_their_classes(tmp_path):
    """A class compared with another network's class (both ArgMax results): sat where a shifted
    copy disagrees, found and confirmed on both models."""
    a, b = tie_model(), tie_model()
    b.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(
        np.array([[1, 0, -1], [0, 1, 0.5]], dtype=np.float32), b.graph.initializer[0].name))
    onnx.save(a, tmp_path / "a.onnx")
    onnx.save(b, tmp_path / "b.onnx")
    (tmp_path / "q.vnnlib").write_text("""(vnnlib-version <2.0>)
(declare-network f (declare-input X float32 [1,2]) (declare-output Y int64 [1,1]))
(declare-network g (declare-input X2 float32 [1,2]) (declare-output Y2 int64 [1,1]))
(assert (and (>= X[0,0] -1.0) (<= X[0,0] 1.0) (>= X[0,1] -1.0) (<= X[0,1] 1.0)))
(assert (and (== X2[0,0] X[0,0]) (== X2[0,1] X[0,1])))
(assert (!= Y[0,0] Y2[0,0]))
""")
    r = verifier.verify({"f": str(tmp_path / "a.onnx"), "g": str(tmp_path / "b.onnx")}, str(tmp_path / "q.vnnlib"),
                        timeout=30)
    assert r.verdict is Verdict.SAT
    ya, yb = onnx_argmax(a, r.x[:2]), onnx_argmax(b, r.x[2:])
    assert ya != yb and list(r.y[:2]) == [ya, yb]


# --------------------------------------------------------------------------- 3. refusals


def _refused(r, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr, r.stderr


def _model_with(make) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(0), 13)
    shape, y = make(b)
    return b.finish("x", shape, y)


REFUSED = {
    "select_last_index": (lambda b: ([1, 2], b.op("ArgMax", [b.gemm("x", 2, 3)], axis=1, select_last_index=1)),
                          "[1,1]", "int64", "select_last_index=1"),
    "first_axis": (lambda b: ([2, 3], b.op("ArgMax", ["x"], axis=0)), "[1,3]", "int64", "only the last axis"),
    "inside_the_network": (lambda b: ([1, 2], b.op("Cast", [b.op("ArgMax", [b.gemm("x", 2, 3)], axis=1)],
                                                   to=TensorProto.FLOAT)), "[1,1]", "float32",
                           "ArgMax whose result is not a network output"),
    "declared_real": (lambda b: ([1, 2], b.op("ArgMax", [b.gemm("x", 2, 3)], axis=1)), "[1,1]", "real",
                      "declares it int64"),
    "integer_not_argmax": (lambda b: ([1, 2], b.op("Cast", [b.gemm("x", 2, 1)], to=TensorProto.INT64)), "[1,1]",
                           "int64", "only as the result of an ArgMax"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_refused_forms(run_main, tmp_path, kind):
    make, shape, y_type, needle = REFUSED[kind]
    model = _model_with(make)
    x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x_decl = f"[{','.join(map(str, x_shape))}]"
    n_in = int(np.prod(x_shape))
    bounds = " ".join(f"(>= X[{','.join(map(str, np.unravel_index(i, x_shape)))}] -1.0) "
                      f"(<= X[{','.join(map(str, np.unravel_index(i, x_shape)))}] 1.0)" for i in range(n_in))
    first = f"Y[{','.join('0' * len(shape.strip('[]').split(',')))}]"
    text = f"""(vnnlib-version <2.0>)
(declare-network f (declare-input X float32 {x_decl}) (declare-output Y {y_type} {shape}))
(assert (and {bounds}))
(assert (== {first} 1))
"""
    m, q = write(tmp_path, model, text)
    _refused(run_main("verify", q, "--network", f"f={m}", "-q"), needle)


def test_argmax_compared_with_an_input_is_refused(run_main, tmp_path):
    m, q = write(tmp_path, tie_model(), query("(assert (<= Y[0,0] X[0,0]))", BOX))
    _refused(run_main("verify", q, "--network", f"f={m}", "-q"), "compared with a term over other variables")


def test_argmax_in_arithmetic_with_another_output_is_refused(run_main, tmp_path):
    b = Builder(np.random.default_rng(0), 13)
    logits = b.gemm("x", 2, 3)
    y = b.op("ArgMax", [logits], axis=1)
    g = helper.make_graph(b.nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 3]),
                           helper.make_tensor_value_info(y, TensorProto.INT64, [1, 1])], initializer=b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    text = """(vnnlib-version <2.0>)
(declare-network f (declare-input X float32 [1,2]) (declare-output L float32 [1,3]) (declare-output Y int64 [1,1]))
(assert (and (>= X[0,0] -1.0) (<= X[0,0] 1.0) (>= X[0,1] -1.0) (<= X[0,1] 1.0)))
(assert (>= (+ L[0,1] Y[0,0]) 2.0))
"""
    m, q = write(tmp_path, model, text)
    _refused(run_main("verify", q, "--network", f"f={m}", "-q"), "compared with a term over other variables")


def test_supports_lists_argmax_and_int64():
    from verifier.capabilities import CAPABILITIES

    assert "ArgMax" in CAPABILITIES["--onnx-operators"]
    assert "int64" in CAPABILITIES["--onnx-element-types"]


def test_the_cli_prints_and_serialises_the_result_as_an_integer(run_main, tmp_path):
    """A sat assignment gives Y as the integer it is: a plain integer line, an int64 tensor."""
    m, q = write(tmp_path, tie_model(), query("(assert (== Y[0,0] 1))", BOX))
    r = run_main("verify", q, "--network", f"f={m}", "-q")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "sat", r.stderr
    lines = r.stdout.splitlines()
    assert lines[lines.index("Y int64 [1,1]") + 1] == "1"
    out = tmp_path / "assignment"
    r = run_main("verify", q, "--network", f"f={m}", "-q", "--serialise-assignments", out)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "sat", r.stderr
    t = onnx.TensorProto()
    t.ParseFromString((out / "Y.pb").read_bytes())
    assert t.data_type == onnx.TensorProto.INT64
    assert onnx.numpy_helper.to_array(t).reshape(-1).tolist() == [1]
