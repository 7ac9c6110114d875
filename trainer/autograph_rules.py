"""AutoGraph leaves tf_keras alone, as it always left Keras.

TensorFlow's AutoGraph never converts the ``keras`` package (its conversion rules say DoNotConvert("keras")):
Keras' own code is written for graph mode and needs no conversion. With TF_USE_LEGACY_KERAS=1 (TFRS needs
Keras 2) the same code is imported as ``tf_keras``, which the rules do not name, so every trace transpiled
tf_keras internals (layer __call__, Functional construction, losses, optimizers) through Python's ast:
measured 32 of 45 s of a tiny train_retrieval. Adding the rule restores TF <= 2.15 behaviour exactly; our
own model code (trainer/models) and TFRS are still converted. Installed by ``trainer.models`` (every Keras
model is built from there; importing ``trainer`` alone stays free of TensorFlow).
"""
from tensorflow.python.autograph.core import config as _config
from tensorflow.python.autograph.core import config_lib as _config_lib

RULE = _config_lib.DoNotConvert("tf_keras")


def install() -> None:
    """Idempotent; read by AutoGraph at conversion time, so it applies to every later trace."""
    if not any(getattr(r, "_prefix", None) == "tf_keras" for r in _config.CONVERSION_RULES):
        _config.CONVERSION_RULES = (RULE,) + tuple(_config.CONVERSION_RULES)
