"""Content candidate tower: an item is embedded from what it is, so items never seen in training get a
useful vector (item cold start).

``retrieval.candidate_tower = "content"`` selects it in ``TwoTowerModel``. It reads the same transformed
item features as the id tower (title tokens, genres, price, release) plus, when ``retrieval.item_images``
names an ``item_images.npz`` (``preprocessing/sources/images.py``), the item's image through a small CNN.
The id embedding is still there for items with history, but **id dropout** zeroes it at random in
training (``retrieval.id_dropout``) and always for the OOV bucket (every item unseen in training), so the
content path learns to carry the signal on its own; a 0/1 "id present" input tells the head which case
it is in. Without an images file there is no image branch at all (MovieLens).

Images are looked up by the raw ``item_id`` (a passthrough every transformed batch and the transformed
catalogue carry), since unseen items share the one OOV index.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.schema import T
from trainer.features import FeatureSizes, IndexEmbedding, id_keep, select
from trainer.models.retrieval import CandidateTower

IMAGE_KEY = "item_id"   # the raw item id finds the item's image


def load_images(path: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(item ids, uint8 images) from ``retrieval.item_images``; None when no file is configured."""
    if not path:
        return None
    from preprocessing.sources import images

    return images.read(path)


class ItemImages(tf.keras.layers.Layer):
    """Raw item id -> its image -> small CNN -> [B, dim] plus a has-image flag; ids without an image -> zeros."""

    def __init__(self, item_ids: Sequence[str], images: np.ndarray, dim: int, **kwargs):
        super().__init__(**kwargs)
        n = len(item_ids)
        self.n = n
        keys = tf.constant(np.asarray(item_ids, dtype=object).astype(bytes))
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.range(n, dtype=tf.int64)), default_value=n)
        blank = np.zeros((1,) + tuple(images.shape[1:]), np.uint8)
        self.pixels = tf.constant(np.concatenate([np.asarray(images, np.uint8), blank]), tf.uint8)
        self.cnn = tf.keras.Sequential([
            tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            tf.keras.layers.MaxPooling2D(2),
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(dim),
        ], name="image_cnn")

    def call(self, item_id: tf.Tensor) -> tf.Tensor:
        rows = self.table.lookup(tf.reshape(item_id, [-1]))
        has = tf.cast(rows < self.n, tf.float32)[:, None]
        pixels = tf.cast(tf.gather(self.pixels, rows), tf.float32) / 255.0 - 0.5
        return tf.concat([self.cnn(pixels) * has, has], axis=1)


class ContentTower(CandidateTower):
    """Content features (+ image) -> L2-normalised embedding; the id embedding only as an optional extra."""

    def __init__(self, sizes: FeatureSizes, cfg, item_embedding: IndexEmbedding,
                 images: Optional[Tuple[np.ndarray, np.ndarray]] = None, **kwargs):
        super().__init__(sizes, cfg, item_embedding, **kwargs)
        self.oov = sizes.items - 1   # TFT's one OOV bucket: every item unseen in training
        self.images = ItemImages(images[0], images[1], cfg.feature_dim * 2, name="item_images") if images else None

    def call(self, x: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        raw_id = x.get(IMAGE_KEY)
        if self.images is not None and raw_id is None:
            raise ValueError(f"the content tower with item images needs the raw {IMAGE_KEY!r} among the candidate "
                             f"features (it finds each item's image by id); keep it when embedding the catalogue")
        x = select(x, schema.CANDIDATE_TOWER_INPUTS)
        idx = x[T.ITEM_IDX]
        keep = id_keep(idx, self.oov, self.cfg.id_dropout, training is True)
        parts = [self.item_embedding(idx) * keep, keep] + self.content_parts(x)
        if self.images is not None:
            parts.append(self.images(raw_id))
        features = tf.concat(parts, axis=1)
        c = tf.math.l2_normalize(self.head(features, training=training), axis=1)
        if self.cfg.item_bias:
            c = tf.concat([c, self.bias(idx) * keep + self.content_bias(features)], axis=1)
        return c

