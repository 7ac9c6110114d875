"""The Beam + TF-Transform pipeline on real DirectRunner runs (no mocks)."""
import os

import numpy as np

from preprocessing import pipeline, schema
from preprocessing.sources import tables
from trainer import data


def read_split(version_dir, split):
    spec = data.transform_output(version_dir).transformed_feature_spec()
    rows = []
    for batch in data.dataset(version_dir, split, 4096, spec):
        rows.append({k: v.numpy() for k, v in batch.items()})
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def test_history_never_contains_the_present_or_future(preprocessed):
    for split in ("train", "eval"):
        d = read_split(preprocessed, split)
        hist_ts = d["history_ts"]
        real = d["history_item_ids"] != b""
        assert real.any()
        assert np.all(hist_ts[real] < np.repeat(d["timestamp"][:, None], hist_ts.shape[1], 1)[real])
        assert np.all(np.diff(np.where(real, hist_ts, 0), axis=1)[real[:, 1:] & real[:, :-1]] >= 0), "oldest first"
        # left padded: once real, stays real
        assert np.all(real[:, 1:] >= real[:, :-1])
        assert np.all(d["history_len"] == real.sum(1))


def test_history_is_exactly_the_users_earlier_events(run_cfg, preprocessed):
    events = {}
    for e in tables.read_interactions(os.path.join(run_cfg.path("raw"), tables.INTERACTIONS_FILE)):
        events.setdefault(e["user_id"], []).append(e)
    d = read_split(preprocessed, "eval")
    for n in range(0, len(d["user_id"]), max(1, len(d["user_id"]) // 50)):
        user, ts = d["user_id"][n].decode(), int(d["timestamp"][n])
        past = sorted((e for e in events[user] if e["timestamp"] < ts), key=lambda e: (e["timestamp"], e["item_id"]))
        expected = [e["item_id"] for e in past][-schema.HISTORY_LENGTH:]
        got = [h.decode() for h in d["history_item_ids"][n] if h]
        assert got == expected
        ratings = [float(e.get("rating") or 0.0) for e in past][-schema.HISTORY_LENGTH:]
        real = d["history_item_ids"][n] != b""
        np.testing.assert_allclose(d["history_ratings"][n][real], ratings)  # each history item's own rating
        assert not d["history_ratings"][n][~real].any()


def test_split_is_by_time_and_counts_add_up(preprocessed):
    train, ev = read_split(preprocessed, "train"), read_split(preprocessed, "eval")
    assert train["timestamp"].max() < ev["timestamp"].min()
    stats = pipeline.load_stats(preprocessed)
    assert stats["train"] == len(train["timestamp"]) and stats["eval"] == len(ev["timestamp"])
    assert 0.05 < stats["eval"] / (stats["train"] + stats["eval"]) < 0.15


def test_transformed_features_follow_the_schema(preprocessed):
    d = read_split(preprocessed, "train")
    assert d[schema.T.HISTORY_IDX].shape[1] == schema.HISTORY_LENGTH
    assert d[schema.T.GENRE_IDX].shape[1] == schema.MAX_GENRES
    assert d[schema.T.TITLE_IDX].shape[1] == schema.TITLE_TOKENS
    assert set(np.unique(d[schema.T.HOUR])) <= set(range(24)) and set(np.unique(d[schema.T.WEEKDAY])) <= set(range(7))
    assert abs(float(d[schema.T.PRICE_Z].mean())) < 0.05, "z-scored on the train split"
    pad = d["history_item_ids"] == b""
    assert np.all(d[schema.T.HISTORY_IDX][pad] == -1) and np.all(d[schema.T.HISTORY_IDX][~pad] >= 0)


def test_z_scores_are_held_far_beyond_the_training_range(run_cfg, preprocessed):
    """The event-time z-score is analysed on the train split. Inside its range it is tft.scale_to_z_score; a
    little past it (the eval period) it extrapolates; decades past it (serving "now" long after a log ends) it
    is held at Z_MARGIN past the latest train time instead of growing without bound."""
    import pytest
    import tensorflow as tf

    from preprocessing import transform
    from recsys import steps

    train, ev = read_split(preprocessed, "train"), read_split(preprocessed, "eval")
    z = train[schema.T.TIME_Z]
    assert abs(float(z.mean())) < 1e-3 and abs(float(z.std()) - 1.0) < 1e-3
    assert np.all(ev[schema.T.TIME_Z] > z.max()), "the eval period, just after training, still reads as later"
    request = steps.sample_request(run_cfg, preprocessed)
    layer = data.transform_output(preprocessed).transform_features_layer()

    def time_z(ts: int) -> float:
        raw = {k: tf.constant(v) for k, v in request.items()}
        raw["timestamp"] = tf.constant([ts], tf.int64)
        return float(layer(raw)[schema.T.TIME_Z].numpy()[0])

    last, year = int(train["timestamp"].max()), 365 * 86400
    assert time_z(last) == pytest.approx(float(z.max()), abs=1e-4)
    assert time_z(last + 30 * year) == pytest.approx(float(z.max()) + transform.Z_MARGIN, abs=1e-4)
    assert time_z(last + 60 * year) == time_z(last + 30 * year)


# A rerun on the same raw data gives the same records and vocabularies (and publishes v1 + LATEST):
# tests/pipelines/test_pipeline.py::test_cli_and_pipeline_produce_the_same_artifacts, which reruns
# preprocessing through the CLI's steps beside the pipeline's run.
# Bad rows, dead letters and failed runs: tests/preprocessing/test_bad_input.py
