"""Lipschitz bounds of logit margins (verifier/audit/lipschitz.py): every bound must dominate what
the network actually does (difference quotients over random and steepest-direction pairs, and
gradient dual norms, on the torch model in float64 or onnxruntime in double); LipSDP must not
exceed the layer bound; exact cases must come out tight; a bad certificate must be rejected."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from helpers_nets import one_torch_thread, random_convnet, random_mlp, random_residual, run_float64  # noqa: F401
from verifier.api import load_checked
from verifier.audit.lipschitz import (LipschitzError, LipschitzModel, certainly_pd, certified_radius,
                                      check_lipsdp, extract_chain, lipsdp_matrix, margin_lower_bounds,
                                      solve_lipsdp, spectral_upper)

TOL = 1e-9   # float64 noise of a sampled quotient or gradient, relative (the bounds themselves are rigorous)


# --------------------------------------------------------------------------- models
def _export(model: nn.Module, shape: tuple[int, ...], path) -> object:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(*shape),), str(path), dynamo=False)
    return load_checked(path)[0]


def _mlp(act: nn.Module, seed: int, sizes=(5, 8, 6, 4)) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act)
    return nn.Sequential(*layers)


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3))


NETS = {
    "relu": (lambda: _mlp(nn.ReLU(), 0), (1, 5)),
    "leaky": (lambda: _mlp(nn.LeakyReLU(0.2), 1), (1, 5)),
    "tanh": (lambda: _mlp(nn.Tanh(), 2), (1, 5)),
    "sigmoid": (lambda: _mlp(nn.Sigmoid(), 3, (5, 8, 6, 4)), (1, 5)),
    "cnn": (lambda: _cnn(4), (1, 1, 5, 5)),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (torch model in float64, input shape, LipschitzModel, graph), built once."""
    out = {}
    for name, (make, shape) in NETS.items():
        model = make()
        graph = _export(model, shape, tmp_path_factory.mktemp(name) / "net.onnx")
        out[name] = (model.double(), shape, LipschitzModel(graph, sdp=True, sdp_time_limit=30.0), graph)
    return out


def _margins(model: nn.Module, x: torch.Tensor, y: int) -> torch.Tensor:
    """(B, n_classes): f_y - f_j."""
    out = model(x)
    return out[:, y:y + 1] - out


def _pairs(model, shape, y: int, n: int, rng: np.random.Generator):
    """Pairs (x, x') of random points and of steps along the L2 / L-inf steepest direction of each
    margin, at distances 1, 1e-2, 1e-5."""
    x = torch.as_tensor(rng.standard_normal((n,) + shape[1:]) * 2.0)
    d = torch.as_tensor(rng.standard_normal((n,) + shape[1:]))
    pairs = [(x, x + d * s) for s in (1.0, 1e-2, 1e-5)]
    xg = x.clone().requires_grad_(True)
    m = _margins(model, xg, y)
    for j in range(m.shape[1]):
        if j == y:
            continue
        g = torch.autograd.grad(m[:, j].sum(), xg, retain_graph=True)[0]
        flat = g.reshape(n, -1)
        l2 = (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-300)).reshape(g.shape)
        for s in (1e-1, 1e-4):
            pairs += [(x, x + s * l2), (x, x + s * torch.sign(g))]
    return pairs


def _assert_dominates(bound: np.ndarray, observed: np.ndarray, what: str) -> None:
    bad = observed > bound * (1 + TOL) + TOL
    assert not bad.any(), f"{what}: observed {observed[bad]} above the bound {bound[bad]}"


# --------------------------------------------------------------------------- soundness
@pytest.mark.parametrize("name", list(NETS))
def test_bounds_dominate_difference_quotients(built, name):
    model, shape, lip, _ = built[name]
    rng = np.random.default_rng(10)
    for y in range(lip.n_classes):
        r = lip.margins(y)
        assert r.l2[y] == 0 and r.linf[y] == 0
        for x, x2 in _pairs(model, shape, y, 64, rng):
            with torch.no_grad():
                dg = (_margins(model, x2, y) - _margins(model, x, y)).abs().numpy()   # (B, n_classes)
            dx = (x2 - x).reshape(x.shape[0], -1)
            keep = dx.abs().amax(dim=1).numpy() > 0      # a zero gradient gives no steepest step
            dg, dx = dg[keep], dx[keep]
            q2 = dg / dx.norm(dim=1, keepdim=True).numpy()
            qi = dg / dx.abs().amax(dim=1, keepdim=True).numpy()
            _assert_dominates(np.broadcast_to(r.l2, q2.shape), q2, f"{name} L2 label {y}")
            _assert_dominates(np.broadcast_to(r.linf, qi.shape), qi, f"{name} Linf label {y}")
            _assert_dominates(np.broadcast_to(r.l2_layers, q2.shape), q2, f"{name} L2 layers label {y}")
            sdp = np.where(np.isnan(r.l2_lipsdp), np.inf, r.l2_lipsdp)
            _assert_dominates(np.broadcast_to(sdp, q2.shape), q2, f"{name} LipSDP label {y}")


@pytest.mark.parametrize("name", list(NETS))
def test_bounds_dominate_gradient_dual_norms(built, name):
    model, shape, lip, _ = built[name]
    rng = np.random.default_rng(11)
    n = 20000   # points at many scales: the largest gradient found is within ~10% of the LipSDP bound
    scale = rng.uniform(0.1, 5.0, (n,) + (1,) * (len(shape) - 1))
    x = torch.as_tensor(rng.standard_normal((n,) + shape[1:]) * scale).requires_grad_(True)
    for y in range(lip.n_classes):
        r = lip.margins(y)
        m = _margins(model, x, y)
        for j in range(lip.n_classes):
            if j == y:
                continue
            g = torch.autograd.grad(m[:, j].sum(), x, retain_graph=True)[0].reshape(x.shape[0], -1)
            g2, g1 = g.norm(dim=1).detach().numpy(), g.abs().sum(1).detach().numpy()
            _assert_dominates(np.full(n, r.l2[j]), g2, f"{name} ||grad||_2")
            _assert_dominates(np.full(n, r.linf[j]), g1, f"{name} ||grad||_1")
            _assert_dominates(np.full(n, r.l2_layers[j]), g2, f"{name} ||grad||_2 (layers)")


@pytest.mark.parametrize("name", list(NETS))
def test_lipsdp_checked_and_below_layer_bound(built, name):
    _, _, lip, _ = built[name]
    for y in range(lip.n_classes):
        r = lip.margins(y)
        others = np.arange(lip.n_classes) != y
        assert not np.isnan(r.l2_lipsdp[others]).any(), f"{name}: LipSDP gave no certified bound"
        assert (r.l2_lipsdp[others] <= r.l2_layers[others] * (1 + 1e-9)).all()
        assert np.array_equal(r.l2, np.fmin(r.l2_layers, r.l2_lipsdp))
        assert r.method_l2 == ("lipsdp" if (r.l2_lipsdp[others] < r.l2_layers[others]).any() else "layers")


def test_multi_node_segments_against_onnxruntime(tmp_path):
    """Conv -> BatchNormalization -> ReLU -> AveragePool -> Conv -> ReLU -> Flatten -> Gemm (segments of
    several linear nodes, derived constants): bounds dominate quotients of the model in double."""
    import onnx

    model = random_convnet(np.random.default_rng(5))
    onnx.save(model, tmp_path / "conv.onnx")
    graph = load_checked(tmp_path / "conv.onnx")[0]
    lip = LipschitzModel(graph, sdp=False)
    assert len(lip.chain.dense) == 3
    rng = np.random.default_rng(6)
    shape = (1, 2, 6, 6)
    for y in range(lip.n_classes):
        r = lip.margins(y)
        assert r.method_l2 == "layers" and np.isnan(np.delete(r.l2_lipsdp, y)).all()
        for s in (1.0, 1e-3):
            for _ in range(12):
                x = rng.standard_normal(shape)
                x2 = x + s * rng.standard_normal(shape)
                f, f2 = (run_float64(model, v).reshape(-1) for v in (x, x2))
                dg = np.abs((f2[y] - f2) - (f[y] - f))
                _assert_dominates(r.l2, dg / np.linalg.norm(x2 - x), "conv L2")
                _assert_dominates(r.linf, dg / np.abs(x2 - x).max(), "conv Linf")


# --------------------------------------------------------------------------- exact cases
def test_single_linear_layer_is_exact(tmp_path):
    torch.manual_seed(7)
    model = nn.Linear(5, 3)
    lip = LipschitzModel(_export(model, (1, 5), tmp_path / "lin.onnx"))
    W = model.weight.detach().double().numpy()
    for y in range(3):
        r = lip.margins(y)
        for j in range(3):
            if j == y:
                continue
            c = W[y] - W[j]
            assert np.linalg.norm(c) <= r.l2[j] <= np.linalg.norm(c) * (1 + 1e-12)
            assert np.abs(c).sum() <= r.linf[j] <= np.abs(c).sum() * (1 + 1e-12)
        assert r.method_l2 == "layers"


def test_relu_after_identity_is_exact(tmp_path):
    """g = (w_y - w_j) . relu(x + b): the constant is ||w_y - w_j|| (all units active somewhere);
    the abs-product bound and LipSDP (T = rho I is feasible) both reach it."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(5))
    lip = LipschitzModel(_export(model, (1, 5), tmp_path / "id.onnx"))
    W = model[2].weight.detach().double().numpy()
    for y in range(3):
        r = lip.margins(y)
        for j in range(3):
            if j == y:
                continue
            c = W[y] - W[j]
            exact2, exact1 = np.linalg.norm(c), np.abs(c).sum()
            assert exact2 <= r.l2_layers[j] <= exact2 * (1 + 1e-12)
            assert exact2 <= r.l2_lipsdp[j] <= exact2 * (1 + 1e-5)
            assert exact1 <= r.linf[j] <= exact1 * (1 + 1e-12)


def test_extracted_matrices_equal_the_weights(built):
    model, _, lip, _ = built["relu"]
    chain = lip.chain
    assert [d.W.shape for d in chain.dense] == [(8, 5), (6, 8), (4, 6)]
    for d, layer in zip(chain.dense, [model[0], model[2], model[4]]):
        W = layer.weight.detach().numpy()
        assert np.array_equal(d.W, W)
        assert (d.E <= 1e-14 * (1 + np.abs(W)).max()).all() and (d.E >= 0).all()
    for lo, hi in chain.slopes:
        assert (lo == 0).all() and (hi == 1).all()


# --------------------------------------------------------------------------- the certificate check
def _random_weights(seed: int, sizes=(6, 10, 8)):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    return Ws + [rng.standard_normal(sizes[-1])]


def _sampled_lipschitz(weights, n: int = 4000, seed: int = 0) -> float:
    """max ||grad||_2 of w . relu(W_k ... relu(W_1 x)) at random points (a lower bound)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, weights[0].shape[1]))
    J = np.broadcast_to(np.eye(x.shape[1]), (n,) + (x.shape[1],) * 2)
    for W in weights[:-1]:
        z = x @ W.T
        J = (z > 0)[:, :, None] * np.einsum("ij,njk->nik", W, J)
        x = np.maximum(z, 0)
    return float(np.linalg.norm(np.einsum("j,njk->nk", weights[-1], J), axis=1).max())


def test_check_accepts_the_solved_certificate_and_rejects_corrupted_ones():
    weights = _random_weights(1)
    rho, T = solve_lipsdp(weights, time_limit=30.0)
    assert check_lipsdp(weights, T, rho)
    truth = _sampled_lipschitz(weights)
    assert truth <= math.sqrt(rho) * (1 + TOL)
    # rho below the true constant: no multipliers can make M <= 0
    low = 0.9 * truth ** 2
    assert not check_lipsdp(weights, T, low)
    assert not check_lipsdp(weights, T, 0.5 * rho)
    rng = np.random.default_rng(2)
    for _ in range(5):
        assert not check_lipsdp(weights, [t * rng.uniform(0.1, 10, t.shape) for t in T], low)
    # multipliers perturbed so that M is indefinite, even with a generous rho
    for bad in ([t * 0.01 for t in T], [T[0], np.zeros_like(T[1])]):
        assert np.linalg.eigvalsh(lipsdp_matrix(weights, bad, 2 * rho)).max() > 0
        assert not check_lipsdp(weights, bad, 2 * rho)
    # invalid multipliers or rho
    assert not check_lipsdp(weights, [-T[0], T[1]], 2 * rho)
    assert not check_lipsdp(weights, [T[0] * np.nan, T[1]], 2 * rho)
    assert not check_lipsdp(weights, T, float("nan"))
    # weight uncertainty counts: the tight rho fails once the weights may be off by 1e-3
    errors = [1e-3 * np.abs(W) for W in weights]
    assert not check_lipsdp(weights, T, rho, errors=errors)
    assert check_lipsdp(weights, T, rho * 1.5, errors=errors)


def test_check_rejects_a_certificate_at_the_edge():
    """M(rho, T) with largest eigenvalue -1e-14 relative: within rounding of the check, so refused;
    a clear margin is accepted."""
    weights = _random_weights(3)
    rho, T = solve_lipsdp(weights, time_limit=30.0)
    # the least rho for these T, by bisection on the float eigenvalue
    lo, hi = 0.5 * rho, rho
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if np.linalg.eigvalsh(lipsdp_matrix(weights, T, mid)).max() < 0 else (mid, hi)
    assert not check_lipsdp(weights, T, hi * (1 + 1e-15))
    assert check_lipsdp(weights, T, hi * (1 + 1e-6))


# --------------------------------------------------------------------------- primitives
@pytest.mark.parametrize("shape", [(7, 7), (12, 5), (3, 40), (1, 9), (9, 1), (30, 30)])
def test_spectral_upper_is_a_tight_upper_bound(shape):
    rng = np.random.default_rng(sum(shape))
    W = rng.standard_normal(shape) * rng.uniform(0.1, 100)
    s = np.linalg.svd(W, compute_uv=False).max()
    b = spectral_upper(W)
    assert s <= b <= s * (1 + 1e-8)
    E = np.full(shape, 1e-6)
    assert spectral_upper(W, E) >= s + 1e-6 * math.sqrt(W.size) * (1 - 1e-12)
    low_rank = np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1]))
    assert np.linalg.norm(low_rank, 2) <= spectral_upper(low_rank) <= np.linalg.norm(low_rank, 2) * (1 + 1e-8)


def test_certainly_pd():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((20, 20))
    A = A @ A.T
    lam = np.linalg.eigvalsh(A).min()
    assert certainly_pd(A)
    assert certainly_pd(A, 0.5 * lam)
    assert not certainly_pd(A, 1.01 * lam)             # some matrix within 1.01 lam is singular
    v = rng.standard_normal(20)
    assert not certainly_pd(np.outer(v, v))             # PSD but singular
    assert not certainly_pd(A - (lam + 1e-9) * np.eye(20))
    assert not certainly_pd(A - lam * np.eye(20))       # singular up to rounding: not proved
    assert certainly_pd(np.eye(3)) and not certainly_pd(-np.eye(3))


# --------------------------------------------------------------------------- refusals
def test_unsupported_graphs_are_refused(tmp_path):
    import onnx

    onnx.save(random_residual(np.random.default_rng(0)), tmp_path / "res.onnx")
    with pytest.raises(LipschitzError, match="Add"):
        extract_chain(load_checked(tmp_path / "res.onnx")[0])
    onnx.save(random_convnet(np.random.default_rng(0), pool="max"), tmp_path / "max.onnx")
    with pytest.raises(LipschitzError):
        LipschitzModel(load_checked(tmp_path / "max.onnx")[0])
    torch.manual_seed(0)
    soft = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Softmax(dim=1))
    with pytest.raises(LipschitzError):
        LipschitzModel(_export(soft, (1, 4), tmp_path / "soft.onnx"))
    onnx.save(random_mlp(np.random.default_rng(0), 4, [6], 3, ["Exp"]), tmp_path / "exp.onnx")
    with pytest.raises(LipschitzError, match="Exp"):
        LipschitzModel(load_checked(tmp_path / "exp.onnx")[0])


# --------------------------------------------------------------------------- radii and margins
def test_certified_radius_hand_cases():
    assert certified_radius(np.array([0.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]), 0) == pytest.approx(1.5, rel=1e-15)
    assert certified_radius(np.array([0.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]), 0) < 1.5
    assert certified_radius(np.array([1.0, 0.0, 3.0]), np.array([0.5, 0.0, 1.0]), 1) == pytest.approx(2.0)
    assert certified_radius(np.array([0.0, 2.0, -1e-30]), np.ones(3), 0) == 0.0
    assert certified_radius(np.array([0.0, 2.0, 0.0]), np.ones(3), 0) == 0.0
    assert certified_radius(np.array([0.0, np.nan, 1.0]), np.ones(3), 0) == 0.0
    assert certified_radius(np.array([0.0, 1.0, 1.0]), np.array([0.0, np.nan, 1.0]), 0) == 0.0
    assert certified_radius(np.array([0.0, 1.0, 4.0]), np.array([0.0, 0.0, 2.0]), 0) == pytest.approx(2.0)
    assert certified_radius(np.array([0.0, 1.0]), np.array([0.0, 0.0]), 0) == math.inf
    assert certified_radius(np.array([0.0, 1.0]), np.array([0.0, np.inf]), 0) == 0.0
    third = certified_radius(np.array([0.0, 1.0]), np.array([0.0, 3.0]), 0)
    assert third < 1 / 3 and third * 3 <= 1.0


def test_margin_lower_bounds_are_tight_and_below(built):
    model, shape, _, graph = built["tanh"]
    rng = np.random.default_rng(12)
    for _ in range(10):
        x0 = rng.standard_normal(shape)
        with torch.no_grad():
            f = model(torch.as_tensor(x0)).numpy().reshape(-1)
        for y in range(f.size):
            m = margin_lower_bounds(graph, x0, y)
            assert m[y] == 0
            assert (m <= f[y] - f).all() and (m >= f[y] - f - 1e-9).all()


@pytest.mark.parametrize("name", ["relu", "cnn"])
def test_certified_radius_end_to_end(built, name):
    """Points within the certified radius (L2 and L-inf) of x0, also along the steepest directions,
    keep the label; a radius 3x larger in the steepest direction usually does not, so the
    check has teeth."""
    model, shape, lip, graph = built[name]
    rng = np.random.default_rng(13)
    checked = 0
    for _ in range(20):
        x0 = rng.standard_normal(shape)
        with torch.no_grad():
            y = int(model(torch.as_tensor(x0)).argmax())
        r = lip.margins(y)
        m = margin_lower_bounds(graph, x0, y)
        for lipv, norm in ((r.l2, 2), (r.linf, np.inf)):
            rad = certified_radius(m, lipv, y)
            assert rad > 0
            d = rng.standard_normal((200,) + shape[1:])
            flat = d.reshape(200, -1)
            d = d / np.linalg.norm(flat, ord=norm, axis=1).reshape((200,) + (1,) * (len(shape) - 1))
            if norm == np.inf:
                d = np.sign(d)
            xs = torch.as_tensor(x0 + rad * d)
            with torch.no_grad():
                assert (model(xs).argmax(1) == y).all()
            checked += 1
    assert checked == 40
