"""quality: every model on the same splits of synthetic data and of MovieLens, under three protocols,
beside published reference figures (which are quoted, never measured here).

Per dataset (synthetic data at the config's default size; ``ml-latest-small`` from
``../shared/data`` when present, else skipped with the reason; your own interaction log with
``--datasets log --log PATH``, read as ``recsys data csv`` reads it):

* ``time_split_full`` (the project's protocol, ``trainer/evaluate_retrieval.py``): the
  pipeline's own split (latest 10% of events by time = test); every test event is a query
  with its own context and history, ranked against the whole catalogue, the user's earlier
  items excluded.
* ``leave_one_out_full``: each user's latest interaction (ties broken by item id) is the
  test item, ranked against the whole catalogue with the user's training items excluded;
  the models are re-trained on everything else. The split is cut from a second run of the
  pipeline with ``eval_fraction=0`` so the vocabularies cover the test items (as in the
  usual LOO setups); ``--loo-source time_split`` cuts it from the time-split run instead
  (faster; items first seen in the last 10% of time are then out of vocabulary, which makes
  LOO numbers pessimistic: used by ``--quick``).
* ``sampled_1_99`` (NCF protocol, He et al. 2017): the same LOO test item ranked among 99
  items sampled uniformly from those the user never interacted with. Only for comparison
  with published numbers: sampled metrics are known to be inconsistent with full ranking
  (Krichene & Rendle, KDD 2020).

Models on every protocol: ``popularity`` (train-split counts, same exclusions) and
``two_tower`` (``trainer.models.retrieval``). When the ranking stage exists
(``trainer/train_ranking.py``), each ranker (default DCN-v2) is trained on the train split of
the time-split protocol (``--ranker-protocols`` adds leave-one-out) and re-ranks the
two-tower's top-100 (``two_tower+<ranker>``); the sampled protocol has no retrieval stage, so
rankers are not run there. On synthetic data an ``oracle`` row ranks by the generator's own next-item
probabilities (``benchmarks/quality_oracle.py``): the ceiling, not a model; leads never compare against it.

Metrics for every row: recall@10/50/100, nDCG@10, MRR (over the whole returned list) and
MRR@10, catalogue coverage@10, novelty@10 (mean self-information, bits) and popularity
bias@10 (mean popularity percentile of recommended items), all from ``trainer.evaluation``.

Run ``python -m benchmarks.quality --help``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np

from benchmarks import common, quality_oracle

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MOVIELENS = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "ml-latest-small"))
PROTOCOLS = ("time_split_full", "leave_one_out_full", "sampled_1_99", "tfrs_random_80_20")
KS = (10, 50, 100)

# Published figures, quoted with their source. None of them is a measurement of this project.
REFERENCES: List[Dict[str, Any]] = [
    {
        "source": "Kang & McAuley, Self-Attentive Sequential Recommendation, ICDM 2018 (arXiv:1808.09781), Table III",
        "model": "SASRec",
        "dataset": "MovieLens-1M (ML-1M)",
        "protocol": "sampled_1_99",
        "protocol_note": "leave-one-out (latest item = test); the test item ranked with 100 randomly sampled "
                         "negatives (1+100; ours is 1+99); users/items with < 5 interactions removed",
        "metrics": {"hr@10": 0.8245, "ndcg@10": 0.5905},
    },
    {
        "source": "He et al., Neural Collaborative Filtering, WWW 2017 (arXiv:1708.05031), Table 2, "
                  "64 predictive factors",
        "model": "NeuMF (with pre-training)",
        "dataset": "MovieLens-1M (ML-1M)",
        "protocol": "sampled_1_99",
        "protocol_note": "leave-one-out (latest interaction = test); the test item ranked among 100 items: "
                         "itself + 99 sampled items the user never interacted with",
        "metrics": {"hr@10": 0.730, "ndcg@10": 0.447},
    },
    {
        "source": "He et al., Neural Collaborative Filtering, WWW 2017 (arXiv:1708.05031), Table 2, "
                  "64 predictive factors",
        "model": "NeuMF (without pre-training)",
        "dataset": "MovieLens-1M (ML-1M)",
        "protocol": "sampled_1_99",
        "protocol_note": "as above",
        "metrics": {"hr@10": 0.705, "ndcg@10": 0.426},
    },
    {
        "source": "RecBole benchmark, github.com/RUCAIBox/RecBole benchmark/hyper/sequential/SASRec-ml-1m_seq.md "
                  "(test result at the best learning rate, 0.0005)",
        "model": "SASRec (RecBole)",
        "dataset": "MovieLens-1M (ML-1M), ratings >= 3, 10-core (6,040 users, 3,124 items, 834,449 interactions)",
        "protocol": "leave_one_out_full",
        "protocol_note": "chronological leave-one-out, full ranking over all items (RecBole 'LS valid_and_test', "
                         "mode full); MRR is MRR@10",
        "metrics": {"recall@10": 0.2468, "ndcg@10": 0.1286, "mrr@10": 0.0929},
    },
]
REFERENCE_NOTES = [
    "Dataset difference: the published figures are for MovieLens-1M (6,040 users, 3,706 movies, 1,000,209 ratings, "
    "every user >= 20 ratings); we run ml-latest-small (610 users, 9,742 movies, 100,836 ratings): fewer users to "
    "learn from and a catalogue 2.6x larger, which lowers full-ranking metrics; sampled metrics depend far less on "
    "catalogue size. Treat the comparison as a sanity range, not a leaderboard.",
    "Protocol differences: our queries carry the test event's own context (hour, weekday; MovieLens has no device) "
    "and the last 20 items before it; SASRec uses up to 200 (ML-1M) previous items; NCF uses only user and item ids.",
    "TFRS basic retrieval tutorial (tensorflow.org/recommenders/examples/basic_retrieval): top-100 categorical "
    "accuracy on a random 80/20 split of MovieLens 100K, no exclusion of seen items. Not quoted: the number is the "
    "notebook output of each docs build, not a stable published figure (copies in public repositories read about "
    "0.19-0.23), and a random split is not one of our protocols.",
]


# --------------------------------------------------------------------------- data and splits


def write_tables(name: str, args, raw_dir: str):
    """Raw tables for a dataset under raw_dir; returns a description and the tables (synthetic: with their truth)."""
    from preprocessing.sources import write_raw

    if name == "synthetic":
        from preprocessing.sources import synthetic

        tables = synthetic.generate(n_users=args.synthetic_users, n_items=args.synthetic_items,
                                    events_per_user=args.synthetic_events, seed=args.seed)
        desc = (f"synthetic.generate(n_users={args.synthetic_users}, n_items={args.synthetic_items}, "
                f"events_per_user={args.synthetic_events:g}, seed={args.seed})")
    elif name == "log":   # the team's own interaction log, read as `recsys data csv` reads it (data.* of --set)
        from preprocessing.sources import load_source
        from recsys.config import load_config

        d = load_config(overrides=args.set).data
        d.source, d.path = "csv", args.log
        tables = load_source(d)
        desc = f"load_source(data.source=csv, path={args.log!r}), {len(tables.dead_letters)} malformed rows left out"
    else:
        from preprocessing.sources import movielens

        tables = movielens.load(args.movielens)
        layout = movielens.detect_layout(args.movielens)
        desc = f"movielens.load({args.movielens!r}) (layout {layout})"
    write_raw(tables, raw_dir)
    label = dataset_label(name, args)
    return {"description": desc, "label": label, "interactions": tables.num_interactions,
            "users": len(tables.users["user_id"]), "items": len(tables.items["item_id"])}, tables


def dataset_label(name: str, args) -> str:
    """What was actually loaded: 'synthetic' or 'MovieLens <layout> (<directory name>)', never a guess."""
    if name == "synthetic":
        return f"synthetic ({args.synthetic_users} users, {args.synthetic_items} items)"
    if name == "log":
        return f"log ({os.path.basename(os.path.normpath(args.log))})"
    from preprocessing.sources import movielens

    layout = movielens.detect_layout(args.movielens)
    return f"MovieLens {layout} ({os.path.basename(os.path.normpath(args.movielens))})"


def make_config(args, workdir: str):
    from recsys.config import load_config

    cfg = load_config(overrides=args.set)
    cfg.workdir = workdir
    if args.epochs:
        cfg.train.epochs = args.epochs
    cfg.ranking.max_train_events = args.ranker_max_train_events
    if args.ranker_epochs:
        cfg.ranking.epochs = args.ranker_epochs
    return cfg


def preprocess_full_vocabulary(args, raw_dir: str, work: str) -> str:
    """The pipeline over every event (``preprocess.eval_fraction=0``): the vocabularies and statistics
    leave-one-out is cut from, so its test items are known to the model (a time split's are not)."""
    from preprocessing import pipeline

    cfg = make_config(args, work)
    cfg.preprocess.eval_fraction = 0.0
    return pipeline.run(cfg, raw_dir, os.path.join(work, "full_vocab"))


def derive_leave_one_out(source_dir: str, out_base: str, seed: int = 0) -> str:
    """A version dir whose eval split is each user's latest event and whose train split is everything else.

    Records are copied byte for byte from ``source_dir``'s transformed train + eval files, so
    features, history and the transform graph are the pipeline's own. Ties in time are broken
    by item id (as the pipeline's history does). Returns the new version directory.
    """
    from trainer import evaluation

    return _rewrite_split(source_dir, out_base, "leave_one_out",
                          lambda u, it, t: evaluation.leave_one_out(u, it, t)[1])


def _rewrite_split(source_dir: str, out_base: str, split_name: str, test_of: Callable) -> str:
    """Re-partitions a version dir's records: ``test_of(users, items, times)`` (sorted by user, time, item) -> mask."""
    import tensorflow as tf

    from preprocessing import pipeline
    from trainer import data

    files = data.files(source_dir, "train")
    try:
        files += data.files(source_dir, "eval")
    except FileNotFoundError:
        pass
    spec = {"user_id": tf.io.FixedLenFeature([], tf.string), "item_id": tf.io.FixedLenFeature([], tf.string),
            "timestamp": tf.io.FixedLenFeature([], tf.int64)}
    records: List[np.ndarray] = []
    users: List[np.ndarray] = []
    items: List[np.ndarray] = []
    ts: List[np.ndarray] = []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192):
        parsed = tf.io.parse_example(batch, spec)
        records.append(batch.numpy())
        users.append(parsed["user_id"].numpy())
        items.append(parsed["item_id"].numpy())
        ts.append(parsed["timestamp"].numpy())
    rec = np.concatenate(records)
    u, it, t = np.concatenate(users), np.concatenate(items), np.concatenate(ts)
    order = np.lexsort((it, t, u))                       # by user, time, item id
    test_sorted = np.asarray(test_of(u[order], it[order], t[order]), bool)
    test = np.zeros(len(rec), bool)
    test[order[test_sorted]] = True

    final = pipeline.next_version_dir(out_base)
    work = final + ".tmp"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "transformed"))
    for split, mask in (("train", ~test), ("eval", test)):
        path = os.path.join(work, "transformed", f"{split}-00000-of-00001.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as w:
            for r in rec[mask]:
                w.write(r)
    shutil.copytree(os.path.join(source_dir, "transform_fn"), os.path.join(work, "transform_fn"))
    for name in ("items.jsonl", "raw_schema.json"):
        if os.path.exists(os.path.join(source_dir, name)):
            shutil.copy(os.path.join(source_dir, name), os.path.join(work, name))
    with open(os.path.join(work, "stats.json"), "w") as f:
        json.dump({"train": int((~test).sum()), "eval": int(test.sum()), "dead_letters": 0,
                   "split": split_name, "split_cutoff_ts": 0, "source": source_dir}, f, indent=2)
    os.rename(work, final)
    with open(os.path.join(out_base, "LATEST"), "w") as f:
        f.write(os.path.basename(final))
    return final


# --------------------------------------------------------------------------- evaluation


def metrics_row(topk: np.ndarray, targets: np.ndarray, n_items: int, popularity: np.ndarray,
                genres: np.ndarray) -> Dict[str, float]:
    from trainer import evaluation

    m = evaluation.evaluate_topk(topk, targets, KS, n_items=n_items, item_popularity=popularity, item_vectors=genres)
    m["mrr@10"] = evaluation.mrr(np.asarray(topk)[:, :10], targets)
    return m


def train_two_tower(version_dir: str, cfg, out_dir: str):
    from trainer import evaluate_retrieval as er
    from trainer import train as trainer_train

    t0 = time.perf_counter()
    trained = trainer_train.train_retrieval(version_dir, cfg, out_dir=out_dir)
    return trained, er.catalogue_vectors(trained), time.perf_counter() - t0


def full_ranking(version_dir: str, trained, vectors: np.ndarray, cfg) -> Dict[str, Any]:
    """Two-tower and popularity top-100 on a version dir's eval split (trainer.evaluate_retrieval's queries)."""
    from trainer import evaluate_retrieval as er
    from trainer import evaluation

    eq = er.load_queries(version_dir, lambda b: trained.model.query_tower(b), trained.catalogue, trained.stats,
                         cfg.eval.max_queries)
    exclude = eq.prior if cfg.eval.exclude_seen else None
    kmax = max(KS)
    return {"q": eq.vectors, "targets": eq.targets, "exclude": exclude, "users": eq.users, "prior": eq.prior,
            "times": eq.times,
            "topk": {"popularity": evaluation.popularity_topk(trained.stats.item_counts, len(eq.targets), kmax,
                                                              exclude),
                     "two_tower": evaluation.full_ranking_topk(eq.vectors, vectors, kmax, exclude)}}


def fit_baselines(trained, kinds: Sequence[str], log: Callable[[str], None], tag: str) -> Dict[str, Any]:
    """Each classic baseline tuned on the latest 10% of the split's train events, then fit on all of them."""
    from trainer import baselines

    split = baselines.Split(trained.stats.users, trained.stats.items, trained.stats.times)
    out = {}
    for kind in kinds:
        try:
            model, rec = baselines.fit_tuned(kind, split, trained.catalogue.size)
        except baselines.TooLarge as e:
            log(f"[{tag}] {e}")
            continue
        form = f", {rec['form']}" if rec.get("form", "dense") != "dense" else ""
        log(f"[{tag}] {kind}: {rec.get('param')}={rec.get('best')} (tuned in {rec.get('seconds', 0):.0f} s, "
            f"fit {rec['fit_seconds']:.0f} s{form})")
        out[kind] = (model, rec)
    return out


def lead_over_best(topks: Dict[str, np.ndarray], targets: np.ndarray, users: np.ndarray, model: str = "two_tower",
                   metric: str = "recall@50", seed: int = 0, per_user: bool = False) -> Optional[Dict[str, Any]]:
    """``model``'s relative lead over the best other non-ranker row, 95% bootstrap interval over users;
    ``per_user``: on each user's mean (every user counted once) instead of each query."""
    from trainer import baselines, evaluation

    kind, k = metric.split("@")
    per = {m: evaluation.per_query(kind, t, targets, int(k)) for m, t in topks.items()
           if m == model or ("+" not in m and m != quality_oracle.NAME)}
    if per_user:   # the same queries are NaN for every model (no target), so every model has the same users
        means = {m: evaluation.user_means(v, users) for m, v in per.items()}
        per, users = {m: v for m, (v, _) in means.items()}, next(iter(means.values()))[1]
    others = {m: float(np.nanmean(v)) for m, v in per.items() if m != model}
    if model not in per or not others:
        return None
    best = max(others, key=others.get)
    r = baselines.bootstrap_lead(per[model], per[best], users, seed=seed)
    r.update({"model": model, "versus": best, "metric": metric, "per_user": per_user})
    return r


def sampled(ev: Dict[str, Any], trained, vectors: np.ndarray, n_negatives: int, seed: int,
            fitted: Optional[Dict[str, Any]] = None,
            extra_vectors: Optional[Dict[str, tuple]] = None) -> Dict[str, np.ndarray]:
    """Every model's ranking of each test item among the same sampled negatives (``extra_vectors``: the
    extra models' (query, item) vectors, scored by their dot product)."""
    from trainer import baselines, evaluation

    q, targets, exclude = ev["q"], ev["targets"], ev["exclude"]
    n_items = trained.catalogue.size
    counts = np.asarray(trained.stats.item_counts, np.float64)

    def two_tower(rows, cand):
        return np.einsum("bd,bkd->bk", q[rows], vectors[cand])

    def popularity(rows, cand):
        return counts[cand]

    def dot(qv, iv):
        return lambda rows, cand: np.einsum("bd,bkd->bk", qv[rows], iv[cand])

    def baseline(model):
        def score(rows, cand):
            full = model.score_matrix(baselines.input_matrix(ev["prior"], n_items, rows))
            s = np.take_along_axis(full, cand, 1)
            return np.where(np.isfinite(s), s, -1e30)  # items a model cannot score rank last, still listed
        return score

    fns = [("popularity", popularity), ("two_tower", two_tower)]
    fns += [(kind, baseline(model)) for kind, (model, _) in (fitted or {}).items()]
    fns += [(name, dot(qv, iv)) for name, (qv, iv) in (extra_vectors or {}).items()]
    return {name: evaluation.sampled_negatives_topk(fn, targets, n_items, n_negatives, seed=seed, exclude=exclude)
            for name, fn in fns}


def rankers_available() -> Optional[str]:
    """None when the ranking stage can be used; otherwise why not."""
    if not os.path.exists(os.path.join(REPO_ROOT, "trainer", "train_ranking.py")):
        return "ranking stage pending (trainer/train_ranking.py does not exist yet)"
    try:
        from trainer import train_ranking  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"trainer.train_ranking does not import: {type(e).__name__}: {e}"
    return None


def run_rankers(version_dir: str, trained, vectors: np.ndarray, cfg, names: Sequence[str], out_dir: str,
                targets: np.ndarray) -> Dict[str, Any]:
    """Trains each ranker on the split's train events and re-ranks the two-tower's top-N of its eval events.

    Hook into ``trainer.train_ranking.train_and_evaluate`` (same candidates for every ranker).
    Returns {"topk": {label: [E, N]}, "extra": {label: {auc, rmse, ...}}, "seconds": s}.
    """
    from trainer import train_ranking

    t0 = time.perf_counter()
    out = train_ranking.train_and_evaluate(cfg, version_dir, trained, vectors, rankers=list(names), out_dir=out_dir)
    eval_set = out["eval_set"]
    if not np.array_equal(np.asarray(eval_set.targets), targets):
        raise RuntimeError("the ranking stage's eval queries differ from the retrieval evaluation's")
    topk, extra = {}, {}
    for name, r in out["rankers"].items():
        scores, _ = train_ranking.predict(r.model, eval_set.pairs)
        topk[f"two_tower+{name}"] = np.asarray(eval_set.rerank(scores))
        own = out["results"].get(name, {})
        extra[f"two_tower+{name}"] = {k: own.get(k) for k in ("auc", "rmse", "train_s") if k in own}
    return {"topk": topk, "extra": extra, "seconds": time.perf_counter() - t0,
            "candidates": int(eval_set.candidates.shape[1])}


def run_dataset(name: str, args, out_dir: str, log: Callable[[str], None]) -> Dict[str, Any]:
    """All protocols and models for one dataset; returns its rows and timings."""
    from preprocessing import pipeline
    from trainer import evaluate_retrieval as er
    from trainer import evaluation

    work = os.path.join(out_dir, "work", name)
    timings: Dict[str, float] = {}
    info: Dict[str, Any] = {"name": name}
    prepared = args.prepared_map.get(name)
    if prepared:
        ts_dir = prepared
        info["data"] = {"description": f"prepared time-split version dir {prepared} (--prepared)"}
        raw_dir = truth_tables = None
    else:
        if os.path.exists(work) and not args.keep_work:
            shutil.rmtree(work)
        raw_dir = os.path.join(work, "raw")
        t0 = time.perf_counter()
        info["data"], tables = write_tables(name, args, raw_dir)
        truth_tables = tables if tables.truth is not None else None
        timings["data_s"] = time.perf_counter() - t0
        log(f"[{name}] {info['data']['interactions']:,} interactions, {info['data']['users']:,} users, "
            f"{info['data']['items']:,} items")
        cfg = make_config(args, work)
        t0 = time.perf_counter()
        ts_dir = pipeline.run(cfg, raw_dir, os.path.join(work, "time_split"))
        timings["preprocess_time_split_s"] = time.perf_counter() - t0
    loo_source = args.loo_source if raw_dir else "time_split"
    if loo_source == "full":
        t0 = time.perf_counter()
        full_dir = preprocess_full_vocabulary(args, raw_dir, work)
        timings["preprocess_full_vocab_s"] = time.perf_counter() - t0
    else:
        full_dir = ts_dir
    t0 = time.perf_counter()
    loo_dir = derive_leave_one_out(full_dir, os.path.join(work, "leave_one_out"))
    timings["derive_loo_s"] = time.perf_counter() - t0
    info["splits"] = {"time_split_full": pipeline.load_stats(ts_dir), "leave_one_out": pipeline.load_stats(loo_dir),
                      "loo_source": loo_source}
    log(f"[{name}] splits: time split {info['splits']['time_split_full']['train']:,} train / "
        f"{info['splits']['time_split_full']['eval']:,} test events; leave-one-out "
        f"{info['splits']['leave_one_out']['train']:,} / {info['splits']['leave_one_out']['eval']:,} "
        f"(from the {'full-vocabulary' if loo_source == 'full' else 'time-split'} preprocessing)")

    rows: List[Dict[str, Any]] = []
    ranker_status: Dict[str, Any] = {}
    why_not = rankers_available() if args.ranker_list else "skipped (--rankers none)"
    for protocol, version_dir in (("time_split_full", ts_dir), ("leave_one_out_full", loo_dir)):
        if protocol not in args.protocol_list:
            continue
        cfg = make_config(args, work)
        t0 = time.perf_counter()
        trained, vectors, train_s = train_two_tower(version_dir, cfg, os.path.join(work, f"train_{protocol}"))
        timings[f"train_two_tower_{protocol}_s"] = train_s
        log(f"[{name}] {protocol}: two-tower trained in {train_s:.0f} s ({trained.stats.n_examples:,} examples)")
        ev = full_ranking(version_dir, trained, vectors, cfg)
        n_items = trained.catalogue.size
        popularity = np.asarray(trained.stats.item_counts, np.float64)
        genres = er.genre_matrix(trained.catalogue)
        topks = dict(ev["topk"])
        planted = None
        if truth_tables is not None:  # the ceiling (the generator's own probabilities) and where hits come from
            truth = quality_oracle.PlantedTruth(truth_tables, trained.catalogue.item_ids)
            topks[quality_oracle.NAME] = truth.topk(ev["users"], ev["times"], ev["exclude"], max(KS))
            planted = truth.sequel_targets(ev["users"], ev["times"], ev["targets"])
            info.setdefault("planted_successor_share", {})[protocol] = round(float(planted.mean()), 4)
        t1 = time.perf_counter()
        fitted = fit_baselines(trained, args.baseline_list, log, f"{name}/{protocol}")
        for kind, (model, rec) in fitted.items():
            topks[kind] = model.topk(ev["prior"], max(KS), ev["exclude"], n_items, order_key=ev["users"])
            info.setdefault("baseline_tuning", {}).setdefault(protocol, {})[kind] = rec
        timings[f"baselines_{protocol}_s"] = time.perf_counter() - t1
        extras: Dict[str, Dict[str, Any]] = {}
        extra_vectors: Dict[str, tuple] = {}
        if args.model_list:  # sequence towers, item2vec, Mult-VAE: benchmarks/quality_models.py
            from benchmarks import quality_models

            more = quality_models.extra_topks(protocol, version_dir, trained, ev, cfg, args.model_list, work, log,
                                              f"{name}/{protocol}", max(KS))
            topks.update(more["topk"])
            extras.update(more["extra"])
            extra_vectors = more["vectors"]
            timings.update(more["timings"])
            if more["errors"]:
                info.setdefault("model_errors", {})[protocol] = more["errors"]
        if why_not is None and protocol not in args.ranker_protocol_list:
            ranker_status[protocol] = {"status": "not run", "reason": "not in --ranker-protocols"}
        elif why_not is None:
            t1 = time.perf_counter()
            try:
                rr = run_rankers(version_dir, trained, vectors, cfg, args.ranker_list,
                                 os.path.join(work, f"ranking_{protocol}"), ev["targets"])
                topks.update(rr["topk"])
                extras.update(rr["extra"])
                ranker_status[protocol] = {"status": "measured", "rankers": args.ranker_list,
                                           "candidates": rr["candidates"], "seconds": rr["seconds"]}
            except Exception as e:  # noqa: BLE001  (the ranking stage is developed concurrently)
                ranker_status[protocol] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                log(f"[{name}] {protocol}: rankers failed: {type(e).__name__}: {e}")
            timings[f"rankers_{protocol}_s"] = time.perf_counter() - t1
        else:
            ranker_status[protocol] = {"status": "not run", "reason": why_not}
        for model, topk in topks.items():
            row = {"dataset": name, "protocol": protocol, "model": model}
            row.update(metrics_row(topk, ev["targets"], n_items, popularity, genres))
            row.update(extras.get(model, {}))
            if planted is not None:
                hit = evaluation.per_query("recall", topk, ev["targets"], 10)
                row["recall@10_successor"] = float(np.nanmean(hit[planted])) if planted.any() else None
                row["recall@10_other"] = float(np.nanmean(hit[~planted])) if (~planted).any() else None
            rows.append(row)
        for metric in ("recall@50", "ndcg@10"):
            # a time split's events are as uneven as the users: also with every user counted once
            for per_user in (False, True) if protocol == "time_split_full" else (False,):
                lead = lead_over_best(topks, ev["targets"], ev["users"], metric=metric, seed=args.seed,
                                      per_user=per_user)
                if lead:
                    info.setdefault("leads", []).append(dict(lead, protocol=protocol))
        if protocol == "leave_one_out_full":
            t1 = time.perf_counter()
            s_topks = sampled(ev, trained, vectors, args.sampled_negatives, args.seed, fitted, extra_vectors)
            for model, topk in s_topks.items():
                row = {"dataset": name, "protocol": "sampled_1_99", "model": model}
                row.update(metrics_row(topk, ev["targets"], n_items, popularity, genres))
                rows.append(row)
            lead = lead_over_best(s_topks, ev["targets"], ev["users"], metric="recall@10", seed=args.seed)
            if lead:
                info.setdefault("leads", []).append(dict(lead, protocol="sampled_1_99"))
            timings["sampled_eval_s"] = time.perf_counter() - t1
        timings[f"{protocol}_total_s"] = time.perf_counter() - t0
    if "tfrs_random_80_20" in args.protocol_list:
        t0 = time.perf_counter()
        rows += tfrs_protocol(name, args, full_dir, work, info, log)
        timings["tfrs_random_80_20_total_s"] = time.perf_counter() - t0
    info.update({"rows": rows, "rankers": ranker_status, "timings_s": {k: round(v, 1) for k, v in timings.items()},
                 "n_items": n_items})
    return info


def derive_random_split(source_dir: str, out_base: str, test_fraction: float = 0.2, seed: int = 42) -> str:
    """A version dir whose eval split is a uniformly random 20% of all events (the TFRS tutorials' split).

    Same record copying as ``derive_leave_one_out`` (features, history, transform graph unchanged);
    records are put in a canonical order (user, time, item) first, so the split is deterministic.
    """
    from trainer import evaluation

    return _rewrite_split(source_dir, out_base, "random_80_20",
                          lambda u, it, t: evaluation.random_split(len(u), test_fraction, seed))


def tfrs_protocol(name: str, args, full_dir: str, work: str, info: Dict[str, Any],
                  log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """TFRS tutorial protocol: random 80/20 split (seed 42), full catalogue, nothing excluded."""
    from trainer import evaluate_retrieval as er
    from trainer import evaluation

    split_dir = derive_random_split(full_dir, os.path.join(work, "random_80_20"))
    cfg = make_config(args, work)
    trained, vectors, train_s = train_two_tower(split_dir, cfg, os.path.join(work, "train_tfrs_random_80_20"))
    log(f"[{name}] tfrs_random_80_20: two-tower trained in {train_s:.0f} s")
    eq = er.load_queries(split_dir, lambda b: trained.model.query_tower(b), trained.catalogue, trained.stats)
    targets, n_items, kmax = eq.items, trained.catalogue.size, max(KS)
    train_sets = [trained.stats.seen.get(u, np.empty(0, np.int64)) for u in eq.users]  # the user's 80%
    topks = {"popularity": evaluation.popularity_topk(trained.stats.item_counts, len(targets), kmax),
             "two_tower": evaluation.full_ranking_topk(eq.vectors, vectors, kmax)}
    for kind, (model, rec) in fit_baselines(trained, args.baseline_list, log, f"{name}/tfrs_random_80_20").items():
        topks[kind] = model.topk(train_sets, kmax, None, n_items, order_key=eq.users)
        info.setdefault("baseline_tuning", {}).setdefault("tfrs_random_80_20", {})[kind] = rec
    popularity = np.asarray(trained.stats.item_counts, np.float64)
    genres = er.genre_matrix(trained.catalogue)
    rows = []
    for model, topk in topks.items():
        row = {"dataset": name, "protocol": "tfrs_random_80_20", "model": model}
        row.update(metrics_row(topk, targets, n_items, popularity, genres))
        rows.append(row)
    lead = lead_over_best(topks, targets, eq.users, metric="recall@100", seed=args.seed)
    if lead:
        info.setdefault("leads", []).append(dict(lead, protocol="tfrs_random_80_20"))
    return rows


# --------------------------------------------------------------------------- output


TABLE_COLUMNS = [
    common.Column("protocol", "protocol"),
    common.Column("model", "model"),
    common.Column("recall@10", "R@10", ".4f"),
    common.Column("recall@50", "R@50", ".4f"),
    common.Column("recall@100", "R@100", ".4f"),
    common.Column("ndcg@10", "nDCG@10", ".4f"),
    common.Column("mrr", "MRR", ".4f"),
    common.Column("mrr@10", "MRR@10", ".4f"),
    common.Column("coverage@10", "cov@10", ".4f"),
    common.Column("novelty@10", "novelty@10", ".2f"),
    common.Column("popularity_bias@10", "pop-bias@10", ".3f"),
    common.Column("n_queries", "queries", ",d"),
    common.Column("train_s", "train s", ".0f"),
    common.Column("serving_ms", "serve ms", ".2f"),
]
REF_COLUMNS = [
    common.Column("model", "model (published)"),
    common.Column("dataset", "dataset"),
    common.Column("protocol", "protocol"),
    common.Column("hr@10", "HR/R@10", ".4f"),
    common.Column("ndcg@10", "nDCG@10", ".4f"),
    common.Column("mrr@10", "MRR@10", ".4f"),
    common.Column("source", "source"),
]


def reference_rows() -> List[Dict[str, Any]]:
    out = []
    for ref in REFERENCES:
        m = ref["metrics"]
        out.append({"model": ref["model"], "dataset": ref["dataset"].split(" (")[0] if "(" in ref["dataset"] else
                    ref["dataset"], "protocol": ref["protocol"], "hr@10": m.get("hr@10", m.get("recall@10")),
                    "ndcg@10": m.get("ndcg@10"), "mrr@10": m.get("mrr@10"), "source": ref["source"].split(",")[0]})
    return out


def plot(datasets: List[Dict[str, Any]], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return None
    ds = [d for d in datasets if d.get("rows")]
    if not ds:
        return None
    metrics = ["recall@10", "ndcg@10", "recall@100", "mrr"]
    shown = [p for p in PROTOCOLS if any(r["protocol"] == p for d in ds for r in d["rows"])]  # those that ran
    models = list(dict.fromkeys(r["model"] for d in ds for r in d["rows"] if r["model"] != quality_oracle.NAME))
    palette = plt.get_cmap("tab10" if len(models) <= 10 else "tab20").colors
    colour = {m: palette[n % len(palette)] for n, m in enumerate(models)}  # one colour per model in every panel
    fig, axes = plt.subplots(len(ds), len(shown), figsize=(5.2 * len(shown), 4.2 * len(ds)), squeeze=False)
    for i, d in enumerate(ds):
        for j, protocol in enumerate(shown):
            ax = axes[i][j]
            rows = sorted((r for r in d["rows"] if r["protocol"] == protocol),
                          key=lambda r: r["model"] == quality_oracle.NAME)  # the ceiling last, drawn apart
            mets = ["recall@10", "ndcg@10"] if protocol == "sampled_1_99" else metrics
            width = 0.8 / max(len(rows), 1)
            x = np.arange(len(mets))
            for k, r in enumerate(rows):
                vals = [r.get(m) or 0.0 for m in mets]
                ceiling = r["model"] == quality_oracle.NAME
                bars = ax.bar(x + k * width - 0.4 + width / 2, vals, width,
                              label="oracle (planted truth: the ceiling)" if ceiling else r["model"],
                              color="white" if ceiling else colour[r["model"]], edgecolor="0.4" if ceiling else None,
                              hatch="//" if ceiling else None)
                for b, v in zip(bars, vals):
                    ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom", fontsize=6)
            if d["name"] == "movielens":
                refs = [ref for ref in REFERENCES if ref["protocol"] == protocol]
                for n, ref in enumerate(refs):
                    for xi, m in enumerate(mets):
                        key = "hr@10" if (m == "recall@10" and "hr@10" in ref["metrics"]) else m
                        v = ref["metrics"].get(key)
                        if v is not None:
                            ax.hlines(v, xi - 0.45, xi + 0.45, colors="k", linestyles=["--", ":", "-."][n % 3], lw=1.2,
                                      label=f"published: {ref['model']} (ML-1M)" if xi == 0 or key == m else None)
            ax.set_xticks(x)
            ax.set_xticklabels(["HR@10" if (protocol == "sampled_1_99" and m == "recall@10") else m for m in mets])
            ax.set_title(f"{d['name']}: {protocol}" + (" (sampled: for comparison only)"
                                                      if protocol == "sampled_1_99" else ""), fontsize=9)
            ax.set_ylim(0, 1.05 if protocol == "sampled_1_99" else None)
            ax.grid(True, axis="y", alpha=0.3)
            handles, labels = ax.get_legend_handles_labels()
            uniq = dict(zip(labels, handles))
            ax.legend(uniq.values(), uniq.keys(), fontsize=6.5, loc="upper left")
    fig.suptitle("Retrieval quality: measured bars; dashed lines = published figures on ML-1M (not our runs)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description=(
            "Quality benchmark: popularity, the two-tower model and (when trainer/train_ranking.py exists) rankers "
            "re-ranking the two-tower's top-100, on the same splits of synthetic data and of MovieLens "
            "ml-latest-small (skipped when absent), under time_split_full, leave_one_out_full and sampled_1_99 (the "
            "last only to compare with published numbers). Prints recall@10/50/100, nDCG@10, MRR, coverage, novelty "
            "and popularity bias for every row, and published reference figures (SASRec, NCF, RecBole; cited, never "
            "our measurements). Writes <out>/quality.json and <out>/quality.png."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="bench_results/quality", help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: synthetic data of 300 users, 2 epochs, LOO cut from the time-split run, "
                        "1 ranker epoch on <= 2,000 events, no extra models; MovieLens still runs when present "
                        "(at those settings) unless --datasets synthetic")
    p.add_argument("--datasets", default="synthetic,movielens",
                   help="comma-separated: synthetic, movielens, log (your interaction log, --log)")
    p.add_argument("--log", default="", help="an interaction log (file or directory) for --datasets log, read as "
                                             "`recsys data csv` reads it (--set data.columns=..., data.header=...)")
    p.add_argument("--movielens", default=DEFAULT_MOVIELENS,
                   help="MovieLens directory (any layout movielens.load reads); skipped cleanly when absent")
    p.add_argument("--synthetic-users", type=int, default=None, help="synthetic users (default: the config's 2000; "
                                                                      "--quick: 300)")
    p.add_argument("--synthetic-items", type=int, default=None, help="synthetic items (default 1500; --quick: 400)")
    p.add_argument("--synthetic-events", type=float, default=None, help="mean events per user (default 25; --quick: 15)")
    p.add_argument("--prepared", action="append", default=[], metavar="DATASET=VERSION_DIR",
                   help="use an existing time-split preprocessing output for DATASET instead of generating and "
                        "preprocessing it (implies --loo-source time_split for it)")
    p.add_argument("--loo-source", choices=("full", "time_split"), default=None,
                   help="preprocessing the leave-one-out split is cut from: 'full' = a second pipeline run with "
                        "eval_fraction=0 (vocabularies cover the test items; default), 'time_split' = the time-split "
                        "run (faster; LOO pessimistic; --quick's default)")
    p.add_argument("--protocols", default="time_split_full,leave_one_out_full",
                   help="comma-separated full-ranking protocols to run (sampled_1_99 comes with leave_one_out_full); "
                        "each costs every model a training per dataset")
    p.add_argument("--epochs", type=int, default=None, help="two-tower epochs (default: the config's 8; --quick: 2)")
    p.add_argument("--rankers", default="dcn",
                   help="comma-separated ranking variants to train and evaluate on the full-ranking protocols "
                        "(trainer.train_ranking.VARIANTS), or 'none'")
    p.add_argument("--ranker-protocols", default="time_split_full",
                   help="comma-separated full-ranking protocols on which the rankers are trained and evaluated "
                        "(time_split_full, leave_one_out_full); each costs a ranker training per dataset")
    p.add_argument("--ranker-epochs", type=int, default=None, help="ranker epochs (default: the config's; --quick: 1)")
    p.add_argument("--ranker-max-train-events", type=int, default=None,
                   help="train events the ranking pairs are built from (default 30000; --quick: 2000; 0 = all)")
    p.add_argument("--sampled-negatives", type=int, default=99, help="negatives per test item in sampled_1_99")
    p.add_argument("--models", default=None,
                   help="extra models on the full-ranking protocols (benchmarks/quality_models.py): gru, transformer "
                        "(two-tower with that history encoder), item2vec (Meta-Prod2Vec neighbours of the history), "
                        "mult_vae; or 'none' (default: all four; --quick: none, each costs a training per protocol)")
    p.add_argument("--baselines", default="ease,item_knn,als",
                   help="comma-separated classic baselines (trainer.baselines) on every protocol, or 'none'")
    p.add_argument("--tfrs-protocol", choices=("on", "off"), default="on",
                   help="also run the TFRS tutorials' protocol (tfrs_random_80_20; one more two-tower training)")
    p.add_argument("--seed", type=int, default=42, help="data and sampling seed")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override for every row (repeatable), e.g. --set preprocess.history_length=50; "
                        "rows stay comparable because every model reads the same config")
    p.add_argument("--keep-work", action="store_true", help="keep <out>/work (raw data, preprocessing, models)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    return p


def resolve_args(argv) -> argparse.Namespace:
    a = build_parser().parse_args(argv)
    q = a.quick
    a.synthetic_users = a.synthetic_users or (300 if q else 2000)
    a.synthetic_items = a.synthetic_items or (400 if q else 1500)
    a.synthetic_events = a.synthetic_events or (15.0 if q else 25.0)
    a.loo_source = a.loo_source or ("time_split" if q else "full")
    a.epochs = a.epochs or (2 if q else None)
    a.ranker_epochs = a.ranker_epochs or (1 if q else None)
    if a.ranker_max_train_events is None:
        a.ranker_max_train_events = 2000 if q else 30000
    a.ranker_list = [] if a.rankers.strip().lower() == "none" else [r.strip() for r in a.rankers.split(",") if r.strip()]
    a.ranker_protocol_list = [x.strip() for x in a.ranker_protocols.split(",") if x.strip()]
    for x in a.ranker_protocol_list:
        if x not in ("time_split_full", "leave_one_out_full"):
            raise SystemExit(f"--ranker-protocols: {x!r} is not a full-ranking protocol")
    a.baseline_list = [] if a.baselines.strip().lower() == "none" else [
        b.strip() for b in a.baselines.split(",") if b.strip()]
    full = [x.strip() for x in a.protocols.split(",") if x.strip()]
    for x in full:
        if x not in ("time_split_full", "leave_one_out_full"):
            raise SystemExit(f"--protocols: {x!r} is not a full-ranking protocol (time_split_full, leave_one_out_full)")
    a.protocol_list = [p for p in PROTOCOLS if p in full or (p == "sampled_1_99" and "leave_one_out_full" in full)
                       or (p == "tfrs_random_80_20" and a.tfrs_protocol == "on")]
    from benchmarks import quality_models

    a.model_list = quality_models.model_list(a.models if a.models is not None else
                                             ("none" if a.quick else ",".join(quality_models.MODELS)))
    from recsys.config import ConfigError, load_config

    try:
        load_config(overrides=a.set)  # a bad --set fails here, in one line, before any data is read
    except ConfigError as e:
        raise SystemExit(f"--set: {e}") from None
    a.dataset_list = [d.strip() for d in a.datasets.split(",") if d.strip()]
    for d in a.dataset_list:
        if d not in ("synthetic", "movielens", "log"):
            raise SystemExit(f"unknown dataset {d!r}; use synthetic, movielens and/or log")
    a.prepared_map = parse_prepared(a.prepared)
    if "log" in a.dataset_list and "log" not in a.prepared_map and not (a.log and os.path.exists(a.log)):
        raise SystemExit(f"--datasets log needs --log FILE_OR_DIR (an interaction log); got {a.log!r}")
    return a


def parse_prepared(items: Sequence[str]) -> Dict[str, str]:
    """``--prepared DATASET=VERSION_DIR`` options as a dict (also used by ``recsys bench seeds``)."""
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        if not v:
            raise SystemExit(f"--prepared wants DATASET=VERSION_DIR, got {item!r}")
        out[k.strip()] = v.strip()
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(argv)
    t_start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    machine = common.machine_info()
    print("Quality benchmark: popularity, " + ", ".join(args.baseline_list + ["two-tower"]) + (f", two-tower + {', '.join(args.ranker_list)} (re-ranking "
                                                       f"top-100)" if args.ranker_list else "")
          + f" on {', '.join(args.dataset_list)}; protocols {', '.join(args.protocol_list)}")
    for p in args.protocol_list:
        from trainer import evaluation

        print(f"  {p}: {evaluation.PROTOCOLS[p]}")
    print(common.format_machine(machine))
    print(flush=True)

    datasets: List[Dict[str, Any]] = []
    for name in args.dataset_list:
        if name == "movielens" and "movielens" not in args.prepared_map and not os.path.isdir(args.movielens):
            reason = f"{args.movielens} not found (expected ml-latest-small); skipped"
            log(f"[movielens] {reason}")
            datasets.append({"name": name, "skipped": reason, "rows": []})
            continue
        t0 = time.perf_counter()
        try:
            d = run_dataset(name, args, args.out, log)
        except Exception as e:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            datasets.append({"name": name, "error": f"{type(e).__name__}: {e}", "rows": []})
            continue
        d["seconds"] = round(time.perf_counter() - t0, 1)
        datasets.append(d)
        common.write_json(os.path.join(args.out, "quality.json"),
                          {"benchmark": "quality", "partial": True, "datasets": datasets})

    tables = []
    print()
    for d in datasets:
        if not d.get("rows"):
            continue
        data = d.get("data", {})
        title = f"{data.get('label', d['name'])}: " + (f"{data.get('interactions', 0):,} interactions, {data.get('users', 0):,} users, "
                                   f"{data.get('items', d.get('n_items', 0)):,} items" if "interactions" in data
                                   else data.get("description", ""))
        t = common.format_table(d["rows"], TABLE_COLUMNS, title=title)
        tables.append(t)
        print(t)
        for lead in d.get("leads", []):
            each = ", each user counted once" if lead.get("per_user") else ""
            print(f"  {lead['protocol']}: {lead['model']} vs best other ({lead['versus']}) on {lead['metric']}{each}: "
                  f"{100 * lead['lead']:+.1f}% [95% CI {100 * lead['low']:+.1f}%, {100 * lead['high']:+.1f}%] "
                  f"(bootstrap over {lead['n_users']} users)")
        for protocol, share in d.get("planted_successor_share", {}).items():
            split = ", ".join(f"{r['model']} {r['recall@10_successor']:.3f} / {r['recall@10_other']:.3f}"
                              for r in d["rows"] if r["protocol"] == protocol and r.get("recall@10_other") is not None
                              and r.get("recall@10_successor") is not None)
            print(f"  {protocol}: {100 * share:.1f}% of targets are the planted sequel of the user's latest item; "
                  f"R@10 on those / on the rest: {split}")
        for protocol, st in d.get("rankers", {}).items():
            if st.get("status") != "measured":
                print(f"  rankers on {protocol}: {st.get('status')}: {st.get('reason') or st.get('error')}")
        print()
    for d in datasets:
        if d.get("skipped") or d.get("error"):
            print(f"{d['name']}: {d.get('skipped') or 'FAILED: ' + d['error']}")
    ref_table = common.format_table(reference_rows(), REF_COLUMNS,
                                    title="Published reference figures (quoted, NOT measured here; on ML-1M, "
                                          "not on the data sets above)")
    if any(d["name"] == "movielens" and d.get("rows") for d in datasets):  # quoted for MovieLens only
        print()
        print(ref_table)
        for ref in REFERENCES:
            print(f"  - {ref['model']}: {ref['source']}. Protocol: {ref['protocol_note']}.")
        for note in REFERENCE_NOTES:
            print(f"  * {note}")
        print("  * sampled_1_99 rows are for comparison with those papers only: sampled metrics can rank models "
              "differently from full ranking (Krichene & Rendle, 'On Sampled Metrics for Item Recommendation', "
              "KDD 2020).")
    try:
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(f"Load average at end: {machine['load_average_at_end']}")
    except OSError:
        pass
    png = None if args.no_plot else plot(datasets, os.path.join(args.out, "quality.png"))
    from trainer import evaluation

    payload = {
        "benchmark": "quality",
        "partial": False,
        "command": "python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items()},
        "machine": machine,
        "protocols": {p: evaluation.PROTOCOLS[p] for p in PROTOCOLS},
        "metric_notes": {
            "recall@k": "one target per query, so recall@k = hit rate@k (= HR@k of the papers)",
            "recall@10_successor / recall@10_other": "synthetic only: recall@10 on the queries whose target is the "
                                                     "planted sequel of the user's latest item, and on the rest",
            "oracle": "synthetic only: ranks by the generator's own next-item probabilities (the ceiling, not a model)",
            "mrr": "reciprocal rank of the target within the returned list (100 long; 0 when absent)",
            "mrr@10": "reciprocal rank within the top 10 (RecBole's MRR@10)",
            "coverage@10": "fraction of the catalogue recommended to at least one query in a top 10",
            "novelty@10": "mean -log2(train popularity share) of top-10 items, bits",
            "popularity_bias@10": "mean popularity percentile of top-10 items (1.0 = the most popular item)",
            "rankers": "two_tower+<ranker>: the ranker re-orders the two-tower's top-100 for each query, so its "
                       "recall@100 equals the two-tower's",
        },
        "datasets": datasets,
        "rows": [r for d in datasets for r in d.get("rows", [])],
        "references": REFERENCES,
        "reference_notes": REFERENCE_NOTES,
        "tables": tables,
        "reference_table": ref_table,
        "plot": png,
        "elapsed_s": time.perf_counter() - t_start,
    }
    path = common.write_json(os.path.join(args.out, "quality.json"), payload)
    if not args.keep_work:
        shutil.rmtree(os.path.join(args.out, "work"), ignore_errors=True)
    print(f"Wrote {path}" + (f" and {png}" if png else "") + f" in {payload['elapsed_s']:.0f} s")
    return 1 if any(d.get("error") for d in datasets) else 0


if __name__ == "__main__":
    sys.exit(main())
