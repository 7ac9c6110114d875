"""trainer/models/epoch_loss.py: the reported loss and val_loss are the epoch's, not the last batch's."""
import numpy as np
import tensorflow as tf

from trainer.models.epoch_loss import EpochLossModel


class Constant(EpochLossModel):
    """Loss of a batch = sum of its x (a fixed function of the data): the expected figures are exact."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(0.0)

    def compute_loss(self, inputs, training=False):
        return tf.reduce_sum(inputs["x"]) + 0.0 * self.w


def test_loss_and_val_loss_are_batch_weighted_epoch_means_not_the_last_batch():
    x = np.arange(10, dtype=np.float32)          # batches of 4: [0..3], [4..7], [8, 9]
    ds = tf.data.Dataset.from_tensor_slices({"x": x}).batch(4)
    model = Constant()
    model.compile(optimizer=tf.keras.optimizers.SGD(0.0))
    hist = model.fit(ds, validation_data=ds, epochs=2, verbose=0).history
    batch_losses, rows = np.array([6.0, 22.0, 17.0]), np.array([4.0, 4.0, 2.0])
    expected = float((batch_losses * rows).sum() / rows.sum())   # 13.4; the last batch alone is 17
    np.testing.assert_allclose(hist["loss"], [expected, expected], rtol=1e-6)   # reset at each epoch
    np.testing.assert_allclose(hist["val_loss"], [expected, expected], rtol=1e-6)
    assert "epoch_loss" not in hist and "val_epoch_loss" not in hist
