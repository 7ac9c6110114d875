"""Every bad row is a dead letter with a reason, never a crash or silent damage (issue 16).

One small raw data set holds every kind of bad row at once (each used to crash the pipeline or
pass silently); two real Beam runs on it (one failing, one published) check both the dead letters
and the failed run's behaviour. The other checks need no Beam run or a failing one only.
"""
import glob
import gzip
import json
import os

import pytest

from preprocessing import pipeline
from preprocessing.sources import synthetic, tables
from recsys.config import Config

FUTURE = 4_102_444_800  # 2100-01-01


def _good_raw(raw_dir):
    t = synthetic.generate(n_users=30, n_items=40, events_per_user=6, seed=5)
    tables.write_raw(t, raw_dir)
    return t


def _append(path, lines, gz):
    opener = gzip.open if gz else open
    with opener(path, "ab") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else line.encode())


def _event(**kw):
    row = {"user_id": "u1", "item_id": "i1", "timestamp": 1_600_000_000, "rating": 4.0, "click": 1.0,
           "device": "web"}
    row.update(kw)
    return row


# (raw line, substring of the reason) for each kind of bad interaction
BAD_INTERACTIONS = [
    (json.dumps(_event(timestamp=2 ** 64)) + "\n", "'timestamp'"),                 # beyond int64: was OverflowError
    (b'{"user_id": "u1", "item_id": "i1\xff\xfe", "timestamp": 1600000000}\n', "invalid UTF-8"),  # was a crash
    (json.dumps(_event(rating=99.0)) + "\n", "'rating'"),
    (json.dumps(_event(rating=-5.0)) + "\n", "'rating'"),
    ('{"user_id": "u1", "item_id": "i1", "timestamp": 1600000000, "rating": NaN, "click": 1.0}\n', "finite"),
    ('{"user_id": "u1", "item_id": "i1", "timestamp": 1600000000, "rating": 4.0, "click": Infinity}\n', "finite"),
    (json.dumps(_event(timestamp=FUTURE)) + "\n", "future"),
    ('{"user_id": "u1\\ud800", "item_id": "i1", "timestamp": 1600000000, "rating": 4.0, "click": 1.0}\n',
     "not valid Unicode"),
    (json.dumps(_event(item_id="i39")) + "\n", "unknown item_id"),   # i39's items row is broken below
    ("{not json\n", "invalid JSON"),
    (json.dumps({k: v for k, v in _event().items() if k != "timestamp"}) + "\n", "missing field 'timestamp'"),
]


def _bad_raw(raw):
    """Good synthetic tables plus every kind of bad row (interactions, items, users)."""
    t = _good_raw(raw)
    _append(os.path.join(raw, tables.INTERACTIONS_FILE), [line for line, _ in BAD_INTERACTIONS], gz=True)
    # items.jsonl: i39 re-declared with a price that is not a number, plus a line that is not JSON
    items_path = os.path.join(raw, tables.ITEMS_FILE)
    lines = [line for line in open(items_path, "rb") if not line.startswith(b'{"item_genres"') or b'"i39"' not in line]
    lines += [b'{"item_id": "i39", "item_price": "free"}\n', b"this is not json\n"]
    open(items_path, "wb").writelines(lines)
    _append(os.path.join(raw, tables.USERS_FILE), [b"\xc3\x28 not utf-8\n"], gz=False)
    return t


def test_bad_rows_become_dead_letters_and_a_failed_run_publishes_nothing_and_keeps_them(tmp_path):
    """Two real Beam runs on the same raw tables, which hold every kind of bad row at once.

    1. Too many bad rows (max_bad_fraction=0.1%): a clear error, nothing published, the failed run's dead
       letters kept in ``v1.failed-*``.
    2. The same tables with max_bad_fraction=50%: published as v1 (the failed run's dead letters are still
       there: the next run used to delete them); every bad row is a dead letter with its reason (the first
       three kinds used to crash the pipeline), the valid rows are all in the splits, and the version's
       catalogue holds the valid items only.
    """
    raw = str(tmp_path / "raw")
    t = _bad_raw(raw)
    cfg = Config(workdir=str(tmp_path))
    cfg.data.max_bad_fraction = 0.001
    strict = tmp_path / "strict"
    with pytest.raises(tables.DataError, match="failed validation") as err:
        pipeline.run(cfg, raw, str(strict))
    assert not (strict / "LATEST").exists(), "no version published"
    failed = glob.glob(str(strict / "v1.failed-*" / "dead_letter" / "interactions*.jsonl"))
    assert failed and str(os.path.dirname(os.path.dirname(failed[0]))) in str(err.value)
    failed_stats = json.load(open(os.path.join(os.path.dirname(os.path.dirname(failed[0])), "stats.json")))
    assert sum(1 for f in failed for _ in open(f)) == failed_stats["dead_letters"] >= len(BAD_INTERACTIONS)

    cfg.data.max_bad_fraction = 0.5
    out = pipeline.run(cfg, raw, str(strict))
    assert os.path.basename(out) == "v1" and (strict / "LATEST").read_text() == "v1"
    assert all(os.path.exists(f) for f in failed), "the next run keeps the failed run's dead letters"

    stats = pipeline.load_stats(out)
    dead = [json.loads(line) for f in glob.glob(os.path.join(out, "dead_letter", "interactions*.jsonl"))
            for line in open(f)]
    good_i39 = sum(1 for i in t.interactions["item_id"] if i == "i39")
    assert stats["dead_letters"] == len(BAD_INTERACTIONS) + good_i39 == len(dead) == failed_stats["dead_letters"]
    assert stats["train"] + stats["eval"] == t.num_interactions - good_i39
    for line, why in BAD_INTERACTIONS:
        text = tables.printable(line.encode() if isinstance(line, str) else line).rstrip("\n")
        assert any(d["text"] == text and why in d["reason"] for d in dead), (why, text, dead)
    assert any("\\xff\\xfe" in d["text"] for d in dead), "bad bytes kept visible, never replacement characters"
    assert not any("\ufffd" in d["text"] for d in dead)
    item_dead = [json.loads(line) for f in glob.glob(os.path.join(out, "dead_letter", "items*.jsonl"))
                 for line in open(f)]
    assert sorted(d["reason"].split(":")[0] for d in item_dead) == ["field 'item_price' has type str, expected "
                                                                    "float32", "invalid JSON"]
    assert stats["dead_items"] == 2 and stats["dead_users"] == 1
    catalogue = tables.read_table(os.path.join(out, tables.ITEMS_FILE))
    assert "i39" not in catalogue and len(catalogue) == 39, "the version's catalogue holds the valid items only"


def test_empty_interactions_fail_clearly_and_publish_nothing(tmp_path):
    raw = str(tmp_path / "raw")
    _good_raw(raw)
    with gzip.open(os.path.join(raw, tables.INTERACTIONS_FILE), "wb"):
        pass
    with pytest.raises(tables.DataError, match="holds no interactions"):
        pipeline.run(Config(workdir=str(tmp_path)), raw, str(tmp_path / "pre"))
    assert not os.path.exists(tmp_path / "pre" / "LATEST")


def test_a_log_at_one_single_time_says_why_nothing_is_left_to_train_on(tmp_path):
    raw = str(tmp_path / "raw")
    _good_raw(raw)
    with gzip.open(os.path.join(raw, tables.INTERACTIONS_FILE), "wb") as f:   # every event at the same second
        for n in range(60):
            f.write((json.dumps(_event(user_id=f"u{n % 7}", item_id=f"i{n % 11}")) + "\n").encode())
    with pytest.raises(tables.DataError, match="are the timestamps all the same"):
        pipeline.run(Config(workdir=str(tmp_path)), raw, str(tmp_path / "pre"))
    assert not os.path.exists(tmp_path / "pre" / "LATEST")


def test_missing_raw_table_names_the_step_that_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="recsys data synth"):
        pipeline.run(Config(workdir=str(tmp_path)), str(tmp_path / "nothing"), str(tmp_path / "pre"))


def test_validation_rules_without_beam():
    ok = _event()
    assert tables.validate_interaction(ok) is None
    assert tables.validate_interaction(_event(rating=0.0)) is None, "0 = no explicit rating"
    assert "rating scale" in tables.validate_interaction(_event(rating=0.2))
    assert "future" in tables.validate_interaction(_event(timestamp=2_000), max_timestamp=1_000)
    assert "'click'" in tables.validate_interaction(_event(click=2.0))
    assert "type bool" in tables.validate_interaction(_event(timestamp=True))
    assert "'user_signup_ts'" in tables.validate_user({"user_id": "u", "user_signup_ts": -(2 ** 63) - 1})
    assert "finite" in tables.validate_item({"item_id": "i", "item_price": float("nan")})
    assert tables.parse_json_line(b"[" * 100_000)[1].startswith("invalid JSON"), "deep nesting is a dead letter"
