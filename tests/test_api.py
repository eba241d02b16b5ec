"""The Python API: verifier.verify(onnx, vnnlib, timeout=...) -> Result."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import verifier
from verifier.api import InputError
from verifier.config import BabConfig, VerifyConfig
from verifier.verdict import Result, Verdict

from conftest import ROOT, SHAPES, Example, assert_counterexample, read_example_spec


def hard_query(tmp_path: Path) -> Path:
    """acas_like over [-1,1]^5 with Y_0 >= 0.42.  4M random samples reach at most Y_0 = 0.157, so it is
    most likely unsat, but interval bounds over 10^5 sub-boxes still allow 1.29 and branch and bound
    did not close it in 100 s: a query to watch the deadline on."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(5))
    text += "".join(f"(declare-const Y_{i} Real)\n" for i in range(5))
    text += "".join(f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(5))
    path = tmp_path / "hard.vnnlib"
    path.write_text(text + "(assert (>= Y_0 0.42))\n")
    return path


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_unsat(examples, version):
    ex = Example("acas_like", "unsat", examples)
    r = verifier.verify(ex.onnx, ex.spec(version), timeout=60)
    assert isinstance(r, Result)
    assert r.verdict is Verdict.UNSAT
    assert r.x is None and r.y is None
    assert r.seconds > 0


@pytest.mark.parametrize("net", ["acas_like", "conv_small"])
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_sat_returns_a_confirmed_counterexample(examples, net, version):
    ex = Example(net, "sat", examples)
    r = verifier.verify(str(ex.onnx), str(ex.spec(version)), timeout=60)  # str paths too
    assert r.verdict is Verdict.SAT
    in_shape, out_shape = SHAPES[net]
    assert isinstance(r.x, np.ndarray) and r.x.shape == (int(np.prod(in_shape)),)
    assert isinstance(r.y, np.ndarray) and r.y.shape == (int(np.prod(out_shape)),)
    assert_counterexample(ex.onnx, read_example_spec(ex.spec("1.0")), r.x, r.y)


def test_conv_unsat(examples):
    ex = Example("conv_small", "unsat", examples)
    assert verifier.verify(ex.onnx, ex.spec("2.0"), timeout=60).verdict is Verdict.UNSAT


@pytest.mark.parametrize("limit", [0.3, 2.0])
def test_timeout_is_honoured(examples, tmp_path, limit):
    query = hard_query(tmp_path)
    t0 = time.monotonic()
    r = verifier.verify(examples / "onnx" / "acas_like.onnx", query, timeout=limit)
    elapsed = time.monotonic() - t0
    assert r.verdict in (Verdict.TIMEOUT, Verdict.UNSAT), r.verdict
    # the deadline is checked cooperatively; seen here: 0.3 -> 0.42 s, 1 -> 1.18 s, 2 -> 2.14 s, 20 -> 20.16 s
    assert elapsed < limit + 1.0, f"timeout={limit} returned after {elapsed:.2f} s"


def test_config_without_branch_and_bound(examples, tmp_path):
    cfg = VerifyConfig(timeout_s=30, bab=BabConfig(enabled=False))
    t0 = time.monotonic()
    r = verifier.verify(examples / "onnx" / "acas_like.onnx", hard_query(tmp_path), timeout=30, config=cfg)
    assert r.verdict in (Verdict.UNKNOWN, Verdict.UNSAT)
    assert time.monotonic() - t0 < 20


def test_missing_files_raise_input_error(examples, tmp_path):
    ex = Example("acas_like", "unsat", examples)
    with pytest.raises(InputError):
        verifier.verify(ex.onnx, tmp_path / "missing.vnnlib", timeout=10)
    with pytest.raises(InputError):
        verifier.verify(tmp_path / "missing.onnx", ex.spec("1.0"), timeout=10)


def test_malformed_query_raises_input_error_with_position(examples, tmp_path):
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(assert (<= X_0 1.0)\n")
    with pytest.raises(InputError, match=r"bad\.vnnlib:\d+:\d+: "):
        verifier.verify(examples / "onnx" / "acas_like.onnx", bad, timeout=10)


def test_property_that_does_not_fit_the_network(examples, tmp_path):
    """A 1.0 query over 2 inputs on a 5-input network: an input error, not a crash or an answer."""
    bad = tmp_path / "small.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                   "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n"
                   "(assert (>= Y_0 1.0))\n")
    with pytest.raises(InputError):
        verifier.verify(examples / "onnx" / "acas_like.onnx", bad, timeout=10)


def test_verify_leaves_the_callers_float_semantics_alone(examples):
    """verify may flush subnormals while it works (speed), but the caller's numpy must read 5e-324 > 0
    afterwards (hypothesis, for one, refuses to run otherwise).  In a subprocess: a fresh process."""
    code = ("import sys, numpy as np, verifier\n"
            f"verifier.verify({str(examples / 'onnx' / 'acas_like.onnx')!r}, "
            f"{str(Example('acas_like', 'unsat', examples).spec('1.0'))!r}, timeout=60)\n"
            "tiny = np.nextafter(0.0, 1.0)\n"
            "sys.exit(0 if tiny > 0 and np.float64(1e-310) * 1.0 == 1e-310 else 3)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.returncode if r.returncode == 3 else r.stderr


@pytest.mark.parametrize("answer", ["unsat", "sat"])
def test_small_networks_are_bounded_before_the_attack(examples, monkeypatch, answer):
    """On a small network with few inputs, IBP and CROWN (tens of milliseconds) run before the quick
    attack (a fifth of a second of search): an unsat they decide never attacks; a sat is still
    found and confirmed, by the attack on what they leave open."""
    from verifier import pipeline

    calls = []
    attack = pipeline.stage_attack
    monkeypatch.setattr(pipeline, "stage_attack", lambda q, cases, *a, **k: calls.append(len(cases))
                        or attack(q, cases, *a, **k))
    ex = Example("acas_like", answer, examples)
    g = verifier.api.load_checked(ex.onnx)[0]
    assert pipeline.bounds_first(g, VerifyConfig().attack)
    r = verifier.verify(ex.onnx, ex.spec("2.0"), timeout=60)
    assert r.verdict is (Verdict.UNSAT if answer == "unsat" else Verdict.SAT)
    if answer == "unsat":
        assert calls == []
    else:
        assert_counterexample(ex.onnx, read_example_spec(ex.spec("1.0")), r.x, r.y)


def test_large_inputs_and_networks_are_attacked_first():
    """Inputs too many for the attack's search, or a network whose CROWN pass is dear: the quick
    attack runs first."""
    from helpers_nets import graph_of, random_mlp
    from verifier import pipeline

    cfg, rng = VerifyConfig().attack, np.random.default_rng(0)
    assert not pipeline.bounds_first(graph_of(random_mlp(rng, cfg.search_max_dim + 1, [8], 3, ["Relu"])), cfg)
    assert not pipeline.bounds_first(graph_of(random_mlp(rng, 5, [400, 400, 400], 3, ["Relu"])), cfg)
    assert pipeline.bounds_first(graph_of(random_mlp(rng, 5, [50] * 6, 5, ["Relu"])), cfg)
