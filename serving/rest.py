"""TF Serving's REST API on the same model manager as gRPC (stdlib HTTP server, one thread per connection).

Paths and JSON follow TF Serving: ``GET /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata]``,
``POST .../<name>[...]:predict|:classify|:regress``; row format ``{"instances": [...]}`` ->
``{"predictions": [...]}``, columnar ``{"inputs": ...}`` -> ``{"outputs": ...}``, failures
``{"error": "..."}`` with TF Serving's HTTP code for the status. Also serves Prometheus
metrics (``/monitoring/prometheus/metrics``) and ``/healthz`` (alive) / ``/readyz`` (models loaded).
"""
from __future__ import annotations

import json
import logging
import re
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

import numpy as np
from google.protobuf import json_format

from serving import codec
from serving.errors import INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ServingError, as_serving_error
from serving.metrics import Metrics
from serving.models import ModelManager
from serving.servable import Signature

log = logging.getLogger("serving.rest")

_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(?:(/metadata)|:(predict|classify|regress))?$")
MAX_DRAIN_BYTES = 1 << 30  # refused bodies up to this size are read and dropped; beyond, the connection closes
_APIS = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


def _message_to_dict(message) -> Dict[str, Any]:
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         including_default_value_fields=True)
    except TypeError:  # protobuf >= 5 renamed the flag
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)


# ---------------------------------------------------------------- JSON <-> tensors
def _is_b64(x: Any) -> bool:
    return isinstance(x, dict) and set(x) == {"b64"}


def _parse_input(sig: Signature, name: str, value: Any) -> np.ndarray:
    if name not in sig.inputs:  # reported by the signature check with TF Serving's message
        return np.asarray(value, dtype=object) if not isinstance(value, (int, float)) else np.asarray(value)
    return codec.json_to_ndarray(value, sig.inputs[name][0], name)


def rows_to_inputs(instances: Any, sig: Signature) -> Dict[str, np.ndarray]:
    """Row format: a list of per-example objects (or bare values for a one-input signature)."""
    if not isinstance(instances, list) or not instances:
        raise ServingError(INVALID_ARGUMENT, "'instances' must be a non-empty JSON list")
    named = all(isinstance(r, dict) and not _is_b64(r) for r in instances)
    if not named:
        if any(isinstance(r, dict) and not _is_b64(r) for r in instances):
            raise ServingError(INVALID_ARGUMENT, "'instances' mixes objects and plain values")
        if len(sig.inputs) != 1:
            raise ServingError(INVALID_ARGUMENT, "instances is a plain list, but expecting list of objects as "
                                                 f"multiple input tensors required as per signature: {sorted(sig.inputs)}")
        name = next(iter(sig.inputs))
        return {name: _parse_input(sig, name, instances)}
    keys = set(instances[0])
    for i, row in enumerate(instances):
        if set(row) != keys:
            raise ServingError(INVALID_ARGUMENT, f"instance {i} has keys {sorted(row)}; expected the same keys as "
                                                 f"instance 0: {sorted(keys)}")
    return {k: _parse_input(sig, k, [row[k] for row in instances]) for k in keys}


def columns_to_inputs(inputs: Any, sig: Signature) -> Dict[str, np.ndarray]:
    """Columnar format: ``{"inputs": {name: tensor}}`` (or a bare tensor for a one-input signature)."""
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return {k: _parse_input(sig, k, v) for k, v in inputs.items()}
    if len(sig.inputs) != 1:
        raise ServingError(INVALID_ARGUMENT, "'inputs' is a bare value, but the signature takes "
                                             f"{sorted(sig.inputs)}; send an object keyed by input name")
    name = next(iter(sig.inputs))
    return {name: _parse_input(sig, name, inputs)}


def outputs_to_rows(outputs: Dict[str, np.ndarray]) -> list:
    batch = None
    for k, v in outputs.items():
        if v.ndim == 0:
            raise ServingError(INVALID_ARGUMENT, f"Tensor name: {k} has no shape information; use the columnar "
                                                 "'inputs' format for this signature")
        if batch is None:
            batch = v.shape[0]
        elif v.shape[0] != batch:
            raise ServingError(INVALID_ARGUMENT, f"Tensor name: {k} has inconsistent batch size: {v.shape[0]} "
                                                 f"expecting: {batch}")
    as_json = {k: codec.ndarray_to_json(v, k) for k, v in outputs.items()}
    if len(as_json) == 1:
        return next(iter(as_json.values()))
    return [{k: as_json[k][i] for k in as_json} for i in range(batch or 0)]


def outputs_to_columns(outputs: Dict[str, np.ndarray]) -> Any:
    as_json = {k: codec.ndarray_to_json(v, k) for k, v in outputs.items()}
    return next(iter(as_json.values())) if len(as_json) == 1 else as_json


# ---------------------------------------------------------------- handlers (pure: body in, (status, payload) out)
class RestApi:
    """Request logic without HTTP plumbing, so it is easy to test and reuse."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def status(self, name, version, label) -> dict:
        out = []
        for st in self.manager.status(name, version, label):
            out.append({"version": str(st.version), "state": st.state,
                        "status": {"error_code": st.error_code, "error_message": st.error_message}})
        return {"model_version_status": out}

    def metadata(self, name, version, label) -> dict:
        with self.manager.acquire(name, version, label) as s:
            return {"model_spec": {"name": name, "signature_name": "", "version": str(s.version)},
                    "metadata": {"signature_def": _message_to_dict(s.signature_def_map())}}

    def predict(self, name, version, label, req: dict) -> dict:
        with self.manager.acquire(name, version, label) as s:
            sig = s.signature(_signature_name(req))
            if ("instances" in req) == ("inputs" in req):
                raise ServingError(INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key" if "inputs" not in req
                                   else "Only one of 'instances' or 'inputs' may be given")
            if "instances" in req:
                return {"predictions": outputs_to_rows(sig.run(rows_to_inputs(req["instances"], sig)))}
            return {"outputs": outputs_to_columns(sig.run(columns_to_inputs(req["inputs"], sig)))}

    def classify(self, name, version, label, req: dict) -> dict:
        with self.manager.acquire(name, version, label) as s:
            sig = s.signature(_signature_name(req))
            classes, scores = sig.classify(codec.examples_from_json(req.get("examples"), req.get("context")))
            ref = classes if classes is not None else scores
            results = []
            for i in range(ref.shape[0]):
                row = []
                for j in range(ref.shape[1]):
                    lab = codec._as_bytes(classes[i, j]).decode("utf-8", "replace") if classes is not None else ""
                    row.append([lab, float(scores[i, j]) if scores is not None else 0.0])
                results.append(row)
            return {"results": results}

    def regress(self, name, version, label, req: dict) -> dict:
        with self.manager.acquire(name, version, label) as s:
            sig = s.signature(_signature_name(req))
            values = sig.regress(codec.examples_from_json(req.get("examples"), req.get("context")))
            return {"results": [float(v) for v in values]}


def _signature_name(req: dict) -> str:
    name = req.get("signature_name", "")
    if not isinstance(name, str):
        raise ServingError(INVALID_ARGUMENT, "'signature_name' must be a string")
    return name


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients and benchmarks expect
    server_version = "recsys-serving"
    api: RestApi
    metrics: Metrics
    max_request_bytes: int
    metrics_path: Optional[str]

    def log_message(self, fmt, *args):  # route through logging, quietly
        log.debug("%s " + fmt, self.address_string(), *args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        if self.metrics_path and path == self.metrics_path and method == "GET":
            return self._send(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/healthz":
            return self._send(200, {"status": "ok"})
        if path == "/readyz":
            ready, table = self.api.manager.ready()
            return self._send(200 if ready else 503, {"ready": ready, "models": table})
        m = _PATH.match(path)
        if not path.startswith("/v1/"):
            self._discard_body()
            return self._send(404, {"error": f"Not found: {method} {path}"})
        name, version, label, metadata, verb = m.groups() if m else ("", None, None, None, None)
        api = _APIS.get(verb, "GetModelMetadata" if metadata else "GetModelStatus")
        with self.metrics.observe(name, api, "REST") as outcome:
            try:
                status, payload = 200, self._handle(method, m, name, int(version) if version else None,
                                                    label or "", metadata, verb)
            except Exception as e:  # noqa: BLE001  (bad input must never crash the server)
                err = as_serving_error(e)
                if err.code_name in ("INTERNAL", "UNKNOWN"):
                    log.exception("REST %s %s failed", method, path)
                outcome["code"] = err.code_name
                status, payload = err.http_status, {"error": err.message}
        self._send(status, payload)

    def _content_length(self) -> int:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0:
            self.close_connection = True
            raise ServingError(INVALID_ARGUMENT, "invalid Content-Length header")
        return n

    def _discard_body(self) -> None:
        try:
            self._drain(self._content_length())
        except ServingError:
            pass

    def _drain(self, n: int) -> None:
        if n > MAX_DRAIN_BYTES:
            self.close_connection = True
            return
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 16))
            if not chunk:
                break
            n -= len(chunk)

    def _handle(self, method, m, name, version, label, metadata, verb):
        if m is None or (method == "GET") == bool(verb):
            self._discard_body()
            raise ServingError(INVALID_ARGUMENT, f"Malformed request: {method} {urlsplit(self.path).path}")
        if method == "GET":
            return self.api.metadata(name, version, label) if metadata else self.api.status(name, version, label)
        length = self._content_length()
        if length > self.max_request_bytes:
            self._drain(length)  # read and drop it, so the client sees our reply instead of a broken pipe
            raise ServingError(RESOURCE_EXHAUSTED, f"Request body of {length} bytes exceeds the limit of "
                                                   f"{self.max_request_bytes} bytes")
        body = self.rfile.read(length) if length else b""
        try:
            req = json.loads(body or b"null")
        except ValueError as e:
            raise ServingError(INVALID_ARGUMENT, f"JSON Parse error: {e}") from e
        if not isinstance(req, dict):
            raise ServingError(INVALID_ARGUMENT, "request body must be a JSON object")
        return getattr(self.api, verb)(name, version, label, req)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_rest_server(host: str, port: int, manager: ModelManager, metrics: Metrics, *,
                     max_request_bytes: int = 64 << 20, ssl_context=None,
                     metrics_path: Optional[str] = "/monitoring/prometheus/metrics") -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server; call ``serve_forever`` in a thread."""
    handler = type("RestHandler", (_Handler,), {"api": RestApi(manager), "metrics": metrics,
                                                "max_request_bytes": max_request_bytes,
                                                "metrics_path": metrics_path})
    server_cls = _Server6 if ":" in host else _Server
    httpd = server_cls((host.strip("[]"), port), handler)
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True)
    return httpd

