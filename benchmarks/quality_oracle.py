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


class PlantedTruth:
    """The generator's truth read against one benchmark catalogue: each user's events in time order (as generator
    item indices) and the map from catalogue positions to generator items, built once for both uses below."""

    def __init__(self, tables, catalogue_ids: Sequence[Any]):
        self.truth = tables.truth
        gen_index = {item: n for n, item in enumerate(tables.items["item_id"])}
        self.to_gen = np.array([gen_index.get(_text(i), -1) for i in catalogue_ids], np.int64)
        self.user_index = {u: n for n, u in enumerate(tables.users["user_id"])}
        self.events: Dict[str, list] = {}
        inter = tables.interactions
        for u, i, t in zip(inter["user_id"], inter["item_id"], inter["timestamp"]):
            self.events.setdefault(u, []).append((int(t), gen_index[i]))
        for ev in self.events.values():
            ev.sort()

    def before(self, user: Any, t: int) -> list:
        """The user's items strictly before ``t``, oldest first."""
        return [i for ts, i in self.events.get(_text(user), []) if ts < int(t)]

    def sequel_targets(self, users: Sequence[Any], times: Sequence[int], targets: Sequence[int]) -> np.ndarray:
        """[n] bool: the query's target is the planted successor (next part of the series) of the user's latest
        item. Splitting a metric on it shows where a model's hits come from: the sequential signal, or taste,
        popularity and freshness."""
        succ = self.truth["successor"]
        out = np.zeros(len(users), bool)
        for q, (u, t, target) in enumerate(zip(users, times, targets)):
            history = self.before(u, t)
            out[q] = bool(history) and target >= 0 and succ[history[-1]] == self.to_gen[target] >= 0
        return out

    def topk(self, users: Sequence[Any], times: Sequence[int], exclude, k: int) -> np.ndarray:
        """[n, k] catalogue indices per query, best first, by the generator's next-item probability at the query's
        time given every event the user had strictly before it; ``exclude`` (per query, or None) as the other
        rows."""
        from preprocessing.sources import synthetic

        out = np.full((len(users), k), -1, np.int64)
        known = self.to_gen >= 0
        for q, (u, t) in enumerate(zip(users, times)):
            u, t = _text(u), int(t)
            scores = np.full(len(self.to_gen), -np.inf)
            p = synthetic.next_item_probability(self.truth, self.user_index[u], t, self.before(u, t))
            scores[known] = p[self.to_gen[known]]
            if exclude is not None and len(exclude[q]):
                scores[np.asarray(exclude[q], np.int64)] = -np.inf
            top = np.argsort(-scores, kind="stable")[:k]
            out[q] = np.where(np.isfinite(scores[top]), top, -1)
        return out


def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)
