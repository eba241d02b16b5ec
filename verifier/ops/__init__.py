"""Operator knowledge: the two registries (registry.py) and the modules that fill them, one per
family of operators.  A module is imported when one of its names is first looked up (the
registries' `where`, read here off each module's @rule / @converts decorators), so a query
imports the modules of its own operators only; listing a registry imports them all."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from .registry import CONVERTERS, RULES, ActivationRule, LinearRule, OpRule, converts, rule, side_boxes

FAMILIES = ("linear", "shape", "activation", "pool", "reduce", "resize", "elementwise", "piecewise",
            "relational", "bilinear", "softmax", "minmax", "layernorm", "compare")

_DECLARED = re.compile(r'^@(rule|converts)\(([^)]*)\)', re.M)


def _load(family: str | None) -> None:
    for f in FAMILIES if family is None else (family,):
        importlib.import_module(f"{__name__}.{f}")


def _index() -> bool:
    """Fill the registries' `where` from the modules' sources; False when a source cannot be read
    (then every module is imported now, as a plain registry would have it)."""
    here = Path(__file__).parent
    for family in FAMILIES:
        try:
            text = (here / f"{family}.py").read_text(encoding="utf-8")
        except OSError:
            return False
        for kind, args in _DECLARED.findall(text):
            for name in re.findall(r'"([^"]+)"', args):
                (RULES if kind == "rule" else CONVERTERS).where[name] = family
    return True


RULES.load = CONVERTERS.load = _load
if not _index():
    _load(None)

__all__ = ["CONVERTERS", "RULES", "ActivationRule", "LinearRule", "OpRule", "converts", "rule", "side_boxes",
           "FAMILIES"]
