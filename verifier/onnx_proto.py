"""ONNX models read without the onnx package: the protobuf wire format decoded into light,
read-only messages that carry the field names of onnx's own (ModelProto, GraphProto, NodeProto,
AttributeProto, TensorProto, ValueInfoProto, TypeProto, ...), so that the importer and the
operator converters read them as they would read onnx's.

Why: `import onnx` costs a tenth of a second of every start (most of it in ml_dtypes, which
onnx's type tables load), more than the engine then needs to decide an easy query.  What the
engine reads of a model is its nodes, their attributes, the initializers and the declared
types; onnxruntime loads every model the engine answers on and checks it against the operator
schemas (api.load_checked), which is what onnx's checker did here before.  Every message keeps
its bytes (`raw`): the rare paths that need onnx itself (constant folding by onnx's reference
evaluator, shape inference for hidden tensors, tensors of element types decoded nowhere here)
hand exactly those bytes to onnx.

Decoding follows protobuf's rules: unknown fields are skipped; a scalar field seen twice keeps
its last value; a repeated scalar may come packed or one element at a time; a message field
seen twice is the merge of both (here: the parse of their bytes joined).  Truncated or
malformed data raises DecodeError.  tests/test_onnx_proto.py checks the field table against
onnx's descriptors and every decoded model against onnx's reading of it.
"""
from __future__ import annotations

import struct
import sys
from typing import Any

import numpy as np


class DecodeError(ValueError):
    """The bytes are not a well-formed protobuf message."""


# wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

# field kinds
_INT = "int"        # varint, signed int64 (two's complement over 64 bits)
_INT32 = "int32"    # varint, signed int32 or enum (the low 32 bits, as protobuf casts them)
_UINT = "uint"      # varint, unsigned (uint64)
_FLOAT = "float"    # fixed32 IEEE single
_DOUBLE = "double"  # fixed64 IEEE double
_BYTES = "bytes"
_STRING = "string"

_SCALAR_DEFAULT = {_INT: 0, _INT32: 0, _UINT: 0, _FLOAT: 0.0, _DOUBLE: 0.0, _BYTES: b"", _STRING: ""}
_PACKED_WIDTH = {_FLOAT: ("<f4", 4), _DOUBLE: ("<f8", 8)}


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= end:
            raise DecodeError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than ten bytes")


def _signed(v: int, bits: int = 64) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


class Message:
    """A decoded message: the fields seen are instance attributes; the others read as their
    defaults (0, "", b"", an empty tuple, an empty message).  FIELDS: number -> (name, kind,
    repeated), kind a scalar kind or a Message subclass's name."""

    FIELDS: dict[int, tuple[str, str, bool]] = {}
    _by_name: dict[str, tuple[str, bool]] = {}
    _empty: "Message | None" = None

    def __init__(self, data: bytes | memoryview = b""):
        buf = data if isinstance(data, memoryview) else memoryview(data)
        self.raw = buf
        self._set: set[str] = set()
        self._decode(buf)

    def __init_subclass__(cls) -> None:
        cls._by_name = {name: (kind, rep) for name, kind, rep in cls.FIELDS.values()}
        cls._empty = None

    def __getattr__(self, name: str) -> Any:   # only reached for fields never seen
        spec = type(self)._by_name.get(name)
        if spec is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        kind, repeated = spec
        if repeated:
            return ()
        if kind in _SCALAR_DEFAULT:
            return _SCALAR_DEFAULT[kind]
        return _MESSAGES[kind].empty()

    @classmethod
    def empty(cls) -> "Message":
        if cls._empty is None:
            cls._empty = cls()
        return cls._empty

    def HasField(self, name: str) -> bool:   # noqa: N802 (protobuf's name)
        return name in self._set

    def SerializeToString(self) -> bytes:   # noqa: N802 (protobuf's name)
        return bytes(self.raw)

    def _decode(self, buf: memoryview) -> None:
        fields = type(self).FIELDS
        i, end = 0, len(buf)
        lists: dict[str, list] = {}
        merged: dict[str, list] = {}
        d = self.__dict__
        while i < end:
            key, i = _varint(buf, i, end)
            number, wire = key >> 3, key & 7
            if wire == _VARINT:
                value, i = _varint(buf, i, end)
                chunk = None
            elif wire == _I64:
                if i + 8 > end:
                    raise DecodeError("truncated fixed64")
                chunk, i = buf[i:i + 8], i + 8
            elif wire == _I32:
                if i + 4 > end:
                    raise DecodeError("truncated fixed32")
                chunk, i = buf[i:i + 4], i + 4
            elif wire == _LEN:
                n, i = _varint(buf, i, end)
                if i + n > end:
                    raise DecodeError("truncated length-delimited field")
                chunk, i = buf[i:i + n], i + n
            else:
                raise DecodeError(f"unsupported wire type {wire}")
            spec = fields.get(number)
            if spec is None:
                continue   # unknown field: skipped, as protobuf does
            name, kind, repeated = spec
            if kind in _MESSAGES:
                if wire != _LEN:
                    raise DecodeError(f"field {name}: a message with wire type {wire}")
                if repeated:
                    lists.setdefault(name, []).append(_MESSAGES[kind](chunk))
                else:
                    merged.setdefault(name, []).append(chunk)
            elif repeated:
                out = lists.setdefault(name, [])
                if wire == _LEN and kind not in (_BYTES, _STRING):
                    _unpack(chunk, kind, out, name)
                else:
                    out.append(_scalar(wire, value if chunk is None else chunk, kind, name))
            else:
                d[name] = _scalar(wire, value if chunk is None else chunk, kind, name)
            self._set.add(name)
        for name, chunks in merged.items():
            d[name] = _MESSAGES[type(self)._by_name[name][0]](
                chunks[0] if len(chunks) == 1 else memoryview(b"".join(bytes(c) for c in chunks)))
        for name, values in lists.items():
            d[name] = values


def _scalar(wire: int, v: Any, kind: str, name: str) -> Any:
    if kind == _INT and wire == _VARINT:
        return _signed(v)
    if kind == _INT32 and wire == _VARINT:
        return _signed(v, 32)
    if kind == _UINT and wire == _VARINT:
        return v
    if kind == _FLOAT and wire == _I32:
        return struct.unpack("<f", v)[0]
    if kind == _DOUBLE and wire == _I64:
        return struct.unpack("<d", v)[0]
    if kind == _BYTES and wire == _LEN:
        return bytes(v)
    if kind == _STRING and wire == _LEN:
        try:
            return str(v, "utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"field {name}: a string that is not UTF-8") from None
    raise DecodeError(f"field {name}: wire type {wire} for a {kind}")


def _unpack(chunk: memoryview, kind: str, out: list, name: str) -> None:
    """A packed run of scalars appended to out."""
    if kind in _PACKED_WIDTH:
        dtype, width = _PACKED_WIDTH[kind]
        if len(chunk) % width:
            raise DecodeError(f"field {name}: a packed run of {len(chunk)} bytes")
        out.extend(np.frombuffer(chunk, dtype=dtype).tolist())
        return
    i, end = 0, len(chunk)
    while i < end:
        v, i = _varint(chunk, i, end)
        out.append(_signed(v) if kind == _INT else _signed(v, 32) if kind == _INT32 else v)


# --------------------------------------------------------------------------- the messages read
# field numbers and kinds as onnx/onnx-ml.proto declares them (checked against onnx's
# descriptors by the tests); fields the engine never reads are left out and skipped

class StringStringEntryProto(Message):
    FIELDS = {1: ("key", _STRING, False), 2: ("value", _STRING, False)}


class OperatorSetIdProto(Message):
    FIELDS = {1: ("domain", _STRING, False), 2: ("version", _INT, False)}


class Dimension(Message):
    FIELDS = {1: ("dim_value", _INT, False), 2: ("dim_param", _STRING, False), 3: ("denotation", _STRING, False)}


class TensorShapeProto(Message):
    FIELDS = {1: ("dim", "Dimension", True)}


class TypeProtoTensor(Message):
    FIELDS = {1: ("elem_type", _INT32, False), 2: ("shape", "TensorShapeProto", False)}


class TypeProto(Message):
    FIELDS = {1: ("tensor_type", "TypeProtoTensor", False), 6: ("denotation", _STRING, False)}


class ValueInfoProto(Message):
    FIELDS = {1: ("name", _STRING, False), 2: ("type", "TypeProto", False), 3: ("doc_string", _STRING, False)}


class TensorProto(Message):
    FIELDS = {1: ("dims", _INT, True), 2: ("data_type", _INT32, False), 3: ("segment", _BYTES, False),
              4: ("float_data", _FLOAT, True), 5: ("int32_data", _INT32, True), 6: ("string_data", _BYTES, True),
              7: ("int64_data", _INT, True), 8: ("name", _STRING, False), 9: ("raw_data", _BYTES, False),
              10: ("double_data", _DOUBLE, True), 11: ("uint64_data", _UINT, True),
              12: ("doc_string", _STRING, False), 13: ("external_data", "StringStringEntryProto", True),
              14: ("data_location", _INT32, False)}


class AttributeProto(Message):
    FIELDS = {1: ("name", _STRING, False), 2: ("f", _FLOAT, False), 3: ("i", _INT, False), 4: ("s", _BYTES, False),
              5: ("t", "TensorProto", False), 6: ("g", "GraphProto", False), 7: ("floats", _FLOAT, True),
              8: ("ints", _INT, True), 9: ("strings", _BYTES, True), 10: ("tensors", "TensorProto", True),
              11: ("graphs", "GraphProto", True), 13: ("doc_string", _STRING, False), 20: ("type", _INT32, False),
              21: ("ref_attr_name", _STRING, False)}


class NodeProto(Message):
    FIELDS = {1: ("input", _STRING, True), 2: ("output", _STRING, True), 3: ("name", _STRING, False),
              4: ("op_type", _STRING, False), 5: ("attribute", "AttributeProto", True),
              6: ("doc_string", _STRING, False), 7: ("domain", _STRING, False)}


class GraphProto(Message):
    FIELDS = {1: ("node", "NodeProto", True), 2: ("name", _STRING, False), 5: ("initializer", "TensorProto", True),
              10: ("doc_string", _STRING, False), 11: ("input", "ValueInfoProto", True),
              12: ("output", "ValueInfoProto", True), 13: ("value_info", "ValueInfoProto", True),
              15: ("sparse_initializer", _BYTES, True)}


class ModelProto(Message):
    FIELDS = {1: ("ir_version", _INT, False), 2: ("producer_name", _STRING, False),
              3: ("producer_version", _STRING, False), 4: ("domain", _STRING, False),
              5: ("model_version", _INT, False), 6: ("doc_string", _STRING, False), 7: ("graph", "GraphProto", False),
              8: ("opset_import", "OperatorSetIdProto", True), 25: ("functions", _BYTES, True)}


_MESSAGES: dict[str, type[Message]] = {c.__name__: c for c in (
    StringStringEntryProto, OperatorSetIdProto, Dimension, TensorShapeProto, TypeProtoTensor, TypeProto,
    ValueInfoProto, TensorProto, AttributeProto, NodeProto, GraphProto, ModelProto)}


def load_model_bytes(data: bytes) -> ModelProto:
    """The model in data (DecodeError when it is not a protobuf message)."""
    return ModelProto(data)


# --------------------------------------------------------------------------- values
# TensorProto.DataType values (onnx.TensorProto.FLOAT, ...) this module decodes itself
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL, FLOAT16, DOUBLE, UINT32, UINT64 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
_NUMPY = {FLOAT: np.float32, UINT8: np.uint8, INT8: np.int8, UINT16: np.uint16, INT16: np.int16, INT32: np.int32,
          INT64: np.int64, BOOL: np.bool_, DOUBLE: np.float64, UINT32: np.uint32, UINT64: np.uint64}
# where each type's elements sit when not in raw_data, and their type there
_STORAGE = {FLOAT: ("float_data", np.float32), DOUBLE: ("double_data", np.float64),
            INT64: ("int64_data", np.int64), UINT32: ("uint64_data", np.uint64), UINT64: ("uint64_data", np.uint64)}
TYPE_NAMES = {0: "UNDEFINED", FLOAT: "FLOAT", UINT8: "UINT8", INT8: "INT8", UINT16: "UINT16", INT16: "INT16",
              INT32: "INT32", INT64: "INT64", STRING: "STRING", BOOL: "BOOL", FLOAT16: "FLOAT16", DOUBLE: "DOUBLE",
              UINT32: "UINT32", UINT64: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16",
              17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4",
              22: "INT4", 23: "FLOAT4E2M1"}


def type_name(t: int) -> str:
    return TYPE_NAMES.get(t, str(t))


def to_array(t) -> np.ndarray:
    """A tensor's value as onnx.numpy_helper.to_array gives it (read-only where it is a view
    of raw_data).  Element types other than numpy's native ones, external data and segments are
    handed to onnx itself (the bytes of this tensor)."""
    if not isinstance(t, TensorProto):        # already one of onnx's
        from onnx import numpy_helper

        return numpy_helper.to_array(t)
    dtype = _NUMPY.get(t.data_type)
    if dtype is None or t.HasField("segment") or t.data_location != 0 or t.external_data:
        import onnx
        from onnx import numpy_helper

        return numpy_helper.to_array(onnx.TensorProto.FromString(bytes(t.raw)))
    dims = tuple(t.dims)
    if t.HasField("raw_data"):
        a = np.frombuffer(t.raw_data, dtype=np.dtype(dtype).newbyteorder("<"))
        if sys.byteorder == "big":
            a = a.astype(dtype)
    else:
        field, storage = _STORAGE.get(t.data_type, ("int32_data", np.int32))
        a = np.array(getattr(t, field), dtype=storage).astype(dtype)
    try:
        return a.reshape(dims)
    except ValueError:
        raise DecodeError(f"tensor {t.name!r}: {a.size} elements for the shape {list(dims)}") from None


def attribute_value(a: AttributeProto) -> Any:
    """The attribute's value as onnx.helper.get_attribute_value gives it."""
    if not isinstance(a, AttributeProto):
        from onnx import helper

        return helper.get_attribute_value(a)
    if a.ref_attr_name:
        raise ValueError(f"cannot read the reference attribute {a.name!r}")
    kind = a.type
    if kind in _ATTRIBUTE_FIELDS:
        field, repeated = _ATTRIBUTE_FIELDS[kind]
        value = getattr(a, field)
        return list(value) if repeated else value
    if kind == 0:
        return None
    raise ValueError(f"attribute {a.name!r} of a type this reader does not decode ({kind})")


# AttributeProto.AttributeType -> (field, repeated); sparse tensors and type protos are not read
_ATTRIBUTE_FIELDS = {1: ("f", False), 2: ("i", False), 3: ("s", False), 4: ("t", False), 5: ("g", False),
                     6: ("floats", True), 7: ("ints", True), 8: ("strings", True), 9: ("tensors", True),
                     10: ("graphs", True)}


def to_onnx(message: Message):
    """The same message parsed by onnx (for the paths that need onnx's own: shape inference,
    the reference evaluator); one of onnx's own is returned as it is."""
    if not isinstance(message, Message):
        return message
    import onnx

    cls = {"ModelProto": onnx.ModelProto, "NodeProto": onnx.NodeProto, "GraphProto": onnx.GraphProto,
           "TensorProto": onnx.TensorProto}[type(message).__name__]
    return cls.FromString(bytes(message.raw))
