"""recsys/blessing.py: the offline check against popularity and the per-event metrics (no models needed)."""
import json
import os

import numpy as np
import pytest

from recsys import blessing as bl


def _metrics(model, pop, k=50):
    return {"protocol": "time_split_full",
            "results": {"two_tower": {f"recall@{k}": model, "recall@10": 0.1},
                        "popularity": {f"recall@{k}": pop, "recall@10": 0.05}}}


@pytest.mark.parametrize("model,pop,min_lift,passed", [
    (0.18, 0.13, 1.1, True),    # 1.38x
    (0.14, 0.13, 1.1, False),   # 1.08x
    (0.13, 0.13, 1.0, False),   # a tie does not beat the baseline
    (0.131, 0.13, 1.0, True),
    (0.0, 0.0, 1.0, False),     # zero recall never passes
    (0.01, 0.0, 5.0, True),     # any recall beats a zero baseline
    (0.30, 0.13, 2.5, False),   # 2.31x < 2.5x
])
def test_vs_popularity(model, pop, min_lift, passed):
    r = bl.check_vs_popularity(_metrics(model, pop), min_lift=min_lift)
    assert r["passed"] is passed
    assert ("PASS" if passed else "FAIL") in r["message"]
    assert (r["model"], r["baseline"], r["k"]) == (model, pop, 50)


@pytest.mark.parametrize("payload,match", [
    ({}, "no 'results'"),
    ({"results": {"two_tower": {"recall@50": 0.2}}}, "popularity"),
    ({"results": {"two_tower": {"recall@10": 0.2}, "popularity": {"recall@50": 0.1}}}, "recall@50"),
    ({"results": {"two_tower": {"recall@50": "n/a"}, "popularity": {"recall@50": 0.1}}}, "not a number"),
    ({"results": {"two_tower": {"recall@50": float("nan")}, "popularity": {"recall@50": 0.1}}}, "not a valid"),
])
def test_fails_closed_on_bad_metrics(payload, match):
    with pytest.raises(bl.QualityGateError, match=match):
        bl.check_vs_popularity(payload)
    with pytest.raises(ValueError):
        bl.check_vs_popularity(_metrics(0.2, 0.1), min_lift=0)


def test_reads_the_metrics_layout_evaluation_writes(tmp_path):
    from trainer import evaluate_retrieval as er

    path = str(tmp_path / "metrics.json")
    er.write_metrics({"two_tower": {"recall@50": 0.3}, "popularity": {"recall@50": 0.2}}, path, {})
    with open(path) as f:
        metrics = json.load(f)
    assert bl.check_vs_popularity(metrics, min_lift=1.4)["passed"]
    assert not bl.check_vs_popularity(metrics, min_lift=1.6)["passed"]


def test_per_event_metrics_drop_history_items():
    events = {"history_item_ids": np.array([[b"", b"a"], [b"", b""]], object),
              "item_id": np.array([b"b", b"c"], object)}
    answers = np.array([[b"a", b"b", b"x"], [b"x", b"y", b"c"]], object)
    # event 0: "a" is in the history, so "b" is first; event 1: "c" third
    assert bl.per_event(answers, events, "recall", 1).tolist() == [1.0, 0.0]
    assert bl.per_event(answers, events, "recall", 3).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(bl.per_event(answers, events, "ndcg", 3), [1.0, 0.5])


def test_history_is_fitted_to_the_signature_length():
    h = np.array([[b"a", b"b", b"c"]], object)
    assert bl._fit_history(h, 2).tolist() == [[b"b", b"c"]]          # most recent kept
    assert bl._fit_history(h, 4).tolist() == [[b"", b"a", b"b", b"c"]]
    assert bl._fit_history(np.array([[1, 2]]), 3).tolist() == [[0, 1, 2]]


def test_latest_versions_skip_incomplete_and_non_integer(tmp_path):
    from contracts import completion

    for v in ("1", "3", ".tmp-4-1", "x"):
        os.makedirs(tmp_path / "retrieval" / v)
        (tmp_path / "retrieval" / v / "saved_model.pb").write_bytes(b"1")
    completion.write_marker(str(tmp_path / "retrieval" / "1"))
    completion.write_marker(str(tmp_path / "retrieval" / "3"))
    (tmp_path / "retrieval" / "3" / "saved_model.pb").write_bytes(b"12")   # changed after its marker
    assert bl.latest_versions(str(tmp_path), ["retrieval", "ranking"]) == {"retrieval": 1}
    assert bl.served_version(str(tmp_path), ["retrieval", "recommend"]) == 1
    assert bl.served_version("", ["retrieval"]) is None
