"""Choosing the branching strategy: input splits for low-dimensional inputs, activation splits
otherwise (or as the configuration forces); when activation splitting can make no progress,
input splitting takes over for the time that is left."""
from __future__ import annotations

import logging

from ..spec import Cases
from ..verdict import Result
from .input_split import input_split_bab

log = logging.getLogger("verifier")


def branch_and_bound(q, cases: Cases, pre: dict | None = None) -> Result:
    """pre: activation input bounds already known for the cases; every domain inherits them."""
    how = q.cfg.bab.branching
    if how == "input" or (how == "auto" and q.graph.input_size <= q.cfg.bab.input_split_max_dim):
        return input_split_bab(q, cases, pre)
    from .activation_split import Exhausted, activation_split_bab

    try:
        return activation_split_bab(q, cases, pre)
    except Exhausted as why:
        log.info("activation splitting stops (%s): input splitting for the time left", why)
        return input_split_bab(q, cases, pre)
