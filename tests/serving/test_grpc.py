"""gRPC PredictionService / ModelService: round trips, metadata, status, and every error code."""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from serving.errors import ServingError

from .conftest import MAX_REQUEST_BYTES, query


def _stub(server):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_address))


def test_predict_round_trip(grpc_client):
    out = grpc_client.predict("toy", query())
    assert out.model_version == 1 and out.signature_name == "serving_default"
    assert out["item_ids"].shape == (2, 5) and out["scores"].dtype == np.float32
    assert out["item_ids"][1, 0] == b"u2-0"
    np.testing.assert_allclose(out["scores"][0], [1.0, 0.9, 0.8, 0.7, 0.6], rtol=1e-6)


def test_raw_proto_request_like_any_tf_serving_client(server):
    """Built with tf.make_tensor_proto as TF Serving's own examples do (typed fields, not tensor_content)."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "toy"
    req.model_spec.version.value = 1
    req.inputs["user_id"].CopyFrom(tf.make_tensor_proto(["x"]))
    req.inputs["timestamp"].CopyFrom(tf.make_tensor_proto([5], dtype=tf.int64))
    req.output_filter.append("scores")
    resp = _stub(server).Predict(req, timeout=10)
    assert list(resp.outputs) == ["scores"]
    assert tf.make_ndarray(resp.outputs["scores"]).shape == (1, 5)
    assert resp.model_spec.version.value == 1 and resp.model_spec.signature_name == "serving_default"


def test_second_signature_and_output_filter(grpc_client):
    out = grpc_client.predict("toy", {"user_id": np.array(["ab"]), "item_id": np.array(["xyz"])}, "rank")
    np.testing.assert_allclose(out["scores"], [1.05], rtol=1e-6)
    only = grpc_client.predict("toy", query(), output_filter=["item_ids"])
    assert set(only) == {"item_ids"}


def test_metadata_lists_signatures(server, grpc_client):
    sigs = grpc_client.metadata("toy")
    assert {"serving_default", "rank", "regress", "classify"} <= set(sigs)
    assert sigs["serving_default"]["inputs"] == {"user_id": {"dtype": "string", "shape": [-1]},
                                                 "timestamp": {"dtype": "int64", "shape": [-1]}}
    assert sigs["serving_default"]["outputs"]["scores"] == {"dtype": "float32", "shape": [-1, 5]}
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "toy"
    resp = _stub(server).GetModelMetadata(req, timeout=10)
    assert resp.model_spec.version.value == 1
    sdm = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sdm)
    assert sdm.signature_def["serving_default"].method_name == "tensorflow/serving/predict"


def test_status_available(grpc_client):
    assert grpc_client.status("toy") == [{"version": 1, "state": "AVAILABLE", "error_code": "OK",
                                          "error_message": ""}]
    assert grpc_client.status("toy", version=1)[0]["state"] == "AVAILABLE"


def test_classify_and_regress(server):
    stub = _stub(server)
    ex = tf.train.Example()
    ex.features.feature["x"].float_list.value.append(1.5)
    req = regression_pb2.RegressionRequest()
    req.model_spec.name, req.model_spec.signature_name = "toy", "regress"
    req.input.example_list.examples.append(ex)
    resp = stub.Regress(req, timeout=10)
    assert resp.result.regressions[0].value == pytest.approx(4.0)
    creq = classification_pb2.ClassificationRequest()
    creq.model_spec.name, creq.model_spec.signature_name = "toy", "classify"
    creq.input.example_list.examples.extend([ex, ex])
    cresp = stub.Classify(creq, timeout=10)
    assert len(cresp.result.classifications) == 2
    assert [c.label for c in cresp.result.classifications[0].classes] == ["neg", "pos"]
    with pytest.raises(grpc.RpcError) as e:  # serving_default does not take tf.Examples
        stub.Regress(regression_pb2.RegressionRequest(model_spec=req.model_spec.__class__(name="toy"),
                                                      input=req.input), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(ServingError) as e:
        fn()
    return e.value.code


def test_not_found(grpc_client):
    assert _code(lambda: grpc_client.predict("nope", query())) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.predict("toy", query(), version=7)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.status("nope")) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.status("toy", version=7)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.metadata("toy", version=9)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: grpc_client.predict("toy", query(), version="nolabel")) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("inputs, fragment", [
    ({"user_id": np.array(["a"])}, "Missing but required: {timestamp}"),
    ({"user_id": np.array(["a"]), "timestamp": np.array([1]), "x": np.array([1])}, "Sent extra: {x}"),
    ({"user_id": np.array(["a"]), "timestamp": np.array([1.5])}, "Expects arg[0] to be int64 but double is provided"),
    ({"user_id": np.array([1]), "timestamp": np.array([1])}, "Expects arg[1] to be string but int64 is provided"),
])
def test_invalid_argument(grpc_client, inputs, fragment):
    with pytest.raises(ServingError) as e:
        grpc_client.predict("toy", inputs)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in e.value.message


def test_other_request_errors(grpc_client):
    assert _code(lambda: grpc_client.predict("toy", query(), output_filter=["nope"])) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: grpc_client.predict("toy", query(), signature_name="nope")) == \
        grpc.StatusCode.FAILED_PRECONDITION
    # batch sizes that disagree fail inside TensorFlow: still a clean INVALID_ARGUMENT
    bad = {"user_id": np.array(["a", "b"]), "item_id": np.array(["x", "y", "z"])}
    assert _code(lambda: grpc_client.predict("toy", bad, "rank")) == grpc.StatusCode.INVALID_ARGUMENT


def test_resource_exhausted_for_oversized_request(grpc_client):
    big = {"user_id": np.array(["x" * (MAX_REQUEST_BYTES + 1000)]), "timestamp": np.array([1])}
    assert _code(lambda: grpc_client.predict("toy", big)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_survives_bad_requests(server, grpc_client):
    stub = _stub(server)
    garbage = predict_pb2.PredictRequest()
    garbage.model_spec.name = "toy"
    garbage.inputs["user_id"].dtype = 7  # DT_STRING with a shape that needs 4 values but has none
    garbage.inputs["user_id"].tensor_shape.dim.add().size = 4
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(garbage, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(predict_pb2.PredictRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_client.predict("toy", query()).model_version == 1


def test_model_status_proto(server):
    from tensorflow_serving.apis import model_service_pb2_grpc

    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.grpc_address))
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "toy"
    resp = stub.GetModelStatus(req, timeout=10)
    assert resp.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert resp.model_version_status[0].status.error_code == 0


def test_warmup_ran_on_load(server):
    assert server.metrics.value("model_warmup_requests_total", {"model_name": "toy", "model_version": "1"}) == 1


def test_binds_loopback_by_default(server):
    from serving.server import ServerOptions, build_parser

    assert build_parser().parse_args([]).host == "127.0.0.1"
    assert ServerOptions().host == "127.0.0.1"
    assert server.grpc_address.startswith("127.0.0.1:")
    assert server._rest.server_address[0] == "127.0.0.1"


def test_help_explains_flags(capsys):
    from serving.server import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--port", "--rest_api_port", "--model_config_file", "--enable_batching", "--max_request_bytes",
                 "--ssl_cert", "--monitoring_port", "--file_system_poll_wait_seconds"):
        assert flag in text
