"""preprocessing/sources/profile.py: the raw tables' statistics and the quiet problems named at ingest."""
import json
import os

import pytest

from preprocessing.sources import profile
from preprocessing.sources.tables import RawTables

DAY = 86400


def tables(events, items=None):
    """``events``: (user, item, timestamp, rating) tuples."""
    users, its, ts, ratings = (list(c) for c in zip(*events))
    items = items or sorted(set(its))
    return RawTables(
        users={"user_id": sorted(set(users))},
        items={"item_id": items, "item_title": [f"t{i}" if n % 2 == 0 else "" for n, i in enumerate(items)],
               "item_genres": [""] * len(items), "item_price": [0.0] * len(items), "item_release_ts": [0] * len(items)},
        interactions={"user_id": users, "item_id": its, "timestamp": ts, "rating": ratings,
                      "click": [1.0 if r >= 4 or r == 0 else 0.0 for r in ratings], "device": ["web"] * len(users)})


def test_counts_shares_and_distributions_on_a_hand_built_log():
    t0 = 1_700_000_000
    ev = [("a", "x", t0, 5.0), ("a", "y", t0 + DAY, 3.0), ("a", "x", t0 + 2 * DAY, 4.0), ("a", "x", t0 + 2 * DAY, 4.0),
          ("b", "y", t0 + 3 * DAY, 0.0), ("c", "z", t0 + 4 * DAY, 2.0)]
    p = profile.profile(tables(ev, items=["x", "y", "z", "w"]))
    assert (p["events"], p["users"], p["items_in_log"]) == (6, 3, 3)
    assert p["repeat_events"] == 2 and p["exact_duplicates"] == 1, "a re-watch is a repeat; the same second twice a duplicate"
    assert p["density"] == pytest.approx(4 / 9)
    assert p["events_per_user"]["max"] == 4 and p["events_per_user"]["median"] == 1
    assert p["users_with_one_event"] == pytest.approx(2 / 3)
    assert p["top_user"] == {"user_id": "a", "event_share": pytest.approx(4 / 6)}
    assert p["time"]["span_days"] == pytest.approx(4.0) and p["time"]["distinct_seconds"] == 5
    assert p["ratings"]["rated_share"] == pytest.approx(5 / 6) and p["ratings"]["mean"] == pytest.approx(18 / 5)
    assert p["ratings"]["histogram"] == {"2": 1, "3": 1, "4": 2, "5": 1}
    assert p["catalogue"] == {"items": 4, "never_in_log": 1, "with_title": 0.5, "with_genres": 0.0,
                              "with_price": 0.0, "with_release": 0.0}
    assert json.loads(json.dumps(p)) == p, "JSON as it is"
    even = profile.profile(tables([(f"u{k}", f"i{k % 4}", t0 + k, 0.0) for k in range(40)]))
    assert even["item_popularity_gini"] == pytest.approx(0.0) and even["ratings"]["mean"] is None
    assert "no ratings (implicit)" in profile.summary(even)


def test_a_clean_log_has_no_problems_and_each_quiet_problem_gets_its_line():
    t0 = 1_700_000_000
    clean = [(f"u{u}", f"i{(u * 7 + k) % 50}", t0 + u * 1000 + k * DAY, float(1 + (u + k) % 5))
             for u in range(40) for k in range(6)]
    assert profile.problems(profile.profile(tables(clean))) == []

    bot = clean + [("u0", f"i{k % 50}", t0 + k * 60, 3.0) for k in range(200)]
    assert _problem(bot, "user 'u0' has")
    assert _problem(clean + clean[:10], "repeat an earlier one exactly")
    imported = [(u, i, t0, r) for u, i, _, r in clean]               # every event stamped with the import time
    assert _problem(imported, "share their second with 100+ others")
    once = [(f"v{u}", f"i{u % 50}", t0 + u, 4.0) for u in range(100)] + clean
    assert _problem(once, "of users have one event")
    assert _problem([(u, i, ts, 5.0) for u, i, ts, _ in clean], "every rating is 5")


def _problem(events, text):
    lines = profile.problems(profile.profile(tables(events)))
    return len(lines) == 1 and text in lines[0]


def test_ingest_writes_the_statistics_beside_the_raw_tables_and_says_what_it_found(tmp_path, capsys):
    from recsys import artifacts as af
    from recsys import stages
    from recsys.config import Config

    log = tmp_path / "log"
    log.mkdir()
    rows = [f"u{u},i{(u + k) % 30},{1_700_000_000 + u * 100 + k * DAY}" for u in range(30) for k in range(5)]
    rows += [f"bot,i{k % 30},{1_700_000_000 + k}" for k in range(100)]
    (log / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n", encoding="utf-8")
    cfg = Config(workdir=str(tmp_path / "runs"))
    cfg.data.source, cfg.data.path = "csv", str(log)
    raw = stages.ingest(cfg, str(tmp_path / "raw"))
    with open(os.path.join(raw.uri, profile.STATISTICS_FILE), encoding="utf-8") as f:
        stats = json.load(f)
    assert stats["events"] == 250 and stats["top_user"]["user_id"] == "bot" and len(stats["problems"]) == 1
    assert os.path.getsize(os.path.join(raw.uri, profile.PLOT_FILE)) > 10_000
    assert af.RawData.read(raw.uri).get("data_problems") == stats["problems"]
    out = capsys.readouterr().out
    assert "[data] 31 users x 30 items" in out and "[data] warning: user 'bot' has 40.0% of all events" in out

    cfg.data.statistics_plot = False
    raw = stages.ingest(cfg, str(tmp_path / "raw2"))
    assert os.path.exists(os.path.join(raw.uri, profile.STATISTICS_FILE))
    assert not os.path.exists(os.path.join(raw.uri, profile.PLOT_FILE))


def test_a_feedback_slice_is_checked_against_the_data_it_joins():
    t0 = 1_700_000_000
    catalogue = {f"i{k}" for k in range(50)}
    fresh = [{"user_id": f"u{u}", "item_id": f"i{u % 50}", "timestamp": t0 + 10 * u, "rating": 0.0, "click": 1.0}
             for u in range(60)]
    stats, lines = profile.new_events(fresh, catalogue, last_ts=t0 - 1)
    assert stats["events"] == 60 and stats["unknown_item_share"] == 0.0
    assert lines == [], "one event per user is what a short slice has, not a problem"
    renamed = [dict(r, item_id=f"sku-{r['item_id']}") for r in fresh]
    (line,) = profile.new_events(renamed, catalogue, last_ts=t0 - 1)[1]
    assert "100% of the new events name items the catalogue does not have (e.g. 'sku-i0')" in line
    (line,) = profile.new_events(fresh, catalogue, last_ts=t0 + 10_000)[1]
    assert "100% of the new events are older than the latest event already there" in line
    assert profile.new_events([], catalogue, last_ts=t0) == ({"events": 0, "unknown_item_share": 0.0}, [])


def test_the_latest_event_of_a_raw_artifact_comes_from_its_statistics(tmp_path):
    assert profile.last_event_time(str(tmp_path)) is None
    (tmp_path / profile.STATISTICS_FILE).write_text(json.dumps({"time": {"last": 100}}))
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / profile.STATISTICS_FILE).write_text(json.dumps({"time": {"last": 90},
                                                                             "appended_to_last_ts": 120}))
    assert profile.last_event_time(str(tmp_path)) == 120


def test_drawing_the_profile_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """Ingest runs inside notebooks: a backend switch there would end every inline plot after it."""
    import matplotlib

    t = tables([(f"u{k % 7}", f"i{k % 5}", 1_700_000_000 + k * 3600, float(1 + k % 5)) for k in range(60)])
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        path = profile.plot(profile.profile(t), str(tmp_path / "p.png"))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
