"""The pipeline steps as plain functions over directories: used by the CLI, the notebook and pipelines/.

data -> preprocess -> train (+ evaluate) -> export -> verify. Each step reads the
previous step's files, so any step can run alone or on another machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, Optional

import numpy as np

from recsys.config import Config


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- data
def make_raw(cfg: Config) -> str:
    """Writes the configured source's raw tables to ``<run>/raw``; returns that directory."""
    from preprocessing.sources import load_source, write_raw

    raw_dir = cfg.path("raw")
    t0 = time.time()
    tables = load_source(cfg.data, dead_letter_path=os.path.join(raw_dir, "dead_letter", "source.jsonl"))
    write_raw(tables, raw_dir)
    cfg.save(os.path.join(raw_dir, "config.json"))
    dead = f", {len(tables.dead_letters)} malformed rows -> {raw_dir}/dead_letter/" if tables.dead_letters else ""
    log(f"[data] {cfg.data.source}: {tables.num_interactions} interactions, {len(tables.users['user_id'])} users, "
        f"{len(tables.items['item_id'])} items in {time.time() - t0:.1f}s -> {raw_dir}{dead}")
    return raw_dir


def preprocess(cfg: Config, raw_dir: Optional[str] = None) -> str:
    from preprocessing import pipeline

    version_dir = pipeline.run(cfg, raw_dir or cfg.path("raw"), cfg.path("preprocessed"))
    cfg.save(os.path.join(version_dir, "config.json"))
    return version_dir


def latest_preprocessed(cfg: Config) -> str:
    from preprocessing import pipeline

    return pipeline.latest(cfg.path("preprocessed"))


# ---------------------------------------------------------------- train + evaluate
def train(cfg: Config, version_dir: Optional[str] = None):
    from trainer import preflight
    from trainer import train as trainer_train

    version_dir = version_dir or latest_preprocessed(cfg)
    preflight.check(version_dir)  # fail in seconds, not after training, on what the exports cannot hold
    return trainer_train.train_retrieval(version_dir, cfg)


def load_trained(cfg: Config, version_dir: Optional[str] = None):
    """Rebuilds the retrieval model and restores its best checkpoint."""
    from trainer import train as trainer_train

    version_dir = version_dir or latest_preprocessed(cfg)
    out_dir = cfg.path("training", "retrieval")
    model, sizes, catalogue, stats, tft_output = trainer_train.build_retrieval(version_dir, cfg, with_metrics=False)
    ckpt = os.path.join(out_dir, "checkpoints", "best.weights")
    model.load_weights(ckpt).expect_partial()
    return trainer_train.TrainedRetrieval(model, sizes, catalogue, stats, tft_output, {}, 0.0, out_dir)


def evaluate(cfg: Config, trained, version_dir: Optional[str] = None) -> Dict:
    from trainer import evaluate_retrieval as er

    version_dir = version_dir or latest_preprocessed(cfg)
    t0 = time.time()
    candidates = trained.catalogue.transformed(trained.tft_output.transform_features_layer())
    item_vectors = er.item_vectors(trained.model.candidate_tower, candidates)
    details: Dict = {}
    results = er.evaluate(version_dir, lambda b: trained.model.query_tower(b), item_vectors, trained.catalogue,
                          trained.stats, cfg, details=details)
    log(er.report(results, tuple(cfg.eval.ks)))
    path = os.path.join(trained.out_dir, "metrics.json")
    er.write_metrics(results, path, {"eval_seconds": time.time() - t0, "train_seconds": trained.train_seconds,
                                     "exclude_seen": cfg.eval.exclude_seen, "baseline_tuning": details.get("tuning"),
                                     "repeat_events_left_out": details.get("n_repeat_left_out"),
                                     "eval_events": details.get("n_eval_events")})
    log(f"[evaluate] metrics -> {path}")
    return {"results": results, "item_vectors": item_vectors}


# ---------------------------------------------------------------- export + verify
def sample_request(cfg: Config, version_dir: str, user_id: Optional[str] = None) -> Dict[str, np.ndarray]:
    """A raw query for one eval-period user at the split cutoff (history = everything before it)."""
    from preprocessing import pipeline, requests
    from preprocessing.sources import tables

    raw_dir = cfg.path("raw")
    cutoff = pipeline.load_stats(version_dir)["split_cutoff_ts"]
    users = tables.read_table(os.path.join(raw_dir, tables.USERS_FILE))
    events: Dict[str, list] = {}
    for e in tables.read_interactions(os.path.join(raw_dir, tables.INTERACTIONS_FILE)):
        events.setdefault(e["user_id"], []).append(e)
    if user_id is None:  # the most active user with events on both sides of the cutoff
        both = [u for u, ev in events.items() if min(x["timestamp"] for x in ev) < cutoff <= max(
            x["timestamp"] for x in ev)]
        user_id = max(both or events, key=lambda u: (len(events[u]), u))
    evs = events.get(user_id, [])
    device = next((e.get("device") or "unknown" for e in evs if e["timestamp"] >= cutoff), "unknown")
    return requests.query_request(users.get(user_id, {"user_id": user_id}), evs, cutoff, device,
                                  history_length=_history_length(version_dir))


def _history_length(version_dir: str) -> int:
    """The history length a preprocessing version was written with (preprocess.history_length then)."""
    from preprocessing import schema
    from trainer import data

    return schema.history_length_of(data.transform_output(version_dir).transformed_feature_spec())


def export(cfg: Config, trained, item_vectors: np.ndarray, request: Dict[str, np.ndarray]) -> Dict[str, str]:
    from trainer import export as trainer_export

    from trainer import publish

    version = trainer_export.new_version(cfg.export.version)
    paths = {}
    with publish.export_set(cfg.model_base_path):  # both models appear together (trainer/publish.py)
        for kind in ("scann", "brute_force"):
            t0 = time.time()
            paths[kind] = trainer_export.export_retrieval(
                trained.tft_output, trained.model.query_tower, trained.catalogue.item_ids, item_vectors,
                cfg.model_base_path, version, cfg.export, kind=kind, warmup=request)
            log(f"[export] {kind}: {paths[kind]} ({time.time() - t0:.1f}s)")
    return paths


def reload_in_subprocess(model_dir: str, request: Dict[str, np.ndarray]) -> Dict:
    """Calls ``recsys.reload_check`` in a fresh interpreter; returns its decoded outputs."""
    payload = {k: v.tolist() for k, v in request.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
    try:
        proc = subprocess.run([sys.executable, "-m", "recsys.reload_check", model_dir, f.name],
                              capture_output=True, text=True, timeout=300)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"reloading {model_dir} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


# ---------------------------------------------------------------- ranking (second stage) + recommend
def train_ranking(cfg: Config, trained, item_vectors: np.ndarray, version_dir: Optional[str] = None,
                  rankers=(), gbdt: bool = False) -> Dict:
    """Ranking pairs from retrieval's candidates -> rankers (+ GBDT) -> re-ranking table; see trainer/train_ranking."""
    from trainer import train_ranking as tr

    return tr.train_and_evaluate(cfg, version_dir or latest_preprocessed(cfg), trained, item_vectors,
                                 rankers=rankers, gbdt=gbdt)


def load_ranker(cfg: Config, trained, name: Optional[str] = None):
    """The trained ranker ``name`` (default: ranking.model) from <run>/training/ranking/<name>."""
    from trainer import explain, train_ranking as tr

    return tr.load_ranker(tr.ranking_dir(cfg, name or cfg.ranking.model), cfg, explain.example_batch(trained))


def has_ranker(cfg: Config, name: Optional[str] = None) -> bool:
    from trainer import train_ranking as tr

    return os.path.exists(os.path.join(tr.ranking_dir(cfg, name or cfg.ranking.model), "meta.json"))


def export_ranking(cfg: Config, trained, item_vectors: np.ndarray, ranker, request: Dict[str, np.ndarray],
                   version: Optional[int] = None) -> Dict[str, str]:
    """<base>/ranking/<version> (raw features -> scores) and <base>/recommend/<version> (one-call top-k)."""
    from trainer import export as trainer_export, export_recommend as xr

    from trainer import publish

    version = version or trainer_export.new_version(cfg.export.version)
    items = list(range(min(3, trained.catalogue.size)))
    paths = {}
    with publish.export_set(cfg.model_base_path):  # ranking and recommend appear together
        t0 = time.time()
        paths["ranking"] = xr.export_ranking(trained.tft_output, ranker, cfg.model_base_path, version,
                                             warmup=xr.ranking_request(request, trained.catalogue, items))
        log(f"[export] ranking: {paths['ranking']} ({time.time() - t0:.1f}s)")
        t0 = time.time()
        paths["recommend"] = xr.export_recommend(trained.tft_output, trained.model.query_tower, item_vectors,
                                                 trained.catalogue, ranker, cfg.model_base_path, version,
                                                 cfg.export, cfg.ranking, warmup=request)
        log(f"[export] recommend: {paths['recommend']} ({time.time() - t0:.1f}s)")
        if cfg.export.recommend_exact:  # stock TF Serving (GPU tier, k8s/): exact retrieval, no ScaNN ops
            t0 = time.time()
            paths["recommend_exact"] = xr.export_recommend_exact(
                trained.tft_output, trained.model.query_tower, item_vectors, trained.catalogue, ranker,
                cfg.model_base_path, version, cfg.export, cfg.ranking, warmup=request)
            log(f"[export] recommend_exact: {paths['recommend_exact']} ({time.time() - t0:.1f}s)")
    return paths


def explain(cfg: Config, trained, item_vectors: np.ndarray, ranker, request: Dict[str, np.ndarray],
            item_id: Optional[str] = None, out_dir: Optional[str] = None) -> Dict:
    """Top features (integrated gradients) + "because you watched" for one user/item; DCN plot as PNG."""
    from trainer import explain as ex

    return ex.explain_request(cfg, trained, item_vectors, ranker, request, item_id, out_dir or cfg.path("explain"))


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
    out_dir = cfg.path("training", "item2vec")
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "item_vectors.npy"), emb.vectors, allow_pickle=False)
    with open(os.path.join(out_dir, "item_ids.json"), "w") as f:
        json.dump(emb.item_ids.tolist(), f)
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump({"loss": emb.history, "train_seconds": emb.train_seconds}, f, indent=2)
    cfg.save(os.path.join(out_dir, "config.json"))
    example = str(catalogue.item_ids[int(np.argmax(emb.train_counts))])
    t0 = time.time()
    path = export_similar.export_similar_items(catalogue.item_ids, emb.vectors, cfg.model_base_path,
                                               trainer_export.new_version(cfg.export.version), cfg.export,
                                               k=cfg.item2vec.top_k, warmup_ids=[example])
    log(f"[export] similar_items: {path} ({time.time() - t0:.1f}s)")
    return {"path": path, "out_dir": out_dir, "embeddings": emb, "example": example, "catalogue": catalogue}
