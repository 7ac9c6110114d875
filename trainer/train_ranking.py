"""Train and evaluate the second stage: rankers re-ranking retrieval's top-N on the same candidates.

``train_and_evaluate`` builds the ranking pairs once (``trainer.ranking_data``), trains every
requested ranker (and the GBDT baseline), and scores all of them beside retrieval-only on
one ``EvalSet``: same split, same candidates, same metrics (``trainer.evaluation``):

- nDCG@10 / Recall@10 of the re-ranked list against the eval event's logged item;
- AUC of the engagement score over all (event, candidate) pairs;
- RMSE of the rating head on the eval events' logged items with an observed rating
  (retrieval-only has no rating model: its RMSE is the train-mean constant).

Writes ``<run>/training/ranking/``: ``<variant>/checkpoints/best.weights``, ``<variant>/meta.json``,
``<variant>/history.json``, ``metrics.json``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer import data, evaluation
from trainer.features import FeatureSizes
from trainer.models import ranking as ranking_models
from trainer.ranking_data import EvalSet, Pairs, build_eval_set, build_train_pairs, log, rating_mean

# Named variants: the three model kinds plus DCN-v2's structure / rank options.
VARIANTS = {
    "dcn": ("dcn", {}),
    "dcn_parallel": ("dcn", {"dcn_structure": "parallel"}),
    "dcn_lowrank": ("dcn", {"projection_dim": -1}),   # -1: input width / 4 (the DCN-v2 paper's choice)
    "wide_deep": ("wide_deep", {}),
    "deepfm": ("deepfm", {}),
}


def variant(name: str, rcfg) -> Tuple[str, object]:
    """(model kind, ranking config for it) for a variant name or a plain kind."""
    if name not in VARIANTS:
        raise ValueError(f"unknown ranker {name!r}; choose from {sorted(VARIANTS)}")
    kind, overrides = VARIANTS[name]
    cfg = copy.deepcopy(rcfg)
    for k, v in overrides.items():
        if k == "projection_dim" and v == -1:
            v = max(1, len(ranking_models.FIELDS) * cfg.embedding_dim // 4)
        setattr(cfg, k, v)
    return kind, cfg


@dataclasses.dataclass
class TrainedRanker:
    name: str
    model: ranking_models.RankingModel
    history: Dict
    train_seconds: float
    out_dir: str


class _Progress(tf.keras.callbacks.Callback):
    def __init__(self, name: str, epochs: int):
        super().__init__()
        self.name, self.epochs, self.t0 = name, epochs, time.time()

    def on_epoch_end(self, epoch, logs=None):
        keep = ("loss", "val_loss", "val_engagement_auc", "val_rating_rmse")
        shown = {k: round(float(v), 4) for k, v in (logs or {}).items() if k in keep}
        log(f"[ranking] {self.name} epoch {epoch + 1}/{self.epochs} {time.time() - self.t0:6.1f}s {shown}")


def sample_batch(pairs: Pairs, n: int = 2) -> Dict[str, tf.Tensor]:
    return {k: tf.constant(v[:n]) for k, v in pairs.features.items()}


def item_tables(catalogue: data.Catalogue, tft_layer) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item_idx, title_idx, genre_idx) of the catalogue: the rankers' history-match tables."""
    from preprocessing.schema import T

    t = catalogue.transformed(tft_layer)
    return t[T.ITEM_IDX].numpy(), t[T.TITLE_IDX].numpy(), t[T.GENRE_IDX].numpy()


def build_ranker(name: str, sizes: FeatureSizes, rcfg, mean_rating: float = 3.5,
                 example: Optional[Dict[str, tf.Tensor]] = None, tables=None) -> ranking_models.RankingModel:
    kind, vcfg = variant(name, rcfg)
    model = ranking_models.build(sizes, vcfg, kind, mean_rating)
    if tables is not None:
        model.set_item_tables(*tables)
    if example is not None:
        model(example)  # creates the variables (needed before loading weights)
    return model


def train_ranker(name: str, train: Pairs, valid: Pairs, sizes: FeatureSizes, cfg, out_dir: str,
                 epochs: Optional[int] = None, steps_per_epoch: Optional[int] = None, tables=None) -> TrainedRanker:
    """Fits one ranker with early stopping on the valid pairs' loss; keeps the best weights."""
    rcfg = cfg.ranking
    os.makedirs(out_dir, exist_ok=True)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    mean = rating_mean(train)
    model = build_ranker(name, sizes, rcfg, mean, tables=tables)
    model.compile(optimizer=tf.keras.optimizers.Adam(rcfg.learning_rate))
    epochs = epochs or rcfg.epochs
    ckpt = os.path.join(out_dir, "checkpoints", "best.weights")
    callbacks = [_Progress(name, epochs),
                 tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=rcfg.early_stopping_patience,
                                                  restore_best_weights=True),
                 tf.keras.callbacks.ModelCheckpoint(ckpt, monitor="val_loss", save_best_only=True,
                                                    save_weights_only=True)]
    train_ds = train.dataset(rcfg.batch_size, shuffle=True, seed=cfg.train.seed)
    if steps_per_epoch:
        train_ds = train_ds.repeat()
    t0 = time.time()
    hist = model.fit(train_ds, validation_data=valid.dataset(4096), epochs=epochs, callbacks=callbacks, verbose=0,
                     steps_per_epoch=steps_per_epoch)
    seconds = time.time() - t0
    history = {k: [float(x) for x in v] for k, v in hist.history.items()}
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=2)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump({"name": name, "kind": model.kind, "rating_mean": mean, "sizes": sizes.to_dict(),
                   "train_rows": len(train), "valid_rows": len(valid), "train_seconds": seconds}, f, indent=2)
    cfg.save(os.path.join(out_dir, "config.json"))
    return TrainedRanker(name, model, history, seconds, out_dir)


def load_ranker(out_dir: str, cfg, example: Dict[str, tf.Tensor]) -> ranking_models.RankingModel:
    """Rebuilds a trained ranker from ``<run>/training/ranking/<variant>`` (meta.json + best weights)."""
    with open(os.path.join(out_dir, "meta.json")) as f:
        meta = json.load(f)
    model = build_ranker(meta["name"], FeatureSizes(**meta["sizes"]), cfg.ranking, meta["rating_mean"], example)
    model.load_weights(os.path.join(out_dir, "checkpoints", "best.weights")).expect_partial()
    return model


def predict(model, pairs: Pairs, batch_size: int = 8192) -> Tuple[np.ndarray, np.ndarray]:
    """(engagement logits, predicted ratings) for every row."""
    call = tf.function(lambda x: model(x, training=False))
    logits, ratings = [], []
    for batch in pairs.batches(batch_size):
        out = call(batch)
        logits.append(out["engagement_logit"].numpy())
        ratings.append(out["rating"].numpy())
    if not logits:
        return np.empty(0, np.float32), np.empty(0, np.float32)
    return np.concatenate(logits), np.concatenate(ratings)


# ---------------------------------------------------------------- metrics
def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); nan without both classes."""
    y = np.asarray(labels).ravel() > 0
    s = np.asarray(scores, np.float64).ravel()
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    first = np.r_[True, ss[1:] != ss[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(s))
    ranks[order] = ((starts + ends + 1) / 2.0)[group]
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def rmse(pred, target) -> float:
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    return float(np.sqrt(np.mean((pred - target) ** 2))) if len(target) else float("nan")


def rerank_metrics(eval_set: EvalSet, scores: np.ndarray, ratings: Optional[np.ndarray], ks=(10,),
                   n_items: Optional[int] = None) -> Dict[str, float]:
    """Metrics of re-ranking eval_set's candidates by ``scores`` (one per pair row)."""
    topk = eval_set.rerank(scores)
    m = evaluation.evaluate_topk(topk, eval_set.targets, ks, n_items=n_items)
    out = {k: v for k, v in m.items() if k.split("@")[0] in ("ndcg", "recall", "mrr", "coverage", "n_queries")
           or k in ("mrr", "n_queries")}
    out["auc"] = roc_auc(eval_set.pairs.engagement, scores)
    out["rmse"] = rmse(ratings, eval_set.target_pairs.rating) if ratings is not None else float("nan")
    return out


def evaluate_rankers(eval_set: EvalSet, scorers: Dict[str, Callable[[Pairs], Tuple[np.ndarray, np.ndarray]]],
                     train_rating_mean: float, n_items: Optional[int] = None, ks=(10,)) -> Dict[str, Dict]:
    """retrieval_only + every scorer (pairs -> (engagement score, rating)) on the same candidates."""
    results = {}
    base = eval_set.retrieval_scores[eval_set.pairs.event, eval_set.position]
    results["retrieval_only"] = rerank_metrics(eval_set, base, np.full(len(eval_set.target_pairs), train_rating_mean),
                                               ks, n_items)
    for name, scorer in scorers.items():
        t0 = time.time()
        scores, _ = scorer(eval_set.pairs)
        _, ratings = scorer(eval_set.target_pairs)
        results[name] = rerank_metrics(eval_set, scores, ratings, ks, n_items)
        results[name]["score_seconds"] = round(time.time() - t0, 1)
    return results


TABLE_COLUMNS = ["model", "ndcg@10", "recall@10", "mrr", "auc", "rmse", "d_ndcg@10", "train_s", "n_queries"]


def report(results: Dict[str, Dict], title: str = "") -> str:
    base = results.get("retrieval_only", {}).get("ndcg@10")
    rows = []
    for name, m in results.items():
        row = dict(model=name, **m)
        if base and name != "retrieval_only":
            row["d_ndcg@10"] = f"{100.0 * (m['ndcg@10'] / base - 1.0):+.1f}%"
        rows.append(row)
    return evaluation.format_table(rows, TABLE_COLUMNS, title=title or "re-ranking retrieval's top-N (same candidates)")


# ---------------------------------------------------------------- the whole stage
def ranking_dir(cfg, *parts: str) -> str:
    return cfg.path("training", "ranking", *parts)


def train_and_evaluate(cfg, version_dir: str, trained, item_vectors: np.ndarray, rankers: Sequence[str] = (),
                       gbdt: bool = False, epochs: Optional[int] = None, steps_per_epoch: Optional[int] = None,
                       out_dir: Optional[str] = None) -> Dict:
    """Ranking pairs from ``trained`` (a TrainedRetrieval) -> rankers (+ GBDT) -> one comparison table."""
    out_dir = out_dir or ranking_dir(cfg)
    os.makedirs(out_dir, exist_ok=True)
    rankers = list(rankers) or [cfg.ranking.model]
    tft_layer = trained.tft_output.transform_features_layer()
    query_fn = lambda b: trained.model.query_tower(b)  # noqa: E731
    train, valid, info = build_train_pairs(version_dir, query_fn, item_vectors, trained.catalogue, trained.stats,
                                           tft_layer, cfg.ranking, seed=cfg.train.seed)
    eval_set = build_eval_set(version_dir, query_fn, item_vectors, trained.catalogue, trained.stats, tft_layer, cfg)
    tables = item_tables(trained.catalogue, tft_layer)
    trained_rankers: Dict[str, TrainedRanker] = {}
    scorers: Dict[str, Callable] = {}
    seconds: Dict[str, float] = {}
    for name in rankers:
        r = train_ranker(name, train, valid, trained.sizes, cfg, os.path.join(out_dir, name), epochs, steps_per_epoch,
                         tables)
        trained_rankers[name] = r
        seconds[name] = r.train_seconds
        scorers[name] = (lambda m: lambda p: predict(m, p))(r.model)
    gbdt_model = None
    if gbdt:
        from trainer import gbdt as gbdt_lib

        try:
            gbdt_model = gbdt_lib.train_gbdt(train, valid, cfg.ranking,
                                             ranking_models.item_tables(trained.sizes.items, *tables),
                                             seed=cfg.train.seed)
            scorers["gbdt"] = gbdt_model.score
            seconds["gbdt"] = gbdt_model.train_seconds
        except ImportError as e:
            log(f"[ranking] GBDT baseline skipped: {e}")
    results = evaluate_rankers(eval_set, scorers, rating_mean(train), n_items=trained.catalogue.size)
    for name, s in seconds.items():
        results[name]["train_s"] = round(s, 1)
    log(report(results))
    payload = {"results": results, "data": info, "eval_queries": eval_set.n_queries,
               "eval_candidates": int(eval_set.candidates.shape[1]),
               "protocol": "each eval event's retrieval top-N (retrieval evaluation's exclusions) re-ranked; "
                           "targets = the event's logged item"}
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=float)
    cfg.save(os.path.join(out_dir, "config.json"))
    return {"results": results, "rankers": trained_rankers, "gbdt": gbdt_model, "eval_set": eval_set,
            "train_pairs": train, "valid_pairs": valid, "info": info}
