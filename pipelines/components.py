"""The pipeline's lightweight components: typed KFP artifacts in and out, one ``recsys.stages`` call each.

Every hand-off is a KFP artifact (``Dataset``, ``Model``, ``Artifact``, ``Metrics``) whose ``.uri`` is
the stage's artifact (see ``recsys/artifacts.py``); the whole resolved config travels as one JSON
parameter, so KFP's cache key changes with the config, and the image (set per task from the
``image`` pipeline parameter) changes with the code. Components run in the project image
(docker/Dockerfile.recsys) with kfp and the project installed, so ``install_kfp_package=False``;
``kfp.local.SubprocessRunner(use_venv=False)`` runs them in the current interpreter.
"""

import os
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

# the default for the `image` pipeline parameter; the compiled pipeline does not depend on it
DEFAULT_IMAGE = os.environ.get("RECSYS_IMAGE", "registry.example.com/recsys/recsys:0.1.0")


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def ingest(config: str, artifact_root: str, raw: Output[Dataset]):
    """Raw tables of the configured source (synthetic generator or MovieLens files)."""
    from pipelines import runtime

    runtime.ingest(config, artifact_root, raw)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def add_feedback(config: str, artifact_root: str, raw: Input[Dataset], request_logs: List[str], events: List[str],
                 with_feedback: Output[Dataset]):
    """Continuous training: the newest raw data plus what users did with what they were shown (request logs
    joined with events by request id and position) as new interactions."""
    from pipelines import runtime

    runtime.add_feedback(config, artifact_root, raw, request_logs, events, with_feedback)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def preprocess(config: str, artifact_root: str, raw: Input[Dataset], preprocessed: Output[Dataset]):
    """Beam + TF-Transform: tfrecords, the transform graph, the catalogue."""
    from pipelines import runtime

    runtime.preprocess(config, artifact_root, raw, preprocessed)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def tune(config: str, artifact_root: str, preprocessed: Input[Dataset], hyperparameters: Output[Artifact],
         tune_trials: int = 0) -> NamedTuple("Tuned", [("config", str)]):
    """TFX's Tuner: ``tune_trials`` trials of the two-tower scored on the train split's latest events; outputs
    the best settings (HyperParameters) and the config the later tasks run with. 0 trials: the config as given."""
    from collections import namedtuple

    from pipelines import runtime

    return namedtuple("Tuned", ["config"])(runtime.tune(config, artifact_root, preprocessed, hyperparameters,
                                                        tune_trials))


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_retrieval(config: str, artifact_root: str, preprocessed: Input[Dataset], model: Output[Model]):
    """The TFRS two-tower on the train split."""
    from pipelines import runtime

    runtime.train_retrieval(config, artifact_root, preprocessed, model)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_retrieval_warm(config: str, artifact_root: str, preprocessed: Input[Dataset], previous: Input[Model],
                         model: Output[Model], warm_start: bool = True):
    """The two-tower warm-started from ``previous`` (the served model), row by row where vocabularies changed.
    ``warm_start=False`` trains from scratch on the same DAG. (A separate component: kfp.local cannot run a
    task whose optional input artifact is left unset.)"""
    from pipelines import runtime

    runtime.train_retrieval(config, artifact_root, preprocessed, model, previous if warm_start else None)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(config: str, artifact_root: str, model: Input[Model], evaluation: Output[Artifact],
             metrics: Output[Metrics]):
    """Full-ranking evaluation with honest exclusions, beside popularity, EASE, item-kNN and ALS."""
    from pipelines import runtime

    runtime.evaluate(config, artifact_root, model, evaluation, metrics)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_ranker(config: str, artifact_root: str, model: Input[Model], ranker: Output[Model],
                 evaluation: Output[Artifact], metrics: Output[Metrics], with_ranker: bool = True):
    """The second-stage ranker (ranking.model) on out-of-fold retrieval candidates, with its re-ranking table.
    ``with_ranker=False``: skipped (outputs marked so), export stages the retrieval models only."""
    from pipelines import runtime

    runtime.train_ranker(config, artifact_root, model, ranker, evaluation, metrics, with_ranker)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def export(config: str, artifact_root: str, model: Input[Model], ranker: Input[Model], exported: Output[Model]):
    """SavedModels staged for serving (retrieval, retrieval_brute_force, ranking, recommend); not served yet."""
    from pipelines import runtime

    runtime.export(config, artifact_root, model, ranker, exported)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def bless(config: str, artifact_root: str, exported: Input[Model], evaluation: Input[Artifact],
          serving_model_base_path: str, blessing: Output[Artifact]) -> NamedTuple("Blessed", [("blessed", bool)]):
    """TFX Evaluator's blessing: the candidate vs popularity and vs the version being served, same fresh data."""
    from collections import namedtuple

    from pipelines import runtime

    return namedtuple("Blessed", ["blessed"])(runtime.bless(config, artifact_root, exported, evaluation,
                                                            serving_model_base_path, blessing))


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def push(exported: Input[Model], blessing: Input[Artifact], serving_model_base_path: str, pushed: Output[Model]):
    """TFX's Pusher: publishes the staged models as one new version, only when the blessing says so."""
    from pipelines import runtime

    runtime.push(exported, blessing, serving_model_base_path, pushed)


def model_to_push(model, common: dict, serving_model_base_path, **ranker_params) -> list:
    """The tail both pipelines share, from a trained retrieval ``model``: evaluate, the ranker, export (staged),
    the blessing against the served version and push; returns those tasks in DAG order. Bless and push are
    never cached: they read the serving base path, which changes outside the pipeline."""
    ev = evaluate(model=model, **common).set_display_name("evaluate")
    rank = train_ranker(model=model, **ranker_params, **common).set_display_name("train ranker")
    rank.set_cpu_limit("4").set_memory_limit("16G")
    exp = export(model=model, ranker=rank.outputs["ranker"], **common).set_display_name("export (staged)")
    blessing = bless(exported=exp.outputs["exported"], evaluation=ev.outputs["evaluation"],
                     serving_model_base_path=serving_model_base_path, **common).set_display_name("bless vs served")
    pushed = push(exported=exp.outputs["exported"], blessing=blessing.outputs["blessing"],
                  serving_model_base_path=serving_model_base_path).set_display_name("push")
    for task in (blessing, pushed):
        task.set_caching_options(False)
    return [ev, rank, exp, blessing, pushed]
