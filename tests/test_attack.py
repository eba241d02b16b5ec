"""The attack proposes candidates only (onnxruntime confirms them), but what it reports must be
true of the points it returns: inside the box, with the violation it states."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from verifier.attack import attack
from verifier.budget import Deadline
from verifier.config import AttackConfig
from verifier.evaluate import forward
from verifier.onnx_import import to_graph
from verifier.spec import Cases, violation

from helpers_nets import random_mlp

DT = torch.float64


def not_the_top_class(lo: torch.Tensor, hi: torch.Tensor, n_out: int, target: int) -> Cases:
    """Violation: some output j != target reaches y_target (one conjunct per j), as in the
    robustness properties of image classifiers."""
    K = lo.shape[0]
    others = [j for j in range(n_out) if j != target]
    C = torch.zeros((K, len(others), n_out), dtype=DT)
    for q, j in enumerate(others):
        C[:, q, target], C[:, q, j] = 1.0, -1.0
    conj = torch.arange(len(others)).expand(K, -1).clone()     # row q is conjunct q
    return Cases(lo, hi, C, torch.zeros((K, len(others)), dtype=DT), conj,
                 torch.ones((K, len(others)), dtype=torch.bool), np.arange(K))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_conjunct_attack_reports_the_true_violation_of_its_points(seed):
    rng = np.random.default_rng(seed)
    graph = to_graph(random_mlp(rng, 80, [32, 16], 5, ["Relu"])).to("cpu", DT)  # > 64 inputs: PGD per conjunct
    centre = torch.as_tensor(rng.uniform(-1, 1, size=(3, 1, 80)))
    cases = []
    for radius in (0.01, 0.3, 2.0):
        target = int(forward(graph, centre[0]).argmax())
        cases.append(not_the_top_class(centre[0] - radius, centre[0] + radius, 5, target))
    for cs in cases:
        x, v = attack(graph, cs, Deadline(60), AttackConfig(), torch.Generator().manual_seed(seed))
        assert ((x >= cs.lo) & (x <= cs.hi)).all()
        true_v = violation(cs, forward(graph, x).reshape(len(cs), 1, -1))[:, 0]
        assert torch.allclose(v, true_v, atol=1e-9)
        # wherever sampling finds a violating point, the attack finds one too
        u = torch.rand((4000,) + tuple(cs.lo.shape[1:]), dtype=DT, generator=torch.Generator().manual_seed(1))
        pts = cs.lo + (cs.hi - cs.lo) * u
        sampled = violation(cs, forward(graph, pts).reshape(1, 4000, -1)).min()
        if sampled <= 0:
            assert float(v.min()) <= 0
