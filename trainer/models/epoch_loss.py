"""``EpochLossModel``: a ``tfrs.models.Model`` that reports the epoch's loss, not its last batch's.

TFRS's ``train_step``/``test_step`` return ``loss`` = the loss of the batch just run, and Keras hands the
last step's logs to the callbacks. So ``val_loss`` -- what EarlyStopping and the best-weights checkpoint
monitor -- was the loss of the final, usually partial, validation batch alone (e.g. 212 of 2,260 rows),
and the training ``loss`` printed per epoch was that of one batch (0.0 for a 1-row batch). Here both are
the batch-size-weighted mean over the epoch (over the whole validation pass), as Keras reports a
compiled loss.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


class EpochLossModel(tfrs.models.Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # a Metric attribute: Keras resets it at each epoch and before each validation pass
        self.epoch_loss = tf.keras.metrics.Mean(name="epoch_loss")

    def _with_epoch_loss(self, logs, inputs):
        rows = tf.cast(tf.shape(tf.nest.flatten(inputs)[0])[0], tf.float32)
        self.epoch_loss.update_state(logs["loss"], sample_weight=rows)
        logs = dict(logs)
        logs.pop("epoch_loss", None)
        logs["loss"] = self.epoch_loss.result()
        return logs

    def train_step(self, inputs):
        return self._with_epoch_loss(super().train_step(inputs), inputs)

    def test_step(self, inputs):
        return self._with_epoch_loss(super().test_step(inputs), inputs)
