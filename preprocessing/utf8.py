"""UTF-8 at every boundary between Python strings and TensorFlow/NumPy bytes.

NumPy's ``astype(str)`` / ``astype(bytes)`` use ASCII and raise on titles such as
"Misérables, Les" (and on non-Latin ids); TensorFlow string tensors hold raw bytes.
Every conversion in the project goes through these two functions, so text is UTF-8 end to end.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def to_str(values: Any) -> np.ndarray:
    """Array of Python str (NumPy unicode) from bytes, str, or a tf.Tensor/ndarray of either; bytes are UTF-8."""
    if hasattr(values, "numpy"):
        values = values.numpy()
    a = np.asarray(values, dtype=object)
    flat = [v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v) for v in a.ravel().tolist()]
    return np.array(flat, dtype=str).reshape(a.shape) if flat else np.empty(a.shape, dtype=str)


def to_bytes(values: Any) -> np.ndarray:
    """Object array of UTF-8 bytes (what tf.constant(..., tf.string) and tf.Variable need)."""
    if hasattr(values, "numpy"):
        values = values.numpy()
    a = np.asarray(values, dtype=object)
    flat = [v if isinstance(v, bytes) else bytes(v) if isinstance(v, np.bytes_) else str(v).encode("utf-8")
            for v in a.ravel().tolist()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(a.shape)
