"""Benchmark specs parse, and each 1.0 spec equals its 2.0 twin (same file name).

The benchmarks are not part of the repository: these tests skip when the folder is absent.
To keep the suite fast, a deterministic sample is parsed: every file of the small benchmark
folders, all of nn4sys (the parser-speed benchmark, 11 MB per file at most), and 8 evenly
spaced files of each large folder.  Each file is parsed once per session.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from vnnlib import Property, VnnlibError, parse_file, sniff_version

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
# The standard's own syntax tests, if a checkout of VNNLIB-Standard sits beside the benchmarks.
SYNTAX_TESTS = BENCH.parent / "VNNLIB-Standard" / "syntax" / "test"
SMALL_FOLDER = 3 << 20      # bytes: folders below this are parsed entirely
SAMPLE = 8                  # files taken from each larger folder


def _is_spec(p: Path) -> bool:
    return p.is_file() and (p.name.endswith(".vnnlib") or p.name.endswith(".vnnlib.gz"))


def _sample() -> list[Path]:
    """The specs this module parses (see the module docstring)."""
    if not BENCH.is_dir():
        return []
    by_folder: dict[Path, list[Path]] = {}
    for p in sorted(BENCH.rglob("*")):
        if _is_spec(p):
            by_folder.setdefault(p.parent, []).append(p)
    chosen = []
    for folder, files in by_folder.items():
        big = sum(f.stat().st_size for f in files) > SMALL_FOLDER
        if big and "nn4sys" not in str(folder):
            step = len(files) / SAMPLE
            files = [files[int(i * step)] for i in range(min(SAMPLE, len(files)))]
        chosen += files
    # a 1.0 file is compared with its twin: take the twins of sampled files as well
    twins = [_twin(p) for p in chosen]
    return sorted(set(chosen) | {t for t in twins if t is not None})


def _twin(p: Path) -> Path | None:
    if p.parent.name != "vnnlib":
        return None
    q = p.parent.parent / "vnnlib2" / p.name
    return q if q.is_file() else None


@pytest.fixture(scope="module")
def parsed() -> dict[Path, tuple[Property, float]]:
    """path -> (property, seconds to parse) for the sample."""
    if not BENCH.is_dir():
        pytest.skip(f"{BENCH} is absent")
    out = {}
    for path in _sample():
        t0 = time.perf_counter()
        p = parse_file(path)
        out[path] = (p, time.perf_counter() - t0)
    return out


def _rows(c) -> list[tuple]:
    return sorted((tuple(r), float(d), bool(s)) for r, d, s in zip(c.C, c.d, c.strict))


def _input_rows(case) -> list[tuple]:
    if case.A_in is None:
        return []
    return sorted((tuple(r), float(b)) for r, b in zip(case.A_in, case.b_in))


def _flat(p: Property) -> tuple[np.ndarray, ...]:
    """All boxes and rows of p, concatenated in order (for a fast first comparison)."""
    cs = [c for case in p.cases for c in case.region]
    return (np.stack([c.lo for c in p.cases]), np.stack([c.hi for c in p.cases]),
            np.array([len(case.region) for case in p.cases]), np.array([len(c.d) for c in cs]),
            np.concatenate([c.C for c in cs]), np.concatenate([c.d for c in cs]),
            np.concatenate([c.strict for c in cs]))


def assert_equivalent(p: Property, q: Property) -> None:
    """Same cases in the same order, same boxes, same rows up to order within a conjunct."""
    assert (p.n_in, p.n_out) == (q.n_in, q.n_out)
    assert len(p.cases) == len(q.cases)
    same_inputs = all(_input_rows(a) == _input_rows(b) for a, b in zip(p.cases, q.cases))
    if same_inputs and all(np.array_equal(x, y) for x, y in zip(_flat(p), _flat(q))):
        return      # identical, rows in the same order
    for a, b in zip(p.cases, q.cases):
        np.testing.assert_array_equal(a.lo, b.lo)
        np.testing.assert_array_equal(a.hi, b.hi)
        assert _input_rows(a) == _input_rows(b)
        assert len(a.region) == len(b.region)
        for x, y in zip(a.region, b.region):
            assert _rows(x) == _rows(y)


def test_benchmark_specs_parse(parsed):
    assert parsed
    folders = {p.parent.parent.name for p in parsed} | {p.parent.name for p in parsed}
    assert "nn4sys_2023" in folders
    for path, (p, _) in parsed.items():
        assert p.version == sniff_version(path) == ("2.0" if "vnnlib2" in path.parts else "1.0")
        assert p.n_in == sum(v.size for v in p.inputs) > 0
        assert p.n_out == sum(v.size for v in p.outputs) > 0
        assert p.cases, path
        lo = np.stack([c.lo for c in p.cases])
        hi = np.stack([c.hi for c in p.cases])
        assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)
        C = np.concatenate([c.C for case in p.cases for c in case.region])
        assert C.shape[1] == p.n_out


def test_v1_and_v2_twins_are_equivalent(parsed):
    pairs = [(p, _twin(p)) for p in parsed if _twin(p) is not None]
    if not pairs:
        pytest.skip("no vnnlib/vnnlib2 twins")
    for p1, p2 in pairs:
        a, b = parsed[p1][0], parsed[p2][0]
        assert (a.version, b.version) == ("1.0", "2.0")
        assert_equivalent(a, b)


def test_nn4sys_parses_in_seconds(parsed):
    nn4sys = {p: v for p, v in parsed.items() if "nn4sys" in str(p)}
    if not nn4sys:
        pytest.skip("nn4sys absent")
    largest = max(nn4sys, key=lambda p: p.stat().st_size)
    p, seconds = nn4sys[largest]
    # nn4sys: pairs of terms with the same input interval -> one case per pair
    assert len(p.cases) > 1 and all(len(c.region) == 2 for c in p.cases)
    # ~1.4 s on an idle core; the bound leaves room for a loaded CI machine
    assert seconds < 15.0, f"{largest.name}: {seconds:.1f} s"
    assert sum(s for _, s in nn4sys.values()) < 45.0


def test_vnnlib_standard_syntax_tests():
    """The standard's syntax/test files: every single-network query in them parses, the rest
    is refused with a VnnlibError naming the theory.  Needs a local checkout (no network)."""
    if not SYNTAX_TESTS.is_dir():
        pytest.skip(f"{SYNTAX_TESTS} is absent (no network access in tests)")
    for path in sorted(SYNTAX_TESTS.glob("*.vnnlib")):
        try:
            parse_file(path)
        except VnnlibError as e:
            assert any(t in e.message for t in ("MNET", "MENET", "MINET", "MIO", "H theory",
                                                 "initialized", "no lower bound",
                                                 "no upper bound", "mixed")), str(e)
