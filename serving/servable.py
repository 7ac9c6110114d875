"""One loaded SavedModel version: its signatures, request validation, inference and warmup.

Validation happens here, before TensorFlow runs, so a bad request becomes a clean
INVALID_ARGUMENT (as TF Serving reports it) instead of a runtime trace. Inference
is transport-free (numpy in, numpy out) so gRPC, REST, warmup and the benchmark's
in-process baseline all run the same code.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving import codec
from serving.json_codec import check_batch_sizes
from serving.errors import FAILED_PRECONDITION, INVALID_ARGUMENT, ServingError, as_serving_error

log = logging.getLogger("serving")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit

_custom_ops_lock = threading.Lock()
_custom_ops_loaded = False


def register_custom_ops() -> None:
    """Registers the ScaNN ops (``Scann>...``) so ScaNN SavedModels load; once per process."""
    global _custom_ops_loaded
    with _custom_ops_lock:
        if _custom_ops_loaded:
            return
        try:
            import scann  # noqa: F401  (importing registers the ops)
        except Exception as e:  # noqa: BLE001
            log.warning("ScaNN ops unavailable (%s); ScaNN models will fail to load", e)
        _custom_ops_loaded = True


def read_meta_graph(path: str, tags: Sequence[str] = ("serve",)) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef with ``tags`` from saved_model.pb(txt): the source of signature metadata."""
    pb = os.path.join(path, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    if tf.io.gfile.exists(pb):
        with tf.io.gfile.GFile(pb, "rb") as f:
            sm.ParseFromString(f.read())
    else:
        from google.protobuf import text_format

        with tf.io.gfile.GFile(os.path.join(path, "saved_model.pbtxt"), "r") as f:
            text_format.Parse(f.read(), sm)
    for mg in sm.meta_graphs:
        if set(tags) <= set(mg.meta_info_def.tags):
            return mg
    raise ValueError(f"no MetaGraph with tags {list(tags)} in {path}; "
                     f"found {[list(m.meta_info_def.tags) for m in sm.meta_graphs]}")


class Signature:
    """A callable signature plus the contract (dtypes, shapes, defaults) requests are checked against."""

    def __init__(self, name: str, sig_def: meta_graph_pb2.SignatureDef, fn: Callable):
        self.name = name
        self.method_name = sig_def.method_name
        self.fn = fn
        self.inputs = {k: (v.dtype, _shape(v)) for k, v in sig_def.inputs.items()}
        self.outputs = {k: (v.dtype, _shape(v)) for k, v in sig_def.outputs.items()}
        self.defaults = {k: codec.proto_to_ndarray(v) for k, v in getattr(sig_def, "defaults", {}).items()}
        self._tf_dtypes = {k: tf.dtypes.as_dtype(d) for k, (d, _) in self.inputs.items()}
        self.batcher = None  # set by the model manager when batching is on

    def check_inputs(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Returns the complete input dict or raises INVALID_ARGUMENT as TF Serving would."""
        extra = sorted(set(inputs) - set(self.inputs))
        missing = sorted(set(self.inputs) - set(inputs) - set(self.defaults))
        if extra or missing:
            raise ServingError(INVALID_ARGUMENT, (
                f"input size does not match signature: {len(inputs)}!={len(self.inputs)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(self.inputs))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."))
        full = dict(inputs)
        for k, v in self.defaults.items():
            full.setdefault(k, v)
        for k, arr in full.items():
            want_dtype, want_shape = self.inputs[k]
            got = codec.array_dtype_enum(arr)
            if got != want_dtype:
                raise ServingError(INVALID_ARGUMENT, f"Expects arg[{k}] to be {codec.dtype_name(want_dtype)} "
                                                     f"but {codec.dtype_name(got)} is provided")
            if want_shape is not None and not _shape_ok(arr.shape, want_shape):
                raise ServingError(INVALID_ARGUMENT, f"input '{k}' has shape {list(arr.shape)} but signature "
                                                     f"'{self.name}' expects {_shape_str(want_shape)}")
        check_batch_sizes(self.inputs, full)  # all-batch-first signatures: one batch size (issue 16)
        return full

    def run(self, inputs: Dict[str, np.ndarray], output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        """Validates, runs (through the batcher when there is one) and filters outputs."""
        wanted = self.check_output_filter(output_filter)
        full = self.check_inputs(inputs)
        outputs = self.batcher.submit(full) if self.batcher is not None else self.run_unchecked(full)
        return {k: outputs[k] for k in wanted}

    def check_output_filter(self, output_filter: Sequence[str]) -> List[str]:
        seen = set()
        for alias in output_filter:
            if alias not in self.outputs:
                raise ServingError(INVALID_ARGUMENT, f"output tensor alias not found in signature: {alias} Outputs "
                                                     f"expected to be in the set {{{','.join(sorted(self.outputs))}}}.")
            if alias in seen:
                raise ServingError(INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return list(output_filter) or list(self.outputs)

    def run_unchecked(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Calls the TF function on already validated inputs (the batcher's entry point)."""
        try:
            tensors = {k: tf.convert_to_tensor(v, dtype=self._tf_dtypes[k]) for k, v in inputs.items()}
            result = self.fn(**tensors)
        except Exception as e:  # noqa: BLE001  (TF errors keep their code)
            raise as_serving_error(e) from e
        if not isinstance(result, dict):
            result = {next(iter(self.outputs)): result}
        return {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in result.items()}

    # ------------------------------------------------------------ Classify / Regress
    def example_input(self) -> str:
        """Name of the single string input that takes serialized tf.Examples, or raise."""
        if len(self.inputs) == 1:
            name, (dtype, _) = next(iter(self.inputs.items()))
            if dtype == types_pb2.DT_STRING:
                return name
        raise ServingError(INVALID_ARGUMENT, f"signature '{self.name}' does not take serialized tf.Examples "
                                             f"(needs exactly one string input; has {sorted(self.inputs)})")

    def classify(self, examples: List[bytes]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(classes [n, c] bytes or None, scores [n, c] float or None) for serialized examples."""
        if self.method_name not in (CLASSIFY_METHOD, PREDICT_METHOD) or not (
                {"classes", "scores"} & set(self.outputs)):
            raise ServingError(INVALID_ARGUMENT, f"signature '{self.name}' ({self.method_name}) is not a "
                                                 f"classification signature: outputs {sorted(self.outputs)}")
        out = self.run({self.example_input(): _string_batch(examples)})
        classes, scores = out.get("classes"), out.get("scores")
        n = len(examples)
        classes = None if classes is None else classes.reshape(n, -1)
        scores = None if scores is None else scores.reshape(n, -1).astype(np.float32)
        return classes, scores

    def regress(self, examples: List[bytes]) -> np.ndarray:
        """One float per serialized example."""
        out_name = "outputs" if "outputs" in self.outputs else (next(iter(self.outputs)) if len(self.outputs) == 1 else None)
        if self.method_name not in (REGRESS_METHOD, PREDICT_METHOD) or out_name is None:
            raise ServingError(INVALID_ARGUMENT, f"signature '{self.name}' ({self.method_name}) is not a "
                                                 f"regression signature: outputs {sorted(self.outputs)}")
        out = self.run({self.example_input(): _string_batch(examples)}, [out_name])[out_name]
        if out.size != len(examples):
            raise ServingError(INVALID_ARGUMENT, f"regression output '{out_name}' has shape {list(out.shape)}; "
                                                 f"expected one value per example ({len(examples)})")
        return out.reshape(-1).astype(np.float32)


class Servable:
    """A loaded model version. ``inflight`` counts requests using it so unloading waits for them."""

    def __init__(self, name: str, version: int, path: str, tags: Sequence[str] = ("serve",)):
        self.name, self.version, self.path = name, int(version), path
        t0 = time.perf_counter()
        self.meta_graph = read_meta_graph(path, tags)
        if _uses_scann(self.meta_graph):
            register_custom_ops()
        self._loaded = tf.saved_model.load(path, tags=list(tags))
        self.signature_defs = self.meta_graph.signature_def
        self.signatures: Dict[str, Signature] = {
            key: Signature(key, self.signature_defs[key], fn)
            for key, fn in self._loaded.signatures.items() if key in self.signature_defs}
        self.load_seconds = time.perf_counter() - t0
        self.warmup_requests = 0
        self.inflight = 0
        self.retired = False
        self.finalized = False
        self.lock = threading.Lock()

    def signature(self, name: str = "") -> Signature:
        name = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(name)
        if sig is None:
            raise ServingError(FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        return sig

    def signature_def_map(self):
        """GetModelMetadata's ``signature_def`` payload (every SignatureDef, as TF Serving lists them)."""
        if getattr(self, "_sdm", None) is None:
            from tensorflow_serving.apis import get_model_metadata_pb2

            sdm = get_model_metadata_pb2.SignatureDefMap()
            for k, v in self.signature_defs.items():
                sdm.signature_def[k].CopyFrom(v)
            self._sdm = sdm
        return self._sdm

    def predict(self, inputs: Dict[str, np.ndarray], signature_name: str = "",
                output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        return self.signature(signature_name).run(inputs, output_filter)

    def warmup(self, iterations: int = 1) -> int:
        """Replays assets.extra/tf_serving_warmup_requests; a failing record fails the load, as in TF Serving."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return 0
        records = list(tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS).as_numpy_iterator())
        for _ in range(max(1, iterations)):
            for i, raw in enumerate(records):
                entry = prediction_log_pb2.PredictionLog.FromString(raw)
                kind = entry.WhichOneof("log_type")
                try:
                    self._replay(kind, entry)
                except ServingError as e:
                    raise RuntimeError(f"warmup record {i} ({kind}) failed: {e}") from e
                self.warmup_requests += 1
        return self.warmup_requests

    def _replay(self, kind: str, entry) -> None:
        if kind == "predict_log":
            req = entry.predict_log.request
            self.predict({k: codec.proto_to_ndarray(v) for k, v in req.inputs.items()},
                         req.model_spec.signature_name, list(req.output_filter))
        elif kind == "classify_log":
            req = entry.classify_log.request
            self.signature(req.model_spec.signature_name).classify(codec.examples_from_input(req.input))
        elif kind == "regress_log":
            req = entry.regress_log.request
            self.signature(req.model_spec.signature_name).regress(codec.examples_from_input(req.input))
        else:
            raise ServingError(INVALID_ARGUMENT, f"unsupported warmup log type {kind!r}")

    # ------------------------------------------------------------ reference counting
    def try_acquire(self) -> bool:
        with self.lock:
            if self.finalized:
                return False
            self.inflight += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.inflight -= 1
            done = self.retired and self.inflight == 0 and not self.finalized
            if done:
                self.finalized = True
        if done:
            self._finalize()

    def retire(self, on_done: Optional[Callable[["Servable"], None]] = None) -> None:
        """Stops new use; frees the model once the last in-flight request has finished."""
        self._on_done = on_done
        with self.lock:
            self.retired = True
            done = self.inflight == 0 and not self.finalized
            if done:
                self.finalized = True
        if done:
            self._finalize()

    def _finalize(self) -> None:
        for sig in self.signatures.values():
            if sig.batcher is not None:
                sig.batcher.close()
        callback = getattr(self, "_on_done", None)
        self.signatures = {}
        self._loaded = None
        if callback is not None:
            callback(self)


def _uses_scann(mg: meta_graph_pb2.MetaGraphDef) -> bool:
    """True when the graph needs the ScaNN custom ops (op names are namespaced ``Scann>...``)."""
    if any(op.name.startswith("Scann") for op in mg.meta_info_def.stripped_op_list.op):
        return True
    nodes = [n for fn in mg.graph_def.library.function for n in fn.node_def] + list(mg.graph_def.node)
    return any(n.op.startswith("Scann") for n in nodes)


def _string_batch(values: Iterable[bytes]) -> np.ndarray:
    values = list(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _shape(info) -> Optional[Tuple[int, ...]]:
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(d.size for d in info.tensor_shape.dim)


def _shape_ok(got: Tuple[int, ...], want: Tuple[int, ...]) -> bool:
    return len(got) == len(want) and all(w < 0 or w == g for g, w in zip(got, want))


def _shape_str(shape: Tuple[int, ...]) -> str:
    return "[" + ",".join("?" if d < 0 else str(d) for d in shape) + "]"


def write_warmup_requests(export_dir: str, model_name: str, batches: Sequence[Dict[str, np.ndarray]],
                          signature_name: str = DEFAULT_SIGNATURE) -> str:
    """Writes assets.extra/tf_serving_warmup_requests (PredictionLog TFRecords) that TF Serving and this server replay."""
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as w:
        for inputs in batches:
            entry = prediction_log_pb2.PredictionLog()
            req = entry.predict_log.request
            req.model_spec.name = model_name
            req.model_spec.signature_name = signature_name
            for k, v in inputs.items():
                codec.ndarray_to_proto(np.asarray(v), req.inputs[k])
            w.write(entry.SerializeToString())
    return path
