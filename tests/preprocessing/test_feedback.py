"""Events table, position bias and the request-log x events join, on hand-checkable rows.

The logs are real PredictionLog TFRecords (written as ``recsys serve`` writes them) read back
with contracts/prediction_log.py, so the join is tested on the format the server produces.
"""
import gzip
import json

import numpy as np
import pytest

from preprocessing import feedback, feedback_sim
from preprocessing.sources import synthetic, tables

T0 = 1_700_000_000
NOW = T0 + 10 * 86400


def _logs(tmp_path):
    """Two versions of two models: retrieval v1 showed r1 to u1 and r2 to u2; recommend v2 showed r3 to u1."""
    a = feedback_sim.write_served_log(str(tmp_path / "retrieval.tfrecord"), [
        {"request_id": "r1", "user_id": "u1", "timestamp": T0, "item_ids": ["i1", "i2", "i3"]},
        {"request_id": "r2", "user_id": "u2", "timestamp": T0 + 60, "item_ids": ["i3", "i1", "i4"]},
    ], "retrieval", 1)
    b = feedback_sim.write_served_log(str(tmp_path / "recommend.tfrecord"), [
        {"request_id": "r3", "user_id": "u1", "timestamp": T0 + 120, "item_ids": ["i4", "i2"]},
    ], "recommend", 2)
    return [a, b]


EVENTS = [
    {"request_id": "r1", "user_id": "u1", "item_id": "i2", "event": "click", "timestamp": T0 + 5},
    {"request_id": "r1", "user_id": "u1", "item_id": "i2", "event": "watch", "value": 300, "timestamp": T0 + 6},
    {"request_id": "r1", "user_id": "u1", "item_id": "i2", "event": "watch", "value": 120.5, "timestamp": T0 + 9},
    {"request_id": "r2", "user_id": "u2", "item_id": "i4", "event": "click", "timestamp": T0 + 70},
    {"request_id": "r2", "user_id": "u2", "item_id": "i4", "event": "purchase", "value": 3.5, "timestamp": T0 + 80},
    {"request_id": "r3", "user_id": "u1", "item_id": "i4", "event": "rating", "value": 4.5, "timestamp": T0 + 130},
    {"request_id": "r3", "user_id": "u1", "item_id": "i4", "event": "rating", "value": 2.0, "timestamp": T0 + 140},
    # organic: no request id / a request not in the log / an item the request did not show / another user
    {"user_id": "u3", "item_id": "i1", "event": "click", "timestamp": T0 + 200},
    {"request_id": "r-unlogged", "user_id": "u1", "item_id": "i1", "event": "click", "timestamp": T0 + 210},
    {"request_id": "r1", "user_id": "u1", "item_id": "i9", "event": "click", "timestamp": T0 + 220},
    {"request_id": "r1", "user_id": "u2", "item_id": "i1", "event": "click", "timestamp": T0 + 230},
]


def test_join_keeps_version_source_position_labels_and_counts_organic(tmp_path):
    events = feedback.parse_events([json.dumps(e) for e in EVENTS], max_timestamp=NOW)
    assert not events.dead_letters and len(events.rows) == len(EVENTS)
    joined = feedback.join_logs(_logs(tmp_path), events.rows)
    ex = {(e["request_id"], e["item_id"]): e for e in joined.examples}
    assert len(joined.examples) == 8  # every shown item, clicked or not
    r1i2 = ex[("r1", "i2")]
    assert (r1i2["model_name"], r1i2["model_version"], r1i2["position"], r1i2["user_id"]) == ("retrieval", 1, 2, "u1")
    assert (r1i2["click"], r1i2["watch_seconds"], r1i2["purchase"], r1i2["events"]) == (1, 420.5, 0, 3)
    assert r1i2["served_ts"] == T0 and r1i2["first_event_ts"] == T0 + 5
    r2i4 = ex[("r2", "i4")]
    assert (r2i4["position"], r2i4["click"], r2i4["purchase"], r2i4["purchase_value"]) == (3, 1, 1, 3.5)
    r3i4 = ex[("r3", "i4")]
    assert (r3i4["model_name"], r3i4["model_version"], r3i4["position"]) == ("recommend", 2, 1)
    assert (r3i4["rating"], r3i4["click"]) == (2.0, 0)  # the latest rating; a rating is not a click
    unclicked = ex[("r1", "i1")]
    assert (unclicked["click"], unclicked["events"], unclicked["position"]) == (0, 0, 1)
    # inverse propensity with the power-law prior (1/k): rank 1 -> 1, rank 2 -> 2, rank 3 -> 3
    assert [ex[("r1", i)]["ipw"] for i in ("i1", "i2", "i3")] == pytest.approx([1.0, 2.0, 3.0])
    assert ex[("r1", "i3")]["propensity"] == pytest.approx(1 / 3)

    assert joined.counts["events_joined"] == 7 and joined.counts["organic_events"] == 4
    assert joined.counts["requests"] == 3 and joined.counts["clicked_impressions"] == 2
    reasons = [o["reason"] for o in joined.organic]
    assert reasons[0] == "no request_id" and reasons[1].startswith("request not in the request log")
    assert reasons[2].startswith("item not in") and reasons[3].startswith("item not in")  # u2 never saw r1
    assert [o["item_id"] for o in joined.organic] == ["i1", "i1", "i9", "i1"]


def test_bad_event_rows_become_dead_letters_with_one_line_reasons(tmp_path):
    good = {"request_id": "r1", "user_id": "u1", "item_id": "i1", "event": "click", "timestamp": T0}
    bad = [
        b"{not json",
        b"\xff\xfe{}",
        json.dumps([1, 2]),
        json.dumps({k: v for k, v in good.items() if k != "user_id"}),
        json.dumps(dict(good, event="like")),
        json.dumps(dict(good, event="watch")),
        json.dumps(dict(good, event="watch", value=-3)),
        json.dumps(dict(good, event="rating", value=7)),
        json.dumps(dict(good, timestamp=NOW + 1)),
        json.dumps(dict(good, timestamp="yesterday")),
        json.dumps(dict(good, value=True)),
        json.dumps(dict(good, request_id="has space")),
        json.dumps(dict(good, event="purchase", value=-1.0)),
        json.dumps(dict(good, item_id="")),
    ]
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write((json.dumps(good) + "\n").encode())
        for line in bad:
            f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
        f.write(b"\n")  # blank lines are not rows
    events = feedback.read_events(str(path), max_timestamp=NOW)
    assert len(events.rows) == 1 and events.rows[0]["value"] == 1.0 and events.rows[0]["request_id"] == "r1"
    reasons = [d["reason"] for d in events.dead_letters]
    assert len(reasons) == len(bad) and all("\n" not in r for r in reasons)
    expected = ["invalid JSON", "invalid UTF-8", "not a JSON object", "missing field 'user_id'",
                "is not one of click|watch|rating|purchase", "without 'value'", "outside [0,", "outside [0.5, 5.0]",
                "in the future", "expected int64", "expected a number", "printable ASCII", "negative", "empty item_id"]
    for reason, want in zip(reasons, expected):
        assert want in reason, (reason, want)
    assert events.dead_letters[1]["text"].startswith("\\xff")  # the bad line as it was, bytes escaped
    with pytest.raises(tables.DataError, match="malformed"):
        feedback.read_events(str(path), max_timestamp=NOW, max_bad_fraction=0.5)
    with pytest.raises(tables.DataError, match="not found"):
        feedback.read_events(str(tmp_path / "missing.jsonl"))


def test_position_bias_from_items_shown_at_several_ranks():
    # Randomised swaps: every item shown equally often at ranks 1..3; true propensities 1, 0.5, 0.25.
    rng = np.random.default_rng(0)
    true_p, rel = [1.0, 0.5, 0.25], rng.uniform(0.2, 0.8, 30)
    rows = [{"item_id": f"i{i}", "rank": k, "click": int(rng.random() < true_p[k - 1] * rel[i])}
            for _ in range(200) for i in range(30) for k in (1, 2, 3)]
    est = feedback.estimate_position_bias(rows, max_rank=4, max_weight=10.0)
    assert est.propensity[0] == 1.0 and est.source[:3] == ["prior", "swaps", "swaps"]
    assert est.propensity[1] == pytest.approx(0.5, abs=0.05) and est.propensity[2] == pytest.approx(0.25, abs=0.04)
    assert est.source[3] == "prior" and est.propensity[3] == pytest.approx(0.25)  # never shown at 4: 1/4
    # Clipping: a propensity below 1/max_weight gives weight max_weight, not more.
    clipped = feedback.prior_bias(50, eta=1.0, max_weight=10.0)
    assert clipped.weight(5) == pytest.approx(5.0) and clipped.weight(40) == 10.0 and clipped.weight(500) == 10.0
    # Too little evidence keeps the prior.
    assert feedback.estimate_position_bias(rows[:30], max_rank=3, min_clicks=20).source == ["prior"] * 3


def test_simulated_users_click_what_their_planted_taste_likes_with_position_bias():
    t = synthetic.generate(n_users=20, n_items=60, events_per_user=3, seed=3)
    user = "u4"
    rel = feedback_sim.relevance(t.truth, user, [f"i{i}" for i in range(60)])
    best, worst = [f"i{i}" for i in np.argsort(-rel)[:5]], [f"i{i}" for i in np.argsort(rel)[:5]]
    assert rel.max() > 0.5 > 0.1 > rel.min()
    served = [{"request_id": f"{v}{n}", "user_id": user, "timestamp": T0, "items": list(enumerate(items, 1))}
              for n in range(400) for v, items in (("good", best), ("bad", worst))]
    events = feedback_sim.simulate_events(served, t.truth, seed=1)
    assert events == feedback_sim.simulate_events(served, t.truth, seed=1)  # seeded
    clicks = [e for e in events if e["event"] == "click"]
    good = sum(e["request_id"].startswith("good") for e in clicks)
    assert good > 5 * (len(clicks) - good)
    by_rank = [sum(e["item_id"] == best[k] for e in clicks) / 400 for k in range(2)]
    # rank 1 examined always, rank 2 half the time (prior 1/k): CTR ratio ~ 0.5 x relevance ratio
    ratio = by_rank[1] / by_rank[0] / (rel[np.argsort(-rel)[1]] / rel.max())
    assert 0.35 < ratio < 0.7
    parsed = feedback.parse_events([json.dumps(e) for e in events], max_timestamp=NOW)
    assert not parsed.dead_letters  # what the simulator writes is a valid events table


def test_join_keeps_the_logged_policy_propensities_and_greedy_items(tmp_path):
    """An exploring response (the recommend model's `explore` signature) logs each shown item's propensity and
    the greedy list; the join keeps both per impression, beside a greedy request's log (None there)."""
    explore = feedback_sim.write_served_log(str(tmp_path / "explore.tfrecord"), [
        {"request_id": "x1", "user_id": "u1", "timestamp": T0, "item_ids": ["i5", "i1", "i3"],
         "signature_name": "explore",
         "outputs": {"propensities": np.array([0.05, 0.85, 0.05], np.float32),
                     "greedy_item_ids": np.array(["i2", "i1", "i4"], object)}},
    ], "recommend", 3)
    joined = feedback.join_logs([explore, _logs(tmp_path)[0]], [
        {"request_id": "x1", "user_id": "u1", "item_id": "i5", "event": "click", "value": 1.0, "timestamp": T0 + 5}])
    ex = {(e["request_id"], e["item_id"]): e for e in joined.examples}
    got = [(ex[("x1", i)]["position"], ex[("x1", i)]["policy_propensity"], ex[("x1", i)]["greedy_item_id"],
            ex[("x1", i)]["click"]) for i in ("i5", "i1", "i3")]
    assert got == [(1, pytest.approx(0.05), "i2", 1), (2, pytest.approx(0.85), "i1", 0),
                   (3, pytest.approx(0.05), "i4", 0)]
    assert ex[("r1", "i2")]["policy_propensity"] is None and ex[("r1", "i2")]["greedy_item_id"] is None
    assert ex[("x1", "i3")]["propensity"] == pytest.approx(1 / 3)  # the position's examination propensity, apart
    assert joined.counts["with_policy_propensity"] == 3 and joined.counts["impressions"] == 9
