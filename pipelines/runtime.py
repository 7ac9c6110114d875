"""Helpers the pipeline components call inside their containers (kept out of the components so
that each component's serialized source stays a few lines and the logic is unit-testable)."""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)
from recsys.config import Config, load_config

# Tiny synthetic sizes for `run-local` and tests: the whole pipeline in a few minutes on 2 cores.
TINY_OVERRIDES = ("data.n_users=200", "data.n_items=150", "data.events_per_user=20", "train.epochs=1",
                  "train.batch_size=256", "ranking.epochs=1")


def config(workdir: str, overrides: Sequence[str] = (), config_file: str = "",
           model_base_path: str = "") -> Config:
    """The same resolution as the `recsys` CLI: defaults <- config file <- ``key=value`` overrides."""
    cfg = load_config(config_file or None, list(overrides or ()))
    if workdir:
        cfg.workdir = workdir
    if model_base_path:
        cfg.export.model_base_path = model_base_path
    return cfg


def quiet_tf() -> None:
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)


def make_data(workdir: str, overrides: Sequence[str], config_file: str = "") -> str:
    from recsys import steps

    return steps.make_raw(config(workdir, overrides, config_file))


def preprocess(workdir: str, overrides: Sequence[str], config_file: str, raw_dir: str) -> str:
    from recsys import steps

    quiet_tf()
    return steps.preprocess(config(workdir, overrides, config_file), raw_dir)


def train_evaluate(workdir: str, overrides: Sequence[str], config_file: str, version_dir: str) -> Dict:
    """Trains retrieval, evaluates it beside popularity; returns the metrics.json path and its results."""
    from recsys import steps

    quiet_tf()
    cfg = config(workdir, overrides, config_file)
    trained = steps.train(cfg, version_dir)
    ev = steps.evaluate(cfg, trained, version_dir)
    return {"metrics_path": os.path.join(trained.out_dir, "metrics.json"), "results": ev["results"],
            "training_dir": trained.out_dir}


def flat_metrics(results: Dict, prefix: str = "") -> Dict[str, float]:
    """{"two_tower": {"recall@50": x}} -> {"two_tower_recall_at_50": x} (names KFP/Vertex UIs accept)."""
    out = {}
    for key, value in results.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_metrics(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name.replace("@", "_at_")] = float(value)
    return out


def copy_file(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    shutil.copyfile(src, dst)


def _restore_retrieval(cfg: Config, version_dir: str):
    """The retrieval model from its best checkpoint + item vectors (no re-evaluation, so the
    metrics.json the gate read stays as it was)."""
    from recsys import steps
    from trainer import evaluate_retrieval as er

    trained = steps.load_trained(cfg, version_dir)
    candidates = trained.catalogue.transformed(trained.tft_output.transform_features_layer())
    return trained, er.item_vectors(trained.model.candidate_tower, candidates)


def _require_ranking_steps():
    from recsys import steps

    missing = [f for f in ("train_ranking", "has_ranker", "load_ranker", "export_ranking") if not hasattr(steps, f)]
    if missing:
        raise RuntimeError(f"recsys.steps lacks {missing}: this project version has no second-stage ranker")
    return steps


def train_ranking(workdir: str, overrides: Sequence[str], config_file: str, version_dir: str) -> Dict:
    """The second-stage ranker (ranking.model) on retrieval's candidates, as `recsys train-ranking`."""
    steps = _require_ranking_steps()
    quiet_tf()
    cfg = config(workdir, overrides, config_file)
    trained, vectors = _restore_retrieval(cfg, version_dir)
    out = steps.train_ranking(cfg, trained, vectors, version_dir)
    return {"results": out["results"], "ranker": cfg.ranking.model}


def push(workdir: str, overrides: Sequence[str], config_file: str, version_dir: str,
         model_base_path: str = "") -> Dict[str, str]:
    """Exports into ``<model_base_path>/<name>/<version>/`` exactly as `recsys export` does: retrieval
    (ScaNN) and retrieval_brute_force, plus ranking and recommend when a ranker was trained; one
    version number for all of them."""
    from recsys import steps

    quiet_tf()
    cfg = config(workdir, overrides, config_file, model_base_path)
    trained, vectors = _restore_retrieval(cfg, version_dir)
    request = steps.sample_request(cfg, version_dir)
    paths = steps.export(cfg, trained, vectors, request)
    if hasattr(steps, "has_ranker") and steps.has_ranker(cfg):
        version = int(os.path.basename(paths["scann"]))
        paths.update(steps.export_ranking(cfg, trained, vectors, steps.load_ranker(cfg, trained), request, version))
    return paths


def write_json(path: str, payload) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)


def overrides_list(values: Optional[List[str]]) -> List[str]:
    return [v for v in (values or []) if v]
