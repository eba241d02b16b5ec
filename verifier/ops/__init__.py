"""Operator knowledge: importing the registries' modules registers every op."""
from .registry import CONVERTERS, RULES, ActivationRule, LinearRule, OpRule, converts, rule
from . import linear, shape, activation, pool  # noqa: F401  (registration side effects)

__all__ = ["CONVERTERS", "RULES", "ActivationRule", "LinearRule", "OpRule", "converts", "rule"]
