"""`recsys serve`: a TF-Serving-compatible model server for demos, tests and laptops.

Production runs the real TF Serving (with the ScaNN ops) on Kubernetes; no TF Serving
binary can be installed here, so this server speaks the same gRPC services
(``tensorflow.serving.PredictionService``/``ModelService``, protos from
tensorflow-serving-api), the same REST API, the same flags and the same
``--model_config_file``, on the same model directory. Clients cannot tell the two
apart except for speed. It binds 127.0.0.1 unless ``--host`` says otherwise.

    python -m serving.server --model_name=retrieval --model_base_path=runs/x/models/retrieval
    python -m serving.server --model_config_file=models.config --rest_api_port=8501
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from typing import List, Optional, Tuple

import tfenv  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from serving import codec, tf1_loader
from serving.config_files import batching_from_file, read_monitoring_config, read_ssl_config, ssl_context
from serving.errors import INVALID_ARGUMENT, UNIMPLEMENTED, ServingError, as_serving_error
from serving.metrics import Metrics
from serving.models import BatchingOptions, ModelManager, read_model_config_file, single_model_config
from serving.request_logging import (REQUEST_ID_HEADER, RequestLogOptions, check_request_id, fill_from_protos,
                                     new_request_id)
from serving.servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, METHOD_NAME_CHECK, REGRESS_METHOD

log = logging.getLogger("serving")

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def _version(spec) -> Optional[int]:
    return spec.version.value if spec.HasField("version") else None


def _error_code_number(name: str) -> int:
    return grpc.StatusCode[name].value[0]


class HandlerProfile:
    """cProfile of the request handlers (one profiler per gRPC thread, merged at exit).

    On when RECSYS_SERVING_PROFILE names an output file: ``benchmarks/serving_latency.py
    --profile`` uses it to show where the time between in-process and gRPC goes. Off, it
    costs one ``is None`` test per request.
    """

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()

    def run(self, fn):
        prof = getattr(self._local, "prof", None)
        if prof is None:
            import cProfile

            prof = self._local.prof = cProfile.Profile()
            with self._lock:
                self._all.append(prof)
        prof.enable()
        try:
            return fn()
        finally:
            prof.disable()

    def dump(self) -> None:
        import pstats

        with self._lock:
            profiles = list(self._all)
        if profiles:
            stats = pstats.Stats(profiles[0])
            for p in profiles[1:]:
                stats.add(p)
            stats.dump_stats(self.path)


HANDLER_PROFILE = HandlerProfile(os.environ["RECSYS_SERVING_PROFILE"]) if os.environ.get(
    "RECSYS_SERVING_PROFILE") else None


def _require_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise ServingError(INVALID_ARGUMENT, "Missing ModelSpec")


class _Base:
    def __init__(self, manager: ModelManager, metrics: Metrics, tensor_content: bool = False):
        self.manager, self.metrics = manager, metrics
        self.tensor_content = tensor_content

    def _call(self, api: str, model: str, context, fn):
        """Runs a handler; every failure becomes the gRPC status TF Serving would send."""
        if HANDLER_PROFILE is not None:
            return HANDLER_PROFILE.run(lambda: self._handle(api, model, context, fn))
        return self._handle(api, model, context, fn)

    def _handle(self, api: str, model: str, context, fn):
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001  (bad input must never crash the server)
            err = as_serving_error(e)
            if err.code_name in ("INTERNAL", "UNKNOWN"):
                log.exception("%s on %s failed", api, model)
            self.metrics.record(model, api, "GRPC", err.code_name, time.perf_counter() - t0)
            context.abort(err.code, err.message)
        self.metrics.record(model, api, "GRPC", "OK", time.perf_counter() - t0)
        return result

    def _request_id(self, model: str, context) -> Optional[str]:
        """For a model with logging_config: the client's x-request-id (or a new one), sent back in the
        response's initial metadata; None (and no metadata work) for other models."""
        if not self.manager.request_logger.enabled(model):
            return None
        sent = next((v for k, v in context.invocation_metadata() if k == REQUEST_ID_HEADER), None)
        rid = check_request_id(sent if isinstance(sent, str) else str(sent)) if sent is not None else new_request_id()
        context.send_initial_metadata(((REQUEST_ID_HEADER, rid),))
        return rid

    def _log_request(self, rid: Optional[str], kind: str, model: str, version: int, signature_name: str,
                     request, response) -> None:
        if rid is not None:  # sampled and queued; written as a PredictionLog off the request path
            self.manager.request_logger.log(model, version, signature_name, rid,
                                            fill_from_protos(kind, request, response))


class PredictionServicer(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, GetModelMetadata, Classify, Regress and MultiInference over the model manager."""

    def Predict(self, request, context):
        spec = request.model_spec

        def run():
            _require_spec(request)
            rid = self._request_id(spec.name, context)
            with self.manager.acquire(spec.name, _version(spec), spec.version_label) as s:
                signature_name = spec.signature_name or DEFAULT_SIGNATURE
                sig = s.signature(signature_name)
                inputs = {k: codec.proto_to_ndarray(v) for k, v in request.inputs.items()}
                outputs = sig.run(inputs, request.output_filter)
                resp = predict_pb2.PredictResponse()
                _fill_spec(resp.model_spec, spec.name, s.version, signature_name)
                content = self.tensor_content
                for k, v in outputs.items():
                    codec.ndarray_to_response_proto(v, resp.outputs[k], content)
                self._log_request(rid, "predict_log", spec.name, s.version, signature_name, request, resp)
                return resp

        return self._call("Predict", spec.name, context, run)

    def GetModelMetadata(self, request, context):
        spec = request.model_spec

        def run():
            _require_spec(request)
            fields = list(request.metadata_field)
            if not fields:
                raise ServingError(INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
            for f in fields:
                if f != "signature_def":
                    raise ServingError(INVALID_ARGUMENT, f"Metadata field {f} is not supported")
            with self.manager.acquire(spec.name, _version(spec), spec.version_label) as s:
                resp = get_model_metadata_pb2.GetModelMetadataResponse()
                _fill_spec(resp.model_spec, spec.name, s.version, "")
                resp.metadata["signature_def"].Pack(s.signature_def_map())
                return resp

        return self._call("GetModelMetadata", spec.name, context, run)

    def Classify(self, request, context):
        spec = request.model_spec

        def run():
            _require_spec(request)
            rid = self._request_id(spec.name, context)
            with self.manager.acquire(spec.name, _version(spec), spec.version_label) as s:
                sig = s.classification_signature(spec.signature_name)
                resp = classification_pb2.ClassificationResponse()
                _fill_spec(resp.model_spec, spec.name, s.version, sig.name)
                _fill_classifications(resp.result, *sig.classify(codec.examples_from_input(request.input)))
                self._log_request(rid, "classify_log", spec.name, s.version, sig.name, request, resp)
                return resp

        return self._call("Classify", spec.name, context, run)

    def Regress(self, request, context):
        spec = request.model_spec

        def run():
            _require_spec(request)
            rid = self._request_id(spec.name, context)
            with self.manager.acquire(spec.name, _version(spec), spec.version_label) as s:
                sig = s.regression_signature(spec.signature_name)
                resp = regression_pb2.RegressionResponse()
                _fill_spec(resp.model_spec, spec.name, s.version, sig.name)
                _fill_regressions(resp.result, sig.regress(codec.examples_from_input(request.input)))
                self._log_request(rid, "regress_log", spec.name, s.version, sig.name, request, resp)
                return resp

        return self._call("Regress", spec.name, context, run)

    def MultiInference(self, request, context):
        """Classify and Regress over one set of examples, one model, as TF Serving's MultiInference."""
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()

        def run():
            rid = self._request_id(spec.name, context) if spec.name else None
            with self.manager.acquire(spec.name, _version(spec), spec.version_label) as s:
                plan, seen = [], set()
                for task in request.tasks:
                    if not task.model_spec.name:
                        raise ServingError(INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
                    if task.model_spec.name != spec.name:
                        raise ServingError(INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access "
                                                             "the same model name.")
                    name = task.model_spec.signature_name or DEFAULT_SIGNATURE
                    if name in seen:
                        raise ServingError(INVALID_ARGUMENT, f"Duplicate evaluation of signature: {name}")
                    seen.add(name)
                    sig = s.signatures.get(name)
                    if sig is None:
                        raise ServingError(INVALID_ARGUMENT, f"Requested signature not found in model graph: {name}")
                    if task.method_name == CLASSIFY_METHOD:
                        sig.check_classification()
                    elif task.method_name == REGRESS_METHOD:
                        sig.check_regression()
                    else:
                        raise ServingError(UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
                    plan.append((task, sig))
                examples = codec.examples_from_input(request.input)
                resp = inference_pb2.MultiInferenceResponse()
                for task, sig in plan:
                    result = resp.results.add()
                    if task.method_name == CLASSIFY_METHOD:
                        _fill_classifications(result.classification_result, *sig.classify(examples))
                    else:
                        _fill_regressions(result.regression_result, sig.regress(examples))
                    _fill_spec(result.model_spec, task.model_spec.name, s.version, sig.name)
                self._log_request(rid, "multi_inference_log", spec.name, s.version, "", request, resp)
                return resp

        return self._call("MultiInference", spec.name, context, run)


def _fill_classifications(result, classes, scores) -> None:
    ref = classes if classes is not None else scores
    labels = None if classes is None else [codec._as_bytes(x) for x in classes.ravel().tolist()]
    values = None if scores is None else scores.ravel().tolist()
    rows, width = ref.shape
    for i in range(rows):
        c = result.classifications.add()
        for j in range(width):
            cls = c.classes.add()
            if labels is not None:
                cls.label = labels[i * width + j].decode("utf-8", "replace")
            if values is not None:
                cls.score = values[i * width + j]


def _fill_regressions(result, values) -> None:
    for v in values.tolist():
        result.regressions.add().value = v


class ModelServicer(_Base, model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def GetModelStatus(self, request, context):
        spec = request.model_spec

        def run():
            _require_spec(request)
            resp = get_model_status_pb2.GetModelStatusResponse()
            for st in self.manager.status(spec.name, _version(spec)):
                mvs = resp.model_version_status.add()
                mvs.version = st.version
                mvs.state = get_model_status_pb2.ModelVersionStatus.State.Value(st.state)
                mvs.status.error_code = _error_code_number(st.error_code)
                mvs.status.error_message = st.error_message
            return resp

        return self._call("GetModelStatus", spec.name, context, run)

    def HandleReloadConfigRequest(self, request, context):
        def run():
            self.manager.reload_config(request.config)  # validated first; refused = nothing changes
            return model_management_pb2.ReloadConfigResponse()

        return self._call("HandleReloadConfigRequest", "", context, run)


def _fill_spec(target, name: str, version: int, signature_name: str) -> None:
    target.name = name
    target.version.value = version
    if signature_name:
        target.signature_name = signature_name


# ---------------------------------------------------------------- the server
@dataclasses.dataclass
class ServerOptions:
    """Everything ``main`` parses; ``port``/``rest_api_port`` 0 = pick a free port, rest None = no REST."""

    host: str = "127.0.0.1"
    port: int = 8500
    grpc_socket_path: str = ""  # also listen on this Unix socket (TF Serving's flag)
    grpc_channel_arguments: str = ""  # "key=value,key=value", ints passed as ints (TF Serving's flag)
    rest_api_port: Optional[int] = 8501
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_idle_timeout_seconds: float = 30.0  # headers of the next request must arrive within this (not in TF Serving)
    rest_api_max_connections: int = 0  # open REST connections at most; 0 = min(1024, fd limit / 2) (not in TF Serving)
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 2.0
    allow_version_labels_for_unavailable_models: bool = False
    enable_batching: bool = False
    batching: BatchingOptions = dataclasses.field(default_factory=BatchingOptions)
    max_request_bytes: int = 64 << 20
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    saved_model_tags: str = "serve"
    grpc_max_threads: int = 16
    enable_serialization_as_tensor_content: bool = False
    enable_signature_method_name_check: bool = False
    enable_grpc_healthcheck_service: bool = False
    ssl_cert: str = ""   # PEM file paths
    ssl_key: str = ""
    ssl_ca: str = ""     # set to require client certificates signed by this CA
    ssl_config_file: str = ""  # TF Serving's SSLConfig text proto (PEM contents inline)
    monitoring_config_file: str = ""
    metrics_path: str = DEFAULT_METRICS_PATH
    monitoring_port: Optional[int] = None
    tensorflow_intra_op_parallelism: int = 0  # 0 = TensorFlow's default (all cores)
    tensorflow_inter_op_parallelism: int = 0
    request_logging: RequestLogOptions = dataclasses.field(default_factory=RequestLogOptions)  # logging_config


class ModelServer:
    """Model manager + gRPC server + REST server (+ metrics endpoint); ``start()``, then ``stop()``."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.metrics = Metrics()
        self.manager: Optional[ModelManager] = None
        self.grpc_port: Optional[int] = None
        self.rest_port: Optional[int] = None
        self._grpc = None
        self._rest = None
        self._monitoring = None
        self._stopped = threading.Event()

    def _model_config(self):
        o = self.options
        if o.model_config_file:
            return read_model_config_file(o.model_config_file)
        if not o.model_base_path:
            raise ValueError("give --model_base_path (with --model_name) or --model_config_file")
        return single_model_config(o.model_name, o.model_base_path)

    def _tls(self):
        """(key PEM, cert PEM, CA PEM or None, require client cert) or None."""
        o = self.options
        if o.ssl_config_file:
            c = read_ssl_config(o.ssl_config_file)
            return c.server_key.encode(), c.server_cert.encode(), (c.custom_ca.encode() or None), c.client_verify
        if o.ssl_cert or o.ssl_key:
            if not (o.ssl_cert and o.ssl_key):
                raise ValueError("--ssl_cert and --ssl_key go together")
            read = lambda p: open(p, "rb").read()  # noqa: E731
            return read(o.ssl_key), read(o.ssl_cert), (read(o.ssl_ca) if o.ssl_ca else None), bool(o.ssl_ca)
        return None

    def start(self) -> "ModelServer":
        o = self.options
        _set_tf_threads(o.tensorflow_intra_op_parallelism, o.tensorflow_inter_op_parallelism)
        METHOD_NAME_CHECK["enabled"] = bool(o.enable_signature_method_name_check)
        grpc_channel_options(o.grpc_channel_arguments)  # a malformed list fails here, before any model loads
        metrics_path = o.metrics_path
        metrics_enabled = True
        if o.monitoring_config_file:
            mc = read_monitoring_config(o.monitoring_config_file)
            metrics_enabled = mc.prometheus_config.enable
            metrics_path = mc.prometheus_config.path or DEFAULT_METRICS_PATH
        self.manager = ModelManager(
            self._model_config(), poll_seconds=o.file_system_poll_wait_seconds,
            config_path=o.model_config_file or None, config_poll_seconds=o.model_config_file_poll_wait_seconds,
            tags=[t for t in o.saved_model_tags.split(",") if t], warmup=o.enable_model_warmup,
            warmup_iterations=o.num_request_iterations_for_warmup,
            batching=o.batching if o.enable_batching else None, metrics=self.metrics,
            request_logging=o.request_logging)
        self.manager.allow_version_labels_for_unavailable_models = o.allow_version_labels_for_unavailable_models
        self.manager.start()
        tls = self._tls()
        self._start_grpc(tls)
        if o.rest_api_port is not None:
            from serving import rest

            context = None
            if tls is not None:
                context = ssl_context(tls)
            kwargs = {}
            limits_cls = getattr(rest, "RestLimits", None)
            if limits_cls is not None:  # REST front end with resource bounds (serving/rest.py)
                kwargs["limits"] = limits_cls(num_threads=o.rest_api_num_threads,
                                              timeout_s=o.rest_api_timeout_in_ms / 1000.0,
                                              idle_timeout_s=o.rest_api_idle_timeout_seconds,
                                              max_connections=o.rest_api_max_connections)
            self._rest = rest.make_rest_server(o.host, o.rest_api_port, self.manager, self.metrics,
                                               max_request_bytes=o.max_request_bytes, ssl_context=context,
                                               metrics_path=metrics_path if metrics_enabled else None, **kwargs)
            self.rest_port = self._rest.server_address[1]
            threading.Thread(target=self._rest.serve_forever, name="rest", daemon=True).start()
            log.info("Exporting HTTP/REST API at:%s:%d ...", o.host, self.rest_port)
        if o.monitoring_port is not None and metrics_enabled:
            from prometheus_client import start_http_server

            self._monitoring = start_http_server(o.monitoring_port, o.host, registry=self.metrics.registry)
        return self

    def _start_grpc(self, tls) -> None:
        o = self.options
        opts = [("grpc.max_receive_message_length", int(o.max_request_bytes)),
                ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)]
        opts += grpc_channel_options(o.grpc_channel_arguments)
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=o.grpc_max_threads,
                                                            thread_name_prefix="grpc"), options=opts)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.manager, self.metrics, o.enable_serialization_as_tensor_content), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager, self.metrics), self._grpc)
        if o.enable_grpc_healthcheck_service:
            from serving.health import add_health_service

            add_health_service(self._grpc, ("", "ModelService", "PredictionService",
                                            "tensorflow.serving.ModelService",
                                            "tensorflow.serving.PredictionService"))
        creds = None
        if tls is not None:
            key, cert, ca, verify = tls
            creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=verify)

        def listen(address: str) -> int:
            return self._grpc.add_insecure_port(address) if creds is None else self._grpc.add_secure_port(address, creds)

        if o.grpc_socket_path:
            if not listen("unix:" + o.grpc_socket_path):
                raise OSError(f"cannot bind gRPC to unix socket {o.grpc_socket_path}")
        if o.port or not o.grpc_socket_path:  # TF Serving: --port=0 with a socket = socket only
            address = f"{_bracket(o.host)}:{o.port}"
            self.grpc_port = listen(address)
            if not self.grpc_port:
                raise OSError(f"cannot bind gRPC to {address}")
        self._grpc.start()
        if self.grpc_port:
            log.info("Running gRPC ModelServer at %s:%d ...", o.host, self.grpc_port)
        if o.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", o.grpc_socket_path)

    @property
    def grpc_address(self) -> str:
        if not self.grpc_port:
            return "unix:" + self.options.grpc_socket_path
        return f"{_bracket(self.options.host)}:{self.grpc_port}"

    @property
    def rest_url(self) -> Optional[str]:
        if self.rest_port is None:
            return None
        scheme = "https" if self._tls_on() else "http"
        return f"{scheme}://{_bracket(self.options.host)}:{self.rest_port}"

    def _tls_on(self) -> bool:
        o = self.options
        return bool(o.ssl_config_file or o.ssl_cert)

    def stop(self, grace: float = 1.0) -> None:
        """Stops accepting requests, lets in-flight ones finish (``grace`` seconds), stops polling."""
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
        if self._monitoring is not None:
            server, _thread = self._monitoring
            server.shutdown()
        if self.manager is not None:
            self.manager.stop()
        if HANDLER_PROFILE is not None:
            HANDLER_PROFILE.dump()
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> "ModelServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(0.5)


def grpc_channel_options(text: str) -> List[Tuple[str, object]]:
    """TF Serving's --grpc_channel_arguments: "k=v,k2=v2"; values that parse as int32 go as ints."""
    out: List[Tuple[str, object]] = []
    for item in [x for x in (text or "").split(",") if x.strip()]:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        key, value = key.strip(), value.strip()
        try:
            number = int(value)
            out.append((key, number if -2**31 <= number < 2**31 else value))
        except ValueError:
            out.append((key, value))
    return out


def _set_tf_threads(intra: int, inter: int) -> None:
    """TF Serving's --tensorflow_*_op_parallelism: TF1 sessions get them in their ConfigProto; TF2
    functions through tf.config, which is only possible before TensorFlow's runtime starts."""
    tf1_loader.SESSION_THREADS.update(intra_op=intra, inter_op=inter)
    if not (intra or inter):
        return
    import tensorflow as tf

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as e:  # already initialized (e.g. a server started inside a test process)
        log.warning("cannot change TensorFlow thread pools now: %s", e)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") and not host.startswith("unix:") else host


# ---------------------------------------------------------------- command line
def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


# Every flag of tensorflow_model_server (model_servers/main.cc, 48 of them) is accepted. These
# have nothing to act on in this server; giving one prints one line saying so.
NO_EFFECT_FLAGS = {
    "rest_api_enable_cors_support": (bool, "the REST front end sends no CORS headers"),
    "enable_per_model_batching_parameters": (bool, "one batching configuration applies to every model"),
    "num_load_threads": (int, "versions load one at a time"),
    "num_unload_threads": (int, "versions unload when their last request ends"),
    "max_num_load_retries": (int, "a failed version is retried when its files change"),
    "load_retry_interval_micros": (int, "a failed version is retried when its files change"),
    "flush_filesystem_caches": (bool, "no filesystem caches to flush"),
    "use_alts_credentials": (bool, "ALTS needs Google infrastructure; use --ssl_config_file"),
    "platform_config_file": (str, "only the tensorflow platform is served"),
    "per_process_gpu_memory_fraction": (float, "TensorFlow's GPU memory settings are not applied"),
    "remove_unused_fields_from_bundle_metagraph": (bool, "the MetaGraphDef is kept as loaded"),
    "prefer_tflite_model": (bool, "TF Lite models are not served"),
    "num_tflite_pools": (int, "TF Lite models are not served"),
    "num_tflite_interpreters_per_pool": (int, "TF Lite models are not served"),
    "xla_cpu_compilation_enabled": (bool, "XLA JIT is left to TensorFlow's defaults"),
    "xla_gpu_compilation_enabled": (bool, "XLA JIT is left to TensorFlow's defaults"),
    "enable_profiler": (bool, "no profiler service"),
    "thread_pool_factory_config_file": (str, "requests run on the gRPC worker threads"),
    "mixed_precision": (str, "models run in the precision they were saved in"),
    "skip_initialize_tpu": (bool, "no TPU"),
}
TF_SERVING_FLAGS = (
    "port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads", "rest_api_timeout_in_ms",
    "rest_api_enable_cors_support", "enable_batching", "allow_version_labels_for_unavailable_models",
    "batching_parameters_file", "enable_per_model_batching_parameters", "model_config_file",
    "model_config_file_poll_wait_seconds", "model_name", "model_base_path", "num_load_threads",
    "num_unload_threads", "max_num_load_retries", "load_retry_interval_micros", "file_system_poll_wait_seconds",
    "flush_filesystem_caches", "tensorflow_session_parallelism", "tensorflow_session_config_file",
    "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism", "use_alts_credentials",
    "ssl_config_file", "platform_config_file", "per_process_gpu_memory_fraction", "saved_model_tags",
    "grpc_channel_arguments", "grpc_max_threads", "enable_model_warmup", "num_request_iterations_for_warmup",
    "version", "monitoring_config_file", "remove_unused_fields_from_bundle_metagraph", "prefer_tflite_model",
    "num_tflite_pools", "num_tflite_interpreters_per_pool", "enable_signature_method_name_check",
    "xla_cpu_compilation_enabled", "xla_gpu_compilation_enabled", "enable_profiler",
    "thread_pool_factory_config_file", "mixed_precision", "skip_initialize_tpu", "enable_grpc_healthcheck_service",
    "enable_serialization_as_tensor_content",
)
VERSION = "2.16.1-recsys"  # the TF Serving API version whose protos this server speaks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recsys serve",
        description="TF-Serving-compatible model server (gRPC PredictionService/ModelService + REST) for "
                    "local use. Same flags (all 48 of tensorflow_model_server), config files and model layout; "
                    "production uses the real TF Serving image (see k8s/).",
        epilog="Examples:\n  recsys serve --model_name=retrieval --model_base_path=runs/demo/models/retrieval\n"
               "  recsys serve --model_config_file=models.config --host=0.0.0.0\n"
               "Models live in <base_path>/<integer version>/ (SavedModel). Metrics: GET "
               f"{DEFAULT_METRICS_PATH} on the REST port; liveness GET /healthz, readiness GET /readyz.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b = dict(type=_bool, nargs="?", const=True)
    p.add_argument("--port", type=int, default=8500,
                   help="gRPC port (0 = any free port; with --grpc_socket_path, 0 = socket only, as in TF Serving)")
    p.add_argument("--grpc_socket_path", default="", help="also serve gRPC on this Unix socket")
    p.add_argument("--grpc_channel_arguments", default="",
                   help="comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=2000")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port; 0 disables REST (as in TF Serving)")
    p.add_argument("--rest_api_num_threads", type=int, default=0, help="REST worker threads (0 = 4 x CPUs)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="REST request timeout: a body that has not fully arrived by then gets HTTP 408")
    p.add_argument("--rest_api_idle_timeout_seconds", type=float, default=30.0,
                   help="close REST connections that send no complete request headers for this long")
    p.add_argument("--rest_api_max_connections", type=int, default=0,
                   help="open REST connections at most, more get HTTP 503 (0 = min(1024, fd limit / 2))")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: loopback only; 0.0.0.0 to expose)")
    p.add_argument("--model_name", default="default", help="name of the single model (with --model_base_path)")
    p.add_argument("--model_base_path", default="", help="directory holding <version>/ SavedModels of one model")
    p.add_argument("--model_config_file", default="",
                   help="TF Serving ModelServerConfig text proto (several models, version policies, labels)")
    p.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                   help="re-read --model_config_file this often (0 = read once)")
    p.add_argument("--allow_version_labels_for_unavailable_models", default=False,
                   help="a reload may point a new label at a version that is not loaded yet", **b)
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=2.0,
                   help="look for new/removed versions this often (0 = only at startup)")
    p.add_argument("--enable_batching", default=False, help="merge concurrent requests into one model call", **b)
    p.add_argument("--batching_parameters_file", default="",
                   help="TF Serving BatchingParameters text proto (max_batch_size { value: 32 } ...)")
    p.add_argument("--max_batch_size", type=int, default=32, help="rows per merged batch")
    p.add_argument("--batch_timeout_micros", type=int, default=0,
                   help="max wait for a batch to fill (0 = take what is queued; TF Serving suggests 0, then 1-10 ms)")
    p.add_argument("--num_batch_threads", type=int, default=2, help="batches that may run at once")
    p.add_argument("--max_enqueued_batches", type=int, default=100,
                   help="queue bound (in batches); beyond it requests get RESOURCE_EXHAUSTED")
    p.add_argument("--max_request_bytes", type=int, default=64 << 20,
                   help="larger requests get RESOURCE_EXHAUSTED (gRPC) / HTTP 429 (REST)")
    p.add_argument("--enable_model_warmup", default=True,
                   help="replay assets.extra/tf_serving_warmup_requests before a version serves", **b)
    p.add_argument("--num_request_iterations_for_warmup", type=int, default=1)
    p.add_argument("--saved_model_tags", default="serve", help="comma-separated MetaGraph tags to load")
    p.add_argument("--grpc_max_threads", type=int, default=16, help="gRPC worker threads")
    p.add_argument("--enable_serialization_as_tensor_content", default=False,
                   help="Predict responses carry values in tensor_content instead of typed fields", **b)
    p.add_argument("--enable_signature_method_name_check", default=False,
                   help="Predict/Classify/Regress only run signatures of their method_name", **b)
    p.add_argument("--enable_grpc_healthcheck_service", default=False,
                   help="serve grpc.health.v1.Health (SERVING once models are loaded)", **b)
    p.add_argument("--ssl_cert", default="", help="PEM certificate file: serve gRPC and REST over TLS")
    p.add_argument("--ssl_key", default="", help="PEM private key file for --ssl_cert")
    p.add_argument("--ssl_ca", default="", help="PEM CA file: require client certificates signed by it")
    p.add_argument("--ssl_config_file", default="", help="TF Serving SSLConfig text proto (alternative to --ssl_*)")
    p.add_argument("--monitoring_config_file", default="",
                   help='TF Serving MonitoringConfig text proto (prometheus_config { enable: true path: "..." })')
    p.add_argument("--monitoring_port", type=int, default=None, help="also serve Prometheus metrics on this port")
    p.add_argument("--tensorflow_session_parallelism", type=int, default=0,
                   help="threads for both TensorFlow pools unless the two flags below say otherwise")
    p.add_argument("--tensorflow_session_config_file", default="",
                   help="TensorFlow ConfigProto text proto; its intra/inter-op thread counts are applied")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads for one op (0 = all cores)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="threads running independent ops (0 = each request runs its graph in its own gRPC "
                        "thread, no hand-off)")
    p.add_argument("--request_log_queue_size", type=int, default=RequestLogOptions.queue_size,
                   help="logged requests waiting to be written (models with logging_config); more are dropped "
                        "and counted, never blocking a request")
    p.add_argument("--request_log_max_file_mb", type=float, default=RequestLogOptions.max_file_bytes / 2**20,
                   help="start a new request log file after this many MiB")
    p.add_argument("--request_log_max_file_seconds", type=float, default=RequestLogOptions.max_file_seconds,
                   help="start a new request log file when the current one is this old")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    types = {bool: b, int: dict(type=int), float: dict(type=float), str: dict(type=str)}
    for name, (kind, why) in NO_EFFECT_FLAGS.items():
        p.add_argument(f"--{name}", default=None, help=f"accepted, no effect here: {why}", **types[kind])
    p.add_argument("--log_level", default="INFO",
                   help="debug, info, warning or error; debug adds TensorFlow's own Python log (its C++ log "
                        "follows TF_CPP_MIN_LOG_LEVEL, 3 unless set)")
    return p


def no_effect_notes(args: argparse.Namespace) -> List[str]:
    """One line per given TF Serving flag that this server accepts but does not act on."""
    return [f"--{name}={getattr(args, name)} is accepted for TF Serving compatibility and has no effect here "
            f"({why})" for name, (_, why) in NO_EFFECT_FLAGS.items() if getattr(args, name) is not None]


def _session_threads(args: argparse.Namespace) -> Tuple[int, int]:
    """(intra, inter) from --tensorflow_session_config_file, --tensorflow_session_parallelism and the two
    per-pool flags, the later ones overriding, as TF Serving documents."""
    intra = inter = 0
    if args.tensorflow_session_config_file:
        from google.protobuf import text_format
        from tensorflow.core.protobuf import config_pb2

        with open(args.tensorflow_session_config_file) as f:
            cp = text_format.Parse(f.read(), config_pb2.ConfigProto())
        intra, inter = cp.intra_op_parallelism_threads, cp.inter_op_parallelism_threads
    if args.tensorflow_session_parallelism:
        intra = inter = args.tensorflow_session_parallelism
    return (args.tensorflow_intra_op_parallelism or intra, args.tensorflow_inter_op_parallelism or inter)


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    if args.use_alts_credentials and args.ssl_config_file:
        raise ValueError("Either use_alts_credentials must be false or ssl_config_file must be empty.")
    if args.port and args.rest_api_port and args.port == args.rest_api_port:
        raise ValueError("--rest_api_port cannot be same as --port")
    batching = BatchingOptions(args.max_batch_size, args.batch_timeout_micros, args.num_batch_threads,
                               args.max_enqueued_batches)
    if args.batching_parameters_file:
        batching = batching_from_file(args.batching_parameters_file, batching)
    intra, inter = _session_threads(args)
    return ServerOptions(
        host=args.host, port=args.port, grpc_socket_path=args.grpc_socket_path,
        grpc_channel_arguments=args.grpc_channel_arguments, rest_api_port=args.rest_api_port or None,
        rest_api_num_threads=args.rest_api_num_threads, rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        rest_api_idle_timeout_seconds=args.rest_api_idle_timeout_seconds,
        rest_api_max_connections=args.rest_api_max_connections,
        model_name=args.model_name, model_base_path=args.model_base_path, model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=bool(args.allow_version_labels_for_unavailable_models),
        enable_batching=bool(args.enable_batching or args.batching_parameters_file), batching=batching,
        max_request_bytes=args.max_request_bytes, enable_model_warmup=bool(args.enable_model_warmup),
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        saved_model_tags=args.saved_model_tags, grpc_max_threads=args.grpc_max_threads,
        enable_serialization_as_tensor_content=bool(args.enable_serialization_as_tensor_content),
        enable_signature_method_name_check=bool(args.enable_signature_method_name_check),
        enable_grpc_healthcheck_service=bool(args.enable_grpc_healthcheck_service),
        ssl_cert=args.ssl_cert, ssl_key=args.ssl_key, ssl_ca=args.ssl_ca, ssl_config_file=args.ssl_config_file,
        monitoring_config_file=args.monitoring_config_file, monitoring_port=args.monitoring_port,
        tensorflow_intra_op_parallelism=intra, tensorflow_inter_op_parallelism=inter,
        request_logging=_request_log_options(args))


def _request_log_options(args: argparse.Namespace) -> RequestLogOptions:
    if args.request_log_queue_size < 1 or args.request_log_max_file_mb <= 0 or args.request_log_max_file_seconds <= 0:
        raise ValueError("--request_log_queue_size, --request_log_max_file_mb and --request_log_max_file_seconds "
                         "must be positive")
    return RequestLogOptions(queue_size=args.request_log_queue_size,
                             max_file_bytes=int(args.request_log_max_file_mb * 2**20),
                             max_file_seconds=args.request_log_max_file_seconds)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        import tensorflow as tf

        print(f"TensorFlow ModelServer: {VERSION}\nTensorFlow Library: {tf.__version__}")
        return 0
    level = getattr(logging, args.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # TensorFlow's own Python log (the TF1 loader's deprecation notice, "Restoring parameters", each
    # twice: its handler and ours) only at --log_level debug; the server's lines say what was loaded
    logging.getLogger("tensorflow").setLevel(level if level <= logging.DEBUG else logging.ERROR)
    for note in no_effect_notes(args):
        log.warning("%s", note)
    try:
        server = ModelServer(options_from_args(args)).start()
    except Exception as e:  # noqa: BLE001
        log.error("cannot start server: %s", e)
        return 1
    lines = []
    if server.grpc_port:
        lines.append(f"gRPC  {server.grpc_address}")
    if args.grpc_socket_path:
        lines.append(f"gRPC  unix:{args.grpc_socket_path}")
    if server.rest_url:
        lines.append(f"REST  {server.rest_url}")
    print("\n".join(lines), flush=True)

    def _graceful(signum, _frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.stop, kwargs={"grace": 5.0}, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _graceful)
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
