"""Co-visitation tables on a hand-checkable case, and the in-graph match the ranker reads."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import covisit
from trainer.models.ranking import covisit_match


def test_table_is_cosine_top_k_without_self_and_respects_the_cut():
    # users: a has items 0,1; b has 0,1,2; c has 2 (late)
    users = np.array(["a", "a", "b", "b", "b", "c"])
    items = np.array([0, 1, 0, 1, 2, 2])
    times = np.array([1, 2, 3, 4, 5, 100])
    ids, w = covisit.table(users, items, times, n_items=4, k=2)
    assert ids.shape == (5, 2) and (ids[0] == -1).all()               # row 0 = padding
    assert ids[1 + 0].tolist() == [1, 2]                               # item 0: item 1 (cos 1.0), item 2 (1/2)
    np.testing.assert_allclose(w[1 + 0], [1.0, 1 / 2], rtol=1e-6)
    assert ids[1 + 3].tolist() == [-1, -1] and (w[1 + 3] == 0).all()  # never consumed: no neighbours
    ids_cut, w_cut = covisit.table(users, items, times, n_items=4, k=2, before_ts=5)
    assert ids_cut[1 + 0].tolist() == [1, -1]                          # item 2 only appears from t=5 on


@pytest.mark.parametrize("dense_bytes", [covisit.DENSE_BYTES, 0])
def test_dense_and_sparse_builders_in_any_block_size_give_the_cosine_top_k(monkeypatch, dense_bytes):
    """Both paths (dense BLAS for small data, sparse x dense columns beyond ``DENSE_BYTES``) and any block size
    give the table a brute-force cosine gives."""
    rng = np.random.default_rng(0)
    n_users, n_items, k = 60, 37, 5
    users = rng.integers(0, n_users, 900).astype(str)
    items = np.minimum(rng.zipf(1.6, 900) - 1, n_items - 1)
    times = rng.integers(0, 100, 900)
    x = np.zeros((n_users, n_items), np.float32)
    x[users.astype(int), items] = 1.0
    norms = np.sqrt(x.sum(0))
    sim = (x.T @ x) / np.maximum(norms[:, None] * norms[None, :], 1e-12)
    np.fill_diagonal(sim, 0.0)
    monkeypatch.setattr(covisit, "DENSE_BYTES", dense_bytes)
    whole = covisit.table(users, items, times, n_items, k)
    monkeypatch.setattr(covisit, "_BLOCK", 4)  # ten blocks, the last one short
    ids, w = covisit.table(users, items, times, n_items, k)
    np.testing.assert_array_equal(ids, whole[0])
    np.testing.assert_allclose(w, whole[1], rtol=1e-6)
    for i in range(n_items):
        expected = np.sort(sim[i])[::-1][:k]
        np.testing.assert_allclose(w[1 + i], np.maximum(expected, 0.0), rtol=1e-5, atol=1e-7)
        hit = ids[1 + i] >= 0
        np.testing.assert_allclose(sim[i, ids[1 + i][hit]], w[1 + i][hit], rtol=1e-5)


def test_work_beyond_the_exact_builder_is_a_clear_error_and_a_cli_input_error(monkeypatch):
    from recsys import cli

    monkeypatch.setattr(covisit, "MAX_WORK", 10)
    with pytest.raises(covisit.TooLarge, match=r"co-visitation table: 3 distinct user-item pairs x 5 items") as e:
        covisit.table(np.array(["a", "b", "c"]), np.array([0, 1, 2]), np.array([1, 2, 3]), n_items=5, k=2)
    assert cli._user_error(e.value) == (cli.EXIT_INPUT, str(e.value))  # one line, exit 4: not a crash
    ids, w = covisit.table(np.array(["a", "b", "c"]), np.array([0, 1, 2]), np.array([1, 2, 3]), n_items=5, k=0)
    assert ids.shape == (6, 0) and w.shape == (6, 0), "ranking.covisit_neighbours=0 needs no table work"


def test_match_sums_history_weights_for_the_candidate():
    ids, w = covisit.table(np.array(["a", "a", "b", "b", "b"]), np.array([0, 1, 0, 1, 2]),
                           np.zeros(5, np.int64), n_items=3, k=2)
    hist = tf.constant([[-1, 0, 1], [-1, -1, -1]], tf.int64)
    cand = tf.constant([2, 2], tf.int64)
    out = covisit_match(hist, cand, tf.constant(ids), tf.constant(w))
    expected = w[1 + 0][ids[1 + 0] == 2].sum() + w[1 + 1][ids[1 + 1] == 2].sum()
    np.testing.assert_allclose(out["covisit_history"].numpy(), [expected, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["covisit_last"].numpy(), [w[1 + 1][ids[1 + 1] == 2].sum(), 0.0], rtol=1e-6)
