"""Malformed and unsupported queries: each raises VnnlibError at the offending token."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnnlib import VnnlibError, parse_text

D = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
B = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
N = "(vnnlib-version <2.0>)\n(declare-network n "
H2 = N + "(declare-input X Real [2,2]) (declare-output Y Real [3]))\n"

# (text, line, column, fragment of the message)
CASES = [
    ('', 1, 1, 'empty'),
    ('  ; only a comment\n', 1, 1, 'empty'),
    (D + '(assert (<= X_0 1)', 3, 1, 'unclosed'),
    (D + '(assert (<= X_0 1)))', 3, 20, "unexpected ')'"),
    (D + '(assert (<= X_0 1))\n(assert (<= Y_0 2)\n', 4, 1, 'unclosed'),
    (D + 'assert', 3, 1, 'expected a command'),
    (D + '(assert)', 3, 8, "'assert' takes 1 formula"),
    (D + '(assert (<= Y_0 1) (<= Y_0 2))', 3, 20, "'assert' takes 1 formula"),
    (D + '(frobnicate X_0)', 3, 2, 'unknown command'),
    (D + '((assert))', 3, 2, 'expected a command name'),
    (D + '(vnnlib-version <2.0>)', 3, 1, 'must be the first'),
    ('(declare-const X_0 Int)', 1, 20, 'unsupported type'),
    ('(declare-const Z_0 Real)', 1, 16, 'unsupported variable name'),
    ('(declare-const X_01 Real)', 1, 16, 'unsupported variable name'),
    ('(declare-const X_0 Real)\n(declare-const X_0 Real)', 2, 16, 'declared twice'),
    ('(declare-const X_0)', 1, 19, 'takes NAME Real'),
    ('(declare-fun X_0 (Real) Real)', 1, 18, 'declare-fun with arguments'),
    ('(declare-const X_0 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)',
     2, 16, 'X_1 is missing'),
    ('(declare-const X_0 Real)\n(declare-const Y_1 Real)', 2, 16, 'Y_0 is missing'),
    ('(declare-const X_0 Real)\n', 2, 1, 'no output variables'),
    ('(declare-const Y_0 Real)\n(assert (<= Y_0 1))', 2, 20, 'no input variables'),
    (D + '(assert (<= X_1 1))', 3, 13, 'undeclared variable X_1'),
    (D + '(assert (<= X_0 foo))', 3, 17, "unknown symbol 'foo'"),
    (D + '(assert (<= X_0 1.2.3))', 3, 17, 'malformed number'),
    (D + '(assert (<= X_0 1_000))', 3, 17, 'malformed number'),
    (D + '(assert (<= X_0 1e999))', 3, 17, 'out of the float64 range'),
    (D + '(assert (<= X_0 @))', 3, 17, "unknown symbol '@'"),
    (D + '(assert (<= X_0 "s"))', 3, 17, 'unexpected token'),
    (D + '(assert (<= X_0 ]))', 3, 17, 'unexpected token'),
    (D + '(assert (<= X_0 1 2))', 3, 19, "'<=' takes 2 arguments, got 3"),
    (D + '(assert (<= X_0))', 3, 16, "'<=' takes 2 arguments, got 1"),
    (D + '(assert (== X_0 1))', 3, 10, "as '='"),
    (D + '(assert (distinct X_0 1))', 3, 10, 'unsupported: distinct'),
    (D + '(assert (not (<= X_0 1)))', 3, 10, 'unsupported: not'),
    (D + '(assert (and))', 3, 13, "'and' takes at least 1"),
    (D + '(assert (or (<= Y_0 1) X_0))', 3, 24, 'expected a formula'),
    (D + '(assert X_0)', 3, 9, 'expected a formula'),
    (D + '(assert ())', 3, 9, 'empty list'),
    (D + '(assert (<= (* X_0 X_0) 1))', 3, 13, 'non-linear'),
    (D + '(assert (<= (/ X_0 2) 1))', 3, 14, 'division'),
    (D + '(assert (<= (+) 1))', 3, 15, "'+' takes at least 1"),
    (D + '(assert (<= (<= X_0 1) 1))', 3, 13, 'expected an arithmetic term'),
    (D + '(assert (<= X_0 Y_0))', 3, 9, 'mixed input/output'),
    (D + '(assert (<= (+ X_0 Y_0) 1))', 3, 9, 'mixed input/output'),
    (D + '(assert (<= X_0 1))\n(assert (<= Y_0 1))', 1, 16, 'input X_0 has no lower bound'),
    ('(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(assert '
     '(>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))',
     2, 16, 'input X_1 has no upper bound'),
    (D + '(assert (or (and (>= X_0 0) (<= X_0 1)) (<= X_0 5)))',
     1, 16, 'no lower bound in case 2 of 2'),
    ('(vnnlib-version 2.0)', 1, 17, 'malformed version'),
    ('(vnnlib-version <3.0>)', 1, 17, 'unsupported VNN-LIB version'),
    ('(vnnlib-version <2.0>)', 1, 23, 'no declare-network'),
    (N + '(declare-input X Real [2]))', 2, 46, 'declares no output'),
    (N + '(declare-output Y Real [2]))', 2, 47, 'declares no input'),
    (N + '(declare-input X badtype [2]) (declare-output Y Real [2]))',
     2, 37, 'unknown element type'),
    (N + '(declare-input X Real [2,a]) (declare-output Y Real [2]))', 2, 42, 'malformed shape'),
    (N + '(declare-input X Real 2) (declare-output Y Real [2]))', 2, 42, 'expected a shape'),
    (N + '(declare-input X Real [2] initialized) (declare-output Y Real [2]))',
     2, 46, 'initialized'),
    (N + '(equal-to m) (declare-input X Real [2]) (declare-output Y Real [2]))', 2, 30, 'no network m declared before'),
    (H2 + '(declare-network m (isomorphic-to n) (declare-input A Real [2]) (declare-output B Real [2]))',
     3, 35, 'their inputs differ'),
    (H2 + '(declare-network m (equal-to n) (declare-input A Real [1,3]) (declare-output B Real [2]))\n'
     '(declare-network k (equal-to m) (declare-input C Real [1,3]) (declare-output D Real [2]))',
     4, 30, 'm is itself declared equal-to n'),
    (N + '(declare-input X Real [2]) (declare-hidden H Real [2]) (declare-output Y Real [2]))',
     2, 73, "declare-hidden needs the ONNX tensor's name"),
    (N + '(declare-input X Real [2]) (declare-output Y Real [2]) (declare-hidden H Real [2] "r"))',
     2, 75, 'order is inputs, hidden, outputs'),
    (H2 + '(declare-network n (declare-input A Real [2]) (declare-output B Real [2]))', 3, 18, 'network n declared twice'),
    (N + '(declare-input X Real [2]) (equal-to m) (declare-output Y Real [2]))', 2, 47, 'comes before'),
    (H2 + '(declare-network m (declare-input A Real [2]) (declare-output X Real [2]))', 3, 63, 'X declared twice'),
    (N + '(declare-input X Real [2] "") (declare-output Y Real [2]))', 2, 46, 'malformed ONNX tensor name'),
    (N + '(declare-input X Real [2]) (declare-output X Real [2]))', 2, 63, 'declared twice'),
    (N + '(declare-input X Real [0]) (declare-output Y Real [2]))\n(assert (<= Y[0] 1))',
     2, 35, 'no elements'),
    (H2 + '(assert (<= X[0] 1))', 3, 13, 'partial indexing'),
    (H2 + '(assert (<= X[0,2] 1))', 3, 13, 'out of range for dimension 1'),
    (H2 + '(assert (<= X[0,-1] 1))', 3, 13, 'malformed index'),
    (H2 + '(assert (<= X 1))', 3, 13, 'index it'),
    (H2 + '(assert (<= W[0] 1))', 3, 13, 'unknown symbol'),
    (H2 + '(assert (<= n 1))', 3, 13, 'network, not a variable'),
    (H2 + '(assert (= Y[0] 1))', 3, 10, "'=='"),
    (H2 + '(assert (<= (* Y[0] Y[1]) 1))', 3, 13, 'non-linear term (POLY theory unsupported)'),
    (H2 + '(assert (<= (* 2 (+ Y[0] 1) (- Y[1])) 1))',
     3, 13, 'non-linear term (POLY theory unsupported)'),
    (H2 + '(declare-fun X[0] () Real)', 3, 14, 'declare-fun is not VNN-LIB 2.0'),
    (H2 + '(assert (<= Y[0] 1))\n(declare-network m (declare-input A Real [2]) '
     '(declare-output B Real [2]))',
     4, 1, 'after an assert'),
    ('(vnnlib-version <2.0>)\n(assert (<= Y[0] 1))', 2, 1, 'before any declare-network'),
    (H2 + '(vnnlib-version <2.0>)', 3, 1, 'given twice'),
]


@pytest.mark.parametrize("text, line, column, fragment", CASES)
def test_error_position_and_message(text, line, column, fragment):
    with pytest.raises(VnnlibError) as e:
        parse_text(text, source="q.vnnlib")
    err = e.value
    assert fragment in err.message
    assert (err.line, err.column) == (line, column), err.message
    assert str(err) == f"q.vnnlib:{line}:{column}: {err.message}"


@pytest.mark.parametrize("text", [c[0] for c in CASES])
def test_truncations_never_crash(text):
    """Every prefix of a broken query fails cleanly (VnnlibError) or parses."""
    for cut in range(0, len(text) + 1, 3):
        try:
            parse_text(text[:cut])
        except VnnlibError as err:
            assert err.line >= 1 and err.column >= 1


_FIXTURES = [(Path(__file__).resolve().parent / "data" / "vnnlib" / f).read_text()
             for f in ("acc_v1.vnnlib", "acc_v2.vnnlib")]
_ALPHABET = "()[];,\" \n\t.-+*_<=>!0123456789eXY_andorassertdeclare"


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(_FIXTURES), st.lists(
    st.tuples(st.floats(0, 1), st.integers(0, 3), st.text(_ALPHABET, max_size=4)), max_size=4))
def test_mutations_raise_only_vnnlib_errors(text, edits):
    """Random edits of valid queries: parse, or fail with a positioned VnnlibError."""
    for where, cut, insert in edits:
        i = int(where * len(text))
        text = text[:i] + insert + text[i + cut:]
    try:
        parse_text(text)
    except VnnlibError as err:
        lines = text.split("\n")
        assert 1 <= err.line <= len(lines)
        assert 1 <= err.column <= len(lines[err.line - 1]) + 1
