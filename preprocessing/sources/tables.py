"""Raw tables as written by a source, and the on-disk raw layout the Beam pipeline reads.

``<run>/raw/``: ``interactions.jsonl.gz`` (one event a line: user_id, item_id,
timestamp, rating, click, device), ``items.jsonl`` and ``users.jsonl`` (feature
tables keyed by id) and ``dead_letter/`` (rows a source could not parse, with why).
JSON Lines keeps the raw layer human-readable and pickle-free.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
from typing import Any, Dict, Iterator, List, Optional

from preprocessing import schema

INTERACTIONS_FILE = "interactions.jsonl.gz"
ITEMS_FILE = "items.jsonl"
USERS_FILE = "users.jsonl"
DEAD_LETTER_DIR = "dead_letter"


class DataError(ValueError):
    """Raised when input data is unusable (too many malformed rows, missing files)."""


@dataclasses.dataclass
class RawTables:
    """Columnar tables: each a dict of column name -> list of values."""

    users: Dict[str, List[Any]]
    items: Dict[str, List[Any]]
    interactions: Dict[str, List[Any]]
    truth: Optional[Dict[str, Any]] = None   # planted structure (synthetic only), for tests
    dead_letters: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def num_interactions(self) -> int:
        return len(self.interactions["user_id"])


def _rows(table: Dict[str, List[Any]]) -> Iterator[Dict[str, Any]]:
    keys = list(table)
    for values in zip(*(table[k] for k in keys)):
        yield dict(zip(keys, values))


def write_raw(tables: RawTables, raw_dir: str) -> Dict[str, str]:
    """Writes the tables (and any dead letters) under ``raw_dir``; returns the file paths."""
    os.makedirs(raw_dir, exist_ok=True)
    paths = {
        "interactions": os.path.join(raw_dir, INTERACTIONS_FILE),
        "items": os.path.join(raw_dir, ITEMS_FILE),
        "users": os.path.join(raw_dir, USERS_FILE),
    }
    # mtime=0: identical input gives byte-identical files.
    with open(paths["interactions"], "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for row in _rows(tables.interactions):
            f.write((json.dumps(row, sort_keys=True) + "\n").encode())
    for name, table in (("items", tables.items), ("users", tables.users)):
        with open(paths[name], "w") as f:
            for row in _rows(table):
                f.write(json.dumps(row, sort_keys=True) + "\n")
    if tables.dead_letters:
        dl_dir = os.path.join(raw_dir, DEAD_LETTER_DIR)
        os.makedirs(dl_dir, exist_ok=True)
        paths["dead_letter"] = os.path.join(dl_dir, "source.jsonl")
        with open(paths["dead_letter"], "w") as f:
            for row in tables.dead_letters:
                f.write(json.dumps(row, sort_keys=True) + "\n")
    return paths


def read_table(path: str) -> Dict[str, Dict[str, Any]]:
    """Reads items.jsonl / users.jsonl into {id: row}."""
    out = {}
    key = "item_id" if os.path.basename(path).startswith("items") else "user_id"
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            out[row[key]] = row
    return out


def read_interactions(path: str) -> Iterator[Dict[str, Any]]:
    with gzip.open(path, "rt") as f:
        for line in f:
            yield json.loads(line)


# ---------------------------------------------------------------- validation (shared with the Beam pipeline)
_PY_TYPES = {"string": str, "int64": int, "float32": (int, float)}


def validate_interaction(row: Any) -> Optional[str]:
    """Returns why ``row`` is not a usable interaction, or None if it is."""
    if not isinstance(row, dict):
        return "not a JSON object"
    for name in schema.INTERACTION_FIELDS:
        col = schema.COLUMNS[name]
        if name not in row or row[name] is None:
            if col.default is None and name != "device":
                return f"missing field {name!r}"
            continue
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, _PY_TYPES[col.dtype]):
            return f"field {name!r} has type {type(value).__name__}, expected {col.dtype}"
    if not row["user_id"] or not row["item_id"]:
        return "empty user_id or item_id"
    if row["timestamp"] <= 0:
        return f"timestamp {row['timestamp']} is not a positive unix time"
    return None


def with_defaults(row: Dict[str, Any], fields) -> Dict[str, Any]:
    """Fills the schema default for every missing field (used for optional user/item features)."""
    out = {}
    for name in fields:
        col = schema.COLUMNS[name]
        value = row.get(name) if row else None
        out[name] = col.default if value is None else value
    return out
