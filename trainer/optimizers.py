"""Optimizers whose embedding updates touch only the rows a batch looked up.

TF-Keras' Adam treats a sparse (``tf.IndexedSlices``) gradient densely: every step it decays the
first and second moments of the WHOLE table and rewrites every row of it, so a step over a
1M-item catalogue costs ~1M rows of work even though a batch touches a few thousand
(measured by ``recsys bench training``: the vocabulary sweep). ``SparseAdam`` ("lazy Adam", as in
TensorFlow Addons' LazyAdam) updates the moments and the weights of the looked-up rows only; dense
variables (towers' layers) get ordinary Adam. A row's moments then decay only when it is used,
the usual trade of lazy Adam for embeddings.

``train.optimizer`` (recsys/config.py): ``sparse_adam`` (default) | ``adam`` (TF-Keras, dense
updates) | ``adagrad`` (TF-Keras Adagrad, whose sparse path is already row-wise).
"""
from __future__ import annotations

import tensorflow as tf

OPTIMIZERS = ("sparse_adam", "adam", "adagrad")


class SparseAdam(tf.keras.optimizers.Adam):
    """Adam with row-sparse updates for ``tf.IndexedSlices`` gradients (embedding lookups)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="SparseAdam", **kwargs):
        # XLA cannot compile tf.unique's data-dependent shape; the dense updates it would fuse are cheap.
        kwargs.setdefault("jit_compile", False)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=False, name=name, **kwargs)

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        b1, b2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(b2, step)) / (1 - tf.pow(b1, step))
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        # a row looked up several times in the batch gets one update with the summed gradient
        rows, pos = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(gradient.values, pos, tf.shape(rows)[0])
        m_rows = tf.gather(m, rows) * b1 + grad * (1 - b1)
        v_rows = tf.gather(v, rows) * b2 + tf.square(grad) * (1 - b2)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def build(train_cfg) -> tf.keras.optimizers.Optimizer:
    """The optimizer ``train.optimizer`` names, at ``train.learning_rate``."""
    name, lr = getattr(train_cfg, "optimizer", "sparse_adam"), train_cfg.learning_rate
    if name == "sparse_adam":
        return SparseAdam(lr)
    if name == "adam":
        return tf.keras.optimizers.Adam(lr)
    if name == "adagrad":
        return tf.keras.optimizers.Adagrad(lr)
    raise ValueError(f"unknown train.optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def create_slots(model) -> None:
    """The optimizer's slot variables, created before ``fit`` (the model's own weights must exist already).

    A tf.function whose first trace creates variables is traced again without them, and one trace of these
    models is most of a first epoch: created here, Keras traces ``train_step`` once instead of twice
    (measured on the --quick demo's data: the two-tower's first epoch 10.9 -> 7.2-8.2 s, the DCN's 20.6 ->
    18.9 s; same losses to the printed digit).
    """
    model.optimizer.build(model.trainable_variables)
