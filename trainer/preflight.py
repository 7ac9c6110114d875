"""Checks before training that what the exports will need is there, so a bad catalogue fails in seconds.

A real-data problem must never surface only at the last export after many minutes of training
(MovieLens titles such as "Misérables, Les" once crashed the recommend export): every string
the exports embed is encoded to UTF-8 here, ids are checked for emptiness and uniqueness, and
the train split must be non-empty.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from preprocessing.sources.tables import DataError
from preprocessing.utf8 import to_bytes
from trainer import data


def check(version_dir: str) -> Dict[str, int]:
    """Raises DataError (one line: what and where) on the first problem; returns a few counts otherwise."""
    catalogue = data.load_catalogue(version_dir)
    problems: List[str] = []
    if catalogue.size == 0:
        problems.append("the item catalogue is empty")
    for name, values in catalogue.raw.items():
        if values.dtype != object and values.dtype.kind not in "US":
            continue
        try:
            to_bytes(values)
        except UnicodeEncodeError as e:
            bad = next(i for i, v in enumerate(values.tolist()) if not _encodable(v))
            problems.append(f"{name} of item {catalogue.item_ids[bad]!r} is not valid UTF-8 text ({e.reason})")
    ids = catalogue.item_ids
    if (ids == "").any():
        problems.append(f"{int((ids == '').sum())} items have an empty item_id")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        problems.append(f"duplicate item_id {uniq[counts > 1][0]!r} ({int((counts > 1).sum())} duplicated ids)")
    try:
        n_train = len(data.files(version_dir, "train"))
    except FileNotFoundError:
        n_train = 0
    if not n_train:
        problems.append("no train split was written")
    if problems:
        raise DataError(f"{version_dir}: " + "; ".join(problems))
    return {"items": catalogue.size, "train_files": n_train}


def _encodable(v) -> bool:
    try:
        str(v).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
