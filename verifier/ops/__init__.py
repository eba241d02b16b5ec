"""Operator knowledge: importing the registries' modules registers every op."""
from .registry import CONVERTERS, RULES, ActivationRule, LinearRule, OpRule, converts, rule, side_boxes
from . import linear, shape, activation, pool, reduce, resize, elementwise, piecewise, relational  # noqa: F401  (registration side effects)

__all__ = ["CONVERTERS", "RULES", "ActivationRule", "LinearRule", "OpRule", "converts", "rule", "side_boxes"]
