"""The completion marker: how a model version says "all my files are here".

A version directory can become visible before its files are complete (``cp -r`` / ``gsutil cp``
straight into ``<base>/<version>/``, a writer that crashed). The writer that knows it is done
writes ``assets.extra/recsys_complete.json`` LAST: the size of every other file in the version.
The server loads a marked version only when every listed file is present with that size (so a
marker copied early by ``cp -r`` just waits for the rest), and loads an unmarked version (written
by other tools, e.g. TF Serving's own test models) only once its files have stopped changing.
TF Serving and ``tf.saved_model.load`` ignore the file.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Tuple

MARKER = "assets.extra/recsys_complete.json"
FORMAT = 1


def _fs():
    """Local paths use ``os`` (no TensorFlow import for exporters and tools); URIs use tf.io.gfile."""
    import tensorflow as tf

    return tf.io.gfile


def file_sizes(version_dir: str) -> Dict[str, int]:
    """{relative path: size} of every file under a version directory, the marker excluded."""
    remote = "://" in version_dir
    walk = _fs().walk if remote else os.walk
    out = {}
    for root, _, files in walk(version_dir):
        for f in files:
            full = os.path.join(root, f)
            rel = os.path.relpath(full, version_dir).replace(os.sep, "/")
            if rel != MARKER:
                out[rel] = _fs().stat(full).length if remote else os.path.getsize(full)
    return out


def write_marker(version_dir: str) -> str:
    """Writes the marker listing the version's files; call it after the last file is written."""
    path = os.path.join(version_dir, MARKER)
    payload = json.dumps({"format": FORMAT, "files": file_sizes(version_dir)}, sort_keys=True)
    tmp = path + ".tmp"
    if "://" in version_dir:
        gfile = _fs()
        gfile.makedirs(os.path.dirname(path))
        with gfile.GFile(tmp, "w") as f:
            f.write(payload)
        gfile.rename(tmp, path, overwrite=True)
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(tmp, "w") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def check(version_dir: str, sizes: Dict[str, int]) -> Tuple[str, str]:
    """("complete" | "incomplete" | "unmarked", detail) given the version's current ``file_sizes``."""
    path = os.path.join(version_dir, MARKER)
    remote = "://" in version_dir
    if not (_fs().exists(path) if remote else os.path.exists(path)):
        return "unmarked", ""
    try:
        with (_fs().GFile(path, "r") if remote else open(path)) as f:
            listed = json.loads(f.read())["files"]
    except Exception as e:  # noqa: BLE001  (a marker still being copied reads as incomplete)
        return "incomplete", f"completion marker {MARKER} is unreadable ({type(e).__name__})"
    missing = [k for k in listed if k not in sizes]
    if missing:
        return "incomplete", f"{len(missing)} of {len(listed)} files listed in {MARKER} are missing (e.g. {missing[0]})"
    short = [k for k, n in listed.items() if sizes[k] != n]
    if short:
        return "incomplete", f"{len(short)} files differ in size from {MARKER} (e.g. {short[0]}: " \
                             f"{sizes[short[0]]} of {listed[short[0]]} bytes)"
    return "complete", ""
