"""Never wrong, part 1: a counterexample counts only when it meets the query exactly as written.

Each test builds a tiny float32 network and a query whose answer is known by construction, in a
corner where a float or tolerance-based check used to be wrong: strict input bounds, an empty
region, linear input constraints with small coefficients, a point box that holds no float32,
decimal constants that binary floating point folds wrongly, and subnormal inputs read as 0 by a
flush-to-zero mode leaking into onnxruntime.  The oracles are rational (``fractions.Fraction``).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import vnnlib
import verifier
from verifier.config import BabConfig, VerifyConfig
from verifier.confirm import ReferenceModel, confirm_sat, ieee_numerics, snap_inside, subnormals_flushed
from verifier.verdict import Verdict

from conftest import run_cli

F32 = TensorProto.FLOAT


def _model(n_in: int, body) -> onnx.ModelProto:
    """A float32 model X (1, n_in) -> Y (1, n_out) built by body(nodes, inits) -> output name."""
    nodes, inits = [], []
    out = body(nodes, inits)
    x = helper.make_tensor_value_info("X", F32, [1, n_in])
    y = helper.make_tensor_value_info(out, F32, None)
    g = helper.make_graph(nodes, "net", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    from onnx import shape_inference

    return shape_inference.infer_shapes(m)


def first_input(n_in: int) -> onnx.ModelProto:
    """Y = X[:, :1] (as X @ e_0): the output is the first input, exactly."""
    def body(nodes, inits):
        W = np.zeros((n_in, 1), dtype=np.float32)
        W[0, 0] = 1
        inits.append(numpy_helper.from_array(W, "W"))
        nodes.append(helper.make_node("MatMul", ["X", "W"], ["Y"]))
        return "Y"
    return _model(n_in, body)


def relu_of_input() -> onnx.ModelProto:
    def body(nodes, inits):
        nodes.append(helper.make_node("Relu", ["X"], ["Y"]))
        return "Y"
    return _model(1, body)


def scaled(factor: float) -> onnx.ModelProto:
    def body(nodes, inits):
        inits.append(numpy_helper.from_array(np.array([factor], dtype=np.float32), "k"))
        nodes.append(helper.make_node("Mul", ["X", "k"], ["Y"]))
        return "Y"
    return _model(1, body)


def query(n_in: int, n_out: int, asserts: str) -> str:
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    decl += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    return decl + asserts


def run(tmp_path: Path, model: onnx.ModelProto, text: str, timeout: float = 10, bab: bool = False):
    onnx_path, spec = tmp_path / "m.onnx", tmp_path / "q.vnnlib"
    onnx.save(model, onnx_path)
    spec.write_text(text)
    cfg = VerifyConfig(timeout_s=timeout, bab=BabConfig(enabled=bab))
    return verifier.verify(onnx_path, spec, timeout=timeout, config=cfg)


def case_of(text: str):
    (case,) = vnnlib.parse_text(text).cases
    return case


# --------------------------------------------------------------------------- strict bounds
STRICT = query(1, 1, "(assert (>= X_0 0.0))\n(assert (< X_0 1.0))\n(assert (>= Y_0 1.0))")


def test_strict_input_bound_excludes_its_boundary_point():
    case = case_of(STRICT)
    ref = ReferenceModel(first_input(1).SerializeToString())
    assert confirm_sat(ref, case, np.array([1.0])) is None        # the excluded point
    assert not case.contains_input(np.array([1.0]))
    assert case.contains_input(np.array([np.nextafter(1.0, 0.0)]))
    lo, hi = case.float_box(np.float32)
    assert hi[0] == np.nextafter(np.float32(1), np.float32(0))    # the largest float32 below 1


def test_strict_bound_query_is_not_sat(tmp_path):
    """Y = X with 0 <= X < 1 never reaches Y >= 1; the boundary point used to be reported."""
    assert run(tmp_path, first_input(1), STRICT).verdict is not Verdict.SAT


def test_empty_region_is_unsat_with_a_warning_that_quiet_keeps(tmp_path):
    onnx.save(first_input(1), tmp_path / "m.onnx")
    spec = tmp_path / "q.vnnlib"
    spec.write_text(query(1, 1, "(assert (> X_0 0.5))\n(assert (< X_0 0.5))\n(assert (>= Y_0 0.0))"))
    p = run_cli("verify", spec, "--network", f"N={tmp_path / 'm.onnx'}", "-q")
    assert p.returncode == 0 and p.stdout.split() == ["unsat"]
    assert "empty" in p.stderr
    assert vnnlib.parse_file(spec).cases == ()


def test_empty_after_rounding_only_exactly_is_recognised():
    """Both decimals round to the same float64, but 0.30000000000000001 > 0.3 exactly."""
    p = vnnlib.parse_text(query(1, 1, "(assert (>= X_0 0.30000000000000001))\n(assert (<= X_0 0.3))"
                                      "\n(assert (>= Y_0 0.0))"))
    assert p.cases == ()


# --------------------------------------------------------------------------- linear input rows
SMALL_ROW = query(2, 1, "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n"
                        "(assert (<= X_1 1.0))\n(assert (<= (+ (* 1e-7 X_0) (* 1e-7 X_1)) 0.0))\n"
                        "(assert (>= Y_0 0.5))")


def test_linear_input_row_with_small_coefficients_is_checked_exactly():
    """1e-7 x0 + 1e-7 x1 <= 0 on [0, 1]^2 leaves only x0 = x1 = 0, where Y = x0 = 0 < 0.5: unsat.
    x = (0.5, 0.5) misses the row by 1e-7, inside the old 1e-6 tolerance."""
    case = case_of(SMALL_ROW)
    ref = ReferenceModel(first_input(2).SerializeToString())
    assert confirm_sat(ref, case, np.array([0.5, 0.5])) is None
    assert not case.contains_input(np.array([0.5, 0.5]))
    assert case.contains_input(np.array([0.0, 0.0]))


def test_linear_input_row_query_is_not_sat(tmp_path):
    assert run(tmp_path, first_input(2), SMALL_ROW).verdict is not Verdict.SAT


# --------------------------------------------------------------------------- no float in the box
POINT = query(1, 1, "(assert (>= X_0 0.3))\n(assert (<= X_0 0.3))\n(assert (<= Y_0 1.0))")


def test_a_point_box_between_float32_values_holds_no_counterexample(tmp_path):
    """X = 0.3 exactly: no float32 is 0.3, so there is no input to report (over the reals Y = 0.3
    <= 1 would violate; float32(0.3) is not 0.3)."""
    case = case_of(POINT)
    assert case.float_box(np.float32) is None
    assert case.float_box(np.float64) is None                     # 0.3 is no float64 either
    assert snap_inside(np.array([0.3]), case, np.float32) is None
    assert run(tmp_path, first_input(1), POINT).verdict is not Verdict.SAT


# --------------------------------------------------------------------------- exact constants
def test_decimal_constants_are_folded_exactly(tmp_path):
    """Y + 0.1 + 0.2 < 0.30000000000000004 is Y < 4e-17 exactly: Y = relu(X) = 0 violates it.
    Folded in binary floating point it read Y < 0, which relu never meets: a wrong unsat."""
    text = query(1, 1, "(assert (>= X_0 -1.0))\n(assert (<= X_0 1.0))\n"
                       "(assert (< (+ Y_0 0.1 0.2) 0.30000000000000004))")
    (conj,) = case_of(text).region
    assert conj.holds([0.0]) and not conj.holds([1e-16])
    r = run(tmp_path, relu_of_input(), text)
    assert r.verdict is Verdict.SAT
    assert r.y[0] == 0.0 and r.x[0] <= 0


def test_rows_with_inexact_coefficients_are_scaled_to_exact_ones():
    """(1/10) Y_0 - (1/3) Y_1 <= 0 has no float coefficients: the engine's row is the same
    comparison times 30, in integers; d stays exact."""
    text = query(1, 2, "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n"
                       "(assert (<= (* 0.1 Y_0) (* (/ 1 3) Y_1)))".replace("(/ 1 3)", "0.3333333333333333"))
    (conj,) = case_of(text).region
    (coefs,) = conj.C
    ratio = Fraction(coefs[0]) / Fraction(coefs[1])
    assert ratio == Fraction(1, 10) / -Fraction("0.3333333333333333")
    assert all(Fraction(c).denominator == 1 for c in coefs)


# --------------------------------------------------------------------------- subnormals
SUBNORMAL = query(1, 1, "(assert (>= X_0 1e-42))\n(assert (<= X_0 1e-41))\n(assert (<= Y_0 0.0))")


def test_flush_to_zero_does_not_reach_the_confirmation():
    """Y = 1e30 X with X in [1e-42, 1e-41] (float32 subnormals) is at least 1e-12 > 0.  With
    FTZ/DAZ on (as while bounding), onnxruntime read X as 0 and Y = 0 'violated'."""
    case = case_of(SUBNORMAL)
    ref = ReferenceModel(scaled(1e30).SerializeToString())
    lo = case.float_box(np.float32)[0]
    assert lo[0] > 0
    torch.set_flush_denormal(True)
    try:
        assert subnormals_flushed()
        assert confirm_sat(ref, case, lo.astype(np.float64)) is None
        assert subnormals_flushed()                # the engine's mode is put back
        with ieee_numerics():
            assert ref.run(lo)[0] > 0
    finally:
        torch.set_flush_denormal(False)
    assert not subnormals_flushed()


def test_subnormal_query_is_not_sat(tmp_path):
    assert run(tmp_path, scaled(1e30), SUBNORMAL).verdict is not Verdict.SAT


# --------------------------------------------------------------------------- the float box, in general
decimals = st.builds(lambda m, e: f"{m}e{e}", st.integers(-10**12, 10**12), st.integers(-50, 10))


@settings(max_examples=300, deadline=None, database=None)
@given(decimals, decimals, st.booleans(), st.booleans(), st.sampled_from([np.float32, np.float64]))
def test_float_box_holds_exactly_the_admissible_floats(a, b, strict_lo, strict_hi, ftype):
    lo_op, hi_op = (">" if strict_lo else ">="), ("<" if strict_hi else "<=")
    text = query(1, 1, f"(assert ({lo_op} X_0 {a}))\n(assert ({hi_op} X_0 {b}))\n(assert (>= Y_0 0))")
    p = vnnlib.parse_text(text)
    A, B = Fraction(a), Fraction(b)
    ok = lambda v: (v > A if strict_lo else v >= A) and (v < B if strict_hi else v <= B)
    if not p.cases:
        assert A > B or (A == B and (strict_lo or strict_hi))
        return
    (case,) = p.cases
    assert Fraction(float(case.lo[0])) <= A and Fraction(float(case.hi[0])) >= B   # outward
    box = case.float_box(ftype)
    if box is None:       # then no value of the type lies between the bounds
        v = ftype(float(A))
        for w in (np.nextafter(v, ftype(-np.inf)), v, np.nextafter(v, ftype(np.inf))):
            assert not ok(Fraction(float(w)))
        return
    lo, hi = box[0][0], box[1][0]
    assert ok(Fraction(float(lo))) and ok(Fraction(float(hi)))
    assert not ok(Fraction(float(np.nextafter(lo, ftype(-np.inf)))))
    assert not ok(Fraction(float(np.nextafter(hi, ftype(np.inf)))))


@pytest.mark.parametrize("tok", ["0.1", "0.5", "1e-320", "123456789.123456789", "-7", "2.5e-3",
                                 "9007199254740993", "4.9406564584124654e-324"])
def test_decimal_exactness_matches_fractions(tok):
    from vnnlib.exact import decimal_is_float

    assert decimal_is_float(tok) == (Fraction(tok) == Fraction(float(tok)))


def test_float32_cases_keep_rows_exact_and_constants_below():
    """On the float32 (GPU) path a row constant is rounded down again and a row whose integer
    coefficients do not fit float32's 24 bits leaves its conjunct, rather than be rounded."""
    from verifier.spec import build_cases

    text = query(1, 2, "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n"
                       "(assert (or (<= Y_0 0.1) (<= (* 16777217 Y_0) Y_1)))")
    prop = vnnlib.parse_text(text)
    cs = build_cases(prop, (1,), 2, torch.float32, torch.device("cpu"))
    d = cs.d[0, 0].item()
    assert Fraction(d) <= Fraction(-1, 10) and cs.d.dtype == torch.float32
    assert cs.conj[0, 0] == 0 and not (cs.conj[0] == 1).any()       # 16777217 = 2^24 + 1
    cs64 = build_cases(prop, (1,), 2, torch.float64, torch.device("cpu"))
    assert (cs64.conj[0] == 1).any()


# --------------------------------------------------------------------------- linear rows, used
def test_linear_input_rows_cut_the_box_exactly():
    """1e-7 x0 + 1e-7 x1 <= 0 on [0, 1]^2 leaves the point (0, 0): the engine's box is cut to it
    (exact interval propagation, rounded outwards), so the bounds can prove what the row implies."""
    case = case_of(SMALL_ROW)
    assert list(case.lo) == [0.0, 0.0] and list(case.hi) == [0.0, 0.0]


def test_contradictory_linear_rows_make_an_empty_region():
    text = query(2, 1, "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n"
                       "(assert (<= X_1 1.0))\n(assert (>= (+ X_0 X_1) 2.5))\n(assert (>= Y_0 0.5))")
    assert vnnlib.parse_text(text).cases == ()


def test_candidates_are_moved_onto_linear_rows_then_checked_exactly():
    """x0 - x1 >= 0.1 (strictly inside after snapping): a candidate on the wrong side is
    projected, and the result meets the row exactly."""
    text = query(2, 1, "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n"
                       "(assert (<= X_1 1.0))\n(assert (> (- X_0 X_1) 0.1))\n(assert (<= Y_0 2.0))")
    case = case_of(text)
    ref = ReferenceModel(first_input(2).SerializeToString())
    hit = confirm_sat(ref, case, np.array([0.3, 0.6]))
    assert hit is not None
    x0, x1 = (Fraction(float(v)) for v in hit.x)
    assert x0 - x1 > Fraction(1, 10)


@pytest.mark.parametrize("ftype", [np.float32, np.float64])
def test_float_toward_is_the_first_float_beyond_exactly(ftype):
    from vnnlib.exact import float_toward

    big = Fraction(float(np.finfo(ftype).max))
    assert float_toward(big * 2, -1, ftype) == np.finfo(ftype).max     # the largest float below
    assert float_toward(big * 2, +1, ftype) == np.inf                   # none above
    assert float_toward(-big * 2, +1, ftype) == -np.finfo(ftype).max
    third = Fraction(1, 3)
    up, down = float_toward(third, +1, ftype), float_toward(third, -1, ftype)
    assert Fraction(float(down)) < third < Fraction(float(up))
    assert np.nextafter(down, ftype(np.inf)) == up
    half = Fraction(1, 2)
    assert float_toward(half, +1, ftype) == 0.5
    assert float_toward(half, +1, ftype, strict=True) == np.nextafter(ftype(0.5), ftype(1))
