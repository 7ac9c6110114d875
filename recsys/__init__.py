"""recsys: shared configuration and the `recsys` command line.

TFRS 0.7.7 needs Keras 2: TF 2.16 ships Keras 3 unless TF_USE_LEGACY_KERAS=1 is set
before TensorFlow is imported, so every package entry point sets it first.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
