"""Training entry (TFX ``run_fn`` style): preprocessed version dir in, trained model + metrics out.

Writes ``<run>/training/retrieval/``: checkpoints/, history.json, config.json, feature_sizes.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

import tensorflow as tf

from trainer import data
from trainer.features import FeatureSizes
from trainer.models.retrieval import TwoTowerModel


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


class _Progress(tf.keras.callbacks.Callback):
    """One line per epoch with wall time (Keras' own bar floods non-interactive logs)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs, self.t0 = epochs, time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = {k.replace("factorized_top_k/", "").replace("_categorical_accuracy", ""): round(float(v), 4)
                 for k, v in logs.items() if k in ("loss", "val_loss") or k.startswith("val_factorized")}
        print(f"[train] epoch {epoch + 1}/{self.epochs} {time.time() - self.t0:6.1f}s {shown}", flush=True)


def build_retrieval(version_dir: str, cfg, with_metrics: bool = True):
    tft_output = data.transform_output(version_dir)
    sizes = FeatureSizes.from_transform_output(tft_output, cfg.preprocess.num_price_buckets,
                                               cfg.preprocess.num_age_buckets)
    catalogue = data.load_catalogue(version_dir)
    stats = data.train_stats(version_dir, catalogue, sizes.items)
    candidates = catalogue.transformed(tft_output.transform_features_layer()) if with_metrics else None
    if candidates is not None:
        candidates = {k: v for k, v in candidates.items() if v.dtype != tf.string}
    tf.keras.utils.set_random_seed(cfg.train.seed)
    model = TwoTowerModel(sizes, cfg.retrieval, stats.item_idx_counts, candidates, metric_ks=tuple(cfg.eval.ks))
    return model, sizes, catalogue, stats, tft_output


def train_retrieval(version_dir: str, cfg, out_dir: Optional[str] = None) -> TrainedRetrieval:
    out_dir = out_dir or cfg.path("training", "retrieval")
    os.makedirs(out_dir, exist_ok=True)
    model, sizes, catalogue, stats, tft_output = build_retrieval(version_dir, cfg)
    t = cfg.train
    model.compile(optimizer=tf.keras.optimizers.Adam(t.learning_rate))
    spec = tft_output.transformed_feature_spec()
    train_ds = data.dataset(version_dir, "train", t.batch_size, spec, shuffle=True, seed=t.seed,
                            shuffle_buffer=t.shuffle_buffer, keep="train")
    valid_ds = data.dataset(version_dir, "train", 1024, spec, keep="valid")
    ckpt = os.path.join(out_dir, "checkpoints", "best.weights")
    callbacks = [
        _Progress(t.epochs),
        tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=t.early_stopping_patience,
                                         restore_best_weights=True),
        tf.keras.callbacks.ModelCheckpoint(ckpt, monitor="val_loss", save_best_only=True, save_weights_only=True),
    ]
    print(f"[train] retrieval: {stats.n_examples} train examples, {catalogue.size} items, "
          f"batch {t.batch_size}, up to {t.epochs} epochs", flush=True)
    t0 = time.time()
    hist = model.fit(train_ds, validation_data=valid_ds, epochs=t.epochs, callbacks=callbacks,
                     verbose=0 if t.verbose == 2 else t.verbose, steps_per_epoch=t.steps_per_epoch)
    seconds = time.time() - t0
    history = {k: [float(x) for x in v] for k, v in hist.history.items()}
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=2)
    with open(os.path.join(out_dir, "feature_sizes.json"), "w") as f:
        json.dump(sizes.to_dict(), f, indent=2)
    cfg.save(os.path.join(out_dir, "config.json"))
    return TrainedRetrieval(model, sizes, catalogue, stats, tft_output, history, seconds, out_dir)
