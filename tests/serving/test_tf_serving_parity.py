"""Behaviour a TF Serving client can observe, checked on models made like TF Serving's own testdata.

half_plus_two in TF1 (SavedModelBuilder, ParseExample behind Classify/Regress, reference
variables, an asset) and TF2 formats, a two-version half_plus_two (v1: +2, v2: +3), and the
counter model (reference variable, stateful signatures without inputs). Expected values and
messages are TF Serving's (model_servers/, servables/tensorflow/ in tensorflow/serving).
"""
import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_status_pb2, inference_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

from serving.testing import start_server, write_counter_tf1, write_half_plus_two_tf1, write_half_plus_two_tf2


@pytest.fixture(scope="session")
def tfs_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfs_models")
    write_half_plus_two_tf1(str(root / "hp1"), 1, plus=2.0)
    write_half_plus_two_tf1(str(root / "hp1"), 2, plus=3.0)  # the two-version model
    write_half_plus_two_tf2(str(root / "hp2"), 1)
    write_counter_tf1(str(root / "counter"), 1)
    return root


def _config_text(root, extra: str = "", platform: str = "tensorflow", more: str = "") -> str:
    return f"""model_config_list {{
  config {{ name: "hp1" base_path: "{root / 'hp1'}" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }} }}
  config {{ name: "hp2" base_path: "{root / 'hp2'}" model_platform: "tensorflow" }}
  config {{ name: "counter" base_path: "{root / 'counter'}" model_platform: "{platform}" {extra} }}
  {more}
}}"""


@pytest.fixture(scope="session")
def tfs(tfs_models, tmp_path_factory):
    config = tmp_path_factory.mktemp("tfs_cfg") / "models.config"
    config.write_text(_config_text(tfs_models))
    srv = start_server(model_config_file=str(config), poll_seconds=0, enable_grpc_healthcheck_service=True)
    channel = grpc.insecure_channel(srv.grpc_address)
    yield srv, prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()
    srv.stop(0)


def _predict(stub, model, inputs, signature="", version=None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    if signature:
        req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return stub.Predict(req, timeout=10)


def _error(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def _example(x: float) -> tf.train.Example:
    ex = tf.train.Example()
    ex.features.feature["x"].float_list.value.append(x)
    return ex


def _rest(srv, path, body=None):
    req = urllib.request.Request(srv.rest_url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---------------------------------------------------------------- loading
def test_tf1_and_tf2_models_load_as_tf_serving_loads_them(tfs):
    srv, _, mstub = tfs
    kinds = {}
    for name in ("hp1", "hp2", "counter"):
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = name
        states = {s.version: s.state for s in mstub.GetModelStatus(req, timeout=10).model_version_status}
        assert set(states.values()) == {get_model_status_pb2.ModelVersionStatus.AVAILABLE}, (name, states)
        with srv.manager.acquire(name) as s:
            kinds[name] = s.kind
    assert kinds == {"hp1": "tf1-session", "hp2": "tf2-session", "counter": "tf1-session"}


def test_two_versions_served_side_by_side(tfs):
    _, stub, _ = tfs
    x = {"x": np.array([[1.0]], np.float32)}
    assert _predict(stub, "hp1", x, version=1).outputs["y"].float_val == [2.5]
    assert _predict(stub, "hp1", x, version=2).outputs["y"].float_val == [3.5]
    latest = _predict(stub, "hp1", x)
    assert latest.model_spec.version.value == 2 and latest.model_spec.signature_name == "serving_default"


# ---------------------------------------------------------------- shapes go to the graph; typed output fields
@pytest.mark.parametrize("model", ["hp1", "hp2"])
def test_shapes_left_to_the_graph(tfs, model):
    _, stub, _ = tfs
    resp = _predict(stub, model, {"x": np.array([1.0, 2.0, 5.0], np.float32)}, version=1)  # [3] into [?,1]
    y = resp.outputs["y"]
    assert list(y.float_val) == [2.5, 3.0, 4.5] and y.tensor_content == b""  # typed fields by default
    assert [d.size for d in y.tensor_shape.dim] == [3]
    scalar = _predict(stub, model, {"x": np.array(3.0, np.float32)}, version=1).outputs["y"]
    assert list(scalar.float_val) == [3.5] and len(scalar.tensor_shape.dim) == 0  # scalar in, scalar out
    code, details = _error(lambda: _predict(stub, model, {"x": np.array(["a"])}, version=1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "Expects arg[0] to be float but string is provided"


def test_graph_errors_are_invalid_argument(tfs):
    _, stub, _ = tfs
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = "hp2", "regress_x_to_y"
    req.inputs["inputs"].CopyFrom(tf.make_tensor_proto([b"not a tf.Example"]))
    code, details = _error(lambda: stub.Predict(req, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "parse" in details.lower()


def test_rest_shapes_as_tf_serving(tfs):
    srv, _, _ = tfs
    assert _rest(srv, "/v1/models/hp1/versions/1:predict", {"instances": [1.0, 2.0, 5.0]}) == \
        (200, {"predictions": [2.5, 3.0, 4.5]})
    assert _rest(srv, "/v1/models/hp2:predict", {"inputs": [3, 4]}) == (200, {"outputs": [3.5, 4.0]})
    assert _rest(srv, "/v1/models/hp2:predict", {"inputs": 3}) == (200, {"outputs": 3.5})


def test_tensor_content_flag(model_src, tfs_models):
    from .conftest import install_version

    base = str(tfs_models / "toy_for_flag")
    install_version(model_src, base, 1)
    with start_server(model_base_path=base, model_name="toy", rest=False, poll_seconds=0,
                      enable_serialization_as_tensor_content=True) as srv:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_address))
        resp = _predict(stub, "toy", {"user_id": np.array(["u1", "u2"]), "timestamp": np.array([1, 2], np.int64)})
        scores, ids = resp.outputs["scores"], resp.outputs["item_ids"]
        assert scores.float_val == [] and len(scores.tensor_content) == 2 * 5 * 4
        assert ids.string_val == [] and ids.tensor_content  # strings too, in TensorFlow's string-list encoding
        from serving.codec import proto_to_ndarray

        assert proto_to_ndarray(ids)[1, 0] == b"u2-0"
        np.testing.assert_allclose(proto_to_ndarray(scores)[0], [1.0, 0.9, 0.8, 0.7, 0.6], rtol=1e-6)


# ---------------------------------------------------------------- counter (reference variables, no inputs)
def test_counter_model_with_reference_variables(tfs):
    _, stub, _ = tfs

    def call(sig, **inputs):
        return _predict(stub, "counter", inputs, signature=sig).outputs["output"].float_val[0]

    call("reset_counter")
    assert [call("incr_counter"), call("incr_counter")] == [1.0, 2.0]
    assert call("incr_counter_by", delta=np.float32(3.0)) == 5.0
    assert call("get_counter") == 5.0
    assert call("reset_counter") == 0.0


# ---------------------------------------------------------------- Classify / Regress / MultiInference
def _spec(req, model, signature=""):
    req.model_spec.name = model
    if signature:
        req.model_spec.signature_name = signature
    return req


@pytest.mark.parametrize("model", ["hp1", "hp2"])
def test_classify_and_regress_parse_examples(tfs, model):
    _, stub, _ = tfs
    req = _spec(regression_pb2.RegressionRequest(), model, "regress_x_to_y")
    req.input.example_list.examples.extend([_example(2.0), _example(4.0)])
    resp = stub.Regress(req, timeout=10)
    assert [r.value for r in resp.result.regressions] == [3.0 if model == "hp2" else 4.0, 4.0 if model == "hp2" else 5.0]
    creq = _spec(classification_pb2.ClassificationRequest(), model, "classify_x_to_y")
    ctx = creq.input.example_list_with_context
    ctx.context.CopyFrom(_example(9.0))
    ctx.examples.extend([_example(2.0)])  # the example's own x wins over the context's
    cresp = stub.Classify(creq, timeout=10)
    assert [c.score for c in cresp.result.classifications[0].classes] == [3.0 if model == "hp2" else 4.0]
    assert cresp.model_spec.signature_name == "classify_x_to_y"


def test_classify_regress_error_codes_and_messages(tfs):
    _, stub, _ = tfs
    req = _spec(regression_pb2.RegressionRequest(), "hp1", "nope")
    req.input.example_list.examples.append(_example(1.0))
    assert _error(lambda: stub.Regress(req, timeout=10)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                              "No signature was found with the name: nope")
    creq = _spec(classification_pb2.ClassificationRequest(), "hp1", "nope")
    creq.input.example_list.examples.append(_example(1.0))
    assert _error(lambda: stub.Classify(creq, timeout=10))[0] == grpc.StatusCode.INVALID_ARGUMENT
    empty = _spec(regression_pb2.RegressionRequest(), "hp1", "regress_x_to_y")
    empty.input.example_list.SetInParent()  # an example list with no examples
    assert _error(lambda: stub.Regress(empty, timeout=10)) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    cempty = _spec(classification_pb2.ClassificationRequest(), "hp1", "classify_x_to_y")
    assert _error(lambda: stub.Classify(cempty, timeout=10)) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    assert _error(lambda: stub.Regress(regression_pb2.RegressionRequest(), timeout=10)) == \
        (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    wrong = _spec(regression_pb2.RegressionRequest(), "hp1")  # serving_default: input "x", not "inputs"
    wrong.input.example_list.examples.append(_example(1.0))
    code, details = _error(lambda: stub.Regress(wrong, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("No regression inputs found")


def test_rest_regress_empty_examples(tfs):
    srv, _, _ = tfs
    assert _rest(srv, "/v1/models/hp1:classify", {"signature_name": "nope", "examples": [{"x": 1.0}]}) == \
        (400, {"error": "No signature was found with the name: nope"})
    assert _rest(srv, "/v1/models/hp1/versions/99999999999999999999") == \
        (400, {"error": "Failed to convert version: 99999999999999999999 to numeric."})
    assert _rest(srv, "/v1/models/hp1:regress", {"signature_name": "regress_x_to_y", "examples": []}) == \
        (400, {"error": "Input is empty."})
    assert _rest(srv, "/v1/models/hp1:regress", {"signature_name": "regress_x_to_y",
                                                 "examples": [{"x": 2.0}]}) == (200, {"results": [4.0]})


def test_multi_inference(tfs):
    _, stub, _ = tfs
    req = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                        ("regress_x_to_y", "tensorflow/serving/regress")):
        task = req.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "hp1", sig, method
    req.input.example_list.examples.extend([_example(2.0), _example(6.0)])
    resp = stub.MultiInference(req, timeout=10)
    assert [c.classes[0].score for c in resp.results[0].classification_result.classifications] == [4.0, 6.0]
    assert [r.value for r in resp.results[1].regression_result.regressions] == [4.0, 6.0]
    assert [r.model_spec.signature_name for r in resp.results] == ["classify_x_to_y", "regress_x_to_y"]
    assert resp.results[0].model_spec.version.value == 2

    bad = inference_pb2.MultiInferenceRequest()
    bad.CopyFrom(req)
    bad.tasks[1].model_spec.name = "hp2"
    assert _error(lambda: stub.MultiInference(bad, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    bad.CopyFrom(req)
    bad.tasks[1].model_spec.signature_name = "classify_x_to_y"
    assert _error(lambda: stub.MultiInference(bad, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: classify_x_to_y")
    bad.CopyFrom(req)
    bad.tasks[1].method_name = "tensorflow/serving/predict"
    assert _error(lambda: stub.MultiInference(bad, timeout=10)) == (
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")


# ---------------------------------------------------------------- status codes and messages
def test_model_spec_errors(tfs):
    _, stub, mstub = tfs
    assert _error(lambda: mstub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=10)) == \
        (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    assert _error(lambda: stub.Predict(predict_pb2.PredictRequest(), timeout=10)) == \
        (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    req = predict_pb2.PredictRequest()
    req.model_spec.SetInParent()
    assert _error(lambda: stub.Predict(req, timeout=10)) == \
        (grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    code, details = _error(lambda: _predict(stub, "hp1", {"x": np.array([1.0], np.float32)}, signature="nope"))
    assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')


# ---------------------------------------------------------------- config reloads
def _reload(mstub, text: str):
    from google.protobuf import text_format

    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return mstub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=60)


def test_reload_rejections_leave_serving_untouched(tfs, tfs_models):
    srv, stub, mstub = tfs
    before = srv.manager.config.SerializeToString()
    root = tfs_models
    cases = [
        (_config_text(root, 'version_labels { key: "stable" value: 7 }'), grpc.StatusCode.FAILED_PRECONDITION,
         "Request to assign label to version 7 of model counter, which is not currently available for inference"),
        (_config_text(root).replace('name: "hp2"', 'name: "hp1"'), grpc.StatusCode.INVALID_ARGUMENT,
         "Illegal to list model hp1 multiple times in config list"),
        (_config_text(root).replace('name: "counter" base_path: "' + str(root / "counter"),
                                    'name: "counter" base_path: "counter'), grpc.StatusCode.INVALID_ARGUMENT,
         "Expected model counter to have an absolute path or URI; got base_path()=counter"),
        (_config_text(root, platform="onnx"), grpc.StatusCode.INVALID_ARGUMENT,
         "Illegal to change a model's platform. For model counter platform was tensorflow and new platform "
         "requested is onnx"),
        (_config_text(root, more=f'config {{ name: "x" base_path: "{root}/x" model_platform: "pytorch" }}'),
         grpc.StatusCode.INVALID_ARGUMENT, "Model x requests unsupported platform pytorch"),
        ('custom_model_config { type_url: "x" }', grpc.StatusCode.INVALID_ARGUMENT,
         "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently "
         "supported"),
    ]
    for text, code, message in cases:
        assert _error(lambda: _reload(mstub, text)) == (code, message)
        assert srv.manager.config.SerializeToString() == before
        assert _predict(stub, "counter", {}, signature="get_counter").model_spec.version.value == 1
    # a label on a version that is available is accepted, and clients can use it
    _reload(mstub, _config_text(root).replace("all {} }", 'all {} } version_labels { key: "stable" value: 1 }'))
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.version_label = "hp1", "stable"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]]))
    assert stub.Predict(req, timeout=10).outputs["y"].float_val == [2.5]


def test_unloaded_model_reports_end(tfs_models, tmp_path):
    cfg = tmp_path / "one.config"
    cfg.write_text(f'model_config_list {{ config {{ name: "a" base_path: "{tfs_models / "hp1"}" '
                   f'model_platform: "tensorflow" }} }}')
    with start_server(model_config_file=str(cfg), rest=False, poll_seconds=0) as srv:
        mstub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(srv.grpc_address))
        _reload(mstub, f'model_config_list {{ config {{ name: "b" base_path: "{tfs_models / "hp2"}" '
                       f'model_platform: "tensorflow" }} }}')
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "a"
        status = mstub.GetModelStatus(req, timeout=10).model_version_status
        assert [(s.version, s.state) for s in status] == [(2, get_model_status_pb2.ModelVersionStatus.END)]


# ---------------------------------------------------------------- flags
def test_every_tf_serving_flag_is_accepted(capsys):
    from serving.server import NO_EFFECT_FLAGS, TF_SERVING_FLAGS, build_parser, no_effect_notes, options_from_args

    assert len(TF_SERVING_FLAGS) == 48 and len(set(TF_SERVING_FLAGS)) == 48
    parser = build_parser()
    values = {"port": "8500", "rest_api_port": "8501", "model_name": "m", "model_base_path": "/models/m",
              "grpc_channel_arguments": "grpc.max_connection_age_ms=2000", "saved_model_tags": "serve",
              "mixed_precision": "bfloat16", "per_process_gpu_memory_fraction": "0.5"}
    argv = []
    for name in TF_SERVING_FLAGS:
        if name in ("version", "use_alts_credentials", "tensorflow_session_config_file", "ssl_config_file",
                    "batching_parameters_file", "model_config_file", "monitoring_config_file",
                    "platform_config_file", "thread_pool_factory_config_file"):
            continue  # actions, or files that must exist (their parsing is tested elsewhere)
        action = next(a for a in parser._actions if a.dest == name)
        if action.const is True:  # a boolean: TF Serving's --flag=true form
            argv.append(f"--{name}=true")
        else:
            argv.append(f"--{name}={values.get(name, '1')}")
    args = parser.parse_args(argv)
    opts = options_from_args(args)
    assert opts.enable_serialization_as_tensor_content and opts.allow_version_labels_for_unavailable_models
    assert opts.tensorflow_intra_op_parallelism == 1 and opts.grpc_socket_path == "1"
    notes = no_effect_notes(args)
    assert len(notes) == len(NO_EFFECT_FLAGS) - 3  # all given except the two files and ALTS skipped above
    assert all("has no effect here" in n for n in notes)
    assert parser.parse_args(["--enable_batching"]).enable_batching is True
    assert parser.parse_args(["--enable_batching=false"]).enable_batching is False


def test_grpc_channel_arguments_parse_like_tf_serving():
    from serving.server import grpc_channel_options

    assert grpc_channel_options("grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x") == \
        [("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "x")]
    with pytest.raises(ValueError):
        grpc_channel_options("no-equals-sign")


def test_unix_socket_and_health_service(tfs, tmp_path):
    from serving.health import HealthCheckRequest, HealthCheckResponse

    srv, _, _ = tfs
    check = grpc.insecure_channel(srv.grpc_address).unary_unary(
        "/grpc.health.v1.Health/Check", request_serializer=HealthCheckRequest.SerializeToString,
        response_deserializer=HealthCheckResponse.FromString)
    assert check(HealthCheckRequest(service="PredictionService"), timeout=10).status == 1  # SERVING
    sock = str(tmp_path / "tfs.sock")
    with start_server(model_base_path=str(srv.manager.config.model_config_list.config[1].base_path),
                      model_name="hp2", rest=False, poll_seconds=0, port=0, grpc_socket_path=sock) as unix_srv:
        assert unix_srv.grpc_port is None and unix_srv.grpc_address == "unix:" + sock  # --port=0: socket only
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("unix:" + sock))
        assert _predict(stub, "hp2", {"x": np.array([[2.0]], np.float32)}).outputs["y"].float_val == [3.0]


def test_version_flag(capsys):
    from serving.server import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("TensorFlow ModelServer: ")


def test_tf2_function_loader_gives_the_same_answers(tfs_models, monkeypatch):
    """RECSYS_TF2_LOADER=function (tf.saved_model.load) is the fallback; it must agree with the session."""
    from serving.servable import Servable

    path = str(tfs_models / "hp2" / "1")
    session = Servable("hp2", 1, path)
    monkeypatch.setenv("RECSYS_TF2_LOADER", "function")
    function = Servable("hp2", 1, path)
    assert (session.kind, function.kind) == ("tf2-session", "tf2-function")
    for x in (np.array([1.0, 2.0, 5.0], np.float32), np.array(3.0, np.float32), np.array([[1.0], [2.0]], np.float32)):
        np.testing.assert_array_equal(session.predict({"x": x})["y"], function.predict({"x": x})["y"])
    ex = [_example(2.0).SerializeToString()]
    assert function.regression_signature("regress_x_to_y").regress(ex).tolist() == [3.0]
