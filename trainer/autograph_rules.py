"""AutoGraph leaves graph-ready code alone: tf_keras (as it always left Keras), TF-Transform and our trainer.

TensorFlow's AutoGraph never converts the ``keras`` package (its conversion rules say DoNotConvert("keras")):
Keras' own code is written for graph mode and needs no conversion. With TF_USE_LEGACY_KERAS=1 (TFRS needs
Keras 2) the same code is imported as ``tf_keras``, which the rules do not name, so every trace transpiled
tf_keras internals (layer __call__, Functional construction, losses, optimizers) through Python's ast:
measured 32 of 45 s of a tiny train_retrieval. Adding the rule restores TF <= 2.15 behaviour exactly.

``tensorflow_transform`` (the transform layer every export and the catalogue pass call) and our own
``trainer`` package are graph-ready too: no Python ``if``/``for``/``while`` on tensors, so conversion only
re-parsed their source at every trace (8.5 of 12.6 s of conversion in ``recsys demo --quick``; outputs
identical without it). Code under ``trainer`` must stay that way: use ``tf.cond``/``tf.where``/
``tf.while_loop``; a Python branch on a tensor fails at trace time ("using a tf.Tensor as a Python bool").
TFRS is still converted: it needs it (``len(tf.shape(x))`` in ``tasks.Retrieval``).
Installed by ``trainer.models`` (every Keras model is built from there; importing ``trainer`` alone stays
free of TensorFlow).
"""
from tensorflow.python.autograph.core import config as _config
from tensorflow.python.autograph.core import config_lib as _config_lib

PREFIXES = ("tf_keras", "tensorflow_transform", "trainer")


def install() -> None:
    """Idempotent; read by AutoGraph at conversion time, so it applies to every later trace."""
    have = {getattr(r, "_prefix", None) for r in _config.CONVERSION_RULES}
    new = tuple(_config_lib.DoNotConvert(p) for p in PREFIXES if p not in have)
    _config.CONVERSION_RULES = new + tuple(_config.CONVERSION_RULES)
