"""`recsys report`: each online metric on a hand-computable case, the A/B interval, and the files.

The end-to-end case writes real PredictionLog TFRecords and an events file and runs the CLI.
"""
import base64
import json
import math
import os

import numpy as np
import pytest

from preprocessing import feedback, feedback_sim
from recsys import report

DAY1 = 1_699_920_000          # 2023-11-14 00:00 UTC
DAY2 = DAY1 + 86400
GENRES = {"i1": "A|B", "i2": "A", "i3": "B", "i4": "C"}
ITEMS = {f"i{k}": {"item_id": f"i{k}", "item_genres": GENRES.get(f"i{k}", "D")} for k in range(1, 11)}
POP = {"i1": 10, **{f"i{k}": 1 for k in range(2, 11)}}  # i1 is the top 10% (1 of 10 items); total 19


def _served(rid, user, ts, version, items):
    return [{"request_id": rid, "example": 0, "user_id": user, "item_id": i, "model_name": "retrieval",
             "version": version, "rank": k, "timestamp": ts, "score": None} for k, i in enumerate(items, 1)]


def _examples():
    rows = (_served("a1", "uA", DAY1 + 10, 1, ["i1", "i2", "i3"]) + _served("a2", "uB", DAY2 + 10, 1, ["i1", "i4"])
            + _served("b1", "uC", DAY1 + 20, 2, ["i2", "i3"]))
    ev = lambda rid, u, i, kind, value=1.0: {"request_id": rid, "user_id": u, "item_id": i, "event": kind,  # noqa: E731
                                               "value": value, "timestamp": DAY1 + 30}
    events = [ev("a1", "uA", "i2", "click"), ev("a1", "uA", "i2", "purchase", 4.0), ev("b1", "uC", "i2", "click"),
              ev("b1", "uC", "i3", "click"), ev("b1", "uC", "i3", "watch", 100.0),
              ev(None, "uD", "i9", "click")]
    return feedback.join(rows, events)


def test_each_metric_on_a_hand_computed_case():
    joined = _examples()
    rep = report.build_report(joined.examples, ITEMS, POP, organic_events=len(joined.organic), n_boot=500)
    rows = {(r["version"], r["day"]): r for r in rep["rows"]}
    assert rep["versions"] == ["retrieval/v1", "retrieval/v2"] and rep["organic_events"] == 1
    assert list(rows) == [("retrieval/v1", "2023-11-14"), ("retrieval/v1", "2023-11-15"), ("retrieval/v1", "all"),
                          ("retrieval/v2", "2023-11-14"), ("retrieval/v2", "all")]
    a = rows[("retrieval/v1", "all")]
    assert (a["requests"], a["impressions"], a["clicks"], a["users"]) == (2, 5, 1, 2)
    assert a["ctr"] == pytest.approx(0.2) and a["conversion"] == pytest.approx(0.2)
    assert a["watch_seconds_per_impression"] == 0.0   # watches exist in the data, none for v1
    assert a["coverage"] == pytest.approx(4 / 10)     # i1 i2 i3 i4 of 10
    # [i1{A,B}, i2{A}, i3{B}]: Jaccards 1/2, 1/2, 0 -> 1 - 1/3; [i1{A,B}, i4{C}]: 1 - 0
    assert a["diversity"] == pytest.approx((2 / 3 + 1) / 2)
    assert a["popularity_share"] == pytest.approx(2 / 5)  # i1 shown twice
    nov = lambda count: -math.log2((count + 1) / (19 + 10))  # noqa: E731
    assert a["novelty"] == pytest.approx((2 * nov(10) + 3 * nov(1)) / 5)
    d1, d2 = rows[("retrieval/v1", "2023-11-14")], rows[("retrieval/v1", "2023-11-15")]
    assert (d1["impressions"], d1["ctr"], d1["diversity"], d1["popularity_share"]) == \
        (3, pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert (d2["impressions"], d2["ctr"], d2["coverage"], d2["diversity"]) == (2, 0.0, pytest.approx(0.2), 1.0)
    b = rows[("retrieval/v2", "all")]
    assert (b["ctr"], b["conversion"], b["watch_seconds_per_impression"], b["popularity_share"]) == (1.0, 0.0, 50.0, 0.0)
    assert b["novelty"] == pytest.approx(nov(1)) and b["diversity"] == 1.0
    assert rep["ctr_by_position"]["retrieval/v1"] == {1: 0.0, 2: 0.5, 3: 0.0}
    # A/B: 1.0 - 0.2; resampling users: v2 has one user (CTR 1), v1's resamples give 1/3, 0 or 1/5
    ab = rep["ab"]
    assert (ab["baseline"], ab["candidate"]) == ("retrieval/v1", "retrieval/v2")
    assert ab["ctr_difference"] == pytest.approx(0.8) and ab["users"] == [2, 1]
    assert 2 / 3 - 1e-9 <= ab["interval"][0] < 0.8 < ab["interval"][1] <= 1.0 + 1e-9
    # no watch events at all: watch time is "not present", not 0
    no_watch = [dict(e, watch_seconds=0.0) for e in joined.examples]
    assert all(r["watch_seconds_per_impression"] is None for r in report.build_report(no_watch, ITEMS, POP)["rows"])


def test_bootstrap_interval_covers_the_true_difference_and_zero_when_there_is_none():
    rng = np.random.default_rng(0)

    def arm(ctr, users, name):
        return [{"user_id": f"{name}{u}", "click": int(rng.random() < ctr)} for u in range(users) for _ in range(10)]

    base, better, same = arm(0.10, 300, "a"), arm(0.15, 300, "b"), arm(0.10, 300, "c")
    up = report.bootstrap_ctr_difference(base, better, n_boot=1000)
    assert up["interval"][0] < 0.05 < up["interval"][1] and up["significant"] and up["interval"][0] > 0
    null = report.bootstrap_ctr_difference(base, same, n_boot=1000)
    assert null["interval"][0] < 0 < null["interval"][1] and not null["significant"]
    assert 0.02 < up["interval"][1] - up["interval"][0] < 0.08


def test_cli_report_writes_table_json_pngs_and_self_contained_html(tmp_path, capsys):
    from recsys.cli import main

    logs = [feedback_sim.write_served_log(str(tmp_path / f"v{v}.tfrecord"), [
        {"request_id": f"r{v}-{n}", "user_id": f"u{n}", "timestamp": DAY1 + n * 3600 * 13, "item_ids": ["i1", "i2", "i3"]}
        for n in range(4)], "recommend", v) for v in (1, 2)]
    events = tmp_path / "events.jsonl"
    with open(events, "w") as f:
        for n in range(4):
            f.write(json.dumps({"request_id": f"r2-{n}", "user_id": f"u{n}", "item_id": "i2", "event": "click",
                                "timestamp": DAY1 + n * 3600 * 13 + 5}) + "\n")
        f.write(json.dumps({"request_id": "r1-0", "user_id": "u0", "item_id": "i1", "event": "click",
                            "timestamp": DAY1 + 5}) + "\n")
        f.write('{"user_id": "u9", "event": "click"}\n')  # a bad row: dead letter, not a crash
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(row) + "\n" for row in ITEMS.values()))
    out = tmp_path / "report"
    argv = ["--set", "data.max_bad_fraction=0.2", "report", "--logs", logs[0], "--logs", logs[1], "--events", str(events), "--items", str(items),
            "--out", str(out), "--n-boot", "200"]
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")   # as a notebook's inline backend: drawing the report must not switch it
    try:
        assert main(argv) == 0
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    printed = capsys.readouterr().out
    assert "recommend/v1" in printed and "recommend/v2" in printed and "A/B: CTR recommend/v2 - recommend/v1" in printed
    rep = json.loads((out / "report.json").read_text())
    rows = {(r["version"], r["day"]): r for r in rep["rows"]}
    assert rows[("recommend/v1", "all")]["ctr"] == pytest.approx(1 / 12)
    assert rows[("recommend/v2", "all")]["ctr"] == pytest.approx(4 / 12)
    assert rows[("recommend/v2", "2023-11-15")]["impressions"] == 6  # users 2, 3 were served on day 2
    assert rep["ab"]["ctr_difference"] == pytest.approx(3 / 12) and rep["dead_letters"] == 1
    assert json.loads((out / "dead_letter" / "events.jsonl").read_text())["reason"] == "missing field 'item_id'"
    page = (out / "report.html").read_text()
    png = (out / "ctr_by_day.png").read_bytes()
    assert png.startswith(b"\x89PNG") and (out / "ctr_by_position.png").read_bytes().startswith(b"\x89PNG")
    assert base64.b64encode(png).decode() in page   # embedded, so the page stands alone
    assert "src=\"http" not in page and "<link" not in page and "recommend/v2" in page
    # bad input: one line, input exit code (more bad rows than data.max_bad_fraction, default 1%, is an error)
    assert main(argv[2:]) == 4 and "1 of 6 event rows are malformed" in capsys.readouterr().err
    assert main(argv + ["--baseline", "recommend/v9"]) == 4 and "recommend/v9" in capsys.readouterr().err
    assert main(["report", "--logs", logs[0], "--events", str(tmp_path / "nope.jsonl"), "--items", str(items),
                 "--out", str(out)]) == 4
    assert "events file not found" in capsys.readouterr().err


def test_simulated_ab_end_to_end_measures_the_true_ctr_difference(tmp_path):
    from preprocessing.sources import synthetic

    t = synthetic.generate(n_users=80, n_items=60, events_per_user=3, seed=11)
    truth, k = t.truth, 5
    popular = [f"i{i}" for i in np.argsort(-truth["pop_bias"])[:k]]
    rng = np.random.default_rng(0)

    def by_taste(user):  # knows the planted taste, with noise: the better policy
        u = int(user[1:])
        return [f"i{i}" for i in np.argsort(-(truth["item_vec"] @ truth["taste"][u] + 0.3 * rng.normal(size=60)))[:k]]

    arms = {"stable": ("recommend", 1, lambda user: popular), "canary": ("recommend", 2, by_taste)}
    users = [f"u{u}" for u in range(80)]
    assert [feedback_sim.assign_arm(u, list(arms)) for u in users] == \
        [feedback_sim.assign_arm(u, list(arms)) for u in users]  # a user stays in one arm
    share = np.mean([feedback_sim.assign_arm(f"x{n}", ["a", "b"]) == "a" for n in range(2000)])
    assert 0.45 < share < 0.55
    sim = feedback_sim.simulate_ab(truth, users, arms, str(tmp_path / "sim"), days=3, requests_per_user_day=2)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item_id": i, "item_genres": g}) + "\n"
                             for i, g in zip(t.items["item_id"], t.items["item_genres"])))
    rep, paths = report.run_report(list(sim["logs"].values()), [sim["events"]], str(items), str(tmp_path / "out"),
                                   n_boot=500)
    ab = rep["ab"]
    assert (ab["baseline"], ab["candidate"]) == ("recommend/v1", "recommend/v2")
    true_diff = sim["true_ctr"]["canary"] - sim["true_ctr"]["stable"]
    assert true_diff > 0.05 and ab["significant"]
    assert ab["interval"][0] <= true_diff <= ab["interval"][1]
    rows = {(r["version"], r["day"]): r for r in rep["rows"]}
    assert rows[("recommend/v1", "all")]["coverage"] == pytest.approx(k / 60)  # popularity shows 5 items to all
    assert rows[("recommend/v2", "all")]["coverage"] > 3 * k / 60
    assert rows[("recommend/v1", "all")]["popularity_share"] > rows[("recommend/v2", "all")]["popularity_share"]
    assert rep["organic_events"] == 0 and os.path.exists(paths["html"])
