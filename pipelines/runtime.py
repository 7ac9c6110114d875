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
from typing import Dict, Sequence

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


_RESTORED: Dict = {}


def _trained(kind, uri: str, stage: str, cfg, model: af.RetrievalModel, *inputs, **extra):
    """The retrieval model restored from its checkpoint once per process, for a stage that reads it (None when
    the stage's output is reused: nothing to load). KFP runs each task in its own process; `recsys retrain`
    runs them all in one, where evaluate, the ranker and export then share one restore."""
    from recsys import stages

    if _reused(kind, uri, stages.plan(stage, cfg, model, *inputs, **extra)):
        return None
    key = (model.uri, model.fingerprint)
    if key not in _RESTORED:
        _RESTORED.clear()  # one model at a time
        _RESTORED[key] = stages.restore_retrieval(model, cfg)
    return _RESTORED[key]


def _stage(kind, stage: str, kfp_out, artifact_root: str, cfg, inputs, run, **extra) -> af.Artifact:
    """One stage into ``kfp_out``: its fingerprint picks the URI (content-addressed under ``artifact_root``),
    ``run(uri)`` produces or reuses the artifact, and the KFP artifact points at it."""
    from recsys import stages

    t0 = time.time()
    fp = stages.plan(stage, cfg, *inputs, **extra)
    uri = _out_uri(kfp_out, kind, fp, artifact_root)
    hit = _reused(kind, uri, fp)
    art = run(uri)
    _emit(kfp_out, art, t0, hit)
    return art


def ingest(config: str, artifact_root: str, raw) -> None:
    from recsys import stages

    cfg = parse_config(config)
    _stage(af.RawData, "ingest", raw, artifact_root, cfg, (), lambda uri: stages.ingest(cfg, uri, reuse=True))


def preprocess(config: str, artifact_root: str, raw, preprocessed) -> None:
    from recsys import stages

    quiet_tf()
    cfg, inp = parse_config(config), af.RawData.read(raw.uri)
    _stage(af.Preprocessed, "preprocess", preprocessed, artifact_root, cfg, (inp,),
           lambda uri: stages.preprocess(inp, cfg, uri, reuse=True))


def add_feedback(config: str, artifact_root: str, raw, request_logs: Sequence[str], events: Sequence[str],
                 with_feedback) -> None:
    """The newest raw data plus request logs joined with events. The logs' and events' names, sizes and
    mtimes are part of the fingerprint: the same locations with more in them are new input."""
    from recsys import stages

    cfg, inp = parse_config(config), stages.raw_data(raw.uri)  # raw tables written by other tools are adopted
    logs, evs = list(request_logs), list(events)
    _stage(af.RawData, "add_feedback", with_feedback, artifact_root, cfg, (inp,),
           lambda uri: stages.add_feedback(inp, cfg, uri, logs, evs, reuse=True),
           files=stages.feedback_files(logs, evs))


def tune(config: str, artifact_root: str, preprocessed, hyperparameters, tune_trials: int = 0) -> str:
    """TFX's Tuner; returns the config every later task runs with: ``config`` with the best trial's settings.

    ``tune_trials`` (a pipeline parameter, so a run's page shows it) replaces ``tune.trials``; 0 tunes nothing:
    the output is marked ``skipped`` and ``config`` passes through unchanged."""
    from recsys import stages

    if tune_trials <= 0:
        hyperparameters.metadata.update({"skipped": True, "overrides": {}})
        stages.log("[tune] skipped (tune_trials=0): the config as given")
        return config
    quiet_tf()
    cfg, pre = parse_config(config), af.Preprocessed.read(preprocessed.uri)
    cfg.tune.trials = int(tune_trials)
    hp = _stage(af.HyperParameters, "tune", hyperparameters, artifact_root, cfg, (pre,),
                lambda uri: stages.tune(pre, cfg, uri, reuse=True))
    hyperparameters.metadata["overrides"] = hp.overrides
    p = hp.properties
    if hp.overrides:
        stages.log(f"[tune] best: trial {p['best_trial']} of {p['trials']} ("
                   + ", ".join(f"{k}={v}" for k, v in hp.overrides.items()) + f"), {p['metric']} {p['best_score']:.4f} "
                   f"vs {p['given_score']:.4f} as given ({p['lead']:+.1%} [{p['lead_low']:+.1%}, {p['lead_high']:+.1%}])")
    else:
        stages.log(f"[tune] the config as given scored best of {p['trials']} trials ({p['metric']} {p['best_score']:.4f})")
    # applied to the config as it came in: tune.trials (set from tune_trials above) is not a later task's concern
    return config_json(stages.tuned(parse_config(config), hp))


def train_retrieval(config: str, artifact_root: str, preprocessed, model, previous=None) -> None:
    """``previous``: the KFP Model to warm-start from (continuous training); it joins the lineage and the
    fingerprint (``stages.train_retrieval``)."""
    from recsys import stages

    quiet_tf()
    cfg, pre = parse_config(config), af.Preprocessed.read(preprocessed.uri)
    warm = af.RetrievalModel.read(previous.uri) if previous is not None else None
    _stage(af.RetrievalModel, "train_retrieval", model, artifact_root, cfg, (pre, warm),
           lambda uri: stages.train_retrieval(pre, cfg, uri, reuse=True, warm_start=warm)[0])


def evaluate(config: str, artifact_root: str, model, evaluation, metrics) -> None:
    from recsys import stages

    quiet_tf()
    cfg, m = parse_config(config), af.RetrievalModel.read(model.uri)
    ev = _stage(af.Evaluation, "evaluate_retrieval", evaluation, artifact_root, cfg, (m,), lambda uri: (
        stages.evaluate_retrieval(m, cfg, uri, reuse=True,
                                  trained=_trained(af.Evaluation, uri, "evaluate_retrieval", cfg, m))))
    _log_metrics(metrics, ev)


def train_ranker(config: str, artifact_root: str, model, ranker, evaluation, metrics,
                 with_ranker: bool = True) -> None:
    """The Ranker and its re-ranking Evaluation (inside the ranker's artifact when content-addressed).

    ``with_ranker=False`` (continuous training from a served version that had no ranker) writes nothing and
    marks both outputs ``skipped``; ``export`` then stages the retrieval models only. A flag, not ``dsl.If``:
    kfp.local cannot run conditions."""
    from recsys import stages

    if not with_ranker:
        for out in (ranker, evaluation):
            out.metadata["skipped"] = True
        stages.log("[ranking] skipped: the served version has no ranker (with_ranker=false)")
        return
    quiet_tf()
    cfg, m = parse_config(config), af.RetrievalModel.read(model.uri)
    made = {}

    def run(uri):
        eval_uri = af.join(uri, "evaluation") if artifact_root else evaluation.uri
        trained = _trained(af.Ranker, uri, "train_ranker", cfg, m, rankers=[cfg.ranking.model], gbdt=False)
        r, made["evaluation"], _ = stages.train_ranker(m, cfg, uri, eval_uri, reuse=True, trained=trained)
        return r

    t0 = time.time()
    _stage(af.Ranker, "train_ranker", ranker, artifact_root, cfg, (m,), run, rankers=[cfg.ranking.model], gbdt=False)
    _emit(evaluation, made["evaluation"], t0, ranker.metadata["reused"])
    _log_metrics(metrics, made["evaluation"])


def export(config: str, artifact_root: str, model, ranker, exported) -> None:
    from recsys import stages

    quiet_tf()
    cfg, m = parse_config(config), af.RetrievalModel.read(model.uri)
    r = None if ranker.metadata.get("skipped") else af.Ranker.read(ranker.uri)
    _stage(af.ExportedModels, "export", exported, artifact_root, cfg, (m, r),
           lambda uri: stages.export(m, r, cfg, uri, reuse=True, trained=_trained(af.ExportedModels, uri, "export",
                                                                                   cfg, m, r)))


def bless(config: str, artifact_root: str, exported, evaluation, serving_model_base_path: str, blessing) -> bool:
    """Never cached across runs by content alone: the served version is part of its fingerprint."""
    from recsys import blessing as bl, stages

    quiet_tf()
    cfg = parse_config(config)
    ex, ev = af.ExportedModels.read(exported.uri), af.Evaluation.read(evaluation.uri)
    served = bl.served_version(serving_model_base_path, ex.names)
    b = _stage(af.Blessing, "bless", blessing, artifact_root, cfg, (ex, ev),
               lambda uri: stages.bless(ex, cfg, uri, serving_model_base_path, ev, reuse=True), served=served)
    return b.blessed


def push(exported, blessing, serving_model_base_path: str, pushed) -> Dict:
    """TFX's Pusher: copies the staged models into the serving base path only when blessed."""
    from recsys import stages

    t0 = time.time()
    ex, b = af.ExportedModels.read(exported.uri), af.Blessing.read(blessing.uri)
    p = stages.push(ex, b, serving_model_base_path, pushed.uri)
    _emit(pushed, p, t0, False)
    return dict(p.properties)
