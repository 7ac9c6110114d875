"""Cold-start protocols: items never seen in training, and users with no history.

(a) **Cold items.** A share of the items that occur in the eval period is held out *by item*: every one
    of their events before the time cutoff is removed from the raw data, so they never reach training
    (they are not in the item vocabulary: the OOV bucket, exactly as a new catalogue item at serving
    time) but stay in the catalogue. Models are trained on the rest; Recall@50 is measured on the eval
    events whose target is a held-out item, ranking the full catalogue (held-out items included) with
    every item the user had before the event excluded, as in ``trainer/evaluate_retrieval.py``.
(b) **Cold users.** A share of the users seen in the eval period is held out the same way (their earlier
    events removed; their demographics stay in the user table). Their first eval events have no history
    and an unknown user id: the query tower sees only context and demographics. Scored beside popularity.

The split stays the pipeline's own: the removed events all precede the cutoff, and the eval fraction
given to preprocessing is recomputed so that its exact quantile lands on the same cutoff
(``preprocessing/pipeline.py``'s ``ExactQuantile``, method "lower"). After preprocessing, the item
vocabulary is checked: no held-out item may be in it.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from preprocessing.sources.tables import RawTables
from trainer import baselines, evaluation

K = 50


@dataclasses.dataclass
class Holdout:
    """What was held out and the split that keeps it out of training."""

    items: List[str]          # item ids with no event before the cutoff
    users: List[str]          # user ids with no event before the cutoff
    cutoff: int               # train = events strictly before it (the pipeline's rule)
    eval_fraction: float      # preprocess.eval_fraction that reproduces ``cutoff`` on the reduced data
    removed_events: int


def split_cutoff(timestamps: np.ndarray, eval_fraction: float) -> int:
    """The pipeline's time cutoff: the exact (1 - eval_fraction) quantile, method "lower"."""
    return int(np.quantile(np.asarray(timestamps, np.int64), 1.0 - eval_fraction, method="lower"))


def hold_out(tables: RawTables, item_fraction: float = 0.1, user_fraction: float = 0.1, eval_fraction: float = 0.2,
             seed: int = 0) -> "tuple[RawTables, Holdout]":
    """Tables without the held-out items' and users' pre-cutoff events, and what was held out."""
    inter = tables.interactions
    ts = np.asarray(inter["timestamp"], np.int64)
    items = np.asarray(inter["item_id"], dtype=object)
    users = np.asarray(inter["user_id"], dtype=object)
    cutoff = split_cutoff(ts, eval_fraction)
    late = ts >= cutoff
    rng = np.random.default_rng(seed)

    def pick(ids: np.ndarray, fraction: float) -> List[str]:
        pool = sorted(set(ids[late].tolist()))
        n = int(round(fraction * len(pool)))
        return sorted(rng.choice(np.array(pool, dtype=object), size=n, replace=False).tolist()) if n else []

    held_items, held_users = pick(items, item_fraction), pick(users, user_fraction)
    drop = ~late & (np.isin(items, held_items) | np.isin(users, held_users))
    keep = ~drop
    rest = ts[keep]
    n_before = int((rest < cutoff).sum())
    if n_before == 0 or len(rest) < 2:
        raise ValueError("holding out left no training events before the cutoff")
    q = (n_before + 0.5) / (len(rest) - 1)   # floor(q * (n - 1)) = n_before: the first event at the cutoff
    new_fraction = 1.0 - q
    if split_cutoff(rest, new_fraction) != cutoff:
        raise AssertionError("recomputed eval fraction does not reproduce the cutoff")
    kept = {k: [v for v, ok in zip(col, keep) if ok] for k, col in inter.items()}
    out = dataclasses.replace(tables, interactions=kept)
    return out, Holdout(held_items, held_users, cutoff, new_fraction, int(drop.sum()))


def check_unseen(tft_output, holdout: Holdout) -> None:
    """ValueError if any held-out item reached the item vocabulary (i.e. training saw it)."""
    from preprocessing import schema
    from preprocessing.utf8 import to_str

    vocab = set(to_str(np.asarray(tft_output.vocabulary_by_name(schema.VOCAB_ITEM))).tolist())
    leaked = sorted(set(holdout.items) & vocab)
    if leaked:
        raise ValueError(f"{len(leaked)} held-out items are in the training vocabulary, e.g. {leaked[:3]}")


@dataclasses.dataclass
class Segments:
    """Which eval queries each protocol scores (indices into the queries of ``load_queries``)."""

    cold_items: np.ndarray    # target is a held-out item
    warm_items: np.ndarray    # target is any other item
    cold_users: np.ndarray    # held-out user, nothing before the event (no history, unknown id)


def segments(targets: np.ndarray, prior: Sequence[np.ndarray], users: np.ndarray, held_item_index: np.ndarray,
             held_users: Sequence[str]) -> Segments:
    ok = targets >= 0
    cold = ok & np.isin(targets, held_item_index)
    no_history = np.array([len(p) == 0 for p in prior], bool)
    new_user = ok & no_history & np.isin(users, np.asarray(held_users, dtype=object))
    return Segments(np.flatnonzero(cold), np.flatnonzero(ok & ~cold), np.flatnonzero(new_user))


def recall_per_query(topk_fn: Callable[[np.ndarray], np.ndarray], targets: np.ndarray, rows: np.ndarray,
                     k: int = K) -> np.ndarray:
    """Per-query Recall@k of the queries ``rows`` (``topk_fn(rows)`` ranks them)."""
    if len(rows) == 0:
        return np.zeros(0)
    return evaluation.per_query("recall", topk_fn(rows), targets[rows], k)


TIE_SCALE = 1e-5   # far below real score gaps of L2-normalised towers, far above float32 rounding at 1


def model_topk(query_vectors: np.ndarray, item_vectors: np.ndarray, prior: Sequence[np.ndarray],
               k: int = K, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Full-catalogue ranking of the given query rows, seen items excluded, ties broken at random.

    Ties matter here: an id-only tower gives every unseen item the same OOV vector, and a stable sort
    would put them in catalogue order, so a few items would win or lose by their position. A tiny random
    score offset (a few extra dimensions: random unit directions per query and per item, scaled by
    ``TIE_SCALE``, the same for every model) orders tied items differently for each query and leaves every
    other order as it was.
    """
    rng = np.random.default_rng(seed)
    unit = lambda n: (lambda g: g / np.linalg.norm(g, axis=1, keepdims=True))(rng.standard_normal((n, 4)))  # noqa: E731
    q = np.concatenate([query_vectors, TIE_SCALE * unit(len(query_vectors))], axis=1).astype(np.float32)
    v = np.concatenate([item_vectors, unit(len(item_vectors))], axis=1).astype(np.float32)
    return lambda rows: evaluation.full_ranking_topk(q[rows], v, k, [prior[i] for i in rows])


def popularity_topk(item_counts: np.ndarray, prior: Sequence[np.ndarray], k: int = K) -> Callable:
    return lambda rows: evaluation.popularity_topk(item_counts, len(rows), k, [prior[i] for i in rows])


def score(topk_fn: Callable, targets: np.ndarray, seg: Segments, k: int = K) -> Dict[str, np.ndarray]:
    """Per-query Recall@k per segment."""
    return {name: recall_per_query(topk_fn, targets, getattr(seg, name), k)
            for name in ("cold_items", "warm_items", "cold_users")}


K_COLD_ONLY = 10


def cold_only_recall(query_vectors: np.ndarray, item_vectors: np.ndarray, held_idx: np.ndarray, targets: np.ndarray,
                     prior: Sequence[np.ndarray], rows: np.ndarray, k: int = K_COLD_ONLY) -> np.ndarray:
    """Per-query Recall@k of the cold-item queries ranked among the held-out items only (a "new arrivals"
    shelf): how well a tower orders unseen items by themselves, apart from competing with warm ones."""
    pos = {int(c): j for j, c in enumerate(held_idx)}
    local_prior = [np.array([pos[int(i)] for i in prior[r] if int(i) in pos], np.int64) for r in range(len(prior))]
    local_targets = np.array([pos.get(int(t), -1) for t in targets], np.int64)
    fn = model_topk(query_vectors, item_vectors[held_idx], local_prior, k)
    return recall_per_query(fn, local_targets, rows, k)


def lead(a: np.ndarray, b: np.ndarray, users: np.ndarray, n_boot: int = 1000, seed: int = 0,
         metric: str = f"recall@{K}") -> Dict[str, float]:
    """Absolute difference a - b of a per-query metric with a 95% bootstrap interval over users, plus the
    ratio of means (inf when b's mean is 0 and a's is not)."""
    r = baselines.bootstrap_lead(a, b, users, n_boot=n_boot, seed=seed, relative=False)
    r["metric"] = metric
    mb = float(np.nanmean(b)) if len(b) else float("nan")
    r["ratio"] = float(np.nanmean(a)) / mb if mb > 0 else float("inf") if len(a) and np.nanmean(a) > 0 else float("nan")
    return r


# ---------------------------------------------------------------- the protocol end to end
VARIANTS: Dict[str, Dict[str, object]] = {
    # the candidate tower is the only difference; every variant drops unknown user ids (cold users)
    "id_only": {"candidate_tower": "id", "use_item_features": False},
    "id_content": {"candidate_tower": "id", "use_item_features": True},     # today's default tower
    "content": {"candidate_tower": "content", "use_item_features": True},
}


def variant_config(cfg, name: str, images_path: str = "", id_dropout: float = 0.5, user_id_dropout: float = 0.5):
    """A copy of ``cfg`` with the named candidate tower (``VARIANTS``; ``content_no_image``: content, no images)."""
    c = copy.deepcopy(cfg)
    base = "content" if name == "content_no_image" else name
    for key, value in VARIANTS[base].items():
        setattr(c.retrieval, key, value)
    c.retrieval.id_dropout = id_dropout
    c.retrieval.user_id_dropout = user_id_dropout
    c.retrieval.item_images = images_path if name == "content" else ""
    c.retrieval.unseen_items = "keep"  # the held-out items are unseen by design: they are what is measured
    return c


def run(tables: RawTables, cfg, workdir: str, images_path: str = "", variants: Sequence[str] = tuple(VARIANTS),
        item_fraction: float = 0.1, user_fraction: float = 0.1, seed: int = 0, n_boot: int = 1000,
        export_base: str = "", log: Callable[[str], None] = print) -> Dict[str, object]:
    """Hold out, preprocess, train each variant, score both protocols. Returns figures and per-variant rows.

    ``export_base``: also export the content variant's exact retrieval model there and query it (``export_check``).
    """
    from preprocessing import pipeline
    from preprocessing.sources import write_raw
    from recsys import fileio
    from trainer import evaluate_retrieval as er
    from trainer import train

    held, hold = hold_out(tables, item_fraction, user_fraction, cfg.preprocess.eval_fraction, seed)
    log(f"[cold-start] held out {len(hold.items)} items and {len(hold.users)} users "
        f"({hold.removed_events} earlier events removed); cutoff {hold.cutoff}")
    raw_dir = fileio.join(workdir, "raw")
    write_raw(held, raw_dir)
    pcfg = copy.deepcopy(cfg)
    pcfg.preprocess.eval_fraction = hold.eval_fraction
    t0 = time.time()
    version_dir = pipeline.run(pcfg, raw_dir, fileio.join(workdir, "preprocessed"))
    preprocess_s = time.time() - t0
    rows, per, eq, seg, served = [], {}, None, None, None
    for name in variants:
        vcfg = variant_config(pcfg, name, images_path)
        trained = train.train_retrieval(version_dir, vcfg, fileio.join(workdir, "training", name))
        if eq is None:
            check_unseen(trained.tft_output, hold)
        vectors = er.item_vectors(trained.model.candidate_tower,
                                            trained.catalogue.transformed(trained.tft_output.transform_features_layer()))
        eq = er.load_queries(version_dir, lambda b: trained.model.query_tower(b), trained.catalogue, trained.stats)
        if seg is None:
            index = trained.catalogue.index()
            held_idx = np.array([index[i] for i in hold.items if i in index], np.int64)
            seg = segments(eq.targets, eq.prior, eq.users, held_idx, hold.users)
            per["popularity"] = score(popularity_topk(trained.stats.item_counts, eq.prior), eq.targets, seg)
            rows.append(_row("popularity", per["popularity"], 0.0))
        per[name] = score(model_topk(eq.vectors, vectors, eq.prior), eq.targets, seg)
        per[name]["cold_only"] = cold_only_recall(eq.vectors, vectors, held_idx, eq.targets, eq.prior, seg.cold_items)
        rows.append(_row(name, per[name], trained.train_seconds))
        if export_base and name == "content":
            served = export_check(trained, vectors, version_dir, hold, seg.cold_items, eq.targets, export_base,
                                  vcfg.export)
            log(f"[cold-start] exported content model: {served}")
        log(f"[cold-start] {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1].items() if isinstance(v, float)))
    leads = {}
    users = eq.users
    if "content" in per and "id_only" in per:
        c = seg.cold_items
        leads["content_vs_id_only_cold_items"] = lead(per["content"]["cold_items"], per["id_only"]["cold_items"],
                                                      users[c], n_boot, seed)
        leads["content_vs_id_only_cold_only"] = lead(per["content"]["cold_only"], per["id_only"]["cold_only"],
                                                     users[c], n_boot, seed, f"recall@{K_COLD_ONLY} among held-out items")
    if "content" in per and "id_content" in per:
        c = seg.cold_items
        leads["content_vs_id_content_cold_items"] = lead(per["content"]["cold_items"],
                                                         per["id_content"]["cold_items"], users[c], n_boot, seed)
    if "content" in per and "content_no_image" in per:
        c = seg.cold_items
        leads["content_vs_content_no_image_cold_items"] = lead(per["content"]["cold_items"],
                                                               per["content_no_image"]["cold_items"], users[c],
                                                               n_boot, seed)
    for name in variants:
        u = seg.cold_users
        leads[f"{name}_vs_popularity_cold_users"] = lead(per[name]["cold_users"], per["popularity"]["cold_users"],
                                                          users[u], n_boot, seed)
    return {"rows": rows, "leads": leads, "preprocess_seconds": round(preprocess_s, 1),
            "held_out_items": len(hold.items), "held_out_users": len(hold.users),
            "removed_events": hold.removed_events, "cutoff": hold.cutoff, "eval_fraction": hold.eval_fraction,
            "queries": {"cold_items": int(len(seg.cold_items)), "warm_items": int(len(seg.warm_items)),
                        "cold_users": int(len(seg.cold_users))}, "version_dir": version_dir, "export": served}


def raw_requests(version_dir: str, rows: np.ndarray, batch_size: int = 1024) -> Dict[str, np.ndarray]:
    """The raw serving request of each eval event in ``rows`` (its raw query columns, kept by preprocessing)."""
    from preprocessing import schema
    from trainer import data

    cols: Dict[str, list] = {k: [] for k in schema.QUERY_FEATURES}
    for batch in data.dataset(version_dir, "eval", batch_size):
        for k in cols:
            cols[k].append(batch[k].numpy())
    return {k: np.concatenate(v)[rows] for k, v in cols.items()}


def export_check(trained, item_vectors: np.ndarray, version_dir: str, holdout: Holdout, query_rows: np.ndarray,
                 targets: np.ndarray, base: str, ecfg, k: int = K, max_queries: int = 500) -> Dict[str, object]:
    """Serving-side cold start: export the tower's exact retrieval SavedModel over the whole catalogue, reload
    it, send the cold-item queries as raw requests, and count how often the held-out target comes back.

    The served model excludes nothing (exclusion of seen items is the caller's job), so its hit rate is
    compared with the same ranking computed in process, not with the protocol's Recall@50.
    """
    import tensorflow as tf

    from preprocessing.utf8 import to_str
    from trainer import export

    rows = np.asarray(query_rows)[:max_queries]
    ecfg = copy.deepcopy(ecfg)
    ecfg.top_k = k
    ids = trained.catalogue.item_ids
    path = export.export_retrieval(trained.tft_output, trained.model.query_tower, ids, item_vectors, base,
                                   version=1, ecfg=ecfg, kind="brute_force", name="retrieval_content")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    request = raw_requests(version_dir, rows)
    served = to_str(serve(**{n: tf.constant(v) for n, v in request.items()})["item_ids"].numpy())
    want = ids[targets[rows]]
    hits = np.array([t in set(r) for t, r in zip(want, served)])
    q = trained.model.query_tower(trained.tft_output.transform_features_layer()(
        {n: tf.constant(v) for n, v in request.items()})).numpy()
    in_process = ids[evaluation.full_ranking_topk(q, item_vectors, k)]
    agree = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(served, in_process)]))
    held = set(holdout.items)
    return {"model_dir": path, "indexed_items": int(len(ids)),
            "indexed_held_out_items": int(sum(i in held for i in ids.tolist())),
            "queries": int(len(rows)), f"served_cold_target_hits@{k}": float(hits.mean()) if len(hits) else float("nan"),
            "served_results_with_a_held_out_item": float(np.mean([any(i in held for i in r) for r in served])),
            f"served_vs_in_process_overlap@{k}": agree}


def _row(name: str, per: Dict[str, np.ndarray], seconds: float) -> Dict[str, object]:
    mean = lambda v: float(np.nanmean(v)) if v is not None and len(v) else float("nan")  # noqa: E731
    return {"model": name, f"cold_items_recall@{K}": mean(per["cold_items"]),
            f"cold_only_recall@{K_COLD_ONLY}": mean(per.get("cold_only")),
            f"warm_items_recall@{K}": mean(per["warm_items"]), f"cold_users_recall@{K}": mean(per["cold_users"]),
            "train_s": round(float(seconds), 1)}
