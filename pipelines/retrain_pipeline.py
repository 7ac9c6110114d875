"""The continuous-training pipeline (``recsys-retrain``): the newest raw data + request logs and events ->
preprocess -> two-tower warm-started from the served model -> evaluate -> ranker -> export -> bless
against the served version -> push.

The same components as the main pipeline (plus ``add_feedback`` and ``train_retrieval_warm``). `recsys
retrain` runs exactly this DAG in process (``RETRAIN_TASKS`` through ``pipelines.in_process``, KFP
artifacts at the run layout's ``<run>/retrain/<round>/`` paths); on Kubeflow or Vertex AI the two
importers bring in the newest raw Dataset and the served Model by URI.
"""
from typing import List

from kfp import compiler, dsl
from kfp.dsl import Dataset, Model

from pipelines import components

RETRAIN_PIPELINE_NAME = "recsys-retrain"

# The retrain DAG in order: (task, component, {input: (producer task, output)}, {output: artifact class}).
RETRAIN_TASKS = (
    ("importer", "importer", {}, {"artifact": "Dataset"}),
    ("importer-2", "importer", {}, {"artifact": "Model"}),
    ("add-feedback", "add_feedback", {"raw": ("importer", "artifact")}, {"with_feedback": "Dataset"}),
    ("preprocess", "preprocess", {"raw": ("add-feedback", "with_feedback")}, {"preprocessed": "Dataset"}),
    ("train-retrieval-warm", "train_retrieval_warm",
     {"preprocessed": ("preprocess", "preprocessed"), "previous": ("importer-2", "artifact")}, {"model": "Model"}),
    ("evaluate", "evaluate", {"model": ("train-retrieval-warm", "model")},
     {"evaluation": "Artifact", "metrics": "Metrics"}),
    ("train-ranker", "train_ranker", {"model": ("train-retrieval-warm", "model")},
     {"ranker": "Model", "evaluation": "Artifact", "metrics": "Metrics"}),
    ("export", "export", {"model": ("train-retrieval-warm", "model"), "ranker": ("train-ranker", "ranker")},
     {"exported": "Model"}),
    ("bless", "bless", {"exported": ("export", "exported"), "evaluation": ("evaluate", "evaluation")},
     {"blessing": "Artifact"}),
    ("push", "push", {"exported": ("export", "exported"), "blessing": ("bless", "blessing")}, {"pushed": "Model"}),
)
# importer task -> the pipeline parameter holding its URI
RETRAIN_IMPORTS = {"importer": "raw_uri", "importer-2": "previous_model_uri"}
# tasks KFP must never cache: they read what changes outside the pipeline (growing logs, the serving path)
NOT_CACHED = ("add-feedback", "bless", "push")


@dsl.pipeline(name=RETRAIN_PIPELINE_NAME,
              description="Continuous training: newest raw data + request logs joined with events -> Beam+TFT -> "
                          "two-tower warm-started from the served model -> evaluation -> ranker -> staged "
                          "SavedModels -> blessing against the served version -> push")
def retrain_pipeline(config: str, serving_model_base_path: str, raw_uri: str, previous_model_uri: str,
                     request_logs: List[str], events: List[str], warm_start: bool = True, with_ranker: bool = True,
                     artifact_root: str = "", image: str = components.DEFAULT_IMAGE):
    """``raw_uri``: the newest raw data (the last round's, feedback included). ``previous_model_uri``: the
    served RetrievalModel to continue from. ``request_logs``: TF Serving ``filename_prefix``es or
    .tfrecord files; ``events``: JSONL events files. ``warm_start=False`` trains from scratch;
    ``with_ranker=False`` skips the ranker (the served version had none). The rest as in ``recsys``."""
    raw = dsl.importer(artifact_uri=raw_uri, artifact_class=Dataset, reimport=False)
    raw.set_display_name("newest raw data")
    previous = dsl.importer(artifact_uri=previous_model_uri, artifact_class=Model, reimport=False)
    previous.set_display_name("served model")
    common = dict(config=config, artifact_root=artifact_root)
    fb = components.add_feedback(raw=raw.output, request_logs=request_logs, events=events, **common)
    fb.set_display_name("add feedback")
    pre = components.preprocess(raw=fb.outputs["with_feedback"], **common).set_display_name("preprocess")
    train = components.train_retrieval_warm(preprocessed=pre.outputs["preprocessed"], previous=previous.output,
                                            warm_start=warm_start, **common)
    train.set_display_name("train retrieval (warm start)").set_cpu_limit("4").set_memory_limit("16G")
    tail = components.model_to_push(train.outputs["model"], common, serving_model_base_path, with_ranker=with_ranker)
    for task in [fb, pre, train] + tail:
        task.set_container_image(image)
    # add_feedback: the log locations stay the same while TF Serving appends to them, so KFP's cache key
    # (parameters + input artifacts) cannot see new feedback; its own fingerprint (files, sizes, mtimes)
    # still reuses an unchanged result under artifact_root. (bless and push: never cached either.)
    fb.set_caching_options(False)


def compile_retrain_pipeline(out: str) -> str:
    import os

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    compiler.Compiler().compile(retrain_pipeline, package_path=out)
    return out
