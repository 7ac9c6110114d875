"""The time-split protocol's exclusion rule and the baseline rows, on the session's synthetic run."""
import numpy as np
import tensorflow as tf

from preprocessing.utf8 import to_str
from trainer import data
from trainer import evaluate_retrieval as er
from trainer import evaluation


def _events(version_dir, split):
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("user_id", "item_id")}
    spec["timestamp"] = tf.io.FixedLenFeature([], tf.int64)
    ds = tf.data.TFRecordDataset(data.files(version_dir, split), compression_type="GZIP").batch(4096)
    parts = [tf.io.parse_example(b, spec) for b in ds]
    return (np.concatenate([to_str(p["user_id"]) for p in parts]), np.concatenate([to_str(p["item_id"]) for p in parts]),
            np.concatenate([p["timestamp"].numpy() for p in parts]))


def test_every_item_the_user_had_before_the_event_is_excluded(preprocessed, trained):
    tr = trained["trained"]
    eq = er.load_queries(preprocessed, None, tr.catalogue, tr.stats)
    index = tr.catalogue.index()
    ev_users, _, ev_times = _events(preprocessed, "eval")
    users, items, times = (np.concatenate(a) for a in zip(_events(preprocessed, "train"), _events(preprocessed, "eval")))
    rng = np.random.default_rng(0)
    with_eval_prior = 0
    for q in rng.choice(len(eq.targets), 200, replace=False):
        mine = (users == eq.users[q]) & (times < eq.times[q])  # strictly before: train and eval period
        assert eq.prior[q].tolist() == sorted({index[i] for i in items[mine] if i in index})
        with_eval_prior += int(((ev_users == eq.users[q]) & (ev_times < eq.times[q])).any())
    assert with_eval_prior > 0, "some queries must have earlier eval-period items (the case the old rule missed)"


def test_baselines_score_the_same_queries_as_the_model(trained):
    res = trained["results"]
    n = res["two_tower"]["n_queries"]
    for row in ("popularity", "ease", "item_knn", "als"):
        assert res[row]["n_queries"] == n, row
        assert res[row]["recall@50"] > 0.0, row
    assert res["ease"]["recall@50"] > res["popularity"]["recall@50"]
    lead = res["two_tower"]["lead_over_best"]["recall@50"]
    assert lead["versus"] in ("popularity", "ease", "item_knn", "als")
    assert lead["low"] <= lead["lead"] <= lead["high"]
    assert lead["n_users"] > 100  # the interval resamples users, not queries


def test_a_baseline_too_large_for_dense_numpy_is_skipped_with_its_reason(preprocessed, trained, monkeypatch, capsys):
    from recsys.config import Config
    from trainer import baselines

    tr = trained["trained"]
    cfg = Config()
    cfg.eval.baselines, cfg.eval.tune_baselines, cfg.eval.max_queries = ("ease",), False, 200
    monkeypatch.setattr(baselines, "MAX_DENSE_BYTES", 1024)
    details = {}
    res = er.evaluate(preprocessed, lambda b: tr.model.query_tower(b), trained["item_vectors"], tr.catalogue,
                      tr.stats, cfg, details=details)
    assert "ease" not in res and res["two_tower"]["n_queries"] > 0 and "popularity" in res
    assert "ease skipped" in details["tuning"]["ease"]["skipped"] and "ease skipped" in capsys.readouterr().out


def test_the_per_user_view_counts_every_user_once():
    """A heavy user with 8 hits and a light one with 2 misses: per event 0.8, per user 0.5. The view's lead
    is over the best other row on that view, with the users as the bootstrap's unit."""
    from recsys.config import Config

    users = np.array(["heavy"] * 8 + ["light"] * 2)
    targets = np.arange(10)
    hit_heavy = np.array([[t, 99] for t in targets])   # hits every heavy query, misses the light ones
    hit_heavy[8:] = [[98, 99]] * 2
    hit_light = np.array([[98, 99]] * 8 + [[8, 99], [9, 99]])
    eq = er.EvalQueries(None, targets, [np.empty(0, np.int64)] * 10, users, np.arange(10))
    tops = {"two_tower": hit_heavy, "popularity": np.full((10, 2), 97), "ease": hit_light}
    means = er.user_averages(tops, eq)
    assert means["two_tower"]["user_recall@50"] == 0.5 and means["ease"]["user_recall@50"] == 0.5
    assert means["popularity"]["user_recall@50"] == 0.0
    assert er.leads_over_best(tops, eq, "two_tower", Config())["recall@50"]["lead"] == 3.0, "per event: 0.8 / 0.2"
    lead = er.leads_over_best(tops, eq, "two_tower", Config(), per_user=True)["recall@50"]
    assert lead["versus"] == "ease" and lead["lead"] == 0.0 and lead["n_users"] == 2 and lead["n_queries"] == 2
    values, names = evaluation.user_means(np.array([1.0, np.nan, 0.0, 1.0]), np.array(["a", "a", "b", "b"]))
    assert names.tolist() == ["a", "b"] and values.tolist() == [1.0, 0.5]


def test_the_report_shows_the_per_user_view(trained):
    res = trained["results"]
    assert 0.0 < res["two_tower"]["user_recall@50"] <= 1.0 and "user_ndcg@10" in res["ease"]
    lead = res["two_tower"]["lead_over_best_per_user"]["recall@50"]
    assert lead["low"] <= lead["lead"] <= lead["high"] and lead["versus"] != "two_tower"
    assert "users counted once, recall@50: two_tower" in er.report(res)
