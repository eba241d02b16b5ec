"""The tensor form of a property: outward rounding of boxes, violation and refutation."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

import vnnlib
from verifier.spec import _round_box, build_cases, conjuncts_refuted, refuted, violation


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=8))
def test_boxes_round_outwards_in_float32(values):
    a = np.asarray(values, dtype=np.float64)
    lo = _round_box(a, torch.float32, "cpu", -1).double().numpy()
    hi = _round_box(a, torch.float32, "cpu", +1).double().numpy()
    assert np.all(lo <= a) and np.all(hi >= a)
    assert np.all(_round_box(a, torch.float64, "cpu", -1).numpy() == a)


SPEC = """(declare-const X_0 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 0.0))
(assert (<= X_0 1.0))
(assert (or (and (<= Y_0 Y_1) (>= Y_0 0.5)) (and (< Y_1 -1.0))))
"""


def test_violation_and_refutation_follow_the_disjunction():
    prop = vnnlib.parse_text(SPEC)
    cs = build_cases(prop, (1,), 2, torch.float64, torch.device("cpu"))
    assert len(cs) == 1 and cs.valid.sum() == 2
    ys = torch.tensor([[[0.6, 0.7], [0.6, 0.5], [0.0, -2.0], [0.0, 0.0]]], dtype=torch.float64)
    v = violation(cs, ys)[0]
    assert v[0] <= 0 and v[1] > 0 and v[2] <= 0 and v[3] > 0
    # refuting the first conjunct alone does not refute the case
    lb = torch.full((1, cs.C.shape[1]), -1.0, dtype=torch.float64)
    lb[0, (cs.conj[0] == 0).nonzero()[0]] = 1.0
    assert conjuncts_refuted(cs, lb, 1e-9)[0].tolist() == [True, False]
    assert not bool(refuted(cs, lb, 1e-9)[0])
    lb[0, (cs.conj[0] == 1).nonzero()[0]] = 1.0
    assert bool(refuted(cs, lb, 1e-9)[0])
    # +inf and NaN prove nothing
    assert not bool(refuted(cs, torch.full_like(lb, float("nan")), 1e-9)[0])
    assert not bool(refuted(cs, torch.full_like(lb, float("inf")), 1e-9)[0])
