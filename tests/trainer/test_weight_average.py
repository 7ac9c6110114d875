"""WeightAverage: validation and the final model see the moving average; training goes on from the raw weights."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.weight_average import WeightAverage


class Recorder(tf.keras.callbacks.Callback):
    """The weights after every train step, and the weights the validation pass ran with."""

    def __init__(self):
        super().__init__()
        self.steps, self.validated = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self.model.get_weights()[0].copy())

    def on_test_end(self, logs=None):
        self.validated.append(self.model.get_weights()[0].copy())


def _fit(callbacks, epochs=3, validate=True):
    tf.keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.build((None, 3))  # as train_retrieval builds the towers before fit
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks,
              validation_data=(x, y) if validate else None)
    return model


def test_raw_trajectory_unchanged_and_average_validated_and_kept():
    plain = Recorder()
    _fit([plain])
    rec, avg = Recorder(), WeightAverage(0.9)
    model = _fit([rec, avg])
    # training itself is untouched: every step's raw weights as without the callback
    np.testing.assert_allclose(np.stack(rec.steps), np.stack(plain.steps), rtol=1e-6)
    # the average, recomputed from the raw steps (warm-up as tf.train.ExponentialMovingAverage)
    shadow, expected = np.zeros((3, 1), np.float32), []
    for n, w in enumerate(rec.steps, start=1):
        d = min(0.9, (1.0 + n) / (10.0 + n))
        shadow = d * shadow + (1 - d) * w
        if n % 4 == 0:  # 64 rows / 16 = 4 steps an epoch: the validation pass after it
            expected.append(shadow.copy())
    np.testing.assert_allclose(np.stack(rec.validated), np.stack(expected), rtol=1e-5)
    assert not np.allclose(rec.validated[-1], rec.steps[-1])  # the check can tell average from raw
    np.testing.assert_allclose(model.get_weights()[0], expected[-1], rtol=1e-5)  # kept at the end


def test_sparse_updates_every_k_steps_span_the_same_horizon():
    rec, avg = Recorder(), WeightAverage(0.9, every=2)
    _fit([rec, avg], epochs=1)
    shadow = np.zeros((3, 1), np.float32)
    for n, w in enumerate(rec.steps[1::2], start=1):
        d = min(0.9 ** 2, (1.0 + n) / (10.0 + n))
        shadow = d * shadow + (1 - d) * w
    np.testing.assert_allclose(rec.validated[-1], shadow, rtol=1e-5)


def test_without_validation_the_model_still_ends_on_the_average():
    rec, avg = Recorder(), WeightAverage(0.9)
    model = _fit([rec, avg], epochs=2, validate=False)
    shadow = np.zeros((3, 1), np.float32)
    for n, w in enumerate(rec.steps, start=1):
        d = min(0.9, (1.0 + n) / (10.0 + n))
        shadow = d * shadow + (1 - d) * w
    assert not rec.validated and not np.allclose(shadow, rec.steps[-1])
    np.testing.assert_allclose(model.get_weights()[0], shadow, rtol=1e-5)


def test_bad_decay_is_a_clear_error():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(1.0)
