"""The completion marker: how a model version says "all my files are here".

A version directory can become visible before its files are complete (``cp -r`` / ``gsutil cp``
straight into ``<base>/<version>/``, a writer that crashed). The writer that knows it is done
writes ``assets.extra/recsys_complete.json`` LAST: the size of every other file in the version.
The server loads a marked version only when every listed file is present with that size (so a
marker copied early by ``cp -r`` just waits for the rest), and loads an unmarked version (written
by other tools, e.g. TF Serving's own test models) only once its files have stopped changing.
TF Serving and ``tf.saved_model.load`` ignore the file. Any filesystem tf.io.gfile reads (``recsys.fileio``).
"""
from __future__ import annotations

import json
from typing import Dict, Tuple

from recsys import fileio

MARKER = "assets.extra/recsys_complete.json"
FORMAT = 1
# <model base path>/.publishing-<version>: the version is still being copied into an object store
# (trainer/publish.py); readers do not list it until the file is gone (serving/models.list_versions).
PUBLISHING = ".publishing-"


def file_sizes(version_dir: str) -> Dict[str, int]:
    """{relative path: size} of every file under a version directory, the marker excluded (any filesystem)."""
    return {rel: fileio.size(fileio.join(version_dir, rel))
            for rel in fileio.files_under(version_dir) if rel != MARKER}


def write_marker(version_dir: str) -> str:
    """Writes the marker listing the version's files; call it after the last file is written."""
    path = fileio.join(version_dir, MARKER)
    payload = json.dumps({"format": FORMAT, "files": file_sizes(version_dir)}, sort_keys=True)
    return fileio.write_text(path, payload, atomic=True)


def check(version_dir: str, sizes: Dict[str, int]) -> Tuple[str, str]:
    """("complete" | "incomplete" | "unmarked", detail) given the version's current ``file_sizes``."""
    path = fileio.join(version_dir, MARKER)
    if not fileio.exists(path):
        return "unmarked", ""
    try:
        listed = json.loads(fileio.read_text(path))["files"]
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
