"""The VNN-COMP scripts end to end: prepare_instance.sh and run_instance.sh on the bundled examples and on
../shared/benchmarks/test, and the outside timeout of run_instance.sh."""
from __future__ import annotations

import csv
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from verifier.bench.check import check_counterexample

from conftest import EXAMPLES, ROOT, Example, assert_counterexample, read_example_spec

SCRIPTS = ("install_tool.sh", "prepare_instance.sh", "run_instance.sh")
PAIR = re.compile(r"\(\s*([XY])_(\d+)\s+([-+0-9.eE]+|[-+]?inf|nan)\s*\)")


def run_instance(onnx: Path, vnnlib: Path, result: Path, timeout: float, env=None,
                 category: str = "test") -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "run_instance.sh"), "v1", category, str(onnx), str(vnnlib), str(result),
                           str(timeout)], capture_output=True, text=True, timeout=timeout + 30, env=env,
                          stdin=subprocess.DEVNULL)


def parse_result(text: str) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """A VNN-COMP result file -> (verdict, x, y); x and y for sat, checked for the ((X_i v) ... (Y_j v))
    format with contiguous indices."""
    lines = text.strip().splitlines()
    verdict = lines[0].strip()
    assert verdict in ("sat", "unsat", "timeout", "unknown", "error"), verdict
    if verdict != "sat":
        assert len(lines) == 1, text
        return verdict, None, None
    body = " ".join(lines[1:]).strip()
    assert body.startswith("(") and body.endswith(")"), body[:200]
    inner = body[1:-1]
    pairs = PAIR.findall(inner)
    assert PAIR.sub("", inner).strip() == "", "stray text in the counterexample"
    xs = [(int(i), float(v)) for n, i, v in pairs if n == "X"]
    ys = [(int(i), float(v)) for n, i, v in pairs if n == "Y"]
    assert [n for n, _, _ in pairs] == ["X"] * len(xs) + ["Y"] * len(ys), "inputs first, then outputs"
    assert [i for i, _ in xs] == list(range(len(xs))) and [i for i, _ in ys] == list(range(len(ys)))
    return verdict, np.array([v for _, v in xs]), np.array([v for _, v in ys])


def test_scripts_are_executable_bash():
    for name in SCRIPTS:
        path = ROOT / name
        assert path.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n"), name
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, name


def test_prepare_instance(examples, tmp_path):
    ex = Example("acas_like", "sat", examples)
    ok = subprocess.run([str(ROOT / "prepare_instance.sh"), "v1", "test", str(ex.onnx), str(ex.spec("1.0"))],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([str(ROOT / "prepare_instance.sh"), "v1", "test", str(tmp_path / "no.onnx"),
                              str(ex.spec("1.0"))], capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "no.onnx" in missing.stderr
    usage = subprocess.run([str(ROOT / "prepare_instance.sh"), "v2"], capture_output=True, text=True, timeout=30)
    assert usage.returncode != 0


@pytest.mark.parametrize("net,answer", EXAMPLES)
def test_run_instance_examples(examples, tmp_path, net, answer):
    ex = Example(net, answer, examples)
    result = tmp_path / "result.txt"
    r = run_instance(ex.onnx, ex.spec("1.0"), result, 60)
    assert r.returncode == 0, r.stderr
    verdict, x, y = parse_result(result.read_text())
    assert verdict == answer, r.stderr
    if verdict == "sat":
        assert_counterexample(ex.onnx, read_example_spec(ex.spec("1.0")), x, y)


def test_run_instance_unreadable_model_is_an_error(examples, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    result = tmp_path / "result.txt"
    r = run_instance(bad, Example("acas_like", "unsat", examples).spec("1.0"), result, 30)
    assert r.returncode == 0
    assert result.read_text().strip() == "error", r.stderr


def test_run_instance_kills_a_hung_verifier(examples, tmp_path):
    """A verifier that ignores its deadline and SIGTERM: run_instance.sh kills it at T + 5 + 5 s, and the
    pre-seeded result file reads `timeout`.  The hang is a `python` first on PATH."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text("#!/usr/bin/env bash\ntrap '' TERM\nwhile true; do sleep 0.2; done\n")
    (fake / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    result = tmp_path / "result.txt"
    ex = Example("acas_like", "unsat", examples)
    t0 = time.monotonic()
    r = run_instance(ex.onnx, ex.spec("1.0"), result, 1, env=env)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert result.read_text().strip() == "timeout"
    assert 10 <= elapsed < 16, elapsed  # SIGTERM at 1 + 5 s, ignored; SIGKILL 5 s later


def test_shared_test_benchmark(shared_benchmarks, tmp_path):
    """All five instances of ../shared/benchmarks/test answered as its instances.csv expects."""
    bench = shared_benchmarks / "test"
    if not (bench / "instances.csv").is_file():
        pytest.skip(f"{bench} is absent")
    with open(bench / "instances.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    for i, row in enumerate(rows):
        result = tmp_path / f"result{i}.txt"
        r = run_instance(bench / row["onnx"], bench / row["vnnlib"], result, float(row["timeout"]))
        assert r.returncode == 0, r.stderr
        verdict, x, y = parse_result(result.read_text())
        assert verdict == row["expected"], (row, r.stderr[-2000:])
        if verdict == "sat":  # judged by the benchmark runner's own checker (its own spec reader)
            text = result.read_text()
            check = check_counterexample(bench / row["vnnlib"], bench / row["onnx"], text[text.index("("):])
            assert check.ok, check


def _two_network_query(path: Path, gap: float) -> Path:
    """Networks f and g (two files of one model) on boxes of their own; sat when f's first score
    can exceed g's by `gap`."""
    box = "\n".join(f"(assert (and (>= {v}[0,{i}] -0.5) (<= {v}[0,{i}] 0.5)))" for v in "XZ" for i in range(5))
    path.write_text(f"""(vnnlib-version <2.0>)
(declare-network f (declare-input X float32 [1,5]) (declare-output Y float32 [1,5]))
(declare-network g (declare-input Z float32 [1,5]) (declare-output W float32 [1,5]))
{box}
(assert (>= (- Y[0,0] W[0,0]) {gap}))
""")
    return path


@pytest.mark.parametrize("form", ["f={a};g={b}", "(f {a}) (g {b})"])
def test_run_instance_with_several_networks(examples, tmp_path, form):
    """VNN-COMP 2026's instances list several networks in the model argument, with paths relative
    to the harness's folder: sat gives the VNN-LIB 2.0 assignment of every variable; an
    impossible gap gives unsat."""
    import shutil
    from fractions import Fraction

    from conftest import onnxruntime_output

    model = examples / "onnx" / "acas_like.onnx"
    for name in ("a.onnx", "b.onnx"):
        shutil.copy(model, tmp_path / name)
    column = form.format(a="a.onnx", b="b.onnx")
    result = tmp_path / "result.txt"
    spec = _two_network_query(tmp_path / "q.vnnlib", 0.01)
    prep = lambda col: subprocess.run([str(ROOT / "prepare_instance.sh"), "v1", "test", col, str(spec)],
                                      capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert prep(column).returncode == 0 and prep(form.format(a="a.onnx", b="c.onnx")).returncode == 1
    r = subprocess.run([str(ROOT / "run_instance.sh"), "v1", "test", column, str(spec), str(result), "60"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    lines = result.read_text().splitlines()
    assert lines[0] == "sat", r.stderr
    heads = [i for i, line in enumerate(lines) if line[:1].isalpha() and " " in line]
    assert [lines[i].split()[0] for i in heads] == ["X", "Y", "Z", "W"], lines[:3]
    values = {lines[i].split()[0]: np.array([float(v) for v in lines[i + 1:i + 6]]) for i in heads}
    y, w = onnxruntime_output(model, values["X"]), onnxruntime_output(model, values["Z"])
    assert np.all(np.abs(values["X"]) <= 0.5) and np.all(np.abs(values["Z"]) <= 0.5)
    assert Fraction(float(y[0])) - Fraction(float(w[0])) >= Fraction("0.01")
    spec = _two_network_query(tmp_path / "q2.vnnlib", 1e6)
    r = subprocess.run([str(ROOT / "run_instance.sh"), "v1", "test", column, str(spec), str(result), "60"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and result.read_text().strip() == "unsat", r.stderr
