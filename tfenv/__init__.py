"""The TensorFlow environment every entry point sets before TensorFlow is imported.

TFRS 0.7.7 needs Keras 2: TF 2.16 ships Keras 3 unless TF_USE_LEGACY_KERAS=1 is set before TensorFlow
is imported. A package of its own, so preprocessing, trainer and serving set it without importing the
CLI's package (``recsys``); every package's ``__init__`` imports this first.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
