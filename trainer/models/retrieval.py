"""Two-tower retrieval (TFRS): query = user + context + history, candidate = item id + content.

The item id embedding is shared between the candidate tower and the history
pooling in the query tower, so "what you just watched" and "what we recommend"
live in one space. Training uses in-batch softmax with logQ correction
(Yi et al., 2019): popular items appear as negatives more often, and subtracting
log(sampling probability) removes that bias.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from preprocessing import schema
from preprocessing.schema import T
from trainer.features import FeatureSizes, IndexEmbedding, id_keep, masked_mean, mlp, scalar, select
from trainer.models import sequence
from trainer.models.epoch_loss import EpochLossModel


class QueryTower(tf.keras.Model):
    """User, context and history features -> L2-normalised query embedding."""

    def __init__(self, sizes: FeatureSizes, cfg, item_embedding: IndexEmbedding, content_tables=None,
                 item_content: Optional[Dict[str, np.ndarray]] = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        f, l2 = cfg.feature_dim, cfg.l2
        self.user = IndexEmbedding(sizes.users, cfg.id_dim, l2, vocab=schema.VOCAB_USER)
        self.age = IndexEmbedding(sizes.ages, f, vocab=schema.VOCAB_AGE)
        self.country = IndexEmbedding(sizes.countries, f, vocab=schema.VOCAB_COUNTRY)
        self.device = IndexEmbedding(sizes.devices, f, vocab=schema.VOCAB_DEVICE)
        self.hour = IndexEmbedding(24, f)
        self.weekday = IndexEmbedding(7, f)
        self.item_embedding = item_embedding
        # "what comes after item X" differs from "item X": the most recent items get their own table
        self.next_item = IndexEmbedding(sizes.items, cfg.id_dim, l2, vocab=schema.VOCAB_ITEM, name="next_item_embedding")
        # retrieval.history_encoder: None = mean pooling below; gru / transformer read order and time gaps
        self.history_encoder = sequence.build_encoder(cfg, *self._encoder_tables(sizes, cfg, item_embedding))
        # beside the pooled features the encoder starts silent (a learned scale at 0, ReZero-style) and grows
        # only as far as it helps: a random encoder output would otherwise swamp the small pooled embeddings
        self.keep_pooled = self.history_encoder is None or cfg.seq_keep_pooled
        self.encoder_scale = (self.add_weight(name="encoder_scale", shape=[], initializer="zeros")
                              if self.history_encoder is not None and cfg.seq_keep_pooled and cfg.seq_gate else None)
        # retrieval.history_content: the latest history item's title tokens and genres, read through the candidate
        # tower's own token tables, so "the next part of what you just watched" is found from its title even when
        # that pair of ids is rare in training (a rare pair's id rows have learned nothing about each other)
        self.content_tables, self.item_content = None, {}
        if cfg.history_content:
            if content_tables is None or item_content is None:
                raise ValueError("retrieval.history_content needs the catalogue's content per item index "
                                 "(trainer.train.build_retrieval passes it; see item_content_table)")
            self.content_tables = dict(content_tables)
            for name, table in item_content.items():
                self.item_content[name] = self.add_weight(
                    name=f"item_{name}", shape=table.shape, dtype=tf.int32, trainable=False,
                    initializer=tf.keras.initializers.Constant(np.asarray(table, np.int32)))
        self.head = mlp(cfg.hidden, cfg.embedding_dim, cfg.dropout, cfg.batch_norm, l2, name="query_mlp")

    def call(self, x: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        x = select(x, schema.QUERY_TOWER_INPUTS)  # the tower reads only what the schema declares for it
        parts = [self._user(x[T.USER_IDX], training) if self.cfg.use_user_id else None, self.age(x[T.USER_AGE_IDX]), self.country(x[T.USER_COUNTRY_IDX]),
                 self.device(x[T.DEVICE_IDX]), self.hour(x[T.HOUR]), self.weekday(x[T.WEEKDAY]),
                 scalar(x[T.USER_TENURE_Z]), scalar(x[T.TIME_Z])]
        if self.cfg.use_history:
            hist = x[T.HISTORY_IDX]
            # retrieval.seq_keep_pooled: the encoder adds to the pooled features instead of replacing them
            if self.keep_pooled:
                emb = self.item_embedding(hist)
                recent = self.next_item(hist[:, -3:])
                parts += [masked_mean(emb, hist), recent[:, -1, :], masked_mean(recent, hist[:, -3:])]
            if self.history_encoder is not None:
                encoded = sequence.encode(self.history_encoder, x, training=training)
                parts.append(encoded if self.encoder_scale is None else self.encoder_scale * encoded)
            if self.content_tables is not None:
                parts += self._latest_content(hist[:, -1])
            parts += [tf.math.log1p(scalar(x[T.HISTORY_LEN])), scalar(x[T.HISTORY_GAP_Z])]
        x = tf.concat([p for p in parts if p is not None], axis=1)
        q = tf.math.l2_normalize(self.head(x, training=training), axis=1)
        if self.cfg.item_bias:  # pairs with the candidate's bias slot: score = <q, c> + bias(item)
            q = tf.concat([q, tf.ones_like(q[:, :1])], axis=1)
        return q

    def _latest_content(self, latest: tf.Tensor) -> List[tf.Tensor]:
        """Mean token embedding per content feature of the latest history item (zeros for an empty history)."""
        latest = tf.cast(latest, tf.int32)
        out = []
        for name, table in self.item_content.items():
            rows = tf.gather(table, tf.maximum(latest, 0))
            rows = tf.where(latest[:, None] >= 0, rows, -1)
            out.append(masked_mean(self.content_tables[name](rows), rows))
        return out

    def _encoder_tables(self, sizes: FeatureSizes, cfg, item_embedding: IndexEmbedding):
        """``retrieval.seq_tables``: the item tables the sequence encoder reads. ``shared``: the candidates' item
        table and the next-item table; ``item``: the candidates' table only (SASRec's input = output embedding);
        ``own``: a table of its own, so the encoder's gradients (amplified by its layer norms on small rows) do not
        move the rows the pooled features and the candidate tower read."""
        kind = cfg.seq_tables
        if kind == "own":
            return (IndexEmbedding(sizes.items, cfg.id_dim, cfg.l2, vocab=schema.VOCAB_ITEM, name="sequence_item_embedding"),)
        return (item_embedding,) if kind == "item" else (item_embedding, self.next_item)

    def _user(self, idx: tf.Tensor, training) -> tf.Tensor:
        """User id embedding; with ``retrieval.user_id_dropout`` dropped at random in training and always for
        users unseen in training, so a new user is served from context and demographics alone."""
        emb = self.user(idx)
        rate = getattr(self.cfg, "user_id_dropout", 0.0)
        return emb * id_keep(idx, self.user.num - 1, rate, training is True) if rate else emb


class CandidateTower(tf.keras.Model):
    """Item id and content (genres, title tokens, price, release) -> L2-normalised embedding (+ bias slot)."""

    def __init__(self, sizes: FeatureSizes, cfg, item_embedding: IndexEmbedding, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        f = cfg.feature_dim
        self.item_embedding = item_embedding
        self.genre = IndexEmbedding(sizes.genres, f * 2, vocab=schema.VOCAB_GENRE)
        self.title = IndexEmbedding(sizes.title_tokens, f * 2, vocab=schema.VOCAB_TITLE)
        self.price = IndexEmbedding(sizes.price_buckets, f)
        self.head = mlp(cfg.hidden, cfg.embedding_dim, cfg.dropout, cfg.batch_norm, cfg.l2, name="candidate_mlp")
        self.bias = IndexEmbedding(sizes.items, 1, vocab=schema.VOCAB_ITEM, name="item_bias")
        self.content_bias = tf.keras.layers.Dense(1, name="content_bias")

    def content_parts(self, x: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
        """What the item is, without its id: genre bag, title tokens, price bucket and z-score, release."""
        return [masked_mean(self.genre(x[T.GENRE_IDX]), x[T.GENRE_IDX]),
                masked_mean(self.title(x[T.TITLE_IDX]), x[T.TITLE_IDX]),
                self.price(x[T.PRICE_BUCKET]), scalar(x[T.PRICE_Z]), scalar(x[T.ITEM_RELEASE_Z])]

    def call(self, x: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        x = select(x, schema.CANDIDATE_TOWER_INPUTS)  # the tower reads only what the schema declares for it
        parts = [self.item_embedding(x[T.ITEM_IDX])]
        if self.cfg.use_item_features:
            parts += self.content_parts(x)
        features = tf.concat(parts, axis=1)
        c = tf.math.l2_normalize(self.head(features, training=training), axis=1)
        if self.cfg.item_bias:
            # a per-item popularity/freshness prior the dot product alone cannot express under L2 norm
            c = tf.concat([c, self.bias(x[T.ITEM_IDX]) + self.content_bias(features)], axis=1)
        return c


def build_candidate_tower(sizes: FeatureSizes, cfg, item_embedding: IndexEmbedding) -> tf.keras.Model:
    """``retrieval.candidate_tower``: ``id`` (above) or ``content`` (trainer/models/content.py: cold start)."""
    if getattr(cfg, "candidate_tower", "id") == "content":
        from trainer.models import content

        return content.ContentTower(sizes, cfg, item_embedding, images=content.load_images(cfg.item_images),
                                    name="candidate_tower")
    return CandidateTower(sizes, cfg, item_embedding, name="candidate_tower")


HISTORY_CONTENT = (T.TITLE_IDX, T.GENRE_IDX)  # what retrieval.history_content reads of the latest history item


def item_content_table(transformed_catalogue: Dict[str, Any], num_items: int) -> Dict[str, np.ndarray]:
    """Per item index (the item vocabulary's order), its transformed title tokens and genres; -1 rows for indices
    no catalogue item has (the OOV bucket). Built once from the catalogue and kept in the query tower."""
    idx = np.asarray(transformed_catalogue[T.ITEM_IDX]).reshape(-1)
    keep = (idx >= 0) & (idx < num_items)
    out = {}
    for name in HISTORY_CONTENT:
        values = np.asarray(transformed_catalogue[name])
        table = np.full((num_items, values.shape[1]), -1, np.int32)
        table[idx[keep]] = values[keep]
        out[name] = table
    return out


class NegativeSampler:
    """``retrieval.sampled_negatives`` items drawn per training batch from the catalogue's candidate features,
    and the mixture's sampling probability for logQ correction.

    With B in-batch candidates (item j turns up with probability p(j), its share of train events) and M
    sampled ones (probability q(j) ~ count(j) ** alpha), item j's expected count among the B + M candidates
    is B p(j) + M q(j); the softmax subtracts its log (Yang et al., "Mixed Negative Sampling for Learning
    Two-tower Neural Networks in Recommendations", WWW 2020). Sampled items equal to a row's own positive
    are removed as accidental hits, as in-batch ones are.
    """

    def __init__(self, catalogue: Dict[str, tf.Tensor], in_batch_q: np.ndarray, count: int, alpha: float):
        idx = np.asarray(catalogue[T.ITEM_IDX]).reshape(-1)
        self.features = {k: v for k, v in catalogue.items() if k in schema.CANDIDATE_TOWER_INPUTS or k == "item_id"}
        self.count = int(count)
        self.rows = len(idx)
        counts = np.asarray(in_batch_q, np.float64)[idx]            # train share of each catalogue row's item
        weights = np.ones(self.rows) if alpha == 0 else counts ** float(alpha)
        row_q = weights / weights.sum()
        self.uniform = alpha == 0
        self.row_logits = tf.constant(np.log(row_q)[None, :], tf.float32)
        item_q = np.zeros(len(in_batch_q))
        np.add.at(item_q, idx, row_q)
        self.in_batch_q = tf.constant(in_batch_q, tf.float32)
        self.sampled_q = tf.constant(item_q, tf.float32)

    def sample(self) -> Dict[str, tf.Tensor]:
        if self.uniform:
            rows = tf.random.uniform([self.count], maxval=self.rows, dtype=tf.int64)
        else:
            rows = tf.random.categorical(self.row_logits, self.count)[0]
        return {k: tf.gather(v, rows) for k, v in self.features.items()}

    def probability(self, ids: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        """Each candidate's item's share of the batch's B + M candidates: its expected count / (B + M), a
        probability (TFRS clips the correction's input to [1e-6, 1]: a count would flatten popular items)."""
        b = tf.cast(batch, tf.float32)
        m = float(self.count)
        return (b * tf.gather(self.in_batch_q, ids) + m * tf.gather(self.sampled_q, ids)) / (b + m)


class TwoTowerModel(EpochLossModel):
    """TFRS retrieval model; ``candidates`` (transformed catalogue) enables FactorizedTopK metrics;
    ``item_content`` (``item_content_table``) is what ``retrieval.history_content`` reads; ``negatives_from``
    (the transformed catalogue) is what ``retrieval.sampled_negatives`` draws from."""

    def __init__(self, sizes: FeatureSizes, cfg, item_idx_counts: Optional[np.ndarray] = None,
                 candidates: Optional[Dict[str, tf.Tensor]] = None, metric_ks=(10, 50, 100),
                 item_content: Optional[Dict[str, np.ndarray]] = None,
                 negatives_from: Optional[Dict[str, tf.Tensor]] = None):
        super().__init__()
        self.cfg = cfg
        item_embedding = IndexEmbedding(sizes.items, cfg.id_dim, cfg.l2, vocab=schema.VOCAB_ITEM, name="item_id_embedding")
        self.candidate_tower = build_candidate_tower(sizes, cfg, item_embedding)
        tables = {T.TITLE_IDX: self.candidate_tower.title, T.GENRE_IDX: self.candidate_tower.genre}
        self.query_tower = QueryTower(sizes, cfg, item_embedding, tables, item_content, name="query_tower")
        probs = np.ones(sizes.items) if item_idx_counts is None else np.asarray(item_idx_counts, np.float64) + 1.0
        self.log_q = tf.constant(np.log(probs / probs.sum()), tf.float32)
        metrics = None
        if candidates is not None:
            ds = tf.data.Dataset.from_tensor_slices(candidates).batch(1024)
            metrics = tfrs.metrics.FactorizedTopK(
                candidates=ds.map(lambda f: (f[T.ITEM_IDX], self.candidate_tower(f))), ks=metric_ks)
        self.task = tfrs.tasks.Retrieval(metrics=metrics, temperature=cfg.temperature,
                                         remove_accidental_hits=cfg.remove_accidental_hits)
        self._sampler = None
        if getattr(cfg, "sampled_negatives", 0) and negatives_from is not None:
            self._sampler = NegativeSampler(negatives_from, np.exp(self.log_q.numpy()), cfg.sampled_negatives,
                                            cfg.sampled_alpha)

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features, training=training)
        ids = features[T.ITEM_IDX]
        prob = tf.exp(tf.gather(self.log_q, ids)) if self.cfg.logq_correction else None
        if training and self._sampler is not None:   # validation keeps the in-batch loss: comparable across epochs
            sampled = self._sampler.sample()
            candidate = tf.concat([candidate, self.candidate_tower(sampled, training=training)], axis=0)
            ids = tf.concat([ids, sampled[T.ITEM_IDX]], axis=0)   # TFRS labels the first B columns' diagonal
            if prob is not None:
                prob = self._sampler.probability(ids, tf.shape(query)[0])
        return self.task(query, candidate, candidate_sampling_probability=prob,
                         candidate_ids=ids, compute_metrics=not training)
