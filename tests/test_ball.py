"""L2 balls as an input set (bounds/ball.py): the concretisation against exact arithmetic, and
CROWN / alpha-CROWN over ball-and-box intersections against sampled and attacked points."""
from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

from helpers_nets import graph_of, random_mlp
from verifier.bounds.alpha import AlphaConfig, alpha_lower
from verifier.bounds.backward import crown_intermediate, crown_output
from verifier.bounds.ball import ball_lower, box_ball_lower
from verifier.budget import Deadline
from verifier.evaluate import forward


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ball_concretisation_against_exact_arithmetic(dtype):
    rng = np.random.default_rng(3)
    for trial in range(30):
        B, q, n = 2, 3, int(rng.integers(1, 300))
        scale = 10.0 ** rng.uniform(-6, 6)
        a = torch.as_tensor(rng.normal(size=(B, q, n)) * scale, dtype=dtype)
        c = torch.as_tensor(rng.normal(size=(B, n)) * 10.0 ** rng.uniform(-3, 3), dtype=dtype)
        r = torch.as_tensor(rng.uniform(0, 2, size=B), dtype=dtype)
        const = torch.as_tensor(rng.normal(size=(B, q)) * scale, dtype=dtype)
        lb = ball_lower(a, const, torch.zeros_like(const), (c, r))
        mpmath.mp.dps = 60
        for b in range(B):
            for j in range(q):
                av = [mpmath.mpf(float(v)) for v in a[b, j]]
                exact = (mpmath.fsum(x * mpmath.mpf(float(y)) for x, y in zip(av, c[b])) + mpmath.mpf(float(const[b, j]))
                         - mpmath.mpf(float(r[b])) * mpmath.sqrt(mpmath.fsum(x * x for x in av)))
                got = mpmath.mpf(float(lb[b, j]))
                assert got <= exact, (trial, b, j)
                size = mpmath.fsum(abs(x) * abs(mpmath.mpf(float(y))) for x, y in zip(av, c[b])) + abs(exact)
                assert exact - got <= 1e3 * n * float(torch.finfo(dtype).eps) * (size + 1e-300), (trial, b, j)


def _ball_points(lo, hi, centre, r, k, gen):
    """k points of each ball intersected with its box: random directions at random and full
    radius, clamped into the box and then pulled back into the ball (B, k, n)."""
    B, n = centre.shape
    d = torch.randn(B, k, n, generator=gen, dtype=centre.dtype)
    d = d / d.norm(dim=-1, keepdim=True) * r.reshape(B, 1, 1) * torch.rand(B, k, 1, generator=gen, dtype=centre.dtype) ** 0.2
    x = torch.minimum(torch.maximum(centre.unsqueeze(1) + d, lo.unsqueeze(1)), hi.unsqueeze(1))
    dist = (x - centre.unsqueeze(1)).norm(dim=-1, keepdim=True)
    return centre.unsqueeze(1) + (x - centre.unsqueeze(1)) * torch.clamp(r.reshape(B, 1, 1) / dist.clamp_min(1e-30), max=1.0) * (1 - 1e-9)



def _exact_box_ball_min(a, c, l, u, r):
    """min of a . x over the box [l, u] and the ball |x - c| <= r (nonempty), in mpmath: the box
    minimiser if it lies in the ball, else x(mu) = clip(c - a / (2 mu)) with |x(mu) - c| = r
    (convexity: KKT), mu by bisection to far below float precision."""
    a, c, l, u = ([mpmath.mpf(float(v)) for v in t] for t in (a, c, l, u))
    r = mpmath.mpf(float(r))
    clip = lambda v, lo, hi: min(max(v, lo), hi)
    box = [lo if ai > 0 else hi for ai, lo, hi in zip(a, l, u)]
    if mpmath.fsum((x - ci) ** 2 for x, ci in zip(box, c)) <= r * r:
        return mpmath.fsum(ai * x for ai, x in zip(a, box))
    point = lambda mu: [clip(ci - ai / (2 * mu), lo, hi) for ai, ci, lo, hi in zip(a, c, l, u)]
    size = mpmath.sqrt(mpmath.fsum(ai * ai for ai in a)) / r      # the multiplier's scale
    lo_mu, hi_mu = size * mpmath.mpf(10) ** -40, size * mpmath.mpf(10) ** 40
    for _ in range(600):
        mid = mpmath.sqrt(lo_mu * hi_mu)
        if mpmath.fsum((x - ci) ** 2 for x, ci in zip(point(mid), c)) > r * r:
            lo_mu = mid
        else:
            hi_mu = mid
    return mpmath.fsum(ai * x for ai, x in zip(a, point(hi_mu)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_box_and_ball_concretisation_against_exact_arithmetic(dtype):
    """The intersection's bound is below the exact minimum over box and ball (mpmath), within a
    small relative gap of it, and at least the box's and the ball's bounds where they differ
    from it by more than rounding (the ball cut by the box: centres near a face, pixels at 0)."""
    rng = np.random.default_rng(5)
    mpmath.mp.dps = 80
    beats = 0
    for trial in range(24):
        B, q, n = 2, 2, int(rng.integers(1, 60))
        scale = 10.0 ** rng.uniform(-3, 3)
        a = torch.as_tensor(rng.normal(size=(B, q, n)) * scale, dtype=dtype)
        c = torch.as_tensor(rng.uniform(0, 1, size=(B, n)) * (rng.uniform(size=(B, n)) < 0.7), dtype=dtype)
        l, u = torch.zeros_like(c), torch.ones_like(c)       # the centre inside [0, 1]^n, often on a face
        r = torch.as_tensor(rng.uniform(0.05, 1.5, size=B), dtype=dtype)
        const = torch.as_tensor(rng.normal(size=(B, q)) * scale, dtype=dtype)
        zero = torch.zeros_like(const)
        lb = box_ball_lower(a, const, zero, l, u, (c, r))
        other = torch.maximum(ball_lower(a, const, zero, (c, r)),
                              const + (a.clamp(min=0) * l.unsqueeze(1) + a.clamp(max=0) * u.unsqueeze(1)).sum(-1))
        for b in range(B):
            for j in range(q):
                exact = _exact_box_ball_min(a[b, j], c[b], l[b], u[b], r[b]) + mpmath.mpf(float(const[b, j]))
                got = mpmath.mpf(float(lb[b, j]))
                assert got <= exact, (trial, b, j, float(exact - got))
                size = mpmath.fsum(abs(mpmath.mpf(float(x))) for x in a[b, j]) + abs(exact)
                assert exact - got <= 1e-4 * size, (trial, b, j, float(exact - got), float(size))
                beats += bool(lb[b, j] > other[b, j] + 1e-3 * float(size))
    assert beats >= 10, beats


def test_box_and_ball_bound_holds_at_sampled_points():
    """Random points of the box and ball never go below the bound (float32 data, float64 bound)."""
    rng = np.random.default_rng(7)
    n = 40
    a = torch.as_tensor(rng.normal(size=(1, 3, n)), dtype=torch.float64)
    c = torch.as_tensor(np.where(rng.uniform(size=(1, n)) < 0.5, 0.0, rng.uniform(size=(1, n))), dtype=torch.float64)
    r = torch.tensor([0.8], dtype=torch.float64)
    lo, hi = torch.zeros_like(c), torch.ones_like(c)
    lb = box_ball_lower(a, torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64), lo, hi,
                        (c, r))
    d = torch.as_tensor(rng.normal(size=(20000, n)), dtype=torch.float64)
    step = d / d.norm(dim=1, keepdim=True) * r * torch.as_tensor(rng.uniform(size=(20000, 1))) ** (1 / n)
    x = c + torch.where(c == 0, step.abs(), step)      # reflected at the faces the centre lies on
    x = x[((x >= 0) & (x <= 1)).all(1)]
    assert x.shape[0] > 100
    vals = x @ a[0].T
    assert bool((lb[0] <= vals.min(0).values).all())


@pytest.mark.parametrize("acts", [["Relu"], ["Tanh", "Relu"], ["Sigmoid"]])
def test_crown_and_alpha_over_a_ball_hold_at_sampled_and_attacked_points(acts):
    rng = np.random.default_rng(len(acts) + 7)
    gen = torch.Generator().manual_seed(1)
    graph = graph_of(random_mlp(rng, 40, [24, 16], 5, acts))
    B = 3
    centre = torch.as_tensor(rng.uniform(0.2, 0.8, size=(B, 40)))
    r = torch.as_tensor([0.05, 0.3, 1.0], dtype=torch.float64)
    lo, hi = (centre - r[:, None]).clamp(0, 1), (centre + r[:, None]).clamp(0, 1)
    C = torch.as_tensor(rng.normal(size=(B, 6, 5)))
    ball = (centre, r)
    with torch.no_grad():
        pre = crown_intermediate(graph, lo, hi, ball=ball)
        lb = crown_output(graph, lo, hi, C, pre, ball=ball)
        box_only = crown_output(graph, lo, hi, C, crown_intermediate(graph, lo, hi))
    lb_alpha = alpha_lower(graph, lo, hi, C, torch.zeros(B, 6, dtype=torch.float64), pre,
                           AlphaConfig(iterations=15), Deadline(60), lambda b: False, ball=ball)
    assert (lb >= box_only - 1e-9).all()                       # never looser than the box alone
    assert (lb[2] > box_only[2] + 1e-6).any()                  # and tighter where the ball is small in the box
    pts = _ball_points(lo, hi, centre, r, 3000, gen)
    # an attack on every row: descend C y inside ball and box
    x = pts[:, :64].clone()
    for _ in range(60):
        x.requires_grad_(True)
        y = forward(graph, x.reshape(-1, 40)).reshape(B, 64, 5)
        v = torch.einsum("bqo,bko->bkq", C, y).sum()
        (g,) = torch.autograd.grad(v, x)
        x = x.detach() - 0.02 * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        x = torch.minimum(torch.maximum(x, lo.unsqueeze(1)), hi.unsqueeze(1))
        d = x - centre.unsqueeze(1)
        x = centre.unsqueeze(1) + d * torch.clamp(r.reshape(B, 1, 1) / d.norm(dim=-1, keepdim=True).clamp_min(1e-30),
                                                  max=1.0) * (1 - 1e-9)
    pts = torch.cat([pts, x.detach()], dim=1)
    with torch.no_grad():
        y = forward(graph, pts.reshape(-1, 40)).reshape(B, -1, 5)
        vals = torch.einsum("bqo,bko->bkq", C, y).amin(1)
    assert (lb <= vals).all() and (lb_alpha <= vals).all()
    assert (lb_alpha >= lb - 1e-9).all()


def _session_problem(tmp_path, seed: int):
    """A 2-16-16-2 ReLU net, a ball of radius 0.8 and its bounding box as a VNN-LIB box; the
    sampled minimum of y0 - y1 over the ball (a dense polar grid) and CROWN's bound over it."""
    import onnx

    from verifier.api import Session

    rng = np.random.default_rng(seed)
    model = random_mlp(rng, 2, [16, 16], 2, ["Relu"])
    onnx.save(model, tmp_path / "m.onnx")
    g = graph_of(model)
    c, r = rng.uniform(-0.5, 0.5, size=2), 0.8
    rho = np.sqrt(np.linspace(0, 1, 300))[:, None] * r
    th = np.linspace(0, 2 * np.pi, 720)[None, :]
    pts = np.stack([c[0] + rho * np.cos(th), c[1] + rho * np.sin(th)], -1).reshape(-1, 2)
    with torch.no_grad():
        y = forward(g, torch.as_tensor(pts)).numpy()
        lo, hi = torch.as_tensor(c - r).reshape(1, 2), torch.as_tensor(c + r).reshape(1, 2)
        ball = (torch.as_tensor(c).reshape(1, 2), torch.tensor([r], dtype=torch.float64))
        pre = crown_intermediate(g, lo, hi, ball=ball)
        crown = float(crown_output(g, lo, hi, torch.tensor([[[1.0, -1.0]]], dtype=torch.float64), pre, ball=ball))
    return Session.open(tmp_path / "m.onnx"), c, r, float((y[:, 0] - y[:, 1]).min()), crown


def _box_query(c, r, tau):
    import vnnlib

    text = [f"(declare-const X_{i} Real)" for i in range(2)] + [f"(declare-const Y_{i} Real)" for i in range(2)]
    text += [f"(assert (>= X_{i} {float(c[i] - r)!r}))\n(assert (<= X_{i} {float(c[i] + r)!r}))" for i in range(2)]
    text += [f"(assert (<= (- Y_0 Y_1) {float(tau)!r}))"]
    return vnnlib.parse_text("\n".join(text) + "\n")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_splitting_over_a_ball_proves_what_crown_cannot_and_nothing_false(tmp_path, seed):
    from verifier.verdict import Verdict

    session, c, r, sampled, crown = _session_problem(tmp_path, seed)
    assert crown <= sampled
    if sampled - crown < 1e-3:
        pytest.skip("CROWN is already tight here")
    tau = crown + 0.5 * (sampled - crown)          # below every sampled value, above CROWN's bound
    got = session.refute_in_ball(_box_query(c, r, tau), c, r, Deadline(60))
    assert got.verdict is Verdict.UNSAT, got.reason
    tau = sampled + 1e-6 * (1 + abs(sampled))      # a sampled point of the ball violates: never unsat
    got = session.refute_in_ball(_box_query(c, r, tau), c, r, Deadline(4))
    assert got.verdict is not Verdict.UNSAT


@pytest.mark.parametrize("flush", [False, True])
def test_box_and_ball_bound_with_tiny_coefficients(flush):
    """Coefficients near 1e-160, whose squares are subnormal (flushed to 0 when the engine sets
    flush-to-zero, as it does on the CPU): the bound stays below the exact minimum."""
    rng = np.random.default_rng(11)
    mpmath.mp.dps = 400
    torch.set_flush_denormal(flush)
    try:
        for trial in range(6):
            n = 5
            a = torch.as_tensor(rng.normal(size=(1, 1, n)) * 1e-158, dtype=torch.float64)
            c = torch.as_tensor(rng.uniform(0, 1, size=(1, n)) * (rng.uniform(size=(1, n)) < 0.5), dtype=torch.float64)
            r = torch.tensor([rng.uniform(0.1, 1.0)], dtype=torch.float64)
            zero = torch.zeros(1, 1, dtype=torch.float64)
            lb = box_ball_lower(a, zero, zero, torch.zeros_like(c), torch.ones_like(c), (c, r))
            exact = _exact_box_ball_min(a[0, 0], c[0], [0.0] * n, [1.0] * n, r[0])
            assert mpmath.mpf(float(lb[0, 0])) <= exact, (trial, float(lb[0, 0]), float(exact))
    finally:
        torch.set_flush_denormal(False)
