"""Branch and bound decides tiny networks exactly: properties with a known answer.

For a random 2-input ReLU network, a dense grid gives max of y0 - y1 up to the grid spacing
times a Lipschitz constant (product of the layers' spectral norms).  A threshold above that
bound is unsat, one below a grid value is sat; both BaB strategies (input splits and ReLU splits)
must answer exactly that: never the opposite, and not unknown either (they are complete here).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings, strategies as st

import verifier
from verifier.bab.activation_split import Domains, _intermediate
from verifier.bounds.backward import crown_intermediate
from verifier.budget import Deadline
from verifier.config import BabConfig, VerifyConfig
from verifier.evaluate import forward
from verifier.lp.leaf import leaf_bound
from verifier.onnx_import import to_graph
from verifier.verdict import Verdict

from conftest import run_cli
from helpers_nets import random_mlp
from types import SimpleNamespace


def _spec(threshold: float) -> str:
    """Violation: y0 - y1 >= threshold over x in [-1, 1]^2."""
    return ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
            "(assert (>= X_0 -1.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 -1.0))\n(assert (<= X_1 1.0))\n"
            f"(assert (>= (- Y_0 Y_1) {float(threshold)!r}))\n")


def _grid_max_and_slack(model: onnx.ModelProto, n: int = 401) -> tuple[float, float]:
    g = to_graph(model)
    t = np.linspace(-1.0, 1.0, n)
    xs = torch.as_tensor(np.stack(np.meshgrid(t, t), -1).reshape(-1, 2), dtype=torch.float64)
    y = forward(g, xs).reshape(-1, 2)
    diff = (y[:, 0] - y[:, 1]).max().item()
    lip = np.sqrt(2.0)  # |y0 - y1| has gradient (1, -1) at the output
    for node in g.nodes:
        if "W" in node.params:
            lip *= np.linalg.norm(node.params["W"].numpy(), 2)
    h = 2.0 / (n - 1)
    return diff, lip * h * np.sqrt(2) / 2


def _verify(tmp_path, model, threshold, split_dim: int, timeout: float = 60.0):
    onnx_path, spec = tmp_path / "net.onnx", tmp_path / "p.vnnlib"
    onnx.save(model, onnx_path)
    spec.write_text(_spec(threshold))
    cfg = VerifyConfig(timeout_s=timeout, bab=BabConfig(input_split_max_dim=split_dim))
    return verifier.verify(onnx_path, spec, timeout=timeout, config=cfg)


@pytest.mark.parametrize("split_dim", [64, 0], ids=["input-split", "relu-split"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bab_answers_known_properties(tmp_path, seed, split_dim):
    model = random_mlp(np.random.default_rng(seed), 2, [8, 8], 2, ["Relu"])
    top, slack = _grid_max_and_slack(model)
    unsat = _verify(tmp_path, model, top + slack + 1e-3, split_dim)
    assert unsat.verdict is Verdict.UNSAT, (unsat.verdict, unsat.reason)
    sat = _verify(tmp_path, model, top - 1e-3, split_dim)
    assert sat.verdict is Verdict.SAT, (sat.verdict, sat.reason)
    assert sat.x is not None and np.all(np.abs(sat.x) <= 1.0) and sat.y[0] - sat.y[1] >= top - 1e-3


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 8))
def test_lp_leaf_bound_is_below_every_point(seed, m, n):
    rng = np.random.default_rng(seed)
    G, g = rng.normal(size=(m, n)), rng.normal(size=m)
    lo = rng.uniform(-2, 0, size=n)
    hi = lo + rng.uniform(0, 2, size=n)
    bound, x = leaf_bound(G, g, lo, hi)
    xs = lo + (hi - lo) * rng.uniform(size=(2000, n))
    corners = np.where(rng.integers(0, 2, size=(64, n)) > 0, lo, hi)
    values = (np.vstack([xs, corners]) @ G.T + g).max(-1)
    assert bound <= values.min() + 1e-12
    if x is not None:  # the LP optimum itself is a point of the box, and the bound is tight to it
        assert np.all(x >= lo - 1e-9) and np.all(x <= hi + 1e-9)
        assert bound <= (G @ x + g).max() + 1e-9
        assert (G @ x + g).max() - bound < 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_relu_split_recomputes_only_stale_bounds_to_the_same_values(seed):
    """A child differs from its parent by one split: recomputing only the activations after
    it gives the bounds a full recomputation gives."""
    rng = np.random.default_rng(seed)
    g = to_graph(random_mlp(rng, 3, [12, 12, 12, 12], 2, ["Relu"]))
    B = 4
    lo = torch.as_tensor(rng.uniform(-1, 0, size=(1, 3))).repeat(B, 1)
    hi = lo + 1.0
    parent = crown_intermediate(g, lo, hi)
    names = list(parent)
    splits = {k: torch.zeros(v[0].shape, dtype=torch.int8) for k, v in parent.items()}
    fresh = torch.zeros(B, dtype=torch.long)
    for b in range(B):  # each domain: one split in a different layer, on an unstable neuron
        layer = b % len(names)
        plo, phi = parent[names[layer]]
        unstable = ((plo[b] < 0) & (phi[b] > 0)).nonzero().flatten()
        if unstable.numel():
            splits[names[layer]][b, unstable[0]] = 1 if b % 2 else -1
        fresh[b] = layer + 1
    d = Domains(SimpleNamespace(lo=lo, hi=hi), splits, parent, None, fresh)
    q = SimpleNamespace(graph=g, deadline=Deadline(60))
    partial = _intermediate(q, d)
    full = _intermediate(q, Domains(d.cs, splits, parent, None, None))
    for k in names:
        for a, b in zip(partial[k], full[k]):
            assert torch.allclose(a, b, rtol=0, atol=1e-12), k


class _Run:
    """A stand-in domain batch: a run of labelled domains."""

    def __init__(self, labels):
        self.labels = list(labels)

    def __len__(self):
        return len(self.labels)

    def take(self, idx):
        return _Run([self.labels[i] for i in idx])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=6), st.integers(1, 30))
def test_pop_batch_takes_the_newest_domains_in_order(sizes, size):
    from verifier.bab.domains import pop_batch

    stack, n = [], 0
    for k in sizes:
        stack.append(_Run(range(n, n + k)))
        n += k
    join = lambda parts: _Run([x for p in parts for x in p.labels])
    queued, batch, rest = pop_batch(stack, size, join)
    assert queued == n
    taken = min(size, n)
    assert batch.labels == list(range(n - taken, n))  # the newest, in their order
    assert [x for p in rest for x in p.labels] == list(range(n - taken))  # the rest, untouched
    assert sum(len(p) for p in stack) == n  # the caller's stack list is not consumed


def test_fit_memory_drops_the_oldest_warm_starts_first():
    from verifier.bab.activation_split import _fit_memory

    def part():
        return Domains(SimpleNamespace(), {"a": torch.zeros(10, dtype=torch.int8)}, None,
                       {"slopes": {"a": torch.zeros(100)}, "betas": {}})

    stack = [part(), part(), part()]  # 410 bytes each, 400 of them warm starts
    assert _fit_memory(stack, 1230)
    assert all(p.warm is not None for p in stack)
    assert _fit_memory(stack, 900)
    assert stack[0].warm is None and stack[1].warm is not None and stack[2].warm is not None
    assert not _fit_memory(stack, 20)  # even without warm starts 30 bytes stay
    assert all(p.warm is None for p in stack)


def _unsat_by_branching(tmp_path) -> tuple:
    """A query BaB proves unsat (the threshold sits above the grid maximum plus its slack):
    (model path, spec path)."""
    model = random_mlp(np.random.default_rng(3), 2, [8, 8], 2, ["Relu"])
    top, slack = _grid_max_and_slack(model)
    onnx.save(model, tmp_path / "net.onnx")
    (tmp_path / "p.vnnlib").write_text(_spec(top + slack + 1e-3))
    return tmp_path / "net.onnx", tmp_path / "p.vnnlib"


@pytest.mark.parametrize("split_dim", [64, 0], ids=["input-split", "relu-split"])
def test_bab_over_its_memory_budget_answers_unknown(tmp_path, split_dim):
    net, spec = _unsat_by_branching(tmp_path)
    for mb, expected in ((0.0, Verdict.UNSAT), (1e-4, Verdict.UNKNOWN)):
        cfg = VerifyConfig(timeout_s=60, bab=BabConfig(input_split_max_dim=split_dim, memory_mb=mb))
        r = verifier.verify(net, spec, timeout=60, config=cfg)
        assert r.verdict is expected, (mb, r.verdict, r.reason)
        if expected is Verdict.UNKNOWN:
            assert "memory" in r.reason


def test_memory_cap_from_the_command_line(tmp_path):
    """`verify --memory-mb` reaches the search: the same query is unsat without a cap and unknown
    (with exit status 0, as the standard asks for a verdict) under a cap no domain fits in."""
    net, spec = _unsat_by_branching(tmp_path)
    args = ["verify", spec, "--network", f"N={net}", "--timeout", "60", "-q"]
    for extra, expected in (([], "unsat"), (["--memory-mb", "0.0001"], "unknown")):
        r = run_cli(*args, *extra)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == expected, (extra, r.stdout, r.stderr)
