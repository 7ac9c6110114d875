"""Training entry (TFX ``run_fn`` style): preprocessed version dir in, trained model + metrics out.

Writes ``out_dir`` (any gfile URI): checkpoints/, history.json, config.json, feature_sizes.json. Where that
is belongs to the caller (``recsys.stages``); the trainer knows no run layout.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from preprocessing import schema
from trainer import data, distribute, optimizers, unseen_items
from trainer.weight_average import WeightAverage
from trainer.features import FeatureSizes
from trainer.progress import EpochProgress
from trainer.models.retrieval import TwoTowerModel, item_content_table


@dataclasses.dataclass
class TrainedRetrieval:
    model: TwoTowerModel
    sizes: FeatureSizes
    catalogue: data.Catalogue
    stats: data.TrainStats
    tft_output: object
    history: dict
    train_seconds: float
    out_dir: str
    monitor: tuple = ("val_loss", "min")  # (history key, mode) early stopping kept the best epoch by


def early_stopping_monitor(t, eval_ks, with_metrics: bool) -> tuple:
    """(Keras log key, mode) for ``train.early_stopping_metric``; ``val_loss`` when no top-K metric is computed
    (multi-worker roles validate without the catalogue metrics)."""
    metric = t.early_stopping_metric
    k = metric[4:] if metric.startswith("top_") else ""
    if metric != "loss" and not (k.isdigit() and int(k) in tuple(eval_ks)):
        raise ValueError(f"train.early_stopping_metric={metric!r} must be 'loss' or top_K with K one of eval.ks "
                         f"{tuple(eval_ks)}, e.g. top_{tuple(eval_ks)[0]}")
    if metric == "loss" or not with_metrics:
        return "val_loss", "min"
    return f"val_factorized_top_k/top_{k}_categorical_accuracy", "max"


MIN_BATCH = 32


def effective_batch_size(t, n_examples: int) -> int:
    """``train.batch_size``, made smaller when the train split is too small for ``train.min_steps_per_epoch``
    steps an epoch (never below ``MIN_BATCH``, whose in-batch negatives are still enough)."""
    if t.min_steps_per_epoch and n_examples < t.batch_size * t.min_steps_per_epoch:
        return max(min(MIN_BATCH, t.batch_size), n_examples // t.min_steps_per_epoch)
    return t.batch_size


def _progress(epochs: int) -> EpochProgress:
    return EpochProgress("train", epochs, keep=lambda k: k in ("loss", "val_loss") or k.startswith("val_factorized"),
                         rename=lambda k: k.replace("factorized_top_k/", "").replace("_categorical_accuracy", ""))


def with_item_images(rcfg, version_dir: str):
    """``rcfg`` with ``item_images = "data"`` resolved to the images file the preprocessed data carries."""
    if rcfg.item_images != "data":
        return rcfg
    from preprocessing.sources import images

    path = tf.io.gfile.join(version_dir, images.IMAGES_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"retrieval.item_images=data, but {version_dir} carries no {images.IMAGES_FILE}: ingest "
                                f"with --set data.item_images=true (synthetic), or put {images.IMAGES_FILE} in the "
                                f"data directory (preprocessing/sources/images.py says its format)")
    return dataclasses.replace(rcfg, item_images=path)


def build_retrieval(version_dir: str, cfg, with_metrics: bool = True, before_ts: Optional[data.Cut] = None):
    """Model + catalogue + train statistics; ``before_ts`` restricts the statistics to earlier train events."""
    tft_output = data.transform_output(version_dir)
    sizes = FeatureSizes.from_transform_output(tft_output, cfg.preprocess.num_price_buckets,
                                               cfg.preprocess.num_age_buckets)
    catalogue = data.load_catalogue(version_dir)
    stats = data.train_stats(version_dir, catalogue, sizes.items, before_ts=before_ts)
    stats.servable, stats.servable_info = unseen_items.servable_items(
        stats.item_counts, stats.items, stats.times, cfg.retrieval.unseen_items, catalogue.raw["item_release_ts"])
    sampling = cfg.retrieval.sampled_negatives > 0
    transformed = (catalogue.transformed(tft_output.transform_features_layer())
                   if with_metrics or cfg.retrieval.history_content or sampling else None)
    candidates = None
    if with_metrics:
        candidates = {k: v for k, v in transformed.items() if v.dtype != tf.string or k == "item_id"}  # image key
        if stats.servable is not None:  # validation top-K over what the index will hold
            candidates = {k: tf.boolean_mask(v, stats.servable) for k, v in candidates.items()}
    content = item_content_table(transformed, sizes.items) if cfg.retrieval.history_content else None
    tf.keras.utils.set_random_seed(cfg.train.seed)
    model = TwoTowerModel(sizes, with_item_images(cfg.retrieval, version_dir), stats.item_idx_counts, candidates,
                          metric_ks=tuple(cfg.eval.ks), item_content=content,
                          negatives_from=transformed if sampling else None)
    return model, sizes, catalogue, stats, tft_output


def train_retrieval(version_dir: str, cfg, out_dir: str, before_ts: Optional[data.Cut] = None,
                    epochs: Optional[int] = None, warm_start: Optional[TrainedRetrieval] = None) -> TrainedRetrieval:
    """Fits the two-tower on the train split (only events before ``before_ts`` when given).

    ``warm_start``: a previous model (same architecture) whose weights the new one starts from, row by row
    through the two vocabularies (trainer/warm_start.py); continuous training uses it.
    """
    # tf.distribute from TF_CONFIG / an Indexed Job (trainer/distribute.py), before any TF op
    role = distribute.resolve(cfg.train)
    if role.serves_only:  # a parameter-server task: host variables for the coordinator, never return
        distribute.serve_forever(role)
    out_dir = role.out_dir(out_dir)  # non-chief workers: scratch
    tf.io.gfile.makedirs(out_dir)
    t = cfg.train
    with role.strategy.scope():
        model, sizes, catalogue, stats, tft_output = build_retrieval(
            version_dir, cfg, with_metrics=role.kind == "none", before_ts=before_ts)
        model.compile(optimizer=optimizers.build(t))  # train.optimizer: row-sparse embedding updates
    spec = tft_output.transformed_feature_spec()
    window = None if before_ts is None else (None, before_ts)
    epochs = epochs or t.epochs
    batch = effective_batch_size(t, stats.n_examples)
    train_ds = data.dataset(version_dir, "train", batch, spec, shuffle=True, seed=t.seed,
                            shuffle_buffer=t.shuffle_buffer, keep="train", time_range=window,
                            skip_repeats=t.skip_repeats)
    valid_ds = data.dataset(version_dir, "train", 1024, spec, keep="valid", time_range=window,
                            skip_repeats=t.skip_repeats)
    first_valid = next(iter(valid_ds.take(1)), None)   # builds the towers below (a warm start's too)
    if role.kind != "parameter_server" and first_valid is None:
        from preprocessing.sources.tables import DataError

        raise DataError(f"{version_dir}: the validation slice (about 5% of the train events, by a stable hash) is "
                        f"empty: {stats.n_examples} train events are too few to train on and to stop early by; "
                        f"give a log with a few hundred events or more")
    if warm_start is not None:
        with role.strategy.scope():
            copied = _warm_start(model, tft_output, warm_start, first_valid)
        with tf.io.gfile.GFile(os.path.join(out_dir, "warm_start.json"), "w") as f:
            json.dump(dict(copied, previous=warm_start.out_dir), f, indent=2)
        print(f"[train] warm start from {warm_start.out_dir}: {copied}", flush=True)
    if role.kind != "parameter_server":  # every variable before fit: one trace of train_step, not two
        with role.strategy.scope():
            if warm_start is None:  # (a warm start built them already)
                _build_towers(model, first_valid)
            optimizers.create_slots(model)
        if warm_start is None and cfg.retrieval.item_init == "item2vec":  # (a warm start's rows come first)
            _items_from_item2vec(model, version_dir, catalogue, tft_output, cfg, before_ts, role.kind)
    ckpt = os.path.join(out_dir, "checkpoints", "best.weights")
    monitor, mode = early_stopping_monitor(t, cfg.eval.ks, with_metrics=role.kind == "none")
    callbacks = [
        _progress(epochs),
        tf.keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=t.early_stopping_patience,
                                         restore_best_weights=True),
        tf.keras.callbacks.ModelCheckpoint(ckpt, monitor=monitor, mode=mode, save_best_only=True,
                                           save_weights_only=True),
    ]
    if role.kind == "parameter_server":  # the coordinator runs no validation pass: keep the last weights
        callbacks = [callbacks[0], tf.keras.callbacks.ModelCheckpoint(ckpt, save_weights_only=True)]
    elif t.weight_average and role.kind == "none":  # before early stopping: it and the checkpoint keep the average
        callbacks.insert(1, WeightAverage(t.weight_average, every=WeightAverage.every_for(model)))
    smaller = (f" (train.batch_size {t.batch_size} would give {stats.n_examples // t.batch_size} steps an epoch; "
               f"train.min_steps_per_epoch={t.min_steps_per_epoch})" if batch < t.batch_size else "")
    print(f"[train] retrieval: {stats.n_examples} train examples, {catalogue.size} items, "
          f"batch {batch}{smaller}, up to {epochs} epochs", flush=True)
    left_out = unseen_items.describe(stats.servable_info)
    if left_out:
        print(f"[train] {left_out}", flush=True)
    t0 = time.time()
    inputs = role.fit_inputs(train_ds, valid_ds, stats.n_examples, batch, t.steps_per_epoch)
    hist = model.fit(epochs=epochs, callbacks=callbacks, verbose=0 if t.verbose == 2 else t.verbose, **inputs)
    seconds = time.time() - t0
    history = {k: [float(x) for x in v] for k, v in hist.history.items()}
    with tf.io.gfile.GFile(os.path.join(out_dir, "history.json"), "w") as f:  # local or gs://
        json.dump(history, f, indent=2)
    with tf.io.gfile.GFile(os.path.join(out_dir, "feature_sizes.json"), "w") as f:
        json.dump(sizes.to_dict(), f, indent=2)
    cfg.save(os.path.join(out_dir, "config.json"))
    return TrainedRetrieval(model, sizes, catalogue, stats, tft_output, history, seconds, out_dir, (monitor, mode))


def best_epoch(history: dict, monitor: tuple = ("val_loss", "min")) -> Optional[int]:
    """The epoch early stopping kept (1-based: the best ``monitor`` = (history key, min | max), the first of
    ties; the lowest val_loss when the history lacks that key); None without a validation history."""
    key, mode = monitor if monitor[0] in history else ("val_loss", "min")  # trained without top-K metrics
    values = history.get(key) or []
    if not values:
        return None
    return int(np.argmin(values) if mode == "min" else np.argmax(values)) + 1


def _warm_start(model: TwoTowerModel, tft_output, previous: TrainedRetrieval, batch) -> dict:
    """Builds both models' variables on one batch (the previous one's restore as they are created), then copies."""
    from trainer import warm_start

    for m in (model, previous.model):
        _build_towers(m, batch)
    outputs = {"old": previous.tft_output, "new": tft_output}
    return warm_start.warm_start(model, previous.model, lambda side, name: outputs[side].vocabulary_by_name(name))


def _items_from_item2vec(model, version_dir, catalogue, tft_output, cfg, before_ts, role_kind: str) -> None:
    """retrieval.item_init=item2vec, in one process only: workers that each wrote their own item2vec rows into
    mirrored tables would start from (slightly) different replicas."""
    if role_kind != "none":
        print(f"[train] retrieval.item_init=item2vec is single-process only; {role_kind} training starts from "
              f"random item rows", flush=True)
        return
    from trainer import item_init

    done = item_init.from_item2vec(model, version_dir, catalogue, tft_output.vocabulary_by_name(schema.VOCAB_ITEM),
                                   cfg, before_ts=before_ts)
    print(f"[train] item tables started from item2vec: {done}", flush=True)


def _build_towers(model: TwoTowerModel, batch) -> None:
    """Creates both towers' weights (inference mode: no dropout, batch norm statistics untouched)."""
    model.query_tower(batch)
    model.candidate_tower(batch)
