"""contracts/prediction_log.py: a record written with serialize_record reads back whole, with its sidecar fields,
and is still a plain PredictionLog to any other reader (TF Serving's own tools)."""
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from contracts import prediction_log


def _record(request_id, user, items, scores):
    plog = prediction_log_pb2.PredictionLog()
    plog.log_metadata.model_spec.name = "retrieval"
    plog.log_metadata.model_spec.version.value = 7
    plog.log_metadata.timestamp_secs = 1700000000
    plog.predict_log.request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.array([user], dtype=object)))
    out = plog.predict_log.response.outputs
    out["item_ids"].CopyFrom(tf.make_tensor_proto(np.array([items], dtype=object)))
    out["scores"].CopyFrom(tf.make_tensor_proto(np.array([scores], np.float32)))
    return prediction_log.serialize_record(plog, request_id, 1700000000_250000)


def test_records_read_back_as_ranked_lists(tmp_path):
    path = str(tmp_path / "log-1.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(_record("r1", "ünï", ["b", "a"], [2.0, 1.0]))
        w.write(_record("r2", "u2", ["c", "é"], [0.5, 0.25]))
    lists = list(prediction_log.read_served_lists(path))
    assert [(s.request_id, s.user_id, s.version, s.timestamp) for s in lists] == \
        [("r1", "ünï", 7, 1700000000.25), ("r2", "u2", 7, 1700000000.25)]
    assert [(i.rank, i.item_id, i.score) for i in lists[1].items] == [(1, "c", 0.5), (2, "é", 0.25)]
    # the sidecar fields are unknown fields to a plain PredictionLog parser, which still reads the rest
    raw = next(iter(tf.data.TFRecordDataset(path))).numpy()
    assert prediction_log_pb2.PredictionLog.FromString(raw).log_metadata.model_spec.version.value == 7


def test_file_names_from_a_prefix_or_a_directory(tmp_path):
    assert prediction_log.file_base(str(tmp_path / "logs" / "retrieval")) == str(tmp_path / "logs" / "retrieval")
    assert prediction_log.file_base(str(tmp_path) + "/") == str(tmp_path) + "/prediction_log"
    assert prediction_log.file_base("gs://bucket/logs/") == "gs://bucket/logs/prediction_log"
    (tmp_path / "prediction_log-2-x.tfrecord").write_bytes(b"")
    (tmp_path / "prediction_log-1-x.tfrecord").write_bytes(b"")
    (tmp_path / "other-1.tfrecord").write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p in prediction_log.log_files(str(tmp_path) + "/")] == \
        ["prediction_log-1-x.tfrecord", "prediction_log-2-x.tfrecord"]
