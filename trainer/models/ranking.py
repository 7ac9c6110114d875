"""Ranking models (second stage): DCN-v2, Wide & Deep and DeepFM over one shared feature-input layer.

Every model is ``RankingFeatures`` (transformed + candidate-source features -> named
field tensors) followed by an interaction part and two heads:

- ``engagement_logit``: P(the user engages with this candidate), the ranking score,
  trained with binary cross-entropy (TFRS ``tasks.Ranking``);
- ``rating``: the explicit rating the user would give, trained with MSE on the rows
  where a rating was observed (the logged positives), plus rating-only user and item biases.

So the models differ only in ``interaction``:

- ``dcn``:       DCN-v2 cross layers (``tfrs.layers.dcn.Cross``, full or low rank) stacked
                 before, or in parallel with, a deep MLP (Wang et al., 2021);
- ``wide_deep``: a linear "wide" part over sparse ids and explicit crosses (user-country x
                 genre, device x genre, last watched item x candidate) plus a deep MLP
                 (Cheng et al., 2016);
- ``deepfm``:    first-order weights + factorisation-machine pairwise dot products of all
                 field embeddings, plus a deep MLP over the same embeddings (Guo et al., 2017).

Models read features by the names in ``preprocessing.schema.T`` plus the raw retrieval
features of ``schema.RETRIEVAL_COLUMNS``, so the same model runs on training pairs and
inside the exported ``ranking``/``recommend`` SavedModels behind the TFT layer.

``fields()`` and ``from_fields()`` split the forward pass at the field tensors, which is
where integrated gradients attribute the score (``trainer/explain.py``).
"""
from __future__ import annotations

import collections
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from preprocessing import schema
from preprocessing.schema import T
from trainer.features import FeatureSizes, IndexEmbedding, masked_mean, mlp, scalar
from trainer.models.epoch_loss import EpochLossModel

MODEL_KINDS = ("dcn", "wide_deep", "deepfm")

# Views of the schema's declarations (preprocessing/schema.py RANKER_FIELDS): the transformed (TFT)
# features the rankers read, then the raw retrieval features (schema.RETRIEVAL_FEATURES); field name ->
# what it is (reported by `recsys explain`), in concatenation order.
TRANSFORMED_INPUTS = schema.RANKER_TRANSFORMED_INPUTS
MODEL_INPUTS = schema.RANKER_INPUTS
FIELD_DOCS = schema.FIELD_DOCS
FIELDS = schema.FIELDS
# Fields embedded as a number times a learned vector. Their layers are created direct numbers first, then the
# history x candidate matches (fields computed from several inputs): the order their auto-named variables
# have always had.
_FIELD_BY_NAME = {f.name: f for f in schema.RANKER_FIELDS}
NUMERIC_FIELDS = tuple(sorted(schema.field_names(schema.NUMERIC),
                              key=lambda name: len(_FIELD_BY_NAME[name].inputs) > 1))
WIDE_CROSS_BUCKETS = 100_003  # hashed last-item x candidate-item cross (wide part)


def source_index(source: tf.Tensor) -> tf.Tensor:
    """candidate_source string -> index in schema.CANDIDATE_SOURCES; unknown -> len(CANDIDATE_SOURCES)."""
    vocab = tf.constant(list(schema.CANDIDATE_SOURCES))
    hits = tf.equal(tf.expand_dims(source, -1), vocab)
    return tf.where(tf.reduce_any(hits, -1), tf.argmax(tf.cast(hits, tf.int32), -1, output_type=tf.int64),
                    tf.constant(len(schema.CANDIDATE_SOURCES), tf.int64))


def rank_feature(rank: tf.Tensor) -> tf.Tensor:
    """1-based retrieval rank -> log1p(rank) centred for ~1..200 (0 = unknown -> 0)."""
    r = tf.cast(rank, tf.float32)
    return tf.where(r > 0, (tf.math.log1p(r) - 3.0) / 1.5, tf.zeros_like(r))


def history_rating(ratings: tf.Tensor) -> tf.Tensor:
    """[B, H] history ratings (0 = none) -> [B] shrunk mean minus 3 (the scale's middle); 0 without ratings."""
    r = tf.cast(ratings, tf.float32)
    n = tf.reduce_sum(tf.cast(r > 0, tf.float32), axis=1)
    return (tf.reduce_sum(r, axis=1) - 3.0 * n) / (n + 2.0)


def recent_rating_offset(ratings: tf.Tensor, item_bias: tf.Tensor, mean: float, reg: float) -> tf.Tensor:
    """[B, H] history ratings and [B, H] their items' biases -> [B] how the user rates compared with the items'
    averages: sum(r - mean - b_i) over rated history items / (count + reg). 0 without ratings.

    The user bias of a bias model comes from train ratings only; users met at serving time are often new, or
    have rated a lot since, and their recent ratings (which the request carries) say more about them.
    """
    r = tf.cast(ratings, tf.float32)
    rated = tf.cast(r > 0, tf.float32)
    dev = tf.reduce_sum(rated * (r - mean - item_bias), axis=1)
    return dev / (tf.reduce_sum(rated, axis=1) + reg)


def primary_genre(genre_idx: tf.Tensor) -> tf.Tensor:
    return genre_idx[:, 0]


def device_x_genre(device_idx: tf.Tensor, genre_idx: tf.Tensor, sizes: FeatureSizes) -> tf.Tensor:
    """Exact (unhashed) cross id of device and primary genre; any -1 (unknown) -> its own slot 0."""
    d = tf.cast(device_idx, tf.int64) + 1
    g = tf.cast(primary_genre(genre_idx), tf.int64) + 1
    return d * (sizes.genres + 1) + g


def last_item_x_item(history_idx: tf.Tensor, item_idx: tf.Tensor, buckets: int = WIDE_CROSS_BUCKETS) -> tf.Tensor:
    """Hashed cross id of (last history item, candidate): memorises "after X people watch Y" (sequels)."""
    last = tf.cast(history_idx[:, -1], tf.int64) + 1
    item = tf.cast(item_idx, tf.int64) + 1
    return tf.math.floormod(last * 1_000_003 + item, buckets)


def listwise_loss(logits: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor, group: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy of each event's engaged rows against every row of the same event (``group``), as TF
    Ranking's SoftmaxLoss: only the order within one retrieved list counts, which is what re-ranking changes, so the
    model spends nothing on what moves every candidate of a query alike. Rows with weight 0 take no part."""
    n = tf.reduce_max(group) + 1
    live = weights > 0
    masked = tf.where(live, logits, tf.fill(tf.shape(logits), -1e9))
    top = tf.math.unsorted_segment_max(masked, group, n)
    e = tf.where(live, tf.exp(masked - tf.gather(top, group)), tf.zeros_like(logits))
    lse = tf.math.log(tf.math.unsorted_segment_sum(e, group, n) + 1e-12) + top
    target = labels * weights
    return tf.reduce_sum(target * (tf.gather(lse, group) - logits)) / tf.maximum(tf.reduce_sum(target), 1.0)


class ScaledNumeric(tf.keras.layers.Layer):
    """[B] numeric -> x * v (a learned [d] vector): how FMs and field-wise models embed a number."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dense = tf.keras.layers.Dense(dim, use_bias=False)

    def call(self, x):
        return self.dense(scalar(x))


def item_tables(n_items: int, item_idx, title_idx, genre_idx) -> Tuple[np.ndarray, np.ndarray]:
    """[n_items + 1, L] title-token and genre tables by item index + 1 (row 0 = padding, all -1)."""
    rows = np.asarray(item_idx, np.int64) + 1
    ok = (rows >= 1) & (rows < n_items + 1)
    titles = np.full((n_items + 1, schema.TITLE_TOKENS), -1, np.int64)
    genres = np.full((n_items + 1, schema.MAX_GENRES), -1, np.int64)
    titles[rows[ok]] = np.asarray(title_idx)[ok]
    genres[rows[ok]] = np.asarray(genre_idx)[ok]
    return titles, genres


def token_overlap(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Number of real (>= 0) tokens of ``a`` [..., La] that occur in ``b`` [..., Lb] (same leading dims)."""
    eq = tf.equal(tf.expand_dims(a, -1), tf.expand_dims(b, -2)) & tf.expand_dims(a >= 0, -1)
    return tf.reduce_sum(tf.cast(tf.reduce_any(eq, -1), tf.float32), -1)


def history_matches(history_idx, title_idx, genre_idx, item_titles, item_genres) -> Dict[str, tf.Tensor]:
    """History x candidate content matches, via item-index -> title/genre tables (row 0 = padding)."""
    rows = tf.cast(history_idx, tf.int64) + 1                                  # -1 (pad) -> row 0
    rows = tf.clip_by_value(rows, 0, tf.cast(tf.shape(item_titles)[0] - 1, tf.int64))
    hist_titles = tf.gather(item_titles, rows)                                  # [B, H, Lt]
    hist_genres = tf.gather(item_genres, rows)                                  # [B, H, Lg]
    real = tf.cast(history_idx >= 0, tf.float32)
    per_item = token_overlap(tf.expand_dims(title_idx, 1), hist_titles)                      # [B, H]
    primary = tf.reshape(tf.cast(genre_idx[:, 0], tf.int64), [-1, 1, 1])
    genre_hit = tf.cast(tf.reduce_any(tf.equal(hist_genres, primary) & (primary >= 0), -1), tf.float32)
    return {
        "title_match_last": per_item[:, -1] * real[:, -1],
        "title_match_history": tf.reduce_max(per_item * real, axis=1),
        "genre_match_history": tf.reduce_sum(genre_hit * real, 1) / tf.maximum(tf.reduce_sum(real, 1), 1.0),
    }


def covisit_match(history_idx, item_idx, neighbour_ids, neighbour_weights) -> Dict[str, tf.Tensor]:
    """Similarity of each candidate to the history through a co-visitation table (``trainer.covisit``).

    Rows of the table are item index + 1 (row 0 = padding); the candidate's weight in each history
    item's neighbour list is summed over the history and read for the last item.
    """
    rows = tf.clip_by_value(tf.cast(history_idx, tf.int64) + 1, 0,
                            tf.cast(tf.shape(neighbour_ids)[0] - 1, tf.int64))
    ids = tf.gather(neighbour_ids, rows)                                         # [B, H, K]
    w = tf.gather(neighbour_weights, rows)
    hit = tf.equal(ids, tf.reshape(tf.cast(item_idx, tf.int64), [-1, 1, 1])) & (ids >= 0)
    per_item = tf.reduce_sum(tf.where(hit, w, tf.zeros_like(w)), -1)              # [B, H]
    per_item = per_item * tf.cast(history_idx >= 0, tf.float32)
    return {"covisit_history": tf.reduce_sum(per_item, 1), "covisit_last": per_item[:, -1]}


class RankingFeatures(tf.keras.layers.Layer):
    """The shared feature-input layer: one [B, dim] tensor per field of ``FIELDS``.

    Categorical ids -> embeddings (the item table is shared by the candidate and the
    history), lists -> masked means, numbers -> scaled vectors. -1 (padding) embeds to 0.
    History x candidate matches read two constant tables (item index -> title tokens /
    genres, set once from the catalogue by ``set_item_tables`` and saved with the weights).
    """

    def __init__(self, sizes: FeatureSizes, dim: int, l2: float = 0.0, covisit_neighbours: int = 50, **kwargs):
        super().__init__(**kwargs)
        self.sizes, self.dim = sizes, dim
        e = lambda n, name: IndexEmbedding(n, dim, l2, name=name)  # noqa: E731
        self.user = e(sizes.users, "user_emb")
        self.age = e(sizes.ages, "age_emb")
        self.country = e(sizes.countries, "country_emb")
        self.device = e(sizes.devices, "device_emb")
        self.hour = e(24, "hour_emb")
        self.weekday = e(7, "weekday_emb")
        self.item = e(sizes.items, "item_emb")
        self.genre = e(sizes.genres, "genre_emb")
        self.title = e(sizes.title_tokens, "title_emb")
        self.price_bucket = e(sizes.price_buckets, "price_bucket_emb")
        self.age_bucket = e(sizes.item_age_buckets, "item_age_bucket_emb")
        self.cross = e(sizes.crosses, "country_x_genre_emb")
        self.last_x_item = e(WIDE_CROSS_BUCKETS, "last_item_x_item_emb")
        self.item_titles = self.add_weight("item_titles", shape=[sizes.items + 1, schema.TITLE_TOKENS], dtype=tf.int64,
                                           initializer=tf.keras.initializers.Constant(-1), trainable=False)
        self.item_genres = self.add_weight("item_genres", shape=[sizes.items + 1, schema.MAX_GENRES], dtype=tf.int64,
                                           initializer=tf.keras.initializers.Constant(-1), trainable=False)
        k = max(int(covisit_neighbours), 1)
        self.covisit_ids = self.add_weight("covisit_ids", shape=[sizes.items + 1, k], dtype=tf.int64,
                                           initializer=tf.keras.initializers.Constant(-1), trainable=False)
        self.covisit_weights = self.add_weight("covisit_weights", shape=[sizes.items + 1, k], dtype=tf.float32,
                                               initializer="zeros", trainable=False)
        self.source = e(len(schema.CANDIDATE_SOURCES) + 1, "source_emb")
        self.numeric = {name: ScaledNumeric(dim, name=f"{name}_num") for name in NUMERIC_FIELDS}

    def set_item_tables(self, item_idx, title_idx, genre_idx) -> None:
        """Item index -> title tokens / genres (from the transformed catalogue)."""
        titles, genres = item_tables(self.sizes.items, item_idx, title_idx, genre_idx)
        self.item_titles.assign(titles)
        self.item_genres.assign(genres)

    def set_covisit(self, ids: np.ndarray, weights: np.ndarray) -> None:
        """Co-visitation table (``trainer.covisit.table``) the covisit_* fields read."""
        k = self.covisit_ids.shape[1]
        fit_ids = np.full((self.sizes.items + 1, k), -1, np.int64)
        fit_w = np.zeros((self.sizes.items + 1, k), np.float32)
        n, kk = min(len(ids), fit_ids.shape[0]), min(ids.shape[1], k)
        fit_ids[:n, :kk], fit_w[:n, :kk] = ids[:n, :kk], weights[:n, :kk]
        self.covisit_ids.assign(fit_ids)
        self.covisit_weights.assign(fit_w)

    def call(self, x: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        hist = x[T.HISTORY_IDX]
        hist_emb = self.item(hist)
        n = self.numeric
        match = history_matches(hist, x[T.TITLE_IDX], x[T.GENRE_IDX], self.item_titles, self.item_genres)
        match.update(covisit_match(hist, x[T.ITEM_IDX], self.covisit_ids, self.covisit_weights))
        f = {
            "user_id": self.user(x[T.USER_IDX]),
            "user_age": self.age(x[T.USER_AGE_IDX]),
            "user_country": self.country(x[T.USER_COUNTRY_IDX]),
            "user_tenure": n["user_tenure"](x[T.USER_TENURE_Z]),
            "device": self.device(x[T.DEVICE_IDX]),
            "hour": self.hour(x[T.HOUR]),
            "weekday": self.weekday(x[T.WEEKDAY]),
            "time": n["time"](x[T.TIME_Z]),
            "item_id": self.item(x[T.ITEM_IDX]),
            "item_genres": masked_mean(self.genre(x[T.GENRE_IDX]), x[T.GENRE_IDX]),
            "item_title": masked_mean(self.title(x[T.TITLE_IDX]), x[T.TITLE_IDX]),
            "price": n["price"](x[T.PRICE_Z]),
            "price_bucket": self.price_bucket(x[T.PRICE_BUCKET]),
            "freshness": n["freshness"](x[T.ITEM_AGE_Z]),
            "freshness_bucket": self.age_bucket(x[T.ITEM_AGE_BUCKET]),
            "release": n["release"](x[T.ITEM_RELEASE_Z]),
            "history_items": masked_mean(hist_emb, hist),
            "last_item": hist_emb[:, -1, :],
            "recent_items": masked_mean(hist_emb[:, -3:, :], hist[:, -3:]),
            "history_len": n["history_len"](tf.math.log1p(tf.cast(x[T.HISTORY_LEN], tf.float32))),
            "history_gap": n["history_gap"](x[T.HISTORY_GAP_Z]),
            "history_rating": n["history_rating"](history_rating(x[T.HISTORY_RATINGS])),
            "title_match_last": n["title_match_last"](match["title_match_last"]),
            "title_match_history": n["title_match_history"](match["title_match_history"]),
            "genre_match_history": n["genre_match_history"](match["genre_match_history"]),
            "covisit_history": n["covisit_history"](tf.math.log1p(match["covisit_history"])),
            "covisit_last": n["covisit_last"](match["covisit_last"]),
            "country_x_genre": self.cross(x[T.COUNTRY_X_GENRE]),
            "last_item_x_item": self.last_x_item(last_item_x_item(hist, x[T.ITEM_IDX])),
            "candidate_source": self.source(source_index(x["candidate_source"])),
            "retrieval_rank": n["retrieval_rank"](rank_feature(x["retrieval_rank"])),
            "retrieval_score": n["retrieval_score"](x["retrieval_score"]),
        }
        missing = [k for k in FIELDS if k not in f]
        if missing:
            raise ValueError(f"ranker fields {missing} are declared in schema.RANKER_FIELDS but not computed here")
        return collections.OrderedDict((k, f[k]) for k in FIELDS)


class WideFeatures(tf.keras.layers.Layer):
    """Linear ("wide") terms, one [B, 1] tensor per feature, named ``wide/<feature>``.

    ``crosses=True`` adds the explicit crosses of Wide & Deep; without them this is the
    first-order part of DeepFM.
    """

    def __init__(self, sizes: FeatureSizes, l2: float = 0.0, crosses: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.sizes, self.crosses = sizes, crosses
        w = lambda n, name: IndexEmbedding(n, 1, l2, name=name)  # noqa: E731
        counts = {"user_id": sizes.users, "item_id": sizes.items, "user_age": sizes.ages,
                  "user_country": sizes.countries, "device": sizes.devices, "hour": 24, "weekday": 7,
                  "price_bucket": sizes.price_buckets, "freshness_bucket": sizes.item_age_buckets}
        self.keys = {name: _FIELD_BY_NAME[name].inputs[0] for name in counts}  # each id field's transformed input
        self.ids = {name: w(n, f"w_{name}") for name, n in counts.items()}
        self.genre = w(sizes.genres, "w_genre")
        self.source = w(len(schema.CANDIDATE_SOURCES) + 1, "w_source")
        self.dense = tf.keras.layers.Dense(1, use_bias=False, name="w_numeric")
        if crosses:
            self.country_x_genre = w(sizes.crosses, "w_country_x_genre")
            self.device_x_genre = w((sizes.devices + 1) * (sizes.genres + 1), "w_device_x_genre")
            self.last_x_item = w(WIDE_CROSS_BUCKETS, "w_last_item_x_item")

    def call(self, x: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        out = collections.OrderedDict()
        for name, emb in self.ids.items():
            out[f"wide/{name}"] = emb(x[self.keys[name]])
        out["wide/item_genres"] = tf.reduce_sum(self.genre(x[T.GENRE_IDX]), axis=1)
        out["wide/candidate_source"] = self.source(source_index(x["candidate_source"]))
        numeric = tf.stack([tf.cast(x[k], tf.float32) for k in (T.PRICE_Z, T.ITEM_AGE_Z, T.ITEM_RELEASE_Z,
                                                                  T.USER_TENURE_Z, T.HISTORY_GAP_Z, T.TIME_Z)]
                           + [rank_feature(x["retrieval_rank"]), tf.cast(x["retrieval_score"], tf.float32)], 1)
        out["wide/numeric"] = self.dense(numeric)
        if self.crosses:
            out["wide/country_x_genre"] = self.country_x_genre(x[T.COUNTRY_X_GENRE])
            out["wide/device_x_genre"] = self.device_x_genre(device_x_genre(x[T.DEVICE_IDX], x[T.GENRE_IDX], self.sizes))
            out["wide/last_item_x_item"] = self.last_x_item(last_item_x_item(x[T.HISTORY_IDX], x[T.ITEM_IDX]))
        return out


def _concat(fields: Dict[str, tf.Tensor]) -> tf.Tensor:
    return tf.concat([fields[k] for k in FIELDS], axis=1)


class DCNInteraction(tf.keras.layers.Layer):
    """DCN-v2: x_{l+1} = x0 * (W x_l + b) + x_l, stacked before the deep tower or in parallel with it."""

    def __init__(self, cfg, **kwargs):
        super().__init__(**kwargs)
        if cfg.dcn_structure not in ("stacked", "parallel"):
            raise ValueError(f"ranking.dcn_structure must be 'stacked' or 'parallel', got {cfg.dcn_structure!r}")
        self.structure = cfg.dcn_structure
        reg = tf.keras.regularizers.l2(cfg.l2) if cfg.l2 else None
        self.cross = [tfrs.layers.dcn.Cross(projection_dim=cfg.projection_dim or None, kernel_initializer="glorot_uniform",
                                            kernel_regularizer=reg, name=f"cross_{i}")
                      for i in range(cfg.cross_layers)]
        self.deep = mlp(cfg.hidden, None, cfg.dropout, cfg.batch_norm, cfg.l2, name="deep")

    def call(self, fields, training=False) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        x0 = _concat(fields)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        if self.structure == "stacked":
            return self.deep(x, training=training), None
        return tf.concat([x, self.deep(x0, training=training)], axis=1), None

    def cross_kernels(self) -> List[tf.Tensor]:
        """Each cross layer's effective [D, D] kernel W (U V when low rank)."""
        out = []
        for layer in self.cross:
            if getattr(layer, "_projection_dim", None):
                out.append(tf.matmul(layer._dense_u.kernel, layer._dense_v.kernel))
            else:
                out.append(layer._dense.kernel)
        return out


class WideDeepInteraction(tf.keras.layers.Layer):
    """Deep MLP over the field embeddings; the wide logit is the sum of the ``wide/*`` fields."""

    def __init__(self, cfg, **kwargs):
        super().__init__(**kwargs)
        self.deep = mlp(cfg.hidden, None, cfg.dropout, cfg.batch_norm, cfg.l2, name="deep")

    def call(self, fields, training=False):
        wide = tf.add_n([v for k, v in fields.items() if k.startswith("wide/")])
        return self.deep(_concat(fields), training=training), wide


class DeepFMInteraction(tf.keras.layers.Layer):
    """FM: sum_i w_i + sum_{i<j} <e_i, e_j> (first-order = the ``wide/*`` fields) plus a deep MLP."""

    def __init__(self, cfg, **kwargs):
        super().__init__(**kwargs)
        self.deep = mlp(cfg.hidden, None, cfg.dropout, cfg.batch_norm, cfg.l2, name="deep")

    def call(self, fields, training=False):
        emb = tf.stack([fields[k] for k in FIELDS], axis=1)                       # [B, F, d]
        summed = tf.reduce_sum(emb, axis=1)
        pairwise = 0.5 * tf.reduce_sum(tf.square(summed) - tf.reduce_sum(tf.square(emb), axis=1), axis=1,
                                       keepdims=True)
        first = tf.add_n([v for k, v in fields.items() if k.startswith("wide/")])
        return self.deep(_concat(fields), training=training), pairwise + first


class RankingModel(EpochLossModel):
    """Shared feature layer -> interaction (by ``kind``) -> engagement and rating heads (multi-task)."""

    def __init__(self, sizes: FeatureSizes, cfg, kind: Optional[str] = None, rating_mean: float = 3.5, **kwargs):
        super().__init__(**kwargs)
        kind = kind or cfg.model
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown ranking model {kind!r}; choose one of {MODEL_KINDS}")
        self.kind, self.cfg, self.sizes = kind, cfg, sizes
        self.features = RankingFeatures(sizes, cfg.embedding_dim, cfg.l2,
                                        covisit_neighbours=getattr(cfg, "covisit_neighbours", 50), name="features")
        self.wide = WideFeatures(sizes, cfg.l2, crosses=(kind == "wide_deep"), name="wide") \
            if kind in ("wide_deep", "deepfm") else None
        self.interaction = {"dcn": DCNInteraction, "wide_deep": WideDeepInteraction,
                            "deepfm": DeepFMInteraction}[kind](cfg, name=kind)
        self.engagement_head = tf.keras.layers.Dense(1, name="engagement_head")
        # rating-only user / item biases (as in biased matrix factorisation): the user's rating scale
        # matters for the rating head even when the user id is kept out of the shared fields
        self.user_rating_bias = IndexEmbedding(sizes.users, 1, cfg.l2, name="user_rating_bias")
        self.item_rating_bias = IndexEmbedding(sizes.items, 1, cfg.l2, name="item_rating_bias")
        self.rating_head = tf.keras.layers.Dense(1, name="rating_head",
                                                 bias_initializer=tf.keras.initializers.Constant(rating_mean))
        # weights of the user's train-time bias and of their recent ratings' offset in the rating: (1, 0) = the
        # biased-MF form; train_ranking.init_rating_head starts them at a blend fitted on held-out rows
        self.rating_mix = self.add_weight("rating_mix", shape=[2],
                                          initializer=tf.keras.initializers.Constant([1.0, 0.0]))
        self.rating_mean = float(rating_mean)
        self.engagement_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="engagement_auc")])
        self.rating_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.MeanSquaredError(),
            metrics=[tf.keras.metrics.RootMeanSquaredError(name="rating_rmse")])

    # ------------------------------------------------------------ forward, split at the fields
    def fields(self, x: Dict[str, tf.Tensor], training: bool = False) -> Dict[str, tf.Tensor]:
        out = self.features(x)
        if self.wide is not None:
            out.update(self.wide(x))
        for name in getattr(self.cfg, "features_off", ()):  # ablation: a field (and its wide term) set to zero
            for key in (name, f"wide/{name}"):
                if key in out:
                    out[key] = tf.zeros_like(out[key])
        p = float(getattr(self.cfg, "retrieval_dropout", 0.0))
        if training and p > 0:  # rows that must be ranked without the retrieval stage's opinion
            batch = tf.shape(out["retrieval_rank"])[0]
            keep = tf.cast(tf.random.uniform([batch, 1]) >= p, tf.float32)
            for key in ("retrieval_rank", "retrieval_score", "wide/numeric"):
                if key in out:
                    out[key] = out[key] * keep
        out["rating_bias/user"] = self.user_rating_bias(x[T.USER_IDX])
        out["rating_bias/item"] = self.item_rating_bias(x[T.ITEM_IDX])
        hist_bias = tf.squeeze(self.item_rating_bias(x[T.HISTORY_IDX]), -1)
        out["rating_bias/history"] = recent_rating_offset(
            x[T.HISTORY_RATINGS], hist_bias, self.rating_mean, float(getattr(self.cfg, "history_rating_reg", 2.0)))[:, None]
        return out

    def from_fields(self, fields: Dict[str, tf.Tensor], training: bool = False) -> Dict[str, tf.Tensor]:
        h, extra = self.interaction(fields, training=training)
        logit = self.engagement_head(h)
        if extra is not None:
            logit = logit + extra
        rating = self.rating_head(h)
        if "rating_bias/user" in fields:
            rating = (rating + self.rating_mix[0] * fields["rating_bias/user"] + fields["rating_bias/item"]
                      + self.rating_mix[1] * fields["rating_bias/history"])
        return {"engagement_logit": tf.squeeze(logit, 1), "rating": tf.squeeze(rating, 1)}

    def call(self, x: Dict[str, tf.Tensor], training: bool = False) -> Dict[str, tf.Tensor]:
        return self.from_fields(self.fields(x, training=training), training=training)

    def set_item_tables(self, item_idx, title_idx, genre_idx) -> None:
        self.features.set_item_tables(item_idx, title_idx, genre_idx)

    def set_covisit(self, ids: np.ndarray, weights: np.ndarray) -> None:
        self.features.set_covisit(ids, weights)

    @property
    def needs_whole_events(self) -> bool:
        """A listwise part in ranking.loss: batches must hold every row of an event (Pairs.grouped_dataset)."""
        return self.cfg.loss != "pointwise"

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs
        out = self(features, training=training)
        w = self.cfg
        col = lambda t: tf.reshape(tf.cast(t, tf.float32), [-1, 1])  # noqa: E731  ([B, 1]: one loss per row)
        engagement = self.engagement_task(labels=col(labels["engagement"]), predictions=col(out["engagement_logit"]),
                                          sample_weight=col(labels["engagement_weight"]), compute_metrics=not training)
        if self.needs_whole_events:
            if "group" not in labels:
                raise ValueError(f"ranking.loss={w.loss} needs batches of whole events (Pairs.grouped_dataset)")
            lw = listwise_loss(out["engagement_logit"], tf.cast(labels["engagement"], tf.float32),
                               tf.cast(labels["engagement_weight"], tf.float32), labels["group"])
            engagement = lw if w.loss == "listwise" else engagement + lw
        rating = self.rating_task(labels=col(labels["rating"]), predictions=col(out["rating"]),
                                  sample_weight=col(labels["rating_weight"]), compute_metrics=not training)
        return w.engagement_weight * engagement + w.rating_weight * rating


def build(sizes: FeatureSizes, cfg, kind: Optional[str] = None, rating_mean: float = 3.5) -> RankingModel:
    return RankingModel(sizes, cfg, kind, rating_mean)
