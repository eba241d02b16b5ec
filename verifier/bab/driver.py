"""Choosing the branching strategy: input splits for low-dimensional inputs, activation splits
otherwise (or as the configuration forces)."""
from __future__ import annotations

from ..spec import Cases
from ..verdict import Result
from .input_split import input_split_bab


def branch_and_bound(q, cases: Cases, pre: dict | None = None) -> Result:
    """pre: activation input bounds already known for the cases; every domain inherits them."""
    how = q.cfg.bab.branching
    if how == "input" or (how == "auto" and q.graph.input_size <= q.cfg.bab.input_split_max_dim):
        return input_split_bab(q, cases, pre)
    from .activation_split import activation_split_bab

    return activation_split_bab(q, cases, pre)
