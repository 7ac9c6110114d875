"""TF Serving's REST API on the same model manager as gRPC, on aiohttp (asyncio) with bounded resources.

Paths and JSON follow TF Serving: ``GET /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata]``,
``POST .../<name>[...]:predict|:classify|:regress``; row format ``{"instances": [...]}`` ->
``{"predictions": [...]}``, columnar ``{"inputs": ...}`` -> ``{"outputs": ...}``, failures
``{"error": "..."}`` with TF Serving's HTTP code for the status. Also serves Prometheus
metrics (``/monitoring/prometheus/metrics``) and ``/healthz`` (alive) / ``/readyz`` (models loaded).

Why asyncio: an idle, slow or never-finishing client costs one socket, not a thread. The event loop
only does I/O (TLS handshakes included, each with its own timeout, never in ``accept``); parsing and
inference run on ``num_threads`` worker threads. Limits (``RestLimits``): open connections, time to
send headers / idle keep-alive, time to send the body, body bytes buffered at once, body size and
values per request. ``Transfer-Encoding: chunked`` bodies are accepted.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional, Tuple

import numpy as np
from aiohttp import web, web_server
from google.protobuf import json_format

from serving import codec, json_codec
from serving.errors import INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ServingError, as_serving_error
from serving.metrics import Metrics
from serving.models import ModelManager
from serving.request_logging import (check_request_id, fill_examples_from_arrays, fill_predict_from_arrays,
                                     new_request_id)
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger("serving.rest")

_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?(?:(/metadata)|:(predict|classify|regress))?$")
_APIS = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}
_JSON = "application/json"
_ROWS_PER_SLICE = 1024  # responses are encoded this many rows at a time (bounded Python objects)


@dataclasses.dataclass
class RestLimits:
    """Resource bounds of the REST front end (flags in brackets)."""

    max_request_bytes: int = 64 << 20      # body size; more is HTTP 429 (--max_request_bytes)
    num_threads: int = 0                   # parse + inference workers; 0 = 4 x CPUs (--rest_api_num_threads)
    timeout_s: float = 30.0                # the whole body must arrive within this (--rest_api_timeout_in_ms)
    idle_timeout_s: float = 30.0           # headers of the next request must arrive within this
    handshake_timeout_s: float = 10.0      # TLS handshake, per connection
    max_connections: int = 0               # open connections; 0 = min(1024, fd limit / 2); more are closed
    max_buffered_bytes: int = 0            # request bodies held at once; 0 = max(4 x max_request_bytes, 256 MiB)
    max_values: int = json_codec.DEFAULT_MAX_VALUES  # scalars per predict request

    def resolved(self) -> "RestLimits":
        r = dataclasses.replace(self)
        r.num_threads = r.num_threads or 4 * (os.cpu_count() or 1)
        if not r.max_connections:
            try:
                import resource

                soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            except Exception:  # noqa: BLE001
                soft = 1024
            r.max_connections = max(16, min(1024, (soft if soft > 0 else 1024) // 2))
        r.max_buffered_bytes = r.max_buffered_bytes or max(4 * r.max_request_bytes, 256 << 20)
        return r


def _message_to_dict(message) -> Dict[str, Any]:
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         including_default_value_fields=True)
    except TypeError:  # protobuf >= 5 renamed the flag
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)


# ---------------------------------------------------------------- tensors -> JSON (a slice of rows at a time)
def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))  # NaN / Infinity / -Infinity as TF Serving writes them


def _batch_of(outputs: Dict[str, np.ndarray]) -> int:
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
    return batch or 0


def outputs_to_rows(outputs: Dict[str, np.ndarray]) -> list:
    """``predictions`` for a (small) output dict; ``encode_rows`` is the streaming form."""
    return json.loads(encode_rows(outputs))


def encode_rows(outputs: Dict[str, np.ndarray]) -> str:
    """The JSON list of ``predictions``: one object per row (or bare values for a single output)."""
    batch = _batch_of(outputs)
    parts = []
    for start in range(0, batch, _ROWS_PER_SLICE):
        cols = {k: codec.ndarray_to_json(v[start:start + _ROWS_PER_SLICE], k) for k, v in outputs.items()}
        if len(cols) == 1:
            rows = next(iter(cols.values()))
        else:
            rows = [{k: cols[k][i] for k in cols} for i in range(len(next(iter(cols.values()))))]
        parts.append(_dumps(rows)[1:-1])
    return "[" + ",".join(p for p in parts if p) + "]"


def _encode_tensor(name: str, v: np.ndarray) -> str:
    if v.ndim == 0:
        return _dumps(codec.ndarray_to_json(v, name))
    parts = [_dumps(codec.ndarray_to_json(v[s:s + _ROWS_PER_SLICE], name))[1:-1]
             for s in range(0, v.shape[0], _ROWS_PER_SLICE)]
    return "[" + ",".join(p for p in parts if p) + "]"


def encode_columns(outputs: Dict[str, np.ndarray]) -> str:
    """The JSON value of ``outputs``: an object by name, or the bare tensor for a single output."""
    if len(outputs) == 1:
        name, v = next(iter(outputs.items()))
        return _encode_tensor(name, v)
    return "{" + ",".join(f"{_dumps(k)}:{_encode_tensor(k, v)}" for k, v in outputs.items()) + "}"


# ---------------------------------------------------------------- handlers (pure: body in, (status, bytes) out)
class RestApi:
    """Request logic without HTTP plumbing, so it is easy to test and reuse."""

    def __init__(self, manager: ModelManager, max_values: int = json_codec.DEFAULT_MAX_VALUES):
        self.manager = manager
        self.max_values = max_values

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

    def request_id_for(self, path: str, sent: Optional[str]) -> Optional[str]:
        """X-Request-Id of a predict/classify/regress on a model with logging_config (the client's, checked,
        or a new one)."""
        m = _PATH.match(path)
        if m is None or m.group(5) is None or not self.manager.request_logger.enabled(m.group(1)):
            return None
        return check_request_id(sent) if sent is not None else new_request_id()

    def predict(self, name, version, label, body: bytes, request_id: Optional[str] = None) -> bytes:
        with self.manager.acquire(name, version, label) as s:
            fmt, signature_name, inputs = json_codec.parse_predict(
                body, lambda n: s.signature(n).inputs, self.max_values)
            outputs = s.signature(signature_name).run(inputs)
            if request_id is not None:  # sampled and queued; converted to a PredictionLog on the writer thread
                served = signature_name or DEFAULT_SIGNATURE
                self.manager.request_logger.log(name, s.version, served, request_id, fill_predict_from_arrays(
                    name, version, label, served, inputs, outputs, s.version))
            del inputs
            if fmt == "row":
                return ('{"predictions":' + encode_rows(outputs) + "}").encode("utf-8")
            return ('{"outputs":' + encode_columns(outputs) + "}").encode("utf-8")

    def _examples(self, body: bytes) -> Tuple[str, list]:
        """Serialized tf.Examples of a Classify/Regress body, built a chunk of examples at a time."""
        signature_name, context, chunks = json_codec.parse_examples(body, self.max_values)
        serialized = []
        for chunk in chunks:
            serialized.extend(codec.examples_from_json(chunk, context))
        return signature_name, serialized

    def classify(self, name, version, label, body: bytes, request_id: Optional[str] = None) -> dict:
        with self.manager.acquire(name, version, label) as s:
            signature_name, examples = self._examples(body)
            sig = s.classification_signature(signature_name)
            classes, scores = sig.classify(examples)
            if request_id is not None:
                self.manager.request_logger.log(name, s.version, sig.name, request_id, fill_examples_from_arrays(
                    "classify_log", name, version, label, sig.name, examples, s.version, classes=classes,
                    scores=scores))
            ref = classes if classes is not None else scores
            results = []
            for i in range(ref.shape[0]):
                row = []
                for j in range(ref.shape[1]):
                    lab = codec._as_bytes(classes[i, j]).decode("utf-8", "replace") if classes is not None else ""
                    row.append([lab, float(scores[i, j]) if scores is not None else 0.0])
                results.append(row)
            return {"results": results}

    def regress(self, name, version, label, body: bytes, request_id: Optional[str] = None) -> dict:
        with self.manager.acquire(name, version, label) as s:
            signature_name, examples = self._examples(body)
            sig = s.regression_signature(signature_name)
            values = sig.regress(examples)
            if request_id is not None:
                self.manager.request_logger.log(name, s.version, sig.name, request_id, fill_examples_from_arrays(
                    "regress_log", name, version, label, sig.name, examples, s.version, values=values))
            return {"results": [float(v) for v in values]}

    def dispatch(self, method: str, path: str, body: bytes, metrics: Metrics,
                 request_id: Optional[str] = None) -> Tuple[int, bytes]:
        """One /v1/ request -> (HTTP status, JSON bytes); every failure becomes TF Serving's code."""
        m = _PATH.match(path)
        name, version, label, metadata, verb = m.groups() if m else ("", None, None, None, None)
        api = _APIS.get(verb, "GetModelMetadata" if metadata else "GetModelStatus")
        with metrics.observe(name, api, "REST") as outcome:
            try:
                if m is None or method not in ("GET", "POST") or (method == "GET") == bool(verb):
                    raise ServingError(INVALID_ARGUMENT, f"Malformed request: {method} {path}")
                version = int(version) if version else None
                if version is not None and version >= 1 << 63:  # TF Serving parses into int64
                    raise ServingError(INVALID_ARGUMENT, f"Failed to convert version: {version} to numeric.")
                if method == "GET":
                    payload = self.metadata(name, version, label or "") if metadata else \
                        self.status(name, version, label or "")
                elif verb == "predict":
                    return 200, self.predict(name, version, label or "", body, request_id)
                else:
                    payload = getattr(self, verb)(name, version, label or "", body, request_id)
                return 200, _dumps(payload).encode("utf-8")
            except Exception as e:  # noqa: BLE001  (bad input must never crash the server)
                err = as_serving_error(e)
                if err.code_name in ("INTERNAL", "UNKNOWN"):
                    log.exception("REST %s %s failed", method, path)
                outcome["code"] = err.code_name
                return err.http_status, _dumps({"error": err.message}).encode("utf-8")


# ---------------------------------------------------------------- transport
class _BodyTooLarge(Exception):
    def __init__(self, size: str):
        self.size = size


class _Reject(asyncio.Protocol):
    """Answers 503 and closes: the connection limit is reached."""

    BODY = b'{"error": "too many open connections; retry later"}'

    def connection_made(self, transport):
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(self.BODY), self.BODY))
        transport.close()


class _CountingServer(web_server.Server):
    """aiohttp's protocol factory, plus a cap on connections (TLS handshakes in progress included)."""

    def __init__(self, handler, *, max_connections: int, handshake_timeout: float, metrics: Metrics, **kwargs):
        super().__init__(handler, **kwargs)
        self.max_connections, self.handshake_timeout, self.metrics = max_connections, handshake_timeout, metrics
        self._pending: Dict[Any, float] = {}  # created, connection_made not yet called (TLS handshake)

    def open_connections(self) -> int:
        now = time.monotonic()
        for h, t in list(self._pending.items()):
            if now - t > self.handshake_timeout + 1.0:
                del self._pending[h]
        return len(self._connections) + len(self._pending)

    def __call__(self):
        if self.open_connections() >= self.max_connections:
            self.metrics.rest_rejected.inc()
            return _Reject()
        handler = super().__call__()
        self._pending[handler] = time.monotonic()
        return handler

    def connection_made(self, handler, transport) -> None:
        self._pending.pop(handler, None)
        super().connection_made(handler, transport)
        self.metrics.rest_connections.set(len(self._connections))

    def connection_lost(self, handler, exc) -> None:
        self._pending.pop(handler, None)
        super().connection_lost(handler, exc)
        self.metrics.rest_connections.set(len(self._connections))


class _ByteBudget:
    """Request bodies buffered at once stay under a byte budget; a request waits for room."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._cv = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        async with self._cv:
            await self._cv.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n

    async def release(self, n: int) -> None:
        async with self._cv:
            self.used -= n
            self._cv.notify_all()


class RestServer:
    """A bound REST server with ``serve_forever`` / ``shutdown`` / ``server_close`` (socketserver's API)."""

    def __init__(self, host: str, port: int, api: RestApi, metrics: Metrics, limits: RestLimits,
                 ssl_context=None, metrics_path: Optional[str] = "/monitoring/prometheus/metrics"):
        self.api, self.metrics, self.limits = api, metrics, limits.resolved()
        self.ssl_context, self.metrics_path = ssl_context, metrics_path
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host.strip("[]"), port))
            self.socket.listen(512)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self._pool = ThreadPoolExecutor(self.limits.num_threads, thread_name_prefix="rest")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._done = threading.Event()
        self._serving = threading.Event()

    # -------------------------------------------------------------- lifecycle
    def serve_forever(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()
            self._done.set()

    async def _main(self) -> None:
        lim = self.limits
        self._stop = asyncio.Event()
        self._budget = _ByteBudget(lim.max_buffered_bytes)
        self._web = _CountingServer(self._handle, max_connections=lim.max_connections,
                                    handshake_timeout=lim.handshake_timeout_s, metrics=self.metrics,
                                    keepalive_timeout=lim.idle_timeout_s, access_log=None, lingering_time=2.0)
        server = await asyncio.get_running_loop().create_server(
            self._web, sock=self.socket, ssl=self.ssl_context, backlog=512,
            ssl_handshake_timeout=lim.handshake_timeout_s if self.ssl_context is not None else None)
        self._serving.set()
        await self._stop.wait()
        server.close()
        await self._web.shutdown(1.0)
        await server.wait_closed()

    def shutdown(self) -> None:
        """Stops serving (in-flight requests get a second), then returns."""
        if self._loop is None or not self._serving.wait(5):
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._done.wait(15)

    def server_close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.socket.close()
        except OSError:
            pass

    # -------------------------------------------------------------- requests
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        if request.method == "GET" and self.metrics_path and path == self.metrics_path:
            return web.Response(body=self.metrics.render(),
                                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
        if path == "/healthz":
            return _json_response(200, b'{"status": "ok"}')
        if path == "/readyz":
            ready, table = self.api.manager.ready()
            payload = {"ready": ready, "models": table}
            problems = self.api.manager.problems()
            if problems:
                payload["problems"] = problems
            return _json_response(200 if ready else 503, _dumps(payload).encode())
        if not path.startswith("/v1/"):
            return _json_response(404, _dumps({"error": f"Not found: {request.method} {path}"}).encode())
        body, rid = b"", None
        if request.method == "POST":
            try:
                rid = self.api.request_id_for(path, request.headers.get("X-Request-Id"))
            except ServingError as e:
                m = _PATH.match(path)
                self.metrics.record(m.group(1), _APIS[m.group(5)], "REST", e.code_name, 0.0)
                return _json_response(e.http_status, _dumps({"error": e.message}).encode(), close=True)
            declared = request.content_length
            if declared is not None and declared > self.limits.max_request_bytes:
                return self._too_large(path, str(declared))
            reserve = declared if declared is not None else self.limits.max_request_bytes
            try:
                await asyncio.wait_for(self._budget.acquire(reserve), self.limits.timeout_s)
            except asyncio.TimeoutError:
                return _json_response(503, _dumps({"error": "server busy: too many request bodies in flight; "
                                                            "retry"}).encode(), close=True)
            try:
                try:
                    body = await asyncio.wait_for(self._read_body(request), self.limits.timeout_s)
                except asyncio.TimeoutError:
                    self.metrics.rest_timeouts.inc()
                    return _json_response(408, _dumps({"error": f"request body not received within "
                                                                f"{self.limits.timeout_s:g} s"}).encode(), close=True)
                except _BodyTooLarge as e:
                    return self._too_large(path, e.size)
                except (asyncio.CancelledError, ConnectionError):
                    raise  # the client went away: nothing to answer
                except Exception as e:  # noqa: BLE001  (malformed chunked framing, a payload error)
                    return _json_response(400, _dumps({"error": f"cannot read the request body: "
                                                                f"{type(e).__name__}: {e}"}).encode(), close=True)
                status, data = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self.api.dispatch, request.method, path, body, self.metrics, rid)
                del body
            finally:
                await self._budget.release(reserve)
        else:
            status, data = await asyncio.get_running_loop().run_in_executor(
                self._pool, self.api.dispatch, request.method, path, body, self.metrics)
        return _json_response(status, data, headers={"X-Request-Id": rid} if rid is not None else None)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunks, size, limit = [], 0, self.limits.max_request_bytes
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge(f"more than {limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, path: str, size: str) -> web.Response:
        m = _PATH.match(path)
        verb = m.group(5) if m else None
        self.metrics.record(m.group(1) if m else "", _APIS.get(verb, "GetModelStatus"), "REST",
                            RESOURCE_EXHAUSTED.name, 0.0)
        err = ServingError(RESOURCE_EXHAUSTED, f"Request body of {size} bytes exceeds the limit of "
                                               f"{self.limits.max_request_bytes} bytes")
        return _json_response(err.http_status, _dumps({"error": err.message}).encode(), close=True)


def _json_response(status: int, data: bytes, close: bool = False, headers: Optional[dict] = None) -> web.Response:
    resp = web.Response(status=status, body=data, headers={"Content-Type": _JSON, **(headers or {})})
    if close:  # the rest of the body is not read: end the connection after this reply
        resp.force_close()
    return resp


def make_rest_server(host: str, port: int, manager: ModelManager, metrics: Metrics, *,
                     max_request_bytes: int = 64 << 20, ssl_context=None,
                     metrics_path: Optional[str] = "/monitoring/prometheus/metrics",
                     limits: Optional[RestLimits] = None) -> RestServer:
    """A bound (not yet serving) REST server; call ``serve_forever`` in a thread."""
    limits = dataclasses.replace(limits or RestLimits(), max_request_bytes=max_request_bytes)
    return RestServer(host, port, RestApi(manager, limits.max_values), metrics, limits, ssl_context, metrics_path)
