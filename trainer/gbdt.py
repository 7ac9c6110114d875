"""Gradient-boosted-trees baseline for the ranking stage, on the same pairs and features as the rankers.

Backend: TensorFlow Decision Forests (``tensorflow-decision-forests==1.9.2`` is the release
built for ``tensorflow==2.16.2``; with ``ydf==0.9.0``, the last YDF whose protobuf
requirement fits our protobuf 4.25, and ``wurlitzer``). When TF-DF is not installed, YDF
alone (TF-DF's own engine, no TensorFlow pin) is used; when neither is, ``train_gbdt``
raises an ImportError that says what to install.

Features: the shared feature-input layer's inputs as scalars (trees cannot use
embeddings): numbers as they come out of TF-Transform, small vocabularies as categorical,
high-cardinality ids (user, item, last item, country x genre) as integers, the primary
genre, the last history item, the candidate-source features and the same
history x candidate matches the neural rankers compute (``history_matches``).
Two models: engagement (binary classification, the ranking score) and rating
(regression on the rows with an observed rating).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.schema import T
from trainer.models import ranking as ranking_models
from trainer.ranking_data import Pairs, log

INSTALL_HINT = ("the GBDT baseline needs TensorFlow Decision Forests: pip install "
                "'tensorflow-decision-forests==1.9.2' 'ydf==0.9.0' 'wurlitzer==3.1.1' (the TF-DF release built for "
                "tensorflow==2.16.2), or at least 'ydf==0.9.0'")

# Columns by kind, views of the ranker fields declared in preprocessing/schema.py (RANKER_FIELDS, each with its
# GBDT column). High-cardinality ids go in as plain integers: categorical splits over thousands of values made
# training ~14x slower here (376 s vs 27 s on 110K rows) and early-stopped at a third of the trees (overfitting).
NUMERIC = schema.gbdt_columns(schema.GBDT_NUMERIC)
CATEGORICAL = schema.gbdt_columns(schema.GBDT_CATEGORICAL)
IDS = schema.gbdt_columns(schema.GBDT_ID)
# ranker fields (ranking.features_off) -> the columns left out with them, so both see the same features
FIELD_COLUMNS = schema.gbdt_field_columns()


def backend() -> str:
    """'tfdf' or 'ydf'; ImportError with the install hint when neither is importable."""
    try:
        import tensorflow_decision_forests  # noqa: F401

        return "tfdf"
    except ImportError:
        pass
    try:
        import ydf  # noqa: F401

        return "ydf"
    except ImportError:
        raise ImportError(INSTALL_HINT) from None


def tabular(pairs: Pairs, tables: Tuple[np.ndarray, np.ndarray], batch_size: int = 65536) -> Dict[str, np.ndarray]:
    """Pairs -> flat columns (numeric float32, categorical int64 >= 0 with 0 = missing)."""
    f = pairs.features
    out: Dict[str, np.ndarray] = {}
    titles, genres = (tf.constant(t) for t in tables)
    matches = {k: [] for k in ("title_match_last", "title_match_history", "genre_match_history")}
    for s in range(0, len(pairs), batch_size):
        m = ranking_models.history_matches(tf.constant(f[T.HISTORY_IDX][s:s + batch_size]),
                                           tf.constant(f[T.TITLE_IDX][s:s + batch_size]),
                                           tf.constant(f[T.GENRE_IDX][s:s + batch_size]), titles, genres)
        for k in matches:
            matches[k].append(m[k].numpy())
    for k, v in matches.items():
        out[k] = np.concatenate(v) if v else np.empty(0, np.float32)
    out["history_rating"] = ranking_models.history_rating(tf.constant(f[T.HISTORY_RATINGS], tf.float32)).numpy()
    for k in NUMERIC:
        if k not in out:
            out[k] = f[k].astype(np.float32)
    out["retrieval_rank"] = np.where(f["retrieval_rank"] > 0, f["retrieval_rank"], 10_000).astype(np.float32)
    cat = {k: f[k] for k in CATEGORICAL + IDS if k in f}
    cat["primary_genre"] = f[T.GENRE_IDX][:, 0]
    cat["last_item_idx"] = f[T.HISTORY_IDX][:, -1]
    cat["candidate_source_idx"] = ranking_models.source_index(tf.constant(f["candidate_source"])).numpy()
    for k in CATEGORICAL + IDS:
        out[k] = np.maximum(np.asarray(cat[k], np.int64) + 1, 0)
    return out


@dataclasses.dataclass
class GBDTRanker:
    backend: str
    engagement_model: object
    rating_model: Optional[object]
    tables: Tuple[np.ndarray, np.ndarray]
    rating_mean: float
    train_seconds: float
    dropped: Tuple[str, ...] = ()

    def _predict(self, model, cols: Dict[str, np.ndarray]) -> np.ndarray:
        if self.backend == "tfdf":
            ds = tf.data.Dataset.from_tensor_slices(cols).batch(65536)
            return np.asarray(model.predict(ds, verbose=0)).reshape(-1)
        return np.asarray(model.predict(cols)).reshape(-1)

    def score(self, pairs: Pairs) -> Tuple[np.ndarray, np.ndarray]:
        """(P(engagement), predicted rating) per row: the same interface as the neural rankers' scorer."""
        if not len(pairs):
            return np.empty(0, np.float32), np.empty(0, np.float32)
        cols = {k: v for k, v in tabular(pairs, self.tables).items() if k not in self.dropped}
        p = self._predict(self.engagement_model, cols)
        r = self._predict(self.rating_model, cols) if self.rating_model is not None else \
            np.full(len(pairs), self.rating_mean, np.float32)
        return p, r


def _fit(engine: str, cols: Dict[str, np.ndarray], label: np.ndarray, task: str, rcfg, seed: int):
    if engine == "tfdf":
        import tensorflow_decision_forests as tfdf

        usage = [tfdf.keras.FeatureUsage(name=k, semantic=tfdf.keras.FeatureSemantic.CATEGORICAL)
                 for k in CATEGORICAL]
        model = tfdf.keras.GradientBoostedTreesModel(
            task=tfdf.keras.Task.CLASSIFICATION if task == "classification" else tfdf.keras.Task.REGRESSION,
            num_trees=rcfg.gbdt_trees, max_depth=rcfg.gbdt_max_depth, features=usage,
            exclude_non_specified_features=False, random_seed=seed, verbose=0)
        y = label.astype(np.int64 if task == "classification" else np.float32)
        model.fit(tf.data.Dataset.from_tensor_slices((cols, y)).batch(65536), verbose=0)
        return model
    import ydf

    data = dict(cols)
    data["__label__"] = label.astype(np.int64 if task == "classification" else np.float32)
    learner = ydf.GradientBoostedTreesLearner(
        label="__label__", task=ydf.Task.CLASSIFICATION if task == "classification" else ydf.Task.REGRESSION,
        num_trees=rcfg.gbdt_trees, max_depth=rcfg.gbdt_max_depth, random_seed=seed,
        features=[ydf.Feature(k, ydf.Semantic.CATEGORICAL) for k in CATEGORICAL], include_all_columns=True)
    return learner.train(data, verbose=0)


def train_gbdt(train: Pairs, valid: Pairs, rcfg, tables: Tuple[np.ndarray, np.ndarray], seed: int = 7) -> GBDTRanker:
    """Engagement classifier + rating regressor on the rankers' training pairs (valid rows folded in:
    gradient boosting holds out its own early-stopping split)."""
    engine = backend()
    t0 = time.time()
    both = Pairs({k: np.concatenate([train.features[k], valid.features[k]]) for k in train.features},
                 *(np.concatenate([getattr(train, a), getattr(valid, a)]) for a in
                   ("engagement", "engagement_weight", "rating", "rating_weight", "event", "item", "positive")))
    dropped = tuple(c for f in getattr(rcfg, "features_off", ()) for c in FIELD_COLUMNS.get(f, ()))
    cols = {k: v for k, v in tabular(both, tables).items() if k not in dropped}
    listed = both.engagement_weight > 0
    eng = _fit(engine, {k: v[listed] for k, v in cols.items()}, both.engagement[listed], "classification", rcfg, seed)
    rated = both.rating_weight > 0
    rat = _fit(engine, {k: v[rated] for k, v in cols.items()}, both.rating[rated], "regression", rcfg, seed) \
        if rated.sum() >= 50 else None
    mean = float(both.rating[rated].mean()) if rated.any() else 3.5
    seconds = time.time() - t0
    log(f"[ranking] gbdt ({engine}): {int(listed.sum())} engagement rows, {int(rated.sum())} rating rows, "
        f"{seconds:.1f}s")
    return GBDTRanker(engine, eng, rat, tables, mean, seconds, dropped)
