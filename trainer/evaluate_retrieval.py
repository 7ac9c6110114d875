"""Full-ranking evaluation of a retrieval model beside popularity and the classic baselines.

Protocol ``time_split_full``: every eval event (the latest events by time) is a query
carrying its own context and history; its item is ranked against the whole catalogue.
**Seen items excluded**: every item the user interacted with strictly before the event
(train split *and* earlier eval events, not only the last 20 in its history) is removed
from every model's ranking, and events whose item the user already had (re-consumption)
are left out, since no model that excludes seen items can get them right. Popularity,
EASE, item-kNN and implicit ALS score the same queries from that same prior item set.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from preprocessing.schema import T
from preprocessing.utf8 import to_str
from trainer import baselines, data, evaluation, text_table

PROTOCOL = "time_split_full"
RULE = "seen = every item the user had strictly before the event (train + eval period), excluded for every model"


@dataclasses.dataclass
class EvalQueries:
    """The eval split as queries: vectors (if a model was given), targets, prior items, users, times."""

    vectors: Optional[np.ndarray]   # [n, d]
    targets: np.ndarray             # [n] catalogue index; -1 = not rankable (unknown item or re-consumption)
    prior: List[np.ndarray]         # per query: catalogue indices the user had strictly before the event
    users: np.ndarray               # [n] str
    times: np.ndarray               # [n] int64
    n_repeat: int = 0               # queries left out because the user already had the item
    items: Optional[np.ndarray] = None  # [n] the logged item of every query (repeats included)


def load_queries(version_dir: str, query_fn: Optional[Callable], catalogue: data.Catalogue,
                 stats: data.TrainStats, max_queries: int = 0, batch_size: int = 1024, split: str = "eval",
                 time_range: Optional[tuple] = None) -> EvalQueries:
    """Reads every eval event (for exact prior sets) and embeds the first ``max_queries`` (0 = all).

    ``split`` / ``time_range``: other events as the queries, e.g. the train split's latest ones for a model
    and ``stats`` restricted to the events before them (`recsys tune` scores its trials so)."""
    index = catalogue.index()
    vecs: List[np.ndarray] = []
    items: List[np.ndarray] = []
    users: List[np.ndarray] = []
    times: List[np.ndarray] = []
    n = 0
    for batch in data.dataset(version_dir, split, batch_size, time_range=time_range):
        if query_fn is not None and (not max_queries or n < max_queries):
            vecs.append(np.asarray(query_fn(batch)))
        items.append(np.array([index.get(i, -1) for i in to_str(batch["item_id"])], np.int64))
        users.append(to_str(batch["user_id"]))
        times.append(batch[T.TIMESTAMP].numpy().astype(np.int64))
        n += len(items[-1])
    all_items, all_users, all_times = (np.concatenate(items), np.concatenate(users), np.concatenate(times))
    m = min(max_queries, len(all_items)) if max_queries else len(all_items)
    # prior items: train events plus eval events strictly earlier than each query
    pool_u = np.concatenate([stats.users, all_users]) if stats.users is not None else all_users
    pool_i = np.concatenate([stats.items, all_items]) if stats.items is not None else all_items
    pool_t = np.concatenate([stats.times, all_times]) if stats.times is not None else all_times
    prior = baselines.prior_items(pool_u, pool_i, pool_t, all_users[:m], all_times[:m])
    if stats.users is None:  # stats without event arrays: fall back to the train item sets
        prior = [np.union1d(p, stats.seen.get(u, np.empty(0, np.int64))) for p, u in zip(prior, all_users[:m])]
    targets = all_items[:m].copy()
    repeat = np.array([t >= 0 and t in p for t, p in zip(targets, prior)], bool)
    targets[repeat] = -1
    q = np.concatenate(vecs)[:m] if vecs else None
    return EvalQueries(q, targets, prior, all_users[:m], all_times[:m], int(repeat.sum()), all_items[:m])


def eval_queries(version_dir: str, query_fn: Callable, catalogue: data.Catalogue, stats: data.TrainStats,
                 exclude_seen: bool = True, max_queries: int = 0, batch_size: int = 1024):
    """(query vectors, targets, per-query exclusions or None, users): the protocol's queries for one model."""
    eq = load_queries(version_dir, query_fn, catalogue, stats, max_queries, batch_size)
    return eq.vectors, eq.targets, (eq.prior if exclude_seen else None), eq.users


def evaluate(version_dir: str, query_fn: Callable, item_vectors: np.ndarray, catalogue: data.Catalogue,
             stats: data.TrainStats, cfg, name: str = "two_tower", with_baselines: Optional[bool] = None,
             details: Optional[Dict] = None) -> Dict[str, Dict[str, float]]:
    """Metrics of the model, popularity and the classic baselines (``cfg.eval.baselines``) on the same queries.

    ``details`` (a dict) receives per-query values, tuning records and the bootstrap leads.
    """
    ks = tuple(cfg.eval.ks)
    kmax = max(ks)
    eq = load_queries(version_dir, query_fn, catalogue, stats, cfg.eval.max_queries)
    exclude = eq.prior if cfg.eval.exclude_seen else None
    genre_vectors = genre_matrix(catalogue)
    tops = {name: evaluation.full_ranking_topk(eq.vectors, item_vectors, kmax, exclude),
            "popularity": evaluation.popularity_topk(stats.item_counts, len(eq.targets), kmax, exclude)}
    tuning = {}
    use = cfg.eval.baselines if (with_baselines is None or with_baselines) else ()
    if use and stats.users is not None:
        split = baselines.Split(stats.users, stats.items, stats.times)
        for kind in use:
            t0 = time.time()
            try:
                model, rec = baselines.fit_tuned(kind, split, catalogue.size, tune_first=cfg.eval.tune_baselines)
            except baselines.TooLarge as e:
                print(f"[evaluate] {e}", flush=True)
                tuning[kind] = {"skipped": str(e)}
                continue
            tops[kind] = model.topk(eq.prior, kmax, exclude, catalogue.size, order_key=eq.users)
            rec["seconds_total"] = round(time.time() - t0, 1)
            tuning[kind] = rec
            form = f" ({rec['form']}: past the dense limit)" if rec.get("form", "dense") != "dense" else ""
            print(f"[evaluate] {kind}: {rec.get('param') or 'param'}={rec.get('best')}{form} "
                  f"({rec['seconds_total']:.1f}s)", flush=True)
    results = {}
    for label, topk in tops.items():
        results[label] = evaluation.evaluate_topk(topk, eq.targets, ks, n_items=catalogue.size,
                                                  item_popularity=stats.item_counts, item_vectors=genre_vectors)
    leads = leads_over_best(tops, eq, name, cfg) if len(tops) > 2 else {}
    if leads:
        results[name]["lead_over_best"] = leads
        results[name]["lead_over_best_per_user"] = leads_over_best(tops, eq, name, cfg, per_user=True)
    for label, values in user_averages(tops, eq).items():
        results[label].update(values)
    if details is not None:
        details.update({"tuning": tuning, "leads": leads, "n_repeat_left_out": eq.n_repeat,
                        "n_eval_events": len(eq.targets)})
    return results


LEAD_METRICS = ("recall@50", "ndcg@10")


def per_unit(tops: Dict[str, np.ndarray], eq: EvalQueries, metric: str, per_user: bool = False):
    """({row: per-query values of ``metric``}, the users they belong to); ``per_user``: each user's mean instead.

    A time split's eval events are as uneven as the users' activity (ml-latest-small: one user has 25% of
    them, five users 44%), so per-event means mostly say how a model serves its heaviest users; each user
    counted once says how it serves a typical one. Every row has the same NaN queries (no target), so the
    same users."""
    kind, k = metric.split("@")
    per = {label: evaluation.per_query(kind, topk, eq.targets, int(k)) for label, topk in tops.items()}
    if not per_user:
        return per, eq.users
    means = {label: evaluation.user_means(v, eq.users) for label, v in per.items()}
    return {label: v for label, (v, _) in means.items()}, next(iter(means.values()))[1]


def user_averages(tops: Dict[str, np.ndarray], eq: EvalQueries) -> Dict[str, Dict[str, float]]:
    """{row: {"user_recall@50": ..., "user_ndcg@10": ...}}: the lead metrics with every user counted once."""
    out: Dict[str, Dict[str, float]] = {label: {} for label in tops}
    for metric in LEAD_METRICS:
        per, _ = per_unit(tops, eq, metric, per_user=True)
        for label, values in per.items():
            out[label][f"user_{metric}"] = float(values.mean()) if values.size else float("nan")
    return out


def leads_over_best(tops: Dict[str, np.ndarray], eq: EvalQueries, name: str, cfg,
                    per_user: bool = False) -> Dict[str, Dict]:
    """The model's relative lead over the best other row, per metric, with a 95% user-bootstrap interval
    (``per_user``: on each user's mean, every user counted once; ``per_unit``)."""
    out = {}
    for metric in LEAD_METRICS:
        per, users = per_unit(tops, eq, metric, per_user)
        others = {label: float(np.nanmean(v)) for label, v in per.items() if label != name}
        best = max(others, key=others.get)
        r = baselines.bootstrap_lead(per[name], per[best], users, n_boot=cfg.eval.bootstrap, seed=cfg.train.seed)
        r["versus"] = best
        out[metric] = r
    return out


def genre_matrix(catalogue: data.Catalogue) -> np.ndarray:
    """Multi-hot genre vectors per item (for intra-list diversity)."""
    genres = [g.split("|") if g else [] for g in to_str(catalogue.raw["item_genres"])]
    names = sorted({x for gs in genres for x in gs})
    col = {g: i for i, g in enumerate(names)}
    m = np.zeros((catalogue.size, max(len(names), 1)), np.float32)
    for r, gs in enumerate(genres):
        m[r, [col[g] for g in gs]] = 1.0
    return m


def report(results: Dict[str, Dict[str, float]], ks=(10, 50, 100), title: str = "") -> str:
    cols = ["model"] + [f"recall@{k}" for k in ks] + ["ndcg@10", "mrr", "coverage@10", "n_queries"]
    rows = [dict(model=name, **{k: v for k, v in m.items() if not isinstance(v, dict)}) for name, m in results.items()]
    base = results.get("popularity", {})
    for row in rows:
        if row["model"] != "popularity" and base.get("recall@50"):
            row["x_pop@50"] = row.get("recall@50", 0.0) / base["recall@50"]
    text = text_table.format_table(rows, cols + ["x_pop@50"], float_fmt=".4f",
                                   title=title or f"retrieval ({PROTOCOL}; {RULE})")
    for name, m in results.items():
        for metric, r in (m.get("lead_over_best") or {}).items():
            text += (f"\n{name} vs best other ({r['versus']}) on {metric}: {baselines.format_lead(r)} "
                     f"(95% bootstrap over {r['n_users']} users)")
    for name, m in results.items():
        per_user = m.get("lead_over_best_per_user") or {}
        for metric, r in per_user.items():
            order = [name] + [label for label in results if label != name]   # the model first
            means = ", ".join(f"{label} {results[label][f'user_{metric}']:.4f}" for label in order
                              if f"user_{metric}" in results[label])
            text += (f"\neach of the {r['n_users']} users counted once, {metric}: {means}; {name} vs best other "
                     f"({r['versus']}): {baselines.format_lead(r)}")
    return text


def write_metrics(results: Dict, path: str, extra: Optional[Dict] = None) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    payload = {"protocol": PROTOCOL, "protocol_description": evaluation.PROTOCOLS[PROTOCOL], "rule": RULE,
               "results": results}
    payload.update(extra or {})
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)


def item_vectors(candidate_tower, candidates: Dict[str, tf.Tensor], batch_size: int = 4096,
                 servable: Optional[np.ndarray] = None) -> np.ndarray:
    """Every catalogue item's vector. Strings are left out, but the raw item_id, which the content tower's
    image lookup reads (trainer/models/content.py); the id tower selects its own inputs.

    Rows of items the index leaves out (``servable`` False; trainer/unseen_items.py) are NaN: every ranking
    here reads a NaN score as -inf (evaluation.top_k_from_scores) and ``export.build_index`` skips the row."""
    feats = {k: v for k, v in candidates.items() if v.dtype != tf.string or k == "item_id"}
    n = int(next(iter(feats.values())).shape[0])
    out = [candidate_tower({k: v[s:s + batch_size] for k, v in feats.items()}).numpy()
           for s in range(0, n, batch_size)]
    vectors = np.concatenate(out)
    if servable is not None:
        vectors[~np.asarray(servable, bool)] = np.nan
    return vectors


def catalogue_vectors(trained) -> np.ndarray:
    """``item_vectors`` of a TrainedRetrieval's whole catalogue, left-out items NaN."""
    candidates = trained.catalogue.transformed(trained.tft_output.transform_features_layer())
    return item_vectors(trained.model.candidate_tower, candidates, servable=trained.stats.servable)
