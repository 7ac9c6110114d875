"""Shared Keras feature-input layers built from the TF-Transform output.

Every model reads transformed features by the names in ``preprocessing.schema.T``
and sizes its embeddings from the vocabularies TFT wrote, so a model never
hard-codes a vocabulary size.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import tensorflow as tf

from preprocessing import schema


@dataclasses.dataclass(frozen=True)
class FeatureSizes:
    """Number of distinct indices per categorical feature, OOV bucket included."""

    users: int
    items: int
    genres: int
    title_tokens: int
    ages: int
    countries: int
    devices: int
    price_buckets: int
    item_age_buckets: int
    crosses: int = schema.CROSS_BUCKETS

    @classmethod
    def from_transform_output(cls, tft_output, price_buckets: int = 10, item_age_buckets: int = 8) -> "FeatureSizes":
        v = lambda name: tft_output.vocabulary_size_by_name(name) + 1  # noqa: E731  (+1 OOV bucket)
        return cls(users=v(schema.VOCAB_USER), items=v(schema.VOCAB_ITEM), genres=v(schema.VOCAB_GENRE),
                   title_tokens=v(schema.VOCAB_TITLE), ages=v(schema.VOCAB_AGE), countries=v(schema.VOCAB_COUNTRY),
                   devices=v(schema.VOCAB_DEVICE), price_buckets=price_buckets + 1,
                   item_age_buckets=item_age_buckets + 1)

    def to_dict(self):
        return dataclasses.asdict(self)


class IndexEmbedding(tf.keras.layers.Layer):
    """Embedding for TFT indices: -1 (padding) -> a zero vector, 0..n-1 -> learned rows.

    ``vocab`` names the TF-Transform vocabulary the indices come from (None: a fixed index space such as
    the hour), so a warm start can carry rows over by id when the vocabulary changes (trainer/warm_start.py).
    """

    def __init__(self, num: int, dim: int, l2: float = 0.0, vocab: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        reg = tf.keras.regularizers.l2(l2) if l2 else None
        self.num, self.dim, self.vocab = num, dim, vocab
        self.embedding = tf.keras.layers.Embedding(num + 1, dim, embeddings_regularizer=reg)

    def call(self, idx):
        idx = tf.cast(idx, tf.int32)
        safe = tf.clip_by_value(idx + 1, 0, self.num)  # unseen indices beyond the table -> last (OOV) row
        emb = self.embedding(safe)
        return emb * tf.cast(tf.expand_dims(idx >= 0, -1), emb.dtype)


def select(x: Dict[str, tf.Tensor], names: Sequence[str]) -> Dict[str, tf.Tensor]:
    """The features of ``x`` named in ``names`` (a schema view such as ``schema.QUERY_TOWER_INPUTS``)."""
    return {k: x[k] for k in names if k in x}


def masked_mean(emb: tf.Tensor, idx: tf.Tensor) -> tf.Tensor:
    """Mean over the list axis of [B, L, D] embeddings, ignoring padded (-1) positions."""
    mask = tf.cast(tf.expand_dims(idx >= 0, -1), emb.dtype)
    return tf.reduce_sum(emb * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def scalar(x: tf.Tensor) -> tf.Tensor:
    """[B] numeric -> [B, 1] float32."""
    return tf.reshape(tf.cast(x, tf.float32), [-1, 1])


def mlp(hidden, out_dim: Optional[int], dropout: float = 0.0, batch_norm: bool = False, l2: float = 0.0,
        name: str = "mlp") -> tf.keras.Sequential:
    """Dense stack with the regularisation switches shared by every tower (and the rankers' deep parts);
    ``out_dim`` None: no linear output layer, the last hidden layer is the output."""
    reg = tf.keras.regularizers.l2(l2) if l2 else None
    layers = []
    for width in hidden:
        layers.append(tf.keras.layers.Dense(width, kernel_regularizer=reg))
        if batch_norm:
            layers.append(tf.keras.layers.BatchNormalization())
        layers.append(tf.keras.layers.Activation("relu"))
        if dropout:
            layers.append(tf.keras.layers.Dropout(dropout))
    if out_dim is not None:
        layers.append(tf.keras.layers.Dense(out_dim, kernel_regularizer=reg))
    return tf.keras.Sequential(layers, name=name)


def id_keep(idx: tf.Tensor, oov: int, rate: float, training: bool) -> tf.Tensor:
    """[B, 1] float: 1 where the id embedding is used, 0 where it is dropped.

    Dropped always for padding (-1) and the OOV bucket (``oov`` and beyond: ids never seen in training,
    whose row was never trained), and in training also at random with probability ``rate`` (id dropout),
    so a tower learns to carry the signal in its content features when the id is missing.
    """
    idx = tf.reshape(tf.cast(idx, tf.int32), [-1, 1])
    keep = tf.logical_and(idx >= 0, idx < oov)
    if training and rate > 0:
        keep = tf.logical_and(keep, tf.random.uniform(tf.shape(idx)) >= rate)
    return tf.cast(keep, tf.float32)
