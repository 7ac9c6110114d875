"""What each pipeline component runs inside its container: one ``recsys.stages`` call between KFP artifacts.

Kept out of the components so each component's serialized source stays a few lines and this logic is
unit-testable without KFP. A stage's artifact lives at the KFP output artifact's URI, or, when the
pipeline has an ``artifact_root``, at ``<artifact_root>/<type>/<fingerprint>``: content-addressed, so a
re-run whose stage inputs, config slice and code are unchanged finds the complete artifact there and
reuses it (the cache that also works under ``run-local``, where KFP's own cache does not exist). The
output KFP artifact then points at that URI, so lineage in the KFP/Vertex UI shows the real location.
"""
from __future__ import annotations

import json
import time
from typing import Dict, List, Optional, Sequence

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)
from recsys import artifacts as af
from recsys.config import Config, from_dict, load_config

# Tiny synthetic sizes for `run-local` and tests: the whole pipeline in a few minutes on 2 cores.
# In-sample ranker candidates: at this size the out-of-fold retriever would see too few events to matter.
TINY_OVERRIDES = ("data.n_users=200", "data.n_items=150", "data.events_per_user=20", "train.epochs=1",
                  "train.batch_size=256", "ranking.epochs=1", "ranking.candidates=in_sample", "gate.min_lift=1.0")


def resolve_config(config_file: str = "", overrides: Sequence[str] = ()) -> Config:
    """The same resolution as the `recsys` CLI: defaults <- config file <- ``key=value`` overrides."""
    return load_config(config_file or None, list(overrides or ()))


def config_json(cfg: Config) -> str:
    """The pipeline parameter that carries the whole config (part of every task's cache key)."""
    d = cfg.to_dict()
    d.pop("workdir", None)
    return json.dumps(d, sort_keys=True)


def parse_config(text: str) -> Config:
    return from_dict(json.loads(text) if text else {})


def quiet_tf() -> None:
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)


def _out_uri(kfp_artifact, kind, fingerprint: str, artifact_root: str) -> str:
    return af.join(artifact_root, kind.TYPE, fingerprint) if artifact_root else kfp_artifact.uri


def _emit(kfp_artifact, art: af.Artifact, t0: float, reused: bool) -> None:
    """Points the KFP artifact at the stage's artifact and attaches its record (lineage, fingerprint)."""
    kfp_artifact.uri = art.uri
    kfp_artifact.metadata.update(art.kfp_metadata())
    kfp_artifact.metadata["reused"] = reused
    kfp_artifact.metadata["seconds"] = round(time.time() - t0, 1)


def _reused(kind, uri: str, fp: str) -> bool:
    return kind.exists(uri) and kind.read(uri).fingerprint == fp


def _log_metrics(metrics, evaluation: af.Evaluation) -> None:
    for name, value in evaluation.properties.items():
        if isinstance(value, float):
            metrics.log_metric(name, value)


def ingest(config: str, artifact_root: str, raw) -> None:
    from recsys import stages

    cfg, t0 = parse_config(config), time.time()
    fp = stages.plan("ingest", cfg)
    uri = _out_uri(raw, af.RawData, fp, artifact_root)
    hit = _reused(af.RawData, uri, fp)
    _emit(raw, stages.ingest(cfg, uri, reuse=True), t0, hit)


def preprocess(config: str, artifact_root: str, raw, preprocessed) -> None:
    from recsys import stages

    quiet_tf()
    cfg, t0 = parse_config(config), time.time()
    inp = af.RawData.read(raw.uri)
    fp = stages.plan("preprocess", cfg, inp)
    uri = _out_uri(preprocessed, af.Preprocessed, fp, artifact_root)
    hit = _reused(af.Preprocessed, uri, fp)
    _emit(preprocessed, stages.preprocess(inp, cfg, uri, reuse=True), t0, hit)


def train_retrieval(config: str, artifact_root: str, preprocessed, model) -> None:
    from recsys import stages

    quiet_tf()
    cfg, t0 = parse_config(config), time.time()
    pre = af.Preprocessed.read(preprocessed.uri)
    fp = stages.plan("train_retrieval", cfg, pre)
    uri = _out_uri(model, af.RetrievalModel, fp, artifact_root)
    hit = _reused(af.RetrievalModel, uri, fp)
    art, _ = stages.train_retrieval(pre, cfg, uri, reuse=True)
    _emit(model, art, t0, hit)


def evaluate(config: str, artifact_root: str, model, evaluation, metrics) -> None:
    from recsys import stages

    quiet_tf()
    cfg, t0 = parse_config(config), time.time()
    m = af.RetrievalModel.read(model.uri)
    fp = stages.plan("evaluate_retrieval", cfg, m)
    uri = _out_uri(evaluation, af.Evaluation, fp, artifact_root)
    hit = _reused(af.Evaluation, uri, fp)
    ev = stages.evaluate_retrieval(m, cfg, uri, reuse=True)
    _emit(evaluation, ev, t0, hit)
    _log_metrics(metrics, ev)


def train_ranker(config: str, artifact_root: str, model, ranker, evaluation, metrics) -> None:
    from recsys import stages

    quiet_tf()
    cfg, t0 = parse_config(config), time.time()
    m = af.RetrievalModel.read(model.uri)
    fp = stages.plan("train_ranker", cfg, m, rankers=[cfg.ranking.model], gbdt=False)
    uri = _out_uri(ranker, af.Ranker, fp, artifact_root)
    eval_uri = af.join(uri, "evaluation") if artifact_root else evaluation.uri
    hit = _reused(af.Ranker, uri, fp)
    r, ev, _ = stages.train_ranker(m, cfg, uri, eval_uri, reuse=True)
    _emit(ranker, r, t0, hit)
    _emit(evaluation, ev, t0, hit)
    _log_metrics(metrics, ev)


def export(config: str, artifact_root: str, model, ranker, exported) -> None:
    from recsys import stages

    quiet_tf()
    cfg, t0 = parse_config(config), time.time()
    m, r = af.RetrievalModel.read(model.uri), af.Ranker.read(ranker.uri)
    fp = stages.plan("export", cfg, m, r)
    uri = _out_uri(exported, af.ExportedModels, fp, artifact_root)
    hit = _reused(af.ExportedModels, uri, fp)
    _emit(exported, stages.export(m, r, cfg, uri, reuse=True), t0, hit)


def bless(config: str, artifact_root: str, exported, evaluation, serving_model_base_path: str, blessing) -> bool:
    """Never cached across runs by content alone: the served version is part of its fingerprint."""
    from recsys import blessing as bl, stages

    quiet_tf()
    cfg, t0 = parse_config(config), time.time()
    ex, ev = af.ExportedModels.read(exported.uri), af.Evaluation.read(evaluation.uri)
    served = bl.served_version(serving_model_base_path, ex.names)
    fp = stages.plan("bless", cfg, ex, ev, served=served)
    uri = _out_uri(blessing, af.Blessing, fp, artifact_root)
    hit = _reused(af.Blessing, uri, fp)
    b = stages.bless(ex, cfg, uri, serving_model_base_path, ev, reuse=True)
    _emit(blessing, b, t0, hit)
    return b.blessed


def push(exported, blessing, serving_model_base_path: str, pushed) -> Dict:
    """TFX's Pusher: copies the staged models into the serving base path only when blessed."""
    from recsys import stages

    t0 = time.time()
    ex, b = af.ExportedModels.read(exported.uri), af.Blessing.read(blessing.uri)
    out = pushed.uri
    p = stages.push(ex, b, serving_model_base_path, out)
    _emit(pushed, p, t0, False)
    return dict(p.properties)


def overrides_list(values: Optional[List[str]]) -> List[str]:
    return [v for v in (values or []) if v]
