"""benchmarks/make_examples.py: deterministic output, a well-formed benchmark folder, and answers that
hold (by the generator's own proofs and witnesses, and by the verifier)."""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import verifier
import vnnlib
from verifier.bench.command import main as bench_main
from verifier.verdict import Verdict

from conftest import EXAMPLES, ROOT, Example, load_make_examples


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(examples, tmp_path):
    """A second build, in another process through the command line, gives the same bytes."""
    out = tmp_path / "again"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_examples.py"), "--out", str(out),
                        "--no-verify"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    first, second = tree(examples), tree(out)
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []


def test_layout_and_instances_csv(examples):
    with open(examples / "instances.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["onnx", "vnnlib", "timeout", "expected"]
    got = {(Path(o).stem, Path(v).stem.rsplit("_", 1)[1], e) for o, v, t, e in rows[1:]}
    assert got == {(net, answer, answer) for net, answer in EXAMPLES}
    for o, v, t, e in rows[1:]:
        assert (examples / o).is_file() and (examples / v).is_file()
        assert v.startswith("vnnlib/") and (examples / "vnnlib2" / Path(v).name).is_file()
        assert float(t) > 0


@pytest.mark.parametrize("net,answer", EXAMPLES)
def test_v1_and_v2_state_the_same_query(examples, net, answer):
    ex = Example(net, answer, examples)
    p1, p2 = vnnlib.parse_file(ex.spec("1.0")), vnnlib.parse_file(ex.spec("2.0"))
    assert (p1.version, p2.version) == ("1.0", "2.0")
    assert p2.network == net  # the name the README passes with --network
    assert len(p1.cases) == len(p2.cases) == 1
    c1, c2 = p1.cases[0], p2.cases[0]
    np.testing.assert_array_equal(c1.lo, c2.lo)
    np.testing.assert_array_equal(c1.hi, c2.hi)
    assert len(c1.region) == len(c2.region)
    for a, b in zip(c1.region, c2.region):
        np.testing.assert_array_equal(a.C, b.C)
        np.testing.assert_array_equal(a.d, b.d)


def test_unsat_answers_rest_on_sound_bounds(examples):
    """Re-derive the generator's proofs: the acas_like threshold lies above a float64 interval bound
    over sub-boxes, and the conv_small margin has a positive interval lower bound."""
    me = load_make_examples()
    layers = me.mlp_layers(np.random.default_rng(20240501))
    text = Example("acas_like", "unsat", examples).spec("1.0").read_text()
    lo = np.array([float(v) for v in re.findall(r"\(>= X_\d+ ([-0-9.e]+)\)", text)])
    hi = np.array([float(v) for v in re.findall(r"\(<= X_\d+ ([-0-9.e]+)\)", text)])
    threshold = float(re.search(r"\(assert \(>= Y_0 ([-0-9.e]+)\)\)", text)[1])
    bound = me.interval(layers, *me._sub_boxes(lo, hi, 6))[1][:, 0].max()
    assert bound + 1e-3 < threshold
    samples = me.forward(layers, np.random.default_rng(7).uniform(lo, hi, size=(2000, 5)))[:, 0]
    assert samples.max() <= bound


@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("net,answer", EXAMPLES)
def test_the_verifier_agrees(examples, net, answer, version):
    ex = Example(net, answer, examples)
    assert verifier.verify(ex.onnx, ex.spec(version), timeout=60).verdict is Verdict(answer)


def test_bench_runs_the_examples(examples, tmp_path):
    """`verifier bench DIR --spec v2`: every instance answered correctly, every sat checked."""
    out = tmp_path / "bench"
    rc = bench_main([str(examples), "--spec", "v2", "--out", str(out), "--no-progress"])
    assert rc == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        assert (row["spec"], row["verdict"], row["correct"]) == ("v2", row["expected"], "yes"), row
        if row["verdict"] == "sat":
            assert row["check"] == "ok", row
