"""Tensor conversions shared by server and client: TensorProto <-> numpy, JSON <-> numpy.

Requests go out compact (``tensor_content`` for numbers, ``string_val`` for strings);
responses are written as TF Serving writes them (typed fields by default, everything in
``tensor_content`` with ``--enable_serialization_as_tensor_content``); both decode
here without TensorFlow on the common dtypes. JSON follows TF Serving's REST rules:
strings are JSON strings, binary values are ``{"b64": ...}``, and outputs whose
name ends in ``_bytes`` are base64 encoded.
"""
from __future__ import annotations

import base64
import functools
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import INVALID_ARGUMENT, ServingError

_NUMERIC = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64,
    types_pb2.DT_INT16: np.int16, types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8, types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_, types_pb2.DT_HALF: np.float16,
}
_NP_TO_DT = {np.dtype(v): k for k, v in _NUMERIC.items()}


def dtype_name(dtype_enum: int) -> str:
    """'string', 'int64', ... for a DataType enum (as TF spells them)."""
    try:
        return tf.dtypes.as_dtype(dtype_enum).name
    except Exception:  # noqa: BLE001
        return types_pb2.DataType.Name(dtype_enum)


def array_dtype_enum(arr: np.ndarray) -> int:
    """The TF DataType an ndarray would be sent as (strings/bytes/objects -> DT_STRING)."""
    if arr.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    dt = _NP_TO_DT.get(arr.dtype)
    if dt is None:
        return tf.dtypes.as_dtype(arr.dtype).as_datatype_enum
    return dt


def _as_bytes(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, np.bytes_):
        return bytes(x)
    return str(x).encode("utf-8")


def to_string_array(values: Any) -> np.ndarray:
    """Object array of bytes from str/bytes/ndarray input (what TF string tensors hold)."""
    arr = np.asarray(values)
    if arr.dtype == object and (arr.size == 0 or isinstance(arr.flat[0], bytes)):
        return arr
    flat = [_as_bytes(x) for x in arr.ravel().tolist()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(arr.shape)


def ndarray_to_proto(arr: Any, proto: Optional[tensor_pb2.TensorProto] = None) -> tensor_pb2.TensorProto:
    """Request-side TensorProto (strings in string_val, numbers in tensor_content: the compact form).

    ``proto`` lets callers fill a map entry in place (``request.inputs[name]``) without a copy.
    """
    arr = np.asarray(arr)
    proto = tensor_pb2.TensorProto() if proto is None else proto
    if arr.dtype.kind in "OSU":
        _merge(proto, types_pb2.DT_STRING, arr.shape)
        proto.string_val.extend(to_string_array(arr).ravel().tolist())
        return proto
    dt = _NP_TO_DT.get(arr.dtype)
    if dt is None:
        proto.CopyFrom(tf.make_tensor_proto(arr))
        return proto
    _merge(proto, dt, arr.shape, 4, np.ascontiguousarray(arr).tobytes())
    return proto


# The wire form of TensorProto's fields, written directly where that is much faster than protobuf's
# Python API: the dtype and shape header (dim.add() per dimension costs ~3 us each) and the typed fields
# whose values have one fixed-width form: field number and little-endian numpy dtype of a packed run
# (bools are one-byte varints, 0 or 1). upb's extend() converts and range-checks a Python list element
# by element (100 floats: 47 us, against 3 us for merging their bytes), and a float32 output is most of
# a Predict reply. Merged into the message, the bytes parse to what the API would have built, and upb
# serializes them canonically. (Reading fields back from the wire bytes in Python was no faster than
# the API: decoding stays on the API.)
_PACKED = {types_pb2.DT_FLOAT: (5, "<f4"), types_pb2.DT_DOUBLE: (6, "<f8"), types_pb2.DT_BOOL: (11, "u1")}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _record(field: int, payload: bytes) -> bytes:
    """One length-delimited field: tag, length, bytes."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _merge(proto: tensor_pb2.TensorProto, dtype_enum: int, shape: Tuple[int, ...], field: int = 0,
           body: bytes = b"") -> None:
    """Merges the header and, when ``body`` has bytes, one length-delimited ``field`` holding them."""
    proto.MergeFromString(_header(dtype_enum, shape) + (_record(field, body) if body else b""))


@functools.lru_cache(maxsize=1024)
def _header(dtype_enum: int, shape: Tuple[int, ...]) -> bytes:
    """``dtype`` (field 1) and ``tensor_shape`` (field 2: one ``dim`` per dimension, ``size`` its field 1);
    a scalar has no shape field, as when no dimension is added through the API."""
    out = b"\x08" + _varint(dtype_enum)
    if shape:
        out += _record(2, b"".join(_record(2, b"\x08" + _varint(int(d)) if d else b"") for d in shape))
    return out


# Typed repeated field per dtype, as TensorFlow's Tensor::AsProtoField fills them (TF Serving's default).
_TYPED_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val", types_pb2.DT_HALF: "half_val",
}


def ndarray_to_response_proto(arr: np.ndarray, proto: tensor_pb2.TensorProto,
                              tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """Response-side TensorProto exactly as TF Serving writes it.

    Default: typed fields (``float_val``, ``int64_val``, ``string_val``, ...), what
    Tensor::AsProtoField does and what clients reading ``.float_val`` expect. With
    ``tensor_content`` (``--enable_serialization_as_tensor_content``): every dtype in
    ``tensor_content``, strings in TensorFlow's string-list encoding (AsProtoTensorContent).
    """
    arr = np.asarray(arr)
    if arr.dtype.kind in "OSU":
        values = to_string_array(arr).ravel().tolist()
        if tensor_content:
            _merge(proto, types_pb2.DT_STRING, arr.shape, 4, encode_string_list(values))
        else:
            _merge(proto, types_pb2.DT_STRING, arr.shape)
            proto.string_val.extend(values)
        return proto
    dt = _NP_TO_DT.get(arr.dtype)
    if dt is None:  # complex, bfloat16, ...: let TensorFlow encode it
        proto.CopyFrom(tf.make_tensor_proto(arr))
        return proto
    if tensor_content:
        _merge(proto, dt, arr.shape, 4, np.ascontiguousarray(arr).tobytes())
    elif dt in _PACKED:
        field, wire_dtype = _PACKED[dt]
        _merge(proto, dt, arr.shape, field, np.ascontiguousarray(arr, dtype=wire_dtype).tobytes())
    else:
        _merge(proto, dt, arr.shape)
        if dt == types_pb2.DT_HALF:
            proto.half_val.extend(arr.ravel().view(np.uint16).tolist())
        else:
            getattr(proto, _TYPED_FIELD[dt]).extend(arr.ravel().tolist())
    return proto


def encode_string_list(values: List[bytes]) -> bytes:
    """TensorFlow's EncodeStringList: every length as a varint32, then every string's bytes."""
    out = bytearray()
    for v in values:
        n = len(v)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
    for v in values:
        out += v
    return bytes(out)


def decode_string_list(data: bytes, n: int) -> List[bytes]:
    """Inverse of ``encode_string_list`` for ``n`` strings; raises ValueError when malformed."""
    lengths, pos = [], 0
    for _ in range(n):
        shift = value = 0
        while True:
            if pos >= len(data) or shift > 28:
                raise ValueError("truncated string list")
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        lengths.append(value)
    out = []
    for length in lengths:
        if pos + length > len(data):
            raise ValueError("truncated string list")
        out.append(bytes(data[pos:pos + length]))
        pos += length
    return out


def proto_to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """ndarray for a TensorProto (typed fields or tensor_content); bad protos raise INVALID_ARGUMENT, never crash."""
    try:
        shape = [d.size for d in proto.tensor_shape.dim]
        n = 1
        for d in shape:
            n *= d
        dtype = proto.dtype
        if dtype == types_pb2.DT_STRING:
            if proto.tensor_content:
                values = decode_string_list(proto.tensor_content, n)
            else:
                values = proto.string_val[:]  # a list, built in C
            if len(values) == n:
                out = np.empty(n, dtype=object)
                out[:] = values
                return out.reshape(shape)
        elif proto.tensor_content:
            np_dtype = _NUMERIC.get(dtype)
            if np_dtype is not None:
                return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()
        else:
            field = _TYPED_FIELD.get(dtype)
            if field is not None and field != "half_val":
                values = getattr(proto, field)
                if len(values) == n:
                    return np.array(values[:], dtype=_NUMERIC[dtype]).reshape(shape)
        return tf.make_ndarray(proto)
    except Exception as e:  # noqa: BLE001
        raise ServingError(INVALID_ARGUMENT, f"cannot parse tensor proto ({dtype_name(proto.dtype)}, "
                                             f"shape {[d.size for d in proto.tensor_shape.dim]}): {e}") from e


# ------------------------------------------------------------------ JSON (REST)
def _shape_of(value: Any) -> Optional[List[int]]:
    """Shape of a nested list, or None when ragged."""
    if isinstance(value, list):
        if not value:
            return [0]
        inner = [_shape_of(v) for v in value]
        if any(s is None or s != inner[0] for s in inner):
            return None
        return [len(value)] + inner[0]
    return []


def _decode_json_string(x: Any) -> bytes:
    if isinstance(x, dict):
        if set(x) == {"b64"}:
            try:
                return base64.b64decode(x["b64"], validate=True)
            except Exception as e:  # noqa: BLE001
                raise ServingError(INVALID_ARGUMENT, f"invalid base64 value: {e}") from e
        raise ServingError(INVALID_ARGUMENT, f"expected a string or {{\"b64\": ...}}, got {x!r:.80}")
    if isinstance(x, str):
        return x.encode("utf-8")
    raise ServingError(INVALID_ARGUMENT, f"expected a string value, got {type(x).__name__} {x!r:.80}")


def _map_nested(value: Any, fn) -> Any:
    if isinstance(value, list):
        return [_map_nested(v, fn) for v in value]
    return fn(value)


def json_to_ndarray(value: Any, dtype_enum: int, name: str) -> np.ndarray:
    """Parses a JSON value into an array of the signature's dtype (as TF Serving's REST does)."""
    shape = _shape_of(value)
    if shape is None:
        raise ServingError(INVALID_ARGUMENT, f"input '{name}' is a ragged list; tensors must be rectangular")
    if dtype_enum == types_pb2.DT_STRING:
        flat = np.empty(int(np.prod(shape)) if shape else 1, dtype=object)
        flat[:] = list(_flatten(_map_nested(value, _decode_json_string)))
        return flat.reshape(shape)
    np_dtype = _NUMERIC.get(dtype_enum)
    if np_dtype is None:
        raise ServingError(INVALID_ARGUMENT, f"input '{name}': dtype {dtype_name(dtype_enum)} is not supported over REST")
    try:
        raw = np.asarray(value)
    except Exception as e:  # noqa: BLE001
        raise ServingError(INVALID_ARGUMENT, f"input '{name}': {e}") from e
    target = np.dtype(np_dtype)
    ok_kinds = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}[target.kind]
    if raw.size and raw.dtype.kind not in ok_kinds:
        raise ServingError(INVALID_ARGUMENT, f"input '{name}' expects {dtype_name(dtype_enum)} values, "
                                             f"got {raw.dtype.kind!r}-kind values like {raw.ravel()[0]!r:.40}")
    return raw.astype(target).reshape(shape)


def _flatten(value: Any):
    if isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def _json_string(x: bytes, b64: bool) -> Any:
    if b64:
        return {"b64": base64.b64encode(x).decode("ascii")}
    return x.decode("utf-8", errors="replace")


def ndarray_to_json(arr: np.ndarray, name: str = "") -> Any:
    """JSON value of an output tensor; names ending in ``_bytes`` come back base64 encoded."""
    if arr.dtype.kind in "OSU":
        b64 = name.endswith("_bytes")
        return _map_nested(arr.tolist(), lambda x: _json_string(_as_bytes(x), b64))
    if arr.dtype.kind == "f":
        return arr.astype(np.float64).tolist()
    return arr.tolist()


def ndarray_from_client_json(value: Any) -> np.ndarray:
    """Client side: a JSON output value back into an array (strings -> object array of bytes)."""
    shape = _shape_of(value)
    flat = list(_flatten(value))
    if flat and all(isinstance(x, (str, dict)) for x in flat):
        out = np.empty(len(flat), dtype=object)
        out[:] = [_decode_json_string(x) for x in flat]
        return out.reshape(shape if shape is not None else [len(flat)])
    return np.asarray(value)


def inputs_to_json(inputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Client side: columnar ``inputs`` object; non-UTF-8 strings go as {"b64": ...}."""
    out = {}
    for k, v in inputs.items():
        arr = np.asarray(v)
        if arr.dtype.kind in "OSU":
            def enc(x):
                b = _as_bytes(x)
                try:
                    return b.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(b).decode("ascii")}
            out[k] = _map_nested(arr.tolist(), enc)
        elif arr.dtype.kind == "f":
            out[k] = arr.astype(np.float64).tolist()
        else:
            out[k] = arr.tolist()
    return out


# ------------------------------------------------------------------ tf.Example (Classify / Regress)
def examples_from_input(inp) -> List[bytes]:
    """Serialized tf.Examples from a tensorflow.serving.Input, as TF Serving builds its example tensor.

    With context, each example is the context's bytes followed by the example's bytes (protobuf
    concatenation = merge, the example's features win). No examples: INVALID_ARGUMENT "Input is empty."
    """
    kind = inp.WhichOneof("kind")
    out: List[bytes] = []
    if kind == "example_list":
        out = [ex.SerializeToString() for ex in inp.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = inp.example_list_with_context.context.SerializeToString()
        out = [ctx + ex.SerializeToString() for ex in inp.example_list_with_context.examples]
    if not out:
        raise ServingError(INVALID_ARGUMENT, "Input is empty.")
    return out


def _feature_from_json(value: Any, name: str) -> tf.train.Feature:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) or isinstance(v, int) for v in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    if all(isinstance(v, (str, dict)) for v in values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[_decode_json_string(v) for v in values]))
    raise ServingError(INVALID_ARGUMENT, f"feature '{name}' mixes value types: {value!r:.80}")


def examples_from_json(examples: Any, context: Any = None) -> List[bytes]:
    """REST ``{"examples": [{feature: value(s)}], "context": {...}}`` -> serialized tf.Examples."""
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise ServingError(INVALID_ARGUMENT, "'examples' must be a list of JSON objects")
    if context is not None and not isinstance(context, dict):
        raise ServingError(INVALID_ARGUMENT, "'context' must be a JSON object")
    out = []
    for ex in examples:
        merged = dict(context or {})
        merged.update(ex)
        proto = tf.train.Example()
        for k, v in merged.items():
            proto.features.feature[k].CopyFrom(_feature_from_json(v, k))
        out.append(proto.SerializeToString())
    return out
