"""The Bayes-optimal row of the quality benchmark on synthetic data: rank by the generator's own probabilities.

Synthetic data knows its planted truth (``RawTables.truth``), so each query's next item has a known probability
(``synthetic.next_item_probability``). Ranking by it, with the same queries and exclusions as every other row, is
the ceiling: it shows how much of the planted signal a model finds and how much any model could still gain, so a
target such as "model A beats model B by 10%" can be read against what is attainable at all. Not a model; never
the "best other" a lead is measured against.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

NAME = "oracle"


def oracle_topk(tables, users: Sequence[Any], times: Sequence[int], exclude, catalogue_ids: Sequence[Any],
                k: int) -> np.ndarray:
    """[n, k] catalogue indices per query, best first, by the generator's next-item probability at the query's
    time given every event the user had strictly before it; ``exclude`` (per query, or None) as the other rows."""
    from preprocessing.sources import synthetic

    truth = tables.truth
    gen_index = {item: n for n, item in enumerate(tables.items["item_id"])}
    to_gen = np.array([gen_index.get(_text(i), -1) for i in catalogue_ids], np.int64)
    events: Dict[str, list] = {}
    for u, i, t in zip(tables.interactions["user_id"], tables.interactions["item_id"], tables.interactions["timestamp"]):
        events.setdefault(u, []).append((int(t), i))
    for ev in events.values():
        ev.sort()
    user_index = {u: n for n, u in enumerate(tables.users["user_id"])}
    out = np.full((len(users), k), -1, np.int64)
    known = to_gen >= 0
    for q, (u, t) in enumerate(zip(users, times)):
        u, t = _text(u), int(t)
        history = [gen_index[i] for ts, i in events.get(u, []) if ts < t]
        scores = np.full(len(to_gen), -np.inf)
        scores[known] = synthetic.next_item_probability(truth, user_index[u], t, history)[to_gen[known]]
        if exclude is not None and len(exclude[q]):
            scores[np.asarray(exclude[q], np.int64)] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        out[q] = np.where(np.isfinite(scores[top]), top, -1)
    return out


def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)
