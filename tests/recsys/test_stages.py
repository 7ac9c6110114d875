"""recsys/stages.py and the blessing, on a filesystem that is not the local disk.

The session fixture ``ram_pipeline`` runs every stage on TensorFlow's in-memory ram:// (standing in
for gs://; Beam reads and writes it through preprocessing/ram_filesystem.py) through the pipeline's
components, each stage reading its inputs only through the artifacts it is given.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from recsys import artifacts as af
from recsys import stages
from recsys.config import load_config

KINDS = (("ingest", "raw", af.RawData), ("preprocess", "preprocessed", af.Preprocessed),
         ("train-retrieval", "model", af.RetrievalModel), ("evaluate", "evaluation", af.Evaluation),
         ("train-ranker", "ranker", af.Ranker), ("train-ranker", "evaluation", af.Evaluation),
         ("export", "exported", af.ExportedModels), ("bless", "blessing", af.Blessing),
         ("push", "pushed", af.PushedModel))


def art(run, task, name, kind):
    return kind.read(run[task][name].uri)


def test_every_artifact_is_on_ram_complete_and_typed(ram_pipeline):
    for task, name, kind in KINDS:
        a = art(ram_pipeline["first"], task, name, kind)
        assert a.uri.startswith(ram_pipeline["root"]) and a.TYPE == kind.TYPE and a.fingerprint, (task, name)
    ev = art(ram_pipeline["first"], "evaluate", "evaluation", af.Evaluation)
    assert ev.metrics()["results"]["two_tower"]["n_queries"] > 0


def test_lineage_links_each_artifact_to_its_inputs(ram_pipeline):
    r = {(t, n): art(ram_pipeline["first"], t, n, k) for t, n, k in KINDS}
    uri = lambda t, n: r[(t, n)].uri  # noqa: E731
    assert r[("preprocess", "preprocessed")].inputs == {"raw": uri("ingest", "raw")}
    assert r[("train-retrieval", "model")].inputs == {"preprocessed": uri("preprocess", "preprocessed")}
    assert r[("evaluate", "evaluation")].inputs == {"model": uri("train-retrieval", "model")}
    assert r[("train-ranker", "ranker")].inputs == {"retrieval": uri("train-retrieval", "model")}
    assert r[("export", "exported")].inputs == {"retrieval": uri("train-retrieval", "model"),
                                                "ranker": uri("train-ranker", "ranker")}
    assert r[("bless", "blessing")].inputs == {"exported": uri("export", "exported"),
                                               "evaluation": uri("evaluate", "evaluation")}
    assert r[("push", "pushed")].inputs == {"exported": uri("export", "exported"), "blessing": uri("bless", "blessing")}


def test_blessed_push_publishes_servable_versions_on_ram(ram_pipeline):
    from recsys.scann_ops import load_scann_ops

    blessing = art(ram_pipeline["first"], "bless", "blessing", af.Blessing)
    assert blessing.blessed and "nothing served yet" in blessing.get("message")
    pushed = art(ram_pipeline["first"], "push", "pushed", af.PushedModel)
    models = pushed.get("models")
    assert pushed.get("pushed") and set(models) == {"retrieval", "retrieval_brute_force", "ranking", "recommend"}
    version = pushed.get("version")
    for name, path in models.items():
        assert path == f"{ram_pipeline['base']}/{name}/{version}"
        assert not [d for d in tf.io.gfile.listdir(f"{ram_pipeline['base']}/{name}") if not d.strip("/").isdigit()]
    load_scann_ops()
    exported = art(ram_pipeline["first"], "export", "exported", af.ExportedModels)
    request = stages.example_request(exported)
    fn = tf.saved_model.load(models["retrieval_brute_force"]).signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    out = fn(**{k: tf.constant(v, specs[k].dtype) for k, v in request.items()})
    assert out["item_ids"].shape[1] > 0 and np.all(np.diff(out["scores"].numpy()[0]) <= 1e-6)


def test_blessing_blocks_a_broken_candidate_and_passes_a_better_one(ram_pipeline):
    """A candidate whose item tower is scrambled is blocked against the served version (nothing is
    pushed); once that broken version is what is served, the real model is blessed against it."""
    cfg, root = ram_pipeline["cfg"], ram_pipeline["root"]
    run = ram_pipeline["first"]
    model = art(run, "train-retrieval", "model", af.RetrievalModel)
    good = art(run, "export", "exported", af.ExportedModels)
    base = f"{root}/models-blessing-test"   # its own serving base path, the real model served as v1
    assert stages.push(good, art(run, "bless", "blessing", af.Blessing), base, f"{root}/t/good", version=1).get("pushed")
    trained, _ = stages.load_retrieval(model, cfg)
    rng = np.random.default_rng(0)
    for v in trained.model.candidate_tower.trainable_variables:  # a deliberately broken candidate
        v.assign(rng.normal(size=v.shape).astype(v.dtype.as_numpy_dtype))
    broken = stages.export(model, None, cfg, f"{root}/t/broken", trained=trained)   # retrieval models only

    verdict = stages.bless(broken, cfg, f"{root}/t/broken-blessing", base)
    assert not verdict.blessed and "served v1" in verdict.get("message")
    served = af.read_json(verdict.path("blessing.json"))["checks"]["vs_served"]["retrieval"]
    assert served["candidate"] < served["served"] and served["passed"] is False
    assert served["difference"]["high"] < 0          # the drop's whole interval is below zero
    assert stages.push(broken, verdict, base, f"{root}/t/broken-push").get("pushed") is False
    assert [d.strip("/") for d in tf.io.gfile.listdir(f"{base}/retrieval")] == ["1"]   # nothing published

    forced = stages.push(broken, None, base, f"{root}/t/forced-push", version=2, force=True)  # broken is served
    assert forced.get("pushed") and forced.get("version") == 2 and "forced" in forced.get("reason")
    verdict = stages.bless(good, cfg, f"{root}/t/good-blessing", base)
    assert verdict.blessed and verdict.get("served_version") == 2, verdict.get("message")


def test_reuse_returns_the_existing_artifact_without_running(ram_pipeline):
    run = ram_pipeline["first"]
    pre, model = art(run, "preprocess", "preprocessed", af.Preprocessed), art(run, "train-retrieval", "model",
                                                                              af.RetrievalModel)
    again, trained = stages.train_retrieval(pre, ram_pipeline["cfg"], model.uri, reuse=True)
    assert trained is None and again.fingerprint == model.fingerprint
    assert stages.plan("train_retrieval", load_config(overrides=["train.epochs=5"]), pre) != model.fingerprint


def test_a_missing_or_mistyped_input_is_one_clear_error(ram_pipeline):
    model_uri = ram_pipeline["first"]["train-retrieval"]["model"].uri
    with pytest.raises(af.ArtifactError, match="no complete Preprocessed"):
        af.Preprocessed.read(f"{ram_pipeline['root']}/nothing-here")
    with pytest.raises(af.ArtifactError, match="not a Preprocessed"):
        af.Preprocessed.read(model_uri)


def test_ingested_item_images_travel_with_the_data_to_the_content_tower(tmp_path):
    from preprocessing.sources import images
    from recsys.config import Config
    from trainer.train import with_item_images

    cfg = Config(workdir=str(tmp_path))
    cfg.data.n_users, cfg.data.n_items, cfg.data.events_per_user = 20, 30, 3
    plain = stages.ingest(cfg, str(tmp_path / "plain"))
    assert plain.get("item_images") is False and not os.path.exists(tmp_path / "plain" / images.IMAGES_FILE)
    cfg.data.item_images = True
    raw = stages.ingest(cfg, str(tmp_path / "raw"))
    assert raw.get("item_images") is True and raw.fingerprint != plain.fingerprint
    ids, pixels = images.read(str(tmp_path / "raw" / images.IMAGES_FILE))
    assert len(ids) == 30 and pixels.dtype == np.uint8
    stages.copy_item_images(raw.uri, str(tmp_path / "pre"))  # what preprocess and add_feedback do
    cfg.retrieval.item_images = "data"
    assert with_item_images(cfg.retrieval, str(tmp_path / "pre")).item_images.endswith(images.IMAGES_FILE)
    assert cfg.retrieval.item_images == "data"  # resolved on a copy
    with pytest.raises(FileNotFoundError, match="data.item_images=true"):
        with_item_images(cfg.retrieval, str(tmp_path / "plain"))


def test_a_model_saved_before_the_pooled_sequence_path_restores_as_it_was_trained(tmp_path):
    """Checkpoints of GRU/transformer towers trained before ``retrieval.seq_keep_pooled`` existed hold the
    encoder alone on the shared tables: their config must rebuild that architecture, not today's default."""
    import json

    from recsys.config import Config

    saved = Config(workdir=str(tmp_path)).to_dict()
    saved["retrieval"]["history_encoder"] = "gru"
    old = {**saved, "retrieval": {k: v for k, v in saved["retrieval"].items()
                                  if k not in ("seq_keep_pooled", "seq_gate", "seq_tables")}}
    for name, payload in (("old", old), ("new", saved)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(payload))
    cfg = Config(workdir=str(tmp_path))
    before = stages.trained_config(af.RetrievalModel(str(tmp_path / "old")), cfg).retrieval
    assert (before.history_encoder, before.seq_keep_pooled, before.seq_tables) == ("gru", False, "shared")
    now = stages.trained_config(af.RetrievalModel(str(tmp_path / "new")), cfg).retrieval
    assert (now.seq_keep_pooled, now.seq_tables) == (Config().retrieval.seq_keep_pooled, Config().retrieval.seq_tables)
