"""The one verdict type, its spellings, and the result object of a query."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy costs 60 ms of start-up that --version and supports do not need
    import numpy as np


class Verdict(Enum):
    UNSAT = "unsat"
    SAT = "sat"
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"
    ERROR = "error"


class Dialect(Enum):
    STANDARD = "standard"  # the VNN-LIB 2.0 command line
    VNNCOMP = "vnncomp"    # the VNN-COMP result file


def spell(v: Verdict, dialect: Dialect) -> str:
    if v is Verdict.TIMEOUT and dialect is Dialect.STANDARD:
        return "timed-out"
    if v is Verdict.ERROR and dialect is Dialect.STANDARD:
        return "unknown"
    return v.value


@dataclass
class Result:
    """verdict; for SAT the confirmed counterexample: x (the flat input, float32 as fed to
    onnxruntime) and y (onnxruntime's flat output); seconds: wall time of the decision;
    stats: what each stage did (for logs and benchmarks)."""

    verdict: Verdict
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)
    reason: str = ""
