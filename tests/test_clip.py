"""Input clipping (verifier.bab.clip) never cuts off a counterexample.

Random ReLU networks, random boxes and random two-conjunct properties whose thresholds are set
from sampled outputs, so that each conjunct has violating points but only in part of the box.
Every sampled point that violates a conjunct must lie in the clipped box, and that conjunct must
stay valid.  The clipping must also do something: over all examples some box shrinks.
"""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from verifier.bab.clip import clip_boxes
from verifier.bounds.backward import crown_intermediate, crown_output
from verifier.evaluate import forward
from verifier.onnx_import import to_graph
from verifier.spec import Cases

from helpers_nets import random_mlp

SHRUNK: list[bool] = []


def _problem(seed: int, n_in: int, n_boxes: int):
    rng = np.random.default_rng(seed)
    graph = to_graph(random_mlp(rng, n_in, [12, 12], 4, ["Relu"]))
    centre = rng.uniform(-1, 1, size=(n_boxes, n_in))
    radius = rng.uniform(0.05, 1.0, size=(n_boxes, n_in))
    lo = torch.as_tensor(centre - radius)
    hi = torch.as_tensor(centre + radius)
    Q, J = 4, 2
    C = torch.as_tensor(rng.normal(size=(n_boxes, Q, 4)))
    conj = torch.tensor([0, 0, 1, 1]).expand(n_boxes, Q).clone()   # rows 0, 1: conjunct 0; rows 2, 3: conjunct 1
    return rng, graph, lo, hi, C, conj


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 5), st.floats(0.02, 0.6))
def test_clipped_boxes_keep_every_violating_point(seed, n_in, quantile):
    n_boxes = 6
    rng, graph, lo, hi, C, conj = _problem(seed, n_in, n_boxes)
    u = torch.as_tensor(rng.uniform(size=(n_boxes, 4000, n_in)))
    corners = torch.as_tensor(rng.integers(0, 2, size=(n_boxes, 64, n_in)).astype(np.float64))
    x = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.cat([u, corners], 1)
    x = torch.minimum(torch.maximum(x, lo.unsqueeze(1)), hi.unsqueeze(1))  # corners land exactly on the box
    y = forward(graph, x.reshape(-1, n_in)).reshape(n_boxes, -1, 4)
    rows = torch.einsum("kqn,krn->krq", C, y)
    d = -torch.quantile(rows, quantile, dim=1)             # each row holds on a fraction of the points
    cs = Cases(lo, hi, C, d, conj, torch.ones((n_boxes, 2), dtype=torch.bool), np.arange(n_boxes))
    record: dict = {}
    pre = crown_intermediate(graph, lo, hi)
    lb = crown_output(graph, lo, hi, C, pre, record=record) + d
    A = record[graph.input_name]
    new_lo, new_hi, valid = clip_boxes(cs, lb, A, 1e-9)
    values = rows + d.unsqueeze(1)                          # (K, R, Q)
    for j in range(2):
        bad = (values[..., conj[0] == j] <= 0).all(-1)      # (K, R) points violating conjunct j
        inside = ((x >= new_lo.unsqueeze(1)) & (x <= new_hi.unsqueeze(1))).all(-1)
        assert bool((inside | ~bad).all()), "a violating point was clipped away"
        assert bool((valid[:, j] | ~bad.any(1)).all()), "a conjunct with a violating point was refuted"
    assert bool(((new_lo >= lo) & (new_hi <= hi)).all())
    SHRUNK.append(bool(((new_hi - new_lo) < (hi - lo) * (1 - 1e-6)).any()))


def test_clipping_shrinks_some_boxes():
    """Runs after the property above (file order): the clipping was not a no-op."""
    if not SHRUNK:
        test_clipped_boxes_keep_every_violating_point()
    assert any(SHRUNK)
