"""A few seeds of the soundness fuzzer (tests/fuzz_soundness.py): its 'below' queries hold a
violation onnxruntime computed, so no configuration may answer unsat there, and no two
configurations may contradict on the others."""
from __future__ import annotations

import numpy as np
import pytest

from fuzz_soundness import NETWORKS, Problem, _box, _witnessed, properties, run_seed
from helpers_nets import run_float64, run_onnxruntime
from vnnlib import parse_text


@pytest.mark.parametrize("seed", [0, 2])    # a ReLU MLP and a LeakyRelu one (float32 kinks)
def test_fuzz_seed_has_no_findings(tmp_path, seed):
    assert run_seed(seed, timeout=2.0, out=tmp_path, only={"default"}, log=lambda *_: None) == []


@pytest.mark.parametrize("seed", range(4))
def test_below_queries_hold_the_violation_they_were_built_around(seed):
    """The fuzzer's own oracle: its witness x lies in each 'below' query's box, and the output for
    it (onnxruntime's on float32 queries, the float64 network's on VNN-LIB 1.0 ones, which are
    about the reals) meets the query's output constraints exactly (rational arithmetic); an
    'above' query with margin 0.1 is not met there."""
    from verifier.onnx_import import to_graph

    rng = np.random.default_rng(seed)
    model = NETWORKS["relu_mlp" if seed % 2 == 0 else "leaky_mlp"](rng)
    n_in = int(model.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    n_out = int(model.graph.output[0].type.tensor_type.shape.dim[1].dim_value)
    lo, hi = _box(rng, n_in)
    x, queries = properties(Problem(model, (1, n_in), lo, hi, n_out), to_graph(model), rng)
    y = np.asarray(run_onnxruntime(model, x.reshape(1, n_in))).reshape(-1)
    y64 = np.asarray(run_float64(model, x.reshape(1, n_in))).reshape(-1)
    assert x.dtype == np.float32 and np.all(lo <= x) and np.all(x <= hi)
    modes = [m for m, _, _ in queries]
    assert modes.count("below") == 6
    for mode, label, text in queries:
        prop = parse_text(text)
        out = y64 if label.endswith("reals") else y     # VNN-LIB 1.0: the network over the reals
        met = any(c.contains_input(x.astype(np.float64)) and c.violated_by(out) for c in prop.cases)
        if mode == "below":
            assert met, label
            if not label.endswith("reals"):    # the fuzzer's check of a sat agrees
                assert _witnessed(model, (1, n_in), prop, x), label
                assert not _witnessed(model, (1, n_in), prop, np.where(lo < hi, hi + 1, lo - 1)), label
        elif label.endswith("above-0.1"):
            assert not met, label


@pytest.mark.parametrize("seed", range(3))
def test_the_float64_oracle_agrees_with_onnxruntime_on_batch_norm(seed):
    """The real-valued queries' oracle (helpers_nets.run_float64: onnx's reference evaluator where
    onnxruntime has no float64 kernel) on conv nets with BatchNormalization: within float32's
    rounding of onnxruntime's float32 run (the reference evaluator alone was 0.07 off)."""
    from helpers_nets import random_convnet

    rng = np.random.default_rng(seed)
    model = random_convnet(rng, c=1, hw=5, pool="max")
    for _ in range(3):
        x = rng.uniform(-1, 1, (1, 1, 5, 5)).astype(np.float32)
        y32, y64 = (np.asarray(f(model, x), dtype=np.float64).ravel() for f in (run_onnxruntime, run_float64))
        assert np.abs(y64 - y32).max() <= 1e-5 * (1 + np.abs(y32).max())
