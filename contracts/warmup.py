"""TF Serving's warmup file: ``assets.extra/tf_serving_warmup_requests`` inside a model version.

The exporter writes it (trainer/export.py); TF Serving and ``recsys serve`` (serving/servable.py)
replay each record once before the version serves, so no user pays a signature's first call.
"""
from __future__ import annotations

import os
from typing import Dict, Sequence

import tfenv  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def write_warmup_requests(export_dir: str, model_name: str, batches: Sequence[Dict[str, np.ndarray]],
                          signature_names: Sequence[str] = (tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY,)) -> str:
    """Writes the warmup file (PredictionLog TFRecords): each batch once per signature named (each signature is
    its own function; an unwarmed one pays its first call on a user's request). Any filesystem tf.io.gfile
    supports."""
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as w:
        for inputs in batches:
            entry = prediction_log_pb2.PredictionLog()
            req = entry.predict_log.request
            req.model_spec.name = model_name
            for k, v in inputs.items():
                req.inputs[k].CopyFrom(tf.make_tensor_proto(np.asarray(v)))
            for signature_name in signature_names:  # the inputs are converted once
                req.model_spec.signature_name = signature_name
                w.write(entry.SerializeToString())
    return path
