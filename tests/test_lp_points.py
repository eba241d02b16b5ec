"""Counterexample candidates from the LP relaxation (verifier/lp/points.py, the pipeline's
stage_points): a needle inside a 50-dimensional box is found, and the points are what the LP
says they are."""
import numpy as np
import onnx
import pytest
import torch

import verifier
from helpers_nets import Builder, graph_of
from verifier.config import BabConfig, VerifyConfig
from verifier.evaluate import forward
from verifier.verdict import Verdict

F64 = torch.float64


def _needle(n: int, radius: float, seed: int = 0):
    """y0 = relu(radius - |x - c|_1), y1 = -y0 over [0, 1]^n, c inside: y0 > 0 only in an L1 ball
    around c, where every ReLU of the second layer is off outside it (zero gradients)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.2, 0.8, n)
    b = Builder(rng)
    h = b.op("Relu", [b.op("Gemm", ["x", b.const(np.concatenate([np.eye(n), -np.eye(n)])),
                                    b.const(np.concatenate([-c, c]))], transB=1)])
    z = b.op("Relu", [b.op("Gemm", [h, b.const(-np.ones((1, 2 * n))), b.const(np.array([radius]))], transB=1)])
    y = b.op("Gemm", [z, b.const(np.array([[1.0], [-1.0]])), b.const(np.zeros(2))], transB=1)
    return b.finish("x", [1, n], y), c.astype(np.float32)


def _box_query(path, n: int, goal: str) -> None:
    lines = [f"(declare-const X_{i} Real)" for i in range(n)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))" for i in range(n)]
    lines.append(goal)
    path.write_text("\n".join(lines) + "\n")


def test_a_needle_inside_a_50_dimensional_box_is_found(tmp_path):
    """Random points, PGD (zero gradients outside the ball) and corners (the ball is inside)
    miss it; the LP relaxation of the conjunct puts its optimum at the centre."""
    n = 50
    model, c = _needle(n, 0.5)
    onnx.save(model, tmp_path / "needle.onnx")
    _box_query(tmp_path / "p.vnnlib", n, "(assert (>= Y_0 0.25))")
    r = verifier.verify(tmp_path / "needle.onnx", tmp_path / "p.vnnlib", timeout=120)
    assert r.verdict is Verdict.SAT, (r.verdict, r.reason)
    x = np.asarray(r.x, dtype=np.float64).reshape(-1)
    assert np.abs(x - c).sum() <= 0.25 + 1e-5 and r.y[0] >= 0.25


def test_an_unreachable_needle_is_never_sat(tmp_path):
    """Above the ball's height the LP point is no counterexample: no sat (the bounds prove it,
    or time runs out)."""
    n = 50
    model, _ = _needle(n, 0.5, seed=1)
    onnx.save(model, tmp_path / "needle.onnx")
    _box_query(tmp_path / "p.vnnlib", n, "(assert (>= Y_0 0.5001))")
    cfg = VerifyConfig(timeout_s=20, bab=BabConfig(enabled=False))
    r = verifier.verify(tmp_path / "needle.onnx", tmp_path / "p.vnnlib", timeout=20, config=cfg)
    assert r.verdict is not Verdict.SAT


def _linear_net(n_in: int, n_out: int, seed: int):
    rng = np.random.default_rng(seed)
    b = Builder(rng)
    y = b.op("Gemm", ["x", b.const(rng.standard_normal((n_out, n_in))), b.const(rng.standard_normal(n_out))],
             transB=1)
    return graph_of(b.finish("x", [1, n_in], y)).to("cpu", F64)


@pytest.mark.parametrize("seed", range(6))
def test_on_an_affine_network_the_point_minimises_the_row(seed):
    """Without activations the relaxation is exact: one row's LP point reaches the row's minimum
    over the box (closed form), and every point lies in the box."""
    from verifier.lp.points import conjunct_points

    rng = np.random.default_rng(seed)
    g = _linear_net(6, 3, seed)
    lo, hi = rng.uniform(-1, 0, 6), rng.uniform(0, 1, 6)
    rows = [(rng.standard_normal((1, 3)), rng.standard_normal(1)) for _ in range(3)]
    pts = list(conjunct_points(g, lo, hi, {}, rows, lambda: 5.0))
    assert len(pts) == 3
    f = lambda x: forward(g, torch.as_tensor(x, dtype=F64).reshape(1, 6)).reshape(-1).numpy()
    J = np.stack([f(e) for e in np.eye(6)]) - f(np.zeros(6))    # the affine map's matrix, (6, 3)
    for (C, d), x in zip(rows, pts):
        assert x is not None and np.all(lo <= x) and np.all(x <= hi)
        a = J @ C[0]
        best = float(C[0] @ f(np.zeros(6)) + np.minimum(a * lo, a * hi).sum() + d[0])
        assert float(C[0] @ f(x) + d[0]) <= best + 1e-7 * (1 + abs(best))


def test_no_time_no_points():
    from verifier.lp.points import conjunct_points

    g = _linear_net(3, 2, 0)
    assert list(conjunct_points(g, np.zeros(3), np.ones(3), {}, [(np.ones((1, 2)), np.zeros(1))], lambda: 0.0)) == []
