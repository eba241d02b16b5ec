"""The VNN-LIB 2.0 standard command line: --name, --version, supports, verify (answers, assignment
format, serialised assignments, bad inputs).  Each command runs in a subprocess, as a tool driving the
solver would run it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import verifier
from verifier.capabilities import CAPABILITIES

from conftest import EXAMPLES, ROOT, SHAPES, Example, assert_counterexample, read_example_spec, run_cli

STANDARD_CAPABILITIES = (
    "--onnx-opset-versions", "--onnx-element-types", "--onnx-operators", "--vnnlib-versions",
    "--hidden-node-theories", "--multiple-input-output-theories", "--multiple-network-theories",
    "--multiple-node-comparison-theories", "--arithmetic-complexity-theories",
    "--optimised-disjunctive-reasoning", "--serialise-assignments",
)
THEORIES = {
    "--hidden-node-theories": ("NH", "H"),
    "--multiple-input-output-theories": ("SIO", "MIO"),
    "--multiple-network-theories": ("SNET", "MENET", "MINET", "MNET"),
    "--multiple-node-comparison-theories": ("SNC", "MNC"),
    "--arithmetic-complexity-theories": ("BND", "OUTC", "LIN", "POLY"),
}
HEADER = re.compile(r"([A-Za-z][A-Za-z0-9_]*) (\w+) \[([0-9,]*)\]\Z")


def verify_args(ex: Example, version: str, *extra: str) -> list[str]:
    name = ex.net if version == "2.0" else "N"
    return ["verify", str(ex.spec(version)), "--network", f"{name}={ex.onnx}", "--timeout", "60", "-q", *extra]


def parse_assignment(lines: list[str]) -> list[tuple[str, str, list[int], np.ndarray]]:
    """stdout after the verdict -> [(name, type, dims, values)]; asserts the block format."""
    blocks, i = [], 0
    while i < len(lines):
        m = HEADER.match(lines[i])
        assert m, f"expected a header NAME TYPE [dims], got {lines[i]!r}"
        dims = [int(d) for d in m[3].split(",")] if m[3] else []
        n = int(np.prod(dims)) if dims else 1
        values = np.array([float(v) for v in lines[i + 1:i + 1 + n]])  # one value per line
        assert len(values) == n, f"{m[1]}: {len(values)} values for shape {dims}"
        blocks.append((m[1], m[2], dims, values))
        i += 1 + n
    return blocks


# --------------------------------------------------------------------------- --name, --version, supports
def test_name():
    r = run_cli("--name")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == verifier.NAME + "\n" and r.stdout.strip()


def test_version_is_semantic_and_matches_the_package():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stderr == ""
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?\n", r.stdout)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert r.stdout.strip() == verifier.__version__ == project["version"]


def test_every_standard_capability_answers():
    assert set(STANDARD_CAPABILITIES) <= set(CAPABILITIES)
    for cap in CAPABILITIES:
        r = run_cli("supports", cap)
        assert r.returncode == 0, (cap, r.stderr)
        assert r.stdout.splitlines() == list(CAPABILITIES[cap]), cap
        assert r.stdout.strip(), cap


def test_capability_answers_are_well_formed():
    lo, hi = (int(v) for v in CAPABILITIES["--onnx-opset-versions"])
    assert 1 <= lo <= hi
    assert list(CAPABILITIES["--vnnlib-versions"]) == ["1.0", "2.0"]
    for cap in ("--optimised-disjunctive-reasoning", "--serialise-assignments"):
        assert CAPABILITIES[cap] in (("true",), ("false",)), cap
    for cap, known in THEORIES.items():
        got = CAPABILITIES[cap]
        assert got and set(got) <= set(known), cap
        assert got[0] == known[0], f"{cap}: the smallest theory is always supported"
    assert set(CAPABILITIES["--onnx-element-types"]) <= {"float16", "bfloat16", "float32", "float64", "int64"}


def test_listed_operators_are_the_importers():
    """Report only what really works: every listed operator has a converter in the importer."""
    from verifier import onnx_import
    from verifier.ops import CONVERTERS

    known = set(CONVERTERS) | set(getattr(onnx_import, "_IMPORTER_OPS", ()))
    listed = [line.split()[0] for line in CAPABILITIES["--onnx-operators"]]
    assert sorted(set(listed) - known) == []


def test_name_version_supports_do_not_import_heavy_libraries():
    code = (
        "import sys, contextlib, io\n"
        "from verifier.cli import main\n"
        "from verifier.capabilities import CAPABILITIES\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--name']) == 0 and main(['--version']) == 0\n"
        "    for cap in CAPABILITIES:\n"
        "        assert main(['supports', cap]) == 0\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'onnx.reference', 'scipy', 'matplotlib')\n"
        "               if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"imported by --name/--version/supports: {r.stdout.strip()}"


def test_unknown_capability():
    r = run_cli("supports", "--no-such-capability")
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "--no-such-capability" in r.stderr


# --------------------------------------------------------------------------- verify on the examples
@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("net,answer", EXAMPLES)
def test_verify_examples(examples, net, answer, version):
    ex = Example(net, answer, examples)
    r = run_cli(*verify_args(ex, version))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == answer  # first stdout line exactly the verdict
    if answer == "unsat":
        assert lines == ["unsat"]
        return
    blocks = parse_assignment(lines[1:])
    in_shape, out_shape = SHAPES[net]
    assert [(b[0], b[1]) for b in blocks] == [("X", "float32"), ("Y", "float32")]  # inputs, then outputs
    if version == "2.0":  # the declared shapes
        assert blocks[0][2] == in_shape and blocks[1][2] == out_shape
    else:
        assert int(np.prod(blocks[0][2])) == int(np.prod(in_shape))
        assert int(np.prod(blocks[1][2])) == int(np.prod(out_shape))
    assert_counterexample(ex.onnx, read_example_spec(ex.spec("1.0")), blocks[0][3], blocks[1][3])


def test_serialise_assignments(examples, tmp_path):
    ex = Example("conv_small", "sat", examples)
    out = tmp_path / "assignment"
    r = run_cli(*verify_args(ex, "2.0", "--serialise-assignments", str(out)))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "sat\n"  # the assignment goes to the files instead
    assert sorted(p.name for p in out.iterdir()) == ["X.pb", "Y.pb"]
    arrays = {}
    for name in ("X", "Y"):
        t = onnx.load_tensor(str(out / f"{name}.pb"))
        assert t.name == name and t.data_type == TensorProto.FLOAT
        arrays[name] = numpy_helper.to_array(t)
    assert list(arrays["X"].shape) == SHAPES[ex.net][0] and list(arrays["Y"].shape) == SHAPES[ex.net][1]
    assert_counterexample(ex.onnx, read_example_spec(ex.spec("1.0")), arrays["X"].reshape(-1),
                          arrays["Y"].reshape(-1))


@pytest.mark.parametrize("command", ["verify", "vnncomp"])
def test_stdout_carries_the_verdict_alone(examples, tmp_path, monkeypatch, capfd, command):
    """A library printing on stdout while the engine runs (HiGHS prints a banner when a solver is
    made) must not come before the verdict."""
    import verifier.api
    from verifier.cli import main
    from verifier.verdict import Result, Verdict

    def noisy_verify(*args, **kwargs):
        os.write(1, b"Running a solver, copyright notice\n")
        print("a Python print too")
        return Result(Verdict.UNSAT)

    monkeypatch.setattr(verifier.api, "verify", noisy_verify)
    ex = Example("acas_like", "unsat", examples)
    capfd.readouterr()
    if command == "verify":
        rc = main(verify_args(ex, "1.0"))
    else:
        rc = main(["vnncomp", str(ex.onnx), str(ex.spec("1.0")), str(tmp_path / "out.txt"), "60", "-q"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert out.splitlines()[0] == "unsat", (out, err)
    assert "copyright notice" in err and "a Python print too" in err, (out, err)


# --------------------------------------------------------------------------- bad inputs
# In-process (conftest's run_main fixture): the same code path as the command, without paying for a
# Python and torch start-up per case.

def assert_input_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)


def test_missing_query_file(run_main, examples, tmp_path):
    missing = tmp_path / "missing.vnnlib"
    assert_input_error(run_main("verify", missing, "--network", f"N={examples / 'onnx' / 'acas_like.onnx'}"),
                       str(missing))


def test_missing_model_file(run_main, examples, tmp_path):
    missing = tmp_path / "missing.onnx"
    ex = Example("acas_like", "unsat", examples)
    assert_input_error(run_main("verify", ex.spec("2.0"), "--network", f"acas_like={missing}"), str(missing))


def test_malformed_query_reports_line_and_column(run_main, examples, tmp_path):
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1.0))\n"
                   "(assert (>= X_0 0.0)\n")
    r = run_main("verify", bad, "--network", f"N={examples / 'onnx' / 'acas_like.onnx'}")
    assert_input_error(r)
    assert re.search(re.escape(str(bad)) + r":\d+:\d+: ", r.stderr), r.stderr


def test_wrong_network_name(run_main, examples):
    ex = Example("acas_like", "unsat", examples)
    assert_input_error(run_main("verify", ex.spec("2.0"), "--network", f"other={ex.onnx}"), "acas_like", "other")


def test_too_many_networks(run_main, examples):
    ex = Example("acas_like", "unsat", examples)
    assert_input_error(run_main("verify", ex.spec("2.0"), "--network", f"acas_like={ex.onnx}",
                               "--network", f"extra={ex.onnx}"), "extra")
    assert_input_error(run_main("verify", ex.spec("1.0"), "--network", f"a={ex.onnx}", "--network", f"b={ex.onnx}"))


def test_no_network(run_main, examples):
    ex = Example("acas_like", "unsat", examples)
    assert_input_error(run_main("verify", ex.spec("2.0")))


def test_element_type_mismatch(run_main, examples, tmp_path):
    ex = Example("acas_like", "unsat", examples)
    query = tmp_path / "f64.vnnlib"
    query.write_text(ex.spec("2.0").read_text().replace("float32", "float64"))
    assert_input_error(run_main("verify", query, "--network", f"acas_like={ex.onnx}"), "float64")


def test_unsupported_operator_is_named_with_its_node(run_main, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W", "B"], ["h"], name="fc", transB=1),
         helper.make_node("Hardmax", ["h"], ["Y"], name="hard_max")], "hardmax",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.eye(2, dtype=np.float32), "W"),
         numpy_helper.from_array(np.zeros(2, np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "hardmax.onnx"
    path.write_bytes(model.SerializeToString())
    query = tmp_path / "q.vnnlib"
    query.write_text("(vnnlib-version <2.0>)\n(declare-network net\n  (declare-input X float32 [1,2])\n"
                     "  (declare-output Y float32 [1,2]))\n"
                     "(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0) (>= X[0,1] 0.0) (<= X[0,1] 1.0)))\n"
                     "(assert (>= Y[0,0] 5.0))\n")
    assert_input_error(run_main("verify", query, "--network", f"net={path}"), "Hardmax", "hard_max")


def test_bad_input_through_the_real_process(examples, tmp_path):
    """The process itself: exit status 2, one line on stderr, nothing on stdout, no traceback."""
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(assert (<= X_0 1.0)\n")
    r = run_cli("verify", bad, "--network", f"N={examples / 'onnx' / 'acas_like.onnx'}")
    assert_input_error(r)
    assert re.search(re.escape(str(bad)) + r":\d+:\d+: ", r.stderr), r.stderr


def test_python_m_verifier_from_a_benchmark_folder(examples):
    """Started inside a benchmark folder, whose properties live in vnnlib/, `python -m verifier` must
    still import the parser package, not that folder (it did, as a namespace package, under an
    editable install)."""
    r = run_cli("verify", "vnnlib/acas_like_unsat.vnnlib", "--network", "N=onnx/acas_like.onnx", "-q",
                cwd=examples)
    assert (r.returncode, r.stdout) == (0, "unsat\n"), r.stderr


@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "nan", "inf", "-inf", "abc", ""])
@pytest.mark.parametrize("command", ["verify", "vnncomp"])
def test_time_limits_that_are_not_positive_finite_seconds_are_refused(run_main, examples, tmp_path, value,
                                                                        command):
    ex = Example("acas_like", "unsat", examples)
    if command == "verify":
        args = ("verify", ex.spec("2.0"), "--network", f"acas_like={ex.onnx}", "--timeout", value)
    else:
        args = ("vnncomp", ex.onnx, ex.spec("1.0"), tmp_path / "result.txt", value)
    assert_input_error(run_main(*args), "timeout")


def test_time_limit_errors_are_one_line_through_the_real_process(examples):
    ex = Example("acas_like", "unsat", examples)
    r = run_cli("verify", ex.spec("2.0"), "--network", f"acas_like={ex.onnx}", "--timeout", "nan")
    assert_input_error(r, "--timeout", "positive, finite")
    assert_input_error(run_cli("verify", ex.spec("2.0"), "--bogus-option"), "--bogus-option")


@pytest.mark.parametrize("limit", [0.3, 0.8])
def test_short_time_limits_are_honoured_by_the_whole_process(examples, tmp_path, limit):
    """Everything after the limit counts, the interpreter's start, the imports and the model's
    loading included: a limit shorter than them answers timed-out (exit 0) close to the limit,
    through `verify` and through `vnncomp` (whose result file says timeout)."""
    import time as _time

    ex = Example("acas_like", "unsat", examples)
    t0 = _time.monotonic()
    r = run_cli("verify", ex.spec("2.0"), "--network", f"acas_like={ex.onnx}", "--timeout", str(limit), "-q")
    took = _time.monotonic() - t0
    assert (r.returncode, r.stdout) == (0, "timed-out\n"), r.stderr
    assert took < limit + 0.7, took     # the watchdog fires within a few hundredths; exit is quick
    result = tmp_path / "result.txt"
    t0 = _time.monotonic()
    r = run_cli("vnncomp", ex.onnx, ex.spec("1.0"), result, str(limit), "-q")
    took = _time.monotonic() - t0
    assert r.returncode == 0 and result.read_text() == "timeout\n", r.stderr
    assert took < limit + 0.7, took


def test_a_limit_that_leaves_time_still_answers(examples):
    """The watchdog stays silent when the answer comes first (and prints nothing after it)."""
    ex = Example("acas_like", "sat", examples)
    r = run_cli("verify", ex.spec("2.0"), "--network", f"acas_like={ex.onnx}", "--timeout", "60", "-q")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "sat" and "timed-out" not in r.stdout, r.stderr
