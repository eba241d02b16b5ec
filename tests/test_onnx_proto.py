"""verifier/onnx_proto.py, the ONNX reader without the onnx package, against onnx's own reading:
its field table against onnx's descriptors; every message field, tensor value and attribute
value of real and generated models, bit for bit; both protobuf encodings of repeated scalars,
merged messages, unknown fields, truncated and random bytes; and the models onnx's checker
refused, still refused (by onnxruntime) now that the checker is not run."""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message import DecodeError as ProtoDecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import onnx_proto as P
from verifier.api import InputError, load_checked

import helpers_nets as H
from conftest import ROOT

SHARED = ROOT.parent / "shared" / "benchmarks"

ONNX_CLASSES = {
    P.ModelProto: onnx.ModelProto, P.GraphProto: onnx.GraphProto, P.NodeProto: onnx.NodeProto,
    P.AttributeProto: onnx.AttributeProto, P.TensorProto: onnx.TensorProto, P.ValueInfoProto: onnx.ValueInfoProto,
    P.TypeProto: onnx.TypeProto, P.TypeProtoTensor: onnx.TypeProto.Tensor, P.TensorShapeProto: onnx.TensorShapeProto,
    P.Dimension: onnx.TensorShapeProto.Dimension, P.OperatorSetIdProto: onnx.OperatorSetIdProto,
    P.StringStringEntryProto: onnx.StringStringEntryProto,
}
KIND_TYPES = {P._INT: {FD.TYPE_INT64}, P._INT32: {FD.TYPE_INT32, FD.TYPE_ENUM}, P._UINT: {FD.TYPE_UINT64},
              P._FLOAT: {FD.TYPE_FLOAT}, P._DOUBLE: {FD.TYPE_DOUBLE}, P._STRING: {FD.TYPE_STRING},
              P._BYTES: {FD.TYPE_BYTES, FD.TYPE_MESSAGE}}   # a message read as bytes: its presence only


def _repeated(fd) -> bool:
    return fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == FD.LABEL_REPEATED


def test_field_table_matches_onnx_descriptors():
    for ours, theirs in ONNX_CLASSES.items():
        desc = theirs.DESCRIPTOR
        for number, (name, kind, repeated) in ours.FIELDS.items():
            fd = desc.fields_by_number[number]
            assert fd.name == name, (ours.__name__, number)
            assert _repeated(fd) == repeated, (ours.__name__, name)
            if kind in P._MESSAGES:
                assert fd.type == FD.TYPE_MESSAGE and ONNX_CLASSES[P._MESSAGES[kind]].DESCRIPTOR == fd.message_type
            else:
                assert fd.type in KIND_TYPES[kind], (ours.__name__, name, fd.type)


# --------------------------------------------------------------------------- deep comparison
def _same_scalar(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    return a == b and type(a) is type(b)


PRESENCE_ONLY = ("segment", "sparse_initializer", "functions")


def assert_same(ours, theirs, where="model") -> None:
    """Every field ours declares equals onnx's, recursively; tensors' values and attributes'
    values as the importer reads them too."""
    for _, (name, kind, repeated) in type(ours).FIELDS.items():
        a, b = getattr(ours, name), getattr(theirs, name)
        at = f"{where}.{name}"
        if kind in P._MESSAGES:
            if repeated:
                assert len(a) == len(b), at
                for i, (x, y) in enumerate(zip(a, b)):
                    assert_same(x, y, f"{at}[{i}]")
            else:
                assert ours.HasField(name) == theirs.HasField(name), at
                assert_same(a, b, at)
        elif name in PRESENCE_ONLY:                 # messages the importer only refuses
            assert (len(a) == len(b)) if repeated else (ours.HasField(name) == theirs.HasField(name)), at
        elif repeated:
            assert len(a) == len(b) and all(_same_scalar(x, y) for x, y in zip(a, b)), at
        else:
            assert _same_scalar(a, b), (at, a, b)
            assert ours.HasField(name) == theirs.HasField(name), at
    if isinstance(ours, P.TensorProto):
        a, b = _outcome(P.to_array, ours), _outcome(numpy_helper.to_array, theirs)
        assert type(a) is type(b), (where, a, b)
        if isinstance(a, np.ndarray):
            assert_same_array(a, b, where)
    if isinstance(ours, P.AttributeProto):
        a, b = _outcome(P.attribute_value, ours), _outcome(helper.get_attribute_value, theirs)
        if isinstance(b, Exception):
            assert isinstance(a, Exception), where
            return
        for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            if isinstance(x, P.Message):
                assert_same(x, y, f"{where}.value")
            else:
                assert _same_scalar(x, y), where


def _outcome(f, x):
    """f(x), or the exception it raises (compared by kind: the importer refuses both alike)."""
    try:
        return f(x)
    except Exception as e:   # noqa: BLE001
        return e


def assert_same_array(a: np.ndarray, b: np.ndarray, where="") -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype, a.shape, b.shape)
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), where


def _check_bytes(data: bytes) -> None:
    assert_same(P.load_model_bytes(data), onnx.ModelProto.FromString(data))


def _generated_models():
    rng = np.random.default_rng(0)
    yield "mlp", H.random_mlp(rng, 5, [7, 6], 3, ["Relu", "Sigmoid"])
    yield "conv", H.random_convnet(rng)
    yield "residual", H.random_residual(rng)
    yield "branches", H.random_branches(rng)
    for i in range(6):
        yield f"exotic{i}", H.random_exotic(rng)
    yield "float64", H.to_float64(H.random_mlp(rng, 4, [5], 2, ["Tanh"]))


@pytest.mark.parametrize("name,model", list(_generated_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_generated_models_read_as_onnx_reads_them(name, model):
    _check_bytes(model.SerializeToString())


def test_bundled_examples_read_as_onnx_reads_them(examples):
    files = sorted(Path(examples).rglob("*.onnx"))
    assert files
    for f in files:
        _check_bytes(f.read_bytes())


def _shared_models() -> list[Path]:
    if not SHARED.is_dir():
        return []
    files = sorted(p for p in SHARED.rglob("*") if p.name.endswith((".onnx", ".onnx.gz")))
    by_dir: dict[Path, list[Path]] = {}
    for f in files:
        by_dir.setdefault(f.parent, []).append(f)
    return [f for group in by_dir.values() for f in group[:3]]   # three per benchmark keeps it quick


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared benchmarks are not here")
def test_benchmark_models_read_as_onnx_reads_them():
    files = _shared_models()
    assert files
    for f in files:
        data = f.read_bytes()
        _check_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


# --------------------------------------------------------------------------- tensors
SPECIAL = {np.float32: [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38], np.float64: [-0.0, np.inf, 5e-324, np.nan],
           np.int64: [np.iinfo(np.int64).min, np.iinfo(np.int64).max, -1], np.int32: [-(2 ** 31), 2 ** 31 - 1, -1],
           np.uint64: [2 ** 64 - 1, 2 ** 63], np.uint32: [2 ** 32 - 1], np.int8: [-128, 127], np.uint8: [255],
           np.int16: [-32768], np.uint16: [65535], np.bool_: [True, False]}


@pytest.mark.parametrize("dtype", list(SPECIAL), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("shape", [(), (0,), (2, 3), (7,)])
def test_tensors_of_every_decoded_type(dtype, raw, shape):
    rng = np.random.default_rng(1)
    n = int(np.prod(shape))
    pool = np.array(SPECIAL[dtype] + list(rng.integers(-100, 100, 8)), dtype=object)
    values = np.array([pool[i % len(pool)] for i in range(n)], dtype=object).astype(dtype).reshape(shape)
    t = numpy_helper.from_array(values, "t") if raw else helper.make_tensor(
        "t", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape, values.flatten().tolist())
    theirs = TensorProto.FromString(t.SerializeToString())
    ours = P.TensorProto(t.SerializeToString())
    assert_same(ours, theirs)
    assert_same_array(P.to_array(ours), values)


def test_types_decoded_elsewhere_go_through_onnx():
    """float16 (and the other non-native types): handed to onnx with the tensor's bytes."""
    values = np.array([1.5, -2.0, 65504.0], dtype=np.float16)
    for t in (numpy_helper.from_array(values, "h"), helper.make_tensor("h", TensorProto.FLOAT16, [3], values)):
        assert_same_array(P.to_array(P.TensorProto(t.SerializeToString())), values)


# --------------------------------------------------------------------------- encodings
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def test_unpacked_and_packed_repeated_scalars_read_alike():
    floats = [1.5, -0.0, float("inf"), 3.0]
    ints = [-5, 2 ** 62, 0]
    unpacked = b"".join(_key(1, 0) + _varint(d) for d in (2, 2))               # dims, one at a time
    unpacked += _key(2, 0) + _varint(TensorProto.FLOAT)
    unpacked += b"".join(_key(4, 5) + struct.pack("<f", f) for f in floats)   # float_data
    packed = _len(1, _varint(2) + _varint(2)) + _key(2, 0) + _varint(TensorProto.FLOAT)
    packed += _len(4, b"".join(struct.pack("<f", f) for f in floats))
    mixed = packed[:len(packed) - 18] + _key(4, 5) + struct.pack("<f", floats[0]) \
        + _len(4, b"".join(struct.pack("<f", f) for f in floats[1:]))
    for data in (unpacked, packed, mixed):
        theirs = TensorProto.FromString(data)
        ours = P.TensorProto(data)
        assert_same(ours, theirs)
    ints_t = _key(2, 0) + _varint(TensorProto.INT64) + _len(1, _varint(3)) \
        + b"".join(_key(7, 0) + _varint(v) for v in ints)
    assert_same(P.TensorProto(ints_t), TensorProto.FromString(ints_t))
    assert P.to_array(P.TensorProto(ints_t)).tolist() == ints


def test_negative_int32_fields_and_unknown_fields():
    data = _key(2, 0) + _varint(TensorProto.INT32) + _len(1, _varint(2)) \
        + _len(5, _varint(-7) + _varint(2 ** 31 - 1) + _varint(2 ** 32 - 9)) \
        + _key(999, 0) + _varint(5) + _len(998, b"junk")
    data = data.replace(_len(1, _varint(2)), _len(1, _varint(3)))
    assert_same(P.TensorProto(data), TensorProto.FromString(data))
    # -9 written in five bytes (the low 32 bits only): an int32 field reads it as -9
    assert P.to_array(P.TensorProto(data)).tolist() == [-7, 2 ** 31 - 1, -9]


def test_a_message_field_seen_twice_is_merged():
    rng = np.random.default_rng(2)
    m = H.random_mlp(rng, 3, [4], 2, ["Relu"])
    g = m.graph.SerializeToString()
    half = len(m.graph.node) // 2 or 1
    g1, g2 = onnx.GraphProto(), onnx.GraphProto()
    g1.CopyFrom(m.graph)
    del g1.node[half:]
    g2.node.extend(m.graph.node[half:])
    rest = onnx.ModelProto()
    rest.CopyFrom(m)
    rest.ClearField("graph")
    data = rest.SerializeToString() + _len(7, g1.SerializeToString()) + _len(7, g2.SerializeToString())
    theirs = onnx.ModelProto.FromString(data)
    assert theirs.graph.SerializeToString() == g
    assert_same(P.load_model_bytes(data), theirs)


# --------------------------------------------------------------------------- bad bytes
def test_every_truncation_fails_or_reads_as_onnx_reads_it():
    data = H.random_mlp(np.random.default_rng(3), 3, [4], 2, ["Relu"]).SerializeToString()
    for n in range(len(data)):
        try:
            theirs = onnx.ModelProto.FromString(data[:n])
        except ProtoDecodeError:
            with pytest.raises(P.DecodeError):
                P.load_model_bytes(data[:n])
            continue
        assert_same(P.load_model_bytes(data[:n]), theirs)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_fail_cleanly_or_read_as_onnx_reads_them(data):
    try:
        ours = P.load_model_bytes(data)
        ours_list = [ours]
        # reading every field touches the lazily decoded defaults too
        assert_fields_readable(ours)
    except P.DecodeError:
        ours_list = []
    try:
        theirs = onnx.ModelProto.FromString(data)
    except ProtoDecodeError:
        return
    if ours_list:      # (ours may refuse what onnx reads, e.g. a string that is not UTF-8: no misreading)
        assert_same(ours_list[0], theirs)


def assert_fields_readable(m) -> None:
    for _, (name, kind, repeated) in type(m).FIELDS.items():
        v = getattr(m, name)
        if kind in P._MESSAGES:
            for x in (v if repeated else [v]):
                assert_fields_readable(x)


def test_load_model_refuses_unreadable_files(tmp_path):
    from verifier.onnx_import import ModelError, load_model

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x0a\xff\xff\xff\x0f")      # a graph field longer than the file
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_model(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_model(empty)


# --------------------------------------------------------------------------- no checker, still refused
def _relu_model(edit) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [x], [y])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    edit(m)
    return m


def _unknown_attribute(m):
    m.graph.node[0].attribute.append(helper.make_attribute("slope", 0.5))


def _undefined_input(m):
    m.graph.node[0].input[0] = "nowhere"


def _wrong_arity(m):
    m.graph.node[0].input.append("x")


def _bad_type(m):
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT


@pytest.mark.parametrize("edit", [_unknown_attribute, _undefined_input, _wrong_arity, _bad_type])
def test_models_the_checker_refused_are_still_refused(tmp_path, edit):
    m = _relu_model(edit)
    with pytest.raises(Exception):
        onnx.checker.check_model(m, full_check=True)
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(InputError):
        load_checked(path)
