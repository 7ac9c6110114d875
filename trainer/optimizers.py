"""Optimizers whose embedding updates touch only the rows a batch looked up.

TF-Keras' Adam treats a sparse (``tf.IndexedSlices``) gradient densely: every step it decays the
first and second moments of the WHOLE table and rewrites every row of it, so a step over a
1M-item catalogue costs ~1M rows of work even though a batch touches a few thousand
(measured by ``recsys bench training``: the vocabulary sweep). ``SparseAdam`` ("lazy Adam", as in
TensorFlow Addons' LazyAdam) updates the moments and the weights of the looked-up rows only; dense
variables (towers' layers) get ordinary Adam. A row's moments then decay only when it is used,
the usual trade of lazy Adam for embeddings.

``train.optimizer`` (recsys/config.py): ``sparse_adam`` (default) | ``adam`` (TF-Keras' Adam, dense
updates, fused: ``FusedAdam``) | ``adagrad`` (TF-Keras Adagrad, whose sparse path is already row-wise).
"""
from __future__ import annotations

import tensorflow as tf

OPTIMIZERS = ("sparse_adam", "adam", "adagrad")


class _StepTerms:
    """Holds one step's shared Adam terms; a plain object, so the optimizer's checkpoint never tracks it."""
    by_dtype = None


class FusedAdam(tf.keras.optimizers.Adam):
    """TF-Keras Adam, each variable's update one fused kernel (``ResourceApplyAdam``, as TF1's Adam had).

    Keras' Adam builds ~45 graph ops per variable (the step's bias-correction terms recomputed for each
    one, then the moment and weight updates op by op). Traced into every ``train_step``, that was over half
    of the ops of the DCN's step (2,100 of 3,770) and seconds of each model's first epoch. Here the step's
    coefficients are built once per step and each variable takes one op. Same update, same slots (so the
    same checkpoints); sparse gradients are summed into dense ones, which is what Keras' Adam computes for
    them too. Values agree with Keras' Adam to float32 rounding (``tests/trainer/test_optimizers.py``).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="Adam", **kwargs):
        # one graph per step: with jit_compile (GPUs) Keras traces each variable's update as its own XLA
        # function, apart from the step's shared terms
        kwargs.setdefault("jit_compile", False)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=False, name=name, **kwargs)
        self._step = _StepTerms()

    def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
        self._step.by_dtype = {}  # built by the first variable of each dtype, in this step's graph
        try:
            return super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)
        finally:
            self._step.by_dtype = None

    def _terms(self, dtype) -> dict:
        """This step's learning rate, betas, their powers and the bias-corrected rate, in ``dtype``."""
        cache = self._step.by_dtype if self._step.by_dtype is not None else {}  # outside a step: not shared
        if dtype not in cache:
            step = tf.cast(self.iterations + 1, dtype)
            b1, b2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            b1_power, b2_power = tf.pow(b1, step), tf.pow(b2, step)
            lr = tf.cast(self.learning_rate, dtype)
            cache[dtype] = {"lr": lr, "b1": b1, "b2": b2, "b1_power": b1_power, "b2_power": b2_power,
                            "eps": tf.cast(self.epsilon, dtype),
                            "alpha": lr * tf.sqrt(1 - b2_power) / (1 - b1_power)}
        return cache[dtype]

    def _moments(self, variable):
        index = self._index_dict[self._var_key(variable)]
        return self._momentums[index], self._velocities[index]

    def update_step(self, gradient, variable):
        t = self._terms(variable.dtype)
        m, v = self._moments(variable)
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)  # duplicate rows summed, as Keras' sparse Adam does
        tf.raw_ops.ResourceApplyAdam(var=variable.handle, m=m.handle, v=v.handle, beta1_power=t["b1_power"],
                                     beta2_power=t["b2_power"], lr=t["lr"], beta1=t["b1"], beta2=t["b2"],
                                     epsilon=t["eps"], grad=gradient)


class SparseAdam(FusedAdam):
    """Adam with row-sparse updates for ``tf.IndexedSlices`` gradients (embedding lookups); dense
    variables take ``FusedAdam``'s fused update."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="SparseAdam", **kwargs):
        # (XLA could not compile tf.unique's data-dependent shape anyway)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         name=name, **kwargs)

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        t = self._terms(variable.dtype)
        b1, b2 = t["b1"], t["b2"]
        m, v = self._moments(variable)
        # a row looked up several times in the batch gets one update with the summed gradient
        rows, pos = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(gradient.values, pos, tf.shape(rows)[0])
        m_rows = tf.gather(m, rows) * b1 + grad * (1 - b1)
        v_rows = tf.gather(v, rows) * b2 + tf.square(grad) * (1 - b2)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(t["alpha"] * m_rows / (tf.sqrt(v_rows) + t["eps"]), rows))


def build(train_cfg) -> tf.keras.optimizers.Optimizer:
    """The optimizer a config section's ``optimizer`` names, at its ``learning_rate`` (``train``, ``item2vec``)."""
    name, lr = getattr(train_cfg, "optimizer", "sparse_adam"), train_cfg.learning_rate
    if name == "sparse_adam":
        return SparseAdam(lr)
    if name == "adam":
        return FusedAdam(lr)
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
