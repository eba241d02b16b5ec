"""Typed, frozen configuration, built once from the command line or the API and passed down.

Imports nothing heavy: the command line reads it before deciding whether torch is needed."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AttackConfig:
    samples: int = 64        # random points per subproblem before PGD
    restarts: int = 8        # PGD starting points per subproblem
    steps: int = 100         # a slow decay of the step size finds thin violating regions
    step_frac: float = 0.1   # first step as a fraction of the box width (decays to ~1/20 of it)
    max_points: int = 65536  # points evaluated at once (memory)
    budget_points: int = 100_000  # samples over all cases: many cases get fewer each
    # on higher-dimensional inputs, each conjunct of a case gets its own PGD (a targeted attack:
    # the gradient of the min over conjuncts only ever follows the nearest one), up to this many
    per_conjunct_max: int = 4096
    # gradient-free local search for low-dimensional inputs, where PGD stalls on flat, piecewise
    # linear landscapes (ACAS Xu): many samples (some on the box faces), then an evolution of elites
    search_max_dim: int = 64   # inputs of at most this many elements get it
    search_samples: int = 100_000
    search_elites: int = 64
    search_children: int = 64  # per elite and step
    search_steps: int = 60
    search_seconds: float = 1.0  # per batch of cases: the number of steps shrinks to fit


@dataclass(frozen=True)
class AlphaConfig:
    iterations: int = 20
    lr: float = 0.25
    intermediate_iterations: int = 20  # per layer, for the activation input bounds (0: CROWN's)


@dataclass(frozen=True)
class BabConfig:
    enabled: bool = True
    batch: int = 2048            # domains bounded at once
    max_domains: int = 400_000   # open-domain cap; beyond it we answer unknown
    memory_mb: float = 0.0       # memory a query may hold: rows, open domains, each pass's working tensors
    #                              (0: 40 % of RAM, half the free GPU memory; budget.memory_budget)
    input_split_max_dim: int = 64  # inputs of at most this many elements use input splitting
    branching: str = "auto"      # auto (by input_split_max_dim) | input | activation
    input_split_bounds: str = "backward"  # intermediate bounds in input BaB: backward | forward | hybrid


@dataclass(frozen=True)
class LPConfig:
    enabled: bool = False       # the LP stage after alpha-CROWN (--lp-tighten)
    max_neurons: int = 100      # unstable neurons per case whose input bounds an LP tightens
    share: float = 0.5          # of the time left, what the LP stage may spend
    max_columns: int = 20_000   # larger networks skip it (one LP per neuron gets dear)


@dataclass(frozen=True)
class VerifyConfig:
    timeout_s: float = 60.0
    device: str = "auto"          # auto | cpu | cuda
    crown: bool = True
    alpha: bool = True
    attack: AttackConfig = field(default_factory=AttackConfig)
    alpha_cfg: AlphaConfig = field(default_factory=AlphaConfig)
    bab: BabConfig = field(default_factory=BabConfig)
    lp: LPConfig = field(default_factory=LPConfig)
    engine: str = "bab"           # after the bounds: bab | milp (instead of bab) | sdp (an SDP stage, then bab)
    bab_alpha_iterations: int = 10  # alpha/beta-CROWN steps per ReLU-split round (0: plain CROWN)
    seed: int = 0
