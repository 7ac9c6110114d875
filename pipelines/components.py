"""The pipeline's lightweight components: each calls ``recsys.steps`` (via pipelines.runtime).

Directories travel as string parameters (a shared volume path, or ``/gcs/<bucket>/...`` on Vertex
AI, whose workers mount Cloud Storage there); metrics travel as artifacts. Components run in the
project image (``RECSYS_IMAGE``, docker/Dockerfile.recsys), which already has kfp and the
project installed, so ``install_kfp_package=False``: nothing is pip-installed at run time, and
``kfp.local.SubprocessRunner(use_venv=False)`` runs them in the current interpreter.
"""

import os
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

RECSYS_IMAGE = os.environ.get("RECSYS_IMAGE", "registry.example.com/recsys/recsys:0.1.0")


@dsl.component(base_image=RECSYS_IMAGE, install_kfp_package=False)
def make_data(workdir: str, overrides: List[str], config_file: str) -> str:
    """Raw tables of the configured source under <workdir>/<run>/raw; returns that directory."""
    from pipelines import runtime

    return runtime.make_data(workdir, overrides, config_file)


@dsl.component(base_image=RECSYS_IMAGE, install_kfp_package=False)
def preprocess(workdir: str, overrides: List[str], config_file: str, raw_dir: str) -> str:
    """Beam + TF-Transform; returns the new <run>/preprocessed/v<N> directory."""
    from pipelines import runtime

    return runtime.preprocess(workdir, overrides, config_file, raw_dir)


@dsl.component(base_image=RECSYS_IMAGE, install_kfp_package=False)
def train_evaluate(workdir: str, overrides: List[str], config_file: str, version_dir: str,
                   metrics: Output[Metrics], metrics_json: Output[Artifact]
                   ) -> NamedTuple("TrainOutputs", [("metrics_path", str), ("training_dir", str)]):
    """Two-tower training + full-ranking evaluation beside popularity (<run>/training/retrieval/)."""
    from collections import namedtuple

    from pipelines import runtime

    out = runtime.train_evaluate(workdir, overrides, config_file, version_dir)
    for name, value in runtime.flat_metrics(out["results"]).items():
        metrics.log_metric(name, value)
    runtime.copy_file(out["metrics_path"], metrics_json.path)
    metrics_json.metadata["source"] = out["metrics_path"]
    return namedtuple("TrainOutputs", ["metrics_path", "training_dir"])(out["metrics_path"], out["training_dir"])


@dsl.component(base_image=RECSYS_IMAGE, install_kfp_package=False)
def quality_gate(metrics_json: Input[Artifact], min_lift: float, k: int) -> str:
    """Fails (and so blocks push) unless recall@k beats popularity's by more than min_lift times."""
    from pipelines import gate

    result = gate.enforce(metrics_json.path, min_lift=min_lift, k=k)  # raises QualityGateError on FAIL
    print(result.message, flush=True)
    return result.message


@dsl.component(base_image=RECSYS_IMAGE, install_kfp_package=False)
def train_ranking(workdir: str, overrides: List[str], config_file: str, version_dir: str, gate_report: str,
                  metrics: Output[Metrics]) -> str:
    """Second stage: the ranker re-ranking retrieval's top-N (<run>/training/ranking/); after the gate."""
    from pipelines import runtime

    print(f"training the ranker after: {gate_report}", flush=True)
    out = runtime.train_ranking(workdir, overrides, config_file, version_dir)
    for name, value in runtime.flat_metrics(out["results"]).items():
        metrics.log_metric(name, value)
    return out["ranker"]


@dsl.component(base_image=RECSYS_IMAGE, install_kfp_package=False)
def push(workdir: str, overrides: List[str], config_file: str, version_dir: str, model_base_path: str,
         gate_report: str, ranker: str, model: Output[Model]) -> str:
    """Exports the gated models into the serving model base path (<base>/<name>/<version>/)."""
    import json

    from pipelines import runtime

    print(f"pushing (ranker {ranker}) after: {gate_report}", flush=True)
    paths = runtime.push(workdir, overrides, config_file, version_dir, model_base_path)
    runtime.write_json(model.path, {"exports": paths, "gate": gate_report})
    model.metadata.update({"exports": paths, "gate": gate_report})
    return json.dumps(paths, sort_keys=True)
