"""Incomplete bounds on whole subproblems: IBP, CROWN and alpha-CROWN lower bounds of every
row c.y + d over each subproblem's box."""
from __future__ import annotations

import torch
from torch import Tensor

from .bounds.alpha import AlphaConfig, alpha_lower
from .bounds.backward import crown_intermediate, crown_output
from .bounds.interval import interval_bounds
from .bounds.rounding import coef, floor, lower, magnitude
from .budget import Deadline
from .ir import Graph
from .spec import Cases, refuted


def ibp_lower(graph: Graph, sp: Cases) -> Tensor:
    """(P, k) rigorous lower bounds of the rows from interval bounds of the output: the sum of
    the n products and d rounds by at most gamma(n + 1) of their magnitudes (plus 2 tiny per
    operation and per operand for flushed subnormals).  A row that reads one element with
    coefficient +-1 and no constant (y_i < 0, say) takes that element's bound as it is: no
    arithmetic, so a bound of exactly 0 (a ReLU's output) refutes a strict row."""
    ylo, yhi = interval_bounds(graph, sp.lo, sp.hi)[graph.output_name]
    ylo, yhi = ylo.reshape(len(sp), 1, -1), yhi.reshape(len(sp), 1, -1)
    t = sp.C.clamp(min=0) * ylo + sp.C.clamp(max=0) * yhi
    n = t.shape[-1]
    err = coef(n + 1, n + 3, t.dtype) * (t.abs().sum(-1) + sp.d.abs())
    err = err + floor(t.dtype, 2 * n + 2, sp.C.abs().sum(-1), magnitude(ylo, yhi).sum(-1))
    return torch.maximum(lower(t.sum(-1) + sp.d, err), _copied_bounds(sp, ylo, yhi))


def _copied_bounds(sp: Cases, ylo: Tensor, yhi: Tensor) -> Tensor:
    """(P, k): for rows +-y_i + 0, y_i's lower bound or minus its upper bound, selected and negated
    without arithmetic (a sign flip; subnormal values, which flushing could misread, excluded);
    -inf for every other row."""
    single = ((sp.C != 0).sum(-1) == 1) & (sp.C.abs().amax(-1) == 1) & (sp.d == 0)
    i = sp.C.abs().argmax(-1, keepdim=True)
    sign = sp.C.gather(-1, i).squeeze(-1)
    lo_i = ylo.expand_as(sp.C).gather(-1, i).squeeze(-1)
    hi_i = yhi.expand_as(sp.C).gather(-1, i).squeeze(-1)
    v = torch.where(sign > 0, lo_i, -hi_i)
    normal = (v == 0) | (v.abs() >= torch.finfo(v.dtype).tiny)
    return torch.where(single & normal & ~torch.isnan(v), v, torch.full_like(v, -torch.inf))


def crown_lower(graph: Graph, sp: Cases, deadline: Deadline | None = None, record: dict | None = None
                ) -> tuple[Tensor, dict]:
    """(P, k) CROWN lower bounds of the rows, and the intermediate bounds used.  record: receives
    the coefficients of the final pass (record[graph.input_name]: (P, k, *input_shape))."""
    with torch.no_grad():
        pre = crown_intermediate(graph, sp.lo, sp.hi, deadline=deadline)
        lb = lower(crown_output(graph, sp.lo, sp.hi, sp.C, pre, record=record) + sp.d)  # + d rounds once more
        # on wide boxes with many unstable ReLUs CROWN can be looser than IBP on some rows
        lb = torch.maximum(lb, ibp_lower(graph, sp))
    return lb, pre


def alpha_crown_lower(graph: Graph, sp: Cases, pre: dict, cfg: AlphaConfig, deadline: Deadline,
                      tol: float) -> Tensor:
    return alpha_lower(graph, sp.lo, sp.hi, sp.C, sp.d, pre, cfg, deadline,
                       lambda lb: bool(refuted(sp, lb, tol).all()))
