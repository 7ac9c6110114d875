"""Classic baselines on tiny hand-checkable matrices, the prior-item rule, and the user bootstrap."""
import numpy as np
import pytest

from trainer import baselines, evaluation

X = np.array([[1, 1, 0, 0],
              [1, 1, 1, 0],
              [0, 1, 1, 1],
              [0, 0, 1, 1],
              [1, 0, 0, 1]], np.float32)


def test_ease_equals_its_closed_form():
    lam = 2.0
    m = baselines.EASE(lam=lam, min_count=1).fit(X)
    g = X.T.astype(np.float64) @ X + lam * np.eye(4)
    p = np.linalg.inv(g)
    b = np.eye(4) - p / np.diag(p)  # Steck (2019), eq. 8
    np.testing.assert_allclose(m.b, b, atol=1e-5)
    assert np.allclose(np.diag(m.b), 0.0)
    np.testing.assert_allclose(m.score_matrix(X[:1]), X[:1] @ b, atol=1e-5)


def test_ease_sweep_matches_direct_fits():
    lams = [1.0, 5.0, 50.0]
    for lam, swept in zip(lams, baselines.EASE(min_count=1).sweep(X, lams)):
        np.testing.assert_allclose(swept.b, baselines.EASE(lam, min_count=1).fit(X).b, atol=1e-4)


def test_ease_with_fewer_users_than_items_equals_its_closed_form():
    """The users-side (Woodbury) fit that ml-latest-small takes (610 users, 6,278 active items)."""
    x = (np.random.default_rng(3).random((7, 15)) < 0.4).astype(np.float32)
    x[0] = 1.0  # every item active at min_count=1
    lams = [0.5, 2.0, 30.0]
    for lam, swept in zip(lams, baselines.EASE(min_count=1).sweep(x, lams)):
        p = np.linalg.inv(x.T.astype(np.float64) @ x + lam * np.eye(15))
        b = np.eye(15) - p / np.diag(p)
        assert swept.lam == lam and swept.b.shape == (15, 15)
        np.testing.assert_allclose(swept.b, b, atol=1e-5)
        np.testing.assert_allclose(baselines.EASE(lam, min_count=1).fit(x).b, b, atol=1e-5)


def test_ease_never_recommends_items_below_min_count():
    x = X.copy()
    x[:, 3] = 0
    x[0, 3] = 1  # item 3 seen once
    m = baselines.EASE(lam=1.0, min_count=2).fit(x)
    assert 3 not in m.active
    assert np.isneginf(m.score_matrix(x[:2])[:, 3]).all()


def test_item_knn_cosine_on_4x4():
    x = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    m = baselines.ItemKNN(neighbours=0).fit(x)
    # item0 x item1: co-occur 2, |0| = sqrt(3), |1| = sqrt(2) -> 2 / sqrt(6); item0 x item2: 1 / sqrt(3)
    assert m.sim[0, 1] == pytest.approx(2 / np.sqrt(6), abs=1e-6)
    assert m.sim[0, 2] == pytest.approx(1 / np.sqrt(3), abs=1e-6)
    assert m.sim[1, 2] == 0.0 and m.sim[3].sum() == 0.0 and np.diag(m.sim).sum() == 0.0
    # a user who had item 1 gets item 0 first, then nothing else related
    top = m.topk([np.array([1])], 2, [np.array([1])])
    assert top[0, 0] == 0
    # keeping one neighbour per item drops the weaker 0-2 link for target 0
    m1 = baselines.ItemKNN(neighbours=1).fit(x)
    assert m1.sim[1, 0] > 0 and m1.sim[2, 0] == 0.0


def test_gram_adds_users_up_when_sparse_and_equals_blas():
    rng = np.random.default_rng(0)
    sparse = (rng.random((300, 2000)) < 0.004).astype(np.float32)   # review-log density: the per-user path
    sparse[7, :40] = 1.0                                              # one heavy user
    dense = (rng.random((40, 30)) < 0.5).astype(np.float32)           # BLAS
    for x in (sparse, dense, np.zeros((3, 5), np.float32)):
        g = baselines.gram(x)
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, x.T @ x)


def test_item_knn_sweep_matches_direct_fits():
    x = (np.random.default_rng(1).random((60, 25)) < 0.2).astype(np.float32)
    for n, swept in zip((0, 3, 10), baselines.ItemKNN().sweep(x, (0, 3, 10))):
        np.testing.assert_array_equal(swept.sim, baselines.ItemKNN(n).fit(x).sim)
        assert swept.neighbours == n


def test_als_reconstructs_block_structure():
    x = np.zeros((20, 10), np.float32)
    x[:10, :5] = 1
    x[10:, 5:] = 1
    x[0, 4] = 0  # user 0 should get item 4 back first
    m = baselines.ImplicitALS(factors=4, reg=0.1, alpha=5.0, iterations=8).fit(x)
    top = m.topk([np.flatnonzero(x[0])], 1, [np.flatnonzero(x[0])])
    assert top[0, 0] == 4


def test_prior_items_hand_built_case():
    # user a: train item 0 at t=1; eval: item 1 at t=10, items 2 and 3 both at t=20, item 1 again at t=30
    users = np.array(["a", "a", "a", "a", "a", "b"])
    items = np.array([0, 1, 2, 3, 1, 5])
    times = np.array([1, 10, 20, 20, 30, 5])
    q = baselines.prior_items(users, items, times, np.array(["a", "a", "a", "a", "b", "c"]),
                              np.array([10, 20, 20, 30, 5, 100]))
    assert [p.tolist() for p in q] == [[0], [0, 1], [0, 1], [0, 1, 2, 3], [], []]


def test_bias_model_beats_global_mean_and_handles_unknown_ids():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, 4000)
    items = rng.integers(0, 80, 4000)
    truth = 3.5 + rng.normal(0, 0.6, 50)[users] + rng.normal(0, 0.6, 80)[items]
    ratings = truth + rng.normal(0, 0.3, 4000)
    m = baselines.BiasModel().fit(users[:3000], items[:3000], ratings[:3000])
    rmse_bias = np.sqrt(np.mean((m.predict(users[3000:], items[3000:]) - ratings[3000:]) ** 2))
    rmse_mean = np.sqrt(np.mean((ratings[:3000].mean() - ratings[3000:]) ** 2))
    assert rmse_bias < 0.7 * rmse_mean
    assert m.predict(np.array([999]), np.array([999]))[0] == pytest.approx(m.mu)


def test_bias_model_with_recent_ratings_by_hand():
    m = baselines.BiasModel(reg_user=0.0, reg_item=0.0, iterations=1).fit(
        np.array([0, 0, 1, 1]), np.array([10, 11, 10, 11]), np.array([4.0, 2.0, 4.0, 2.0]))
    assert m.mu == 3.0 and m.predict(np.array([7]), np.array([10]))[0] == pytest.approx(4.0)  # b_10 = +1
    # history: item 10 rated 5 (1 above its 4), item 11 rated 3 (1 above its 2), one unrated, one pad
    pred = m.predict_recent(np.array([11, 11]), np.array([[10, 11, 10, -1], [-1, -1, -1, -1]]),
                            np.array([[5.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]), reg=2.0)
    np.testing.assert_allclose(pred, [2.0 + (1.0 + 1.0) / (2 + 2.0), 2.0])


def test_bias_blend_weights_follow_what_predicts_the_held_out_ratings():
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 40, 3000), rng.integers(0, 60, 3000)
    ub, ib = rng.normal(0, 0.8, 40), rng.normal(0, 0.5, 60)
    m = baselines.BiasModel().fit(users, items, 3.5 + ub[users] + ib[items] + rng.normal(0, 0.2, 3000))
    n = 400
    hist_items = rng.integers(0, 60, (n, 5))
    u, i = rng.integers(0, 40, n), rng.integers(0, 60, n)
    shift = rng.normal(0, 1.0, n)  # how each held-out user rates now, shown by their recent ratings only
    hist_r = np.clip(3.5 + ib[hist_items] + shift[:, None], 0.5, 5.0)
    stale = 3.5 + ub[u] + ib[i]                    # held-out ratings that follow the train-time user bias
    fresh = 3.5 + ib[i] + shift                    # ... or the recent ratings
    w_stale = m.fit_blend(u, i, hist_items, hist_r, stale, reg=2.0)
    w_fresh = m.fit_blend(u, i, hist_items, hist_r, fresh, reg=2.0)
    assert w_stale[0] > 0.8 and abs(w_stale[1]) < 0.2, w_stale
    assert w_fresh[1] > 0.8 and abs(w_fresh[0]) < 0.2, w_fresh
    assert m.fit_blend(u[:5], i[:5], hist_items[:5], hist_r[:5], fresh[:5]) == (1.0, 0.0)  # too few rows
    np.testing.assert_allclose(m.predict_blend((1.0, 0.0), u, i, hist_items, hist_r), m.predict(u, i))


def test_bootstrap_resamples_users_and_brackets_the_lead():
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(200), 5).astype(str)
    b = rng.random(1000) < 0.2
    a = b | (rng.random(1000) < 0.1)  # a finds everything b finds plus more
    r = baselines.bootstrap_lead(a.astype(float), b.astype(float), users, n_boot=400)
    assert r["low"] > 0 and r["low"] <= r["lead"] <= r["high"] and r["n_users"] == 200
    same = baselines.bootstrap_lead(b.astype(float), b.astype(float), users, n_boot=200)
    assert same["lead"] == 0 and same["low"] == 0 and same["high"] == 0


def test_per_query_matches_the_mean_metric():
    topk = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    rel = np.array([2, 9, -1])
    v = evaluation.per_query("recall", topk, rel, 2)
    assert v[0] == 1.0 and v[1] == 0.0 and np.isnan(v[2])
    assert np.nanmean(v) == evaluation.recall_at_k(topk, rel, 2)


def test_tfrs_random_split_is_deterministic():
    a, b = evaluation.random_split(1000, 0.2, seed=42), evaluation.random_split(1000, 0.2, seed=42)
    assert (a == b).all() and a.sum() == 200
    assert not (a == evaluation.random_split(1000, 0.2, seed=43)).all()


def test_tune_picks_from_the_grid_on_train_only():
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 30
    users, items, times = [], [], []
    for u in range(n_users):  # two taste groups; each user's items arrive over time
        pool = np.arange(15) if u % 2 else np.arange(15, 30)
        for t, i in enumerate(rng.choice(pool, 8, replace=False)):
            users.append(str(u)), items.append(int(i)), times.append(t * 100 + u)
    split = baselines.Split(np.array(users), np.array(items), np.array(times))
    model, rec = baselines.fit_tuned("ease", split, n_items, grid=(1.0, 10.0), metric="recall@5")
    assert rec["best"] in (1.0, 10.0) and rec["valid_queries"] > 0 and model.lam == rec["best"]
    assert max(rec["grid"].values()) > 0.3  # random is ~0.2: the taste groups must be found


def test_data_beyond_dense_numpy_is_refused_with_the_reason_before_any_matrix_is_built(monkeypatch):
    with pytest.raises(baselines.TooLarge, match=r"ease skipped: 1,000 users x 30,000 items need a 10.1 GiB dense "
                                                 r"items x items matrix"):
        baselines.check_size("ease", 1_000, 30_000)
    with pytest.raises(baselines.TooLarge, match="users x items"):
        baselines.check_size("als", 200_000, 30_000)  # ML-20M-sized: the input matrix alone is 22 GiB
    baselines.check_size("ease", 6_040, 3_706)  # MovieLens 1M fits
    split = baselines.Split(np.array(["a", "b"]), np.array([0, 1]), np.array([1, 2]))
    monkeypatch.setattr(baselines, "MAX_DENSE_BYTES", 8)
    with pytest.raises(baselines.TooLarge, match="ease skipped"):
        baselines.fit_tuned("ease", split, 2)
    for kind, form in (("item_knn", "neighbour lists"), ("als", "sparse interactions")):  # the next two tests
        assert baselines.fit_tuned(kind, split, 2, tune_first=False)[1]["form"] == form


def _taste_log(seed: int, n_users: int = 120, n_items: int = 60, per_user: int = 10):
    """Two taste groups, each user's items arriving over time (a time split's shape)."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        pool = np.arange(n_items // 2) + (n_items // 2) * (u % 2)
        for t, i in enumerate(rng.choice(pool, per_user, replace=False)):
            users.append(str(u)), items.append(int(i)), times.append(t * 1000 + u)
    return baselines.Split(np.array(users), np.array(items), np.array(times))


def test_item_knn_from_neighbour_lists_scores_as_the_dense_one(monkeypatch):
    """Past MAX_DENSE_BYTES item-kNN comes from each item's neighbour lists (trainer/covisit.py's table): the
    same scores as the dense matrix with every neighbour kept, the same n-nearest rule when cut, tuned on the
    same grid, and never a users x items or items x items matrix."""
    split = _taste_log(0)
    n_items = 60
    x = split.matrix(n_items)
    queries = [split.items[split.users == str(u)][:n] for u in range(20) for n in (1, 4, 7)]
    for n in (0, 15):
        dense = baselines.ItemKNN(n).fit(x)
        lists = baselines.NeighbourKNN.sweep(split.users, split.items, n_items, [n])[0]
        xq = baselines.input_matrix(queries, n_items)
        got, want = lists.score_matrix(xq), dense.score_matrix(xq)
        if n == 0:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        else:  # n kept per target: ties at the n-th neighbour may keep fewer here than in the dense matrix
            assert (got <= want + 1e-5).all() and np.mean(np.isclose(got, want, atol=1e-5)) > 0.9
            per_target = np.bincount(lists._targets, minlength=n_items)
            assert per_target.max() <= n
        order = np.repeat(np.arange(20), 3)
        np.testing.assert_array_equal(lists.topk(queries, 10, queries, order_key=order),
                                      np.concatenate([evaluation.top_k_from_scores(got[i:i + 1], 10, [queries[i]])
                                                      for i in range(len(queries))]))

    monkeypatch.setattr(baselines, "MAX_DENSE_BYTES", 64)  # far below 120 x 60 floats
    monkeypatch.setattr(baselines.ItemKNN, "sweep", lambda *a, **k: pytest.fail("dense item-kNN built"))
    model, rec = baselines.fit_tuned("item_knn", split, n_items, grid=(5, 20), metric="recall@10")
    assert rec["form"] == "neighbour lists" and rec["best"] in (5, 20) and model.neighbours == rec["best"]
    assert max(rec["grid"].values()) > 0.3, "random is ~0.2: the taste groups are found"


def test_als_from_the_interactions_positions_equals_the_dense_fit(monkeypatch):
    split = _taste_log(1)
    dense = baselines.ImplicitALS(factors=8, iterations=3).fit(split.matrix(60))
    pairs = baselines.ImplicitALS(factors=8, iterations=3).fit_pairs(*split.pairs(60))
    np.testing.assert_array_equal(pairs.items, dense.items)
    monkeypatch.setattr(baselines, "MAX_DENSE_BYTES", 64)
    monkeypatch.setattr(baselines.ImplicitALS, "fit", lambda *a, **k: pytest.fail("users x items matrix built"))
    model, rec = baselines.fit_tuned("als", split, 60, metric="recall@10")
    assert rec["form"] == "sparse interactions" and model.reg == rec["best"]
    assert max(rec["grid"].values()) > 0.3, "random is ~0.2: the taste groups are found"


@pytest.mark.parametrize("kind", ["ease", "item_knn"])
def test_incremental_scoring_equals_direct_scoring(kind):
    rng = np.random.default_rng(3)
    x = (rng.random((40, 25)) < 0.3).astype(np.float32)
    model = baselines.BASELINES[kind]().fit(x) if kind == "item_knn" else baselines.EASE(10.0, 1).fit(x)
    users = np.repeat(np.arange(10), 4)
    sets = []
    for u in range(10):  # each user's queries: a growing history (a time split's shape)
        items = rng.permutation(25)
        sets += [items[:n] for n in (2, 5, 6, 9)]
    fast = model.topk(sets, 5, sets, order_key=users)
    direct = np.concatenate([evaluation.top_k_from_scores(model.score_matrix(baselines.input_matrix(sets, 25, [i])),
                                                          5, [sets[i]]) for i in range(len(sets))])
    assert (fast == direct).all()


@pytest.mark.parametrize("kind", ["ease", "item_knn", "als"])
def test_baselines_fit_on_the_items_the_log_has_and_answer_in_catalogue_indices(kind):
    """A products file 1,000x the sold items: the baselines fit on the 20 sold ones (no 20,020^2 matrix), rank
    as they would over the sold items alone, and answer with catalogue indices; unsold items never appear."""
    rng = np.random.default_rng(5)
    sold = np.arange(0, 20_020, 1001)                   # 20 sold items spread over the catalogue
    users = np.repeat([str(u) for u in range(80)], 6)
    local = np.concatenate([rng.choice(10, 6, replace=False) + 10 * (u % 2) for u in range(80)])
    times = np.tile(np.arange(6), 80) * 100 + np.repeat(np.arange(80), 6)
    big = baselines.Split(users, sold[local], times)
    small = baselines.Split(users, local, times)
    model, rec = baselines.fit_tuned(kind, big, 20_020, tune_first=False)
    assert rec["items"] == 20
    ref, _ = baselines.fit_tuned(kind, small, 20, tune_first=False)
    queries = [sold[local[i * 6:i * 6 + 3]] for i in range(10)]
    got = model.topk(queries, 25, queries, 20_020)
    want = ref.topk([local[i * 6:i * 6 + 3] for i in range(10)], 25, [local[i * 6:i * 6 + 3] for i in range(10)], 20)
    assert got.shape == (10, 25)
    np.testing.assert_array_equal(got[:, :17], sold[want[:, :17]])
    assert (got[:, 17:] == -1).all(), "3 excluded of 20 sold: nothing else to rank"
    x = baselines.input_matrix(queries, 20_020)
    full = model.score_matrix(x)
    np.testing.assert_allclose(full[:, sold], ref.score_matrix(x[:, sold]), rtol=1e-5, atol=1e-6)
    assert np.isneginf(np.delete(full, sold, axis=1)).all()


@pytest.mark.parametrize("kind", ["ease", "item_knn", "als", "neighbours"])
def test_large_catalogues_are_scored_in_fewer_rows_per_block_with_the_same_answers(kind, monkeypatch):
    split = _taste_log(2)
    x = split.matrix(60)
    model = (baselines.NeighbourKNN(20).fit_pairs(split.users, split.items, 60) if kind == "neighbours" else
             baselines.EASE(10.0, 1).fit(x) if kind == "ease" else baselines.BASELINES[kind]().fit(x))
    queries = [split.items[split.users == str(u)][:n] for u in range(30) for n in (2, 5)]
    order = np.repeat(np.arange(30), 2)
    whole = model.topk(queries, 10, queries, 60, order_key=order)
    monkeypatch.setattr(baselines, "_CELLS", 60 * 7)  # 7 queries per block
    np.testing.assert_array_equal(model.topk(queries, 10, queries, 60, order_key=order), whole)
