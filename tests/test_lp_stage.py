"""The LP stage of the pipeline (--lp-tighten): it runs on the cases alpha-CROWN leaves open,
never proves what a sampled point contradicts, and leaves provable properties provable."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from helpers_nets import graph_of, random_mlp
from verifier.api import verify
from verifier.bounds.backward import crown_intermediate
from verifier.config import BabConfig, LPConfig, VerifyConfig
from verifier.evaluate import forward
from verifier.lp.relax import lp_lower
from verifier.verdict import Verdict

LP_ONLY = VerifyConfig(timeout_s=60, bab=BabConfig(enabled=False), lp=LPConfig(enabled=True))


def _problem(tmp_path, seed: int, shift: float):
    """A 5-30-30-30-3 ReLU net, a box of half-width 1.5, the property y0 - y1 <= tau with tau the
    LP bound (over CROWN's intermediate bounds) plus `shift`; also the sampled minimum."""
    rng = np.random.default_rng(seed)
    model = random_mlp(rng, 5, [30, 30, 30], 3, ["Relu"])
    g = graph_of(model)
    x0 = rng.standard_normal(5)
    lo, hi = x0 - 1.5, x0 + 1.5
    pre = crown_intermediate(g, *(torch.tensor(v).reshape(1, 5) for v in (lo, hi)))
    lp = lp_lower(g, lo, hi, pre, np.array([1.0, -1.0, 0.0]))
    with torch.no_grad():
        y = forward(g, torch.tensor(rng.uniform(lo, hi, (20000, 5)))).numpy()
    sampled = float((y[:, 0] - y[:, 1]).min())
    tau = lp + shift
    onnx.save(model, tmp_path / "m.onnx")
    text = [f"(declare-const X_{i} Real)" for i in range(5)] + [f"(declare-const Y_{i} Real)" for i in range(3)]
    text += [f"(assert (>= X_{i} {float(lo[i])!r}))\n(assert (<= X_{i} {float(hi[i])!r}))" for i in range(5)]
    text += [f"(assert (<= (- Y_0 Y_1) {float(tau)!r}))"]
    (tmp_path / "p.vnnlib").write_text("\n".join(text) + "\n")
    return tmp_path / "m.onnx", tmp_path / "p.vnnlib", lp, sampled


@pytest.mark.parametrize("seed", [0, 1])
def test_lp_stage_never_contradicts_a_sampled_point(tmp_path, seed):
    m, p, lp, sampled = _problem(tmp_path, seed, 0.0)
    assert lp <= sampled
    # tau just above a sampled value: a violation exists, so unsat would be wrong
    _, p, _, _ = _problem(tmp_path, seed, sampled - lp + 1e-3)
    r = verify(m, p, 60, config=LP_ONLY)
    assert r.verdict in (Verdict.SAT, Verdict.UNKNOWN)
    if r.verdict is Verdict.UNKNOWN:
        assert r.stats.get("open_after_lp") == 1   # the stage ran on the open case


@pytest.mark.parametrize("seed", [0, 1])
def test_lp_stage_keeps_provable_properties_provable(tmp_path, seed):
    m, p, lp, _ = _problem(tmp_path, seed, -1e-3 * 10)
    assert verify(m, p, 60, config=LP_ONLY).verdict is Verdict.UNSAT


MILP = VerifyConfig(timeout_s=60, engine="milp")
SDP = VerifyConfig(timeout_s=60, bab=BabConfig(enabled=False), engine="sdp")


@pytest.mark.parametrize("seed", [0, 1])
def test_milp_engine_decides_both_ways(tmp_path, seed):
    """--engine milp is complete on a small net: unsat below the true minimum (our LP branch and
    bound proves it), sat above a sampled value (the MILP's candidate, confirmed by onnxruntime)."""
    m, p, lp, sampled = _problem(tmp_path, seed, 0.0)
    # between the LP bound and the samples the bounds cannot decide: the MILP stage must
    _, p, _, _ = _problem(tmp_path, seed, (sampled - lp) / 2)
    r = verify(m, p, 60, config=MILP)
    assert r.verdict in (Verdict.UNSAT, Verdict.SAT), r.reason
    if r.verdict is Verdict.UNSAT:
        assert r.stats.get("milp_proved_conjuncts") == 1
    _, p, _, _ = _problem(tmp_path, seed, sampled - lp + 1e-3)
    r = verify(m, p, 60, config=MILP)
    assert r.verdict is Verdict.SAT and r.x is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_sdp_engine_is_sound_and_runs(tmp_path, seed):
    m, p, lp, sampled = _problem(tmp_path, seed, -1e-2)
    assert verify(m, p, 60, config=SDP).verdict is Verdict.UNSAT
    _, p, _, _ = _problem(tmp_path, seed, sampled - lp + 1e-3)
    r = verify(m, p, 60, config=SDP)
    assert r.verdict in (Verdict.SAT, Verdict.UNKNOWN)
    if r.verdict is Verdict.UNKNOWN:
        assert r.stats.get("open_after_sdp") == 1
