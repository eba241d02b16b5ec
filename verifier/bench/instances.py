"""Benchmark instances: reading ``instances.csv`` and choosing a subset of it.

Two forms of ``instances.csv`` are read:

* the project's form, with a header ``onnx,vnnlib,timeout,expected``;
* the plain VNN-COMP form, three columns ``onnx,vnnlib,timeout`` and no header.

Paths in the file are relative to the benchmark folder.  For a query over several networks (VNN-LIB
2.0) the onnx column lists them as ``name=path`` pairs separated by ``;`` or blanks, or as
``(name path)`` pairs (a network declared ``equal-to`` another takes none).  A VNN-LIB 2.0 run reads the ``vnnlib2/``
twin of each property: the same relative path with its first component ``vnnlib`` replaced by
``vnnlib2``.  Instances without such a twin are reported, not run.
"""
from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

EXPECTED = {"sat": "sat", "unsat": "unsat", "": "", "unknown": ""}
SPEC_VERSIONS = ("v1", "v2")


class InstancesError(ValueError):
    """A malformed ``instances.csv``; the message names the file and the line."""


@dataclass(frozen=True)
class Instance:
    """One row of an ``instances.csv``.

    onnx, vnnlib: the paths as written in the file (the VNN-LIB 1.0 property), relative to
    ``bench_dir``; ``spec`` is the property actually run (the v1 path or its v2 twin), absolute.
    """

    bench: str
    bench_dir: Path
    row: int
    onnx: str
    vnnlib: str
    timeout: float
    expected: str
    spec: Path

    @property
    def onnx_path(self) -> Path:
        return existing(self.bench_dir / self.onnx)

    @property
    def networks(self) -> dict[str, Path] | None:
        """{network: model file} when the onnx column names the networks, else None."""
        pairs = network_pairs(self.onnx)
        return None if pairs is None else {k: existing(self.bench_dir / v) for k, v in pairs.items()}

    @property
    def spec_version(self) -> str:
        return "v2" if self.spec.relative_to(self.bench_dir).parts[0] == "vnnlib2" else "v1"

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of an instance across runs (for baselines)."""
        return (self.bench, self.onnx, self.vnnlib)

    @property
    def label(self) -> str:
        return f"{self.bench}/{self.onnx}/{self.vnnlib}"


@dataclass(frozen=True)
class Selection:
    """Which instances of each benchmark to run, applied in this order: filter, every, limit."""

    filter: str | None = None  # regex searched in "bench/onnx/vnnlib"
    every: int = 1             # keep rows 0, K, 2K, ... of those that pass the filter
    limit: int | None = None   # then at most N of them


_PAIR = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9_]*)\s*[, ]\s*([^()\s]+)\s*\)|([A-Za-z][A-Za-z0-9_]*)=([^;\s]+)")


def network_pairs(column: str) -> dict[str, str] | None:
    """The (network, path) pairs of an onnx column that names its networks; None for a plain path."""
    text = column.strip()
    if "=" not in text and not text.startswith("("):
        return None
    out: dict[str, str] = {}
    rest = _PAIR.sub("", text).replace(";", "").strip()
    if rest:
        raise InstancesError(f"cannot read the network list {column!r} (expected name=path pairs)")
    for m in _PAIR.finditer(text):
        name, path = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        if name in out:
            raise InstancesError(f"network {name} listed twice in {column!r}")
        out[name] = path
    return out


def existing(path: Path) -> Path:
    """``path``, or its gzipped sibling ``path.gz`` when only that exists (VNN-COMP ships both)."""
    if not path.exists():
        gz = path.with_name(path.name + ".gz")
        if gz.exists():
            return gz
    return path


def v2_twin(vnnlib: str) -> str | None:
    """The ``vnnlib2/`` twin of a ``vnnlib/...`` path, or None when its first component is not ``vnnlib``."""
    parts = PurePosixPath(vnnlib.replace("\\", "/")).parts
    if len(parts) < 2 or parts[0] != "vnnlib":
        return None
    return str(PurePosixPath("vnnlib2", *parts[1:]))


def csv_path(target: Path) -> Path:
    """The ``instances.csv`` of a benchmark folder, or the file itself."""
    return target if target.is_file() else target / "instances.csv"


def read_instances(target: Path, spec_version: str = "v1") -> tuple[list[Instance], list[str]]:
    """All instances of one benchmark, and the rows skipped for want of a v2 twin (their labels).

    ``target`` is a benchmark folder or an ``instances.csv``; the benchmark is named after the folder.
    """
    if spec_version not in SPEC_VERSIONS:
        raise InstancesError(f"unknown spec version {spec_version!r}; use one of {SPEC_VERSIONS}")
    path = csv_path(Path(target)).resolve()
    if not path.is_file():
        raise InstancesError(f"{path}: no such file")
    bench_dir = path.parent
    instances: list[Instance] = []
    skipped: list[str] = []
    for line, row in _rows(path):
        inst = _instance(path, bench_dir, line, row, spec_version)
        if inst is None:
            skipped.append(f"{bench_dir.name}/{row[0]}/{row[1]}")
        else:
            instances.append(inst)
    return instances, skipped


def _rows(path: Path):
    with open(path, newline="") as f:
        rows = [(i + 1, [c.strip() for c in r]) for i, r in enumerate(csv.reader(f))]
    rows = [(i, r) for i, r in rows if any(r)]
    if rows and [c.lower() for c in rows[0][1][:2]] == ["onnx", "vnnlib"]:
        header = [c.lower() for c in rows[0][1]]
        if header[:3] != ["onnx", "vnnlib", "timeout"] or header[3:] not in ([], ["expected"]):
            raise InstancesError(f"{path}:1: header must be onnx,vnnlib,timeout[,expected], not {rows[0][1]}")
        rows = rows[1:]
    return rows


def _instance(path: Path, bench_dir: Path, line: int, row: list[str], spec_version: str) -> Instance | None:
    if len(row) not in (3, 4):
        raise InstancesError(f"{path}:{line}: expected 3 or 4 columns, got {len(row)}")
    onnx, vnnlib, timeout = row[:3]
    expected = row[3].lower() if len(row) == 4 else ""
    if expected not in EXPECTED:
        raise InstancesError(f"{path}:{line}: expected must be sat, unsat or empty, not {row[3]!r}")
    try:
        seconds = float(timeout)
    except ValueError:
        raise InstancesError(f"{path}:{line}: timeout {timeout!r} is not a number") from None
    if not seconds > 0:
        raise InstancesError(f"{path}:{line}: timeout must be positive, got {timeout}")
    rel = vnnlib if spec_version == "v1" else v2_twin(vnnlib)
    if rel is None:
        return None
    spec = existing(bench_dir / rel)
    if spec_version == "v2" and not spec.exists():
        return None
    return Instance(bench_dir.name, bench_dir, line, onnx, vnnlib, seconds, EXPECTED[expected], spec)


def select(instances: list[Instance], sel: Selection) -> list[Instance]:
    """The subset of one benchmark's instances that ``sel`` keeps, in file order."""
    if sel.every < 1:
        raise InstancesError("--every must be at least 1")
    kept = instances
    if sel.filter:
        pattern = re.compile(sel.filter)
        kept = [i for i in kept if pattern.search(i.label)]
    kept = kept[:: sel.every]
    if sel.limit is not None:
        kept = kept[: max(sel.limit, 0)]
    return kept


_NETWORK = re.compile(rb"\(\s*declare-network\s+([A-Za-z][A-Za-z0-9_]*)")


def network_name(spec: Path, default: str = "N") -> str:
    """The first network a VNN-LIB 2.0 property declares, from its head; ``default`` for VNN-LIB 1.0.

    Reads at most 64 KiB: a declaration comes before the assertions, after at most a few comments.
    """
    opener = gzip.open if spec.name.endswith(".gz") else open
    with opener(spec, "rb") as f:
        head = f.read(1 << 16)
    head = re.sub(rb";[^\n]*", b"", head)
    m = _NETWORK.search(head)
    return m.group(1).decode() if m else default
