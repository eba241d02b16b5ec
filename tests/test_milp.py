"""The big-M MILP (a candidate search) and the LP branch and bound that proves (verifier/lp/milp.py).

Oracle: the exact minimum t* = min over the box of max_q (C_q y(x) + d_q), from an enumeration of
every linear region of the network over the box, written here from the ONNX weights alone: a
depth-first walk over the neurons layer by layer, each neuron's sign range over the current
region from two scipy linprog calls (both signs possible: both children), then one linprog per
region for the conjunct.  Properties are placed at t* = f * scale for f in SHIFTS (scale: the
spread of sampled outputs), so that some are sat and some unsat, none closer to 0 than 0.003
scale.  On 2-input nets a dense grid checks the oracle itself.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from onnx import numpy_helper
from scipy.optimize import linprog

from helpers_nets import Builder, graph_of, one_torch_thread, random_mlp  # noqa: F401
from verifier.bounds.backward import activation_inputs, crown_intermediate
from verifier.budget import Deadline
from verifier.evaluate import forward
from verifier.lp import milp
from verifier.lp.relax import LPResult, certified_dual_bound

DT = torch.float64
SHIFTS = (-0.3, -0.03, -0.003, 0.003, 0.03, 0.3)
NETS = {  # n_in, hidden, n_out, box half-width
    "2-8-8-2": (2, [8, 8], 2, 0.5),
    "3-10-10-2": (3, [10, 10], 2, 0.4),
    "4-12-12-12-3": (4, [12, 12, 12], 3, 0.25),
}
INSTANCES = [("2-8-8-2", 0), ("2-8-8-2", 2), ("3-10-10-2", 1), ("3-10-10-2", 3), ("4-12-12-12-3", 1),
             ("4-12-12-12-3", 3)]   # 5 to 13 unstable ReLUs, 9 to 135 linear regions
_CACHE: dict = {}


# ---- the oracle ----------------------------------------------------------------------------------
def layers_of(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W (out, in), b) of every Gemm (transB=1), float64 from the float32 initialisers."""
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    return [(init[n.input[1]], init[n.input[2]]) for n in model.graph.node if n.op_type == "Gemm"]


def _lp(c, A, b, lo, hi):
    r = linprog(c, A_ub=A if len(b) else None, b_ub=b if len(b) else None, bounds=list(zip(lo, hi)),
                method="highs")
    assert r.status == 0, r.message
    return r


def regions(layers, lo, hi) -> list:
    """Every linear region of the ReLU MLP over the box: (A, b, P, q), the region {x in box:
    A x <= b} on which the output is P x + q."""
    out = []

    def layer(li, M, m, A, b):
        W, c = layers[li]
        P, q = W @ M, W @ m + c
        if li == len(layers) - 1:
            out.append((A, b, P, q))
        else:
            neuron(li, P, q, 0, A, b, np.zeros(P.shape[0]))

    def neuron(li, P, q, j, A, b, act):
        if j == P.shape[0]:
            layer(li + 1, act[:, None] * P, act * q, A, b)
            return
        mn = _lp(P[j], A, b, lo, hi).fun + q[j]
        mx = -_lp(-P[j], A, b, lo, hi).fun + q[j]
        signs = [1.0] if mn >= 0 else [0.0] if mx <= 0 else [1.0, 0.0]
        for s in signs:
            a2 = act.copy()
            a2[j] = s
            if len(signs) == 1:
                neuron(li, P, q, j + 1, A, b, a2)
            else:   # active: P_j x + q_j >= 0; inactive: <= 0
                row, rhs = (-P[j], q[j]) if s else (P[j], -q[j])
                neuron(li, P, q, j + 1, np.vstack([A, row[None]]), np.append(b, rhs), a2)

    n = lo.size
    layer(0, np.eye(n), np.zeros(n), np.zeros((0, n)), np.zeros(0))
    return out


def exact_min(regs, C, lo, hi) -> float:
    """min over the box of max_q C_q y (over (x, t): min t, C P x - t <= -C q, region rows)."""
    best = np.inf
    n = lo.size
    for A, b, P, q in regs:
        G = np.hstack([C @ P, -np.ones((C.shape[0], 1))])
        AA = np.vstack([G, np.hstack([A, np.zeros((A.shape[0], 1))])])
        r = _lp(np.append(np.zeros(n), 1.0), AA, np.concatenate([-(C @ q), b]),
                np.append(lo, -1e6), np.append(hi, 1e6))
        best = min(best, r.fun)
    return best


# ---- instances -----------------------------------------------------------------------------------
def instance(kind: str, seed: int) -> dict:
    key = (kind, seed)
    if key not in _CACHE:
        n_in, hidden, n_out, eps = NETS[kind]
        rng = np.random.default_rng(100 * seed + len(hidden))
        model = random_mlp(rng, n_in, hidden, n_out, ["Relu"])
        g = graph_of(model).to("cpu", DT)
        x0 = rng.standard_normal(n_in)
        lo, hi = x0 - eps, x0 + eps
        pre = crown_intermediate(g, *(torch.tensor(v).reshape(1, -1) for v in (lo, hi)))
        regs = regions(layers_of(model), lo, hi)
        xs = torch.tensor(rng.uniform(lo, hi, (2000, n_in)))
        ys = forward(g, xs).numpy()
        rows = [np.eye(n_out)[0] - np.eye(n_out)[1], rng.standard_normal((2, n_out))]
        conj = []
        for C in rows:
            C = np.atleast_2d(C)
            vals = (ys @ C.T).max(1)
            conj.append((C, exact_min(regs, C, lo, hi), float(vals.max() - vals.min()), float(vals.min())))
        _CACHE[key] = dict(model=model, g=g, lo=lo, hi=hi, pre=pre, regs=regs, conj=conj)
    return _CACHE[key]


def properties(inst):
    """(C, d, t*) with t* = f scale for f in SHIFTS (every row shifted alike: t* = m* + s)."""
    for C, m, scale, _ in inst["conj"]:
        for f in SHIFTS:
            s = f * scale - m
            yield C, np.full(C.shape[0], s), f * scale


def t_of(inst, x: np.ndarray, C, d) -> float:
    y = forward(inst["g"], torch.tensor(x).reshape(1, -1)).reshape(-1).numpy()
    return float((C @ y + d).max())


# ---- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,seed", INSTANCES)
def test_oracle_below_samples_and_nets_have_unstable_neurons(kind, seed):
    inst = instance(kind, seed)
    unstable = sum(int(((lo < 0) & (hi > 0)).sum()) for lo, hi in inst["pre"].values())
    assert unstable >= 4 and len(inst["regs"]) >= 4
    for C, m, scale, sample_min in inst["conj"]:
        assert m <= sample_min + 1e-9 * (1 + abs(m))
        assert sample_min - m <= 0.2 * scale


def test_oracle_matches_a_dense_grid_on_a_2_input_net():
    inst = instance("2-8-8-2", 0)
    u = np.linspace(0.0, 1.0, 401)
    X = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2) * (inst["hi"] - inst["lo"]) + inst["lo"]
    ys = forward(inst["g"], torch.tensor(X)).numpy()
    for C, m, scale, _ in inst["conj"]:
        grid = float((ys @ C.T).max(1).min())
        assert m <= grid + 1e-9 * (1 + abs(m))
        assert grid - m <= 0.01 * scale


@pytest.mark.parametrize("kind,seed", INSTANCES)
def test_milp_verdict_matches_the_exact_minimum(kind, seed):
    """(a) a candidate with t <= 0 exactly when t* < 0; (c) every such candidate meets the rows
    in the forward pass; solved to optimality, HiGHS's t is t* (the big-M encoding is exact)."""
    inst = instance(kind, seed)
    for C, d, t_star in properties(inst):
        r = milp.milp_search(inst["g"], inst["lo"], inst["hi"], inst["pre"], C, d, time_limit=20)
        assert r.exact
        assert r.claims_violation == (t_star < 0), (t_star, r)
        if r.claims_violation:
            x = r.candidate
            assert ((inst["lo"] <= x) & (x <= inst["hi"])).all()
            assert t_of(inst, x, C, d) <= 1e-6
    for C, m, scale, _ in inst["conj"]:
        r = milp.milp_search(inst["g"], inst["lo"], inst["hi"], inst["pre"], C, np.zeros(C.shape[0]),
                             time_limit=20, stop_at_violation=False)
        assert r.status == "Optimal"
        assert abs(r.objective - m) <= 1e-4 * (1 + abs(m)) + 1e-6
        assert abs(t_of(inst, r.candidate, C, np.zeros(C.shape[0])) - m) <= 1e-4 * (1 + abs(m)) + 1e-6


@pytest.mark.parametrize("kind,seed", INSTANCES)
def test_lp_branch_and_bound_proves_exactly_the_unsat_ones(kind, seed):
    """(b) proved True iff t* > 0 (all margins here >= 0.003 scale); a violation comes with an
    input that violates in the forward pass."""
    inst = instance(kind, seed)
    for C, d, t_star in properties(inst):
        b = milp.lp_branch_and_bound(inst["g"], inst["lo"], inst["hi"], inst["pre"], C, d,
                                     time_limit=30, max_nodes=5000)
        if t_star > 0:
            assert b.proved is True, (t_star, b)
        else:
            assert b.proved is False, (t_star, b)
            assert ((inst["lo"] <= b.candidate) & (b.candidate <= inst["hi"])).all()
            assert t_of(inst, b.candidate, C, d) <= 0


def test_member_rows_select_the_conjunct():
    inst = instance("3-10-10-2", 0)
    C2, m2, scale, _ = inst["conj"][1]
    C = np.vstack([C2, np.ones((1, C2.shape[1]))])
    d = np.array([0.1 * scale - m2, 0.1 * scale - m2, -1e6])   # row 2 holds everywhere
    for member in (np.array([True, True, False]), np.array([0, 1])):
        b = milp.lp_branch_and_bound(inst["g"], inst["lo"], inst["hi"], inst["pre"], C, d, member_rows=member)
        assert b.proved is True
    r = milp.milp_search(inst["g"], inst["lo"], inst["hi"], inst["pre"], C, d - 0.2 * scale,
                         member_rows=np.array([True, True, False]))
    assert r.claims_violation


# ---- (d) an infeasible node closes through a certificate only ------------------------------------
def _contradiction():
    """1 input in [-1, 1]; ReLU inputs p1 = x, p2 = -x - 0.1: both active is impossible, though
    each one's box allows it."""
    b = Builder()
    h = b.op("Relu", [b.op("Gemm", ["x", b.const([[1.0], [-1.0]]), b.const([0.0, -0.1])], transB=1)])
    m = b.finish("x", [1, 1], b.op("Gemm", [h, b.const([[1.0, 1.0]]), b.const([0.0])], transB=1))
    g = graph_of(m).to("cpu", DT)
    lo, hi = np.array([-1.0]), np.array([1.0])
    pre = crown_intermediate(g, torch.tensor([[-1.0]], dtype=DT), torch.tensor([[1.0]], dtype=DT))
    return g, lo, hi, pre, activation_inputs(g)[0].name


def test_an_infeasible_node_is_closed_by_its_dual_ray_certified():
    g, lo, hi, pre, name = _contradiction()
    # y <= 10 holds everywhere (y <= 1): only the node's emptiness can close it
    q = milp.search_of(g, lo, hi, pre, np.array([[1.0]]), np.array([-10.0]))
    both = {name: np.array([1, 1], dtype=np.int8)}
    nb = milp.PhaseLP(q).bound(both, Deadline(10))
    assert nb.status == "Infeasible" and nb.how == "ray" and nb.bound > 0
    assert certified_dual_bound(nb.problem, nb.lam, nb.mu) == nb.bound   # rebuilt from what it returns


def test_an_infeasible_status_alone_closes_nothing(monkeypatch):
    g, lo, hi, pre, name = _contradiction()
    q = milp.search_of(g, lo, hi, pre, np.array([[1.0]]), np.array([-10.0]))
    monkeypatch.setattr(milp, "_ray_bound", lambda model, p: (-np.inf, None, None))
    nb = milp.PhaseLP(q).bound({name: np.array([1, 1], dtype=np.int8)}, Deadline(10))
    assert nb.status == "Infeasible" and not nb.bound > 0
    # a solver that reports INFEASIBLE everywhere (no multipliers) proves nothing
    monkeypatch.setattr(milp.PhaseLP, "_solve", lambda self, p, active, inactive, seconds, basis=None:
                        (LPResult(-np.inf, float("nan"), "Infeasible", None, None), None, None))
    inst = instance("2-8-8-2", 0)
    C, d, t_star = next(p for p in properties(inst) if p[2] > 0)
    b = milp.lp_branch_and_bound(inst["g"], inst["lo"], inst["hi"], inst["pre"], C, d, time_limit=10, max_nodes=50)
    assert b.proved is None


# ---- (e) time limits -----------------------------------------------------------------------------
def _hard():
    rng = np.random.default_rng(5)
    g = graph_of(random_mlp(rng, 10, [40, 40], 2, ["Relu"])).to("cpu", DT)
    x0 = rng.standard_normal(10)
    lo, hi = x0 - 0.3, x0 + 0.3
    pre = crown_intermediate(g, *(torch.tensor(v).reshape(1, -1) for v in (lo, hi)))
    # min of y0 - y1 over the box is -2.4742 (HiGHS, to optimality): t* = +0.01 needs ~600 nodes
    return g, lo, hi, pre, np.array([[1.0, -1.0]]), np.array([2.4842])


def test_time_limits_are_honoured():
    g, lo, hi, pre, C, d = _hard()
    t0 = time.monotonic()
    b = milp.lp_branch_and_bound(g, lo, hi, pre, C, d, time_limit=0.5)
    assert b.proved is None and b.why == "time limit"
    assert time.monotonic() - t0 < 1.5
    b = milp.lp_branch_and_bound(g, lo, hi, pre, C, d, time_limit=60, max_nodes=5)
    assert b.proved is None and b.why == "node limit" and b.nodes == 5
    t0 = time.monotonic()
    r = milp.milp_search(g, lo, hi, pre, C, d, time_limit=0.2, stop_at_violation=False)
    assert r.status == "Time limit reached" and not r.claims_violation
    assert time.monotonic() - t0 < 1.5


def test_leaky_relu_kinks_are_exact():
    """LeakyRelu (a = 0.01, the kink's other piece): HiGHS's optimum against a dense grid (the
    grid's spacing costs at most 0.01 scale here), then both searches on either side of it."""
    rng = np.random.default_rng(7)
    g = graph_of(random_mlp(rng, 2, [8, 8], 2, ["LeakyRelu"])).to("cpu", DT)
    lo, hi = np.array([-0.6, 0.1]), np.array([0.4, 1.1])
    pre = crown_intermediate(g, *(torch.tensor(v).reshape(1, -1) for v in (lo, hi)))
    C = np.array([[1.0, -1.0]])
    u = np.linspace(0.0, 1.0, 401)
    X = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2) * (hi - lo) + lo
    vals = forward(g, torch.tensor(X)).numpy() @ C[0]
    grid, scale = float(vals.min()), float(vals.max() - vals.min())
    r = milp.milp_search(g, lo, hi, pre, C, np.zeros(1), stop_at_violation=False)
    assert r.exact and r.objective <= grid + 1e-6 and grid - r.objective <= 0.01 * scale
    for f in (-0.02, 0.02):
        d = np.array([f * scale - r.objective])
        b = milp.lp_branch_and_bound(g, lo, hi, pre, C, d)
        assert b.proved is (f > 0)
        assert milp.milp_search(g, lo, hi, pre, C, d).claims_violation is (f < 0)


def test_leaky_relu_kinks_of_a_float_model_carry_its_rounding():
    """The same net as a float32 model: each kink's rows carry its rounding per element (u |a x|),
    so the relaxation's optimum is no higher than the real one, and both searches still decide
    margins far above that rounding."""
    import dataclasses

    rng = np.random.default_rng(7)
    real = graph_of(random_mlp(rng, 2, [8, 8], 2, ["LeakyRelu"])).to("cpu", DT)
    g = dataclasses.replace(real, float_model=torch.float32)
    lo, hi = np.array([-0.6, 0.1]), np.array([0.4, 1.1])
    box = [torch.tensor(v).reshape(1, -1) for v in (lo, hi)]
    pre_real, pre = crown_intermediate(real, *box), crown_intermediate(g, *box)
    C = np.array([[1.0, -1.0]])
    r_real = milp.milp_search(real, lo, hi, pre_real, C, np.zeros(1), stop_at_violation=False)
    r = milp.milp_search(g, lo, hi, pre, C, np.zeros(1), stop_at_violation=False)
    assert r.objective < r_real.objective and r_real.objective - r.objective < 1e-4
    scale = 1.0 + abs(r_real.objective)
    for f in (-0.02, 0.02):
        d = np.array([f * scale - r_real.objective])
        assert milp.lp_branch_and_bound(g, lo, hi, pre, C, d).proved is (f > 0)
        assert milp.milp_search(g, lo, hi, pre, C, d).claims_violation is (f < 0)


def test_other_activations_are_refused_or_relaxed():
    rng = np.random.default_rng(3)
    g = graph_of(random_mlp(rng, 3, [6, 6], 2, ["Relu", "Sigmoid"])).to("cpu", DT)
    lo, hi = -np.ones(3), np.ones(3)
    pre = crown_intermediate(g, *(torch.tensor(v).reshape(1, -1) for v in (lo, hi)))
    C, d = np.array([[1.0, -1.0]]), np.array([0.0])
    with pytest.raises(milp.MilpError, match="Sigmoid"):
        milp.milp_search(g, lo, hi, pre, C, d)
    r = milp.milp_search(g, lo, hi, pre, C, d, relax_others=True, stop_at_violation=False)
    assert not r.exact and r.status == "Optimal"
    xs = torch.tensor(np.random.default_rng(0).uniform(lo, hi, (2000, 3)))
    ys = forward(g, xs).numpy()
    assert r.objective <= float((ys @ C.T).min()) + 1e-6   # a relaxation: never above the samples
