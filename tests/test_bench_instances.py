"""Reading instances.csv and choosing subsets for the benchmark runner."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from verifier.bench.instances import (InstancesError, Selection, network_name, read_instances, select,
                                      v2_twin)


def bench(tmp_path: Path, csv_text: str, specs=("vnnlib/a.vnnlib", "vnnlib2/a.vnnlib")) -> Path:
    root = tmp_path / "mybench"
    root.mkdir(exist_ok=True)
    for s in specs:
        (root / s).parent.mkdir(parents=True, exist_ok=True)
        (root / s).write_text("(declare-const X_0 Real)\n")
    (root / "instances.csv").write_text(csv_text)
    return root


def test_header_form(tmp_path):
    root = bench(tmp_path, "onnx,vnnlib,timeout,expected\nn.onnx,vnnlib/a.vnnlib,60,SAT\nn.onnx,vnnlib/a.vnnlib,7.5,\n")
    found, skipped = read_instances(root)
    assert [(i.bench, i.timeout, i.expected, i.row) for i in found] == [("mybench", 60.0, "sat", 2), ("mybench", 7.5, "", 3)]
    assert found[0].spec == root / "vnnlib/a.vnnlib" and found[0].spec_version == "v1" and not skipped


def test_plain_vnncomp_form_and_csv_argument(tmp_path):
    root = bench(tmp_path, "n.onnx,vnnlib/a.vnnlib,116\n\nm.onnx,vnnlib/a.vnnlib,116\n")
    found, _ = read_instances(root / "instances.csv")
    assert [i.onnx for i in found] == ["n.onnx", "m.onnx"] and all(i.expected == "" for i in found)


@pytest.mark.parametrize("text", ["onnx,vnnlib,time\nn,vnnlib/a.vnnlib,1\n", "n.onnx,vnnlib/a.vnnlib\n",
                                  "n.onnx,vnnlib/a.vnnlib,soon\n", "n.onnx,vnnlib/a.vnnlib,0\n",
                                  "n.onnx,vnnlib/a.vnnlib,5,holds\n"])
def test_malformed_files(tmp_path, text):
    with pytest.raises(InstancesError):
        read_instances(bench(tmp_path, text))


def test_v2_twins(tmp_path):
    assert v2_twin("vnnlib/sub/p.vnnlib") == "vnnlib2/sub/p.vnnlib"
    assert v2_twin("specs/p.vnnlib") is None and v2_twin("p.vnnlib") is None
    root = bench(tmp_path, "n.onnx,vnnlib/a.vnnlib,5\nn.onnx,vnnlib/b.vnnlib,5\nn.onnx,p.vnnlib,5\n",
                 specs=("vnnlib/a.vnnlib", "vnnlib2/a.vnnlib", "vnnlib/b.vnnlib"))
    found, skipped = read_instances(root, "v2")
    assert [i.spec for i in found] == [root / "vnnlib2/a.vnnlib"] and found[0].vnnlib == "vnnlib/a.vnnlib"
    assert found[0].spec_version == "v2" and len(skipped) == 2


def test_gzipped_sibling_is_found(tmp_path):
    root = bench(tmp_path, "n.onnx,vnnlib/a.vnnlib,5\n", specs=())
    (root / "vnnlib").mkdir()
    (root / "vnnlib/a.vnnlib.gz").write_bytes(gzip.compress(b"(declare-const X_0 Real)"))
    (root / "n.onnx.gz").write_bytes(b"")
    found, _ = read_instances(root)
    assert found[0].spec.name == "a.vnnlib.gz" and found[0].onnx_path.name == "n.onnx.gz"


def test_selection_order_is_filter_every_limit(tmp_path):
    rows = "".join(f"n{i}.onnx,vnnlib/a.vnnlib,5\n" for i in range(10))
    found, _ = read_instances(bench(tmp_path, rows))
    pick = lambda **kw: [i.onnx for i in select(found, Selection(**kw))]  # noqa: E731
    assert pick() == [f"n{i}.onnx" for i in range(10)]
    assert pick(every=3) == ["n0.onnx", "n3.onnx", "n6.onnx", "n9.onnx"]
    assert pick(every=3, limit=2) == ["n0.onnx", "n3.onnx"]
    assert pick(filter=r"n[2-7]\.", every=2, limit=2) == ["n2.onnx", "n4.onnx"]
    assert pick(filter="^mybench/n1") == ["n1.onnx"]
    with pytest.raises(InstancesError):
        pick(every=0)


def test_network_name(tmp_path):
    v2 = tmp_path / "p2.vnnlib"
    v2.write_text("; a comment (declare-network wrong\n(vnnlib-version <2.0>)\n(declare-network  acc_1\n"
                  "  (declare-input X Real [3]))\n")
    v1 = tmp_path / "p1.vnnlib"
    v1.write_text("(declare-const X_0 Real)\n")
    gz = tmp_path / "p3.vnnlib.gz"
    gz.write_bytes(gzip.compress(b"(declare-network g (declare-input X Real [1]))"))
    assert network_name(v2) == "acc_1" and network_name(v1) == "N" and network_name(gz) == "g"


def test_onnx_column_naming_several_networks(tmp_path):
    from verifier.bench.instances import network_pairs

    root = bench(tmp_path, 'onnx,vnnlib,timeout\n"f=onnx/a.onnx;g=onnx/b.onnx",vnnlib/a.vnnlib,60\n'
                           'f=onnx/a.onnx,vnnlib/a.vnnlib,60\nonnx/a.onnx,vnnlib/a.vnnlib,60\n')
    found, _ = read_instances(root)
    assert found[0].networks == {"f": root / "onnx/a.onnx", "g": root / "onnx/b.onnx"}
    assert found[1].networks == {"f": root / "onnx/a.onnx"} and found[2].networks is None
    assert network_pairs("(f onnx/a.onnx) (g onnx/b.onnx)") == {"f": "onnx/a.onnx", "g": "onnx/b.onnx"}
    for bad in ("f=a.onnx g", "f=a.onnx;f=b.onnx"):
        with pytest.raises(InstancesError):
            network_pairs(bad)
