"""REST API: row and columnar predict, status/metadata JSON, error codes, metrics and health."""
import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from .conftest import MAX_REQUEST_BYTES, query


def call(server, path, body=None, method=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(server.rest_url + path, data=data, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if r.headers.get_content_type() == "application/json" else raw)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_row_format_round_trip(server):
    status, out = call(server, "/v1/models/toy:predict",
                       {"instances": [{"user_id": "u1", "timestamp": 1}, {"user_id": "u2", "timestamp": 2}]})
    assert status == 200
    preds = out["predictions"]
    assert len(preds) == 2 and preds[1]["item_ids"][0] == "u2-0"
    np.testing.assert_allclose(preds[0]["scores"], [1.0, 0.9, 0.8, 0.7, 0.6], rtol=1e-6)


def test_columnar_round_trip_and_version_path(server):
    status, out = call(server, "/v1/models/toy/versions/1:predict",
                       {"inputs": {"user_id": ["u1", {"b64": base64.b64encode(b"u2").decode()}], "timestamp": [1, 2]}})
    assert status == 200
    assert out["outputs"]["item_ids"][1] == ["u2-0", "u2-1", "u2-2", "u2-3", "u2-4"]
    assert np.asarray(out["outputs"]["scores"]).shape == (2, 5)


def test_single_output_signature_is_bare(server):
    body = {"signature_name": "rank", "instances": [{"user_id": "ab", "item_id": "xyz"}]}
    status, out = call(server, "/v1/models/toy:predict", body)
    assert status == 200 and out["predictions"] == [pytest.approx(1.05)]
    status, out = call(server, "/v1/models/toy:predict", {"signature_name": "rank",
                                                          "inputs": {"user_id": ["ab"], "item_id": ["xyz"]}})
    assert out["outputs"] == [pytest.approx(1.05)]


def test_regress_and_classify(server):
    status, out = call(server, "/v1/models/toy:regress", {"signature_name": "regress", "examples": [{"x": 1.5}]})
    assert status == 200 and out["results"] == [pytest.approx(4.0)]
    status, out = call(server, "/v1/models/toy:classify", {"signature_name": "classify", "examples": [{"x": 0.0}]})
    assert status == 200 and out["results"][0][1] == ["pos", pytest.approx(0.5)]


def test_status_and_metadata_json(server):
    status, out = call(server, "/v1/models/toy")
    assert status == 200
    assert out == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                             "status": {"error_code": "OK", "error_message": ""}}]}
    assert call(server, "/v1/models/toy/versions/1")[0] == 200
    status, out = call(server, "/v1/models/toy/metadata")
    assert status == 200 and out["model_spec"]["version"] == "1"
    sigs = out["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "rank", "regress", "classify"} <= set(sigs)
    assert sigs["serving_default"]["inputs"]["user_id"]["dtype"] == "DT_STRING"


@pytest.mark.parametrize("path, body, code", [
    ("/v1/models/nope:predict", {"instances": [{"user_id": "a", "timestamp": 1}]}, 404),
    ("/v1/models/toy/versions/9:predict", {"instances": [{"user_id": "a", "timestamp": 1}]}, 404),
    ("/v1/models/nope", None, 404),
    ("/v1/models/toy:predict", {"instances": [{"user_id": "a"}]}, 400),                    # missing input
    ("/v1/models/toy:predict", {"inputs": {"user_id": ["a"], "timestamp": ["x"]}}, 400),  # wrong dtype
    ("/v1/models/toy:predict", {"inputs": {"user_id": [["a"]], "timestamp": [1]}}, 400),  # wrong shape
    ("/v1/models/toy:predict", {"inputs": {"user_id": [["a"], []], "timestamp": [1]}}, 400),  # ragged
    ("/v1/models/toy:predict", {"nothing": 1}, 400),
    ("/v1/models/toy:predict", b"{not json", 400),
    ("/v1/models/toy:explode", {"instances": []}, 400),
])
def test_rest_errors(server, path, body, code):
    status, out = call(server, path, body, method="POST" if body is not None else "GET")
    assert status == code and "error" in out


def test_rest_oversized_request(server):
    body = {"inputs": {"user_id": ["x" * (MAX_REQUEST_BYTES + 10)], "timestamp": [1]}}
    status, out = call(server, "/v1/models/toy:predict", body)
    assert status == 429 and "exceeds" in out["error"]


def test_rest_client_matches_grpc_client(grpc_client, rest_client):
    a, b = grpc_client.predict("toy", query()), rest_client.predict("toy", query())
    assert set(a) == set(b)
    np.testing.assert_array_equal(a["item_ids"], b["item_ids"])
    np.testing.assert_allclose(a["scores"], b["scores"])
    assert b["scores"].dtype == np.float32
    assert rest_client.metadata("toy") == grpc_client.metadata("toy")
    assert rest_client.status("toy") == grpc_client.status("toy")


def test_metrics_endpoint_counts_requests_and_errors(server, grpc_client):
    grpc_client.predict("toy", query())
    with pytest.raises(Exception):
        grpc_client.predict("toy", {"user_id": np.array(["a"])})
    status, text = call(server, "/monitoring/prometheus/metrics")
    text = text.decode()
    assert status == 200
    assert ':tensorflow:serving:request_count_total{API="Predict",entrypoint="GRPC",model_name="toy",status="OK"}' \
        in text
    assert 'request_errors_total{API="Predict",code="INVALID_ARGUMENT",entrypoint="GRPC",model_name="toy"}' in text
    assert ":tensorflow:serving:request_latency_seconds_bucket" in text


def test_health_endpoints(server):
    assert call(server, "/healthz") == (200, {"status": "ok"})
    assert call(server, "/readyz") == (200, {"ready": True, "models": {"toy": [1]}})
