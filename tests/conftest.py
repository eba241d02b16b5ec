"""Shared fixtures: the repository, the shared VNN-COMP benchmarks, the bundled examples, and helpers
to run the command line and to check a counterexample independently of the engine."""
from __future__ import annotations

import functools
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


@functools.lru_cache(maxsize=None)
def load_script(name: str):
    """benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def load_make_examples():
    return load_script("make_examples")


def load_digits_models():
    return load_script("digits_models")


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> dict[str, Path]:
    """The bundled audit models (quick training) and their test splits, built once per session."""
    return load_digits_models().build(tmp_path_factory.mktemp("digits"), quick=True)


@pytest.fixture
def shared_benchmarks() -> Path:
    """../shared/benchmarks beside the repository; the test skips when it is absent."""
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip(f"{SHARED_BENCHMARKS} is absent")
    return SHARED_BENCHMARKS


@pytest.fixture(scope="session")
def examples(tmp_path_factory) -> Path:
    """The bundled examples, built once per session into a temporary folder (no verifier cross-check:
    the tests check the answers themselves)."""
    out = tmp_path_factory.mktemp("examples")
    load_make_examples().build(out)
    return out


@dataclass(frozen=True)
class Example:
    net: str          # acas_like | conv_small
    answer: str       # sat | unsat
    root: Path

    @property
    def onnx(self) -> Path:
        return self.root / "onnx" / f"{self.net}.onnx"

    def spec(self, version: str) -> Path:
        return self.root / ("vnnlib" if version == "1.0" else "vnnlib2") / f"{self.net}_{self.answer}.vnnlib"


EXAMPLES = [(net, answer) for net in ("acas_like", "conv_small") for answer in ("unsat", "sat")]
SHAPES = {"acas_like": ([1, 5], [1, 5]), "conv_small": ([1, 1, 8, 8], [1, 3])}


# --------------------------------------------------------------------------- running the CLI
def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m verifier ARGS` in a subprocess (from the repository root, see README: Limitations)."""
    return subprocess.run([sys.executable, "-m", "verifier", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- an independent spec reader
@dataclass(frozen=True)
class BoxSpec:
    """The input box and output region of one of our VNN-LIB 1.0 example files, read with regexes
    (not with the project's parser): violating region = any of `disjuncts`, each a list of
    (j, k_or_const) atoms meaning Y_j >= Y_k or Y_j >= c."""

    lo: np.ndarray
    hi: np.ndarray
    disjuncts: list

    def violated_by(self, y: np.ndarray) -> bool:
        return any(all(y[j] >= (y[k] if isinstance(k, int) else k) for j, k in d) for d in self.disjuncts)


_ATOM = re.compile(r"\(>= Y_(\d+) (Y_(\d+)|[-0-9.e+]+)\)")


def read_example_spec(path: Path) -> BoxSpec:
    text = path.read_text()
    lo, hi = {}, {}
    for op, i, v in re.findall(r"\((>=|<=) X_(\d+) ([-0-9.e+]+)\)", text):
        (lo if op == ">=" else hi)[int(i)] = float(v)
    n = len(lo)
    assert sorted(lo) == sorted(hi) == list(range(n))
    atoms = lambda s: [(int(m[0]), int(m[2]) if m[2] else float(m[1])) for m in _ATOM.findall(s)]
    ors = [l for l in text.splitlines() if l.startswith("(assert (or")]
    if ors:
        disjuncts = [atoms(part) for part in re.findall(r"\(and ((?:\([^()]*\)\s*)+)\)", ors[0])]
    else:
        disjuncts = [atoms("\n".join(l for l in text.splitlines() if l.startswith("(assert (>= Y_")))]
    assert disjuncts and all(disjuncts)
    return BoxSpec(np.array([lo[i] for i in range(n)]), np.array([hi[i] for i in range(n)]), disjuncts)


def onnxruntime_output(model: Path, x_flat: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    dtype = np.float64 if "double" in inp.type else np.float32
    x = np.asarray(x_flat, dtype=dtype).reshape(shape)
    return np.asarray(sess.run(None, {inp.name: x})[0], dtype=np.float64).reshape(-1)


def assert_counterexample(model: Path, spec: BoxSpec, x: np.ndarray, y: np.ndarray | None = None) -> None:
    """x lies in the box, onnxruntime's output on x violates the property, and the reported y (if
    any) is that output."""
    x = np.asarray(x, dtype=np.float64)
    assert x.shape == spec.lo.shape
    assert np.all(spec.lo <= x) and np.all(x <= spec.hi), "counterexample outside the input box"
    out = onnxruntime_output(model, x)
    assert spec.violated_by(out), f"onnxruntime's output {out} does not violate the property"
    if y is not None:
        np.testing.assert_allclose(np.asarray(y, dtype=np.float64), out, rtol=1e-5, atol=1e-6)


# In-process (verifier.cli.main, stdout/stderr captured): the same code path as the command, without
# paying for a Python and torch start-up per case.
@pytest.fixture
def run_main(capsys):
    from verifier.cli import main

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    return run
