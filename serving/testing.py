"""Start a real server in-process on free loopback ports (tests, benchmarks, notebooks).

    with start_server(model_base_path="models/retrieval", model_name="retrieval") as srv:
        client = ServingClient(srv.grpc_address)

Same code path as ``recsys serve``; only the ports are picked by the OS.
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

    from serving.servable import write_warmup_requests

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
