"""Sound upper bounds on the Lipschitz constants of a classifier's logit margins.

For a label y and every other class j, g_j(x) = f_y(x) - f_j(x) of the network over the reals
(the IR's constants as the model's real numbers) satisfies |g_j(x) - g_j(x')| <= L_j ||x - x'||_p
with the L_j given here, p = 2 and p = inf.  A certified radius is then min_j margin_j / L_j.

The network must be a chain: affine segments (any ops whose rule is linear) separated by
elementwise activations whose secant slopes lie in a known range [s_min, s_max] per neuron.
Between two points each activation acts as a diagonal D of secant slopes in that range, so
g(x) - g(x') = c^T W_L D_{L-1} ... D_1 W_1 (x - x'), and every bound below holds for all such D:

  * "layers": L-inf via the elementwise product |c^T W_L| K |W_{L-1}| ... K |W_1| (K = diag of
    max(|s_min|, |s_max|)), whose 1-norm bounds the gradient's and whose 2-norm is an L2 bound;
    L2 also via the product of guaranteed spectral norms; the smaller of the two is kept.
  * "lipsdp": LipSDP-Neuron (Fazlyab et al. 2019) with diagonal multipliers, solved by cvxpy and
    then re-checked here in float64 (check_lipsdp); an unchecked solver answer is never used.

Soundness against floating point: each dense matrix W is extracted with an entrywise bound E of
|W_true - W| (verifier/chain.py: rounding of the extraction and of derived constants); every
quantity is computed in float64 and padded by a proven bound of its rounding (Higham ch. 3:
gamma(n) for an n-term sum); positive definiteness is proved by a floating-point Cholesky with
Rump's margin ("Verification of positive definiteness", BIT 46, 2006) plus the spectral norm of
every perturbation accounted for.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..bounds.rounding import gamma, lower
from ..chain import TINY, U, Chain, ChainError, Dense, _pad, _sum_up, _up, certainly_pd, extract_chain
from ..ir import Graph

MAX_SDP_HIDDEN = 1000          # LipSDP only for at most this many hidden neurons
CLARABEL_MAX_CLIQUE = 48       # Clarabel only while every n_{k-1} + n_k is at most this (_attempts)
SOLVER_OPTIONS = {"CLARABEL": {"max_threads": 1}, "SCS": {"eps_abs": 1e-4, "eps_rel": 1e-4}}


# the chain's errors are this module's: a graph that is not a chain has no bound here
LipschitzError = ChainError


@dataclass(frozen=True)
class MarginLipschitz:
    """Bounds for g_j = f_label - f_j, all (n_classes,), entry [label] = 0.  l2 / linf: the
    bounds to use (l2 the smaller of l2_layers and l2_lipsdp); l2_lipsdp: NaN where LipSDP gave
    no checked bound.  method_l2: "lipsdp" when LipSDP gave the bound of some j, else "layers"."""
    label: int
    l2: np.ndarray
    linf: np.ndarray
    method_l2: str
    l2_layers: np.ndarray
    l2_lipsdp: np.ndarray


# ---- rounding helpers (all inputs nonnegative floats) ------------------------------------------
def _norm2_up(v: np.ndarray) -> float:
    """||v||_2 rounded up (squares and their sum padded, sqrt correctly rounded)."""
    v = np.abs(np.asarray(v, dtype=np.float64)).reshape(-1)
    return _up(math.sqrt(_sum_up(v * v)))


def _abs_up(W: np.ndarray, E: np.ndarray) -> np.ndarray:
    """An entrywise bound of |W_true|: (|W| + E) (1 + 4u) (one addition, one product)."""
    return (np.abs(W) + E) * (1 + 4 * U)


def _matvec_up(r: np.ndarray, A: np.ndarray) -> np.ndarray:
    """An entrywise upper bound of the exact r @ A for nonnegative r (n,) and A (n, m)."""
    return _pad(r @ A, r.size, float(A.max(initial=0.0)) + float(r.max(initial=0.0)))


# ---- spectral norms ----------------------------------------------------------------------------
def spectral_upper(W: np.ndarray, E: np.ndarray | None = None) -> float:
    """A guaranteed upper bound of ||W_true||_2 for every |W_true - W| <= E: sqrt(mu) + ||E||_F
    where mu I - fl(G) (G = the smaller Gram matrix) is proved positive definite by certainly_pd,
    allowing ||fl(G) - G||_2 <= gamma(m) ||W||_F^2 (m the inner dimension; || |W| ||_2 <= ||W||_F).
    Falls back on ||W||_F when no candidate near the computed norm is proved."""
    W = np.asarray(W, dtype=np.float64)
    extra = 0.0 if E is None else _norm2_up(E)
    if W.size == 0:
        return extra
    if min(W.shape) == 1:
        return _up(_norm2_up(W) + extra)
    G = W.T @ W if W.shape[1] <= W.shape[0] else W @ W.T
    m = max(W.shape)
    fro2 = _sum_up(W * W)
    eG = gamma(m + 2, torch.float64) * fro2 * (1 + 4 * U)
    lam = float(np.linalg.eigvalsh(G).max())
    k = G.shape[0]
    gap = 4 * (eG + gamma(k + 2, torch.float64) * k * abs(lam)) + TINY
    for _ in range(12):
        mu = lam + gap
        if mu >= fro2:
            break
        A = mu * np.eye(k) - G
        if certainly_pd(A, eG + 2 * U * float(np.abs(np.diag(A)).max())):
            return _up(_up(math.sqrt(mu)) + extra)
        gap *= 8
    return _up(_up(math.sqrt(fro2)) + extra)


# ---- LipSDP ------------------------------------------------------------------------------------
def _relu_slopes(weights: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.zeros(W.shape[0]), np.ones(W.shape[0])) for W in weights[:-1]]


def lipsdp_matrix(weights: Sequence[np.ndarray], T: Sequence[np.ndarray], rho: float,
                  slopes: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """LipSDP-Neuron's M(rho, T) in float64, (n_0 + N, n_0 + N) over (x_0, x_1, ..., x_{L-1}).

    weights: W_1 (n_1, n_0), ..., W_{L-1} (n_{L-1}, n_{L-2}) and the last row w (n_{L-1},) or
    (1, n_{L-1}); T: L - 1 nonnegative (n_k,); slopes: per hidden layer (a, b), (n_k,) each
    (default ReLU: [0, 1]).  Layer k adds -2 W^T diag(a b t) W to block (k-1, k-1),
    diag((a + b) t) W to block (k, k-1) and its transpose, -2 diag(t) to block (k, k); block
    (0, 0) gets -rho I, block (L-1, L-1) w^T w.  M <= 0 implies Lipschitz(w^T f) <= sqrt(rho)."""
    hidden, w = list(weights[:-1]), np.asarray(weights[-1], np.float64).reshape(-1)
    slopes = list(slopes) if slopes is not None else _relu_slopes(weights)
    sizes = [hidden[0].shape[1] if hidden else w.size] + [W.shape[0] for W in hidden]
    at = np.concatenate([[0], np.cumsum(sizes)])
    M = np.zeros((at[-1], at[-1]))
    M[:sizes[0], :sizes[0]] -= rho * np.eye(sizes[0])
    for k, (W, t, (a, b)) in enumerate(zip(hidden, T, slopes)):
        i, j = slice(at[k], at[k + 1]), slice(at[k + 1], at[k + 2])
        t = np.asarray(t, np.float64)
        M[i, i] -= 2 * (W.T * (a * b * t)) @ W
        cross = (a + b)[:, None] * t[:, None] * W
        M[j, i] += cross
        M[i, j] += cross.T
        M[j, j] -= 2 * np.diag(t)
    last = slice(at[-2], at[-1])
    M[last, last] += np.outer(w, w)
    return M


def _lipsdp_error(weights, errors, T, rho, slopes) -> float:
    """A bound of ||M_true - fl(M)||_2: the rounding of forming M (each entry a sum of at most
    n + 4 rounded products: gamma(n + 8) times the spectral norms of the magnitude matrices, each
    at most a Frobenius product) plus the weights' uncertainty E (|dW| <= E: the terms
    2 |p| (2 ||W|| ||E|| + ||E||^2), |q| ||E||, 2 ||w|| ||e|| + ||e||^2, all Frobenius)."""
    hidden, w = list(weights[:-1]), np.asarray(weights[-1], np.float64).reshape(-1)
    e = np.asarray(errors[-1], np.float64).reshape(-1)
    n = max(max(W.shape) for W in hidden) if hidden else w.size
    fw, fe = _norm2_up(w), _norm2_up(e)
    form = abs(rho) + fw * fw
    pert = 2 * fw * fe + fe * fe
    for W, E, t, (a, b) in zip(hidden, errors[:-1], T, slopes):
        p, q = float(np.abs(a * b * t).max()), float(np.abs((a + b) * t).max())
        fW, fE = _norm2_up(W), _norm2_up(E)
        form += 2 * p * fW * fW + 2 * q * fW + 2 * float(np.max(t))
        pert += 2 * p * (2 * fW * fE + fE * fE) + 2 * q * fE
    return _up((4 * gamma(n + 8, torch.float64) * form + pert) * (1 + 32 * U))


def check_lipsdp(weights: Sequence[np.ndarray], T: Sequence[np.ndarray], rho: float,
                 slopes: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                 errors: Sequence[np.ndarray] | None = None) -> bool:
    """True only if M(rho, T) <= 0 is proved for every network whose weights lie within errors
    (entrywise, default 0) of weights: then sqrt(rho) bounds the L2 Lipschitz constant of
    x -> w^T f(x).  Arguments as lipsdp_matrix; a negative or non-finite multiplier or rho fails."""
    slopes = list(slopes) if slopes is not None else _relu_slopes(weights)
    errors = list(errors) if errors is not None else [np.zeros_like(np.asarray(W, np.float64)) for W in weights]
    T = [np.asarray(t, np.float64) for t in T]
    if not (math.isfinite(rho) and rho > 0) or len(T) != len(weights) - 1 \
            or any(t.shape != (W.shape[0],) or not np.all(np.isfinite(t)) or np.any(t < 0)
                   for t, W in zip(T, weights[:-1])):
        return False
    M = lipsdp_matrix(weights, T, rho, slopes)
    return certainly_pd(-M, _lipsdp_error(weights, errors, T, rho, slopes))


def _solve_sdp(weights, slopes, margin: float, solver: str, time_limit: float):
    """The SDP: minimise rho s.t. M(rho, T) + margin I <= 0, T >= 0.  (rho, T) or None."""
    import cvxpy as cp

    hidden, w = list(weights[:-1]), np.asarray(weights[-1], np.float64).reshape(-1)
    sizes = [hidden[0].shape[1]] + [W.shape[0] for W in hidden]
    rho = cp.Variable()
    ts = [cp.Variable(W.shape[0], nonneg=True) for W in hidden]
    blocks = [[np.zeros((r, c)) for c in sizes] for r in sizes]
    blocks[0][0] = blocks[0][0] - rho * np.eye(sizes[0])
    for k, (W, t, (a, b)) in enumerate(zip(hidden, ts, slopes)):
        if np.any(a * b != 0):
            blocks[k][k] = blocks[k][k] - 2 * W.T @ cp.diag(cp.multiply(a * b, t)) @ W
        cross = cp.diag(cp.multiply(a + b, t)) @ W
        blocks[k + 1][k] = blocks[k + 1][k] + cross
        blocks[k][k + 1] = blocks[k][k + 1] + cross.T
        blocks[k + 1][k + 1] = blocks[k + 1][k + 1] - 2 * cp.diag(t)
    blocks[-1][-1] = blocks[-1][-1] + np.outer(w, w)
    M = cp.bmat(blocks)
    n = sum(sizes)
    prob = cp.Problem(cp.Minimize(rho), [(M + M.T) / 2 + margin * np.eye(n) << 0])
    opts = dict(SOLVER_OPTIONS[solver])
    opts["time_limit" if solver == "CLARABEL" else "time_limit_secs"] = time_limit
    try:
        prob.solve(solver=solver, **opts)
    except Exception:     # cvxpy.SolverError and whatever a solver raises: no bound, never a crash
        return None
    if rho.value is None or any(t.value is None for t in ts):
        return None
    return float(rho.value), [np.maximum(np.asarray(t.value, np.float64), 0.0) for t in ts]


def _compress(W: np.ndarray) -> np.ndarray:
    """A matrix V (n_1, min(n_0, n_1)) with V V^T = W W^T (up to rounding): the SDP sees x_0
    only through W x_0 and -rho ||x_0||^2, so W may be replaced by V without changing its value
    (W = V R, R with orthonormal rows); the check then runs on the original W."""
    if W.shape[1] <= W.shape[0]:
        return W
    Uw, S, _ = np.linalg.svd(W, full_matrices=False)
    return Uw * S


def _best_rho(weights, T, slopes) -> float:
    """An estimate (float, unchecked) of the least rho with M(rho, T) <= 0: the largest
    eigenvalue of the Schur complement M00 - B^T H^-1 B of the hidden block H (rho only enters
    block (0, 0) as -rho I); NaN when H is not negative definite."""
    M = lipsdp_matrix(weights, T, 0.0, slopes)
    n0 = np.asarray(weights[0]).shape[1] if len(weights) > 1 else M.shape[0]
    H, B = M[n0:, n0:], M[n0:, :n0]
    try:
        C = np.linalg.cholesky(-H)
    except np.linalg.LinAlgError:
        return math.nan
    Y = np.linalg.solve(C, B)        # B^T (-H)^-1 B = Y^T Y
    return float(np.linalg.eigvalsh(M[:n0, :n0] + Y.T @ Y).max())


def _certify(weights, slopes, errors, rho: float, T) -> float | None:
    """The smallest rho_cert in r (1 + 1e-9) + a geometric ladder of gaps that check_lipsdp
    accepts with multipliers T; None if none does.  r: the least
    rho for the solver's T (_best_rho) where it has one, else the solver's rho: the SDP's margin
    and the solver's tolerance leave its own rho off by either sign."""
    best = _best_rho(weights, T, slopes)
    rho = best if math.isfinite(best) else rho
    gap = 1e-9 * abs(rho) + 1e-12
    for _ in range(12):
        cand = rho + gap
        if cand > 0 and check_lipsdp(weights, T, cand, slopes, errors):
            return cand
        gap *= 4
    return None


def _layer_estimate(weights, slopes) -> float:
    """||w K|| prod ||W_k K_k||_2 (float estimate): the scale the SDP is normalised to."""
    est = 1.0
    for k, W in enumerate(weights):
        W = np.asarray(W, np.float64).reshape(-1, np.asarray(W).shape[-1])
        est *= np.linalg.norm(W * (_slope_bound(slopes[k - 1]) if k else 1.0), 2)
    return float(est)


def _attempts(sizes: list[int]) -> list[tuple[str, float]]:
    """(solver, margin) pairs to try: Clarabel (interior point, accurate, but its cost grows
    like the sixth power of the largest clique n_{k-1} + n_k: 1 s at 40, 20 s at 64) while the
    cliques are small, then SCS (first order, eps 1e-4) with margins that absorb its error."""
    clique = max(a + b for a, b in zip(sizes, sizes[1:]))
    return ([("CLARABEL", 1e-6)] if clique <= CLARABEL_MAX_CLIQUE else []) + [("SCS", 1e-4), ("SCS", 1e-2)]


def solve_lipsdp(weights: Sequence[np.ndarray], slopes: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                 errors: Sequence[np.ndarray] | None = None,
                 time_limit: float = 60.0) -> tuple[float, list[np.ndarray]] | None:
    """A LipSDP certificate (rho, T) for x -> w^T f(x) (weights as in lipsdp_matrix) that
    check_lipsdp has accepted, or None: no hidden layer, more than MAX_SDP_HIDDEN hidden neurons,
    a zero last row, solver failure or timeout, or no accepted certificate.

    The SDP is solved with w scaled so that the layer-norm estimate is 1 (M is homogeneous in
    (rho, T, w w^T)), so its margin (M <= -margin I) is relative to that bound squared; the
    first layer is compressed (_compress).  Attempts in turn (_attempts) until one is certified,
    all within time_limit seconds."""
    hidden = list(weights[:-1])
    if not hidden or sum(W.shape[0] for W in hidden) > MAX_SDP_HIDDEN:
        return None
    slopes = list(slopes) if slopes is not None else _relu_slopes(weights)
    errors = list(errors) if errors is not None else [np.zeros_like(np.asarray(W, np.float64)) for W in weights]
    w = np.asarray(weights[-1], np.float64).reshape(-1)
    est = _layer_estimate(weights, slopes)
    if not (est > 0 and math.isfinite(est)):
        return None
    normed = [_compress(hidden[0])] + hidden[1:] + [w / est]
    sizes = [normed[0].shape[1]] + [W.shape[0] for W in hidden]
    deadline = time.monotonic() + time_limit
    for solver, margin in _attempts(sizes):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        got = _solve_sdp(normed, slopes, margin, solver, left)
        if got is None:
            continue
        T = [t * (est * est) for t in got[1]]
        rho = _certify(weights, slopes, errors, got[0] * est * est, T)
        if rho is not None:
            return rho, T
    return None


def lipsdp_bound(weights: Sequence[np.ndarray], slopes: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                 errors: Sequence[np.ndarray] | None = None, time_limit: float = 60.0) -> float | None:
    """sqrt(rho) of solve_lipsdp's certificate rounded up: a sound L2 Lipschitz bound of
    x -> w^T f(x), or None."""
    got = solve_lipsdp(weights, slopes, errors, time_limit)
    return None if got is None else _up(math.sqrt(got[0]))


# ---- layer bounds ------------------------------------------------------------------------------
def _slope_bound(s: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """max(|s_min|, |s_max|) per neuron: |secant slope| <= this (exact)."""
    return np.maximum(np.abs(s[0]), np.abs(s[1]))


def _scaled(d: Dense, k: np.ndarray | None) -> Dense:
    """The columns of W scaled by k >= 0, with E grown by the products' rounding (2u |W k|)."""
    if k is None:
        return d
    S = d.W * k[None, :]
    return Dense(S, (d.E * k[None, :] * (1 + 2 * U) + 2 * U * np.abs(S)) * (1 + 4 * U))


def _row(chain: Chain, y: int, j: int) -> Dense:
    """The margin row c^T W_L (c = e_y - e_j) as a (1, n) Dense: one subtraction (u relative)."""
    last = chain.dense[-1]
    w = last.W[y] - last.W[j]
    e = (last.E[y] + last.E[j] + 2 * U * np.abs(w)) * (1 + 4 * U)
    return Dense(w[None, :], e[None, :])


def _abs_product(chain: Chain, abs_dense: Sequence[np.ndarray], row: Dense) -> np.ndarray:
    """An entrywise upper bound (n_0,) of |row W_{L-1}... | over all slope diagonals: the row's
    |w| + e pushed through K_k and |W_k| + E_k."""
    r = _abs_up(row.W[0], row.E[0])
    for k in range(len(chain.slopes) - 1, -1, -1):
        r = _matvec_up(r * _slope_bound(chain.slopes[k]) * (1 + 4 * U), abs_dense[k])
    return r


# ---- the per-model object ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Pair:
    l2_layers: float
    l2_lipsdp: float      # NaN: none
    linf: float


@dataclass(frozen=True, eq=False)
class LipschitzModel:
    """The chain of one model with the quantities every margin shares, and a cache of pairs
    (g_{y,j} = -g_{j,y}: one computation per unordered pair).  Raises LipschitzError.

    sdp: also try LipSDP (per pair, at most sdp_time_limit seconds each; small nets only, see
    solve_lipsdp).  Cost: digits-sized MLPs (64-32-32-10) take ~0.6 s per pair (SCS); 784-100-100
    ~20-40 s per pair; layer bounds alone take milliseconds per label."""
    graph: Graph
    sdp: bool = True
    sdp_time_limit: float = 60.0
    chain: Chain = field(init=False)
    _abs: tuple[np.ndarray, ...] = field(init=False)
    _spectral: float = field(init=False)
    _pairs: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        chain = extract_chain(self.graph)
        hidden = chain.dense[:-1]
        ks = [None] + [_slope_bound(s) for s in chain.slopes]
        prod = 1.0
        for d, k in zip(hidden, ks):
            prod = _up(prod * spectral_upper(*dataclasses.astuple(_scaled(d, k))))
        object.__setattr__(self, "chain", chain)
        object.__setattr__(self, "_abs", tuple(_abs_up(d.W, d.E) for d in hidden))
        object.__setattr__(self, "_spectral", prod)   # prod over hidden segments of ||W_k K_k||_2

    @property
    def n_classes(self) -> int:
        return self.chain.dense[-1].W.shape[0]

    def _pair(self, y: int, j: int) -> _Pair:
        key = (min(y, j), max(y, j))
        if key not in self._pairs:
            self._pairs[key] = self._compute(*key)
        return self._pairs[key]

    def _compute(self, y: int, j: int) -> _Pair:
        chain, row = self.chain, _row(self.chain, y, j)
        r = _abs_product(chain, self._abs, row)
        k_last = _slope_bound(chain.slopes[-1]) if chain.slopes else None
        last = spectral_upper(*dataclasses.astuple(_scaled(row, k_last)))
        l2_layers = min(_up(self._spectral * last), _norm2_up(r))
        sdp = None
        if self.sdp and chain.slopes:
            weights = [d.W for d in chain.dense[:-1]] + [row.W[0]]
            errors = [d.E for d in chain.dense[:-1]] + [row.E[0]]
            sdp = lipsdp_bound(weights, list(chain.slopes), errors, self.sdp_time_limit)
        l2 = l2_layers if sdp is None else min(l2_layers, sdp)
        n0 = chain.dense[0].W.shape[1]
        linf = min(_sum_up(r), _up(_up(math.sqrt(n0)) * l2))   # ||x||_2 <= sqrt(n0) ||x||_inf
        return _Pair(l2_layers, math.nan if sdp is None else sdp, linf)

    def margins(self, label: int) -> MarginLipschitz:
        """Bounds for every g_j = f_label - f_j."""
        n = self.n_classes
        if not 0 <= label < n:
            raise ValueError(f"label {label} outside 0..{n - 1}")
        pairs = [self._pair(label, j) if j != label else _Pair(0.0, 0.0, 0.0) for j in range(n)]
        layers = np.array([p.l2_layers for p in pairs])
        sdp = np.array([p.l2_lipsdp for p in pairs])
        l2 = np.where(np.isnan(sdp), layers, np.fmin(layers, sdp))
        used = bool(np.any((sdp < layers) & (np.arange(n) != label)))
        return MarginLipschitz(label, l2, np.array([p.linf for p in pairs]), "lipsdp" if used else "layers",
                               layers, sdp)


# ---- margins and radii -------------------------------------------------------------------------
def margin_lower_bounds(graph: Graph, x0: np.ndarray, label: int) -> np.ndarray:
    """(n_classes,): entry j a rigorous lower bound of f_label(x0) - f_j(x0) for the network over
    the reals (interval bounds on the zero-width box [x0, x0], rounding included, then the
    difference rounded down); entry [label] = 0.  x0: any shape holding graph.input_size values."""
    from ..bounds.interval import interval_bounds

    real = dataclasses.replace(graph, float_model=None).to("cpu", torch.float64)
    x = torch.as_tensor(np.asarray(x0, np.float64).reshape((1,) + tuple(graph.input_shape)))
    lo, hi = interval_bounds(real, x, x)[graph.output_name]
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    m = lower(lo[label] - hi).numpy()
    m[label] = 0.0
    return m


def certified_radius(margins: np.ndarray, lip: np.ndarray, label: int) -> float:
    """min over j != label of margins[j] / lip[j], rounded down: every x within that distance
    (in the norm lip is for) of x0 has f_label > f_j for all j, given margins[j] <= f_label(x0) -
    f_j(x0) and lip[j] >= the Lipschitz constant of f_label - f_j.  0 when any margin is <= 0 or
    NaN or a lip is NaN; a zero lip (with a positive margin) gives no limit (inf)."""
    m, L = np.asarray(margins, np.float64).reshape(-1), np.asarray(lip, np.float64).reshape(-1)
    others = np.arange(m.size) != label
    m, L = m[others], L[others]
    if not np.all(m > 0) or np.any(np.isnan(L)) or np.any(L < 0):
        return 0.0
    with np.errstate(divide="ignore"):
        q = np.where(L == 0, math.inf, m / np.where(L == 0, 1.0, L))
    r = float(q.min(initial=math.inf))
    if not math.isfinite(r):
        return r
    return max(0.0, math.nextafter(r, -math.inf) - 2 * TINY)
