"""Client for the local server *and* real TF Serving: same calls, same results, gRPC or REST.

Only the address changes between a laptop and the cluster:

    ServingClient("localhost:8500")                       # gRPC, local `recsys serve`
    ServingClient("tf-serving.recsys.svc:8500")           # gRPC, real TF Serving in Kubernetes
    ServingClient(rest="http://localhost:8501")           # REST, either server
    ServingClient("host:443", ssl_ca="ca.pem")            # TLS (ssl_ca=None + tls=True: system roots)

``recsys query --user U [--k 10] [--model retrieval|ranking|recommend]`` builds the raw
feature request from preprocessing/schema.py (user_id given, timestamp now, empty
history padded to HISTORY_LENGTH, other features their schema default), calls the
model and prints item ids and scores.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote, urlsplit

import tfenv  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving import codec
from serving.errors import UNKNOWN, ServingError

# HTTP status -> the status code a REST reply most likely carried (TF Serving's table, inverted).
_CODE_BY_HTTP = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
                 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
MAX_MESSAGE_BYTES = 256 << 20
METADATA_TTL_SECONDS = 5.0  # REST predict needs output names/dtypes; the latest version may change


class Prediction(dict):
    """Output name -> ndarray, plus the version that answered (gRPC only; REST doesn't say)."""

    model_version: Optional[int] = None
    signature_name: str = ""


def _signatures(sdm) -> Dict[str, dict]:
    """{signature: {"method_name", "inputs": {name: {"dtype", "shape"}}, "outputs": {...}}} from a SignatureDefMap."""
    def tensors(m):
        return {k: {"dtype": codec.dtype_name(v.dtype),
                    "shape": None if v.tensor_shape.unknown_rank else [d.size for d in v.tensor_shape.dim]}
                for k, v in m.items()}

    return {k: {"method_name": v.method_name, "inputs": tensors(v.inputs), "outputs": tensors(v.outputs)}
            for k, v in sdm.signature_def.items()}


class _Http:
    """Keep-alive HTTP connection per thread (urllib opens one per request, which dominates latency)."""

    def __init__(self, base_url: str, timeout: float, ssl_context=None):
        u = urlsplit(base_url)
        self.https, self.host, self.port = u.scheme == "https", u.hostname, u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.timeout, self.ssl_context = timeout, ssl_context
        self._local = threading.local()

    def _conn(self, fresh: bool = False):
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            if self.https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ssl_context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, payload: Optional[dict] = None):
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            conn = self._conn(fresh=attempt == 1)
            try:
                conn.request(method, self.prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                if attempt:
                    raise
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"error": data[:500].decode("utf-8", "replace")}
        if resp.status != 200:
            code_name = _CODE_BY_HTTP.get(resp.status, "UNKNOWN")
            message = parsed.get("error", "") if isinstance(parsed, dict) else str(parsed)
            raise ServingError(getattr(grpc.StatusCode, code_name, UNKNOWN), f"HTTP {resp.status}: {message}")
        return parsed


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def predict_request(model: str, inputs: Dict[str, Any], signature_name: str = "serving_default", version=None,
                    output_filter: Optional[Sequence[str]] = None):
    """The gRPC PredictRequest ``ServingClient.predict`` sends (also what benchmarks replay as raw bytes)."""
    req = predict_pb2.PredictRequest()
    ServingClient._spec(req.model_spec, model, version, signature_name)  # noqa: SLF001 (same module)
    for k, v in inputs.items():
        codec.ndarray_to_proto(np.asarray(v), req.inputs[k])
    req.output_filter.extend(output_filter or [])
    return req


class ServingClient:
    """predict / metadata / status against TF Serving's gRPC API (``address``) or REST API (``rest``)."""

    def __init__(self, address: Optional[str] = None, rest: Optional[str] = None, *, timeout: float = 10.0,
                 tls: bool = False, ssl_ca: Optional[str] = None, ssl_cert: Optional[str] = None,
                 ssl_key: Optional[str] = None):
        if bool(address) == bool(rest):
            raise ValueError("give exactly one of address (gRPC host:port) or rest (http[s]://host:port)")
        self.address, self.rest_url, self.timeout = address, rest, timeout
        self._metadata_cache: Dict[tuple, tuple] = {}
        if address:
            opts = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
            if tls or ssl_ca:
                creds = grpc.ssl_channel_credentials(_read(ssl_ca), _read(ssl_key), _read(ssl_cert))
                self._channel = grpc.secure_channel(address, creds, options=opts)
            else:
                self._channel = grpc.insecure_channel(address, options=opts)
            self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        else:
            context = None
            if rest.startswith("https"):
                context = ssl.create_default_context(cafile=ssl_ca)
                if ssl_cert:
                    context.load_cert_chain(ssl_cert, ssl_key)
            self._http = _Http(rest, timeout, context)

    @property
    def transport(self) -> str:
        return "grpc" if self.address else "rest"

    def close(self) -> None:
        if self.address:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ gRPC plumbing
    def _rpc(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code(), e.details() or "") from None

    @staticmethod
    def _spec(spec, model: str, version, signature_name: str = "") -> None:
        spec.name = model
        if isinstance(version, str) and not version.isdigit():
            spec.version_label = version
        elif version is not None:
            spec.version.value = int(version)
        if signature_name:
            spec.signature_name = signature_name

    @staticmethod
    def _rest_path(model: str, version) -> str:
        path = f"/v1/models/{quote(model)}"
        if isinstance(version, str) and not version.isdigit():
            return path + f"/labels/{quote(version)}"
        return path + (f"/versions/{int(version)}" if version is not None else "")

    # ------------------------------------------------------------ API
    def predict(self, model: str, inputs: Dict[str, Any], signature_name: str = "serving_default",
                version=None, output_filter: Optional[Sequence[str]] = None) -> Prediction:
        """Runs a signature; ``inputs`` are arrays (strings as str/bytes), batch first. ``version``: int or label."""
        out = Prediction()
        out.signature_name = signature_name
        if self.address:
            req = predict_request(model, inputs, signature_name, version, output_filter)
            resp = self._rpc(self._predict.Predict, req)
            out.update({k: codec.proto_to_ndarray(v) for k, v in resp.outputs.items()})
            out.model_version = resp.model_spec.version.value if resp.model_spec.HasField("version") else None
            return out
        body = {"signature_name": signature_name, "inputs": codec.inputs_to_json(inputs)}
        resp = self._http.request("POST", self._rest_path(model, version) + ":predict", body)
        sig = self.metadata(model, version).get(signature_name or "serving_default", {"outputs": {}})
        outputs = resp.get("outputs")
        if not isinstance(outputs, dict) or not set(outputs) <= set(sig["outputs"]):
            names = list(sig["outputs"])
            if len(names) != 1:
                raise ServingError(UNKNOWN, f"cannot name the bare REST output; signature outputs: {names}")
            outputs = {names[0]: outputs}
        for k, v in outputs.items():
            if output_filter and k not in output_filter:
                continue
            arr = codec.ndarray_from_client_json(v)
            dtype = sig["outputs"].get(k, {}).get("dtype")
            if dtype and dtype != "string" and arr.dtype != object:
                arr = arr.astype(dtype)
            out[k] = arr
        return out

    def metadata(self, model: str, version=None) -> Dict[str, dict]:
        """Signatures of a model: {name: {"method_name", "inputs": {alias: {"dtype", "shape"}}, "outputs"}}."""
        key = (model, version)
        hit = self._metadata_cache.get(key)
        if hit is not None and (version is not None or time.monotonic() - hit[0] < METADATA_TTL_SECONDS):
            return hit[1]
        sdm = get_model_metadata_pb2.SignatureDefMap()
        if self.address:
            req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            self._spec(req.model_spec, model, version)
            resp = self._rpc(self._predict.GetModelMetadata, req)
            resp.metadata["signature_def"].Unpack(sdm)
        else:
            resp = self._http.request("GET", self._rest_path(model, version) + "/metadata")
            json_format.ParseDict(resp["metadata"]["signature_def"], sdm, ignore_unknown_fields=True)
        result = _signatures(sdm)
        self._metadata_cache[key] = (time.monotonic(), result)  # "latest" can change: its entry expires
        return result

    def status(self, model: str, version=None) -> List[dict]:
        """[{version, state, error_code, error_message}] as GetModelStatus reports them."""
        if self.address:
            req = get_model_status_pb2.GetModelStatusRequest()
            self._spec(req.model_spec, model, version)
            resp = self._rpc(self._models.GetModelStatus, req)
            return [{"version": s.version, "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                     "error_code": grpc_code_name(s.status.error_code), "error_message": s.status.error_message}
                    for s in resp.model_version_status]
        resp = self._http.request("GET", self._rest_path(model, version))
        return [{"version": int(s["version"]), "state": s["state"],
                 "error_code": s.get("status", {}).get("error_code", "OK"),
                 "error_message": s.get("status", {}).get("error_message", "")}
                for s in resp.get("model_version_status", [])]


def grpc_code_name(number: int) -> str:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.name
    return str(number)


# ---------------------------------------------------------------- `recsys query`
def build_query_inputs(signature: dict, user: str, *, k: Optional[int] = None, timestamp: Optional[int] = None,
                       history: Sequence[str] = (), items: Sequence[str] = (),
                       features: Optional[Dict[str, str]] = None, query_once: bool = False) -> Dict[str, np.ndarray]:
    """Raw-feature request for one user from the schema defaults, shaped as the signature wants.

    ``history`` is oldest first (left-padded with "" to the list width, as in the schema).
    With ``items`` and a rank-1 ``item_id`` input (a ranking signature): one row per candidate;
    ``query_once``: the query's features (user, context, history) as one row for all of them, which
    rankers exported by this project broadcast (``export_recommend.broadcast_query``).
    """
    from preprocessing import schema

    features = dict(features or {})
    now = int(time.time()) if timestamp is None else int(timestamp)
    item_spec = signature["inputs"].get("item_id", {}).get("shape") or []
    rows = len(items) if items and len(item_spec) == 1 else 1
    out: Dict[str, np.ndarray] = {}
    for name, spec in signature["inputs"].items():
        dtype, shape = spec["dtype"], spec["shape"] if spec["shape"] is not None else [-1]
        col = schema.COLUMNS.get(name)
        rows_here = 1 if query_once and name in schema.QUERY_FEATURES else rows
        width = None
        if len(shape) >= 2:
            width = shape[1] if shape[1] > 0 else (col.length if col is not None and col.length else len(items))
        pad = col.pad_value() if col is not None else ("" if dtype == "string" else 0)
        if name in features:
            value = features[name].split(",") if width else features[name]
        elif name == "k":
            if k is None:
                continue
            value = k
        elif name == "user_id":
            value = user
        elif name == "timestamp":
            value = now
        elif name == "item_id" and items:
            value = list(items)
        elif name == "history_item_ids":
            value = list(history)
        elif name == "history_ts":
            value = [now - 60 * (len(history) - i) for i in range(len(history))]
        elif col is not None:
            value = col.default if col.default is not None else pad
            value = [] if width and not isinstance(value, list) else value
        else:
            raise ValueError(f"don't know how to fill signature input {name!r}; pass --feature {name}=VALUE")
        if not shape:                       # scalar option (e.g. k)
            out[name] = _to_array(value, dtype)
        elif width:                          # fixed-length list feature, left-padded, same for every row
            value = list(value)[-width:]
            out[name] = _to_array([[pad] * (width - len(value)) + value] * rows_here, dtype)
        elif name == "item_id" and items:    # one candidate per row
            out[name] = _to_array(list(items), dtype)
        else:
            out[name] = _to_array([value] * rows_here, dtype)
    return out


def query_command(model: str, request: Dict[str, np.ndarray]) -> Optional[str]:
    """The `recsys query` line that sends this one-row raw request to a served ``model`` (``build_query_inputs``'s
    inverse): without it the client sends no history, the time now and made-up history times, so a served
    model's answer would differ from the one a caller saw in-process. None when a value cannot be written as a
    flag (a comma inside a list value)."""
    import shlex

    from preprocessing import schema

    def text(v) -> str:
        v = v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else v
        return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)

    args = ["recsys", "query", "--model", model]
    for name, value in request.items():
        row = np.asarray(value)[0]
        col = schema.COLUMNS.get(name)
        if name == "user_id":
            args += ["--user", text(row)]
        elif name == "timestamp":
            args += ["--timestamp", str(int(row))]
        elif np.ndim(row) == 1:  # a list feature, left-padded as the client pads it
            values = [text(v) for v in row]
            if any("," in v for v in values):
                return None
            if name == "history_item_ids":
                args += ["--history", ",".join(v for v in values if v)]
            else:
                args += ["--feature", f"{name}={','.join(values)}"]
        elif col is None or text(row) != text(col.default):
            args += ["--feature", f"{name}={text(row)}"]
    return " ".join(shlex.quote(a) for a in args)


def _to_array(value: Any, dtype: str) -> np.ndarray:
    if dtype == "string":
        return codec.to_string_array(np.asarray(value, dtype=object))
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":  # from --feature strings
        arr = arr.astype(np.float64)
    return arr.astype(np.dtype(dtype))


def format_table(result: Dict[str, np.ndarray], k: int, items: Sequence[str] = ()) -> List[List[str]]:
    """Rows of (rank, item, score, other per-item outputs) from a retrieval/ranking/recommend result."""
    def flat(a):
        return a.reshape(-1) if a.ndim <= 1 or a.shape[0] == 1 or a.shape[-1] == 1 else a[0]

    strings = {n: flat(a) for n, a in result.items() if a.dtype == object}
    numbers = {n: flat(a) for n, a in result.items() if a.dtype != object}
    ids_name = "item_ids" if "item_ids" in strings else next(iter(strings), None)
    # the ranker's "score" (not "rating" or a logit, whichever the response map lists first)
    score_name = next((n for n in ("scores", "score") if n in numbers), next(iter(numbers), None))
    if ids_name is not None:
        ids = [codec._as_bytes(x).decode("utf-8", "replace") for x in strings[ids_name]]
    else:
        ids = list(items)
    scores = numbers.get(score_name, np.zeros(len(ids)))
    n = min(len(ids), len(scores)) if len(scores) else len(ids)
    order = list(range(n))
    if ids_name is None and score_name is not None:  # ranking: scores per candidate, sort them
        order.sort(key=lambda i: -float(scores[i]))
    extras = [m for m in list(strings) + list(numbers) if m not in (ids_name, score_name) and
              len((strings.get(m) if m in strings else numbers.get(m))) == n]
    header = ["rank", "item_id", score_name or "score"] + extras
    rows = [header]
    for r, i in enumerate(order[:k], start=1):
        row = [str(r), ids[i], f"{float(scores[i]):.4f}" if len(scores) else ""]
        for m in extras:
            v = (strings.get(m) if m in strings else numbers.get(m))[i]
            row.append(codec._as_bytes(v).decode("utf-8", "replace") if m in strings else _number(v))
        rows.append(row)
    return rows


def _number(v) -> str:
    """A table cell: integers as they are, floats to 4 decimals like the score column (--json has full precision)."""
    return str(int(v)) if np.issubdtype(np.asarray(v).dtype, np.integer) else f"{float(v):.4f}"


def _print_table(rows: List[List[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recsys query", description="Ask a served model for one user's recommendations (local server or "
                                         "real TF Serving: only --address/--rest changes).",
        epilog="Against the cluster: --address tf-serving.<namespace>.svc:8500 (or a port-forward to "
               "localhost:8500), or --rest http://<host>:8501.")
    p.add_argument("--user", required=True, help="user_id to query for")
    p.add_argument("--k", type=int, default=10, help="rows to show (and the model's k input if it has one)")
    p.add_argument("--model", default="retrieval", help="served model name: retrieval | ranking | recommend | ...")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--version", default=None, help="model version number or label (default: latest)")
    p.add_argument("--address", default=os.environ.get("RECSYS_SERVING_ADDRESS", "localhost:8500"),
                   help="gRPC host:port (default localhost:8500 or $RECSYS_SERVING_ADDRESS)")
    p.add_argument("--rest", default=None, help="use REST at this base URL instead, e.g. http://localhost:8501")
    p.add_argument("--items", default="", help="ranking: comma-separated candidate item ids "
                                              "(default: the top --num_candidates from --candidates_model)")
    p.add_argument("--candidates_model", default="retrieval", help="ranking without --items: where candidates come from")
    p.add_argument("--num_candidates", type=int, default=100, help="ranking without --items: how many to rank")
    p.add_argument("--query_once", action="store_true",
                   help="ranking: send the user, context and history features once instead of once per candidate "
                        "(rankers exported by this project broadcast them; a 50-candidate request 6x smaller)")
    p.add_argument("--history", default="", help="comma-separated recent item ids, oldest first")
    p.add_argument("--timestamp", type=int, default=None, help="event time (unix s); default now")
    p.add_argument("--feature", action="append", default=[], metavar="NAME=VALUE",
                   help="override a raw feature (lists comma-separated); repeatable")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--tls", action="store_true", help="gRPC over TLS with system roots (or --ssl_ca)")
    p.add_argument("--ssl_ca", default=None, help="CA PEM to trust (TLS)")
    p.add_argument("--json", action="store_true", help="print the raw outputs as JSON instead of a table")
    return p


def _signature_of(client: ServingClient, model: str, signature: str, version) -> dict:
    sigs = client.metadata(model, version)
    if signature not in sigs:
        raise ValueError(f"model {model} has no signature {signature!r}; it has {sorted(sigs)}")
    return sigs[signature]


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    features = dict(f.split("=", 1) for f in args.feature if "=" in f)
    history = [h for h in args.history.split(",") if h]
    client = ServingClient(None if args.rest else args.address, args.rest, timeout=args.timeout,
                           tls=args.tls, ssl_ca=args.ssl_ca)
    where = f"rest {args.rest}" if args.rest else f"grpc {args.address}"
    try:
        sig = _signature_of(client, args.model, args.signature, args.version)
        items = [i for i in args.items.split(",") if i]
        if not items and "item_id" in sig["inputs"]:  # a ranker: get candidates from retrieval first
            cand_sig = _signature_of(client, args.candidates_model, "serving_default", None)
            cand = client.predict(args.candidates_model, build_query_inputs(
                cand_sig, args.user, k=args.num_candidates, timestamp=args.timestamp, history=history,
                features=features))
            items = [r[1] for r in format_table(cand, args.num_candidates)[1:]]
        inputs = build_query_inputs(sig, args.user, k=args.k, timestamp=args.timestamp, history=history,
                                    items=items, features=features, query_once=args.query_once)
        t0 = time.perf_counter()
        result = client.predict(args.model, inputs, args.signature, args.version)
        ms = (time.perf_counter() - t0) * 1e3
    except (ServingError, ValueError, OSError) as e:
        print(f"error ({where}): {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.json:
        print(json.dumps({k: codec.ndarray_to_json(v, k) for k, v in result.items()}, indent=1))
        return 0
    version = f" version={result.model_version}" if result.model_version is not None else ""
    print(f"model={args.model}{version} user={args.user} ({where}, {ms:.1f} ms)")
    _print_table(format_table(result, args.k, items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
