"""Warm start carries every row over by id when the vocabulary is reordered and grows; new ids stay fresh."""
import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from trainer import warm_start
from trainer.features import IndexEmbedding


class Tiny(tf.keras.Model):
    def __init__(self, n_items: int, dim: int = 4):
        super().__init__()
        self.item = IndexEmbedding(n_items, dim, vocab="item_id")
        self.hour = IndexEmbedding(24, 2)
        self.head = tf.keras.layers.Dense(3)

    def call(self, x):
        return self.head(tf.concat([self.item(x["item"]), self.hour(x["hour"])], axis=1))


def _built(n_items, seed, dim=4):
    tf.keras.utils.set_random_seed(seed)
    m = Tiny(n_items, dim)
    m({"item": tf.constant([0]), "hour": tf.constant([1])})
    return m


OLD, NEW = ["a", "b", "c"], ["c", "d", "a", "b"]  # frequency order changed, "d" is new


def test_rows_follow_the_ids_not_the_positions():
    old, new = _built(len(OLD) + 1, seed=1), _built(len(NEW) + 1, seed=2)
    fresh = new.item.embedding.embeddings.numpy().copy()
    vocab = {"old": OLD, "new": NEW}
    report = warm_start.warm_start(new, old, lambda side, name: [t.encode() for t in vocab[side]])
    o, n = old.item.embedding.embeddings.numpy(), new.item.embedding.embeddings.numpy()
    for token in OLD:  # row = vocabulary index + 1 (row 0 is padding)
        np.testing.assert_array_equal(n[NEW.index(token) + 1], o[OLD.index(token) + 1], err_msg=token)
    np.testing.assert_array_equal(n[NEW.index("d") + 1], fresh[NEW.index("d") + 1])  # new id: its own init
    np.testing.assert_array_equal(n[-1], o[-1])  # the OOV bucket
    np.testing.assert_array_equal(new.hour.embedding.embeddings.numpy(), old.hour.embedding.embeddings.numpy())
    for a, b in zip(new.head.weights, old.head.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert report["item_id_rows_copied"] == 3 and report["item_id_rows_new"] == 1
    assert report["dense_copied"] == 2 and report["skipped"] == 0
    # the same call through the model: an old item scores the same before and after the vocabulary change
    q = {"item": tf.constant([OLD.index("b")]), "hour": tf.constant([5])}
    q_new = {"item": tf.constant([NEW.index("b")]), "hour": tf.constant([5])}
    np.testing.assert_allclose(new(q_new).numpy(), old(q).numpy(), rtol=1e-6)


def test_changed_width_is_skipped_and_changed_architecture_is_an_error():
    old, new = _built(len(OLD) + 1, seed=1, dim=4), _built(len(NEW) + 1, seed=2, dim=8)
    report = warm_start.warm_start(new, old, lambda side, name: OLD if side == "old" else NEW)
    assert report["skipped"] >= 1
    other = tf.keras.Sequential([IndexEmbedding(5, 4, vocab="user_id")])
    other(tf.constant([[1]]))
    with pytest.raises(ValueError, match="same model architecture"):
        warm_start.warm_start(new, other, lambda side, name: OLD)
