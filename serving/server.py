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
import signal
import sys
import threading
from concurrent import futures
from typing import List, Optional

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving import codec
from serving.config_files import batching_from_file, read_monitoring_config, read_ssl_config, ssl_context
from serving.errors import INVALID_ARGUMENT, UNIMPLEMENTED, ServingError, as_serving_error
from serving.metrics import Metrics
from serving.models import BatchingOptions, ModelManager, read_model_config_file, single_model_config
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger("serving")

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def _version(spec) -> Optional[int]:
    return spec.version.value if spec.HasField("version") else None


def _error_code_number(name: str) -> int:
    return grpc.StatusCode[name].value[0]


class _Base:
    def __init__(self, manager: ModelManager, metrics: Metrics):
        self.manager, self.metrics = manager, metrics

    def _call(self, api: str, model: str, context, fn):
        """Runs a handler; every failure becomes the gRPC status TF Serving would send."""
        err = None
        with self.metrics.observe(model, api, "GRPC") as outcome:
            try:
                return fn()
            except Exception as e:  # noqa: BLE001  (bad input must never crash the server)
                err = as_serving_error(e)
                outcome["code"] = err.code_name
                if err.code_name in ("INTERNAL", "UNKNOWN"):
                    log.exception("%s on %s failed", api, model)
        context.abort(err.code, err.message)


class PredictionServicer(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, GetModelMetadata, Classify and Regress over the model manager."""

    def Predict(self, request, context):
        spec = request.model_spec

        def run():
            with self.manager.acquire(spec.name, _version(spec), spec.version_label) as s:
                inputs = {k: codec.proto_to_ndarray(v) for k, v in request.inputs.items()}
                signature_name = spec.signature_name or DEFAULT_SIGNATURE
                outputs = s.predict(inputs, signature_name, list(request.output_filter))
                resp = predict_pb2.PredictResponse()
                _fill_spec(resp.model_spec, spec.name, s.version, signature_name)
                for k, v in outputs.items():
                    codec.ndarray_to_proto(v, resp.outputs[k])
                return resp

        return self._call("Predict", spec.name, context, run)

    def GetModelMetadata(self, request, context):
        spec = request.model_spec

        def run():
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
            with self.manager.acquire(spec.name, _version(spec), spec.version_label) as s:
                signature_name = spec.signature_name or DEFAULT_SIGNATURE
                classes, scores = s.signature(signature_name).classify(codec.examples_from_input(request.input))
                resp = classification_pb2.ClassificationResponse()
                _fill_spec(resp.model_spec, spec.name, s.version, signature_name)
                rows = (classes if classes is not None else scores).shape[0]
                for i in range(rows):
                    c = resp.result.classifications.add()
                    width = (classes if classes is not None else scores).shape[1]
                    for j in range(width):
                        cls = c.classes.add()
                        if classes is not None:
                            cls.label = codec._as_bytes(classes[i, j]).decode("utf-8", "replace")
                        if scores is not None:
                            cls.score = float(scores[i, j])
                return resp

        return self._call("Classify", spec.name, context, run)

    def Regress(self, request, context):
        spec = request.model_spec

        def run():
            with self.manager.acquire(spec.name, _version(spec), spec.version_label) as s:
                signature_name = spec.signature_name or DEFAULT_SIGNATURE
                values = s.signature(signature_name).regress(codec.examples_from_input(request.input))
                resp = regression_pb2.RegressionResponse()
                _fill_spec(resp.model_spec, spec.name, s.version, signature_name)
                for v in values:
                    resp.result.regressions.add().value = float(v)
                return resp

        return self._call("Regress", spec.name, context, run)

    def MultiInference(self, request, context):
        def run():
            raise ServingError(UNIMPLEMENTED, "MultiInference is not supported by the local server; "
                                              "call Classify/Regress/Predict")

        return self._call("MultiInference", "", context, run)


class ModelServicer(_Base, model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def GetModelStatus(self, request, context):
        spec = request.model_spec

        def run():
            resp = get_model_status_pb2.GetModelStatusResponse()
            for st in self.manager.status(spec.name, _version(spec), spec.version_label):
                mvs = resp.model_version_status.add()
                mvs.version = st.version
                mvs.state = get_model_status_pb2.ModelVersionStatus.State.Value(st.state)
                mvs.status.error_code = _error_code_number(st.error_code)
                mvs.status.error_message = st.error_message
            return resp

        return self._call("GetModelStatus", spec.name, context, run)

    def HandleReloadConfigRequest(self, request, context):
        def run():
            self.manager.reload_config(request.config)
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
    rest_api_port: Optional[int] = 8501
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 2.0
    enable_batching: bool = False
    batching: BatchingOptions = dataclasses.field(default_factory=BatchingOptions)
    max_request_bytes: int = 64 << 20
    rest_api_num_threads: int = 0          # REST parse/inference workers; 0 = 4 x CPUs (TF Serving's flag)
    rest_api_timeout_in_ms: int = 30000     # a REST body must arrive within this (TF Serving's flag)
    rest_api_idle_timeout_seconds: float = 30.0  # next request's headers must arrive within this
    rest_api_max_connections: int = 0       # open REST connections; 0 = min(1024, fd limit / 2)
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    saved_model_tags: str = "serve"
    grpc_max_threads: int = 16
    ssl_cert: str = ""   # PEM file paths
    ssl_key: str = ""
    ssl_ca: str = ""     # set to require client certificates signed by this CA
    ssl_config_file: str = ""  # TF Serving's SSLConfig text proto (PEM contents inline)
    monitoring_config_file: str = ""
    metrics_path: str = DEFAULT_METRICS_PATH
    monitoring_port: Optional[int] = None
    tensorflow_intra_op_parallelism: int = 0  # 0 = TensorFlow's default (all cores)
    tensorflow_inter_op_parallelism: int = 0


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
            batching=o.batching if o.enable_batching else None, metrics=self.metrics).start()
        tls = self._tls()
        self._start_grpc(tls)
        if o.rest_api_port is not None:
            from serving.rest import RestLimits, make_rest_server

            context = None
            if tls is not None:
                context = ssl_context(tls)
            self._rest = make_rest_server(o.host, o.rest_api_port, self.manager, self.metrics,
                                          max_request_bytes=o.max_request_bytes, ssl_context=context,
                                          limits=RestLimits(num_threads=o.rest_api_num_threads,
                                                            timeout_s=o.rest_api_timeout_in_ms / 1000.0,
                                                            idle_timeout_s=o.rest_api_idle_timeout_seconds,
                                                            max_connections=o.rest_api_max_connections),
                                          metrics_path=metrics_path if metrics_enabled else None)
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
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=o.grpc_max_threads,
                                                            thread_name_prefix="grpc"), options=opts)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.manager, self.metrics), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager, self.metrics), self._grpc)
        address = f"{_bracket(o.host)}:{o.port}"
        if tls is None:
            self.grpc_port = self._grpc.add_insecure_port(address)
        else:
            key, cert, ca, verify = tls
            creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=verify)
            self.grpc_port = self._grpc.add_secure_port(address, creds)
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC to {address}")
        self._grpc.start()
        log.info("Running gRPC ModelServer at %s:%d ...", o.host, self.grpc_port)

    @property
    def grpc_address(self) -> str:
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
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> "ModelServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(0.5)


def _set_tf_threads(intra: int, inter: int) -> None:
    """TF Serving's --tensorflow_*_op_parallelism; only possible before TensorFlow's runtime starts."""
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
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# ---------------------------------------------------------------- command line
def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recsys serve",
        description="TF-Serving-compatible model server (gRPC PredictionService/ModelService + REST) for "
                    "local use. Same flags, config file and model layout as tensorflow_model_server; "
                    "production uses the real TF Serving image (see k8s/).",
        epilog="Examples:\n  recsys serve --model_name=retrieval --model_base_path=runs/demo/models/retrieval\n"
               "  recsys serve --model_config_file=models.config --host=0.0.0.0\n"
               "Models live in <base_path>/<integer version>/ (SavedModel). Metrics: GET "
               f"{DEFAULT_METRICS_PATH} on the REST port; liveness GET /healthz, readiness GET /readyz.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b = dict(type=_bool, nargs="?", const=True)
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port; 0 disables REST (as in TF Serving)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: loopback only; 0.0.0.0 to expose)")
    p.add_argument("--model_name", default="default", help="name of the single model (with --model_base_path)")
    p.add_argument("--model_base_path", default="", help="directory holding <version>/ SavedModels of one model")
    p.add_argument("--model_config_file", default="",
                   help="TF Serving ModelServerConfig text proto (several models, version policies, labels)")
    p.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                   help="re-read --model_config_file this often (0 = read once)")
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
    p.add_argument("--rest_api_num_threads", type=int, default=0,
                   help="REST worker threads (parsing + inference); 0 = 4 x CPUs")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="a REST request body must arrive within this; slower clients get HTTP 408")
    p.add_argument("--rest_api_idle_timeout_seconds", type=float, default=30.0,
                   help="close REST connections that send no complete request headers for this long")
    p.add_argument("--rest_api_max_connections", type=int, default=0,
                   help="open REST connections at most (more get 503); 0 = min(1024, fd limit / 2)")
    p.add_argument("--max_request_bytes", type=int, default=64 << 20,
                   help="larger requests get RESOURCE_EXHAUSTED (gRPC) / HTTP 429 (REST)")
    p.add_argument("--enable_model_warmup", default=True,
                   help="replay assets.extra/tf_serving_warmup_requests before a version serves", **b)
    p.add_argument("--num_request_iterations_for_warmup", type=int, default=1)
    p.add_argument("--saved_model_tags", default="serve", help="comma-separated MetaGraph tags to load")
    p.add_argument("--grpc_max_threads", type=int, default=16, help="gRPC worker threads")
    p.add_argument("--ssl_cert", default="", help="PEM certificate file: serve gRPC and REST over TLS")
    p.add_argument("--ssl_key", default="", help="PEM private key file for --ssl_cert")
    p.add_argument("--ssl_ca", default="", help="PEM CA file: require client certificates signed by it")
    p.add_argument("--ssl_config_file", default="", help="TF Serving SSLConfig text proto (alternative to --ssl_*)")
    p.add_argument("--monitoring_config_file", default="",
                   help='TF Serving MonitoringConfig text proto (prometheus_config { enable: true path: "..." })')
    p.add_argument("--monitoring_port", type=int, default=None, help="also serve Prometheus metrics on this port")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads for one op (0 = all cores)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="threads running independent ops (0 = all cores)")
    p.add_argument("--log_level", default="INFO")
    return p


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    batching = BatchingOptions(args.max_batch_size, args.batch_timeout_micros, args.num_batch_threads,
                               args.max_enqueued_batches)
    if args.batching_parameters_file:
        batching = batching_from_file(args.batching_parameters_file, batching)
    return ServerOptions(
        host=args.host, port=args.port, rest_api_port=args.rest_api_port or None, model_name=args.model_name,
        model_base_path=args.model_base_path, model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_batching=bool(args.enable_batching or args.batching_parameters_file), batching=batching,
        max_request_bytes=args.max_request_bytes, enable_model_warmup=bool(args.enable_model_warmup),
        rest_api_num_threads=args.rest_api_num_threads, rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        rest_api_idle_timeout_seconds=args.rest_api_idle_timeout_seconds,
        rest_api_max_connections=args.rest_api_max_connections,
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        saved_model_tags=args.saved_model_tags, grpc_max_threads=args.grpc_max_threads, ssl_cert=args.ssl_cert,
        ssl_key=args.ssl_key, ssl_ca=args.ssl_ca, ssl_config_file=args.ssl_config_file,
        monitoring_config_file=args.monitoring_config_file, monitoring_port=args.monitoring_port,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = ModelServer(options_from_args(args)).start()
    except Exception as e:  # noqa: BLE001
        log.error("cannot start server: %s", e)
        return 1
    print(f"gRPC  {server.grpc_address}" + (f"\nREST  {server.rest_url}" if server.rest_url else ""), flush=True)

    def _graceful(signum, _frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.stop, kwargs={"grace": 5.0}, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _graceful)
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
