"""The benchmark runner end to end: a fake verifier (tests/fake_verifier.py) on a tiny benchmark made
here, the shared VNN-COMP benchmarks when present, Ray when installed, the real CLI when it runs."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier.bench.command import main

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fake_verifier.py"
BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
PNG = b"\x89PNG\r\n\x1a\n"

BOX_V1 = "".join(f"(declare-const {v} Real)\n" for v in ("X_0", "X_1", "Y_0", "Y_1")) + \
    "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n"
BOX_V2 = "(vnnlib-version <2.0>)\n(declare-network {name}\n  (declare-input X float32 [1,2])\n" \
    "  (declare-output Y float32 [1,2]))\n" \
    "(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0) (>= X[0,1] 0.0) (<= X[0,1] 1.0)))\n"
# y = x on [0,1]^2: "y0 >= y1" holds at the centre (sat); "y0 >= 2" nowhere (unsat)
PROPS = {"sat": ("(assert (>= Y_0 Y_1))\n", "(assert (>= Y[0,0] Y[0,1]))\n"),
         "unsat": ("(assert (>= Y_0 2.0))\n", "(assert (>= Y[0,0] 2.0))\n")}


def mini_bench(root: Path, rows: list[tuple[str, str]] | None = None) -> Path:
    """A benchmark folder: one identity network, properties p<i>_<kind> in VNN-LIB 1.0 and 2.0."""
    rows = rows or [("sat", "sat"), ("unsat", "unsat"), ("sat", ""), ("unsat", "")]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"])], "id",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.eye(2, dtype=np.float32), "W"),
         numpy_helper.from_array(np.zeros(2, np.float32), "b")])
    for sub in ("onnx", "vnnlib", "vnnlib2"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "onnx" / "net.onnx").write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    lines = ["onnx,vnnlib,timeout,expected"]
    for i, (kind, expected) in enumerate(rows):
        name = f"p{i}_{kind}"
        (root / "vnnlib" / f"{name}.vnnlib").write_text(BOX_V1 + PROPS[kind][0])
        (root / "vnnlib2" / f"{name}.vnnlib").write_text(BOX_V2.format(name=f"net_{name}") + PROPS[kind][1])
        lines.append(f"onnx/net.onnx,vnnlib/{name}.vnnlib,30,{expected}")
    (root / "instances.csv").write_text("\n".join(lines) + "\n")
    return root


def fake(*args: str) -> str:
    return " ".join([sys.executable, str(FAKE), *args])


def run(benches, out: Path, *args: str, fake_args: tuple[str, ...] = ()) -> tuple[int, list[dict], str]:
    rc = main([*map(str, benches), "--out", str(out), "--no-progress", "--verifier-cmd", fake(*fake_args), *args])
    return rc, read_csv(out / "results.csv"), (out / "summary.md").read_text()


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_scoring_on_a_mini_benchmark(tmp_path):
    # 400 MB held here: a child's pages from before its exec must not count as its peak memory
    ballast = np.ones(50_000_000)
    rc, rows, summary = run([mini_bench(tmp_path / "mini")], tmp_path / "out")
    del ballast
    assert rc == 0
    got = [(r["verdict"], r["check"], r["correct"], r["points"]) for r in rows]
    assert got == [("sat", "ok", "yes", "10"), ("unsat", "", "yes", "10"),
                   ("sat", "ok", "yes", "10"), ("unsat", "", "unverified", "0")]
    assert list(rows[0]) == ["bench", "onnx", "vnnlib", "expected", "verdict", "seconds", "check", "correct",
                             "points", "timeout", "spec", "detail", "peak_mb"]
    # each verifier process's peak resident memory (the fake verifier is a small Python process)
    assert all(5 <= float(r["peak_mb"]) <= 300 for r in rows), [r["peak_mb"] for r in rows]
    assert "peak MB" in summary
    assert "| mini | out | 4 | 4 | 2 | 2 | 0 | 0 | 0 | 0 | 1 | 30 |" in summary
    assert "Unverified (1)" in summary
    assert (tmp_path / "out" / "cactus.png").read_bytes().startswith(PNG)
    assert len(list((tmp_path / "out" / "logs" / "mini").glob("*.log"))) == 4


def test_v2_passes_the_declared_network_name(tmp_path):
    # the fake exits 2 when --network names a network the property does not declare
    rc, rows, _ = run([mini_bench(tmp_path / "mini")], tmp_path / "out", "--spec", "v2")
    assert rc == 0 and [r["verdict"] for r in rows] == ["sat", "unsat", "sat", "unsat"]
    assert {r["spec"] for r in rows} == {"v2"} and rows[0]["vnnlib"] == "vnnlib/p0_sat.vnnlib"


@pytest.mark.parametrize("mode, status", [("tamper-input", "bad-input"), ("tamper-output", "bad-output"),
                                          ("no-assignment", "missing")])
def test_tampered_counterexample_is_wrong(tmp_path, mode, status):
    rc, rows, summary = run([mini_bench(tmp_path / "mini")], tmp_path / "out", fake_args=("--mode", mode))
    sats = [r for r in rows if r["verdict"] == "sat"]
    if mode == "tamper-output":
        # the box centre really is a counterexample for the sat properties: the invented outputs
        # printed with it are ignored, onnxruntime's are judged
        assert [r["check"] for r in sats if "_sat" in r["vnnlib"]] == ["ok", "ok"]
        sats = [r for r in sats if "_unsat" in r["vnnlib"]]
    assert sats and rc == 1
    for r in sats:
        assert (r["check"], r["correct"], r["points"]) == (status, "no", "-150")
    assert f"Wrong ({len(sats)})" in summary and f"{status}:" in summary


def test_vnncomp_pair_assignment_is_read(tmp_path):
    _, rows, _ = run([mini_bench(tmp_path / "mini")], tmp_path / "out", fake_args=("--mode", "pairs"))
    assert [r["check"] for r in rows if r["verdict"] == "sat"] == ["ok", "ok"]


@pytest.mark.parametrize("mode, verdict, detail", [("crash", "error", "exit status 3"),
                                                   ("garbage", "error", "first stdout line 'maybe'"),
                                                   ("timed-out", "timeout", ""), ("unknown", "unknown", "")])
def test_verdict_mapping(tmp_path, mode, verdict, detail):
    _, rows, _ = run([mini_bench(tmp_path / "mini")], tmp_path / "out", "--limit", "1",
                     fake_args=("--mode", mode))
    assert (rows[0]["verdict"], rows[0]["correct"], rows[0]["points"]) == (verdict, "", "0")
    assert detail in rows[0]["detail"]


def test_timeout_kills_the_process_group(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    start = time.monotonic()
    _, rows, summary = run([mini_bench(tmp_path / "mini")], tmp_path / "out", "--limit", "1",
                           "--timeout-cap", "0.5", "--grace", "0.5",
                           fake_args=("--mode", "sleep", "--spawn-child", "--pid-dir", str(pids)))
    assert rows[0]["verdict"] == "timeout" and rows[0]["timeout"] == "0.5"
    assert 1.0 <= float(rows[0]["seconds"]) < time.monotonic() - start
    assert 5 <= float(rows[0]["peak_mb"]) <= 500         # a killed verifier's peak memory too
    recorded = [int(p.name) for p in pids.iterdir()]
    assert len(recorded) == 2
    time.sleep(0.2)
    assert not any(alive(p) for p in recorded)
    assert "| 1 | 0 | 0 | 0 | 0 | 1 | 0 |" in summary


def test_jobs_run_in_parallel(tmp_path):
    start = time.monotonic()
    rc, rows, _ = run([mini_bench(tmp_path / "mini")], tmp_path / "out", "--jobs", "4",
                      fake_args=("--nap", "1.5"))
    assert rc == 0 and len(rows) == 4 and all(float(r["seconds"]) >= 1.5 for r in rows)
    assert time.monotonic() - start < 4 * 1.5  # serially it would take at least 6 s


def test_progress_bar_on_a_terminal():
    import io

    from verifier.bench.progress import Progress
    from verifier.bench.runner import Result

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = Progress(2, stream=stream)
    bar.update(Result("b", "n.onnx", "p.vnnlib", "sat", "unsat", 1.0, "", "no", -150, 5, "v1", ""))
    bar.close()
    assert stream.getvalue().startswith("\r[###############...............] 1/2 sat 0 unsat 1")
    assert "wrong 1" in stream.getvalue() and stream.getvalue().endswith("\n")


def test_dry_run_prints_the_commands(tmp_path, capsys):
    bench = mini_bench(tmp_path / "mini")
    rc = main([str(bench), "--spec", "v2", "--timeout-cap", "7.5", "--every", "2", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 2
    assert lines[0].endswith(f"-m verifier verify {bench}/vnnlib2/p0_sat.vnnlib --network "
                             f"net_p0_sat={bench}/onnx/net.onnx --timeout 7.5")


def test_usage_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert main([str(mini_bench(tmp_path / "mini")), "--filter", "(", "--dry-run"]) == 2


def test_baseline_beside_the_new_run(tmp_path):
    bench = mini_bench(tmp_path / "mini")
    run([bench], tmp_path / "old")
    rc, _, summary = run([bench], tmp_path / "new", "--baseline", str(tmp_path / "old" / "results.csv"),
                         "--filter", "p[01]_", fake_args=("--mode", "tamper-output"))
    assert rc == 1
    assert "| mini | new | 2 | 1 | 1 | 0 |" in summary and "| mini | old | 2 | 2 | 1 | 1 |" in summary
    assert "Against old: 0 newly solved, 1 no longer solved, 1 solved by both." in summary
    assert (tmp_path / "new" / "cactus.png").read_bytes().startswith(PNG)


def test_interrupt_keeps_partial_results(tmp_path):
    bench = mini_bench(tmp_path / "mini", [("sat", "sat")] * 40)  # ample work left when the signal lands
    pids = tmp_path / "pids"
    pids.mkdir()
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "verifier.bench.command", str(bench), "--out", str(out), "--no-progress",
            "--verifier-cmd", fake("--nap", "0.5", "--spawn-child", "--pid-dir", str(pids))]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ((out / "results.csv").exists()
                                               and len(read_csv(out / "results.csv")) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    rows = read_csv(out / "results.csv")
    assert proc.returncode == 130, err.decode()
    assert 2 <= len(rows) < 40 and all(r["correct"] == "yes" for r in rows)
    assert "Interrupted" in (out / "summary.md").read_text()
    assert (out / "cactus.png").read_bytes().startswith(PNG)
    time.sleep(0.2)
    assert not any(alive(int(p.name)) for p in pids.iterdir())


@pytest.mark.skipif(not (BENCHMARKS / "test").is_dir() or not (BENCHMARKS / "acasxu_2023").is_dir(),
                    reason="../shared/benchmarks absent")
def test_shared_benchmarks(tmp_path):
    """The sanity nets and 8 ACAS Xu instances (3 sat), in VNN-LIB 1.0 and then 2.0 against 1.0."""
    benches = [BENCHMARKS / "test", BENCHMARKS / "acasxu_2023"]
    pick = ("--filter", r"^test/|run2a_(1_7|2_1)_batch", "--timeout-cap", "30")
    rc, rows, summary = run(benches, tmp_path / "v1", *pick, "--label", "v1")
    assert rc == 0 and len(rows) == 13
    assert all(r["correct"] == "yes" and r["verdict"] == r["expected"] for r in rows)
    assert sum(r["check"] == "ok" for r in rows) == 4
    assert "| test | v1 | 5 | 5 | 1 | 4 | 0 | 0 | 0 | 0 | 0 | 50 |" in summary
    assert "| acasxu_2023 | v1 | 8 | 8 | 3 | 5 | 0 | 0 | 0 | 0 | 0 | 80 |" in summary
    assert "| **all** | v1 | 13 | 13 |" in summary
    assert (tmp_path / "v1" / "cactus.png").read_bytes().startswith(PNG)

    rc, rows, summary = run(benches, tmp_path / "v2", *pick, "--spec", "v2", "--label", "v2",
                            "--baseline", str(tmp_path / "v1" / "results.csv"))
    assert rc == 0 and len(rows) == 8 and all(r["correct"] == "yes" and r["spec"] == "v2" for r in rows)
    assert "| acasxu_2023 | v2 | 8 | 8 | 3 | 5 |" in summary and "| acasxu_2023 | v1 | 8 | 8 | 3 | 5 |" in summary
    assert "Skipped for want of a VNN-LIB 2.0 twin: 5 instances." in summary


def test_ray_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        out = tmp_path / "out"
        argv = [sys.executable, "-m", "verifier.bench.command", str(mini_bench(tmp_path / "mini")),
                "--out", str(out), "--no-progress", "--ray", address, "--verifier-cmd", fake()]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        ray.shutdown()
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "results.csv")
    assert [(r["verdict"], r["correct"]) for r in rows] == [("sat", "yes"), ("unsat", "yes"), ("sat", "yes"),
                                                           ("unsat", "unverified")]
    assert "Ray at" in (out / "summary.md").read_text()


def _real_cli_works() -> bool:
    try:
        return subprocess.run([sys.executable, "-m", "verifier", "--version"], cwd=ROOT, capture_output=True,
                              timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not (BENCHMARKS / "test").is_dir(), reason="../shared/benchmarks absent")
def test_real_cli_on_the_sanity_nets(tmp_path):
    if not _real_cli_works():
        pytest.skip("python -m verifier --version does not run yet")
    out = tmp_path / "out"
    rc = main([str(BENCHMARKS / "test"), "--out", str(out), "--no-progress", "--timeout-cap", "20",
               "--filter", "test_(nano|sat)", "--grace", "20"])
    rows = read_csv(out / "results.csv")
    assert len(rows) == 2 and rc in (0, 1)
    assert all(r["verdict"] in ("sat", "unsat", "unknown", "timeout", "error") for r in rows)
    assert not [r for r in rows if r["correct"] == "no"], rows
