"""The preprocessing fast paths give exactly the results of the plain paths they replace (issue 15).

No Beam run: the sink is driven through the calls Beam's Write makes (open, write_record, close);
full pipeline runs are covered by test_pipeline.py and test_bad_input.py.
"""
import gzip
import io
import json
import zlib

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from apache_beam.io.tfrecordio import _TFRecordUtil
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.coders import example_coder

from preprocessing import example_sink
from preprocessing.sources import tables

from tests.preprocessing.test_bad_input import BAD_INTERACTIONS, _event


def _batch(n, start=0):
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.RecordBatch.from_arrays(
        [pa.LargeListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int64)), pa.array(ids)),
         pa.LargeListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int64)),
                                       pa.array([f"u{i}".encode() for i in ids], type=pa.large_binary()))],
        ["idx", "user_id"])


def _schema():
    s = schema_pb2.Schema()
    for name, kind in (("idx", schema_pb2.INT), ("user_id", schema_pb2.BYTES)):
        f = s.feature.add(name=name, type=kind)
        f.shape.dim.add(size=1)
    return s


def test_tfrecord_framing_is_beams():
    records = [b"", b"a", b"x" * 70_000, bytes(range(256))]
    expected = io.BytesIO()
    for r in records:
        _TFRecordUtil.write_record(expected, r)
    assert example_sink.tfrecord_bytes(records) == expected.getvalue()


def test_sink_writes_the_bytes_write_to_tfrecord_would(tmp_path):
    """Same records, same order, same gzip stream as one zlib write per record (Beam's CompressedFile)."""
    schema, batches = _schema(), [_batch(3), _batch(1000, 3), _batch(2, 1003)]
    sink = example_sink.ExampleBatchSink(str(tmp_path / "train"), ".tfrecord.gz")
    path = str(tmp_path / "part.tfrecord.gz")
    handle = sink.open(path)
    for b in batches:
        sink.write_record(handle, (b, schema))
    sink.close(handle)

    written = open(path, "rb").read()
    records = [r.numpy() for r in tf.data.TFRecordDataset(path, "GZIP")]
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    one_write_per_record = b"".join(compressor.compress(example_sink.tfrecord_bytes([r])) for r in records)
    assert written == one_write_per_record + compressor.flush()
    # the encoder's examples, in order (compared parsed: protobuf serialises the feature map in no fixed order)
    encoder = example_coder.RecordBatchToExamplesEncoder(schema)
    assert [tf.train.Example.FromString(r) for r in records] == \
        [tf.train.Example.FromString(r) for b in batches for r in encoder.encode(b)]
    read = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path, "GZIP")]
    assert [e.features.feature["idx"].int64_list.value[0] for e in read] == list(range(1005))
    assert read[7].features.feature["user_id"].bytes_list.value[0] == b"u7"


def test_sink_raises_a_failed_encode_and_still_closes_the_file(tmp_path):
    sink = example_sink.ExampleBatchSink(str(tmp_path / "x"), ".tfrecord.gz")
    handle = sink.open(str(tmp_path / "part.tfrecord.gz"))
    sink.write_record(handle, ("not a record batch", _schema()))
    with pytest.raises(RuntimeError, match="writing tf.Examples failed"):
        sink.close(handle)
    assert gzip.open(str(tmp_path / "part.tfrecord.gz")).read() == b""


def test_fast_interaction_parse_gives_the_plain_answers():
    """orjson fast path vs json + full validation: same row and same reason, line by line."""
    limit = 2_000_000_000
    lines = [line.rstrip("\n").encode() if isinstance(line, str) else line.rstrip(b"\n")
             for line, _ in BAD_INTERACTIONS]
    lines += [json.dumps(_event()).encode(), json.dumps(_event(rating=0)).encode(),
              json.dumps(_event(device=None)).encode(), json.dumps({k: v for k, v in _event().items() if k != "device"}).encode(),
              b'{"user_id": "u1", "item_id": "i1", "timestamp": 1600000000, "rating": 4, "click": 1, "x": 1e999}',
              b'{"user_id": "u1", "item_id": "i1", "timestamp": 123456789012345678901234567890, "rating": 4, "click": 1}',
              b'{"user_id": "u1", "item_id": "i1", "timestamp": 1600000000, "rating": 4, "click": 1, "user_id": "u2"}',
              b'{"user_id": "u1", "item_id": "i1", "timestamp": 1600000000.0, "rating": 4, "click": 1}',
              b'{"user_id": "\\u00e9", "item_id": "i1", "timestamp": 1600000000, "rating": 4, "click": 1}',
              b'\xef\xbb\xbf{"user_id": "u1"}', b"", b"[1, 2]", json.dumps(_event(timestamp=limit + 1)).encode()]
    for line in lines:
        row, why = tables.parse_json_line(line)
        if why is None:
            why = tables.validate_interaction(row, limit)
        fast_row, fast_why = tables.parse_interaction(line, limit)
        assert fast_why == why, line
        if why is None:
            assert repr(fast_row) == repr(row), line
    assert tables.parse_interaction(json.dumps(_event()).encode(), limit) == (_event(), None)
