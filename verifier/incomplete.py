"""Incomplete bounds on whole subproblems: IBP, CROWN and alpha-CROWN lower bounds of every
row c.y + d over each subproblem's box."""
from __future__ import annotations

import torch
from torch import Tensor

from .bounds.alpha import AlphaConfig, alpha_lower
from .bounds.backward import crown_intermediate, crown_output
from .bounds.interval import interval_bounds
from .budget import Deadline
from .ir import Graph
from .spec import Cases, refuted


def ibp_lower(graph: Graph, sp: Cases) -> Tensor:
    """(P, k) lower bounds of the rows from interval bounds of the output."""
    ylo, yhi = interval_bounds(graph, sp.lo, sp.hi)[graph.output_name]
    ylo, yhi = ylo.reshape(len(sp), 1, -1), yhi.reshape(len(sp), 1, -1)
    return (sp.C.clamp(min=0) * ylo + sp.C.clamp(max=0) * yhi).sum(-1) + sp.d


def crown_lower(graph: Graph, sp: Cases, deadline: Deadline | None = None) -> tuple[Tensor, dict]:
    """(P, k) CROWN lower bounds of the rows, and the intermediate bounds used."""
    with torch.no_grad():
        pre = crown_intermediate(graph, sp.lo, sp.hi, deadline=deadline)
        lb = crown_output(graph, sp.lo, sp.hi, sp.C, pre) + sp.d
        # on wide boxes with many unstable ReLUs CROWN can be looser than IBP on some rows
        lb = torch.maximum(lb, ibp_lower(graph, sp))
    return lb, pre


def alpha_crown_lower(graph: Graph, sp: Cases, pre: dict, cfg: AlphaConfig, deadline: Deadline,
                      tol: float) -> Tensor:
    return alpha_lower(graph, sp.lo, sp.hi, sp.C, sp.d, pre, cfg, deadline,
                       lambda lb: bool(refuted(sp, lb, tol).all()))
