"""Start a real server in-process on free loopback ports (tests, benchmarks, notebooks).

    with start_server(model_base_path="models/retrieval", model_name="retrieval") as srv:
        client = ServingClient(srv.grpc_address)

Same code path as ``recsys serve``; only the ports are picked by the OS (``serving.launch`` helps callers
that start ``python -m serving.server`` as a process instead).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from serving.models import BatchingOptions
from serving.server import ModelServer, ServerOptions


def start_server(*, model_base_path: str = "", model_name: str = "default", model_config_file: str = "",
                 rest: bool = True, poll_seconds: float = 0.2, enable_batching: bool = False,
                 max_batch_size: int = 32, batch_timeout_micros: int = 0, num_batch_threads: int = 2,
                 **options: Any) -> ModelServer:
    """A started ``ModelServer`` bound to 127.0.0.1 on free ports; ``stop()`` it (or use ``with``).

    Extra keyword arguments are ``ServerOptions`` fields (max_request_bytes, ssl_cert, ...).
    """
    opts = ServerOptions(
        port=0, rest_api_port=0 if rest else None, model_name=model_name, model_base_path=model_base_path,
        model_config_file=model_config_file, file_system_poll_wait_seconds=poll_seconds,
        enable_batching=enable_batching,
        batching=BatchingOptions(max_batch_size=max_batch_size, batch_timeout_micros=batch_timeout_micros,
                                 num_batch_threads=num_batch_threads))
    opts = dataclasses.replace(opts, **options)
    server = ModelServer(opts)
    try:
        return server.start()
    except BaseException:
        server.stop(0)
        raise



def write_toy_model(base_path: str, version: int, *, k: int = 5, model_name: str = "toy", warmup: bool = True) -> str:
    """A tiny SavedModel with the project's serving contract, for tests and benchmark dry runs.

    Signatures: ``serving_default`` (user_id [None] string, timestamp [None] int64 ->
    item_ids [None, k] string, scores [None, k] float32; scores start at ``version`` so
    callers can tell versions apart), ``rank`` (user_id, item_id [None] -> scores [None]),
    ``regress`` / ``classify`` (serialized tf.Examples with float feature ``x``).
    """
    import os

    import numpy as np
    import tensorflow as tf

    from contracts.warmup import write_warmup_requests

    class Toy(tf.Module):
        def __init__(self):
            super().__init__()
            self.bias = tf.Variable(float(version), name="bias")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                      tf.TensorSpec([None], tf.int64, name="timestamp")])
        def serve(self, user_id, timestamp):
            n = tf.shape(user_id)[0]
            ranks = tf.broadcast_to(tf.strings.as_string(tf.range(k))[None, :], [n, k])
            ids = tf.strings.join([tf.repeat(user_id[:, None], k, axis=1), ranks], "-")
            step = 0.1 * tf.cast(tf.range(k), tf.float32)[None, :]
            scores = self.bias + 0.0 * tf.cast(timestamp, tf.float32)[:, None] - step
            return {"item_ids": ids, "scores": scores}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                      tf.TensorSpec([None], tf.string, name="item_id")])
        def rank(self, user_id, item_id):
            length = tf.cast(tf.strings.length(item_id) + tf.strings.length(user_id), tf.float32)
            return {"scores": self.bias + 0.01 * length}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)})["x"]
            return {"outputs": 2.0 * x + self.bias}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)})["x"]
            p = tf.sigmoid(x)
            n = tf.shape(x)[0]
            return {"scores": tf.stack([1.0 - p, p], axis=1),
                    "classes": tf.broadcast_to(tf.constant([["neg", "pos"]]), [n, 2])}

    m = Toy()
    path = os.path.join(base_path, str(version))
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve, "rank": m.rank,
                                             "regress": m.regress, "classify": m.classify})
    if warmup:
        write_warmup_requests(path, model_name, [{"user_id": np.array([b"warmup"], dtype=object),
                                                  "timestamp": np.array([0], dtype=np.int64)}])
    return path


# ---------------------------------------------------------------- TF Serving's test models, made here
def _mark_complete(path: str) -> str:
    """Writes the completion marker (contracts/completion.py) so the server loads the version at once."""
    try:
        from contracts.completion import write_marker
    except ImportError:  # older checkouts: versions load without one
        return path
    write_marker(path)
    return path


def write_half_plus_two_tf1(base_path: str, version: int, *, plus: float = 2.0) -> str:
    """TF Serving's ``saved_model_half_plus_two`` recipe (tf.compat.v1 graph + SavedModelBuilder): y = 0.5x + plus.

    Signatures as in TF Serving's testdata: ``serving_default`` (Predict, x -> y, where x is the
    [?,1] output of a ParseExample, not a placeholder), ``regress_x_to_y`` (Regress) and
    ``classify_x_to_y`` (Classify: scores), both taking serialized tf.Examples with float feature
    ``x``; variables are reference variables and an asset file is wired in, as in the original.
    With ``plus=3`` it is ``half_plus_three``; two calls with different ``plus`` make the two-version model.
    """
    import os

    import tensorflow as tf

    v1 = tf.compat.v1
    path = os.path.join(base_path, str(version))
    builder = v1.saved_model.builder.SavedModelBuilder(path)
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as sess:
        a = v1.Variable(0.5, name="a", use_resource=False)
        b = v1.Variable(float(plus), name="b", use_resource=False)
        serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(a * x + b, name="y")
        assets_dir = os.path.join(base_path, f".assets-{version}")
        os.makedirs(assets_dir, exist_ok=True)
        asset = os.path.join(assets_dir, "foo.txt")
        with open(asset, "w") as f:
            f.write("asset-file-contents")
        asset_tensor = tf.constant(asset)
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_tensor)
        filename = v1.Variable("foo.txt", name="filename_tensor", trainable=False, collections=[],
                               use_resource=False)
        sess.run(v1.global_variables_initializer())
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def
        builder.add_meta_graph_and_variables(
            sess, [v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                "serving_default": sig({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
                "regress_x_to_y": sig({"inputs": info(serialized)}, {"outputs": info(y)},
                                      "tensorflow/serving/regress"),
                "classify_x_to_y": sig({"inputs": info(serialized)}, {"scores": info(y)},
                                       "tensorflow/serving/classify"),
            },
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=tf.group(filename.assign("foo.txt")))
        builder.save()
    import shutil

    shutil.rmtree(assets_dir, ignore_errors=True)
    return _mark_complete(path)


def write_half_plus_two_tf2(base_path: str, version: int, *, plus: float = 2.0) -> str:
    """The same model saved natively in TF2 (tf.Module + tf.saved_model.save), x declared [?,1]."""
    import os

    import tensorflow as tf

    features = {"x": tf.io.FixedLenFeature([1], tf.float32)}

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(float(plus), name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self.a * tf.io.parse_example(inputs, features)["x"] + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": self.a * tf.io.parse_example(inputs, features)["x"] + self.b}

    m = HalfPlusTwo()
    path = os.path.join(base_path, str(version))
    tf.saved_model.save(m, path, signatures={"serving_default": m.predict, "regress_x_to_y": m.regress,
                                             "classify_x_to_y": m.classify})
    return _mark_complete(path)


def write_counter_tf1(base_path: str, version: int) -> str:
    """TF Serving's ``saved_model_counter`` recipe: a reference (non-resource) variable and stateful
    signatures without inputs (``get_counter``, ``incr_counter``, ``reset_counter``) or with one
    (``incr_counter_by``: delta, unknown rank)."""
    import os

    import tensorflow as tf

    v1 = tf.compat.v1
    path = os.path.join(base_path, str(version))
    builder = v1.saved_model.builder.SavedModelBuilder(path)
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as sess:
        counter = v1.Variable(0.0, dtype=tf.float32, name="counter", use_resource=False)
        incr = counter.assign_add(1.0)
        delta = v1.placeholder(tf.float32, name="delta")
        incr_by = counter.assign_add(delta)
        reset = counter.assign(0.0)
        sess.run(v1.global_variables_initializer())
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def
        predict = "tensorflow/serving/predict"
        builder.add_meta_graph_and_variables(sess, [v1.saved_model.tag_constants.SERVING], signature_def_map={
            "get_counter": sig({}, {"output": info(counter)}, predict),
            "incr_counter": sig({}, {"output": info(incr)}, predict),
            "incr_counter_by": sig({"delta": info(delta)}, {"output": info(incr_by)}, predict),
            "reset_counter": sig({}, {"output": info(reset)}, predict)})
        builder.save()
    return _mark_complete(path)
