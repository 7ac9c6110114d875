"""Registers ScaNN's TensorFlow ops, the only extra a ScaNN SavedModel needs to load.

Loads the op library directly (no ScaNN Python API), which mirrors what a TF Serving
build with the ScaNN ops does; without it loading fails with
``Op type not registered 'Scann>TensorsToScann'``.
"""
from __future__ import annotations

import importlib.util
import os

_LOADED = False


def load_scann_ops() -> None:
    global _LOADED
    if _LOADED:
        return
    import tensorflow as tf

    spec = importlib.util.find_spec("scann")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the ScaNN package is not installed; it is needed to load ScaNN SavedModels")
    path = os.path.join(list(spec.submodule_search_locations)[0], "scann_ops", "cc", "_scann_ops.so")
    tf.load_op_library(path)
    _LOADED = True
