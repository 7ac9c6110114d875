"""TF Serving's own server tests, run against this server.

``python -m serving.conformance --testdata DIR`` starts ``python -m serving.server`` with the flags TF
Serving's ``tensorflow_model_server_test.py`` gives ``tensorflow_model_server`` (explicit ``--port`` and
``--rest_api_port``, ``--rest_api_timeout_in_ms``, ``--grpc_socket_path``, ``--grpc_channel_arguments``
ending in ``grpc.so_reuseaddr=1``), on the SavedModels of ``tensorflow_serving/servables/tensorflow/testdata``
(DIR, from a tensorflow/serving checkout) and on the small models those tests save themselves. It sends
the same requests and checks the same answers (values, versions, model specs, REST bodies).

``--generate DIR`` first writes look-alike models into DIR with ``serving.testing`` (same signatures,
values and version numbers; no metadata JSON), for machines without a checkout and for CI.

Prints one PASS/FAIL line per check; exit status 1 when any fails.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

from serving.launch import announced, free_port, stop_process

VERSION = 123  # every testdata model is version 00000123 (the two-version model adds 124)
MONITORING = 'prometheus_config: { enable: true, path: "/monitoring/prometheus/metrics" }\n'
BATCHING = ("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
            "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n")
SELF_SAVED = ("tf_saved_model_save", "multiple_signatures", "keras_sequential", "keras_sequential_distributed")


class Server:
    """``python -m serving.server`` with TF Serving's test flags; ``address`` is its gRPC host:port."""

    def __init__(self, flags: List[str], log_path: str, timeout: float = 120.0):
        self._dir = tempfile.mkdtemp(prefix="tfs-conformance-")   # private: the Unix socket lives here
        self.rest_port, self.socket = free_port(), os.path.join(self._dir, "grpc.sock")
        cmd = [sys.executable, "-m", "serving.server", f"--port={free_port()}", f"--rest_api_port={self.rest_port}",
               "--rest_api_timeout_in_ms=5000", f"--grpc_socket_path={self.socket}", *flags,
               "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,"
               "grpc.so_reuseaddr=1"]
        self._log = open(log_path, "ab")
        self._log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True)
        line = announced(self.proc, "gRPC", timeout)   # "gRPC  host:port" once it serves
        if line is None:
            self.stop()
            raise RuntimeError(f"server did not start; see {log_path}")
        self.address = line.split()[1]

    def rest(self, path: str, body: Optional[dict] = None) -> Tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if r.headers.get_content_type() == "application/json" else
                                  {"text": text})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode() or "{}")

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        _stubs.cache_clear()   # a later server may get this port: no channel to a stopped one is reused

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Checks:
    def __init__(self):
        self.results: List[Tuple[str, bool]] = []

    def check(self, name: str, fn: Callable[[], bool]) -> None:
        """Runs one check; an exception (an RPC error, say) is a failure with its message."""
        try:
            ok, detail = bool(fn()), ""
        except Exception as e:  # noqa: BLE001  (reported, then the next check runs)
            ok, detail = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        self.results.append((name, ok))
        print(("PASS  " if ok else "FAIL  ") + name + (f"  ({detail})" if detail else ""), flush=True)


# ---------------------------------------------------------------- requests as TF Serving's tests build them
@functools.lru_cache(maxsize=None)
def _stubs(address: str):
    """One channel per server address, shared by all of that server's checks."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(address)
    return prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)


def predict_y(address: str, model: str = "default", signature: str = "serving_default", output_filter: bool = True,
              batch_input: bool = False) -> Tuple[List[float], object]:
    """VerifyPredictRequest's request: x = [2.0] (shape [1], or [1, 1] with ``batch_input``)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = model, signature
    x = req.inputs["x"]
    x.dtype = types_pb2.DT_FLOAT
    x.float_val.append(2.0)
    x.tensor_shape.dim.add().size = 1
    if batch_input:
        x.tensor_shape.dim.add().size = 1
    if output_filter:
        req.output_filter.append("y")
    resp = _stubs(address)[0].Predict(req, 10)
    y = resp.outputs["y"]
    if y.dtype != types_pb2.DT_FLOAT:   # (VerifyPredictRequest checks it; python -O must not drop it)
        raise AssertionError(f"y has dtype {types_pb2.DataType.Name(y.dtype)}, not DT_FLOAT")
    return list(y.float_val), resp.model_spec


def _example_input(target) -> None:
    target.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])


def _spec_ok(spec, model: str, signature: str, version: int) -> bool:
    return spec.name == model and spec.signature_name == signature and spec.version.value == version


def check_model(checks: Checks, srv: Server, label: str, testdata: str, rest: bool) -> None:
    """testGetModelStatus, testGetModelMetadata, testPredictSavedModel, testClassify, testRegress,
    testMultiInference (and their Tf2 variants), then the REST tests, UDS and Prometheus."""
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                         inference_pb2, regression_pb2)

    predict, models = _stubs(srv.address)

    def status():
        st = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "default"}), 10)
        return [(v.version, v.status.error_code) for v in st.model_version_status] == [(VERSION, 0)]

    def metadata():
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = "default"
        r = predict.GetModelMetadata(req, 10)
        return r.model_spec.name == "default" and r.model_spec.version.value == VERSION and list(r.metadata) == [
            "signature_def"]

    def classify():
        req = classification_pb2.ClassificationRequest()
        req.model_spec.name, req.model_spec.signature_name = "default", "classify_x_to_y"
        _example_input(req.input)
        r = predict.Classify(req, 10)
        return ([[c.score for c in cl.classes] for cl in r.result.classifications] == [[3.0]]
                and _spec_ok(r.model_spec, "default", "classify_x_to_y", VERSION))

    def regress():
        req = regression_pb2.RegressionRequest()
        req.model_spec.name, req.model_spec.signature_name = "default", "regress_x_to_y"
        _example_input(req.input)
        r = predict.Regress(req, 10)
        return ([g.value for g in r.result.regressions] == [3.0]
                and _spec_ok(r.model_spec, "default", "regress_x_to_y", VERSION))

    def multi_inference():
        req = inference_pb2.MultiInferenceRequest()
        for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                                  ("classify_x_to_y", "tensorflow/serving/classify")):
            task = req.tasks.add()
            task.model_spec.name, task.model_spec.signature_name, task.method_name = "default", signature, method
        _example_input(req.input)
        r = predict.MultiInference(req, 10)
        return (len(r.results) == 2 and r.results[0].regression_result.regressions[0].value == 3.0
                and r.results[1].classification_result.classifications[0].classes[0].score == 3.0
                and all(_spec_ok(r.results[i].model_spec, "default", req.tasks[i].model_spec.signature_name, VERSION)
                        for i in range(2)))

    def predict_ok(output_filter: bool):
        y, spec = predict_y(srv.address, output_filter=output_filter)
        return y == [3.0] and _spec_ok(spec, "default", "serving_default", VERSION)

    checks.check(f"{label}: GetModelStatus (version 123, OK)", status)
    checks.check(f"{label}: GetModelMetadata (signature_def)", metadata)
    checks.check(f"{label}: Predict y = 3.0 (typed float_val, model spec)", lambda: predict_ok(True))
    checks.check(f"{label}: Predict without output_filter", lambda: predict_ok(False))
    checks.check(f"{label}: Classify score 3.0", classify)
    checks.check(f"{label}: Regress 3.0", regress)
    checks.check(f"{label}: MultiInference (regress + classify)", multi_inference)
    if not rest:
        return
    checks.check(f"{label}: Predict over the Unix socket", lambda: predict_y("unix:" + srv.socket)[0] == [3.0])
    checks.check("REST :classify", lambda: srv.rest("/v1/models/default:classify", {
        "signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) == (200, {"results": [[["", 3.0]]]}))
    checks.check("REST :regress", lambda: srv.rest("/v1/models/default:regress", {
        "signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) == (200, {"results": [3.0]}))
    checks.check("REST :predict, instances", lambda: srv.rest("/v1/models/default:predict", {
        "instances": [2.0, 3.0, 4.0]}) == (200, {"predictions": [3.0, 3.5, 4.0]}))
    checks.check("REST :predict, columnar inputs", lambda: srv.rest("/v1/models/default:predict", {
        "inputs": [2.0, 3.0, 4.0]}) == (200, {"outputs": [3.0, 3.5, 4.0]}))
    checks.check("REST model status", lambda: srv.rest("/v1/models/default") == (200, {"model_version_status": [{
        "version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}))
    expected = os.path.join(testdata, "half_plus_two_model_metadata.json")
    if os.path.exists(expected):  # TF Serving's own file (a checkout has it; --generate does not write one)
        with open(expected) as f:
            want = json.load(f)
        checks.check("REST metadata equals testdata/half_plus_two_model_metadata.json",
                     lambda: (lambda got: got[0] == 200 and _sorted(got[1]) == _sorted(want))(
                         srv.rest("/v1/models/default/metadata")))
    checks.check("Prometheus endpoint of monitoring_config.txt lists '# TYPE'",
                 lambda: "# TYPE" in srv.rest("/monitoring/prometheus/metrics")[1].get("text", ""))


def _sorted(obj):
    """TF Serving's SortedObject: metadata compared without caring about map and list order."""
    if isinstance(obj, dict):
        return sorted((k, _sorted(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return sorted(_sorted(x) for x in obj)
    return obj


# ---------------------------------------------------------------- models
def _model_dir(testdata: str, name: str) -> str:
    return os.path.join(testdata, name)


def generate(testdata: str) -> None:
    """Look-alikes of the testdata models this check uses (``serving.testing``'s TF Serving recipes)."""
    from serving import testing

    testing.write_half_plus_two_tf1(_model_dir(testdata, "saved_model_half_plus_two_cpu"), VERSION)
    testing.write_half_plus_two_tf2(_model_dir(testdata, "saved_model_half_plus_two_tf2_cpu"), VERSION)
    testing.write_half_plus_two_tf1(_model_dir(testdata, "saved_model_half_plus_three"), VERSION, plus=3.0)
    testing.write_half_plus_two_tf1(_model_dir(testdata, "saved_model_half_plus_two_2_versions"), VERSION)
    testing.write_half_plus_two_tf1(_model_dir(testdata, "saved_model_half_plus_two_2_versions"), VERSION + 1)
    testing.write_counter_tf1(_model_dir(testdata, "saved_model_counter"), VERSION)
    for name, text in (("monitoring_config.txt", MONITORING), ("batching_config.txt", BATCHING)):
        with open(os.path.join(testdata, name), "w") as f:
            f.write(text)


def build_self_saved(out: str) -> None:
    """The models TF Serving's tests save themselves, rebuilt in a child interpreter with Keras 2 (the
    tests' ``tf.keras``) and two logical CPUs (for the MirroredStrategy one)."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "serving.conformance", "--_build", out], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the self-saved models failed ({done.returncode}):\n{done.stderr[-2000:]}")


def _build(out: str) -> int:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    path = lambda name: os.path.join(out, name, str(VERSION))  # noqa: E731

    # test_tf_saved_model_save: y = v1 * v2 * x, input of unknown shape
    root = tf.train.Checkpoint(v1=tf.Variable(3.0), v2=tf.Variable(2.0))
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(root, path(SELF_SAVED[0]), root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    # test_tf_saved_model_save_multiple_signatures: constant 1.0 (default) and 2.0 (custom_signature_key)
    root = tf.train.Checkpoint()
    spec = [tf.TensorSpec(None, tf.float32)]
    root.one = tf.function(lambda x: {"y": tf.constant(1.0)}, input_signature=spec)
    root.two = tf.function(lambda x: {"y": tf.constant(2.0)}, input_signature=spec)
    tf.saved_model.save(root, path(SELF_SAVED[1]), signatures={"serving_default": root.one,
                                                               "custom_signature_key": root.two})
    # test_sequential_keras_saved_model_save: identity from input "x" to a layer named "y"
    seq = tf.keras.Sequential([tf.keras.layers.Input(shape=(1,), dtype="float32", name="x"),
                               tf.keras.layers.Lambda(lambda v: v, name="y")])
    tf.saved_model.save(seq, path(SELF_SAVED[2]))
    # test_distrat_sequential_keras_saved_model_save: the same through a one-weight Dense, under MirroredStrategy
    with tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1")).scope():
        seq = tf.keras.Sequential([tf.keras.layers.Input(shape=(1,), dtype="float32", name="x"),
                                   tf.keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"),
                                   tf.keras.layers.Lambda(lambda v: v, name="y")])
    tf.saved_model.save(seq, path(SELF_SAVED[3]))
    return 0


def _config(models: Dict[str, str]) -> str:
    return "model_config_list: {\n" + "".join(
        f'  config: {{ name: "{n}", base_path: "{p}", model_platform: "tensorflow" }}\n'
        for n, p in models.items()) + "}\n"


# ---------------------------------------------------------------- the run
def run(testdata: str, work: str) -> Checks:
    from tensorflow_serving.apis import get_model_status_pb2, predict_pb2

    checks = Checks()
    log = os.path.join(work, "server.log")
    build_self_saved(os.path.join(work, "self_saved"))
    d = lambda name: _model_dir(testdata, name)  # noqa: E731

    tf1 = ["--model_name=default", f"--model_base_path={d('saved_model_half_plus_two_cpu')}",
           f"--monitoring_config_file={os.path.join(testdata, 'monitoring_config.txt')}"]
    with Server(tf1, log) as srv:
        check_model(checks, srv, "TF1 half_plus_two", testdata, rest=True)
    with Server(["--model_name=default", f"--model_base_path={d('saved_model_half_plus_two_tf2_cpu')}"], log) as srv:
        check_model(checks, srv, "TF2 half_plus_two", testdata, rest=False)

    # testGoodModelConfig's two models, and the others of this check under their own names
    models = {"half_plus_two": d("saved_model_half_plus_two_cpu"), "half_plus_three": d("saved_model_half_plus_three"),
              "two_versions": d("saved_model_half_plus_two_2_versions"), "counter": d("saved_model_counter")}
    models.update({n: os.path.join(work, "self_saved", n) for n in SELF_SAVED})
    config = os.path.join(work, "models.config")
    with open(config, "w") as f:
        f.write(_config(models))
    with Server([f"--model_config_file={config}"], log) as srv:
        for model, want in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
            for filtered in (True, False):
                checks.check(f"model config: {model} y = {want}" + ("" if filtered else ", no output_filter"),
                             lambda m=model, w=want, o=filtered: predict_y(srv.address, m, output_filter=o)[0] == [w])

        def latest_of_two():
            st = _stubs(srv.address)[1].GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "two_versions"}), 10)
            available = [v.version for v in st.model_version_status if v.state == 30]  # AVAILABLE
            return available == [VERSION + 1] and predict_y(srv.address, "two_versions")[1].version.value == VERSION + 1

        checks.check("two versions: the latest (124) is the one served", latest_of_two)

        def counter():
            stub, out = _stubs(srv.address)[0], []
            for signature in ("reset_counter", "incr_counter", "incr_counter", "get_counter"):
                req = predict_pb2.PredictRequest()
                req.model_spec.name, req.model_spec.signature_name = "counter", signature
                out.append([list(t.float_val) for t in stub.Predict(req, 10).outputs.values()])
            return out[-1] == [[2.0]]

        checks.check("counter (reference variable): reset, incr, incr, get = 2", counter)
        checks.check("tf.saved_model.save, input of unknown shape: y = 12.0",
                     lambda: predict_y(srv.address, SELF_SAVED[0], output_filter=False)[0] == [12.0])
        checks.check("two signatures: custom_signature_key 2.0, serving_default 1.0",
                     lambda: predict_y(srv.address, SELF_SAVED[1], "custom_signature_key")[0] == [2.0]
                     and predict_y(srv.address, SELF_SAVED[1])[0] == [1.0])
        for name in SELF_SAVED[2:]:
            checks.check(f"Keras Sequential ({name}), x of shape [1, 1]: y = 2.0",
                         lambda n=name: predict_y(srv.address, n, output_filter=False, batch_input=True)[0] == [2.0])

    batching = ["--model_name=default", f"--model_base_path={d('saved_model_half_plus_two_cpu')}", "--enable_batching",
                f"--batching_parameters_file={os.path.join(testdata, 'batching_config.txt')}"]
    with Server(batching, log) as srv:
        checks.check("--enable_batching with batching_config.txt: y = 3.0", lambda: predict_y(srv.address)[0] == [3.0])

    # testModelConfigReload / testModelConfigReloadWithZeroPollPeriod
    for poll in (1, 0):
        path = os.path.join(work, f"reload-{poll}.config")
        with open(path, "w") as f:
            f.write(_config({"half_plus_two": d("saved_model_half_plus_two_cpu")}))
        with Server([f"--model_config_file={path}", f"--model_config_file_poll_wait_seconds={poll}"], log) as srv:
            first = predict_y(srv.address, "half_plus_two", output_filter=False)[0] == [3.0]
            with open(path, "w") as f:
                f.write(_config({"half_plus_three": d("saved_model_half_plus_three")}))
            if poll:
                checks.check("config file polled every 1 s: half_plus_two, then half_plus_three = 4.0",
                             lambda: first and _eventually(lambda: predict_y(srv.address, "half_plus_three",
                                                                             output_filter=False)[0] == [4.0], 30))
            else:
                time.sleep(poll + 1)
                checks.check("poll period 0: the first config keeps serving",
                             lambda: first and predict_y(srv.address, "half_plus_two", output_filter=False)[0] == [3.0])
    return checks


def _eventually(fn: Callable[[], bool], seconds: float) -> bool:
    """``fn()`` once it stops raising (the model is not loaded yet), within ``seconds``: a loaded model's answer is
    final, right or wrong, so a wrong one fails at once instead of waiting out the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return bool(fn())
        except Exception:  # noqa: BLE001  (not loaded yet)
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.conformance", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--testdata", help="tensorflow_serving/servables/tensorflow/testdata of a tensorflow/serving "
                                          "checkout")
    where.add_argument("--generate", metavar="DIR", help="write look-alike models into DIR, then check them")
    where.add_argument("--_build", help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's and Python's library notices")
    args = p.parse_args(argv)
    if args._build:
        return _build(args._build)
    if not args.verbose:  # before TensorFlow loads: its C++ start-up notices would bury the PASS/FAIL lines
        import logging
        import warnings

        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)   # TF1 API deprecation notices of --generate
    testdata = args.testdata or args.generate
    if args.generate:
        os.makedirs(testdata, exist_ok=True)
        generate(testdata)
    elif not os.path.isdir(os.path.join(testdata, "saved_model_half_plus_two_cpu")):
        p.error(f"{testdata} has no saved_model_half_plus_two_cpu: give TF Serving's testdata folder")
    work = args.work or tempfile.mkdtemp(prefix="tfs-conformance-")
    os.makedirs(work, exist_ok=True)
    checks = run(os.path.abspath(testdata), os.path.abspath(work))
    passed = sum(ok for _, ok in checks.results)
    ok = passed == len(checks.results)
    where = f"server log: {os.path.join(work, 'server.log')}" if args.work or not ok else "server log removed"
    print(f"\n{passed}/{len(checks.results)} of TF Serving's server-test expectations passed ({where})")
    if ok and not args.work:  # a temporary folder of our own: kept only when there is a failure to read
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
