"""Typed, frozen configuration, built once from the command line or the API and passed down."""
from __future__ import annotations

from dataclasses import dataclass, field

from .attack import AttackConfig
from .bounds.alpha import AlphaConfig


@dataclass(frozen=True)
class BabConfig:
    enabled: bool = True
    batch: int = 2048            # domains bounded at once
    max_domains: int = 400_000   # open-domain cap (memory); beyond it we answer unknown
    input_split_max_dim: int = 64  # inputs of at most this many elements use input splitting
    input_split_bounds: str = "backward"  # intermediate bounds in input BaB: forward | backward


@dataclass(frozen=True)
class VerifyConfig:
    timeout_s: float = 60.0
    device: str = "auto"          # auto | cpu | cuda
    crown: bool = True
    alpha: bool = True
    attack: AttackConfig = field(default_factory=AttackConfig)
    alpha_cfg: AlphaConfig = field(default_factory=AlphaConfig)
    bab: BabConfig = field(default_factory=BabConfig)
    bab_alpha_iterations: int = 10  # alpha/beta-CROWN steps per ReLU-split round (0: plain CROWN)
    seed: int = 0
