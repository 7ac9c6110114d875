"""serving/codec.py writes TensorProto headers and packed fields as wire bytes for speed: the protos must be
the ones protobuf's API builds (byte for byte) and the ones TensorFlow's C++ reader (Tensor::FromProto,
what TF Serving uses, behind tf.io.parse_tensor) reads back."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from serving import codec

SHAPES = [(), (0,), (3,), (2, 3), (1, 0, 4), (2, 1), (130,)]  # 130: a length that needs a two-byte varint
DTYPES = [np.float32, np.float64, np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
          np.int64, np.uint64, np.float16]


def _array(dtype, shape, rng):
    if dtype is bytes:
        flat = np.empty(int(np.prod(shape)), dtype=object)
        flat[:] = [bytes(rng.integers(0, 256, rng.integers(0, 200)).astype(np.uint8)) for _ in range(flat.size)]
        return flat.reshape(shape)
    if np.dtype(dtype).kind == "f":
        values = rng.normal(size=shape) * 1e3
        values.flat[:1] = np.nan
        return values.astype(dtype)
    if dtype is np.bool_:
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _reference(arr: np.ndarray, typed: bool) -> tensor_pb2.TensorProto:
    """What the protobuf API builds: one dim.add() per dimension, then the typed field or tensor_content."""
    proto = tensor_pb2.TensorProto()
    for d in arr.shape:
        proto.tensor_shape.dim.add().size = d
    proto.dtype = codec.array_dtype_enum(arr)
    if arr.dtype == object:
        if typed:
            proto.string_val.extend(arr.ravel().tolist())
        else:
            proto.tensor_content = codec.encode_string_list(arr.ravel().tolist())
    elif not typed:
        proto.tensor_content = arr.tobytes()
    elif arr.dtype == np.float16:
        proto.half_val.extend(arr.ravel().view(np.uint16).tolist())
    else:
        getattr(proto, codec._TYPED_FIELD[proto.dtype]).extend(arr.ravel().tolist())
    return proto


def _same(a: tensor_pb2.TensorProto, b: tensor_pb2.TensorProto) -> None:
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)  # (NaN != NaN in ==)


def _tensorflow_reads(proto: tensor_pb2.TensorProto) -> np.ndarray:
    return np.asarray(tf.io.parse_tensor(proto.SerializeToString(), out_type=tf.as_dtype(proto.dtype)).numpy())


@pytest.mark.parametrize("dtype", DTYPES + [bytes], ids=lambda d: getattr(d, "__name__", str(d)))
def test_response_and_request_protos_are_what_the_protobuf_api_builds_and_tensorflow_reads(dtype):
    rng = np.random.default_rng(7)
    for shape in SHAPES:
        arr = _array(dtype, shape, rng)
        typed = codec.ndarray_to_response_proto(arr, tensor_pb2.TensorProto())
        content = codec.ndarray_to_response_proto(arr, tensor_pb2.TensorProto(), tensor_content=True)
        request = codec.ndarray_to_proto(arr)
        _same(typed, _reference(arr, typed=True))
        _same(content, _reference(arr, typed=False))
        _same(request, _reference(arr, typed=dtype is bytes))
        for proto in (typed, content, request):
            back = _tensorflow_reads(proto)
            assert back.shape == arr.shape
            if dtype is bytes:
                assert back.ravel().tolist() == arr.ravel().tolist()
            else:
                assert back.dtype == arr.dtype
                np.testing.assert_array_equal(back, arr)  # NaN == NaN here
            ours = codec.proto_to_ndarray(proto)
            assert ours.shape == arr.shape and ours.dtype == arr.dtype and ours.flags.writeable
            assert ours.ravel().tolist() == arr.ravel().tolist() or np.array_equal(ours, arr, equal_nan=True)


def test_map_entries_fill_in_place():
    request = predict_pb2.PredictRequest()
    codec.ndarray_to_proto(np.arange(6, dtype=np.int64).reshape(2, 3), request.inputs["a"])
    codec.ndarray_to_proto(np.array([b"x", b"y"], dtype=object), request.inputs["b"])
    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    np.testing.assert_array_equal(codec.proto_to_ndarray(parsed.inputs["a"]), np.arange(6).reshape(2, 3))
    assert codec.proto_to_ndarray(parsed.inputs["b"]).tolist() == [b"x", b"y"]
    resp = predict_pb2.PredictResponse()
    codec.ndarray_to_response_proto(np.array([[1.5, 2.5]], dtype=np.float32), resp.outputs["s"])
    assert list(resp.outputs["s"].float_val) == [1.5, 2.5]
    assert [d.size for d in resp.outputs["s"].tensor_shape.dim] == [1, 2]
