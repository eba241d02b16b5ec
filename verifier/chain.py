"""A network as a chain: affine segments (any ops whose rule is linear) separated by elementwise
activations with known secant-slope ranges, each segment extracted as a dense matrix W with an
entrywise bound E of |W_true - W|; and a rigorous positive-definiteness test.  What both the
Lipschitz bounds (audit/lipschitz.py) and the SDP relaxation (lp/sdp.py) stand on.

Soundness against floating point: every quantity is computed in float64 and padded by a proven
bound of its rounding (Higham ch. 3: gamma(n) for an n-term sum); positive definiteness is
proved by a floating-point Cholesky with Rump's margin ("Verification of positive
definiteness", BIT 46, 2006) plus the spectral norm of every perturbation accounted for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .bounds.rounding import DERIVED, accumulate, coef, floor, gamma, model_coef
from .ir import Graph, Node
from .ops import RULES
from .ops.registry import ActivationRule

U = 2.0 ** -53                 # unit roundoff of float64
TINY = float(np.finfo(np.float64).tiny)
MAX_DENSE = 2 ** 24            # entries of one extracted matrix (134 MB); larger segments are refused
CHUNK = 1024                   # basis vectors pushed through a segment at once


class ChainError(Exception):
    """The graph is not a chain of affine segments and activations with known slope ranges."""


@dataclass(frozen=True)
class Dense:
    """The linear part of one affine segment.  W: (n_out, n_in) float64; E: (n_out, n_in) with
    |W_true - W| <= E entrywise."""
    W: np.ndarray
    E: np.ndarray


@dataclass(frozen=True)
class Chain:
    """dense: L segments D_0 .. D_{L-1}; slopes: L - 1 pairs (s_min, s_max), each (n_k,), of the
    activation between D_{k-1} and D_k (every secant slope of neuron i lies in [s_min_i, s_max_i])."""
    dense: tuple[Dense, ...]
    slopes: tuple[tuple[np.ndarray, np.ndarray], ...]


# ---- rounding helpers (all inputs nonnegative floats) ------------------------------------------
def _up(x: float) -> float:
    """The next float above x: covers one rounding to nearest of a normal result."""
    return math.nextafter(float(x), math.inf)


def _pad(x, n: int, scale: float = 1.0):
    """An upper bound of an exact nonnegative value whose float evaluation (sums of at most n
    nonnegative terms, each a product) gave x: x (1 + 2 gamma(n + 2)) plus a floor for flushed
    subnormals (4 (n + 2) tiny (1 + scale), scale bounding the other operand of any product)."""
    return x * (1 + 2 * gamma(n + 2, torch.float64)) + 4 * (n + 2) * TINY * (1 + scale)


def _sum_up(v: np.ndarray) -> float:
    return _up(_pad(float(np.sum(v)), v.size))


# ---- the chain of the graph --------------------------------------------------------------------
def _kinked(slope_below: Callable[[Node], np.ndarray]):
    """Slopes of x above 0, a x below (a from the node): [min(a, 1), max(a, 1)]."""
    def slopes(node: Node):
        a = slope_below(node)
        return np.minimum(a, 1.0), np.maximum(a, 1.0)
    return slopes


def _const(lo: float, hi: float):
    return lambda node: (np.asarray(lo), np.asarray(hi))


def _param(node: Node, key: str) -> np.ndarray:
    v = node.params[key]
    return v.detach().cpu().double().numpy() if isinstance(v, torch.Tensor) else np.asarray(float(v))


# Secant-slope ranges over the whole real line, for activations whose rule offers no slope_range
# (Sigmoid and Tanh do: [0, 1/4] and [0, 1], widened by their rounding).  Each entry is a
# mathematical fact of the function, not of its float evaluation.
SLOPES: dict[str, Callable[[Node], tuple[np.ndarray, np.ndarray]]] = {
    "Relu": _const(0.0, 1.0),
    "LeakyRelu": _kinked(lambda n: _param(n, "alpha")),
    "PRelu": _kinked(lambda n: _param(n, "slope")),
    "Abs": _const(-1.0, 1.0),
    "Clip": _const(0.0, 1.0),
    "Softplus": _const(0.0, 1.0),                   # sigmoid(x)
    "Softsign": _const(0.0, 1.0),                   # 1 / (1 + |x|)^2
    "Erf": _const(0.0, _up(2 / math.sqrt(math.pi))),  # 2 / sqrt(pi) e^{-x^2}, the constant rounded up
    # alpha e^x below 0 (between 0 and alpha), 1 above
    "Elu": lambda n: (np.minimum(_param(n, "alpha"), 0.0), np.maximum(_param(n, "alpha"), 1.0)),
    # clamp(alpha x + beta, 0, 1): slope alpha or 0
    "HardSigmoid": lambda n: (np.minimum(_param(n, "alpha"), 0.0), np.maximum(_param(n, "alpha"), 0.0)),
}


def _activation_slopes(node: Node, rule) -> tuple[np.ndarray, np.ndarray] | None:
    """(s_min, s_max), each (node.size,), from the rule's slope_range over the real line when it
    offers one, else from SLOPES; None when neither knows the op."""
    inf = torch.full((1,) + node.shape, math.inf, dtype=torch.float64)
    got = rule.slope_range(node, -inf, inf)
    if got is not None:
        lo, hi = (t.reshape(-1).double().numpy() for t in got)
    elif node.op in SLOPES:
        lo, hi = SLOPES[node.op](node)
    else:
        return None
    lo = np.broadcast_to(np.asarray(lo, np.float64), node.shape).reshape(-1).copy()
    hi = np.broadcast_to(np.asarray(hi, np.float64), node.shape).reshape(-1).copy()
    return (lo, hi) if np.all(np.isfinite(lo) & np.isfinite(hi) & (lo <= hi)) else None


def chain_roles(graph: Graph) -> list[tuple[Node, str]]:
    """Each node with its role, "linear" or "activation"; raises ChainError naming every node
    that breaks the chain (several inputs, not reading the previous value, unknown slopes)."""
    roles, bad, prev = [], [], graph.input_name
    for node in graph.nodes:
        rule = RULES[node.op]
        if node.inputs != (prev,):
            bad.append(f"{node.name} ({node.op}) reads {list(node.inputs)}, not only the previous value {prev!r}")
        elif rule.linear:
            roles.append((node, "linear"))
        elif isinstance(rule, ActivationRule) and not rule.multi_planes \
                and node.shape == graph.shape_of(prev) and _activation_slopes(node, rule) is not None:
            roles.append((node, "activation"))
        else:
            bad.append(f"{node.name} ({node.op}) is neither affine nor an elementwise activation with known slopes")
        prev = node.name
    if prev != graph.output_name:
        bad.append(f"the chain ends at {prev!r}, not at the output {graph.output_name!r}")
    if bad:
        raise ChainError("not a chain of affine segments and activations: " + "; ".join(bad))
    return roles


def _push(node: Node, X: torch.Tensor, E: torch.Tensor, in_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """One linear node applied to basis images: Y = fl(L(X)) and E' >= |L*(X*) - Y| entrywise
    whenever |X* - X| <= E, L* the model's exact map (within DERIVED u of the IR's, relative to
    term magnitudes).  X, E: (k, *in_shape); Y, E': (k, *node.shape).  Fresh error: the
    evaluation's gamma(n + 5) and the model's DERIVED u of the magnitudes |L| |X| + |bias| (the
    default apply subtracts the bias), plus flushed subnormals, as in bounds/interval.py."""
    rule = RULES[node.op]
    Y = rule.apply(node, X)
    if rule.is_exact(node):   # copies only: errors move with their elements
        return Y, rule.apply_abs(node, E)
    shapes = [tuple(in_shape)]
    n = rule.sum_terms(node, shapes)
    mag = rule.apply_abs(node, X.abs())
    bm = rule.bias_magnitude(node, X, shapes)
    if bm is not None:
        mag = mag + bm
    L1 = rule.apply_abs(node, torch.ones((1,) + tuple(in_shape), dtype=X.dtype))
    m1 = X.abs().reshape(X.shape[0], -1).sum(-1).reshape((-1,) + (1,) * (Y.dim() - 1))
    fresh = (coef(n + 5, n + 2, X.dtype) + model_coef(None, n, n + 2, X.dtype)) * mag \
        + 4 * floor(X.dtype, 2 * n + 2, L1, m1)
    carried = rule.apply_abs(node, E) * (1 + coef(n + DERIVED + 4, n + 2, X.dtype))
    return Y, accumulate(carried, fresh)


def _dense(graph: Graph, nodes: list[Node], in_name: str) -> Dense:
    """The linear part of a segment of linear nodes reading in_name, pushed a basis at a time."""
    in_shape = graph.shape_of(in_name)
    n_in = math.prod(in_shape)
    n_out = math.prod(graph.shape_of(nodes[-1].name)) if nodes else n_in
    if n_in * n_out > MAX_DENSE:
        raise ChainError(f"the affine segment after {in_name!r} has a {n_out} x {n_in} matrix, "
                             f"more than {MAX_DENSE} entries")
    Ws, Es = [], []
    for start in range(0, n_in, CHUNK):
        k = min(CHUNK, n_in - start)
        X = torch.zeros((k, n_in), dtype=torch.float64)
        X[torch.arange(k), torch.arange(start, start + k)] = 1.0
        X, E = X.reshape((k,) + tuple(in_shape)), torch.zeros((k,) + tuple(in_shape), dtype=torch.float64)
        shape = in_shape
        with torch.no_grad():
            for node in nodes:
                X, E = _push(node, X, E, shape)
                shape = node.shape
        Ws.append(X.reshape(k, -1).numpy())
        Es.append(E.reshape(k, -1).numpy())
    W, E = np.concatenate(Ws).T.copy(), np.concatenate(Es).T.copy()
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(E))):
        raise ChainError(f"the affine segment after {in_name!r} has non-finite weights")
    return Dense(W, E)


def extract_chain(graph: Graph) -> Chain:
    """The graph as D_0, act_1, D_1, ..., act_{L-1}, D_{L-1} (an empty segment is the identity).
    graph: float64 on the CPU (api.load_checked).  Raises ChainError."""
    graph = graph.to("cpu", torch.float64)
    dense, slopes, seg, seg_in = [], [], [], graph.input_name
    for node, role in chain_roles(graph):
        if role == "linear":
            seg.append(node)
            continue
        dense.append(_dense(graph, seg, seg_in))
        slopes.append(_activation_slopes(node, RULES[node.op]))
        seg, seg_in = [], node.name
    dense.append(_dense(graph, seg, seg_in))
    return Chain(tuple(dense), tuple(slopes))

def certainly_pd(A: np.ndarray, err: float = 0.0) -> bool:
    """True only if every symmetric matrix within spectral distance err of the symmetric float
    matrix A (n, n) is positive definite.

    Cholesky of B = fl(A - c I): on success R^T R = B + dB with ||dB||_2 <= g tr(B),
    g = gamma(n+1) / (1 - gamma(n+1)) (Higham Thm 10.3 and (10.7), any summation order),
    plus 4 n (2 (n + 2) + max b_ii) tiny for underflow (Rump 2006, with tiny in place of the
    subnormal unit: FTZ may be on).  A - B is diagonal, >= c - u max|b_ii| (the shift rounds),
    so A + F (||F|| <= err) >= (c - err - u max|b_ii| - g tr(B) - floor) I, checked > 0 below.
    """
    A = np.asarray(A, dtype=np.float64)
    n = A.shape[0]
    if n == 0:
        return True
    if not (np.all(np.isfinite(A)) and math.isfinite(err)):
        return False
    d = np.diag(A)
    g = gamma(n + 1, torch.float64)
    g = g / (1 - g)
    under = 4 * n * (2 * (n + 2) + float(np.abs(d).max())) * TINY
    c = 1.25 * (err + g * _sum_up(np.maximum(d, 0)) + 2 * U * float(np.abs(d).max()) + under) + TINY
    B = A - c * np.eye(n)
    try:
        np.linalg.cholesky(B)
    except np.linalg.LinAlgError:
        return False
    db = np.diag(B)
    if np.any(db <= 0):
        return False
    loss = (err + 2 * U * float(db.max()) + g * _sum_up(db) + under) * (1 + 8 * U)
    return c * (1 - 8 * U) > loss
