"""History encoders for the retrieval query tower: ``mean`` (pooling, in QueryTower), ``gru``, ``transformer``.

The user's next choice depends on the order and recency of what they just did; a mean
forgets both. Both encoders read the same transformed features the mean pooling reads
(``history_idx``: [B, L] item indices, left-padded with -1, most recent last;
``history_gaps``: [B, L] log1p hours from each history event to the query's event time),
so they need no new raw input and export with the same serving signature.

* ``gru`` (GRU4Rec, Hidasi et al. 2016): a GRU over the item embeddings (+ time-gap
  embeddings); the state after the most recent item is the history vector.
* ``transformer`` (SASRec, Kang & McAuley 2018): causal self-attention blocks over item
  embeddings + learned position embeddings + time-gap embeddings (TiSASRec-style
  bucketed gaps, so recent events can weigh more than old ones); the output at the most
  recent position is the history vector. Position i never attends to j > i.

How the query tower combines them (trainer/models/retrieval.py): by default (``retrieval.seq_keep_pooled``) the
encoder output sits beside the mean + last-3 pooled features, scaled by a learned scalar that starts at 0, so the
encoder adds to today's features instead of replacing them; ``retrieval.seq_tables`` picks the item tables it
reads (``item``: the candidates' table, SASRec's input = output embedding; ``shared``: + the next-item table;
``own``). Setting ``seq_keep_pooled=false seq_tables=shared`` gives the encoder alone, as before.

History length is whatever the data carries (the last axis of ``history_idx``): it is
set in preprocessing (``preprocess.history_length``) and flows to training and export.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from preprocessing.schema import T

ENCODERS = ("mean", "gru", "transformer")
# Bucket edges of the gap between a history event and "now", in hours (log1p is applied to match
# T.HISTORY_GAPS): under 15 min, 1 h, 3 h, 6 h, 12 h, a day, two days, a week, a month, a quarter, a year.
GAP_EDGES_HOURS = (0.25, 1.0, 3.0, 6.0, 12.0, 24.0, 48.0, 168.0, 720.0, 2160.0, 8760.0)
NUM_GAP_BUCKETS = len(GAP_EDGES_HOURS) + 1


def gap_buckets(log1p_hours: tf.Tensor) -> tf.Tensor:
    """Bucket index (0..NUM_GAP_BUCKETS-1) of each log1p-hours gap; bucket b holds gaps in [edge b-1, edge b)."""
    edges = tf.constant(np.log1p(np.asarray(GAP_EDGES_HOURS, np.float64)), tf.float32)
    x = tf.cast(log1p_hours, tf.float32)
    flat = tf.reshape(x, [-1, 1])
    idx = tf.reduce_sum(tf.cast(flat >= edges[None, :], tf.int32), axis=1)
    return tf.reshape(idx, tf.shape(x))


def causal_mask(valid: tf.Tensor) -> tf.Tensor:
    """[B, L, L] bool: query i may attend to key j iff j <= i and j is a real item (i always sees itself)."""
    length = tf.shape(valid)[1]
    lower = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
    keys = valid[:, None, :] | tf.eye(length, dtype=tf.bool)[None]
    return lower[None] & keys


class _SequenceInput(tf.keras.layers.Layer):
    """Per position: [shared item row, "what comes next" row] projected to ``dim`` + time-gap (+ position).

    The shared table puts history and candidates in one space; the query tower's own next-item
    table lets an item say what tends to follow it (e.g. the next part of a series).
    """

    def __init__(self, tables, dim: int, positions: bool, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.tables = list(tables)
        self.dim, self.positions, self.rate = dim, positions, dropout
        self.project = tf.keras.layers.Dense(dim, name="item_projection")
        self.gap = tf.keras.layers.Embedding(NUM_GAP_BUCKETS, dim, name="gap_embedding")
        self.dropout = tf.keras.layers.Dropout(dropout)

    def build(self, input_shape):
        length = input_shape[0][-1]
        if length is None:
            raise ValueError("history length must be static (it is fixed in preprocessing)")
        if self.positions:  # index 0 = the most recent slot (the history is right-aligned)
            self.position = self.add_weight(name="position_embedding", shape=[int(length), self.dim],
                                            initializer=tf.keras.initializers.RandomNormal(stddev=0.02))
        super().build(input_shape)

    def call(self, inputs, training: bool = False):
        hist, gaps = inputs
        x = self.project(tf.concat([t(hist) for t in self.tables], axis=-1)) + self.gap(gap_buckets(gaps))
        if self.positions:
            x = x + tf.reverse(self.position, axis=[0])[None]
        valid = tf.cast(tf.expand_dims(hist >= 0, -1), x.dtype)
        return self.dropout(x, training=training) * valid


class GRUEncoder(tf.keras.layers.Layer):
    """GRU4Rec-style: the GRU state after the most recent history item (zeros for an empty history)."""

    def __init__(self, tables, cfg, **kwargs):
        super().__init__(**kwargs)
        self.inputs_layer = _SequenceInput(tables, cfg.seq_dim, positions=False, dropout=cfg.seq_dropout,
                                           name="sequence_input")
        self.gru = tf.keras.layers.GRU(cfg.seq_dim, return_sequences=True, name="gru")

    def sequence(self, hist: tf.Tensor, gaps: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, L, D] state after each position (a padded step carries the previous state)."""
        x = self.inputs_layer((hist, gaps), training=training)
        return self.gru(x, mask=hist >= 0, training=training)

    def call(self, inputs, training: bool = False):
        hist, gaps = inputs
        return self.sequence(hist, gaps, training)[:, -1, :]


class _Attention(tf.keras.layers.MultiHeadAttention):
    """Keras MultiHeadAttention with the masked softmax written as exp(x - logsumexp(x)): the same numbers
    (the mask adds -1e9 as Keras' Softmax does), without the Softmax op. Inside a loaded SavedModel grappler
    cannot size that op ("Error in PredictCost() for the op: Softmax ... unknown_rank", TF issue 50575) and
    printed the warning on every first call of an exported transformer (demo, benchmarks, the server)."""

    def _masked_softmax(self, attention_scores, attention_mask=None):
        if attention_mask is not None:  # [B, T, S] -> [B, 1, T, S], as the parent does
            for _ in range(len(attention_scores.shape) - len(attention_mask.shape)):
                attention_mask = tf.expand_dims(attention_mask, axis=-len(self._attention_axes) * 2 - 1)
            attention_scores += (1.0 - tf.cast(attention_mask, attention_scores.dtype)) * -1e9
        return tf.exp(attention_scores - tf.reduce_logsumexp(attention_scores, axis=-1, keepdims=True))


class _Block(tf.keras.layers.Layer):
    """Pre-norm transformer block: causal multi-head self-attention + position-wise feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.attention = _Attention(heads, max(dim // heads, 1), dropout=dropout)
        self.norm2 = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.ffn1 = tf.keras.layers.Dense(dim, activation="gelu")
        self.ffn2 = tf.keras.layers.Dense(dim)
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x, mask, valid, training: bool = False):
        h = self.norm1(x)
        x = x + self.dropout(self.attention(h, h, attention_mask=mask, training=training), training=training)
        x = x + self.dropout(self.ffn2(self.ffn1(self.norm2(x))), training=training)
        return x * valid


class TransformerEncoder(tf.keras.layers.Layer):
    """SASRec-style causal self-attention; the output at the most recent position summarises the history."""

    def __init__(self, tables, cfg, **kwargs):
        super().__init__(**kwargs)
        self.inputs_layer = _SequenceInput(tables, cfg.seq_dim, positions=True, dropout=cfg.seq_dropout,
                                           name="sequence_input")
        self.blocks = [_Block(cfg.seq_dim, cfg.seq_heads, cfg.seq_dropout, name=f"block_{i}")
                       for i in range(cfg.seq_layers)]
        self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)

    def sequence(self, hist: tf.Tensor, gaps: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, L, D] output per position; position i depends only on positions <= i."""
        valid = hist >= 0
        mask = causal_mask(valid)
        valid_f = tf.cast(tf.expand_dims(valid, -1), tf.float32)
        x = self.inputs_layer((hist, gaps), training=training)
        for block in self.blocks:
            x = block(x, mask, valid_f, training=training)
        return self.norm(x) * valid_f

    def call(self, inputs, training: bool = False):
        hist, gaps = inputs
        return self.sequence(hist, gaps, training)[:, -1, :]


def build_encoder(cfg, *tables):
    """The configured sequence encoder over item-index ``tables`` (IndexEmbedding layers), or None for ``mean``."""
    kind = cfg.history_encoder
    if kind not in ENCODERS:
        raise ValueError(f"retrieval.history_encoder must be one of {ENCODERS}, got {kind!r}")
    if kind == "gru":
        return GRUEncoder(tables, cfg, name="gru_encoder")
    if kind == "transformer":
        return TransformerEncoder(tables, cfg, name="transformer_encoder")
    return None


def encode(encoder, x: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    """History vector [B, D] from transformed features."""
    return encoder((x[T.HISTORY_IDX], x[T.HISTORY_GAPS]), training=training)
