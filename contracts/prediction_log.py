"""The request-log record format, and the reader that turns the files back into rows.

``recsys serve`` (serving/request_logging.py) writes each record with ``serialize_record`` into
files named from ``file_base``; the feedback loop (preprocessing/feedback.py, recsys/loop.py) reads
them here. Both sides import this module, so neither imports the other.

The reader gives, per logged request, the request id,
model name, served version, time, raw inputs (user id, ...) and, per example of the
batch, the returned items with their rank (1 = shown first) and scores.

    for served in read_served_lists("/logs/retrieval"):
        served.request_id, served.user_id, [(i.rank, i.item_id, i.score) for i in served.items]

Works on any PredictionLog TFRecords (e.g. written by a TF Serving build with a log
collector); the request id and microsecond time are then empty/derived from
``timestamp_secs``, since only ``recsys serve`` writes them (serving/request_logging.py).
A file whose last record is cut short (a server killed mid-write) is read up to that record.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import tfenv  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow_serving.apis import prediction_log_pb2

log = logging.getLogger("contracts.prediction_log")

RECORD_SUFFIX = ".tfrecord"
_DEFAULT_BASENAME = "prediction_log"  # for a filename_prefix that names a directory ("logs/")


def _sidecar_classes():
    """LogMetadata fields 1001 (request_id) and 1002 (timestamp_micros), as a separate tiny proto.

    Appending ``PredictionLogExtras`` bytes to a serialized PredictionLog merges them into its
    log_metadata (protobuf merges repeated occurrences of a message field); parsing the record
    as ``PredictionLogExtras`` reads them back and skips everything else.
    """
    fdp = descriptor_pb2.FileDescriptorProto(name="recsys_serving_request_log.proto", package="recsys.serving")
    meta = fdp.message_type.add(name="LogMetadataExtras")
    T = descriptor_pb2.FieldDescriptorProto
    meta.field.add(name="request_id", number=1001, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    meta.field.add(name="timestamp_micros", number=1002, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    outer = fdp.message_type.add(name="PredictionLogExtras")
    outer.field.add(name="log_metadata", number=1, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                    type_name=".recsys.serving.LogMetadataExtras")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("recsys.serving.PredictionLogExtras"))


SIDECAR = _sidecar_classes()


def serialize_record(plog: prediction_log_pb2.PredictionLog, request_id: str, timestamp_micros: int) -> bytes:
    extras = SIDECAR()
    extras.log_metadata.request_id = request_id
    extras.log_metadata.timestamp_micros = timestamp_micros
    return plog.SerializeToString() + extras.SerializeToString()


def file_base(filename_prefix: str) -> str:
    """The path every log file name starts with (a relative prefix is resolved against the working dir)."""
    prefix = filename_prefix
    if "://" not in prefix:
        prefix = os.path.abspath(prefix) + (os.sep if prefix.endswith(("/", os.sep)) else "")
    return prefix + _DEFAULT_BASENAME if prefix.endswith(("/", os.sep)) else prefix


@dataclasses.dataclass
class LoggedRequest:
    """One PredictionLog record, decoded."""

    request_id: str
    model_name: str
    version: int
    signature_name: str
    kind: str                   # predict_log / classify_log / regress_log / multi_inference_log
    timestamp: float            # seconds since the epoch (microseconds when written by recsys serve)
    inputs: Dict[str, np.ndarray]   # Predict inputs (empty for the tf.Example APIs: see ``log``)
    outputs: Dict[str, np.ndarray]  # Predict outputs
    log: prediction_log_pb2.PredictionLog  # the whole record, for anything not decoded above
    path: str


@dataclasses.dataclass
class ServedItem:
    rank: int  # 1 = first in the returned list
    item_id: str
    score: Optional[float]
    extras: Dict[str, object] = dataclasses.field(default_factory=dict)  # read_served_lists' extra_outputs here


@dataclasses.dataclass
class ServedList:
    """What one example of a logged Predict request was shown."""

    request_id: str
    example: int  # index in the request's batch
    model_name: str
    version: int
    timestamp: float
    user_id: Optional[str]
    inputs: Dict[str, object]  # this example's raw inputs (bytes decoded as UTF-8)
    items: List[ServedItem]


def log_files(prefix_or_paths: Union[str, Iterable[str]]) -> List[str]:
    """The TFRecord files a filename_prefix wrote (oldest first), or the given paths as they are."""
    if not isinstance(prefix_or_paths, str):
        return list(prefix_or_paths)
    if prefix_or_paths.endswith(RECORD_SUFFIX) and tf.io.gfile.exists(prefix_or_paths):
        return [prefix_or_paths]
    return sorted(tf.io.gfile.glob(file_base(prefix_or_paths) + "-*" + RECORD_SUFFIX))


def _records(path: str) -> Iterator[bytes]:
    it = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            yield next(it).numpy()
        except StopIteration:
            return
        except tf.errors.DataLossError as e:  # truncated tail: everything before it is good
            log.warning("request log %s: stopped at a damaged record: %s", path, str(e).splitlines()[0])
            return


def read_requests(prefix_or_paths: Union[str, Iterable[str]]) -> Iterator[LoggedRequest]:
    """Every record of the files, in file order."""
    for path in log_files(prefix_or_paths):
        for raw in _records(path):
            plog = prediction_log_pb2.PredictionLog.FromString(raw)
            extras = SIDECAR.FromString(raw).log_metadata
            md = plog.log_metadata
            kind = plog.WhichOneof("log_type") or ""
            inputs: Dict[str, np.ndarray] = {}
            outputs: Dict[str, np.ndarray] = {}
            if kind == "predict_log":
                inputs = {k: tf.make_ndarray(v) for k, v in plog.predict_log.request.inputs.items()}
                outputs = {k: tf.make_ndarray(v) for k, v in plog.predict_log.response.outputs.items()}
            ts = extras.timestamp_micros / 1e6 if extras.timestamp_micros else float(md.timestamp_secs)
            yield LoggedRequest(extras.request_id, md.model_spec.name, md.model_spec.version.value,
                                md.model_spec.signature_name, kind, ts, inputs, outputs, plog, path)


def _text(x) -> object:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return x.item() if isinstance(x, np.generic) else x


def read_served_lists(prefix_or_paths: Union[str, Iterable[str]], *, ids_output: str = "item_ids",
                      scores_output: Optional[str] = "scores", user_input: str = "user_id",
                      extra_outputs: Sequence[str] = ()) -> Iterator[ServedList]:
    """One ServedList per example of every logged Predict whose response has ``ids_output``.

    The response tensors hold items in the order the server returned them, so rank is the
    position along the last axis (+1). Other records (Classify, ...) are skipped. ``extra_outputs``:
    per-item response tensors (same shape as the ids) each ServedItem also carries in ``extras``;
    one the response lacks is left out.
    """
    for r in read_requests(prefix_or_paths):
        ids = r.outputs.get(ids_output)
        if ids is None:
            continue
        ids = ids.reshape(1, -1) if ids.ndim < 2 else ids.reshape(ids.shape[0], -1)
        scores = r.outputs.get(scores_output) if scores_output else None
        if scores is not None and scores.size == ids.size:
            scores = scores.reshape(ids.shape)
        else:
            scores = None
        extra = {name: r.outputs[name].reshape(ids.shape) for name in extra_outputs
                 if name in r.outputs and r.outputs[name].size == ids.size}
        batch = ids.shape[0]
        for i in range(batch):
            row_inputs = {k: _text(v[i]) if v.ndim >= 1 and v.shape[0] == batch else _text(v)
                          for k, v in r.inputs.items()}
            user = row_inputs.get(user_input)
            items = [ServedItem(j + 1, _text(ids[i, j]), None if scores is None else float(scores[i, j]),
                                {name: _text(t[i, j]) for name, t in extra.items()}) for j in range(ids.shape[1])]
            yield ServedList(r.request_id, i, r.model_name, r.version, r.timestamp,
                             None if user is None else str(user), row_inputs, items)


def served_item_rows(prefix_or_paths: Union[str, Iterable[str]], **kwargs) -> Iterator[dict]:
    """Flat rows, one per shown item: what a join with events by (request_id, rank) wants."""
    for s in read_served_lists(prefix_or_paths, **kwargs):
        for item in s.items:
            yield {"request_id": s.request_id, "example": s.example, "model_name": s.model_name,
                   "version": s.version, "timestamp": s.timestamp, "user_id": s.user_id, "rank": item.rank,
                   "item_id": item.item_id, "score": item.score, **item.extras}
