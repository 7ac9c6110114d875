"""Raw serving requests from raw tables: what an online feature lookup would assemble.

Used for warmup requests, the demo's example user and the `recsys query` client,
so every request carries exactly the raw features of ``preprocessing.schema``.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

import numpy as np

from preprocessing import schema


def query_request(user: Dict[str, Any], events: Iterable[Dict[str, Any]], at_ts: int,
                  device: str = "unknown", history_length: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Batch-of-one raw query features for ``user`` at time ``at_ts``: history = events strictly before."""
    length = int(history_length or schema.HISTORY_LENGTH)
    past = sorted((e for e in events if e["timestamp"] < at_ts), key=lambda e: (e["timestamp"], e["item_id"]))
    past = past[-length:]
    pad = length - len(past)
    row = {
        "user_id": user.get("user_id", ""),
        "user_age_bucket": user.get("user_age_bucket") or "unknown",
        "user_country": user.get("user_country") or "unknown",
        "user_signup_ts": int(user.get("user_signup_ts") or 0),
        "timestamp": int(at_ts),
        "device": device,
        "history_item_ids": [""] * pad + [e["item_id"] for e in past],
        "history_ts": [0] * pad + [int(e["timestamp"]) for e in past],
        "history_ratings": [0.0] * pad + [float(e.get("rating") or 0.0) for e in past],
    }
    return to_batch([row])


def to_batch(rows, columns: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """Rows of raw features -> dict of batch-first numpy arrays typed as the schema says."""
    names = list(columns or rows[0].keys())
    out = {}
    for name in names:
        col = schema.COLUMNS[name]
        values = [r.get(name, col.default if col.default is not None else col.pad_value()) for r in rows]
        if col.dtype == "string":
            out[name] = np.array(values, dtype=object)
        else:
            out[name] = np.array(values, dtype=np.int64 if col.dtype == "int64" else np.float32)
    return out
