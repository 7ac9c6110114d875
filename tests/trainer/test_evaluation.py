"""Hand-checked tests of trainer.evaluation (pure NumPy, no TensorFlow)."""
import math

import numpy as np
import pytest

from trainer import evaluation as ev

L2 = math.log2


# ---------------------------------------------------------------- top_k_from_scores
def test_top_k_basic_order_and_width():
    s = np.array([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(ev.top_k_from_scores(s, 2), [[1, 2], [0, 1]])
    # k larger than the catalog: width is n_items, fully sorted
    np.testing.assert_array_equal(ev.top_k_from_scores(s, 10), [[1, 2, 3, 0], [0, 1, 2, 3]])


def test_top_k_ties_lower_index_first():
    s = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    # three items tie at 3.0 -> 1, 2, 4; then 3 (2.0)
    np.testing.assert_array_equal(ev.top_k_from_scores(s, 2), [[1, 2]])
    np.testing.assert_array_equal(ev.top_k_from_scores(s, 4), [[1, 2, 4, 3]])
    np.testing.assert_array_equal(ev.top_k_from_scores(np.zeros((2, 6)), 3), [[0, 1, 2], [0, 1, 2]])


def test_top_k_exclusion_padding_and_nan():
    s = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7], [np.nan, 0.1, -np.inf]])
    got = ev.top_k_from_scores(s, 3, exclude=[np.array([0]), [0, 1], []])
    # row0: 0 dropped -> 1, 2, pad; row1: only 2 left; row2: NaN and -inf are not rankable
    np.testing.assert_array_equal(got, [[1, 2, -1], [2, -1, -1], [1, -1, -1]])
    assert s[0, 0] == 0.9  # input untouched
    with pytest.raises(ValueError):
        ev.top_k_from_scores(s, 2, exclude=[[0]])


def _naive_topk(scores, k, exclude=None):
    s = np.array(scores, np.float64)
    if exclude is not None:
        for i, e in enumerate(exclude):
            s[i, list(e)] = -np.inf
    out = []
    for row in s:
        order = np.lexsort((np.arange(row.size), -row))[:k]  # by -score, then index
        out.append(np.where(row[order] == -np.inf, -1, order))
    return np.array(out)


def test_top_k_matches_naive_with_many_ties():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 4, (50, 40)).astype(np.float32)  # heavy ties across the partition boundary
    excl = [rng.choice(40, rng.integers(0, 39), replace=False) for _ in range(50)]
    for k in (1, 5, 17, 40):
        np.testing.assert_array_equal(ev.top_k_from_scores(s, k, excl), _naive_topk(s, k, excl))


def test_full_ranking_equals_naive_argsort():
    rng = np.random.default_rng(0)
    q, items = rng.normal(size=(37, 8)), rng.normal(size=(53, 8))
    excl = [rng.choice(53, 5, replace=False) for _ in range(37)]
    got = ev.full_ranking_topk(q, items, 10, exclude=excl, batch_size=8)
    np.testing.assert_array_equal(got, _naive_topk(q @ items.T, 10, excl))
    naive = np.argsort(-(q @ items.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ev.full_ranking_topk(q, items, 10, batch_size=5), naive)


def test_popularity_topk_same_exclusion():
    counts = [5, 9, 5, 1]
    # order by count, ties (items 0 and 2) lower index first: 1, 0, 2, 3
    np.testing.assert_array_equal(ev.popularity_topk(counts, 2, 3), [[1, 0, 2], [1, 0, 2]])
    got = ev.popularity_topk(counts, 2, 3, exclude=[[1], [0, 2, 3]])
    np.testing.assert_array_equal(got, [[0, 2, 3], [1, -1, -1]])


# ---------------------------------------------------------------- accuracy, one target per query
TOPK1 = np.array([[3, 1, 2], [0, 4, 5], [7, 8, 9], [1, 2, 3]])
TGT1 = np.array([1, 5, 2, -1])  # q0 hit at rank 2, q1 at rank 3, q2 miss, q3 skipped (no target)


def test_single_target_metrics():
    assert ev.hit_rate_at_k(TOPK1, TGT1, 1) == 0.0
    assert ev.hit_rate_at_k(TOPK1, TGT1, 2) == pytest.approx(1 / 3)
    assert ev.hit_rate_at_k(TOPK1, TGT1, 3) == pytest.approx(2 / 3)
    assert ev.recall_at_k(TOPK1, TGT1, 3) == pytest.approx(2 / 3)
    # (1/3 + 1/3 + 0) / 3 = 2/9
    assert ev.precision_at_k(TOPK1, TGT1, 3) == pytest.approx(2 / 9)
    # (1/log2(3) + 1/log2(4) + 0) / 3 = (0.63093 + 0.5) / 3 = 0.37698
    assert ev.ndcg_at_k(TOPK1, TGT1, 3) == pytest.approx(0.376977, abs=1e-6)
    # (1/2 + 1/3 + 0) / 3 = 5/18
    assert ev.mrr(TOPK1, TGT1) == pytest.approx(5 / 18)
    assert ev.map_at_k(TOPK1, TGT1, 3) == pytest.approx(5 / 18)
    assert ev.map_at_k(TOPK1, TGT1, 2) == pytest.approx(1 / 6)  # (1/2 + 0 + 0) / 3


def test_k_larger_than_list():
    # whole list used; precision still divides by k: (1/10 + 1/10 + 0) / 3
    assert ev.precision_at_k(TOPK1, TGT1, 10) == pytest.approx(0.2 / 3)
    assert ev.recall_at_k(TOPK1, TGT1, 10) == pytest.approx(2 / 3)
    assert ev.ndcg_at_k(TOPK1, TGT1, 10) == pytest.approx(0.376977, abs=1e-6)


def test_no_relevant_is_skipped_or_nan():
    assert math.isnan(ev.recall_at_k(TOPK1[:2], np.array([-1, -1]), 3))
    assert math.isnan(ev.mrr(TOPK1[:2], [[], set()]))
    assert math.isnan(ev.ndcg_at_k(TOPK1[:2], [[], []], 3))
    # the -1 target never matches -1 padding
    assert math.isnan(ev.hit_rate_at_k(np.array([[-1, -1]]), np.array([-1]), 2))


def test_padding_never_hits():
    topk = np.array([[-1, 4], [2, -1]])
    assert ev.mrr(topk, np.array([4, 7])) == pytest.approx(0.25)  # (1/2 + 0) / 2
    # -1 inside a relevant list is ignored: q0 |rel| = 1
    assert ev.recall_at_k(np.array([[2, -1, -1]]), [[-1, 2]], 3) == 1.0


# ---------------------------------------------------------------- accuracy, several relevant items
TOPK_M = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
REL_M = [{1, 3, 20}, [], np.array([12, 9])]
# q0 hits at ranks 1, 3 (|rel| = 3); q1 skipped; q2 hits at ranks 1, 4 (|rel| = 2)


def test_multi_relevant_at_4():
    assert ev.recall_at_k(TOPK_M, REL_M, 4) == pytest.approx(5 / 6)  # (2/3 + 2/2) / 2
    assert ev.precision_at_k(TOPK_M, REL_M, 4) == pytest.approx(0.5)  # (2/4 + 2/4) / 2
    assert ev.hit_rate_at_k(TOPK_M, REL_M, 4) == 1.0
    # q0: (1 + 1/log2 4) / (1 + 1/log2 3 + 1/log2 4) = 1.5 / 2.13093 = 0.70392
    # q2: (1 + 1/log2 5) / (1 + 1/log2 3) = 1.43068 / 1.63093 = 0.87722
    assert ev.ndcg_at_k(TOPK_M, REL_M, 4) == pytest.approx((0.703918 + 0.877215) / 2, abs=1e-5)
    # q0: (1 + 2/3) / 3 = 5/9; q2: (1 + 2/4) / 2 = 3/4 -> 47/72
    assert ev.map_at_k(TOPK_M, REL_M, 4) == pytest.approx(47 / 72)
    assert ev.mrr(TOPK_M, REL_M) == 1.0


def test_multi_relevant_at_2_and_beyond_width():
    assert ev.recall_at_k(TOPK_M, REL_M, 2) == pytest.approx(5 / 12)  # (1/3 + 1/2) / 2
    # both: 1 / (1 + 1/log2 3) = 0.61315 (ideal holds min(|rel|, 2) = 2 hits)
    assert ev.ndcg_at_k(TOPK_M, REL_M, 2) == pytest.approx(0.613147, abs=1e-6)
    assert ev.map_at_k(TOPK_M, REL_M, 2) == pytest.approx(0.5)  # both 1 / min(|rel|, 2)
    assert ev.precision_at_k(TOPK_M, REL_M, 10) == pytest.approx(0.2)  # (2/10 + 2/10) / 2
    assert ev.ndcg_at_k(TOPK_M, REL_M, 10) == pytest.approx((0.703918 + 0.877215) / 2, abs=1e-5)


def test_padded_2d_relevant_and_duplicates():
    rel = np.array([[1, 3, 20], [-1, -1, -1], [12, 9, -1]])
    assert ev.map_at_k(TOPK_M, rel, 4) == pytest.approx(47 / 72)
    assert ev.recall_at_k(TOPK_M, [[1, 1, 3, 20], [], [9, 12, 12]], 4) == pytest.approx(5 / 6)


# ---------------------------------------------------------------- beyond accuracy
def test_catalog_coverage():
    topk = np.array([[0, 1, 2], [0, 3, -1]])
    assert ev.catalog_coverage(topk, 10, 2) == pytest.approx(0.3)  # {0, 1, 3}
    assert ev.catalog_coverage(topk, 10, 3) == pytest.approx(0.4)  # {0, 1, 2, 3}


VECS = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float64)  # multi-hot genres; item 3 has none
TOPK_D = np.array([[0, 1, 2], [0, 2, -1], [3, -1, -1], [0, 3, -1]])


def test_intra_list_diversity():
    d02 = 1 - 1 / math.sqrt(2)  # 0.29289
    # list0: (1 + d02 + d02) / 3 = 0.52860; list1: d02; list2: one item, skipped; list3: zero vector -> 1
    expected = ((1 + 2 * d02) / 3 + d02 + 1) / 3  # 0.60716
    assert ev.intra_list_diversity(TOPK_D, VECS, 3) == pytest.approx(expected)
    assert ev.intra_list_diversity(TOPK_D, VECS, 2) == pytest.approx((1 + d02 + 1) / 3)  # 0.76430
    assert math.isnan(ev.intra_list_diversity(TOPK_D[2:3], VECS, 3))


POP = np.array([4, 2, 1, 1, 0])  # p = .5, .25, .125, .125, (0 -> rarest seen: .125)
TOPK_P = np.array([[0, 1], [2, -1], [4, 3]])


def test_novelty():
    # -log2 p = 1, 2, 3, 3, 3; list means 1.5, 3, 3 -> 2.5
    assert ev.novelty(TOPK_P, POP, 2) == pytest.approx(2.5)
    assert ev.novelty(TOPK_P, POP, 1) == pytest.approx(7 / 3)  # (1 + 3 + 3) / 3


def test_popularity_bias():
    # share of items at most as popular: 1.0, 0.8, 0.6, 0.6, 0.2; list means 0.9, 0.6, 0.4
    assert ev.popularity_bias(TOPK_P, POP, 2) == pytest.approx(1.9 / 3)
    assert ev.popularity_bias(np.array([[0], [0]]), POP, 1) == 1.0


def test_evaluate_topk_keys_and_values():
    out = ev.evaluate_topk(TOPK_M, REL_M, ks=(4, 2), item_popularity=np.ones(13), item_vectors=np.eye(13))
    assert out["n_queries"] == 2
    assert out["recall@4"] == pytest.approx(5 / 6) and out["map@2"] == pytest.approx(0.5)
    assert out["hr@2"] == 1.0 and out["mrr"] == 1.0 and out["precision@2"] == pytest.approx(0.5)
    # beyond-accuracy at k = 4 (largest k <= 10); n_items inferred from item_popularity (13)
    assert out["coverage@4"] == pytest.approx(12 / 13)
    assert out["novelty@4"] == pytest.approx(L2(13))
    assert out["popularity_bias@4"] == 1.0
    assert out["diversity@4"] == pytest.approx(1.0)  # one-hot vectors are orthogonal
    out = ev.evaluate_topk(TOPK1, TGT1, ks=(50, 20))
    assert set(out) == {"n_queries", "mrr"} | {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hr", "map")
                                                for k in (20, 50)}
    assert ev.evaluate_topk(TOPK1, TGT1, ks=(20, 50), n_items=10)["coverage@20"] == pytest.approx(0.9)  # no item 6


# ---------------------------------------------------------------- protocols
def test_leave_one_out_latest_per_user():
    users = np.array(["a", "b", "a", "c", "b", "a"])
    ts = np.array([1, 5, 3, 2, 5, 2])
    # a: rows 0,2,5 -> row 2 (t=3); b: rows 1,4 tie at t=5 -> later row 4; c: row 3
    train, test = ev.leave_one_out(users, np.arange(6), ts)
    np.testing.assert_array_equal(test, [False, False, True, True, True, False])
    np.testing.assert_array_equal(train, ~test)


def _check_negatives(topk, targets, exclude):
    for row, t, e in zip(topk, targets, exclude):
        if t < 0:
            assert (row == -1).all()
            continue
        assert t in row and len(set(row)) == row.size  # the positive plus distinct negatives
        assert not set(row) & set(e)


def test_sampled_protocol_valid_and_deterministic():
    targets = np.array([0, 5, -1, 29])
    excl = [[1, 2, 3], list(range(6, 26)), [], [0]]  # row1 has exactly 9 allowed negatives
    seen_rows = []

    def by_id(rows, cand):
        seen_rows.append(rows.copy())
        return cand.astype(float)

    a = ev.sampled_negatives_topk(by_id, targets, 30, n_negatives=9, seed=3, exclude=excl)
    assert a.shape == (4, 10)
    _check_negatives(a, targets, excl)
    assert sorted(a[1]) == [0, 1, 2, 3, 4, 5, 26, 27, 28, 29]
    assert (np.diff(a[[0, 1, 3]], axis=1) < 0).all()  # re-ranked by score = item id
    np.testing.assert_array_equal(np.concatenate(seen_rows), [0, 1, 3])
    b = ev.sampled_negatives_topk(by_id, targets, 30, n_negatives=9, seed=3, exclude=excl)
    np.testing.assert_array_equal(a, b)
    c = ev.sampled_negatives_topk(by_id, targets, 30, n_negatives=9, seed=4, exclude=excl)
    assert not np.array_equal(a, c)


def test_sampled_protocol_ties_and_oracle():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 500, 200)
    excl = [rng.choice(500, 30, replace=False) for _ in range(200)]
    excl = [e[e != t] for e, t in zip(excl, targets)]
    flat = ev.sampled_negatives_topk(lambda r, c: np.zeros(c.shape), targets, 500, exclude=excl)
    _check_negatives(flat, targets, excl)
    np.testing.assert_array_equal(flat[:, -1], targets)  # ties rank the positive last
    assert ev.hit_rate_at_k(flat, targets, 10) == 0.0
    oracle = ev.sampled_negatives_topk(lambda r, c: (c == targets[r][:, None]).astype(float), targets, 500,
                                       exclude=excl, batch_size=64)
    assert ev.hit_rate_at_k(oracle, targets, 1) == 1.0
    with pytest.raises(ValueError):
        ev.sampled_negatives_topk(lambda r, c: np.zeros(c.shape), [1], 5)


def test_protocol_labels():
    assert set(ev.PROTOCOLS) == {"time_split_full", "leave_one_out_full", "sampled_1_99", "tfrs_random_80_20"}
    assert "strictly before" in ev.PROTOCOLS["time_split_full"]
    assert "nothing excluded" in ev.PROTOCOLS["tfrs_random_80_20"]
    assert "He et al. 2017" in ev.PROTOCOLS["sampled_1_99"]


def test_no_tensorflow_at_import():
    import os
    import subprocess
    import sys

    code = "import sys, trainer.evaluation; assert 'tensorflow' not in sys.modules"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_sampled_protocol_exhausted_catalog_falls_back_exactly():
    # 200 items, 190 excluded + the target: exactly 9 allowed negatives, rejection alone rarely finds them all
    for seed in range(3):
        got = ev.sampled_negatives_topk(lambda r, c: -c.astype(float), [0], 200, n_negatives=9, seed=seed,
                                        exclude=[range(10, 200)])
        np.testing.assert_array_equal(got, [np.arange(10)])  # score = -item id -> ascending ids


def test_edge_shapes():
    assert ev.top_k_from_scores(np.zeros((0, 5)), 3).shape == (0, 3)
    assert ev.full_ranking_topk(np.zeros((0, 4)), np.zeros((7, 4)), 3).shape == (0, 3)
    assert ev.popularity_topk([3, 1], 0, 5, exclude=[]).shape == (0, 2)
    assert ev.mrr(np.zeros((2, 0), int), np.array([1, 2])) == 0.0
    with pytest.raises(ValueError):
        ev.recall_at_k(TOPK1, TGT1, 0)
    with pytest.raises(ValueError):
        ev.recall_at_k(TOPK1, TGT1[:2], 3)
