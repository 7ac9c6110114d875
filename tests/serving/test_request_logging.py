"""Request logging configured as TF Serving configures it (logging_config in the model config file).

Records must be plain ``tensorflow.serving.PredictionLog`` TFRecords (read here with
tf.data + the tensorflow-serving-api proto, not only with our reader), honour the
sampling rate, carry the request id, and never block or fail serving.
"""
import glob
import json
import os
import threading
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import classification_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2
from tensorflow_serving.apis import prediction_log_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from contracts import prediction_log
from serving import codec
from serving.errors import ServingError
from serving.metrics import Metrics
from serving.request_logging import RequestLogger, RequestLogOptions
from serving.testing import start_server
from tests.serving.conftest import install_version, query, wait_for


def model_entry(name: str, base: str, prefix: str, rate, kind: str = "tfrecord") -> str:
    return (f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" logging_config {{ '
            f'log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }} '
            f'sampling_config {{ sampling_rate: {rate} }} }} }}')


def write_config(path: str, *entries: str) -> str:
    with open(path, "w") as f:
        f.write("model_config_list { " + " ".join(entries) + " }")
    return path


@pytest.fixture(scope="module")
def base(model_src, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("logged") / "toy")
    install_version(model_src, base, 1)
    return base


def raw_records(prefix: str):
    files = sorted(glob.glob(prefix + "-*.tfrecord"))
    return [r.numpy() for f in files for r in tf.data.TFRecordDataset(f)]


def grpc_predict(address: str, model: str, users, metadata=()):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    for k, v in query(users).items():
        codec.ndarray_to_proto(v, req.inputs[k])
    with grpc.insecure_channel(address) as ch:
        resp, call = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict.with_call(
            req, metadata=metadata, timeout=10)
    return req, resp, dict(call.initial_metadata())


def rest_predict(url: str, model: str, users, headers=None):
    body = json.dumps({"inputs": codec.inputs_to_json(query(users))}).encode()
    r = urllib.request.Request(f"{url}/v1/models/{model}:predict", body, headers=headers or {}, method="POST")
    with urllib.request.urlopen(r, timeout=10) as resp:
        return json.loads(resp.read()), resp.headers.get("X-Request-Id")


def test_every_predict_is_one_prediction_log_over_grpc_and_rest(base, tmp_path):
    prefix = str(tmp_path / "logs" / "toy")
    cfg = write_config(str(tmp_path / "models.config"), model_entry("toy", base, prefix, 1.0))
    with start_server(model_config_file=cfg) as srv:
        req, resp, md = grpc_predict(srv.grpc_address, "toy", ["u1", "u2"], [("x-request-id", "req-grpc-1")])
        assert md["x-request-id"] == "req-grpc-1"  # the client's id comes back
        rest_out, rest_id = rest_predict(srv.rest_url, "toy", ["u3"])
        assert rest_id and len(rest_id) == 32  # none sent: the server made one and returned it
        with pytest.raises(urllib.request.HTTPError) as bad:
            rest_predict(srv.rest_url, "toy", ["u3"], {"X-Request-Id": "has spaces"})
        assert bad.value.code == 400 and "x-request-id" in bad.value.read().decode()
        creq = classification_pb2.ClassificationRequest()
        creq.model_spec.name, creq.model_spec.signature_name = "toy", "classify"
        creq.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
        with grpc.insecure_channel(srv.grpc_address) as ch:
            cresp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Classify(creq, timeout=10)
        for verb, signature in (("classify", "classify"), ("regress", "regress")):
            r = urllib.request.Request(f"{srv.rest_url}/v1/models/toy:{verb}", json.dumps(
                {"signature_name": signature, "examples": [{"x": 1.0}]}).encode(), method="POST")
            with urllib.request.urlopen(r, timeout=10) as reply:
                assert len(reply.headers["X-Request-Id"]) == 32
        assert wait_for(lambda: len(raw_records(prefix)) == 5)
    records = raw_records(prefix)
    assert len(records) == 5
    grpc_classify, rest_classify, rest_regress = [prediction_log_pb2.PredictionLog.FromString(r)
                                                  for r in records[2:]]
    del records[2:]
    assert grpc_classify.classify_log.request == creq and grpc_classify.classify_log.response == cresp
    assert grpc_classify.log_metadata.model_spec.signature_name == "classify"
    assert rest_classify.classify_log.request == creq and rest_classify.classify_log.response == cresp
    assert rest_regress.regress_log.request.input == creq.input
    assert [r.value for r in rest_regress.regress_log.response.result.regressions] == [3.0]  # 2x + 1

    # A plain PredictionLog reader sees TF Serving's record...
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    for plog in logs:
        assert plog.WhichOneof("log_type") == "predict_log"
        md = plog.log_metadata
        assert (md.model_spec.name, md.model_spec.version.value) == ("toy", 1)
        assert md.model_spec.signature_name == "serving_default"
        assert md.sampling_config.sampling_rate == 1.0 and list(md.saved_model_tags) == ["serve"]
        assert md.timestamp_secs > 1_600_000_000
    assert logs[0].predict_log.request == req and logs[0].predict_log.response == resp
    rest_req = logs[1].predict_log.request
    assert list(codec.proto_to_ndarray(rest_req.inputs["user_id"])) == [b"u3"]
    assert list(codec.proto_to_ndarray(logs[1].predict_log.response.outputs["item_ids"])[0]) == \
        [x.encode() for x in rest_out["outputs"]["item_ids"][0]]
    # ... and the request id survives a parse / re-serialize by such a reader (unknown fields are kept)
    assert prediction_log.SIDECAR.FromString(logs[0].SerializeToString()).log_metadata.request_id == "req-grpc-1"

    # The join's reader: request id, version, user, items in returned order with rank and score.
    served = list(prediction_log.read_served_lists(prefix))
    assert [(s.request_id, s.example, s.user_id) for s in served] == \
        [("req-grpc-1", 0, "u1"), ("req-grpc-1", 1, "u2"), (rest_id, 0, "u3")]
    items = codec.proto_to_ndarray(resp.outputs["item_ids"])
    scores = codec.proto_to_ndarray(resp.outputs["scores"])
    assert [(i.rank, i.item_id, i.score) for i in served[1].items] == \
        [(j + 1, items[1, j].decode(), pytest.approx(float(scores[1, j]))) for j in range(items.shape[1])]
    rows = list(prediction_log.served_item_rows(prefix))
    assert len(rows) == 3 * items.shape[1] and rows[0]["version"] == 1 and rows[0]["rank"] == 1


def test_sampling_rate_zero_logs_nothing_and_half_logs_about_half(base, tmp_path):
    zero, half = str(tmp_path / "zero" / "log"), str(tmp_path / "half" / "log")
    cfg = write_config(str(tmp_path / "models.config"), model_entry("zero", base, zero, 0.0),
                       model_entry("half", base, half, 0.5))
    with start_server(model_config_file=cfg, rest=False) as srv:
        stub_ids = set()
        with grpc.insecure_channel(srv.grpc_address) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for model, n in (("zero", 50), ("half", 200)):
                req = predict_pb2.PredictRequest()
                req.model_spec.name = model
                for k, v in query(["u1"]).items():
                    codec.ndarray_to_proto(v, req.inputs[k])
                for _ in range(n):
                    _, call = stub.Predict.with_call(req, timeout=10)
                    stub_ids.add(dict(call.initial_metadata())["x-request-id"])
        assert len(stub_ids) == 250  # every response has its own id, logged or not
        logger = srv.manager.request_logger
        assert wait_for(lambda: len(raw_records(half)) == logger.written("half"))
    assert raw_records(zero) == [] and logger.written("zero") == 0
    logged = list(prediction_log.read_requests(half))
    # Binomial(200, 0.5): mean 100, sd 7.1; 60..140 is +-5.6 sd.
    assert 60 <= len(logged) <= 140
    assert {r.request_id for r in logged} <= stub_ids and len({r.request_id for r in logged}) == len(logged)
    assert all(r.log.log_metadata.sampling_config.sampling_rate == 0.5 for r in logged)


def test_bad_logging_config_is_refused_and_the_server_keeps_serving_and_logging(base, tmp_path):
    prefix = str(tmp_path / "logs" / "toy")
    good = write_config(str(tmp_path / "good.config"), model_entry("toy", base, prefix, 1.0))
    bad_rate = write_config(str(tmp_path / "bad.config"), model_entry("toy", base, prefix, 1.5))
    with pytest.raises(ServingError, match=r"model toy: logging_config.sampling_config.sampling_rate must be in "
                                           r"\[0, 1\], got 1.5"):
        start_server(model_config_file=bad_rate)
    with start_server(model_config_file=good, rest=False) as srv:
        with grpc.insecure_channel(srv.grpc_address) as ch:
            models = model_service_pb2_grpc.ModelServiceStub(ch)
            for entry, message in ((model_entry("toy", base, prefix, -0.1), "sampling_rate must be in [0, 1]"),
                                   (model_entry("toy", base, prefix, 1.0, kind="kafka"),
                                    "type 'kafka' is not supported; use one of ['tfrecord']"),
                                   (model_entry("toy", base, "", 1.0), "filename_prefix is required")):
                req = model_management_pb2.ReloadConfigRequest()
                text_format.Parse("model_config_list { " + entry + " }", req.config)
                with pytest.raises(grpc.RpcError) as e:
                    models.HandleReloadConfigRequest(req, timeout=10)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details()
        _, resp, md = grpc_predict(srv.grpc_address, "toy", ["u1"], [("x-request-id", "after-refusal")])
        assert resp.model_spec.version.value == 1
        assert wait_for(lambda: [r.request_id for r in prediction_log.read_requests(prefix)] == ["after-refusal"])
        with pytest.raises(grpc.RpcError) as e:
            grpc_predict(srv.grpc_address, "toy", ["u1"], [("x-request-id", "x" * 200)])
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # a valid reload takes effect at once: rate 0 logs nothing more
        srv.manager.reload_config(text_format.Parse("model_config_list { " + model_entry("toy", base, prefix, 0.0)
                                                    + " }", model_server_config_pb2.ModelServerConfig()))
        grpc_predict(srv.grpc_address, "toy", ["u1"], [("x-request-id", "after-reload")])
    assert [r.request_id for r in prediction_log.read_requests(prefix)] == ["after-refusal"]


def _config(prefix: str, rate: float = 1.0) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse("model_config_list { " + model_entry("m", "/unused", prefix, rate) + " }",
                             model_server_config_pb2.ModelServerConfig())


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    prefix = str(tmp_path / "q" / "log")
    metrics = Metrics()
    logger = RequestLogger(options=RequestLogOptions(queue_size=2), metrics=metrics)
    logger.update(_config(prefix))
    release, started = threading.Event(), threading.Event()

    def stuck(plog):  # a disk that stalls: the writer thread hangs in the first record
        started.set()
        release.wait(20)
        plog.predict_log.request.model_spec.name = "m"

    def fill(plog):
        plog.predict_log.request.model_spec.name = "m"

    logger.log("m", 1, "", "first", stuck)
    assert started.wait(10)
    results = []
    caller = threading.Thread(target=lambda: results.extend(logger.log("m", 1, "", f"r{i}", fill) for i in range(50)))
    caller.start()
    caller.join(10)
    assert not caller.is_alive() and len(results) == 50  # 50 calls returned while the writer was stuck
    assert logger.dropped("m") == 48  # the queue holds 2
    assert metrics.value("request_log_dropped_total", {"model_name": "m"}) == 48
    release.set()
    logger.close()
    assert [r.request_id for r in prediction_log.read_requests(prefix)] == ["first", "r0", "r1"]
    assert metrics.value("request_log_count_total", {"model_name": "m", "status_code": "OK"}) == 3


def test_files_rotate_by_size_and_a_cut_last_record_loses_only_that_record(tmp_path):
    prefix = str(tmp_path / "rot") + "/"  # a directory: files are named prediction_log-...
    logger = RequestLogger(options=RequestLogOptions(max_file_bytes=1, max_batch=1))
    logger.update(_config(prefix))
    out = {"item_ids": np.array([["a", "b"]], dtype=object), "scores": np.array([[0.5, 0.25]], np.float32)}

    def fill(plog):
        for k, v in out.items():
            codec.ndarray_to_response_proto(v, plog.predict_log.response.outputs[k])

    for i in range(3):
        logger.log("m", 7, "serving_default", f"id{i}", fill)
    logger.close()
    files = prediction_log.log_files(prefix)
    assert len(files) == 3 and all(os.path.basename(f).startswith("prediction_log-") for f in files)
    assert [(s.request_id, s.version, [i.item_id for i in s.items]) for s in prediction_log.read_served_lists(prefix)] \
        == [(f"id{i}", 7, ["a", "b"]) for i in range(3)]
    with open(files[-1], "r+b") as f:  # a crash mid-write
        f.truncate(os.path.getsize(files[-1]) - 3)
    assert [r.request_id for r in prediction_log.read_requests(prefix)] == ["id0", "id1"]


def test_an_idle_file_is_closed_once_it_is_old_and_the_next_record_starts_a_new_one(tmp_path):
    prefix = str(tmp_path / "age" / "log")
    logger = RequestLogger(options=RequestLogOptions(max_file_seconds=0.2))
    logger.update(_config(prefix))
    logger.log("m", 1, "", "early", lambda plog: None)
    assert wait_for(lambda: len(prediction_log.log_files(prefix)) == 1 and logger.written("m") == 1)
    first = prediction_log.log_files(prefix)[0]
    assert wait_for(lambda: logger._sinks[prediction_log.file_base(prefix)]._writer is None, timeout=5)
    assert [r.request_id for r in prediction_log.read_requests(first)] == ["early"]  # closed, whole, readable
    logger.log("m", 1, "", "late", lambda plog: None)
    logger.close()
    assert len(prediction_log.log_files(prefix)) == 2
    assert [r.request_id for r in prediction_log.read_requests(prefix)] == ["early", "late"]
