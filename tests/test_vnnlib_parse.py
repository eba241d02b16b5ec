"""Unit tests of the VNN-LIB parser on small inline queries (both versions)."""
from __future__ import annotations

import gzip
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import vnnlib
from vnnlib import VnnlibError, parse_file, parse_text, sniff_version

DATA = Path(__file__).resolve().parent / "data" / "vnnlib"


def v1(n_in: int, n_out: int, body: str) -> str:
    decls = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    decls += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    return "\n".join(decls) + "\n" + body


def box1(lo: list[float], hi: list[float]) -> str:
    return "\n".join(f"(assert (>= X_{i} {a}))\n(assert (<= X_{i} {b}))"
                     for i, (a, b) in enumerate(zip(lo, hi)))


def rows(conjunct) -> list[tuple]:
    """Rows of a conjunct as sortable tuples (C row, d, strict)."""
    return sorted((tuple(c), float(d), bool(s))
                  for c, d, s in zip(conjunct.C, conjunct.d, conjunct.strict))


# ---- VNN-LIB 1.0 --------------------------------------------------------------------------------
def test_v1_box_and_single_row():
    p = parse_text(v1(2, 3, box1([0, -1], [1, 1]) + "\n(assert (<= Y_0 Y_2))"))
    assert p.version == "1.0" and p.network is None
    assert p.inputs == (vnnlib.Variable("X", "Real", (2,)),)
    assert p.outputs == (vnnlib.Variable("Y", "Real", (3,)),)
    assert (p.n_in, p.n_out) == (2, 3)
    (case,) = p.cases
    np.testing.assert_array_equal(case.lo, [0, -1])
    np.testing.assert_array_equal(case.hi, [1, 1])
    assert case.A_in is None and case.b_in is None
    (c,) = case.region
    assert rows(c) == [((1.0, 0.0, -1.0), 0.0, False)]


def test_v1_strict_and_nonstrict_rows():
    p = parse_text(v1(1, 2, box1([0], [1]) + """
        (assert (< Y_0 3))
        (assert (> Y_1 -2.5))
        (assert (>= 4 Y_1))"""))
    (c,) = p.cases[0].region
    assert rows(c) == sorted([((1.0, 0.0), -3.0, True), ((0.0, -1.0), -2.5, True),
                              ((0.0, 1.0), -4.0, False)])


def test_v1_linear_terms_and_number_forms():
    p = parse_text(v1(2, 2, box1([0, 0], [1, 1]) + """
        (assert (<= (+ (* 2 Y_0) (* Y_1 -3) 1e-3 (- Y_0) .5) (- 1.5 Y_1 Y_1)))"""))
    (c,) = p.cases[0].region
    # 2y0 - 3y1 + 1e-3 - y0 + .5 - (1.5 - 2 y1) = y0 - y1 + (1e-3 + .5 - 1.5)
    ((C, d, s),) = rows(c)
    assert C == (1.0, -1.0) and not s
    assert d == pytest.approx(1e-3 + 0.5 - 1.5)


def test_v1_input_linear_constraint_goes_to_A_in():
    p = parse_text(v1(3, 1, box1([0, -50, 0], [50, 50, 150]) + """
        (assert (<= (- (* 1.5 X_1) X_2) -5.0))
        (assert (>= Y_0 1))"""))
    (case,) = p.cases
    np.testing.assert_array_equal(case.A_in, [[0.0, 1.5, -1.0]])
    np.testing.assert_array_equal(case.b_in, [-5.0])


def test_v1_scaled_bounds_exact_or_kept_as_rows():
    p = parse_text(v1(2, 1, """
        (assert (<= (* -1.0 X_0) 0.0)) (assert (<= (* 2 X_0) 3))
        (assert (>= (* 3 X_1) 1)) (assert (<= X_1 1))
        (assert (>= Y_0 0))"""))
    (case,) = p.cases
    assert case.lo[0] == 0.0 and case.hi[0] == 1.5 and not np.signbit(case.lo[0])
    # 3 x1 >= 1: 1/3 is not a float64; the box bound is the float just below it, the row is kept
    assert Fraction(case.lo[1]) < Fraction(1, 3) < Fraction(np.nextafter(case.lo[1], np.inf))
    np.testing.assert_array_equal(case.A_in, [[0.0, -3.0]])
    np.testing.assert_array_equal(case.b_in, [-1.0])


def test_v1_equality_is_two_rows_and_point_box():
    p = parse_text(v1(1, 2, "(assert (= X_0 0.25)) (assert (= Y_0 Y_1))"))
    (case,) = p.cases
    assert case.lo[0] == case.hi[0] == 0.25
    (c,) = case.region
    assert rows(c) == sorted([((1.0, -1.0), 0.0, False), ((-1.0, 1.0), 0.0, False)])


def test_v1_or_of_ands_acasxu_style():
    p = parse_text(v1(2, 3, box1([0, 0], [1, 1]) + """
        (assert (or
            (and (<= Y_0 Y_1) (<= Y_0 Y_2))
            (and (<= Y_1 Y_0))
            (<= Y_2 0)))"""))
    (case,) = p.cases
    assert [len(c.d) for c in case.region] == [2, 1, 1]
    assert rows(case.region[2]) == [((0.0, 0.0, 1.0), 0.0, False)]


def test_v1_nested_or_and_distribute():
    # (a or b) and (c or d) -> 4 terms, in order ac, ad, bc, bd
    p = parse_text(v1(1, 2, box1([0], [1]) + """
        (assert (or (<= Y_0 1) (<= Y_0 2)))
        (assert (or (<= Y_1 3) (and (<= Y_1 4) (or (<= Y_0 5) (<= Y_0 6)))))"""))
    (case,) = p.cases
    got = [sorted(-float(d) for d in c.d) for c in case.region]
    assert got == [[1, 3], [1, 4, 5], [1, 4, 6], [2, 3], [2, 4, 5], [2, 4, 6]]


def test_v1_common_output_rows_join_every_conjunct():
    p = parse_text(v1(1, 2, box1([0], [1]) + """
        (assert (<= Y_0 7))
        (assert (or (<= Y_1 1) (<= Y_1 2)))"""))
    (case,) = p.cases
    assert [sorted(-float(d) for d in c.d) for c in case.region] == [[1, 7], [2, 7]]


def test_v1_cases_grouped_nn4sys_style_and_order_preserved():
    p = parse_text(v1(1, 1, """
        (assert (or
          (and (>= X_0 0.1) (<= X_0 0.2) (<= Y_0 0.5))
          (and (>= X_0 0.3) (<= X_0 0.4) (<= Y_0 0.7))
          (and (<= X_0 0.2) (>= X_0 0.1) (>= Y_0 0.6))
          (and (>= X_0 0.3) (<= X_0 0.4) (>= Y_0 0.9))))"""))
    assert len(p.cases) == 2
    a, b = p.cases
    # decimals that are not floats: box bounds rounded outwards, row constants rounded down
    down, up = (lambda v: np.nextafter(v, -np.inf)), (lambda v: np.nextafter(v, np.inf))
    assert (a.lo[0], a.hi[0], b.lo[0], b.hi[0]) == (down(0.1), up(0.2), down(0.3), up(0.4))
    assert [rows(c) for c in a.region] == [[((1.0,), -0.5, False)], [((-1.0,), down(0.6), False)]]
    assert [rows(c) for c in b.region] == [[((1.0,), down(-0.7), False)], [((-1.0,), down(0.9), False)]]


def test_v1_term_without_output_part_is_everything():
    p = parse_text(v1(1, 2, """
        (assert (or (and (>= X_0 0) (<= X_0 1))
                    (and (>= X_0 2) (<= X_0 3) (<= Y_0 0))))"""))
    a, b = p.cases
    (everything,) = a.region
    assert everything.C.shape == (0, 2) and everything.d.shape == (0,)
    assert everything.holds(np.array([1e9, -1e9]))
    assert b.region[0].C.shape == (1, 2)


def test_v1_empty_cases_dropped():
    p = parse_text(v1(1, 1, """
        (assert (or (and (>= X_0 1) (<= X_0 0) (<= Y_0 0))
                    (and (>= X_0 0) (<= X_0 1) (<= Y_0 1))))"""))
    (case,) = p.cases
    assert case.hi[0] == 1 and rows(case.region[0]) == [((1.0,), -1.0, False)]
    p = parse_text(v1(1, 1, "(assert (>= X_0 1)) (assert (<= X_0 0)) (assert (<= Y_0 0))"))
    assert p.cases == ()


def test_v1_empty_box_needs_no_other_bounds():
    p = parse_text(v1(2, 1, "(assert (>= X_0 1)) (assert (<= X_0 0)) (assert (<= Y_0 0))"))
    assert p.cases == ()


def test_v1_constant_comparisons_fold():
    assert parse_text(v1(1, 1, box1([0], [1]) + "(assert (<= 2 1))")).cases == ()
    p = parse_text(v1(1, 1, box1([0], [1]) + "(assert (or (<= 1 2) (<= Y_0 0)))"))
    (case,) = p.cases
    assert [c.C.shape[0] for c in case.region] == [0]
    p = parse_text(v1(1, 1, box1([0], [1]) + "(assert (<= (- Y_0 Y_0) 0))"))
    assert [c.C.shape[0] for c in p.cases[0].region] == [0]


def test_v1_strict_input_bound_is_relaxed_to_closed():
    p = parse_text(v1(1, 1, "(assert (> X_0 0)) (assert (< X_0 1)) (assert (<= Y_0 0))"))
    assert (p.cases[0].lo[0], p.cases[0].hi[0]) == (0.0, 1.0)


def test_v1_declare_fun_comments_and_skipped_commands():
    p = parse_text("""; header
        (set-logic QF_LRA)
        (declare-fun X_0 () Real) ; trailing comment with ( parens
        (declare-const Y_0 real)
        (assert (and (>= X_0 -1) (<= X_0 1) (>= Y_0 0.5)))
        (check-sat)
        (exit)""")
    (case,) = p.cases
    assert (case.lo[0], case.hi[0]) == (-1.0, 1.0)


def test_v1_deep_nesting_has_no_recursion_limit():
    depth = 20_000
    f = "(<= Y_0 0)"
    for _ in range(depth):
        f = f"(and {f})"
    term = "Y_0"
    for _ in range(depth):
        term = f"(+ {term} 0)"
    p = parse_text(v1(1, 1, box1([0], [1]) + f"(assert {f}) (assert (<= {term} 1))"))
    assert rows(p.cases[0].region[0]) == [((1.0,), -1.0, False), ((1.0,), 0.0, False)]


def test_v1_many_bounds_plus_one_or_stays_linear():
    n = 3000
    body = box1([0] * n, [1] * n) + "(assert (or " + " ".join(
        f"(<= Y_0 {k})" for k in range(2000)) + "))"
    p = parse_text(v1(n, 1, body))
    (case,) = p.cases
    assert len(case.region) == 2000 and case.lo.shape == (n,)


def test_dnf_blow_up_is_refused_before_it_is_built():
    big_or = "(assert (or " + " ".join(f"(<= Y_0 {k})" for k in range(2000)) + "))\n"
    with pytest.raises(VnnlibError, match="disjunctive normal form too large") as e:
        parse_text(v1(1, 1, box1([0], [1]) + "\n" + big_or + big_or))
    assert (e.value.line, e.value.column) == (6, 1)     # the second or


def test_non_ascii_digits_are_not_numbers():
    with pytest.raises(VnnlibError, match="malformed number"):
        parse_text(v1(1, 1, box1([0], [1]) + "(assert (<= Y_0 1\u0663))"))


@pytest.mark.parametrize("spelling", ["(<= Y_0 Y_1)", "( <= Y_0 Y_1 )", "(<=\n  Y_0\n  Y_1)",
                                      "(<= Y_0 ; comment\n Y_1)", "(<= (+ Y_0) Y_1)"])
def test_comparison_spellings_agree(spelling):
    """One-line comparisons are single tokens (fast path); other spellings take the general
    path.  Both must give the same rows."""
    p = parse_text(v1(1, 2, box1([0], [1]) + f"(assert (or {spelling} (>= Y_0 2.5)))"))
    a, b = p.cases[0].region
    assert rows(a) == [((1.0, -1.0), 0.0, False)]
    assert rows(b) == [((-1.0, 0.0), 2.5, False)]


def test_arrays_are_float64_and_read_only():
    p = parse_text(v1(1, 1, box1([0], [1]) + "(assert (<= Y_0 0))"))
    case = p.cases[0]
    c = case.region[0]
    for arr in (case.lo, case.hi, c.C, c.d):
        assert arr.dtype == np.float64
        with pytest.raises(ValueError):
            arr[...] = 0
    assert c.strict.dtype == bool


def test_constants_are_the_largest_floats_at_or_below_the_decimals():
    lits = ["0.1", "-0.30000000000000004", "1e-310", "123456789.123456789", ".5", "7", "-2.5e-3"]
    body = "".join(f"(assert (<= Y_0 {t}))" for t in lits)
    conj = parse_text(v1(1, 1, box1([0], [1]) + body)).cases[0].region[0]
    for d, lin in zip(conj.d, conj.lins):     # Y_0 - t <= 0: d is -t rounded down, by <= 2 ulps
        exact = lin.rational()[1]
        assert Fraction(float(d)) <= exact < Fraction(float(np.nextafter(np.nextafter(d, np.inf), np.inf)))
    assert sorted(-Fraction(float(d)) for d in conj.d) != sorted(Fraction(t) for t in lits)
    # exactly as written: the float 0.1 is 0.1000000000000000055..., above the decimal 0.1
    tenth = parse_text(v1(1, 1, box1([0], [1]) + "(assert (<= Y_0 0.1))")).cases[0].region[0]
    assert not tenth.holds([0.1]) and tenth.holds([np.nextafter(0.1, 0)])


# ---- VNN-LIB 2.0 --------------------------------------------------------------------------------
V2_HEADER = """(vnnlib-version <2.0>)
(declare-network net
    (declare-input X float32 [2,3])
    (declare-output Y float32 [1,2]))
"""


def v2_box(shape=(2, 3), lo=0.0, hi=1.0) -> str:
    idx = np.ndindex(*shape)
    return "\n".join(f"(assert (>= X[{','.join(map(str, i))}] {lo}))\n"
                     f"(assert (<= X[{','.join(map(str, i))}] {hi}))" for i in idx)


def test_v2_declarations_and_row_major_indexing():
    p = parse_text(V2_HEADER + v2_box() + """
        (assert (<= X[1,2] 0.5))
        (assert (or (<= Y[0,1] Y[0,0]) (and (> Y[0,0] 3.0) (== Y[0,1] 1))))""")
    assert p.version == "2.0" and p.network == "net"
    assert p.inputs == (vnnlib.Variable("X", "float32", (2, 3)),)
    assert p.outputs == (vnnlib.Variable("Y", "float32", (1, 2)),)
    assert (p.n_in, p.n_out) == (6, 2)
    (case,) = p.cases
    np.testing.assert_array_equal(case.hi, [1, 1, 1, 1, 1, 0.5])
    a, b = case.region
    assert rows(a) == [((-1.0, 1.0), 0.0, False)]
    assert rows(b) == sorted([((-1.0, 0.0), 3.0, True), ((0.0, 1.0), -1.0, False),
                              ((0.0, -1.0), 1.0, False)])


def test_v2_scalar_output_bare_name_and_minor_version():
    p = parse_text("""(vnnlib-version <2.1>)
        (declare-network n (declare-input X real [2]) (declare-output Y real []))
        (assert (>= X[0] 0)) (assert (<= X[0] 1)) (assert (>= X[1] 0)) (assert (<= X[1] 1))
        (assert (or (>= Y 20.5) (<= Y -14.5)))""")
    assert p.outputs == (vnnlib.Variable("Y", "real", ()),)
    assert p.n_out == 1
    assert [rows(c) for c in p.cases[0].region] == [[((-1.0,), 20.5, False)],
                                                    [((1.0,), 14.5, False)]]


def test_v2_index_with_spaces_and_multiplication():
    p = parse_text(V2_HEADER + v2_box() + """
        (assert (<= (* 2.0 Y [0, 1] 0.5) (* -1 (- Y[0,0]))))
        (assert (<= Y[0, 1] 7))
        (assert (<= Y [ 0 , 1 ] 8))""")
    assert rows(p.cases[0].region[0]) == [((-1.0, 1.0), 0.0, False), ((0.0, 1.0), -8.0, False),
                                          ((0.0, 1.0), -7.0, False)]


def test_v2_same_property_as_v1():
    t1 = v1(3, 2, box1([0, 0, 0], [1, 2, 3]) + """
        (assert (or (and (<= Y_0 Y_1) (>= X_0 0.5)) (and (<= Y_1 0) (<= X_0 0.5))))""")
    t2 = """(vnnlib-version <2.0>)
        (declare-network n (declare-input X Real [3]) (declare-output Y Real [2]))
        (assert (>= X[0] 0)) (assert (<= X[0] 1)) (assert (>= X[1] 0)) (assert (<= X[1] 2))
        (assert (>= X[2] 0)) (assert (<= X[2] 3))
        (assert (or (and (<= Y[0] Y[1]) (>= X[0] 0.5)) (and (<= Y[1] 0) (<= X[0] 0.5))))"""
    p1, p2 = parse_text(t1), parse_text(t2)
    assert len(p1.cases) == len(p2.cases) == 2
    for a, b in zip(p1.cases, p2.cases):
        np.testing.assert_array_equal(a.lo, b.lo)
        np.testing.assert_array_equal(a.hi, b.hi)
        assert [rows(c) for c in a.region] == [rows(c) for c in b.region]


def test_v2_legacy_declare_fun_elements():
    p = parse_text("""(vnnlib-version <2.0>)
        (declare-network acc (declare-input X Real [0]) (declare-output Y Real [0]))
        (declare-fun X[0] () Real) (declare-fun X[1] () Real) (declare-fun Y[0] () Real)
        (assert (>= X[0] 0)) (assert (<= X[0] 1)) (assert (>= X[1] 0)) (assert (<= X[1] 1))
        (assert (<= Y[0] 0))""")
    assert p.inputs[0].shape == (2,) and p.outputs[0].shape == (1,)


# ---- files --------------------------------------------------------------------------------------
def test_parse_file_plain_and_gzip(tmp_path):
    text = (DATA / "acc_v1.vnnlib").read_text()
    plain = parse_file(DATA / "acc_v1.vnnlib")
    gz = tmp_path / "acc.vnnlib.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    zipped = parse_file(gz)
    assert len(plain.cases) == len(zipped.cases) == 1
    np.testing.assert_array_equal(plain.cases[0].A_in, zipped.cases[0].A_in)
    assert sniff_version(gz) == "1.0"


def test_fixtures_v1_and_v2_agree():
    p1 = parse_file(DATA / "acc_v1.vnnlib")
    p2 = parse_file(DATA / "acc_v2.vnnlib")
    assert sniff_version(DATA / "acc_v1.vnnlib") == "1.0"
    assert sniff_version(DATA / "acc_v2.vnnlib") == "2.0"
    assert p2.network == "acc"
    (a,), (b,) = p1.cases, p2.cases
    for x, y in ((a.lo, b.lo), (a.hi, b.hi), (a.A_in, b.A_in), (a.b_in, b.b_in)):
        np.testing.assert_array_equal(x, y)
    assert [rows(c) for c in a.region] == [rows(c) for c in b.region]


def test_gzip_v2(tmp_path):
    f = tmp_path / "q.vnnlib.gz"
    f.write_bytes(gzip.compress((DATA / "acc_v2.vnnlib").read_bytes()))
    assert sniff_version(f) == "2.0"
    assert parse_file(str(f)).network == "acc"


def test_sniff_version_skips_long_comment_header(tmp_path):
    f = tmp_path / "q.vnnlib"
    f.write_text(";" + "x" * 100_000 + "\n" + V2_HEADER + v2_box() + "(assert (<= Y[0,0] 0))")
    assert sniff_version(f) == "2.0"
    assert parse_file(f).version == "2.0"


def test_error_str_format(tmp_path):
    f = tmp_path / "bad.vnnlib"
    f.write_text("(declare-const X_0 Real)\n(assert (<= X_0 Z))\n")
    with pytest.raises(VnnlibError) as e:
        parse_file(f)
    assert (e.value.line, e.value.column) == (2, 17)
    assert str(e.value) == f"{f}:2:17: {e.value.message}"
    assert "Z" in e.value.message


def test_invalid_utf8_and_corrupt_gzip(tmp_path):
    f = tmp_path / "u.vnnlib"
    f.write_bytes(b"(declare-const X_0 Real)\n  \xff")
    with pytest.raises(VnnlibError) as e:
        parse_file(f)
    assert (e.value.line, e.value.column) == (2, 3)
    g = tmp_path / "c.vnnlib.gz"
    g.write_bytes(gzip.compress(b"(declare-const X_0 Real)")[:-6])
    with pytest.raises(VnnlibError):
        parse_file(g)
