"""Issue 16, server availability: slow/idle/oversized clients, TLS, chunked bodies, hostile JSON, NaN, batch sizes.

Each test reproduces a failure of the old REST front end (thread per connection, TLS handshake in
``accept``, ``json.loads`` on the whole body) against a server started in-process on tiny models.
"""
import http.client
import json
import math
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving.client import ServingClient
from serving.errors import ServingError
from serving.testing import start_server

from .conftest import install_version, query

IDLE_S = 3.0          # --rest_api_idle_timeout_seconds for these servers
BODY_TIMEOUT_MS = 1000  # --rest_api_timeout_in_ms


def write_float_model(base: str, version: int = 1) -> str:
    """``serving_default``: x [None, 2] float -> y = x * 2 (NaN in, NaN out); ``recommend``: user_id [None]
    string, k [None] int32 -> item_ids [batch(user_id), 3], scores [batch(k), 3] (a graph that does not
    notice mismatched batches, like ``recommend``'s k)."""
    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def double(self, x):
            return {"y": x * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                      tf.TensorSpec([None], tf.int32, name="k")])
        def recommend(self, user_id, k):
            ids = tf.strings.join([tf.repeat(user_id[:, None], 3, axis=1),
                                   tf.broadcast_to(tf.constant([["a", "b", "c"]]), [tf.shape(user_id)[0], 3])], "-")
            return {"item_ids": ids, "scores": tf.cast(k, tf.float32)[:, None] * tf.ones([1, 3])}

    m = M()
    path = f"{base}/{version}"
    tf.saved_model.save(m, path, signatures={"serving_default": m.double, "recommend": m.recommend})
    return path


@pytest.fixture(scope="module")
def srv(model_src, tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    install_version(model_src, str(root / "toy"), 1)
    write_float_model(str(root / "floaty"))
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n'
        for n in ("toy", "floaty")) + "}\n")
    s = start_server(model_config_file=str(config), max_request_bytes=1 << 20,
                     rest_api_idle_timeout_seconds=IDLE_S, rest_api_timeout_in_ms=BODY_TIMEOUT_MS,
                     rest_api_max_connections=300)
    yield s
    s.stop(0)


def post(url, path, body, timeout=10, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def predict_ok(url, timeout=5):
    status, raw = post(url, "/v1/models/toy:predict", {"instances": [{"user_id": "u", "timestamp": 1}]}, timeout)
    return status == 200 and json.loads(raw)["predictions"][0]["item_ids"][0] == "u-0"


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def closed_within(sock, seconds):
    """True when the server closes ``sock`` (recv returns b"" or the reply ends) within ``seconds``."""
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True, data
            data += chunk
    except (socket.timeout, TimeoutError):
        return False, data
    except ConnectionResetError:
        return True, data


# ---------------------------------------------------------------- connections and timeouts
def test_idle_slow_and_silent_connections_do_not_block_or_cost_threads(srv):
    threads_before = threading.active_count()
    idle = [connect(srv.rest_port) for _ in range(200)]                       # connect, say nothing
    slowloris = [connect(srv.rest_port) for _ in range(20)]
    for s in slowloris:                                                      # headers that never end
        s.sendall(b"POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\n")
    promised = connect(srv.rest_port)                                        # body that never arrives
    promised.sendall(b"POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"instances\": [")
    try:
        t0 = time.monotonic()
        for _ in range(5):  # valid requests keep being answered while 221 connections hang
            assert predict_ok(srv.rest_url)
        assert time.monotonic() - t0 < 5
        assert ServingClient(srv.grpc_address).predict("toy", query()).model_version == 1
        assert srv.metrics.value("rest_open_connections") >= 200                 # all still open meanwhile
        assert threading.active_count() - threads_before < 20  # the old server: one thread per connection
        closed, reply = closed_within(promised, BODY_TIMEOUT_MS / 1000 + 5)
        assert closed and reply.startswith(b"HTTP/1.1 408")                   # old server: held forever
        assert b"not received within" in reply
        assert closed_within(idle[0], IDLE_S + 5)[0]                          # idle ones are closed too
        assert closed_within(slowloris[0], IDLE_S + 5)[0]
        assert srv.metrics.value("rest_request_timeouts_total") >= 1
        assert predict_ok(srv.rest_url)
    finally:
        for s in idle + slowloris + [promised]:
            s.close()


def test_connection_limit_answers_503_and_recovers(model_src, tmp_path):
    install_version(model_src, str(tmp_path / "toy"), 1)
    with start_server(model_base_path=str(tmp_path / "toy"), model_name="toy", rest_api_max_connections=8) as s:
        held = [connect(s.rest_port) for _ in range(8)]
        time.sleep(0.2)
        extra = connect(s.rest_port)
        closed, reply = closed_within(extra, 5)
        assert closed and reply.startswith(b"HTTP/1.1 503") and b"too many open connections" in reply
        assert s.metrics.value("rest_rejected_connections_total") >= 1
        for h in held:
            h.close()
        deadline = time.monotonic() + 5
        while not predict_ok(s.rest_url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert predict_ok(s.rest_url)


def test_tls_handshake_is_per_connection_with_a_timeout(model_src, tmp_path):
    pytest.importorskip("cryptography")
    from .test_tls import _self_signed

    cert, key = _self_signed(tmp_path)
    install_version(model_src, str(tmp_path / "toy"), 1)
    with start_server(model_base_path=str(tmp_path / "toy"), model_name="toy", ssl_cert=cert, ssl_key=key) as s:
        silent = [connect(s.rest_port) for _ in range(3)]  # TCP only: never start the TLS handshake
        try:
            ctx = ssl.create_default_context(cafile=cert)
            t0 = time.monotonic()
            conn = http.client.HTTPSConnection("127.0.0.1", s.rest_port, context=ctx, timeout=5)
            conn.request("GET", "/v1/models/toy")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["model_version_status"][0]["state"] == "AVAILABLE"
            assert time.monotonic() - t0 < 3  # the old server handshook inside accept(): blocked until timeout
        finally:
            for c in silent:
                c.close()


# ---------------------------------------------------------------- bodies
def test_chunked_transfer_encoding(srv):
    body = json.dumps({"instances": [{"user_id": f"c{i}", "timestamp": i} for i in range(50)]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=10)
    conn.request("POST", "/v1/models/toy:predict", body=iter([body[:100], body[100:]]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    resp = conn.getresponse()
    out = json.loads(resp.read())
    assert resp.status == 200 and len(out["predictions"]) == 50 and out["predictions"][7]["item_ids"][0] == "c7-0"
    big = b'{"instances": [' + b'{"user_id": "x", "timestamp": 1},' * 40000 + b"]}"  # > 1 MiB, chunked
    conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=10)
    conn.request("POST", "/v1/models/toy:predict", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                 encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 429 and b"exceeds the limit" in resp.read()
    bad = connect(srv.rest_port)  # broken chunk framing: a clean 400, not a dropped connection
    bad.sendall(b"POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"zz\r\n{}\r\n0\r\n\r\n")
    closed, reply = closed_within(bad, 5)
    assert reply.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), reply[:200]
    assert predict_ok(srv.rest_url)


@pytest.mark.parametrize("target, body, fragment", [
    ("floaty:predict", b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nesting deeper than 64"),
    ("toy:predict", b'{"inputs": {"user_id": ["a"], "timestamp": [1]}, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "nesting deeper than 64"),
    ("toy:predict", b'{"signature_name": ' + b"[" * 5000 + b"]" * 5000 + b', "instances": [1]}',
     "'signature_name' must be a string"),
    ("toy:regress", b'{"examples": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nesting deeper than 64"),
])
def test_deeply_nested_json_is_400_not_500(srv, target, body, fragment):
    status, raw = post(srv.rest_url, f"/v1/models/{target}", body)  # old server: HTTP 500 RecursionError
    assert status == 400 and fragment in json.loads(raw)["error"], raw[:300]
    assert predict_ok(srv.rest_url)


def test_nan_and_infinity_policy_is_tf_servings_on_both_transports(srv):
    """Float inputs accept NaN/Infinity/-Infinity (rapidjson kParseNanAndInfFlag) and outputs write those
    tokens, as TF Serving does; gRPC carries the same values; integer inputs reject them."""
    status, raw = post(srv.rest_url, "/v1/models/floaty:predict",
                       b'{"instances": [[NaN, Infinity], [-Infinity, 1.5]]}')
    assert status == 200
    assert raw.replace(b" ", b"") == b'{"predictions":[[NaN,Infinity],[-Infinity,3.0]]}'
    out = ServingClient(srv.grpc_address).predict("floaty", {"x": np.array([[np.nan, np.inf], [-np.inf, 1.5]],
                                                                           np.float32)})["y"]
    assert math.isnan(out[0, 0]) and out[0, 1] == np.inf and out[1, 0] == -np.inf and out[1, 1] == 3.0
    rest = ServingClient(rest=srv.rest_url).predict("floaty", {"x": np.array([[np.nan, 1.0]], np.float32)})["y"]
    assert math.isnan(rest[0, 0]) and rest[0, 1] == 2.0
    status, raw = post(srv.rest_url, "/v1/models/toy:predict", b'{"inputs": {"user_id": ["a"], "timestamp": [NaN]}}')
    assert status == 400 and b"not of expected type: int64" in raw


def test_mismatched_batch_sizes_are_invalid_argument_before_the_model_runs(srv):
    body = {"signature_name": "recommend", "inputs": {"user_id": ["a", "b"], "k": [1, 2, 3]}}
    status, raw = post(srv.rest_url, "/v1/models/floaty:predict", body)
    assert status == 400 and b"more than 2 rows" in raw                     # old: 200 with [3, 3] scores
    status, raw = post(srv.rest_url, "/v1/models/floaty:predict",
                       {"signature_name": "recommend", "inputs": {"user_id": ["a", "b", "c"], "k": [1, 2]}})
    assert status == 400 and b"different batch sizes" in raw
    client = ServingClient(srv.grpc_address)
    with pytest.raises(ServingError) as e:
        client.predict("floaty", {"user_id": np.array(["a", "b"]), "k": np.array([1, 2, 3], np.int32)},
                       signature_name="recommend")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "different batch sizes" in e.value.message
    ok = client.predict("floaty", {"user_id": np.array(["a", "b"]), "k": np.array([1, 2], np.int32)},
                        signature_name="recommend")
    assert ok["item_ids"].shape == (2, 3) and ok["scores"].shape == (2, 3)


def test_bad_bodies_are_clean_one_line_errors(srv):
    cases = [
        (b"", 400, b"empty"),
        (b"\xff\xfe{}", 400, b"UTF-8"),
        (b'{"instances": [{"user_id": "a", "timestamp": 1}]} trailing', 400, b"extra data"),
        (b'{"inputs": {"user_id": ["a", "b"], "timestamp": [1, 99999999999999999999]}}', 400, b"out of range"),
        (b'{"instances": [{"user_id": "a", "timestamp": 1}, {"user_id": "b"}]}', 400, b"same keys"),
    ]
    for body, code, fragment in cases:
        status, raw = post(srv.rest_url, "/v1/models/toy:predict", body)
        assert status == code and fragment in raw, (body[:60], raw)
