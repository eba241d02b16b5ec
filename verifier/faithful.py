"""Before anything is proved: the imported graph, as the engine bounds it, must compute what
onnxruntime computes on the original model, at a few points of the query's input region.

A misimported operator (a wrong axis, pad or transposition) moves the outputs by a sizeable part
of their magnitude; float32 rounding moves them by ~1e-7 of the values they are computed from.
The tolerance (``tolerance``) separates the two with a wide margin on both sides.
"""
from __future__ import annotations

import numpy as np
import torch

from .api import InputError
from .evaluate import forward
from .ir import Graph

# Per point, an output may differ from onnxruntime's by REL_TOL of the largest |output| plus
# NOISE_FACTOR times the largest difference between the graph computed in float32 and in float64
# (its own float32 rounding: the stand-in for onnxruntime's, which sums in another order).
# Measured on every network of the shared benchmarks (8 points each): onnxruntime's difference
# from the float64 graph is at most 2.7e-5 of the largest |output| (ACAS Xu 3_8, whose outputs
# of ~1e-2 cancel O(10) hidden values; 4e-7 elsewhere) and at most 5.6 times the float32 noise
# (1 to 3 on most).  2^-14 = 6.1e-5 and 64 leave 2x and 11x of room; a misimported graph is off
# by 1e-2 or more of the largest output, 150x above the relative term.
REL_TOL = 2.0 ** -14
NOISE_FACTOR = 64.0
ABS_TOL = 1e-30  # all-zero outputs (a dead ReLU layer): both sides must give ~0
POINTS = 4       # random points of the region, besides the centre of the first case


def sample_points(prop, n_in: int, points: int = POINTS, seed: int = 0) -> np.ndarray | None:
    """(1 + points, n_in) float64: the centre of the first case's box and random points of
    randomly chosen cases; None when there is no case or the boxes do not fit the network."""
    cases = list(prop.cases)
    if not cases or any(np.asarray(c.lo).size != n_in for c in cases):
        return None
    rng = np.random.default_rng(seed)
    lo0, hi0 = np.asarray(cases[0].lo, dtype=np.float64), np.asarray(cases[0].hi, dtype=np.float64)
    xs = [lo0 + (hi0 - lo0) / 2]
    for k in rng.integers(len(cases), size=points):
        lo, hi = np.asarray(cases[k].lo, dtype=np.float64), np.asarray(cases[k].hi, dtype=np.float64)
        xs.append(lo + (hi - lo) * rng.uniform(size=n_in))
    return np.stack(xs)


def check_faithful(graph: Graph, ref, prop, points: int = POINTS) -> None:
    """Raise InputError unless the graph (float64, CPU) agrees with onnxruntime (`ref`, a
    confirm.ReferenceModel) on every output at the sampled points of the property's region."""
    xs = sample_points(prop, graph.input_size, points)
    if xs is None:
        return
    xs = xs.astype(ref.input_dtype).astype(np.float64)  # both sides see the same input
    x = torch.as_tensor(xs).reshape((len(xs),) + tuple(graph.input_shape))
    with torch.no_grad():
        y = forward(graph, x).reshape(len(xs), -1).numpy()
        y32 = forward(graph.to("cpu", torch.float32), x.float()).reshape(len(xs), -1).double().numpy()
    for i in range(len(xs)):
        _compare(y[i], y32[i], _run(ref, xs[i]))


def _run(ref, x: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(ref.run(x), dtype=np.float64).reshape(-1)
    except Exception as e:  # onnxruntime's own types: a kernel that refuses this form at run time
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputError(f"onnxruntime cannot run this model: {first}") from None


def tolerance(want: np.ndarray, noise: np.ndarray) -> float:
    """How far the graph's outputs may be from onnxruntime's `want` at one point; noise: the
    graph's float32 outputs minus its float64 ones there."""
    top = float(np.max(np.abs(want))) if want.size else 0.0
    return REL_TOL * top + NOISE_FACTOR * float(np.max(np.abs(noise), initial=0.0)) + ABS_TOL


def _compare(got: np.ndarray, got32: np.ndarray, want: np.ndarray) -> None:
    if got.size != want.size:
        raise InputError(f"the imported graph disagrees with onnxruntime: {got.size} outputs where "
                         f"onnxruntime has {want.size}")
    bad = ~(np.isfinite(got) & np.isfinite(want))  # NaN and infinities never agree
    if not bad.any():
        tol = tolerance(want, got32 - got)  # inf or NaN when float32 overflowed: nothing passes
        bad = ~(np.abs(got - want) <= tol) | (not np.isfinite(tol))
    if not np.all(np.isfinite(want)):
        j = int(np.flatnonzero(~np.isfinite(want))[0])
        raise InputError(f"onnxruntime computes {want[j]} for output {j} at a point of the input region: the model "
                         "is not a finite function there (a division by zero, an overflow)")
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InputError(f"the imported graph disagrees with onnxruntime at output {j}: {got[j]:.9g} "
                         f"where onnxruntime gives {want[j]:.9g}, at a point of the input region "
                         "(the model uses a form that the importer misreads)")
