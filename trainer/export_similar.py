"""`similar_items` SavedModel: item ids in, the k most similar items out (ScaNN inside), TF Serving layout.

Signature ``serving_default``: input ``item_ids`` (string [batch]); outputs ``item_ids``
(string [batch, k]) and ``scores`` (float [batch, k], cosine, best first). The query item is
never among its own neighbours; an id the model does not know gets ``""`` ids and 0 scores
(an empty answer rather than an error, so one unknown id does not fail a whole batch).
Same publishing as the other exports (``trainer.export.save_atomically``): written under a
temporary name, renamed into place, warmup request included; ScaNN ops needed at load time.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from preprocessing.utf8 import to_str
from trainer import export

MODEL_NAME = "similar_items"


class SimilarItemsModule(tf.Module):
    """id -> row lookup -> unit vector -> top k+1 by ScaNN (or brute force) -> drop the item itself -> top k."""

    def __init__(self, item_ids: np.ndarray, vectors: np.ndarray, index, k: int):
        super().__init__()
        ids = tf.constant(to_str(item_ids))
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(ids, tf.range(len(item_ids), dtype=tf.int64)), default_value=-1)
        self.vectors = tf.Variable(np.asarray(vectors, np.float32), trainable=False, name="item_vectors")
        self.index = index
        self.k = k

    def similar(self, item_ids):
        row = self.table.lookup(item_ids)
        known = row >= 0
        scores, ids = self.index(tf.gather(self.vectors, tf.maximum(row, 0)), k=self.k + 1)
        ids, scores = tf.reshape(ids, [-1, self.k + 1]), tf.reshape(scores, [-1, self.k + 1])
        # the item itself (at most once per row) moves to the end; a stable sort keeps the rest in score order
        is_self = tf.cast(tf.equal(ids, tf.expand_dims(item_ids, 1)), tf.int32)
        order = tf.argsort(is_self, axis=1, stable=True)[:, :self.k]
        ids, scores = tf.gather(ids, order, batch_dims=1), tf.gather(scores, order, batch_dims=1)
        ids = tf.where(known[:, None], ids, tf.fill(tf.shape(ids), ""))
        scores = tf.where(known[:, None], scores, tf.zeros_like(scores))
        return {"item_ids": ids, "scores": scores}


def export_similar_items(item_ids: np.ndarray, vectors: np.ndarray, base: str, version: int, ecfg, k: int = 20,
                         kind: str = "scann", name: str = MODEL_NAME, warmup_ids: Optional[list] = None) -> str:
    """Writes ``<base>/<name>/<version>``; ``vectors`` are L2-normalised so scores are cosines."""
    item_ids = to_str(item_ids)
    if len(item_ids) < 2:
        raise ValueError(f"similar_items needs at least 2 items, got {len(item_ids)}")
    vectors = np.asarray(vectors, np.float32)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    k = int(min(k, len(item_ids) - 1))
    index = export.build_index(kind, item_ids, vectors, k + 1, ecfg)
    module = SimilarItemsModule(item_ids, vectors, index, k)
    serve = tf.function(module.similar).get_concrete_function(
        item_ids=tf.TensorSpec([None], tf.string, name="item_ids"))
    warmup = {"item_ids": np.array(list(warmup_ids or item_ids[:1]), dtype=object)}
    serve(item_ids=tf.constant(warmup["item_ids"]))  # ScaNN builds its searcher lazily: call once before saving
    return export.save_atomically(module, {"serving_default": serve}, base, name, version, warmup,
                                  namespace_whitelist=["Scann"] if kind == "scann" else None)
