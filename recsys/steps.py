"""The CLI's composition of the stages (``recsys.stages``) over one run directory (``recsys.layout``).

Used by the CLI, the notebook and the k8s Jobs (which run the CLI). Each function maps the config
to the run's artifact URIs and calls the stage functions the KFP pipeline calls too, so the CLI and
the pipeline produce the same artifacts; only where they live differs.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from typing import Dict, Optional

import numpy as np

from recsys import artifacts as af
from recsys import fileio, stages
from recsys.child import JsonLinesChild
from recsys.config import Config
from recsys.layout import RunLayout


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- data
def make_raw(cfg: Config) -> str:
    """Writes the configured source's raw tables to ``<run>/raw``; returns that directory."""
    return stages.ingest(cfg, RunLayout(cfg).raw).uri


def preprocess(cfg: Config, raw_dir: Optional[str] = None) -> str:
    """A new ``<run>/preprocessed/v<N>`` from ``raw_dir`` (default ``<run>/raw``), then LATEST points at it."""
    from preprocessing import pipeline

    layout = RunLayout(cfg)
    raw = stages.raw_data(raw_dir or layout.raw)
    pre = stages.preprocess(raw, cfg, pipeline.next_version_dir(layout.preprocessed))
    return pipeline.point_latest(layout.preprocessed, pre.uri)


def latest_preprocessed(cfg: Config) -> str:
    from preprocessing import pipeline

    return pipeline.latest(RunLayout(cfg).preprocessed)


# ---------------------------------------------------------------- train + evaluate
def train(cfg: Config, version_dir: Optional[str] = None):
    """Trains the two-tower on ``version_dir`` (default: the latest preprocessing); returns the in-memory model."""
    pre = af.Preprocessed.read(version_dir or latest_preprocessed(cfg))
    _, trained = stages.train_retrieval(pre, cfg, RunLayout(cfg).retrieval)
    return trained


def retrieval_artifact(cfg: Config) -> af.RetrievalModel:
    """The run's trained retrieval model; a one-line error naming the missing step otherwise."""
    layout = RunLayout(cfg)
    if not af.RetrievalModel.exists(layout.retrieval):
        raise FileNotFoundError(f"no trained retrieval model in {layout.retrieval}: run `recsys train` first "
                                f"(same --workdir/--set data.* as the run you mean)")
    return af.RetrievalModel.read(layout.retrieval)


def load_trained(cfg: Config):
    """Rebuilds the retrieval model and restores its best checkpoint."""
    return stages.restore_retrieval(retrieval_artifact(cfg), cfg)


def evaluate(cfg: Config, trained=None) -> Dict:
    """Writes ``<run>/evaluation/retrieval``; returns its results and the catalogue's item vectors."""
    model = retrieval_artifact(cfg)
    if trained is None:
        trained = load_trained(cfg)
    ev = stages.evaluate_retrieval(model, cfg, RunLayout(cfg).retrieval_evaluation, trained=trained)
    return {"results": ev.metrics()["results"], "item_vectors": stages.item_vectors(trained), "artifact": ev}


def sample_request(cfg: Config, version_dir: str, user_id: Optional[str] = None) -> Dict[str, np.ndarray]:
    """A raw query for one eval-period user at the split cutoff (history = everything before it)."""
    return stages.sample_request(af.Preprocessed.read(version_dir), user_id)


# ---------------------------------------------------------------- ranking (second stage)
def train_ranking(cfg: Config, trained=None, rankers=(), gbdt: bool = False) -> Dict:
    """Rankers on retrieval's candidates -> ``<run>/training/ranking`` + ``<run>/evaluation/ranking``."""
    layout = RunLayout(cfg)
    ranker, evaluation, result = stages.train_ranker(retrieval_artifact(cfg), cfg, layout.ranker,
                                                     layout.ranking_evaluation, rankers, gbdt, trained=trained)
    return dict(result or {"results": evaluation.metrics()["results"]}, artifact=ranker)


def has_ranker(cfg: Config) -> bool:
    return af.Ranker.exists(RunLayout(cfg).ranker)


def load_ranker(cfg: Config, trained, name: Optional[str] = None):
    """The trained ranker ``name`` (default: ranking.model) from ``<run>/training/ranking/<name>``."""
    return stages.load_ranker(af.Ranker.read(RunLayout(cfg).ranker), trained, cfg, name or cfg.ranking.model)


# ---------------------------------------------------------------- export -> bless -> push
def export(cfg: Config, trained=None, gate: bool = True, force: bool = False, version: Optional[int] = None,
           staged: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Stages every model (with the ranker when one is trained), blesses it against the served version
    and pushes it into the model base path; returns each pushed model's directory by name (``scann`` and
    ``brute_force`` name the two retrieval models too). Raises ``NotBlessed`` when the gate blocks it.

    ``version`` and ``staged``: the models ``stage_models`` / ``stage_models_in`` already staged for it.
    """
    layout = RunLayout(cfg)
    model = retrieval_artifact(cfg)
    ranker = _trained_ranker(layout)
    version = version or new_export_version(cfg)
    exported = stages.export(model, ranker, cfg, layout.exported(version), trained=trained, staged=staged)
    blessing = None
    if gate and not force:
        evaluation = (af.Evaluation.read(layout.retrieval_evaluation)
                      if af.Evaluation.exists(layout.retrieval_evaluation) else None)
        blessing = stages.bless(exported, cfg, layout.blessing(version), cfg.model_base_path, evaluation)
    pushed = stages.push(exported, blessing, cfg.model_base_path, layout.pushed(version), version,
                         force=force or not gate)
    if not pushed.get("pushed"):
        raise NotBlessed(f"not pushed: {pushed.get('reason')} (details: {layout.blessing(version)}/blessing.json; "
                         f"`recsys export --force` pushes anyway)")
    paths = dict(pushed.get("models"))
    paths["scann"], paths["brute_force"] = paths["retrieval"], paths["retrieval_brute_force"]
    return paths


def new_export_version(cfg: Config) -> int:
    from trainer import export as trainer_export

    return trainer_export.new_version(cfg.export.version)


def _trained_ranker(layout: RunLayout) -> Optional[af.Ranker]:
    """The run's ranker, if one was trained (exports then include ranking and recommend)."""
    return af.Ranker.read(layout.ranker) if af.Ranker.exists(layout.ranker) else None


def stage_models(cfg: Config, version: int, names, trained=None) -> Dict[str, str]:
    """Stages the named models of export ``version`` here; hand them to ``export`` as ``staged``."""
    layout = RunLayout(cfg)
    return stages.export_models(retrieval_artifact(cfg), _trained_ranker(layout), cfg, layout.exported(version),
                                names, trained=trained)


def stage_models_in(worker, cfg: Config, version: int, names) -> None:
    """``stage_models`` in ``worker`` (a ``recsys.background.Worker``), which goes on beside this process;
    ``worker.result()`` is their directories."""
    layout = RunLayout(cfg)
    worker.submit("export_models", cfg, retrieval=retrieval_artifact(cfg).uri, out=layout.exported(version),
                  ranker=getattr(_trained_ranker(layout), "uri", None), names=list(names))


class NotBlessed(RuntimeError):
    """The candidate failed the blessing; nothing was pushed."""


# ---------------------------------------------------------------- continuous training
def served_round(cfg: Config) -> RunLayout:
    """The layout whose models were pushed last: the latest pushed retrain round, else the run itself."""
    layout = RunLayout(cfg)
    if fileio.exists(layout.latest_round_file):
        return layout.round(int(fileio.read_text(layout.latest_round_file).strip()))
    return layout


def retrain_rounds(cfg: Config):
    """The round numbers under ``<run>/retrain`` (pushed or not)."""
    rounds = RunLayout(cfg).path("retrain")
    names = [n.rstrip("/") for n in (fileio.listdir(rounds) if fileio.isdir(rounds) else [])]  # gs:// adds "/"
    return sorted(int(n) for n in names if n.isdigit())


def latest_raw(cfg: Config, previous: Optional[af.RetrievalModel] = None) -> af.RawData:
    """The newest raw data: the last round's (its feedback stays even when its model was blocked), else the
    raw data ``previous`` (default: the served model) was trained on."""
    layout = RunLayout(cfg)
    for n in reversed(retrain_rounds(cfg)):
        if af.RawData.exists(layout.round(n).raw):
            return af.RawData.read(layout.round(n).raw)
    if previous is None:
        previous = af.RetrievalModel.read(served_round(cfg).retrieval)
    return stages.raw_data(stages.preprocessed_of(previous).inputs["raw"])


def retrain(cfg: Config, logs, events, force: bool = False, warm_start: bool = True,
            previous: Optional[af.RetrievalModel] = None) -> Dict:
    """One round of continuous training: the newest raw data (``latest_raw``) + what users did with what they were
    shown (request logs joined with events) -> preprocess -> two-tower warm-started from the served model
    -> evaluation -> the ranker (when the served round had one) -> export -> blessing against the served
    version on the round's fresh data -> push (a running server swaps to the new version by itself).

    This is the ``recsys-retrain`` pipeline (pipelines/retrain_pipeline.py) run in process: the same
    components in the same DAG, their KFP artifacts at ``<run>/retrain/<round>/`` (the run layout's shape).
    Returns the round, the decision and paths (``tasks``: each task's output URIs).
    ``previous``: the model to continue from (default: the served round's). ``force``: the operator's
    override, as `recsys export --force`: no blessing, pushed anyway (outside the pipeline, which never
    pushes without one).
    """
    from pipelines import in_process
    from pipelines.retrain_pipeline import RETRAIN_IMPORTS, RETRAIN_TASKS
    from pipelines.runtime import config_json
    from preprocessing import pipeline
    from trainer import export as trainer_export

    served = served_round(cfg)
    if previous is None:
        if not af.RetrievalModel.exists(served.retrieval):
            raise FileNotFoundError(f"no trained model in {served.retrieval} to continue from: run `recsys train` "
                                    f"and `recsys export` first")
        previous = af.RetrievalModel.read(served.retrieval)
    raw = latest_raw(cfg, previous)
    n = max(retrain_rounds(cfg), default=0) + 1
    layout = RunLayout(cfg).round(n)
    log(f"[retrain] round {n}: continuing from {previous.uri}")
    version = trainer_export.new_version(0)
    uris = {("add-feedback", "with_feedback"): layout.raw,
            ("preprocess", "preprocessed"): pipeline.next_version_dir(layout.preprocessed),
            ("train-retrieval-warm", "model"): layout.retrieval,
            ("evaluate", "evaluation"): layout.retrieval_evaluation,
            ("train-ranker", "ranker"): layout.ranker, ("train-ranker", "evaluation"): layout.ranking_evaluation,
            ("export", "exported"): layout.exported(version), ("bless", "blessing"): layout.blessing(version),
            ("push", "pushed"): layout.pushed(version)}
    params = {"config": config_json(cfg), "artifact_root": "", "serving_model_base_path": cfg.model_base_path,
              "raw_uri": raw.uri, "previous_model_uri": previous.uri, "request_logs": list(logs),
              "events": list(events), "warm_start": bool(warm_start), "with_ranker": af.Ranker.exists(served.ranker)}

    def where(task: str, name: str) -> str:  # KFP Metrics live in the task's metadata: that URI is never written
        return uris.get((task, name)) or layout.path("kfp", task, name)

    try:
        out = in_process.run(RETRAIN_TASKS, params, where, RETRAIN_IMPORTS, skip=("bless", "push") if force else ())
    finally:
        if af.Preprocessed.exists(uris[("preprocess", "preprocessed")]):
            pipeline.point_latest(layout.preprocessed, uris[("preprocess", "preprocessed")])
    if force:
        exported = af.ExportedModels.read(out["export"]["exported"].uri)
        pushed = stages.push(exported, None, cfg.model_base_path, layout.pushed(version), version, force=True)
        blessing = None
    else:
        pushed, blessing = af.PushedModel.read(out["push"]["pushed"].uri), out["bless"]["blessing"].uri
    if pushed.get("pushed"):
        fileio.write_text(layout.latest_round_file, f"{n}\n")
    return {"round": n, "pushed": bool(pushed.get("pushed")), "reason": pushed.get("reason"),
            "version": pushed.get("version", version), "blessing": blessing, "round_dir": layout.run_dir,
            "models": pushed.get("models"), "tasks": {t: {k: a.uri for k, a in o.items() if hasattr(a, "uri")}
                                                       for t, o in out.items()}}


def reload_in_subprocess(model_dir: str, request: Dict[str, np.ndarray]) -> Dict:
    """Calls ``recsys.reload_check`` in a fresh interpreter; returns its decoded outputs."""
    return FreshReloads().reload(model_dir, request).results()[0]


class FreshReloads:
    """Exported models loaded and called in one fresh interpreter (``recsys.reload_check --stdin``:
    TensorFlow and the ScaNN ops, no project model code), beside the caller's work.

    Started early, its seconds of imports overlap other work: the demo starts it before its exports
    exist. ``reload`` names a model and a request; ``results()`` waits for every answer, in order.
    """

    def __init__(self, timeout: float = 300.0):
        self.timeout, self.models, self._files = timeout, [], []
        self._child = JsonLinesChild("recsys.reload_check", "--stdin")

    def reload(self, model_dir: str, request: Dict[str, np.ndarray]) -> "FreshReloads":
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({k: v.tolist() for k, v in request.items()}, f)
        self.models.append(model_dir)
        self._files.append(f.name)
        self._child.send([model_dir, f.name])  # the child reads this line and starts loading
        return self

    def results(self) -> list:
        """Each named model's outputs; closes stdin, so the child exits after the last one."""
        try:
            lines = self._child.finish(self.timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"reloading {self.models} timed out") from None
        finally:
            for path in self._files:
                if os.path.exists(path):
                    os.unlink(path)
        lines = lines[-len(self.models):] if self.models else []  # (after anything else printed to stdout)
        failed = self._child.proc.returncode != 0 or len(lines) != len(self.models)
        failure = self._child.failure() if failed else ""
        self._child.close()
        if failed:
            raise RuntimeError(f"reloading {self.models} failed, {failure}")
        return [json.loads(line) for line in lines]

    def kill(self) -> None:
        self._child.close(kill=True)


def in_process(model_dir: str, request: Dict[str, np.ndarray]) -> Dict:
    import tensorflow as tf

    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    from preprocessing.utf8 import to_bytes, to_str

    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    out = fn(**{k: tf.constant(to_bytes(v) if specs[k].dtype == tf.string else v, specs[k].dtype)
                for k, v in request.items()})
    return {k: to_str(v) if v.dtype == tf.string else v.numpy() for k, v in out.items()}


def explain(cfg: Config, trained, item_vectors: np.ndarray, ranker, request: Dict[str, np.ndarray],
            item_id: Optional[str] = None, out_dir: Optional[str] = None) -> Dict:
    """Top features (integrated gradients) + "because you watched" for one user/item; DCN plot as PNG."""
    from trainer import explain as ex

    return ex.explain_request(cfg, trained, item_vectors, ranker, request, item_id,
                              out_dir or RunLayout(cfg).path("explain"))


def explain_in(worker, cfg: Config, user_id: Optional[str] = None) -> None:
    """``explain`` for the sample request's top item, in ``worker`` from the run's artifacts (the trained
    retrieval model and ranker); ``worker.result()`` is the explanation."""
    layout = RunLayout(cfg)
    worker.submit("explain", cfg, retrieval=retrieval_artifact(cfg).uri, ranker=af.Ranker.read(layout.ranker).uri,
                  user_id=user_id, out_dir=layout.path("explain"))


# ---------------------------------------------------------------- item-to-item: item2vec -> similar_items
def train_similar(cfg: Config, version_dir: Optional[str] = None) -> Dict:
    """item2vec (Meta-Prod2Vec with ``item2vec.side_information``) on the train split -> ``similar_items`` export.

    Writes ``<run>/training/item2vec/`` (item_vectors.npy, item_ids.json, history.json, config.json) and
    ``<model_base_path>/similar_items/<version>``; returns paths, the embeddings and an example item.
    """
    from trainer import data, export as trainer_export, export_similar
    from trainer.models import item2vec

    version_dir = version_dir or latest_preprocessed(cfg)
    catalogue = data.load_catalogue(version_dir)
    sequences = item2vec.user_sequences(version_dir, catalogue)
    log(f"[item2vec] {len(sequences)} user histories, {catalogue.size} items, "
        f"side information {'on' if cfg.item2vec.side_information else 'off'}")
    emb = item2vec.train_item2vec(list(sequences.values()), catalogue, cfg.item2vec, seed=cfg.train.seed, log=log)
    out_dir = RunLayout(cfg).path("training", "item2vec")
    fileio.np_save(fileio.join(out_dir, "item_vectors.npy"), emb.vectors)
    fileio.write_json(fileio.join(out_dir, "item_ids.json"), emb.item_ids.tolist())
    fileio.write_json(fileio.join(out_dir, "history.json"), {"loss": emb.history, "train_seconds": emb.train_seconds},
                      indent=2)
    cfg.save(fileio.join(out_dir, "config.json"))
    example = str(catalogue.item_ids[int(np.argmax(emb.train_counts))])
    t0 = time.time()
    path = export_similar.export_similar_items(catalogue.item_ids, emb.vectors, cfg.model_base_path,
                                               trainer_export.new_version(cfg.export.version), cfg.export,
                                               k=cfg.item2vec.top_k, warmup_ids=[example])
    log(f"[export] similar_items: {path} ({time.time() - t0:.1f}s)")
    return {"path": path, "out_dir": out_dir, "embeddings": emb, "example": example, "catalogue": catalogue}
