"""Memory that grows with the property's rows, never with rows times conjuncts (issue 16).

Cases keep one conjunct index per row (Cases.conj); every per-conjunct question is a segment
reduction over it.  The reductions must say what the dense (K, J, Q) membership said, on random
layouts (padding rows, rows left out, conjuncts without rows, invalid conjuncts, NaN and infinite
bounds, strict rows).  Bounding passes go over the rows in blocks sized from a memory budget and
must give the bounds of one pass.  A query whose rows do not fit even one at a time is unknown,
and a million disjuncts are decided within --memory-mb.
"""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from verifier.attack import conjunct_cases
from verifier.bab.domains import weakest_open_bound
from verifier.budget import Deadline, OutOfMemory
from verifier.config import AlphaConfig, BabConfig, VerifyConfig
from verifier.incomplete import (alpha_crown_lower, alpha_pair_bytes, case_bytes, crown_lower, crown_pair_bytes,
                                 ibp_lower, output_lower)
from verifier.onnx_import import to_graph
from verifier.spec import Cases, conjuncts_refuted, open_rows, refuted, violation, violation_point_bytes

from conftest import ROOT, run_cli
from helpers_nets import random_mlp

DT = torch.float64


def random_cases(rng: np.random.Generator, n_out: int = 3, K: int | None = None) -> Cases:
    """K cases, each a random number of conjuncts (some without rows, some invalid) whose rows
    lie in random order among padding rows and rows left out (conj -1)."""
    K = K or int(rng.integers(1, 5))
    J = int(rng.integers(1, 6))
    per = [[int(rng.integers(0, 4)) for _ in range(J)] for _ in range(K)]
    Q = max(1, max(sum(p) for p in per) + int(rng.integers(0, 4)))
    conj = np.full((K, Q), -1, dtype=np.int64)
    valid = rng.uniform(size=(K, J)) < 0.85
    for k in range(K):
        labels = np.concatenate([np.full(n, j) for j, n in enumerate(per[k])] + [np.full(Q - sum(per[k]), -1)])
        conj[k] = rng.permutation(labels)
        if rng.uniform() < 0.5:     # a row left out of its conjunct (a float32 row that does not fit)
            conj[k, rng.integers(Q)] = -1
    C = torch.as_tensor(rng.normal(size=(K, Q, n_out)))
    d = torch.as_tensor(rng.normal(size=(K, Q)))
    strict = torch.as_tensor(rng.uniform(size=(K, Q)) < 0.3)
    lo = torch.as_tensor(rng.uniform(-1, 0, size=(K, 2)))
    return Cases(lo, lo + 1, C, d, torch.as_tensor(conj), torch.as_tensor(valid), np.arange(K), strict)


def dense_member(cs: Cases) -> torch.Tensor:
    """The old representation: member[k, j, r], row r belongs to conjunct j of case k."""
    J = cs.valid.shape[1]
    return cs.conj.unsqueeze(1) == torch.arange(J).reshape(1, J, 1)


# the old semantics, as spec.py computed them from the dense membership
def old_conjuncts_refuted(cs: Cases, lb: torch.Tensor, tol: float) -> torch.Tensor:
    above = (lb > tol) if cs.strict is None else ((lb > tol) | (cs.strict & (lb >= tol)))
    ok = torch.isfinite(lb) & above
    return (dense_member(cs) & ok.unsqueeze(1)).any(-1)


def old_refuted(cs: Cases, lb: torch.Tensor, tol: float) -> torch.Tensor:
    return (old_conjuncts_refuted(cs, lb, tol) | ~cs.valid).all(-1)


def old_violation(cs: Cases, y: torch.Tensor) -> torch.Tensor:
    rows = torch.einsum("kqn,krn->krq", cs.C, y) + cs.d.unsqueeze(1)
    per_conj = torch.where(dense_member(cs).unsqueeze(1), rows.unsqueeze(2), -torch.inf).amax(-1)
    return torch.where(cs.valid.unsqueeze(1), per_conj, torch.inf).amin(-1)


def old_weakest(cs: Cases, lb: torch.Tensor) -> torch.Tensor:
    per_conj = torch.where(dense_member(cs), lb.unsqueeze(1), -torch.inf).amax(-1)
    return torch.where(cs.valid, per_conj, torch.inf).amin(-1)


def random_bounds(rng: np.random.Generator, shape) -> torch.Tensor:
    pool = np.array([0.0, -0.0, 1e-300, -1e-300, 1.0, -1.0, math.inf, -math.inf, math.nan])
    lb = np.where(rng.uniform(size=shape) < 0.4, rng.choice(pool, size=shape), rng.normal(size=shape))
    return torch.as_tensor(lb)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_conjunct_reductions_match_the_dense_membership(seed):
    rng = np.random.default_rng(seed)
    cs = random_cases(rng)
    lb = random_bounds(rng, tuple(cs.d.shape))
    for tol in (0.0, 1e-300):
        assert torch.equal(conjuncts_refuted(cs, lb, tol), old_conjuncts_refuted(cs, lb, tol))
        assert torch.equal(refuted(cs, lb, tol), old_refuted(cs, lb, tol))
        plain = Cases(cs.lo, cs.hi, cs.C, cs.d, cs.conj, cs.valid, cs.case)          # no strict rows
        assert torch.equal(refuted(plain, lb, tol), old_refuted(plain, lb, tol))
    assert torch.allclose(weakest_open_bound(cs, lb), old_weakest(cs, lb), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(open_rows(cs), (dense_member(cs) & cs.valid.unsqueeze(-1)).any(1))
    y = torch.as_tensor(rng.normal(size=(len(cs), 7, cs.C.shape[2])))
    y[0, 0, 0] = math.nan if rng.uniform() < 0.3 else y[0, 0, 0]
    want = old_violation(cs, y)
    assert torch.allclose(violation(cs, y), want, rtol=1e-12, atol=1e-12, equal_nan=True)
    K, Q, J = len(cs), cs.C.shape[1], cs.valid.shape[1]
    three = K * (32 * Q + 8 * J) + 3 * violation_point_bytes(cs, 8)       # three points at a time
    assert torch.allclose(violation(cs, y, three), want, rtol=1e-12, atol=1e-12, equal_nan=True)
    with pytest.raises(OutOfMemory):
        violation(cs, y, 1)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_one_case_per_conjunct_keeps_that_conjuncts_rows(seed):
    """The attack's per-conjunct cases: case s violates exactly where its owner's conjunct does."""
    rng = np.random.default_rng(seed)
    cs = random_cases(rng)
    sub, owner = conjunct_cases(cs)
    assert len(sub) == int(cs.valid.sum()) and sub.valid.shape[1] == 1
    y = torch.as_tensor(rng.normal(size=(len(cs), 5, cs.C.shape[2])))
    member = dense_member(cs)
    _, j = cs.valid.nonzero(as_tuple=True)
    rows = torch.einsum("kqn,krn->krq", cs.C, y) + cs.d.unsqueeze(1)
    for s in range(len(sub)):
        k = int(owner[s])
        want = torch.where(member[k, j[s]], rows[k], -torch.inf).amax(-1)        # (R,)
        assert torch.allclose(violation(sub, y[owner])[s], want, rtol=1e-12, atol=1e-12)
        assert int((sub.conj[s] == 0).sum()) == int(member[k, j[s]].sum())


def _net_and_cases(seed: int, K: int = 3, Q: int = 40):
    rng = np.random.default_rng(seed)
    graph = to_graph(random_mlp(rng, 4, [16, 16], 3, ["Relu"]))
    lo = torch.as_tensor(rng.uniform(-1, 0, size=(K, 4)))
    hi = lo + torch.as_tensor(rng.uniform(0.1, 1.0, size=(K, 4)))
    C = torch.as_tensor(rng.normal(size=(K, Q, 3)))
    conj = torch.as_tensor(np.sort(rng.integers(0, 8, size=(K, Q)), axis=1))
    cs = Cases(lo, hi, C, torch.as_tensor(rng.normal(size=(K, Q))), conj, torch.ones((K, 8), dtype=torch.bool),
               np.arange(K))
    return graph, cs


@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_in_blocks_equal_one_pass(seed):
    """IBP, CROWN (with the input coefficients it records) and alpha-CROWN over blocks of rows,
    and of subproblems, give the bounds of one pass over everything."""
    graph, cs = _net_and_cases(seed)
    case, pair = case_bytes(graph, 8), crown_pair_bytes(graph, 8)
    record: dict = {}
    lb, pre = crown_lower(graph, cs, record=record)
    whole = ibp_lower(graph, cs)
    # all cases with their rows in blocks; one case at a time (its rows in blocks)
    for memory in (6 * (case + pair), 2 * (case + pair)):
        rec: dict = {}
        got, got_pre = crown_lower(graph, cs, record=rec, memory=memory)
        assert torch.allclose(got, lb, rtol=1e-12, atol=1e-12)
        assert all(torch.allclose(got_pre[k][i], pre[k][i], rtol=1e-12, atol=1e-12) for k in pre for i in (0, 1))
        assert torch.allclose(rec[graph.input_name], record[graph.input_name], rtol=1e-12, atol=1e-12)
        assert torch.allclose(ibp_lower(graph, cs, memory=memory), whole, rtol=1e-12, atol=1e-12)
    one_row = case + pair + pair // 2                  # one row of one case at a time
    assert torch.allclose(output_lower(graph, cs, pre, one_row), output_lower(graph, cs, pre), rtol=1e-12, atol=1e-12)
    with pytest.raises(OutOfMemory):
        output_lower(graph, cs, pre, memory=case)
    # alpha-CROWN: each row's slopes are its own, so blocks change nothing (no case gets refuted
    # here, which would stop the optimisation early)
    far = Cases(cs.lo, cs.hi, cs.C, cs.d - 1e3, cs.conj, cs.valid, cs.case)
    cfg = AlphaConfig(iterations=5)
    keep_one: dict = {}
    one = alpha_crown_lower(graph, far, pre, cfg, Deadline(600), 0.0, keep=keep_one)
    keep_blocks: dict = {}
    apair = alpha_pair_bytes(graph, 8)
    blocks = alpha_crown_lower(graph, far, pre, cfg, Deadline(600), 0.0, memory=3 * (case + apair) + 6 * apair,
                               keep=keep_blocks)
    assert torch.allclose(blocks, one, rtol=1e-9, atol=1e-9)
    assert keep_blocks["slopes"].keys() == keep_one["slopes"].keys()
    for key, v in keep_one["slopes"].items():
        assert torch.allclose(keep_blocks["slopes"][key], v, rtol=1e-9, atol=1e-9)


def test_alpha_blocks_skip_rows_that_cannot_matter(monkeypatch):
    """With a prior bound that refutes most conjuncts, blocks holding only their rows are not
    optimised and keep the prior; the result is never below it."""
    import verifier.incomplete as incomplete

    graph, cs = _net_and_cases(2, K=1, Q=60)
    low = cs.conj < 6                                 # conjuncts 0..5: far above 0, refuted by CROWN
    cs = Cases(cs.lo, cs.hi, cs.C, torch.where(low, cs.d + 1e3, cs.d - 1e3), cs.conj, cs.valid, cs.case)
    prior, pre = crown_lower(graph, cs)
    assert (prior[low] > 0).all() and (prior[~low] < 0).all()
    seen: list[torch.Tensor] = []

    def counting(graph, lo, hi, C, *args, **kw):
        seen.append(C)
        return real(graph, lo, hi, C, *args, **kw)

    real = incomplete.alpha_lower
    monkeypatch.setattr(incomplete, "alpha_lower", counting)
    memory = case_bytes(graph, 8) + 20 * alpha_pair_bytes(graph, 8)      # 20 rows at a time
    out = alpha_crown_lower(graph, cs, pre, AlphaConfig(iterations=3), Deadline(600), 0.0, memory=memory,
                            prior=prior)
    assert (out >= prior).all()
    assert 0 < sum(C.shape[1] for C in seen) < cs.C.shape[1]


MODEL_ARGS = ("--timeout", "120", "-q")


def _many_rows_query(path: Path, n: int, threshold: float = 1000.0) -> Path:
    """Five bounded inputs, and the disjunction of n rows Y_(i mod 5) >= threshold + i / 1000."""
    lines = [f"(declare-const X_{i} Real)" for i in range(5)] + [f"(declare-const Y_{i} Real)" for i in range(5)]
    lines += [f"(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))" for i in range(5)]
    rows = " ".join(f"(and (>= Y_{i % 5} {threshold + i * 1e-3:.4f}))" for i in range(n))
    lines.append(f"(assert (or {rows}))")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rows_over_the_budget_are_unknown_not_an_error(tmp_path, examples):
    """A budget that cannot hold one row of the property: unknown, status 0, the reason on stderr
    (also under -q)."""
    spec = _many_rows_query(tmp_path / "p.vnnlib", 2000)
    r = run_cli("verify", spec, "--network", f"N={examples / 'onnx' / 'acas_like.onnx'}", *MODEL_ARGS,
                "--memory-mb", "0.01")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "unknown"
    assert "out of memory" in r.stderr and "internal error" not in r.stderr
    import verifier

    cfg = VerifyConfig(timeout_s=60, bab=BabConfig(memory_mb=0.01))
    res = verifier.verify(examples / "onnx" / "acas_like.onnx", spec, timeout=60, config=cfg)
    assert res.verdict.value == "unknown" and "memory" in res.reason


# the engine's own peak: parse, load torch and the model (a first query), then reset the
# process's peak resident memory (Linux: /proc/self/clear_refs) and decide the big query
ENGINE_PEAK = textwrap.dedent("""
    import gc, sys, time
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    path, model, warm, mb = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    import vnnlib
    prop = vnnlib.parse_file(path)
    gc.collect()
    parse_peak, held = status("VmHWM"), status("VmRSS")
    import verifier
    from verifier.config import BabConfig, VerifyConfig
    cfg = VerifyConfig(timeout_s=120, bab=BabConfig(memory_mb=mb))
    verifier.verify(model, warm, timeout=60, config=cfg)
    gc.collect()
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t = time.monotonic()
    r = verifier.verify(model, path, timeout=120, config=cfg, prop=prop)
    print(r.verdict.value, parse_peak, held, before, status("VmHWM") - before, time.monotonic() - t)
""")

PEAK_OF_CHILD = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); "
                 "print(r.stdout, end='')")


def _peak(*cmd) -> tuple[int, int, str]:
    """(status, peak resident bytes, stdout) of cmd, run as the only child of a fresh process."""
    out = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *map(str, cmd)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600).stdout
    head, _, rest = out.partition("\n")
    code, peak = map(int, head.split())
    return code, peak, rest


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_a_million_disjuncts_fit_the_memory_budget(tmp_path, examples):
    """The query of issue 16 (10^6 disjuncts, each unreachable: the outputs stay far below 1000)
    is unsat under --memory-mb 300.  What the engine adds, once the query is parsed and torch and
    the model are loaded, stays within the budget (plus 64 MB for what the allocator keeps);
    the command's peak stays within the parse's peak, or what the parsed query holds plus a
    small query's peak plus the budget (the parser is not under the budget)."""
    budget = 300 * 2 ** 20
    slack = 64 * 2 ** 20
    model = examples / "onnx" / "acas_like.onnx"
    small = examples / "vnnlib" / "acas_like_unsat.vnnlib"
    spec = _many_rows_query(tmp_path / "million.vnnlib", 1_000_000)
    run = subprocess.run([sys.executable, "-c", ENGINE_PEAK, spec, model, small, "300"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    verdict, parse_peak, held, before, engine, seconds = run.stdout.split()
    assert verdict == "unsat", run.stderr[-2000:]
    assert int(engine) <= budget + slack, f"the engine added {int(engine) / 2 ** 20:.0f} MB over a 300 MB budget"

    code, baseline, out = _peak(sys.executable, "-m", "verifier", "verify", small, "--network", f"N={model}",
                                *MODEL_ARGS)
    assert code == 0 and out.splitlines()[0] == "unsat"
    code, peak, out = _peak(sys.executable, "-m", "verifier", "verify", spec, "--network", f"N={model}",
                            *MODEL_ARGS, "--memory-mb", "300")
    assert code == 0 and out.splitlines()[0] == "unsat", out
    bound = max(int(parse_peak), int(held) + baseline + budget) + slack
    assert peak <= bound, f"peak {peak / 2 ** 20:.0f} MB over {bound / 2 ** 20:.0f} MB"
