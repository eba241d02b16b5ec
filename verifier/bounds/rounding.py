"""A-posteriori bounds on floating-point rounding error, for bounds that must never be wrong.

torch and BLAS neither honour rounding modes nor fix a summation order, so every bound is
computed in round-to-nearest and then widened by a proven bound on its error (Higham,
"Accuracy and Stability of Numerical Algorithms", ch. 3).  With u = eps / 2 the unit roundoff:

  * a computed sum (or dot product, FMA or not, blocked or not, any order) of n terms t_i
    differs from the exact sum by at most gamma(n) * sum|t_i|, gamma(n) = n u / (1 - n u);
  * the magnitude sum |t| is itself computed in float and so low by up to gamma of its own
    length: `coef` folds that in, with room for the few roundings of the error arithmetic;
  * the pipeline flushes subnormals (FTZ + DAZ, ~20x faster branch and bound), so an operation
    can also be off by tiny = finfo.tiny in absolute terms, times (1 + |other operand|) when a
    subnormal operand is read as 0 (a product x * y with |x| < tiny loses |x y| <= tiny |y|).
    Every error below carries such an absolute term; without the flush the true error is
    smaller (gradual underflow loses at most u * tiny per operation).

An error term is an upper bound computed in float; `accumulate` keeps a running total an upper
bound despite the rounding of its own additions.  `lower` / `upper` turn a value and its error
into a rigorous bound; NaN or infinity never bound anything (-inf / +inf).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def unit(dtype: torch.dtype) -> float:
    """The unit roundoff u: 2^-53 (float64), 2^-24 (float32)."""
    return torch.finfo(dtype).eps / 2


def tiny(dtype: torch.dtype) -> float:
    """The smallest normal number: 2.2e-308 (float64), 1.2e-38 (float32)."""
    return torch.finfo(dtype).tiny


def gamma(n: int, dtype: torch.dtype) -> float:
    """Higham's gamma_n = n u / (1 - n u), rounded up (computed in float64 with three roundings:
    two steps of nextafter cover them); inf once n u >= 1/2, where no useful bound exists."""
    nu = n * unit(dtype)
    if nu >= 0.5:
        return math.inf
    g = nu / (1 - nu)
    return math.nextafter(math.nextafter(g, math.inf), math.inf)


def coef(n: int, n_mag: int, dtype: torch.dtype) -> float:
    """G such that fl(G * mag_hat) >= gamma(n) * mag whenever mag_hat is a float computation of
    the exact magnitude mag that is low by at most gamma(n_mag) (a sum of n_mag rounded terms):
    G = gamma(n) (1 + 2u) / (1 - gamma(n_mag)); the (1 + 2u) pays for the product itself."""
    gm = gamma(n_mag, dtype)
    if gm >= 0.5:
        return math.inf
    g = gamma(n, dtype) * (1 + 2 * unit(dtype)) / (1 - gm)
    return math.nextafter(math.nextafter(g, math.inf), math.inf)


def floor(dtype: torch.dtype, count: float | Tensor, *mags: float | Tensor) -> Tensor | float:
    """An absolute error term for flushed subnormals: 4 tiny (count + sum(mags)).  count >= 1
    operations; mags: magnitude sums of the operands read (each subnormal operand read as 0
    loses tiny times the other operand).  The factor 4 covers (1 + gamma) growth of these errors
    through later additions and the rounding of this expression; count >= 1 keeps the result
    a normal number (a product by tiny of something below 1 would itself be flushed)."""
    total = count
    for m in mags:
        total = total + m
    return (total * 4) * tiny(dtype)


def accumulate(err: Tensor, more: Tensor) -> Tensor:
    """err + more rounded up: (err + more) * (1 + 4u); with err, more >= 0 the two roundings
    lose at most a factor (1 - u)^2, which (1 + 4u) more than restores."""
    return (err + more) * (1 + 4 * unit(err.dtype))


def _step_down(v: Tensor) -> Tensor:
    """A float below every real number that v can be the rounded value of: one step of
    nextafter covers a rounding to nearest of a normal result; minus 2 tiny covers a result
    flushed to 0 (and a subnormal operand read as 0 in the last operation)."""
    return torch.nextafter(v, torch.full_like(v, -math.inf)) - 2 * tiny(v.dtype)


def lower(value: Tensor, err: Tensor | float | None = None) -> Tensor:
    """A rigorous lower bound of every real s with |s - value| <= err (value the computed
    result of its last operation, err >= 0 an upper bound of the error before it).  Non-finite
    value or err gives -inf.  Differentiable in value (err is treated as a constant)."""
    v = value if err is None else value - (err.detach() if isinstance(err, Tensor) else err)
    with torch.no_grad():
        base = v.detach()
        ok = torch.isfinite(base)
        if isinstance(err, Tensor):
            ok = ok & torch.isfinite(err)
        elif err is not None:
            ok = ok & bool(math.isfinite(err))
        shift = _step_down(base) - base  # exact: both are floats a few ulps (or 2 tiny) apart
        shift = torch.where(ok, shift, torch.full_like(base, -math.inf))
    return torch.where(ok, v + shift, shift)


def upper(value: Tensor, err: Tensor | float | None = None) -> Tensor:
    """The mirror of lower: a rigorous upper bound; non-finite gives +inf."""
    return -lower(-value, err)


def clean_bounds(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds fit to decide with: NaN becomes -inf (lower) / +inf (upper), since an unknown bound
    is no bound ((lo < 0) & (hi > 0) is False for NaN, so a NaN would otherwise pass for a
    stable neuron), and a subnormal bound moves outwards to 0 or +-tiny: with subnormals read
    as 0 (DAZ), lo = -1e-310 would compare as >= 0 and pass for a stable neuron too."""
    lo = torch.nan_to_num(lo, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    hi = torch.nan_to_num(hi, nan=math.inf, posinf=math.inf, neginf=-math.inf)
    return _outward_subnormal(lo, -1), _outward_subnormal(hi, +1)


def _outward_subnormal(t: Tensor, direction: int) -> Tensor:
    """Nonzero subnormals of t to 0 or direction * tiny, whichever lies outwards.  Tested on the
    bits (abs and the integer view ignore DAZ); most tensors have none, which one test settles."""
    ints = {torch.float64: torch.int64, torch.float32: torch.int32}.get(t.dtype)
    if ints is None:
        return t
    bits = t.abs().view(ints)
    sub = (bits != 0) & (bits < _TINY_BITS[t.dtype])
    if not bool(sub.any()):
        return t
    eps = tiny(t.dtype)
    zero, edge = torch.zeros_like(t), torch.full_like(t, direction * eps)
    neg = torch.signbit(t)
    out = torch.where(neg, edge, zero) if direction < 0 else torch.where(neg, zero, edge)
    return torch.where(sub, out, t)


# the bit pattern of tiny: nonnegative floats order like their bits read as integers
_TINY_BITS = {torch.float64: 0x0010000000000000, torch.float32: 0x00800000}


def magnitude(lo: Tensor, hi: Tensor) -> Tensor:
    """max(|lo|, |hi|) >= |v| for v in [lo, hi]: +inf where a bound is NaN or infinite, and at
    least tiny (a subnormal magnitude would be read as 0)."""
    m = torch.nan_to_num(torch.maximum(lo.abs(), hi.abs()), nan=math.inf)
    return m.clamp(min=tiny(m.dtype))


# ---- the function bounded: the IR against the model ---------------------------------------------
# The constants the importer derives (BatchNormalization's scale gamma / sqrt(var + eps), a
# division's reciprocal, an affine map folded into the layer before it) are float64 roundings
# of the real ones, each within DERIVED roundings of its exact value: the IR's affine maps then
# differ from the model's by at most DERIVED u64 relative to the magnitudes of their terms.
DERIVED = 8
# What onnxruntime's float32 kernels for these functions were measured to miss by, absolute,
# over 5.5 million float32 points from 1e-45 to 100 in magnitude (against float64): at most
# 1.8e-7 (Sigmoid) and 3.1e-7 (Tanh).  The float model assumes 2^-20 (9.5e-7), about 3x more;
# float64 kernels are assumed within 2^-40.  (ReLU is exact.)
MODEL_FUNCTION_ERROR = {torch.float32: 2.0 ** -20, torch.float64: 2.0 ** -40}


def model_coef(float_model: torch.dtype | None, n: int, n_mag: int, dtype: torch.dtype) -> float:
    """G such that G * fl(M) bounds how far the function a linear node stands for can be from
    the IR's exact map at an output whose terms have magnitudes summing to M (|L| m + |bias|,
    computed in dtype from n_mag terms): the derived constants' DERIVED u64, and for a float
    model, one evaluation in that type in any order, each product and the bias rounded, the
    weights possibly fused in that type first: gamma(n + 2 + DERIVED) of the model's u."""
    g = DERIVED * unit(torch.float64)
    if float_model is not None:
        g += gamma(n + 2 + DERIVED, float_model)
    gm = gamma(n_mag, dtype)
    if gm >= 0.5:
        return math.inf
    g = g * (1 + 4 * unit(dtype)) / (1 - gm)
    return math.nextafter(math.nextafter(g, math.inf), math.inf)


def model_floor(float_model: torch.dtype | None, n: int) -> float:
    """An absolute term for the model's own underflow: onnxruntime keeps subnormals (gradual
    underflow loses at most u tiny per operation), so (n + 2) tiny of its type is ample."""
    return 0.0 if float_model is None else (n + 2) * tiny(float_model)


def model_function_error(float_model: torch.dtype | None, rule, node, *boxes) -> float | Tensor:
    """How far the model's evaluation of an activation may be from the real function: 0 over
    the reals (None), the rule's own bound for a float model (inf when it has none): a float,
    or elementwise (B, *shape) where it grows with the values (a rounded product).  boxes: the
    (lo, hi) bounds of the node's inputs, None where unknown."""
    if float_model is None:
        return 0.0
    return rule.model_error(node, float_model, *boxes)


def product_model_error(float_model: torch.dtype, mag: Tensor) -> Tensor:
    """The error of one product rounded in float_model (IEEE, gradual underflow) whose exact value
    is at most mag in magnitude: u mag + u tiny, here u mag + tiny, rounded up (mag itself may be
    a float64 product of magnitudes, low by a rounding); +inf where the product may overflow."""
    e = (mag * unit(float_model) + tiny(float_model)) * (1 + 4 * unit(mag.dtype))
    return torch.where(mag <= torch.finfo(float_model).max / 2, e, torch.full_like(e, math.inf))


def model_planes(float_model: torch.dtype | None, rule, node, planes, *boxes, row_axis: bool = False):
    """Planes (lw, lb, uw, ub) of the real function moved apart by the model's error of the
    function (for a float model; unchanged over the reals): the model's output lies within e of
    f, so lw x + lb - e <= model(x) <= uw x + ub + e, with the two shifts rounded outwards.
    boxes: the node's input bounds (B, *shape) each; row_axis: the planes carry a row axis
    after the batch one (B, q or 1, *shape)."""
    if float_model is None:
        return planes
    e = model_function_error(float_model, rule, node, *boxes)
    if not isinstance(e, Tensor) and e == 0.0:
        return planes
    if isinstance(e, Tensor) and row_axis:
        e = e.unsqueeze(1)
    lw, lb, uw, ub = planes
    return lw, lower(lb, e), uw, upper(ub, e)
