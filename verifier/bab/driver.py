"""Choosing the branching strategy: input splits for low-dimensional inputs, ReLU splits
otherwise."""
from __future__ import annotations

from ..spec import Cases
from ..verdict import Result
from .input_split import input_split_bab


def branch_and_bound(q, cases: Cases, pre: dict | None = None) -> Result:
    """pre: activation input bounds already known for the cases; every domain inherits them."""
    if q.graph.input_size <= q.cfg.bab.input_split_max_dim:
        return input_split_bab(q, cases, pre)
    from .relu_split import relu_split_bab

    return relu_split_bab(q, cases, pre)
