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

from preprocessing.schema import T
from trainer import baselines, covisit, data, evaluation, optimizers, text_table
from trainer import evaluate_retrieval as er
from trainer.features import FeatureSizes
from trainer.progress import EpochProgress
from trainer.models import ranking as ranking_models
from trainer.data import traced
from trainer.ranking_data import EvalSet, Pairs, build_eval_set, build_train_pairs, log, rating_mean

# Named variants: the three model kinds plus DCN-v2's structure / rank options.
VARIANTS = {
    "dcn": ("dcn", {}),
    "dcn_parallel": ("dcn", {"dcn_structure": "parallel"}),
    "dcn_lowrank": ("dcn", {"projection_dim": -1}),   # -1: input width / 4 (the DCN-v2 paper's choice)
    "wide_deep": ("wide_deep", {}),
    "deepfm": ("deepfm", {}),
    # the DCN under each engagement loss (ranking.loss), side by side on the same pairs
    "dcn_pointwise": ("dcn", {"loss": "pointwise"}),
    "dcn_listwise": ("dcn", {"loss": "listwise"}),
    "dcn_both": ("dcn", {"loss": "both"}),
    # the DCN with its training events weighted towards light users (ranking.user_balance; dcn: each event once)
    "dcn_user_balanced": ("dcn", {"user_balance": 0.5}),
    "dcn_user_weighted": ("dcn", {"user_balance": 1.0}),
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


def train_ratings(version_dir: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user index, item index, rating, time) of every train event with an observed rating."""
    spec = {T.USER_IDX: tf.io.FixedLenFeature([], tf.int64), T.ITEM_IDX: tf.io.FixedLenFeature([], tf.int64),
            T.RATING: tf.io.FixedLenFeature([], tf.float32), T.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(data.files(version_dir, "train"), compression_type="GZIP").batch(8192)
    parts = [tf.io.parse_example(b, spec) for b in ds]
    u, i, r, ts = (np.concatenate([p[k].numpy() for p in parts]) for k in (T.USER_IDX, T.ITEM_IDX, T.RATING,
                                                                           T.TIMESTAMP))
    ok = r > 0
    return u[ok], i[ok], r[ok], ts[ok]


def fit_bias_models(version_dir: str, before_ts: Optional[int] = None
                    ) -> Tuple[Optional[baselines.BiasModel], Optional[baselines.BiasModel]]:
    """The regularised user + item bias model on every rated train event, and (with ``before_ts``) the same on
    the events before it; None without ratings. One read of the train split for both."""
    u, i, r, ts = train_ratings(version_dir)
    fit = lambda ok: baselines.BiasModel().fit(u[ok], i[ok], r[ok]) if ok.any() else None  # noqa: E731
    return fit(np.ones(len(r), bool)), (fit(ts < before_ts) if before_ts is not None else None)


def rating_blend(bias: baselines.BiasModel, pairs: Pairs, reg: float) -> Tuple[float, float]:
    """Weights of the train-time user bias and of the recent ratings' offset, fitted on ``pairs``' rated rows:
    on ml-latest-small most eval users are new since training, and their recent ratings say far more than
    their (absent) train-time bias; on warm users the bias says more. ``bias`` must not have seen those
    rows (an in-sample user bias looks far better than it will be at serving time)."""
    f, rated = pairs.features, pairs.rating_weight > 0
    return bias.fit_blend(f[T.USER_IDX][rated], f[T.ITEM_IDX][rated], f[T.HISTORY_IDX][rated],
                          f[T.HISTORY_RATINGS][rated], pairs.rating[rated], reg)


def set_rating_biases(model: ranking_models.RankingModel, bias: baselines.BiasModel) -> None:
    """Writes a bias model's user and item biases into the rating head's (frozen) bias tables."""
    for layer, ids, values in ((model.user_rating_bias, bias.user_ids, bias.bu),
                               (model.item_rating_bias, bias.item_ids, bias.bi)):
        table = np.zeros((layer.num + 1, 1), np.float32)
        rows = np.asarray(ids, np.int64) + 1
        ok = (rows >= 1) & (rows <= layer.num)
        table[rows[ok], 0] = values[ok]
        layer.embedding.embeddings.assign(table)
        layer.trainable = False


def init_rating_head(model: ranking_models.RankingModel, bias: baselines.BiasModel,
                     blend: Tuple[float, float] = (1.0, 0.0)) -> None:
    """Starts the rating head at the blended bias model (``baselines.BiasModel.predict_blend``): mean + item
    bias + ``blend`` weights x (the train-time user bias, the user's recent ratings' offset), zero residual.

    The biases stay fixed at the bias model's (regularised) estimates and the head learns only what the
    features add on top. In training that bias model is the one of the events before the ranker's slice
    (train_and_evaluate), so no bias has seen the rating it helps predict.
    """
    set_rating_biases(model, bias)
    kernel, b = model.rating_head.kernel, model.rating_head.bias
    kernel.assign(tf.zeros_like(kernel))
    b.assign(tf.fill(b.shape, float(bias.mu)))
    model.rating_mix.assign([float(blend[0]), float(blend[1])])


def train_ranker(name: str, train: Pairs, valid: Pairs, sizes: FeatureSizes, cfg, out_dir: str,
                 epochs: Optional[int] = None, steps_per_epoch: Optional[int] = None, tables=None,
                 bias: Optional[baselines.BiasModel] = None, covisit_tables=None,
                 blend: Tuple[float, float] = (1.0, 0.0),
                 final_bias: Optional[baselines.BiasModel] = None) -> TrainedRanker:
    """Fits one ranker with early stopping on the valid pairs' loss; keeps the best weights.

    ``covisit_tables`` = (table the training pairs may see, table of the final model): the first is
    built from events before the ranker's training slice (no leak), the second from the whole train
    split; the saved weights carry the second. ``bias`` / ``final_bias`` the same for the rating head's
    user and item biases: a bias model fitted on the slice's own ratings would hand the head its targets.
    """
    rcfg = cfg.ranking
    tf.io.gfile.makedirs(out_dir)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    mean = rating_mean(train) if bias is None else bias.mu
    model = build_ranker(name, sizes, rcfg, mean, example=sample_batch(train), tables=tables)
    if bias is not None:
        init_rating_head(model, bias, blend)
    if covisit_tables is not None:
        model.set_covisit(*covisit_tables[0])
    model.compile(optimizer=optimizers.FusedAdam(rcfg.learning_rate))
    optimizers.create_slots(model)  # the model is built (example above): one trace of train_step, not two
    epochs = epochs or rcfg.epochs
    ckpt = os.path.join(out_dir, "checkpoints", "best.weights")
    # an implicit log has no ratings: its rating head has nothing to fit and its RMSE would print as 0.0
    keep = ("loss", "val_loss", "val_engagement_auc") + (("val_rating_rmse",) if valid.rating_weight.any() else ())
    callbacks = [EpochProgress(f"ranking {name}", epochs, keep=lambda k: k in keep),
                 tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=rcfg.early_stopping_patience,
                                                  restore_best_weights=True),
                 tf.keras.callbacks.ModelCheckpoint(ckpt, monitor="val_loss", save_best_only=True,
                                                    save_weights_only=True)]
    if model.cfg.user_balance:  # the variant's own setting; valid too: early stopping watches the loss minimised
        train, valid = train.user_balanced(model.cfg.user_balance), valid.user_balanced(model.cfg.user_balance)
    grouped = model.needs_whole_events
    train_ds = (train.grouped_dataset if grouped else train.dataset)(rcfg.batch_size, shuffle=True, seed=cfg.train.seed)
    valid_ds = valid.grouped_dataset(4096) if grouped else valid.dataset(4096)
    if steps_per_epoch:
        train_ds = train_ds.repeat()
    t0 = time.time()
    hist = model.fit(train_ds, validation_data=valid_ds, epochs=epochs, callbacks=callbacks, verbose=0,
                     steps_per_epoch=steps_per_epoch)
    seconds = time.time() - t0
    if tf.io.gfile.exists(ckpt + ".index"):
        model.load_weights(ckpt)  # the best epoch, whether or not early stopping fired
    if covisit_tables is not None:  # the final model reads the table of the whole train split
        model.set_covisit(*covisit_tables[1])
    if final_bias is not None:      # and the biases of every train rating
        set_rating_biases(model, final_bias)
    if covisit_tables is not None or final_bias is not None:
        model.save_weights(ckpt)
    history = {k: [float(x) for x in v] for k, v in hist.history.items()}
    with tf.io.gfile.GFile(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=2)
    with tf.io.gfile.GFile(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump({"name": name, "kind": model.kind, "rating_mean": mean, "sizes": sizes.to_dict(),
                   "train_rows": len(train), "valid_rows": len(valid), "train_seconds": seconds}, f, indent=2)
    cfg.save(os.path.join(out_dir, "config.json"))
    return TrainedRanker(name, model, history, seconds, out_dir)


def load_ranker(out_dir: str, cfg, example: Dict[str, tf.Tensor]) -> ranking_models.RankingModel:
    """Rebuilds a trained ranker from ``<run>/training/ranking/<variant>`` (meta.json + best weights)."""
    with tf.io.gfile.GFile(os.path.join(out_dir, "meta.json")) as f:
        meta = json.load(f)
    model = build_ranker(meta["name"], FeatureSizes(**meta["sizes"]), cfg.ranking, meta["rating_mean"], example)
    model.load_weights(os.path.join(out_dir, "checkpoints", "best.weights")).expect_partial()
    return model


def _predict_fn(model, batch: Dict[str, tf.Tensor]):
    """The model's inference function for batches like ``batch`` (``data.traced``: a new tf.function
    per call had retraced on every evaluation, and TensorFlow warned about it in the benchmarks)."""
    return traced(model, batch, training=False)


def predict(model, pairs: Pairs, batch_size: int = 8192) -> Tuple[np.ndarray, np.ndarray]:
    """(engagement logits, predicted ratings) for every row."""
    logits, ratings = [], []
    for batch in pairs.batches(batch_size):
        out = _predict_fn(model, batch)(batch)
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
                     train_rating_mean: float, n_items: Optional[int] = None, ks=(10,),
                     bias: Optional[baselines.BiasModel] = None, n_boot: int = 1000,
                     history_rating_reg: float = 2.0, blend: Optional[Tuple[float, float]] = None) -> Dict[str, Dict]:
    """retrieval_only + every scorer (pairs -> (engagement score, rating)) on the same candidates.

    Each ranker's nDCG@10 gain over retrieval-only carries a 95% bootstrap interval over users;
    the rating yardsticks (global mean, user + item bias model, the bias model with the user's recent
    ratings, and ``blend`` of the two) are scored on the same rows, and each ranker's squared error is
    compared with the best of them, again with an interval over users.
    """
    results = {}
    base = eval_set.retrieval_scores[eval_set.pairs.event, eval_set.position]
    results["retrieval_only"] = rerank_metrics(eval_set, base, None, ks, n_items)
    base_ndcg = evaluation.per_query("ndcg", eval_set.rerank(base), eval_set.targets, 10)
    target_rows = eval_set.target_pairs
    f, y = target_rows.features, target_rows.rating
    rating_baselines = {"global_mean": np.full(len(target_rows), train_rating_mean)} if len(y) else {}
    if bias is not None and len(y):   # no rated eval items (an implicit log): no rating yardsticks to print
        rating_baselines["bias_model"] = bias.predict(f[T.USER_IDX], f[T.ITEM_IDX])
        rating_baselines["bias_recent"] = bias.predict_recent(f[T.ITEM_IDX], f[T.HISTORY_IDX], f[T.HISTORY_RATINGS],
                                                              history_rating_reg)
        if blend is not None:  # both, weighted by least squares on the ranker's valid pairs
            rating_baselines["bias_blend"] = bias.predict_blend(blend, f[T.USER_IDX], f[T.ITEM_IDX], f[T.HISTORY_IDX],
                                                                f[T.HISTORY_RATINGS], history_rating_reg)
    for name, pred in rating_baselines.items():
        results[name] = {"rmse": rmse(pred, y)}
    best_rating = min(rating_baselines, key=lambda n: results[n]["rmse"]) if len(y) else None
    rating_users = eval_set.users[target_rows.event]
    for name, scorer in scorers.items():
        t0 = time.time()
        scores, _ = scorer(eval_set.pairs)
        _, ratings = scorer(target_rows)
        results[name] = rerank_metrics(eval_set, scores, ratings, ks, n_items)
        ndcg = evaluation.per_query("ndcg", eval_set.rerank(scores), eval_set.targets, 10)
        results[name]["ndcg_gain"] = baselines.bootstrap_lead(ndcg, base_ndcg, eval_set.users, n_boot=n_boot)
        (mine, users), (theirs, _) = (evaluation.user_means(v, eval_set.users) for v in (ndcg, base_ndcg))
        results[name]["ndcg_gain_per_user"] = baselines.bootstrap_lead(mine, theirs, users, n_boot=n_boot)
        if best_rating is not None and ratings is not None and len(ratings) == len(y):
            # relative change of the mean squared error vs the best rating baseline (negative = better)
            results[name]["mse_vs_best"] = dict(
                baselines.bootstrap_lead((ratings - y) ** 2, (rating_baselines[best_rating] - y) ** 2, rating_users,
                                         n_boot=n_boot), versus=best_rating)
        results[name]["score_seconds"] = round(time.time() - t0, 1)
    return results


TABLE_COLUMNS = ["model", "ndcg@10", "recall@10", "mrr", "auc", "rmse", "d_ndcg@10 [95% CI]", "d_mse [95% CI]",
                 ("train_s", "train_s", ".1f"), "n_queries"]


def report(results: Dict[str, Dict], title: str = "") -> str:
    rows = []
    for name, m in results.items():
        row = dict(model=name, **{k: v for k, v in m.items()   # NaN (no rating predicted) prints as "-"
                                  if not isinstance(v, dict) and not (isinstance(v, float) and np.isnan(v))})
        if m.get("ndcg_gain"):
            row["d_ndcg@10 [95% CI]"] = baselines.format_lead(m["ndcg_gain"])
        if m.get("mse_vs_best"):
            row["d_mse [95% CI]"] = baselines.format_lead(m["mse_vs_best"])
        rows.append(row)
    n_users = next((m["ndcg_gain"]["n_users"] for m in results.values() if m.get("ndcg_gain")), 0)
    title = title or (f"re-ranking retrieval's top-N (same candidates; interval: bootstrap over {n_users} users; "
                      f"rmse on the logged rated items; d_mse: vs the best rating baseline, "
                      f"{next((m['mse_vs_best']['versus'] for m in results.values() if m.get('mse_vs_best')), '-')}; "
                      f"bias_recent = bias model with the user's recent ratings, bias_blend = both, weighted on the "
                      f"valid pairs)")
    text = text_table.format_table(rows, TABLE_COLUMNS, title=title, float_fmt=".4f")
    gains = [f"{name} {baselines.format_lead(m['ndcg_gain_per_user'])}" for name, m in results.items()
             if m.get("ndcg_gain_per_user")]
    if gains:
        text += f"\neach user counted once, nDCG@10 gain over retrieval-only: {', '.join(gains)}"
    return text


# ---------------------------------------------------------------- the whole stage
def candidate_retriever(cfg, version_dir: str, trained, item_vectors: np.ndarray, out_dir: str):
    """(query_fn, item vectors, first event time of the ranker's slice, info) for the ranker's train candidates.

    ``ranking.candidates = "out_of_fold"``: a retriever trained on the train events before the
    latest ``ranking.oof_fraction`` of them proposes candidates for that slice, so the ranker
    learns from lists shaped like serving-time lists (retrieval's scores on unseen events).
    ``"in_sample"``: the final retriever on the events it was trained on (cheaper, optimistic).
    """
    rcfg = cfg.ranking
    if rcfg.candidates == "in_sample":
        return (lambda b: trained.model.query_tower(b)), item_vectors, None, {"candidates_from": "in_sample"}
    if rcfg.candidates != "out_of_fold":
        raise ValueError(f"ranking.candidates must be 'out_of_fold' or 'in_sample', got {rcfg.candidates!r}")
    from trainer.train import best_epoch, train_retrieval

    cut = int(np.quantile(trained.stats.times, 1.0 - rcfg.oof_fraction))
    log(f"[ranking] out-of-fold candidates: retriever on train events before {cut} "
        f"({(trained.stats.times < cut).mean():.0%} of train), ranker on the rest")
    t0 = time.time()
    # as many epochs as early stopping kept for the final retriever: the fold is the same model on 3/4 of
    # its data, and waiting out the patience again would cost epochs whose weights are thrown away
    fold = train_retrieval(version_dir, cfg, out_dir=os.path.join(out_dir, "fold_retrieval"), before_ts=cut,
                           epochs=rcfg.oof_epochs or best_epoch(trained.history, trained.monitor))
    vectors = er.catalogue_vectors(fold)
    info = {"candidates_from": "out_of_fold", "fold_cutoff_ts": cut, "fold_seconds": round(time.time() - t0, 1)}
    return (lambda b: fold.model.query_tower(b)), vectors, cut, info


def train_and_evaluate(cfg, version_dir: str, trained, item_vectors: np.ndarray, rankers: Sequence[str] = (),
                       gbdt: bool = False, epochs: Optional[int] = None, steps_per_epoch: Optional[int] = None,
                       out_dir: str = "") -> Dict:
    """Ranking pairs from ``trained`` (a TrainedRetrieval) -> rankers (+ GBDT) -> one comparison table."""
    if not out_dir:
        raise ValueError("train_and_evaluate needs out_dir (the trainer knows no run layout; see recsys.layout)")
    tf.io.gfile.makedirs(out_dir)
    rankers = list(rankers) or [cfg.ranking.model]
    tft_layer = trained.tft_output.transform_features_layer()
    query_fn = lambda b: trained.model.query_tower(b)  # noqa: E731
    cand_fn, cand_vectors, since_ts, fold_info = candidate_retriever(cfg, version_dir, trained, item_vectors, out_dir)
    train, valid, info = build_train_pairs(version_dir, cand_fn, cand_vectors, trained.catalogue, trained.stats,
                                           tft_layer, cfg.ranking, seed=cfg.train.seed, since_ts=since_ts)
    info.update(fold_info)
    eval_set = build_eval_set(version_dir, query_fn, item_vectors, trained.catalogue, trained.stats, tft_layer, cfg)
    tables = item_tables(trained.catalogue, tft_layer)
    # the blend of user bias and recent ratings, fitted like the ranker's candidates: a bias model of the events
    # before the ranker's slice, weighted on the slice's valid pairs (without that slice, the plain bias model)
    full_bias, fold_bias = fit_bias_models(version_dir, before_ts=since_ts)
    bias = full_bias if cfg.ranking.rating_init == "bias_model" else None
    blend = None
    if bias is not None:
        blend = rating_blend(fold_bias, valid, cfg.ranking.history_rating_reg) if fold_bias is not None else (1.0, 0.0)
    # the head trains beside biases that never saw its rows' ratings (out of fold), and ships with the full ones
    train_bias = (fold_bias or bias) if bias is not None else None
    if blend:
        log(f"[ranking] rating head starts at mean + item bias + {blend[0]:.2f} x user bias + {blend[1]:.2f} x "
            f"recent ratings' offset (least squares on the valid pairs, biases from before them)")
    st, k = trained.stats, cfg.ranking.covisit_neighbours
    full_table = covisit.table(st.users, st.item_index, st.times, trained.sizes.items, k)
    covisit_tables = (covisit.table(st.users, st.item_index, st.times, trained.sizes.items, k, before_ts=since_ts)
                      if since_ts is not None else full_table, full_table)
    trained_rankers: Dict[str, TrainedRanker] = {}
    scorers: Dict[str, Callable] = {}
    seconds: Dict[str, float] = {}
    for name in rankers:
        r = train_ranker(name, train, valid, trained.sizes, cfg, os.path.join(out_dir, name), epochs, steps_per_epoch,
                         tables, train_bias, covisit_tables, blend or (1.0, 0.0), final_bias=bias)
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
    results = evaluate_rankers(eval_set, scorers, rating_mean(train), n_items=trained.catalogue.size,
                               bias=full_bias, blend=blend,
                               n_boot=cfg.eval.bootstrap, history_rating_reg=cfg.ranking.history_rating_reg)
    for name, s in seconds.items():
        results[name]["train_s"] = round(s, 1)
    log(report(results))
    payload = {"results": results, "data": info, "eval_queries": eval_set.n_queries,
               "eval_candidates": int(eval_set.candidates.shape[1]),
               "protocol": "each eval event's retrieval top-N (retrieval evaluation's exclusions) re-ranked; "
                           "targets = the event's logged item"}
    with tf.io.gfile.GFile(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=float)
    cfg.save(os.path.join(out_dir, "config.json"))
    return {"results": results, "rankers": trained_rankers, "gbdt": gbdt_model, "eval_set": eval_set,
            "train_pairs": train, "valid_pairs": valid, "info": info}
