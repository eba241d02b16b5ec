"""Elementwise nonlinearities: ReLU, Sigmoid, Tanh, with sound intervals and linear planes."""
from __future__ import annotations

import torch
from torch import Tensor

from ..ir import Node
from .registry import ActivationRule, converts, rule


def _ulp_margin(v: Tensor) -> Tensor:
    """A few ulps of v's dtype: covers the rounding of evaluating exp/tanh (<= 1-2 ulps)."""
    return 4 * torch.finfo(v.dtype).eps * (1 + v.abs())


@rule("Relu")
class ReluRule(ActivationRule):
    splittable = True

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return torch.relu(x)

    def interval(self, node, lo, hi):
        return torch.relu(lo), torch.relu(hi)

    def _upper(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        unstable = (lo < 0) & (hi > 0)
        denom = torch.where(unstable, hi - lo, torch.ones_like(hi))
        uw = torch.where(unstable, hi / denom, (lo >= 0).to(hi.dtype))
        # the chord through (lo, 0) and (hi, hi); taking the larger of the two intercepts keeps
        # it above both ends when hi / (hi - lo) rounds down or underflows (subnormal hi: uw = 0)
        ub = torch.where(unstable, torch.maximum(-lo * uw, hi - hi * uw), torch.zeros_like(hi))
        return uw, ub

    def relax(self, node, lo, hi):
        uw, ub = self._upper(lo, hi)
        default = (hi > -lo).to(lo.dtype)  # adaptive: slope 1 when the positive side dominates
        lw, lb = self.lower_with_slope(node, lo, hi, default)
        return lw, lb, uw, ub

    def lower_slope_range(self, node, lo, hi):
        return torch.zeros_like(lo), torch.ones_like(lo)

    def lower_with_slope(self, node, lo, hi, slope):
        lw = torch.where(lo >= 0, torch.ones_like(slope), torch.where(hi <= 0, torch.zeros_like(slope), slope))
        return lw, torch.zeros_like(lw)


class _SShaped(ActivationRule):
    """Sigmoid-like: increasing, convex below 0 and concave above 0, derivative largest at 0."""

    def f(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def df(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def evaluate(self, node: Node, x: Tensor) -> Tensor:
        return self.f(x)

    def interval(self, node, lo, hi):
        flo, fhi = self.f(lo), self.f(hi)
        return flo - _ulp_margin(flo), fhi + _ulp_margin(fhi)

    def relax(self, node, lo, hi):
        """Convex part (hi <= 0): chord above, tangent at the midpoint below; concave part
        (lo >= 0) the mirror image; across 0 a parallelogram whose slope is the smallest
        derivative on [lo, hi] (at an endpoint), so f - k x is monotone and its extremes sit at
        the endpoints."""
        flo, fhi = self.f(lo), self.f(hi)
        width = hi - lo
        wide = width > 1e-6 * (1 + lo.abs() + hi.abs())
        chord_k = torch.where(wide, (fhi - flo) / torch.where(wide, width, torch.ones_like(width)), self.df(lo))
        chord_b = flo - chord_k * lo
        mid = (lo + hi) / 2
        tan_k = self.df(mid)
        tan_b = self.f(mid) - tan_k * mid
        par_k = torch.minimum(self.df(lo), self.df(hi))
        par_lb = flo - par_k * lo
        par_ub = fhi - par_k * hi
        convex = wide & (hi <= 0)
        concave = wide & (lo >= 0)
        lw = torch.where(convex, tan_k, torch.where(concave, chord_k, par_k))
        lb = torch.where(convex, tan_b, torch.where(concave, chord_b, par_lb))
        uw = torch.where(convex, chord_k, torch.where(concave, tan_k, par_k))
        ub = torch.where(convex, chord_b, torch.where(concave, tan_b, par_ub))
        # rounding of f, of the slopes and of k*x: widen the planes by a few ulps of their scale
        scale = flo.abs() + fhi.abs() + (lw.abs() + uw.abs()) * (lo.abs() + hi.abs())
        slack = 8 * torch.finfo(lo.dtype).eps * (1 + scale)
        return lw, lb - slack, uw, ub + slack


@rule("Sigmoid")
class SigmoidRule(_SShaped):
    def f(self, x):
        return torch.sigmoid(x)

    def df(self, x):
        s = torch.sigmoid(x)
        return s * (1 - s)


@rule("Tanh")
class TanhRule(_SShaped):
    def f(self, x):
        return torch.tanh(x)

    def df(self, x):
        return 1 - torch.tanh(x) ** 2


@converts("Relu", "Sigmoid", "Tanh")
def _activation(ctx, n) -> None:
    ctx.emit(n.op_type, [ctx.var(n.input[0])], {}, n.output[0])
