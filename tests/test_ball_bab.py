"""Activation splitting over L2 balls (pipeline.refute_in_ball -> bab/activation_split.py with a
ball): it proves what CROWN and alpha-CROWN over the ball cannot, never proves a bound that a
point of the ball and box breaks, honours the deadline, and only raises the audit's L2 radii."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

import vnnlib
from helpers_nets import graph_of, one_torch_thread, random_mlp, run_onnxruntime  # noqa: F401  (the fixture applies here)
from verifier.api import Session
from verifier.budget import Deadline
from verifier.evaluate import forward
from verifier.verdict import Verdict


def _query(lo, hi, tau, n_out):
    """VNN-LIB: x in [lo, hi]; violated when y_0 - y_j <= tau for some j > 0."""
    n = len(lo)
    text = [f"(declare-const X_{i} Real)" for i in range(n)] + [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    text += [f"(assert (>= X_{i} {float(lo[i])!r}))\n(assert (<= X_{i} {float(hi[i])!r}))" for i in range(n)]
    text += ["(assert (or " + " ".join(f"(and (<= (- Y_0 Y_{j}) {float(tau)!r}))" for j in range(1, n_out)) + "))"]
    return vnnlib.parse_text("\n".join(text) + "\n")


def _margin(g, x):
    """min over j > 0 of y_0 - y_j at the points x (k, n): (k,)."""
    y = forward(g, x)
    return (y[:, :1] - y[:, 1:]).amin(1)


def _ball_points(g, c, r, lo, hi, seed, k=256, steps=150):
    """Points of the ball and box: random ones, then PGD on the margin from them (projected onto
    box, then ball, shrunk by 1e-9 so rounding keeps them inside).  (points, their margins)."""
    gen = torch.Generator().manual_seed(seed)
    c, lo, hi = (torch.as_tensor(t, dtype=torch.float64) for t in (c, lo, hi))

    def project(x):
        x = torch.minimum(torch.maximum(x, lo), hi)
        d = x - c
        return c + d * torch.clamp(r / d.norm(dim=1, keepdim=True).clamp_min(1e-30), max=1.0) * (1 - 1e-9)

    d = torch.randn(k, c.numel(), generator=gen, dtype=torch.float64)
    x = project(c + d / d.norm(dim=1, keepdim=True) * r * torch.rand(k, 1, generator=gen, dtype=torch.float64))
    pts = [x]
    for _ in range(steps):
        x.requires_grad_(True)
        (gr,) = torch.autograd.grad(_margin(g, x).sum(), x)
        x = project((x - 0.03 * r * gr / gr.norm(dim=1, keepdim=True).clamp_min(1e-30)).detach())
        pts.append(x)
    pts = torch.cat(pts)
    assert bool(((pts - c).norm(dim=1) <= r).all() and (pts >= lo).all() and (pts <= hi).all())
    with torch.no_grad():
        return pts, _margin(g, pts)


def _problem(tmp_path, seed, n, hidden, acts=("Relu",), n_out=2, r=0.5):
    rng = np.random.default_rng(seed)
    model = random_mlp(rng, n, list(hidden), n_out, list(acts))
    path = tmp_path / f"m{seed}.onnx"
    onnx.save(model, path)
    c = rng.uniform(0.2, 0.8, size=n)
    lo, hi = np.clip(c - r, 0, 1), np.clip(c + r, 0, 1)
    return Session.open(path), graph_of(model), c, lo, hi


def _bounds_only(session):
    """The session with branch and bound off: CROWN and alpha-CROWN over the ball only."""
    session.cfg = replace(session.cfg, bab=replace(session.cfg.bab, enabled=False))
    return session


def test_activation_splitting_proves_what_alpha_crown_over_the_ball_cannot(tmp_path):
    from verifier import pipeline

    session, g, c, lo, hi = _problem(tmp_path, 0, 30, [8, 8])
    assert g.input_size > pipeline.BALL_SPLIT_MAX_DIM          # not the input-splitting path
    bounds_only = _bounds_only(_problem(tmp_path, 0, 30, [8, 8])[0])
    r = 0.5
    _, m = _ball_points(g, c, r, lo, hi, 0)
    found = float(m.min())
    # the largest threshold alpha-CROWN over the ball proves, by bisection
    below, above = found - 10.0, found
    for _ in range(12):
        mid = (below + above) / 2
        v = bounds_only.refute_in_ball(_query(lo, hi, mid, 2), c, r, Deadline(20)).verdict
        below, above = (mid, above) if v is Verdict.UNSAT else (below, mid)
    assert found - below > 1e-2                                # a gap for the branch and bound to close
    tau = below + 0.7 * (found - below)
    assert bounds_only.refute_in_ball(_query(lo, hi, tau, 2), c, r, Deadline(20)).verdict is Verdict.UNKNOWN
    got = session.refute_in_ball(_query(lo, hi, tau, 2), c, r, Deadline(30))
    assert got.verdict is Verdict.UNSAT, got.reason
    assert got.stats.get("bab_rounds", 0) >= 1


@pytest.mark.parametrize("seed,n,hidden,acts,n_out", [
    (1, 24, [10, 8], ["Relu"], 3),
    (2, 32, [12], ["Relu"], 2),
    (3, 40, [8, 8, 6], ["Relu"], 3),
    (4, 20, [10, 10], ["Tanh", "Relu"], 3),
    (5, 3, [12, 12], ["Relu"], 2),                # input splitting, then activation splitting
    (6, 28, [16, 8], ["Relu"], 4),
])
def test_never_unsat_where_a_point_of_ball_and_box_violates(tmp_path, seed, n, hidden, acts, n_out):
    session, g, c, lo, hi = _problem(tmp_path, seed, n, hidden, acts, n_out, r=0.6)
    for k, r in enumerate([0.05, 0.2, 0.6]):
        pts, m = _ball_points(g, c, r, np.clip(c - r, 0, 1), np.clip(c + r, 0, 1), seed * 10 + k, k=128, steps=80)
        found = float(m.min())
        lo_r, hi_r = np.clip(c - r, 0, 1), np.clip(c + r, 0, 1)
        # a threshold a found point breaks (never unsat), and thresholds below it (unsat allowed,
        # and then no point may break them; the closest ones need the branch and bound)
        for tau in (found + 1e-6 * (1 + abs(found)), found - 0.002, found - 0.01, found - 0.05):
            got = session.refute_in_ball(_query(lo_r, hi_r, tau, n_out), c, r, Deadline(3))
            assert got.verdict is not Verdict.SAT
            if got.verdict is Verdict.UNSAT:
                assert bool((m > tau).all()), (seed, r, tau, float(m.min()))


def test_deadline_is_honoured(tmp_path):
    session, g, c, lo, hi = _problem(tmp_path, 1, 64, [32, 32], r=0.5)
    _, m = _ball_points(g, c, 0.5, lo, hi, 1)
    tau = float(m.min()) - 1e-4            # likely true, and far beyond alpha-CROWN: a long search
    t0 = time.monotonic()
    got = session.refute_in_ball(_query(lo, hi, tau, 2), c, 0.5, Deadline(1.0))
    took = time.monotonic() - t0
    assert got.verdict in (Verdict.TIMEOUT, Verdict.UNKNOWN), got.verdict
    assert took < 10.0, took          # a hang would run on: the search stops at the deadline


def test_memory_budget_is_honoured(tmp_path):
    """A budget that no pass fits: unknown with the reason, at once, never an exception or sat."""
    session, g, c, lo, hi = _problem(tmp_path, 1, 64, [32, 32], r=0.5)
    session.cfg = replace(session.cfg, bab=replace(session.cfg.bab, memory_mb=0.1))
    _, m = _ball_points(g, c, 0.5, lo, hi, 1, k=64, steps=50)
    t0 = time.monotonic()
    got = session.refute_in_ball(_query(lo, hi, float(m.min()) - 1e-4, 2), c, 0.5, Deadline(10))
    assert got.verdict is Verdict.UNKNOWN and "memory" in got.reason, (got.verdict, got.reason)
    assert time.monotonic() - t0 < 20.0


def test_audit_l2_radii_do_not_shrink_and_grow(digits, tmp_path, monkeypatch):
    """The audit's certified L2 radii with branch and bound over the ball against the same audit
    where nothing follows CROWN and alpha-CROWN: never smaller, larger on some sample, and not
    contradicted by onnxruntime at points sampled in the certified ball."""
    from verifier import pipeline
    from verifier.audit import audit
    from verifier.audit.queries import in_ball
    from verifier.verdict import Result

    kw = dict(norm="l2", input_range=(0, 1), methods=["formal"], timeout_per_sample=6, limit=4, progress=False)
    eps = ["0.1", "0.3", "0.6"]
    model = digits["digits_mlp"]
    new = audit(model, digits["digits_test"], eps, tmp_path / "new", **kw)
    monkeypatch.setattr(pipeline, "ball_bab", lambda *a: Result(Verdict.UNKNOWN))
    old = audit(model, digits["digits_test"], eps, tmp_path / "old", **kw)
    r_new = [s["formal"]["radius_lower"] for s in new.samples]
    r_old = [s["formal"]["radius_lower"] for s in old.samples]
    assert all(a >= b for a, b in zip(r_new, r_old)), (r_new, r_old)
    assert sum(r_new) > sum(r_old), (r_new, r_old)
    data = np.load(digits["digits_test"])
    proto = onnx.load(model)
    rng = np.random.default_rng(0)
    for s, r in zip(new.samples, r_new):
        if r <= 0:
            continue
        x0 = data["x"][s["index"]].astype(np.float64).reshape(-1)
        d = rng.normal(size=(200, x0.size))
        d *= r * rng.uniform(0.5, 1.0, size=(200, 1)) ** 0.1 / np.linalg.norm(d, axis=1, keepdims=True)
        pts = [p for p in np.clip(x0 + d, 0, 1).astype(np.float32) if in_ball(p, x0, repr(r), "l2", (0.0, 1.0))]
        assert len(pts) > 100
        labels = [int(np.argmax(run_onnxruntime(proto, p.reshape(1, -1)))) for p in pts]
        assert all(lab == s["label"] for lab in labels), s["index"]


def test_inputs_up_to_16_fall_back_on_boxes_where_activation_splitting_gives_up(tmp_path, monkeypatch):
    """When activation splitting cannot go on (Exhausted), an input of at most 16 elements is still
    proved by splitting its box over the ball."""
    from verifier import pipeline
    from verifier.bab import activation_split

    def exhausted(*args, **kwargs):
        raise activation_split.Exhausted("no nonlinearity of the network can be split")

    monkeypatch.setattr(activation_split, "activation_split_bab", exhausted)
    session, g, c, lo, hi = _problem(tmp_path, 8, 8, [16, 16], r=0.5)
    assert pipeline.BALL_SPLIT_MAX_DIM < g.input_size <= pipeline.BALL_SPLIT_FALLBACK_DIM
    _, m = _ball_points(g, c, 0.5, lo, hi, 8)
    bounds_only = _bounds_only(_problem(tmp_path, 8, 8, [16, 16], r=0.5)[0])
    for tau in (float(m.min()) - delta for delta in (0.1, 0.05, 0.02, 0.01)):
        if bounds_only.refute_in_ball(_query(lo, hi, tau, 2), c, 0.5, Deadline(20)).verdict is Verdict.UNSAT:
            continue                            # CROWN alone proves it: nothing left for the fallback
        got = session.refute_in_ball(_query(lo, hi, tau, 2), c, 0.5, Deadline(60))
        assert got.verdict is Verdict.UNSAT, (tau, got.verdict, got.reason)
        return
    pytest.skip("alpha-CROWN over the ball proves every threshold tried")
