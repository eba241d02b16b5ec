"""Comparisons and casts to integer types inside the graph (verifier/ops/compare.py).

1. Concrete evaluation equals onnxruntime exactly where the comparison reads the input itself
   (float64 models, thresholds hit exactly, negative values truncated toward zero), and to the
   usual tolerance behind float32 layers; every converter in the opsets where its form exists.
2. Each rule on random boxes (seeded): sampled points, the ends and the thresholds lie inside
   the interval and between the planes; decided boxes give exact values.
3. Network bounds (IBP, CROWN, alpha-CROWN) contain sampled points; verify() end to end both ways.
4. Refused forms: integer arithmetic the IR would compute as real arithmetic, a float16 cast,
   a comparison whose constant widens the variable; exit 2 and one line from the command line.
"""
from __future__ import annotations

import subprocess

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

import verifier
from helpers_nets import (Builder, assert_matches, case_registry, ir_forward, one_torch_thread,  # noqa: F401
                          run_float64, run_onnxruntime)
from verifier.ir import Node
from verifier.onnx_import import ModelError, to_graph
from verifier.ops import RULES
from verifier.simplify import simplify
from verifier.verdict import Verdict

DT = torch.float64
COMPARISONS = ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")
CASES, case = case_registry((13, 17, 21))   # LessOrEqual, GreaterOrEqual: opset 12 on


# --------------------------------------------------------------------------- 1. converters
def _f(b, t):
    return b.op("Cast", [t], to=TensorProto.FLOAT)


@case("compare_const_gate")
def _(b):  # x * (h < 0.1) + (h > -0.2) + (h == 0) + (0.3 <= h) + (h >= 0.5): a gate and plain steps
    h = b.gemm("x", 3, 4)
    gate = b.op("Mul", [h, _f(b, b.op("Less", [h, b.const(np.float32(0.1))]))])
    steps = [_f(b, b.op(op, [h, b.const(np.float32(c))])) for op, c in
             (("Greater", -0.2), ("Equal", 0.0))]
    steps.append(_f(b, b.op("LessOrEqual", [b.const(np.float32(0.3)), h])))   # constant first
    steps.append(_f(b, b.op("GreaterOrEqual", [h, b.const(np.array([0.5, -0.5, 0.0, 1.0], dtype=np.float32))])))
    return [1, 3], b.op("Concat", [gate] + steps, axis=1)


@case("compare_two_variables")
def _(b):
    h, g = b.gemm("x", 3, 4), b.gemm("x", 3, 4)
    return [1, 3], b.op("Concat", [_f(b, b.op(op, [h, g])) for op in COMPARISONS], axis=1)


@case("cast_to_integers")
def _(b):  # trunc through int32 / int8 / int64, bool and back; an integer tensor copied and compared
    h = b.gemm("x", 3, 4, scale=3.0)
    i32 = _f(b, b.op("Cast", [h], to=TensorProto.INT32))
    i8 = _f(b, b.op("Cast", [h], to=TensorProto.INT8))
    i64 = b.op("Cast", [h], to=TensorProto.INT64)
    moved = b.op("Reshape", [i64, b.ints([1, 2, 2])])
    eq = _f(b, b.op("Reshape", [b.op("Equal", [moved, b.const(np.int64(1), np.int64)]), b.ints([1, 4])]))
    boolean = _f(b, b.op("Cast", [h], to=TensorProto.BOOL))
    return [1, 3], b.op("Concat", [i32, i8, eq, boolean], axis=1)


def build(name: str, opset: int):
    b = Builder(np.random.default_rng(0), opset)
    shape, y = CASES[name][0](b)
    return b.finish("x", shape, y), shape


PARAMS = [pytest.param(name, opset, id=f"{name}-op{opset}") for name, (_, ops) in CASES.items() for opset in ops]


@pytest.mark.parametrize("name,opset", PARAMS)
def test_converter_matches_onnxruntime(name, opset):
    model, shape = build(name, opset)
    xs = np.random.default_rng(opset).standard_normal((6,) + tuple(shape)) * 1.5
    graph = to_graph(model)
    assert_matches(model, graph, xs)
    assert_matches(model, simplify(graph), xs, rtol=1e-9, oracle=run_float64)


def _on_input(op: str, to=None, c=0.5):
    """A float64 model applying op straight to its input (so both sides compare the same values)."""
    b = Builder(np.random.default_rng(0), 13)
    if op == "Cast":
        y = b.op("Cast", ["x"], to=to)
    else:
        y = b.op(op, ["x", b.const(np.float64(c), np.float64)])
    y = b.op("Cast", [y], to=TensorProto.DOUBLE)
    return b.finish("x", [1, 8], y, x_type=TensorProto.DOUBLE)


EDGES = np.array([0.5, np.nextafter(0.5, 1), np.nextafter(0.5, 0), -0.5, 0.0, -0.0, 2.75, -2.75, 1e-300, -1e-300,
                  126.9, -127.5, 1.0, -1.0, 7.999999, -7.999999])


@pytest.mark.parametrize("op,to", [(op, None) for op in COMPARISONS] + [
    ("Cast", TensorProto.INT32), ("Cast", TensorProto.INT64), ("Cast", TensorProto.INT8), ("Cast", TensorProto.INT16),
    ("Cast", TensorProto.UINT8), ("Cast", TensorProto.BOOL)])
def test_evaluation_is_exactly_onnxruntimes(op, to):
    import onnxruntime as ort

    model = _on_input(op, to)
    graph = to_graph(model)
    xs = np.concatenate([EDGES, np.random.default_rng(0).uniform(-100, 100, 16)]).reshape(4, 1, 8)
    if to == TensorProto.UINT8:
        xs = np.abs(xs)       # a negative value's cast to an unsigned type is not defined
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = ir_forward(graph, list(xs))
    want = np.stack([s.run(None, {"x": x})[0].reshape(-1) for x in xs])
    assert np.array_equal(got, want), (got, want)


# --------------------------------------------------------------------------- 2. rules on samples
RULE_CASES = {
    **{op: Node("s", op, ("x",), {"c": torch.tensor([0.5, -1.0, 0.0, 2.0, 0.25], dtype=DT)}, (5,))
       for op in COMPARISONS},
    "CastInt_int32": Node("s", "CastInt", ("x",), {"lo": -2.0 ** 31, "hi": 2.0 ** 31 - 1}, (5,)),
    "CastInt_int8": Node("s", "CastInt", ("x",), {"lo": -128.0, "hi": 127.0}, (5,)),
    "CastInt_uint8": Node("s", "CastInt", ("x",), {"lo": 0.0, "hi": 255.0}, (5,)),
    "CastBool": Node("s", "CastBool", ("x",), {}, (5,)),
}


def _boxes(rng: np.random.Generator, n: int = 5):
    """Points, boxes on a threshold, narrow and wide boxes, boxes past the int8 range."""
    spread = rng.choice([0.0, 1e-3, 1.0, 50.0])
    centre = rng.choice([0.0, 0.5, -1.0, 2.0, 0.25, 3.0, -3.0, 200.0]) + rng.normal(0, spread, n)
    width = rng.choice([0.0, 1e-6, 0.3, 2.0, 400.0]) * rng.uniform(0, 1, n)
    return torch.tensor(centre, dtype=DT), torch.tensor(centre + width, dtype=DT)


def _samples(lo, hi, rng, k: int = 200):
    u = torch.tensor(rng.uniform(0, 1, (k,) + tuple(lo.shape)), dtype=DT)
    pts = [lo + (hi - lo) * u, lo.unsqueeze(0), hi.unsqueeze(0)]
    for c in (0.5, -1.0, 0.0, 2.0, 0.25, 1.0, -128.0, 127.0):    # the thresholds and integers, where inside
        t = torch.full_like(lo, c)
        pts.append(torch.where((t >= lo) & (t <= hi), t, lo).unsqueeze(0))
    return torch.cat(pts)


@pytest.mark.parametrize("label", sorted(RULE_CASES))
@pytest.mark.parametrize("seed", range(40))
def test_rules_contain_samples(label, seed):
    node = RULE_CASES[label]
    rule = RULES[node.op]
    rng = np.random.default_rng(seed)
    lo, hi = _boxes(rng)
    x = _samples(lo, hi, rng)
    f = rule.evaluate(node, x)
    ilo, ihi = rule.interval(node, lo.unsqueeze(0), hi.unsqueeze(0))
    assert bool(((ilo <= f) & (f <= ihi)).all()), label
    lw, lb, uw, ub = rule.relax(node, lo.unsqueeze(0), hi.unsqueeze(0))
    for t in (lw, lb, uw, ub):
        assert bool(torch.isfinite(t).all() | (t.abs() == torch.inf).all())
    assert bool((lw * x + lb <= f + 1e-12).all()) and bool((f <= uw * x + ub + 1e-12).all()), label
    assert rule.model_error(node, torch.float32) == 0.0


def test_decided_comparisons_are_exact():
    node = RULE_CASES["Less"]
    lo = torch.tensor([[0.0, -0.5, 0.0, 2.0, -3.0]], dtype=DT)
    hi = torch.tensor([[0.49, 0.0, 0.0, 3.0, 0.25]], dtype=DT)
    ilo, ihi = RULES["Less"].interval(node, lo, hi)
    assert ilo.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]] and ihi.tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0]]
    ilo, ihi = RULES["CastInt"].interval(RULE_CASES["CastInt_int8"], torch.tensor([[-2.5, 0.3, 126.9, 127.0, 128.0]],
                                                                                   dtype=DT),
                                         torch.tensor([[-1.5, 0.9, 127.5, 127.9, 129.0]], dtype=DT))
    assert ilo.tolist() == [[-2.0, 0.0, 126.0, 127.0, -128.0]] and ihi.tolist() == [[-1.0, 0.0, 127.0, 127.0, 127.0]]


def test_argmax_rule_contains_samples():
    node = Node("y", "ArgMax", tuple(f"x{k}" for k in range(4)), {}, (3,))
    rule = RULES["ArgMax"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        ends = [torch.tensor(np.sort(rng.integers(-3, 4, (2, 1, 3)), 0), dtype=DT) for _ in range(4)]
        boxes = [(e[0], e[1]) for e in ends]
        xs = [lo + (hi - lo) * torch.tensor(rng.integers(0, 3, (64, 3)) / 2.0, dtype=DT) for lo, hi in boxes]
        f = rule.evaluate(node, *xs)
        want = torch.tensor(np.argmax(np.stack([x.numpy() for x in xs], -1), -1), dtype=DT)   # first index
        assert torch.equal(f, want)
        ilo, ihi = rule.interval(node, *boxes[0], *boxes[1:])
        assert bool(((ilo <= f) & (f <= ihi)).all())
        ilo, ihi = rule.interval(node, *boxes[0], *([None] * 3))
        assert bool((ilo == 0).all() & (ihi == 3).all())


# --------------------------------------------------------------------------- 3. networks, verify
def test_network_bounds_contain_points():
    from test_bounds_soundness import box_points, check_network, random_boxes

    for name in ("compare_two_variables", "cast_to_integers"):   # (the gate multiplies two variables)
        graph = to_graph(build(name, 13)[0])
        for eps in (0.01, 0.5):
            lo, hi = random_boxes(graph, 3, eps, 7)
            C = torch.randn((3, 2, graph.output_size), generator=torch.Generator().manual_seed(1), dtype=DT)
            check_network(graph, lo, hi, C, box_points(lo, hi, 64, 8, 0))


def _model(tmp_path, kind: str):
    b = Builder(np.random.default_rng(0), 13)
    if kind == "gate":        # y = x * (x < 0.5): 0 <= y < 0.5 on [0, 1]
        y = b.op("Mul", ["x", _f(b, b.op("Less", ["x", b.const(np.float32(0.5))]))])
    elif kind == "trunc":     # y = trunc(3 x) in {0, 1, 2, 3} on [0, 1]
        y = _f(b, b.op("Cast", [b.op("Mul", ["x", b.const(np.float32(3.0))])], to=TensorProto.INT32))
    else:                     # y = (trunc(4 x) == 2): 1 on [0.5, 0.75)
        i = b.op("Cast", [b.op("Mul", ["x", b.const(np.float32(4.0))])], to=TensorProto.INT64)
        y = _f(b, b.op("Equal", [i, b.const(np.int64(2), np.int64)]))
    path = tmp_path / f"{kind}.onnx"
    onnx.save(b.finish("x", [1, 1], y), path)
    return path


def _query(tmp_path, *rows: str) -> str:
    path = tmp_path / "q.vnnlib"
    path.write_text("(vnnlib-version <2.0>)\n(declare-network f (declare-input X float32 [1,1]) "
                    "(declare-output Y float32 [1,1]))\n(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0)))\n"
                    + "".join(f"(assert {r})\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("kind,rows,verdict", [
    ("gate", ["(>= Y[0,0] 0.6)"], "unsat"),
    ("gate", ["(>= Y[0,0] 0.45)"], "sat"),
    ("trunc", ["(>= Y[0,0] 3.5)"], "unsat"),
    ("trunc", ["(>= Y[0,0] 0.5)", "(<= Y[0,0] 0.9)", "(>= X[0,0] 0.4)", "(<= X[0,0] 0.6)"], "unsat"),  # exactly 1
    ("trunc", ["(>= Y[0,0] 2.5)"], "sat"),                          # x = 1 gives 3
    ("equal", ["(>= Y[0,0] 0.5)", "(<= X[0,0] 0.45)"], "unsat"),
    ("equal", ["(>= Y[0,0] 0.5)"], "sat"),
])
def test_verify_end_to_end(tmp_path, kind, rows, verdict):
    path = _model(tmp_path, kind)
    r = verifier.verify({"f": str(path)}, _query(tmp_path, *rows), timeout=30)
    assert r.verdict.value == verdict, (r.verdict, r.reason)
    if r.verdict is Verdict.SAT:
        y = float(np.asarray(run_onnxruntime(onnx.load(path), np.asarray(r.x).reshape(1, 1))).reshape(-1)[0])
        assert y == r.y[0] and 0.0 <= r.x[0] <= 1.0


# --------------------------------------------------------------------------- 4. refusals
def _refused_model(kind: str):
    b = Builder(np.random.default_rng(0), 13)
    h = b.gemm("x", 2, 3)
    if kind == "integer_division":
        i = b.op("Cast", [h], to=TensorProto.INT64)
        y = _f(b, b.op("Div", [i, b.const(np.int64(2), np.int64)]))
    elif kind == "float16":
        y = b.op("Cast", [b.op("Cast", [h], to=TensorProto.FLOAT16)], to=TensorProto.FLOAT)
    else:   # widening: a [1, 1] variable against a [1, 3] constant
        y = _f(b, b.op("Less", [b.gemm("x", 2, 1), b.const(np.array([[0.0, 1.0, 2.0]], dtype=np.float32))]))
    return b.finish("x", [1, 2], y)


REFUSED = {"integer_division": "Div of the integer tensor", "float16": "Cast to FLOAT16",
           "widening": "widens the variable"}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_refused_forms_name_the_node(kind):
    with pytest.raises(ModelError) as e:
        to_graph(_refused_model(kind))
    assert REFUSED[kind] in str(e.value) and "node" in str(e.value), str(e.value)


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_cli_refuses_with_exit_2(tmp_path, capsys, kind):
    from verifier.cli import main

    model = _refused_model(kind)
    onnx.save(model, tmp_path / "m.onnx")
    n_out = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    (tmp_path / "q.vnnlib").write_text(
        "(vnnlib-version <2.0>)\n(declare-network f (declare-input X float32 [1,2]) "
        f"(declare-output Y float32 [1,{n_out}]))\n"
        "(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0) (>= X[0,1] 0.0) (<= X[0,1] 1.0)))\n(assert (>= Y[0,0] 5.0))\n")
    capsys.readouterr()
    rc = main(["verify", str(tmp_path / "q.vnnlib"), "--network", f"f={tmp_path / 'm.onnx'}", "-q"])
    out, err = capsys.readouterr()
    r = subprocess.CompletedProcess([], rc, out, err)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r
    assert REFUSED[kind] in r.stderr
