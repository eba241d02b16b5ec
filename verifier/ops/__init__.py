"""Operator knowledge: importing the registries' modules registers every op."""
from .registry import CONVERTERS, RULES, ActivationRule, LinearRule, OpRule, converts, rule, side_boxes
# registration side effects:
from . import linear, shape, activation, pool, reduce, resize, elementwise, piecewise  # noqa: F401
from . import relational, bilinear, softmax, minmax, layernorm, compare  # noqa: F401

__all__ = ["CONVERTERS", "RULES", "ActivationRule", "LinearRule", "OpRule", "converts", "rule", "side_boxes"]
