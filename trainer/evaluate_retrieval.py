"""Full-ranking evaluation of a retrieval model beside the popularity baseline, same split and protocol.

Protocol ``time_split_full``: every eval event (the latest events by time) is a
query carrying its own context and history; its item is ranked against the whole
catalogue. Items the user already interacted with (train split + the event's
history) are excluded for both the model and the baseline, when configured.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from trainer import data, evaluation

PROTOCOL = "time_split_full"


def eval_queries(version_dir: str, query_fn: Callable, catalogue: data.Catalogue, stats: data.TrainStats,
                 exclude_seen: bool = True, max_queries: int = 0, batch_size: int = 1024):
    """Query vectors, target catalogue indices and per-query exclusions for the eval split."""
    index = catalogue.index()
    vecs: List[np.ndarray] = []
    targets: List[int] = []
    exclude: List[np.ndarray] = []
    users: List[str] = []
    n = 0
    for batch in data.dataset(version_dir, "eval", batch_size):
        vecs.append(np.asarray(query_fn(batch)))
        item_ids = batch["item_id"].numpy().astype(str)
        user_ids = batch["user_id"].numpy().astype(str)
        hist = batch["history_item_ids"].numpy().astype(str)
        for u, item, h in zip(user_ids, item_ids, hist):
            targets.append(index.get(item, -1))
            users.append(u)
            if exclude_seen:
                recent = np.array([index[i] for i in h if i and i in index], dtype=np.int64)
                exclude.append(np.union1d(stats.seen.get(u, np.empty(0, np.int64)), recent))
        n += len(item_ids)
        if max_queries and n >= max_queries:
            break
    q = np.concatenate(vecs)[: max_queries or None]
    t = np.asarray(targets[: len(q)], np.int64)
    ex = exclude[: len(q)] if exclude_seen else None
    if ex is not None:  # the target itself is never excluded (re-consumption would otherwise be unrankable)
        ex = [e[e != tt] for e, tt in zip(ex, t)]
    return q, t, ex, np.asarray(users[: len(q)])


def evaluate(version_dir: str, query_fn: Callable, item_vectors: np.ndarray, catalogue: data.Catalogue,
             stats: data.TrainStats, cfg, name: str = "two_tower") -> Dict[str, Dict[str, float]]:
    """Metrics of the model and of popularity; returns {name: metrics, "popularity": metrics}."""
    ks = tuple(cfg.eval.ks)
    kmax = max(ks)
    q, targets, exclude, _ = eval_queries(version_dir, query_fn, catalogue, stats, cfg.eval.exclude_seen,
                                          cfg.eval.max_queries)
    genre_vectors = genre_matrix(catalogue)
    results = {}
    for label, topk in ((name, evaluation.full_ranking_topk(q, item_vectors, kmax, exclude)),
                        ("popularity", evaluation.popularity_topk(stats.item_counts, len(q), kmax, exclude))):
        results[label] = evaluation.evaluate_topk(topk, targets, ks, n_items=catalogue.size,
                                                  item_popularity=stats.item_counts, item_vectors=genre_vectors)
    return results


def genre_matrix(catalogue: data.Catalogue) -> np.ndarray:
    """Multi-hot genre vectors per item (for intra-list diversity)."""
    genres = [g.split("|") if g else [] for g in catalogue.raw["item_genres"].astype(str)]
    names = sorted({x for gs in genres for x in gs})
    col = {g: i for i, g in enumerate(names)}
    m = np.zeros((catalogue.size, max(len(names), 1)), np.float32)
    for r, gs in enumerate(genres):
        m[r, [col[g] for g in gs]] = 1.0
    return m


def report(results: Dict[str, Dict[str, float]], ks=(10, 50, 100), title: str = "") -> str:
    cols = ["model"] + [f"recall@{k}" for k in ks] + ["ndcg@10", "mrr", "coverage@10", "n_queries"]
    rows = [dict(model=name, **m) for name, m in results.items()]
    base = results.get("popularity", {})
    for row in rows:
        if row["model"] != "popularity" and base.get("recall@50"):
            row["x_pop@50"] = row.get("recall@50", 0.0) / base["recall@50"]
    return evaluation.format_table(rows, cols + ["x_pop@50"], title=title or f"retrieval ({PROTOCOL})")


def write_metrics(results: Dict, path: str, extra: Optional[Dict] = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = {"protocol": PROTOCOL, "protocol_description": evaluation.PROTOCOLS[PROTOCOL], "results": results}
    payload.update(extra or {})
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)


def item_vectors(candidate_tower, candidates: Dict[str, tf.Tensor], batch_size: int = 4096) -> np.ndarray:
    feats = {k: v for k, v in candidates.items() if v.dtype != tf.string}
    n = int(next(iter(feats.values())).shape[0])
    out = [candidate_tower({k: v[s:s + batch_size] for k, v in feats.items()}).numpy()
           for s in range(0, n, batch_size)]
    return np.concatenate(out)
