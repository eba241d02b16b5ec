"""Branch and bound over general nonlinearities (issue 14): splits of Sigmoid, Tanh and mixed
networks, decided exactly.

The unsat oracle is complete and independent of the verifier: interval bisection of the input
box in mpmath's interval arithmetic (every weight is a float32, read exactly), so "no input
reaches the threshold" is proved, not sampled.  The relaxations on split intervals are checked
against mpmath at the points where the gap between f and a plane is smallest: the ends and
the points where f' equals the plane's slope (in closed form for Sigmoid and Tanh).
"""
from __future__ import annotations

import math

import mpmath
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import verifier
from verifier.bounds.backward import crown_intermediate, crown_output
from verifier.config import BabConfig, VerifyConfig
from verifier.evaluate import forward
from verifier.ir import Graph
from verifier.onnx_import import to_graph
from verifier.ops import RULES
from verifier.ops.split import sampled_gain, slack
from verifier.verdict import Verdict

from helpers_nets import random_mlp

F64 = torch.float64


# --------------------------------------------------------------------------- the exact oracle
def _layers(model: onnx.ModelProto) -> list:
    """[(W, b, act)] of a random_mlp model: Gemm (transB) layers, each followed by an
    activation or (the last) by nothing; weights as exact mpmath numbers."""
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out, nodes = [], list(model.graph.node)
    for i, n in enumerate(nodes):
        if n.op_type == "Gemm":
            act = nodes[i + 1].op_type if i + 1 < len(nodes) else None
            W = [[mpmath.mpf(float(v)) for v in row] for row in init[n.input[1]]]
            b = [mpmath.mpf(float(v)) for v in init[n.input[2]]]
            out.append((W, b, act))
    return out


def _iv_act(act: str | None, v):
    iv = mpmath.iv
    if act is None:
        return v
    if act == "Relu":
        return iv.mpf([max(v.a, 0), max(v.b, 0)])
    if act == "Sigmoid":   # increasing: x appears once, so interval evaluation is exact up to rounding
        return 1 / (1 + iv.exp(-v))
    if act == "Tanh":
        return 1 - 2 / (1 + iv.exp(2 * v))   # increasing in x, which appears once
    raise ValueError(act)


def _iv_margin(layers, box) -> mpmath.ctx_iv.ivmpf:
    """An enclosure of y0 - y1 over the box (a list of iv intervals) by interval arithmetic."""
    iv = mpmath.iv
    h = box
    for W, b, act in layers:
        h = [_iv_act(act, sum((iv.mpf(w) * x for w, x in zip(row, h)), iv.mpf(bj))) for row, bj in zip(W, b)]
    return h[0] - h[1]


def exact_max_below(model: onnx.ModelProto, threshold: float, lo: float = -1.0, hi: float = 1.0,
                    max_boxes: int = 200_000) -> bool:
    """True iff y0 - y1 < threshold on all of [lo, hi]^2, proved by bisection in interval
    arithmetic; False if some box centre reaches it (a point the oracle evaluates in the same
    arithmetic).  Fails the test if the bisection does not settle within max_boxes."""
    layers = _layers(model)
    iv = mpmath.iv
    t = mpmath.mpf(threshold)
    stack = [(mpmath.mpf(lo), mpmath.mpf(hi), mpmath.mpf(lo), mpmath.mpf(hi))]
    n = 0
    while stack:
        a0, b0, a1, b1 = stack.pop()
        n += 1
        assert n < max_boxes, "the oracle did not settle"
        if _iv_margin(layers, [iv.mpf([a0, b0]), iv.mpf([a1, b1])]).b < t:
            continue
        m0, m1 = (a0 + b0) / 2, (a1 + b1) / 2
        if _iv_margin(layers, [iv.mpf(m0), iv.mpf(m1)]).a >= t:
            return False
        if b0 - a0 >= b1 - a1:
            stack += [(a0, m0, a1, b1), (m0, b0, a1, b1)]
        else:
            stack += [(a0, b0, a1, m1), (a0, b0, m1, b1)]
    return True


# --------------------------------------------------------------------------- end to end
def _spec(threshold: float) -> str:
    return ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
            "(assert (>= X_0 -1.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 -1.0))\n(assert (<= X_1 1.0))\n"
            f"(assert (>= (- Y_0 Y_1) {float(threshold)!r}))\n")


def _grid(model, argmax: bool = False):
    """(max, max - min) of y0 - y1 on a 401 x 401 grid of [-1, 1]^2 (and the maximiser)."""
    g = to_graph(model)
    t = np.linspace(-1.0, 1.0, 401)
    xs = torch.as_tensor(np.stack(np.meshgrid(t, t), -1).reshape(-1, 2), dtype=F64)
    y = forward(g, xs).reshape(-1, 2)
    d = y[:, 0] - y[:, 1]
    out = d.max().item(), (d.max() - d.min()).item()
    return out + (xs[d.argmax()].tolist(),) if argmax else out


def exact_margin_at(model: onnx.ModelProto, x) -> mpmath.mpf:
    """y0 - y1 at the point x, in interval arithmetic: an interval around the exact value."""
    return _iv_margin(_layers(model), [mpmath.iv.mpf(mpmath.mpf(v)) for v in x])


def _verify(tmp_path, model, threshold, bab: bool, timeout: float = 60.0):
    onnx.save(model, tmp_path / "net.onnx")
    (tmp_path / "p.vnnlib").write_text(_spec(threshold))
    # the input has 2 elements: force splits of the activations, not of the input
    cfg = VerifyConfig(timeout_s=timeout, bab=BabConfig(enabled=bab, branching="activation"))
    return verifier.verify(tmp_path / "net.onnx", tmp_path / "p.vnnlib", timeout=timeout, config=cfg)


# (activations, seed, threshold above the grid maximum as a fraction of the margin's range):
# properties that alpha-CROWN alone leaves open and activation splitting proves
CASES = [
    (["Sigmoid"], 9, 0.02),
    (["Sigmoid"], 5, 0.02),
    (["Tanh"], 7, 0.2),
    (["Tanh"], 9, 0.2),
    (["Relu", "Sigmoid"], 0, 0.2),
    (["Tanh", "Relu"], 1, 0.2),
]


@pytest.mark.parametrize("acts,seed,frac", CASES, ids=[f"{'-'.join(a)}-{s}" for a, s, _ in CASES])
def test_splitting_activations_proves_what_alpha_crown_cannot(tmp_path, acts, seed, frac):
    model = random_mlp(np.random.default_rng(seed), 2, [8, 8], 2, acts)
    top, width = _grid(model)
    threshold = top + frac * width
    assert exact_max_below(model, threshold)          # the exact answer: unsat
    root = _verify(tmp_path, model, threshold, bab=False)
    assert root.verdict is Verdict.UNKNOWN, (root.verdict, root.reason)
    split = _verify(tmp_path, model, threshold, bab=True)
    assert split.verdict is Verdict.UNSAT, (split.verdict, split.reason)
    assert split.stats.get("bab_domains", 0) > 1


@pytest.mark.parametrize("acts,seed,frac", CASES[::2], ids=[f"{'-'.join(a)}-{s}" for a, s, _ in CASES[::2]])
def test_splitting_activations_finds_what_is_there(tmp_path, acts, seed, frac):
    """Just below the grid maximum: sat (the oracle agrees), with a confirmed counterexample."""
    model = random_mlp(np.random.default_rng(seed), 2, [8, 8], 2, acts)
    top, width, x = _grid(model, argmax=True)
    threshold = top - 1e-3 * width
    assert exact_margin_at(model, x).a >= threshold       # the exact answer: sat
    r = _verify(tmp_path, model, threshold, bab=True)
    assert r.verdict is Verdict.SAT, (r.verdict, r.reason)
    assert np.all(np.abs(r.x) <= 1.0) and r.y[0] - r.y[1] >= threshold


def test_a_network_with_a_product_is_split_where_it_can_be(tmp_path):
    """A product of two variables between Tanh and Sigmoid layers: split on its first factor's
    interval, in one search with the activations around it."""
    from helpers_nets import Builder

    b = Builder(np.random.default_rng(5))
    h = b.op("Tanh", [b.gemm("x", 2, 6)])
    p = b.op("Mul", [b.gemm(h, 6, 3), b.gemm(h, 6, 3)])
    model = b.finish("x", [1, 2], b.gemm(b.op("Sigmoid", [p]), 3, 2))
    top, width = _grid(model)
    root = _verify(tmp_path, model, top + 1.0 * width, bab=False)
    assert root.verdict is Verdict.UNKNOWN, (root.verdict, root.reason)
    r = _verify(tmp_path, model, top + 1.0 * width, bab=True)
    assert r.verdict is Verdict.UNSAT, (r.verdict, r.reason)
    assert r.stats.get("bab_domains", 0) > 1
    r = _verify(tmp_path, model, top - 1e-3 * width, bab=True, timeout=20)
    assert r.verdict is Verdict.SAT, (r.verdict, r.reason)


def test_nothing_to_split_hands_over_to_input_splitting(tmp_path, monkeypatch):
    """The only nonlinearity a product, made unsplittable here: activation splitting has nothing
    to do, and input splitting decides the query in the time left, both ways."""
    from helpers_nets import Builder

    monkeypatch.setattr(type(RULES["MulVar"]), "can_split", lambda self, node: False)

    b = Builder(np.random.default_rng(2))
    p = b.op("Mul", [b.gemm("x", 2, 3), b.gemm("x", 2, 3)])
    model = b.finish("x", [1, 2], b.gemm(p, 3, 2))
    top, width = _grid(model)
    assert _verify(tmp_path, model, top + 0.05 * width, bab=False).verdict is Verdict.UNKNOWN
    r = _verify(tmp_path, model, top + 0.05 * width, bab=True)
    assert r.verdict is Verdict.UNSAT, (r.verdict, r.reason)
    r = _verify(tmp_path, model, top - 1e-3 * width, bab=True)
    assert r.verdict is Verdict.SAT, (r.verdict, r.reason)


# --------------------------------------------------------------------------- relaxations on split intervals
def _mp_f(kind: str, x):
    x = mpmath.mpf(x)
    return 1 / (1 + mpmath.exp(-x)) if kind == "Sigmoid" else mpmath.tanh(x)


def _touch_points(kind: str, k: float) -> list:
    """The x with f'(x) = k (where f minus a plane of slope k has its extremes inside)."""
    k = mpmath.mpf(k)
    if kind == "Sigmoid":   # f' = 1 / (4 cosh(x / 2)^2)
        if not 0 < k <= mpmath.mpf(1) / 4:
            return []
        x = 2 * mpmath.acosh(1 / (2 * mpmath.sqrt(k)))
    else:                   # f' = 1 / cosh(x)^2
        if not 0 < k <= 1:
            return []
        x = mpmath.acosh(1 / mpmath.sqrt(k))
    return [x, -x]


def _split_intervals(rng, n: int) -> list[tuple[float, float]]:
    """Intervals that branch and bound makes: a random start, then random splits (at the
    sampled_gain candidates and at random points), keeping a random side each time."""
    out = []
    for _ in range(n):
        a = -10.0 ** rng.uniform(-3, 2.5)
        b = 10.0 ** rng.uniform(-3, 2.5)
        for _ in range(rng.integers(0, 8)):
            p = a + (b - a) * rng.choice([0.125, 0.5, 0.875, rng.uniform(0.001, 0.999)])
            if rng.uniform() < 0.3 and a < 0 < b:
                p = 0.0
            a, b = (a, p) if rng.uniform() < 0.5 else (p, b)
            out.append((a, b))
    return out


@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_planes_on_split_intervals_hold_exactly(kind, dtype):
    rng = np.random.default_rng(11)
    iv = _split_intervals(rng, 60)
    lo = torch.tensor([a for a, _ in iv], dtype=dtype)
    hi = torch.tensor([b for _, b in iv], dtype=dtype)
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    lw, lb, uw, ub = RULES[kind].relax(None, lo, hi)
    mpmath.mp.prec = 200
    for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
        for w, c, below in ((lw[i].item(), lb[i].item(), True), (uw[i].item(), ub[i].item(), False)):
            xs = [mpmath.mpf(a), mpmath.mpf(b)] + [x for x in _touch_points(kind, w) if a <= x <= b]
            for x in xs:
                gap = _mp_f(kind, x) - (mpmath.mpf(w) * x + mpmath.mpf(c))
                assert (gap >= 0) if below else (gap <= 0), (kind, a, b, float(x), below, float(gap))


@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_tangent_point_alpha_may_choose_gives_planes_that_hold_exactly(kind, dtype):
    """alpha-CROWN's parameters for Sigmoid / Tanh are the planes' tangent points: at the ends of
    their ranges, the start and random points in between, both planes hold against mpmath at
    the ends and where f' equals the plane's slope."""
    rng = np.random.default_rng(5)
    rule = RULES[kind]
    iv = _split_intervals(rng, 40) + [(-3.0, 2.0), (-0.5, 0.25), (-40.0, 1.0), (0.5, 3.0), (-3.0, -0.5)]
    lo = torch.tensor([min(a, b) for a, b in iv], dtype=dtype)
    hi = torch.tensor([max(a, b) for a, b in iv], dtype=dtype)
    mpmath.mp.prec = 200
    for upper in (False, True):
        rng_lo, rng_hi = (rule.upper_slope_range if upper else rule.lower_slope_range)(None, lo, hi)
        assert bool((rng_lo <= rng_hi).all())
        start = rule.slope_start(None, lo, hi, upper)
        assert bool(((start >= rng_lo) & (start <= rng_hi)).all())
        for t in (rng_lo, rng_hi, start, rng_lo + (rng_hi - rng_lo) * torch.rand(lo.shape, dtype=dtype)):
            w, c = (rule.upper_with_slope if upper else rule.lower_with_slope)(None, lo, hi, t)
            for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
                wi, ci = w[i].item(), c[i].item()
                for x in [mpmath.mpf(a), mpmath.mpf(b)] + [x for x in _touch_points(kind, wi) if a <= x <= b]:
                    gap = _mp_f(kind, x) - (mpmath.mpf(wi) * x + mpmath.mpf(ci))
                    assert (gap <= 0) if upper else (gap >= 0), (kind, a, b, float(t[i]), upper, float(gap))


def test_alpha_tangent_points_tighten_a_sigmoid_bound():
    """Optimising the tangent points raises CROWN's bound on a Sigmoid network (and stays below
    every sampled output)."""
    from verifier.bounds.alpha import alpha_lower
    from verifier.budget import Deadline
    from verifier.config import AlphaConfig

    rng = np.random.default_rng(4)
    g = to_graph(random_mlp(rng, 3, [8, 8], 2, ["Sigmoid"]))
    lo, hi = torch.full((1, 3), -2.0, dtype=F64), torch.full((1, 3), 2.0, dtype=F64)
    pre = crown_intermediate(g, lo, hi)
    C = torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]], dtype=F64)
    d = torch.zeros(1, 2, dtype=F64)
    crown = crown_output(g, lo, hi, C, pre)
    alpha = alpha_lower(g, lo, hi, C, d, pre, AlphaConfig(iterations=50), Deadline(60), lambda b: False)
    assert bool((alpha >= crown - 1e-12).all()) and bool((alpha > crown + 1e-3).any()), (alpha, crown)
    xs = torch.as_tensor(rng.uniform(-2, 2, size=(20000, 3)), dtype=F64)
    obj = torch.einsum("qo,no->nq", C[0], forward(g, xs).reshape(-1, 2))
    assert bool((alpha[0] <= obj.min(0).values).all())


def test_planes_across_zero_are_tighter_than_the_parallelogram():
    """Each plane is the one of least area between the plane through an end and the old
    parallelogram's (slope the smaller end derivative): never more slack, and much less on
    wide intervals across 0 that are not lopsided."""
    rule = RULES["Sigmoid"]
    lo = torch.tensor([-4.0, -2.0, -0.5, -8.0], dtype=F64)
    hi = torch.tensor([4.0, 1.0, 3.0, 0.5], dtype=F64)
    k = torch.minimum(rule.df(lo), rule.df(hi))
    xs = torch.linspace(0, 1, 201, dtype=F64).unsqueeze(1) * (hi - lo) + lo
    f = rule.f(xs)
    lw, lb, uw, ub = rule.relax(None, lo, hi)
    new = ((uw * xs + ub) - (lw * xs + lb)).mean(0)
    old = ((rule.f(hi) - k * hi) - (rule.f(lo) - k * lo)).expand_as(new)
    assert bool((new <= old + 1e-12).all()), (new, old)
    assert bool((new[:3] < 0.8 * old[:3]).all()), (new, old)
    assert bool((lw * xs + lb <= f).all() and (uw * xs + ub >= f).all())


# --------------------------------------------------------------------------- where to split
@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh", "Exp", "Gelu", "Sin", "Softplus"])
def test_split_points_lie_inside_and_the_gain_is_the_slack_removed(kind):
    rule = RULES[kind]
    rng = np.random.default_rng(3)
    lo = torch.as_tensor(rng.uniform(-3, 1, size=(4, 5)), dtype=F64)
    hi = lo + torch.as_tensor(rng.uniform(0.01, 3, size=(4, 5)), dtype=F64)
    a = torch.as_tensor(rng.standard_normal((4, 5)), dtype=F64)
    gain, point = sampled_gain(rule, None, lo, hi, a)
    assert bool(((point > lo) & (point < hi)).all())
    left, right = slack(rule, None, lo, point, a < 0), slack(rule, None, point, hi, a < 0)
    before = slack(rule, None, lo, hi, a < 0)
    expect = a.abs() * (before - torch.maximum(left, right)).clamp(min=0) + 1e-12
    assert torch.allclose(gain, expect)
    assert bool((gain > 0).all())


def test_degenerate_and_unknown_intervals():
    """A point interval is not split; an infinite end is cut off first, with the largest gain."""
    rule = RULES["Sigmoid"]
    inf = math.inf
    lo = torch.tensor([[0.5, -inf, 1.0, -inf]], dtype=F64)
    hi = torch.tensor([[0.5, 2.0, inf, inf]], dtype=F64)
    gain, point = sampled_gain(rule, None, lo, hi, torch.ones_like(lo))
    assert gain[0, 0] == -1.0
    assert bool((gain[0, 1:] == torch.finfo(F64).max).all())
    assert point[0, 1] < 2.0 and point[0, 2] > 1.0 and point[0, 3] == 0.0


def test_kink_gain_is_unchanged_for_relu():
    """ReLU keeps BaBSR's estimate: |a| times the chord's intercept, split at 0."""
    lo = torch.tensor([[-1.0, 0.5, -2.0]], dtype=F64)
    hi = torch.tensor([[3.0, 1.0, -1.0]], dtype=F64)
    a = torch.tensor([[2.0, 1.0, 1.0]], dtype=F64)
    from types import SimpleNamespace

    gain, point = RULES["Relu"].branch_gain(SimpleNamespace(inputs=["x"]), lo, hi, a)
    assert gain[0, 0].item() == pytest.approx(2.0 * 0.75 + 1e-12) and gain[0, 1] == -1 and gain[0, 2] == -1
    assert bool((point == 0).all())


# --------------------------------------------------------------------------- beta terms at a point
@pytest.mark.parametrize("seed", range(4))
def test_beta_terms_at_split_points_stay_below_every_point_of_the_domain(seed):
    """Splits of Sigmoid inputs at points p (input >= p or <= p) with random multipliers: the
    bound stays below the objective at every sampled input that satisfies the decisions."""
    rng = np.random.default_rng(seed)
    g = to_graph(random_mlp(rng, 3, [6, 6], 2, ["Sigmoid"]))
    lo = torch.full((1, 3), -1.0, dtype=F64)
    hi = torch.full((1, 3), 1.0, dtype=F64)
    pre = crown_intermediate(g, lo, hi)
    names = list(pre)
    first = names[0]
    node = g.by_name[first]
    xs = torch.as_tensor(rng.uniform(-1, 1, size=(20000, 3)), dtype=F64)
    vals = _value(g, xs, node.inputs[0])
    signs = {k: torch.zeros(v[0].shape, dtype=torch.int8) for k, v in pre.items()}
    points = {k: torch.zeros(v[0].shape, dtype=F64) for k, v in pre.items()}
    for j in rng.choice(node.shape[-1], 3, replace=False):   # split at the median of the samples
        signs[first][0, j] = 1 if rng.uniform() < 0.5 else -1
        points[first][0, j] = float(vals[:, j].median())
    fixed = {}
    for k in names:
        s, p = signs[k], points[k]
        fixed[k] = (torch.where(s > 0, p, -math.inf), torch.where(s < 0, p, math.inf))
    pre_d = crown_intermediate(g, lo, hi, fixed=fixed)
    C = torch.as_tensor(rng.standard_normal((1, 4, 2)), dtype=F64)
    betas = {k: torch.as_tensor(rng.uniform(0, 3, size=(1, 4) + tuple(v.shape[1:])), dtype=F64)
             for k, v in signs.items()}
    bound = crown_output(g, lo, hi, C, pre_d, signs=signs, betas=betas, points=points)
    # inputs satisfying the decisions: their pre-activations on the right side of each point
    s, p = signs[first][0].to(F64), points[first][0]
    ok = ((s * (vals - p)) >= 0).all(1)
    assert int(ok.sum()) > 200
    y = forward(g, xs[ok]).reshape(-1, 2)
    obj = torch.einsum("qo,no->nq", C[0], y)
    assert bool((bound[0] <= obj.min(0).values + 1e-12).all()), (bound, obj.min(0).values)


@pytest.mark.parametrize("seed", range(4))
def test_beta_terms_of_product_splits_stay_below_every_point_of_the_domain(seed):
    """Splits of a product's first factor at points, with random multipliers (the product's
    backward step carries them): the bound stays below the objective at every sampled input
    that satisfies the decisions."""
    from helpers_nets import Builder

    rng = np.random.default_rng(seed)
    b = Builder(rng)
    p = b.op("Mul", [b.gemm("x", 3, 4), b.gemm("x", 3, 4)])
    g = to_graph(b.finish("x", [1, 3], b.gemm(p, 4, 2)))
    prod = next(n for n in g.nodes if n.op == "MulVar")
    lo, hi = torch.full((1, 3), -1.0, dtype=F64), torch.full((1, 3), 1.0, dtype=F64)
    xs = torch.as_tensor(rng.uniform(-1, 1, size=(20000, 3)), dtype=F64)
    vals = _value(g, xs, prod.inputs[0])
    sign = torch.zeros((1,) + prod.shape, dtype=torch.int8)
    point = torch.zeros((1,) + prod.shape, dtype=F64)
    for j in rng.choice(prod.shape[-1], 2, replace=False):
        sign[0, j] = 1 if rng.uniform() < 0.5 else -1
        point[0, j] = float(vals[:, j].median())
    fixed = {prod.name: (torch.where(sign > 0, point, -math.inf), torch.where(sign < 0, point, math.inf))}
    pre = crown_intermediate(g, lo, hi, fixed=fixed)
    C = torch.as_tensor(rng.standard_normal((1, 4, 2)), dtype=F64)
    betas = {prod.name: torch.as_tensor(rng.uniform(0, 3, size=(1, 4) + prod.shape), dtype=F64)}
    bound = crown_output(g, lo, hi, C, pre, signs={prod.name: sign}, betas=betas, points={prod.name: point})
    ok = ((sign[0].to(F64) * (vals - point[0])) >= 0).all(1)
    assert int(ok.sum()) > 200
    obj = torch.einsum("qo,no->nq", C[0], forward(g, xs[ok]).reshape(-1, 2))
    assert bool((bound[0] <= obj.min(0).values + 1e-12).all()), (bound, obj.min(0).values)


def _value(g: Graph, xs: torch.Tensor, name: str) -> torch.Tensor:
    """The value `name` of the graph at the inputs xs (N, n)."""
    from verifier.evaluate import forward_all

    return forward_all(g, xs)[name].reshape(xs.shape[0], -1)


def test_a_counterexample_in_a_corner_is_found_without_branching(tmp_path):
    """y = relu(sum(x) - 79.5) over [0, 1]^80 reaches 0.25 only within 0.25 of the all-ones
    corner: random points and gradients never get there (the ReLU is off everywhere else), but
    CROWN's linear bound is least at that corner, which the pipeline tries right after CROWN."""
    from helpers_nets import Builder

    n = 80
    b = Builder(np.random.default_rng(0))
    h = b.op("Relu", [b.op("Gemm", ["x", b.const(np.ones((1, n))), b.const(np.array([-(n - 0.5)]))], transB=1)])
    model = b.finish("x", [1, n], h)
    onnx.save(model, tmp_path / "needle.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(n)] + ["(declare-const Y_0 Real)"]
    lines += [f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))" for i in range(n)]
    lines.append("(assert (>= Y_0 0.25))")
    (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n")
    cfg = VerifyConfig(timeout_s=30, bab=BabConfig(enabled=False))
    r = verifier.verify(tmp_path / "needle.onnx", tmp_path / "p.vnnlib", timeout=30, config=cfg)
    assert r.verdict is Verdict.SAT, (r.verdict, r.reason)
    assert float(np.sum(r.x)) >= n - 0.25 - 1e-6 and r.y[0] >= 0.25
