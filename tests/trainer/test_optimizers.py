"""SparseAdam: the looked-up rows move exactly as with Adam, the other rows are not touched at all."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import optimizers


def _embedding_steps(opt, ids_per_step, rows=6, dim=3):
    """A tiny embedding table trained a few steps on lookups of the given ids; returns the table."""
    tf.keras.utils.set_random_seed(0)
    table = tf.Variable(np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32))
    target = tf.constant(np.random.default_rng(1).normal(size=(dim,)).astype(np.float32))
    for ids in ids_per_step:
        with tf.GradientTape() as tape:
            emb = tf.nn.embedding_lookup(table, tf.constant(ids))
            loss = tf.reduce_sum(tf.square(emb - target))
        grad = tape.gradient(loss, table)
        assert isinstance(grad, tf.IndexedSlices)  # what an embedding lookup yields: a row-sparse gradient
        opt.apply_gradients([(grad, table)])
    return table.numpy()


def test_sparse_adam_equals_adam_when_every_row_is_used():
    steps = [[0, 1, 2, 3, 4, 5, 2, 2]] * 3  # every row each step (row 2 three times: summed gradient)
    dense = _embedding_steps(tf.keras.optimizers.Adam(0.1), steps)
    sparse = _embedding_steps(optimizers.SparseAdam(0.1), steps)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5)  # float32 op order


def test_sparse_adam_leaves_unused_rows_alone_where_adam_keeps_moving_them():
    start = _embedding_steps(optimizers.SparseAdam(0.1), [])
    steps = [[0, 1, 1], [0, 1], [0]]  # row 1 unused in the last step; rows 2..5 never used
    sparse = _embedding_steps(optimizers.SparseAdam(0.1), steps)
    dense = _embedding_steps(tf.keras.optimizers.Adam(0.1), steps)
    np.testing.assert_array_equal(sparse[2:], start[2:])
    np.testing.assert_array_equal(dense[2:], start[2:])  # zero moments: Adam's update of unused rows is 0 too
    assert not np.allclose(sparse[1], dense[1])  # ...but row 1's momentum moves it under Adam in step 3
    assert not np.allclose(sparse[0], start[0]) and not np.allclose(sparse[1], start[1])


def test_build_names_and_rejects_unknown():
    class T:
        learning_rate = 0.01
        optimizer = "sparse_adam"

    assert isinstance(optimizers.build(T), optimizers.SparseAdam)
    T.optimizer = "adagrad"
    assert isinstance(optimizers.build(T), tf.keras.optimizers.Adagrad)
    T.optimizer = "sgdd"
    with pytest.raises(ValueError, match="unknown train.optimizer 'sgdd'"):
        optimizers.build(T)


def _two_variable_steps(opt, steps=4):
    """An embedding table (row-sparse gradient) feeding a dense kernel, a few steps in one tf.function."""
    tf.keras.utils.set_random_seed(0)
    table = tf.Variable(np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32))
    kernel = tf.Variable(np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32))
    target = tf.constant(np.random.default_rng(1).normal(size=(4,)).astype(np.float32))

    @tf.function
    def step(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.matmul(tf.nn.embedding_lookup(table, ids), kernel) - target))
        opt.apply_gradients(zip(tape.gradient(loss, [table, kernel]), [table, kernel]))

    for i in range(steps):
        step(tf.constant([0, 1, 2, 2, i % 6]))  # a repeated row and unused rows: Keras' sparse path
    return [table.numpy(), kernel.numpy()], step.get_concrete_function(tf.TensorSpec([None], tf.int32)).graph


def test_fused_adam_moves_every_variable_as_keras_adam_with_one_kernel_each():
    keras, keras_graph = _two_variable_steps(tf.keras.optimizers.Adam(0.1))
    fused, fused_graph = _two_variable_steps(optimizers.FusedAdam(0.1))
    for a, b in zip(fused, keras):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # float32 op order
    assert not np.allclose(fused[0], _two_variable_steps(optimizers.FusedAdam(0.1), steps=0)[0][0])
    ops = [op.type for op in fused_graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == 2
    assert len(ops) < len(keras_graph.get_operations()) - 40  # the per-variable terms are built once a step


def test_sparse_adam_dense_variables_take_the_fused_update():
    _, graph = _two_variable_steps(optimizers.SparseAdam(0.1))
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == 1 and "ResourceScatterSub" in ops
