"""Request logging as TF Serving configures it: ``logging_config`` in a model's config entry.

    config { name: "retrieval" base_path: "/models/retrieval" model_platform: "tensorflow"
      logging_config {
        log_collector_config { type: "tfrecord" filename_prefix: "/logs/retrieval" }
        sampling_config { sampling_rate: 0.1 }
      }
    }

Each sampled, successful Predict / Classify / Regress / MultiInference becomes one
``tensorflow.serving.PredictionLog`` (request, response, and ``log_metadata`` with the served
model_spec, the sampling_config and the saved_model_tags), the record TF Serving's
RequestLogger builds, written to TFRecord files ``<filename_prefix>-<UTC time>-<pid>-<id>-<n>.tfrecord``.

Why a queue and a writer thread: the request path only samples and enqueues (no
serialization, no I/O); a full queue drops the record and counts it, so a slow disk never
adds latency, blocks, or fails a request. The writer flushes after every batch it drains,
so a crash loses only what was still queued; files rotate by size and age.

Beyond TF Serving, and invisible to its readers: the request id (``x-request-id``) and a
microsecond timestamp ride in LogMetadata fields 1001/1002, which standard PredictionLog
parsers keep as unknown fields (see ``contracts.prediction_log.SIDECAR``). LogMetadata has no request-id field, and
``request_origin`` means something else to TF Serving (attribute sampling).

What OSS TF Serving does with the same config: ServerCore builds its ServerRequestLogger
with no logger creator and registers no LogCollector, so any ``logging_config`` makes the
config load fail with INVALID_ARGUMENT "No request-logger-creator provided." Logging
there needs a custom build that registers a collector; the record format is the same.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import random
import threading
import time
import uuid
from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf
from prometheus_client import Counter
from tensorflow_serving.apis import logging_pb2, prediction_log_pb2
from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from contracts.prediction_log import RECORD_SUFFIX, file_base, serialize_record
from serving import codec
from serving.errors import INVALID_ARGUMENT, ServingError
from serving.metrics import PREFIX

log = logging.getLogger("serving.request_log")

COLLECTOR_TYPES = ("tfrecord",)  # log_collector_config.type values this server can write
REQUEST_ID_HEADER = "x-request-id"  # gRPC metadata key; REST header X-Request-Id
MAX_REQUEST_ID_CHARS = 128


@dataclasses.dataclass
class RequestLogOptions:
    """How logs are written (TF Serving's config says only where and how often)."""

    queue_size: int = 4096           # records waiting for the writer; more are dropped and counted
    max_file_bytes: int = 64 << 20   # rotate after this many bytes ...
    max_file_seconds: float = 600.0  # ... or once a file is this old
    max_batch: int = 256             # records written between flushes


# ---------------------------------------------------------------- config
def validate_logging_config(model: str, cfg: logging_config_pb2.LoggingConfig) -> None:
    """Raises INVALID_ARGUMENT, naming the model and field, for a config this server cannot honour."""
    where = f"model {model}: logging_config"
    collector = cfg.log_collector_config
    if collector.type not in COLLECTOR_TYPES:
        raise ServingError(INVALID_ARGUMENT, f"{where}.log_collector_config.type {collector.type!r} is not "
                                             f"supported; use one of {list(COLLECTOR_TYPES)}")
    if not collector.filename_prefix:
        raise ServingError(INVALID_ARGUMENT, f"{where}.log_collector_config.filename_prefix is required")
    rate = cfg.sampling_config.sampling_rate
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise ServingError(INVALID_ARGUMENT, f"{where}.sampling_config.sampling_rate must be in [0, 1], got {rate}")


def logging_configs(config: model_server_config_pb2.ModelServerConfig) -> Dict[str, logging_config_pb2.LoggingConfig]:
    """Model name -> LoggingConfig, for the models that have one (as ServerCore builds its map)."""
    if config.WhichOneof("config") != "model_config_list":
        return {}
    return {m.name: m.logging_config for m in config.model_config_list.config if m.HasField("logging_config")}


def validate_config_logging(config: model_server_config_pb2.ModelServerConfig) -> None:
    for name, cfg in logging_configs(config).items():
        validate_logging_config(name, cfg)


def check_request_id(value: str) -> str:
    if not (0 < len(value) <= MAX_REQUEST_ID_CHARS) or not all("!" <= c <= "~" for c in value):
        raise ServingError(INVALID_ARGUMENT, f"{REQUEST_ID_HEADER} must be 1-{MAX_REQUEST_ID_CHARS} printable "
                                             f"ASCII characters without spaces, got {value[:40]!r}")
    return value


def new_request_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------- writing
@dataclasses.dataclass
class _Entry:
    model: str
    fill: Callable[[prediction_log_pb2.PredictionLog], None]  # sets the request/response part, off the request path
    metadata: logging_pb2.LogMetadata
    request_id: str
    timestamp_micros: int


class _Sink:
    """One log file series (one filename_prefix): a bounded queue drained by one writer thread."""

    def __init__(self, filename_prefix: str, options: RequestLogOptions, counters: "_Counters"):
        self.base = file_base(filename_prefix)
        self.options, self.counters = options, counters
        directory = os.path.dirname(self.base)
        try:
            tf.io.gfile.makedirs(directory)
        except Exception as e:  # noqa: BLE001
            raise ServingError(INVALID_ARGUMENT, f"cannot create request log directory {directory}: {e}") from e
        self.queue: "queue.Queue[Optional[_Entry]]" = queue.Queue(options.queue_size)
        self._token = uuid.uuid4().hex[:6]
        self._seq = 0
        self._writer = None
        self._path = ""
        self._bytes = 0
        self._opened = 0.0
        self._last_error = -60.0
        self._thread = threading.Thread(target=self._run, name=f"request-log-{os.path.basename(self.base)}",
                                        daemon=True)
        self._thread.start()

    def offer(self, entry: _Entry) -> None:
        try:
            self.queue.put_nowait(entry)
        except queue.Full:
            self.counters.dropped(entry.metadata.model_spec.name)

    def close(self, timeout: float = 10.0) -> None:
        while True:  # the sentinel must get in even when the queue is full
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    break
        self._thread.join(timeout)

    # -------------------------------------------------------------- writer thread
    def _run(self) -> None:
        done = False
        while not done:
            try:
                first = self.queue.get(timeout=min(1.0, self.options.max_file_seconds))
            except queue.Empty:
                self._maybe_rotate(idle=True)
                continue
            batch = [first]
            while len(batch) < self.options.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                done = True
                batch = [e for e in batch if e is not None]
            self._write(batch)
        self._close_file()

    def _write(self, batch: Sequence[_Entry]) -> None:
        for entry in batch:
            name = entry.metadata.model_spec.name
            try:
                plog = prediction_log_pb2.PredictionLog()
                entry.fill(plog)
                plog.log_metadata.CopyFrom(entry.metadata)
                record = serialize_record(plog, entry.request_id, entry.timestamp_micros)
                self._maybe_rotate()
                if self._writer is None:
                    self._open()
                self._writer.write(record)
                self._bytes += len(record) + 16
                self.counters.logged(name, "OK")
            except Exception as e:  # noqa: BLE001  (a bad record or a full disk must not stop the writer)
                self._error("request log %s: cannot write a record of model %s: %s", self.base, name, e)
                self.counters.logged(name, "INTERNAL")
                self._close_file()
        if self._writer is not None:
            try:
                self._writer.flush()
            except Exception as e:  # noqa: BLE001
                self._error("request log %s: flush failed: %s", self._path, e)
                self._close_file()

    def _error(self, message: str, *args) -> None:
        """At most one error line a minute: a full disk must not flood the server's log at request rate."""
        now = time.monotonic()
        if now - self._last_error >= 60.0:
            self._last_error = now
            log.error(message + " (further errors within a minute are not logged; see request_log_count)", *args)

    def _maybe_rotate(self, idle: bool = False) -> None:
        if self._writer is None:
            return
        too_old = time.monotonic() - self._opened >= self.options.max_file_seconds
        if too_old or (not idle and self._bytes >= self.options.max_file_bytes):
            self._close_file()

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._path = f"{self.base}-{stamp}-{os.getpid()}-{self._token}-{self._seq:05d}{RECORD_SUFFIX}"
        self._seq += 1
        self._writer = tf.io.TFRecordWriter(self._path)
        self._bytes, self._opened = 0, time.monotonic()

    def _close_file(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception as e:  # noqa: BLE001
                self._error("request log %s: close failed: %s", self._path, e)
            self._writer = None


class _Counters:
    """request_log_count {model_name, status_code} (TF Serving's metric) and drops, when metrics are on."""

    def __init__(self, metrics=None):
        self._lock = threading.Lock()
        self.by_model: Dict[tuple, int] = {}
        self._logged = self._dropped = None
        if metrics is not None:
            self._logged = Counter(PREFIX + "request_log_count", "Requests logged, by model and status code.",
                                   ["model_name", "status_code"], registry=metrics.registry)
            self._dropped = Counter(PREFIX + "request_log_dropped", "Sampled requests not logged: the log "
                                    "queue was full.", ["model_name"], registry=metrics.registry)

    def _add(self, key: tuple) -> None:
        with self._lock:
            self.by_model[key] = self.by_model.get(key, 0) + 1

    def logged(self, model: str, code: str) -> None:
        self._add((model, code))
        if self._logged is not None:
            self._logged.labels(model, code).inc()

    def dropped(self, model: str) -> None:
        self._add((model, "DROPPED"))
        if self._dropped is not None:
            self._dropped.labels(model).inc()

    def get(self, model: str, code: str) -> int:
        with self._lock:
            return self.by_model.get((model, code), 0)


@dataclasses.dataclass(frozen=True)
class _ModelLogging:
    config: logging_config_pb2.LoggingConfig
    sink: _Sink


class RequestLogger:
    """The server's request logger (TF Serving's ServerRequestLogger): model name -> sampler + sink.

    ``update`` validates a whole ModelServerConfig first and changes nothing when it fails;
    sinks are shared by models with the same filename_prefix and kept across reloads.
    """

    def __init__(self, saved_model_tags: Sequence[str] = ("serve",), options: Optional[RequestLogOptions] = None,
                 metrics=None, rng: Optional[random.Random] = None):
        self.tags = list(saved_model_tags)
        self.options = options or RequestLogOptions()
        self.counters = _Counters(metrics)
        self._rng = rng or random.Random()
        self._models: Dict[str, _ModelLogging] = {}
        self._sinks: Dict[str, _Sink] = {}  # file base -> sink
        self._lock = threading.Lock()

    def update(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        wanted = logging_configs(config)
        for name, cfg in wanted.items():
            validate_logging_config(name, cfg)
        with self._lock:
            sinks: Dict[str, _Sink] = {}
            try:
                for cfg in wanted.values():
                    base = file_base(cfg.log_collector_config.filename_prefix)
                    if base not in sinks:
                        sinks[base] = self._sinks.get(base) or _Sink(cfg.log_collector_config.filename_prefix,
                                                                     self.options, self.counters)
            except BaseException:
                for base, sink in sinks.items():
                    if base not in self._sinks:
                        sink.close()  # refused: the sinks made for it go, the old ones keep writing
                raise
            models = {}
            for name, cfg in wanted.items():
                kept = logging_config_pb2.LoggingConfig()
                kept.CopyFrom(cfg)
                models[name] = _ModelLogging(kept, sinks[file_base(cfg.log_collector_config.filename_prefix)])
            retired = [s for b, s in self._sinks.items() if b not in sinks]
            self._models, self._sinks = models, sinks  # atomic swap: requests see old or new, never half
        for sink in retired:
            sink.close()

    def enabled(self, model: str) -> bool:
        return model in self._models

    def log(self, model: str, version: int, signature_name: str, request_id: str,
            fill: Callable[[prediction_log_pb2.PredictionLog], None]) -> bool:
        """Samples and enqueues one request; ``fill`` runs later on the writer thread. Never raises or blocks."""
        entry = self._models.get(model)
        if entry is None:
            return False
        sampling = entry.config.sampling_config
        if not self._rng.random() < sampling.sampling_rate:
            return False
        try:
            now = time.time()
            md = logging_pb2.LogMetadata()
            md.model_spec.name = model
            md.model_spec.version.value = version
            if signature_name:
                md.model_spec.signature_name = signature_name
            md.sampling_config.CopyFrom(sampling)
            md.saved_model_tags.extend(self.tags)
            md.timestamp_secs = int(now)
            entry.sink.offer(_Entry(model, fill, md, request_id, int(now * 1e6)))
        except Exception:  # noqa: BLE001  (logging must never fail the request it logs)
            log.exception("request log: cannot queue a record of model %s", model)
            self.counters.logged(model, "INTERNAL")
            return False
        return True

    def close(self) -> None:
        """Writes what is queued and closes the files (server shutdown)."""
        with self._lock:
            sinks, self._sinks, self._models = list(self._sinks.values()), {}, {}
        for sink in sinks:
            sink.close()

    def dropped(self, model: str) -> int:
        return self.counters.get(model, "DROPPED")

    def written(self, model: str) -> int:
        return self.counters.get(model, "OK")


# ---------------------------------------------------------------- fill functions for each API
def fill_from_protos(kind: str, request, response) -> Callable[[prediction_log_pb2.PredictionLog], None]:
    """gRPC: the request and response protos as received/sent (copied on the writer thread)."""
    def fill(plog: prediction_log_pb2.PredictionLog) -> None:
        part = getattr(plog, kind)
        part.request.CopyFrom(request)
        part.response.CopyFrom(response)
    return fill


def fill_predict_from_arrays(model: str, version: Optional[int], label: str, signature_name: str, inputs, outputs,
                             served_version: int) -> Callable[[prediction_log_pb2.PredictionLog], None]:
    """REST predict: the PredictRequest a gRPC client would have sent, and the PredictResponse it would get."""
    def fill(plog: prediction_log_pb2.PredictionLog) -> None:
        req, resp = plog.predict_log.request, plog.predict_log.response
        _specs(req.model_spec, resp.model_spec, model, version, label, signature_name, served_version)
        for k, v in inputs.items():
            codec.ndarray_to_proto(v, req.inputs[k])
        for k, v in outputs.items():
            codec.ndarray_to_response_proto(v, resp.outputs[k])
    return fill


def fill_examples_from_arrays(kind: str, model: str, version: Optional[int], label: str, signature_name: str,
                              examples: Sequence[bytes], served_version: int, *, classes=None, scores=None,
                              values=None) -> Callable[[prediction_log_pb2.PredictionLog], None]:
    """REST classify/regress: the Classification/RegressionRequest (serialized tf.Examples as an
    example_list, context merged in) and the response a gRPC client would get."""
    def fill(plog: prediction_log_pb2.PredictionLog) -> None:
        part = getattr(plog, kind)
        req, resp = part.request, part.response
        _specs(req.model_spec, resp.model_spec, model, version, label, signature_name, served_version)
        for e in examples:
            req.input.example_list.examples.add().MergeFromString(e)
        if kind == "regress_log":
            for v in values.tolist():
                resp.result.regressions.add().value = v
            return
        ref = classes if classes is not None else scores
        for i in range(ref.shape[0]):
            c = resp.result.classifications.add()
            for j in range(ref.shape[1]):
                cls = c.classes.add()
                if classes is not None:
                    cls.label = codec._as_bytes(classes[i, j]).decode("utf-8", "replace")
                if scores is not None:
                    cls.score = float(scores[i, j])
    return fill


def _specs(req_spec, resp_spec, model: str, version: Optional[int], label: str, signature_name: str,
           served_version: int) -> None:
    req_spec.name = resp_spec.name = model
    if version is not None:
        req_spec.version.value = version
    elif label:
        req_spec.version_label = label
    req_spec.signature_name = resp_spec.signature_name = signature_name
    resp_spec.version.value = served_version
