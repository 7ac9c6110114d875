"""Exports: TF Serving layout, atomic writes, fresh-process reload, ScaNN vs brute force."""
import os

import numpy as np
import pytest
import tensorflow as tf

from contracts.warmup import WARMUP_FILE
from recsys import steps
from trainer import export


def test_layout_and_warmup(exported, run_cfg):
    for name in ("retrieval", "retrieval_brute_force"):
        model_dir = os.path.join(run_cfg.model_base_path, name)
        versions = os.listdir(model_dir)
        assert versions == ["1"], "integer version only, no temporary leftovers"
        assert os.path.exists(os.path.join(model_dir, "1", "saved_model.pb"))
        warmup = os.path.join(model_dir, "1", WARMUP_FILE)
        from tensorflow_serving.apis import prediction_log_pb2

        logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(warmup)]
        assert logs and "user_id" in logs[0].predict_log.request.inputs
        # signatures only: Keras' own per-layer call traces are not saved (export._signatures_only)
        from tensorflow.core.protobuf import saved_model_pb2

        sm = saved_model_pb2.SavedModel.FromString(open(os.path.join(model_dir, "1", "saved_model.pb"), "rb").read())
        names = [f.signature.name for f in sm.meta_graphs[0].graph_def.library.function]
        assert names and not [n for n in names if "layer_call" in n]


def test_fresh_process_returns_same_top10_as_in_process(exported):
    request = exported["request"]
    reloads = steps.FreshReloads()  # one fresh interpreter, both models in order (as the demo does)
    for kind in ("scann", "brute_force"):
        reloads.reload(exported["paths"][kind], request)
    for kind, fresh in zip(("scann", "brute_force"), reloads.results()):
        here = steps.in_process(exported["paths"][kind], request)
        assert fresh["item_ids"][0][:10] == here["item_ids"][0][:10].astype(str).tolist()
        np.testing.assert_allclose(fresh["scores"][0][:10], here["scores"][0][:10], rtol=1e-4)
        assert np.all(np.diff(here["scores"][0]) <= 1e-6), "sorted by score"


def test_versions_are_immutable_and_written_atomically(exported, run_cfg, tmp_path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    sig = tf.function(lambda x: {"y": x * module.v}).get_concrete_function(tf.TensorSpec([None], tf.float32))
    path = export.save_atomically(module, {"serving_default": sig}, str(tmp_path), "m", 7)
    assert os.listdir(os.path.join(tmp_path, "m")) == ["7"] and path.endswith("/m/7")
    try:
        export.save_atomically(module, {"serving_default": sig}, str(tmp_path), "m", 7)
        raise AssertionError("overwrote an existing version")
    except FileExistsError:
        pass


def test_scann_top10_overlaps_brute_force(exported, run_cfg, preprocessed):
    """Average top-10 overlap over many real eval queries (through the exported signatures)."""
    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    scann = tf.saved_model.load(exported["paths"]["scann"]).signatures["serving_default"]
    brute = tf.saved_model.load(exported["paths"]["brute_force"]).signatures["serving_default"]
    raw_queries = _eval_requests(run_cfg, preprocessed, n=200)
    a = scann(**raw_queries)["item_ids"].numpy()[:, :10]
    b = brute(**raw_queries)["item_ids"].numpy()[:, :10]
    overlap = np.mean([len(set(x) & set(y)) / 10.0 for x, y in zip(a, b)])
    assert overlap >= 0.9, overlap


def _eval_requests(cfg, version_dir, n):
    """Raw query features for n users at the split cutoff, batched."""
    from preprocessing import pipeline, requests
    from preprocessing.sources import tables

    cutoff = pipeline.load_stats(version_dir)["split_cutoff_ts"]
    users = tables.read_table(os.path.join(cfg.path("raw"), tables.USERS_FILE))
    events = {}
    for e in tables.read_interactions(os.path.join(cfg.path("raw"), tables.INTERACTIONS_FILE)):
        events.setdefault(e["user_id"], []).append(e)
    batches = [requests.query_request(users[u], events.get(u, []), cutoff, "web") for u in sorted(users)[:n]]
    return {k: tf.constant(np.concatenate([b[k] for b in batches])) for k in batches[0]}


def test_saved_model_cli_lists_the_serving_signature(exported):
    import subprocess
    import sys

    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--all", "--dir", exported["paths"]["brute_force"]],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "signature_def['serving_default']" in out.stdout and "item_ids" in out.stdout
    assert "history_item_ids" in out.stdout and "signature_def['query_embedding']" in out.stdout
    # the ScaNN model's signature is readable without loading its ops
    out = subprocess.run([cli, "show", "--dir", exported["paths"]["scann"], "--tag_set", "serve",
                          "--signature_def", "serving_default"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "item_ids" in out.stdout and "DT_STRING" in out.stdout


def test_scann_searches_leaves_enough_for_the_k_it_returns():
    """ScaNN returns at most the points in the leaves it searches: a large k widens the search, a small one
    keeps the defaults (sqrt(n) leaves, 10% of them but ~5000 items' worth)."""
    from recsys.config import ExportConfig
    from trainer.export import scann_leaves

    ecfg = ExportConfig()
    assert scann_leaves(1_000_000, ecfg, k=100) == (1000, 100)
    leaves, to_search = scann_leaves(1_000_000, ecfg, k=200_000)
    assert leaves == 1000 and to_search * (1_000_000 / leaves) >= 2 * 200_000
    assert scann_leaves(1500, ecfg, k=10) == (38, 38), "a small catalogue is searched exhaustively"


@pytest.mark.parametrize("n", [5, 15, 300])
def test_index_on_a_tiny_catalogue_answers_exactly_with_at_most_n_items(n):
    """ScaNN's hashing codebooks need 16+ items (a 15-item shop once failed its export); a small catalogue is
    scored exactly (still a ScaNN searcher) and k is capped at the catalogue's size, for ScaNN and brute force."""
    from recsys.config import ExportConfig

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    ids = np.array([f"i{i}" for i in range(n)], dtype=object)
    queries = rng.normal(size=(3, 8)).astype(np.float32)
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :min(100, n)]
    for kind in ("scann", "brute_force"):
        scores, got = export.build_index(kind, ids, vectors, 100, ExportConfig())(tf.constant(queries))
        assert got.shape == (3, min(100, n)), kind
        assert [[x.decode() for x in row] for row in got.numpy()[:, :10]] == \
            [[f"i{i}" for i in row] for row in expected[:, :10]], kind


@pytest.mark.parametrize("kind", ["scann", "brute_force"])
def test_index_skips_left_out_items_and_keeps_catalogue_positions(kind):
    """NaN rows (items trainer/unseen_items.py leaves out) are not indexed; without ids the index answers with
    the remaining items' catalogue positions, which the recommend graph gathers features by."""
    from recsys.config import ExportConfig

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    left_out = np.arange(0, 40, 3)
    queries = np.abs(rng.normal(size=(4, 8))).astype(np.float32)
    vectors[left_out] = 10.0  # would top every query if it were indexed
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")
    vectors[left_out] = np.nan
    assert export.indexed(vectors) == 40 - len(left_out)
    expected = np.array([[i for i in row if i not in left_out] for row in expected])
    _, positions = export.build_index(kind, None, vectors, 100, ExportConfig())(tf.constant(queries))
    assert positions.shape == (4, 40 - len(left_out))
    np.testing.assert_array_equal(positions.numpy()[:, :10], expected[:, :10])
    ids = np.array([f"i{i}" for i in range(40)], dtype=object)
    _, got = export.build_index(kind, ids, vectors, 5, ExportConfig())(tf.constant(queries))
    assert [[x.decode() for x in row] for row in got.numpy()] == [[f"i{i}" for i in row[:5]] for row in expected]
    with pytest.raises(ValueError, match="no item to index"):
        export.build_index(kind, ids[:3], np.full((3, 8), np.nan, np.float32), 5, ExportConfig())
