"""Shared fixtures: one small synthetic run (raw -> preprocess -> train -> export) per test session."""
import os

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import pytest

from recsys.config import Config

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ml-latest-small")


def small_config(workdir: str) -> Config:
    """The demo's default sizes (~50K events): big enough for the planted structure, ~2 min on 2 cores.

    Ids and titles are non-ASCII and non-Latin (``data.unicode_text``), so every test built on this
    run -- preprocessing, training, every export, serving and queries -- runs on UTF-8 beyond ASCII.
    """
    cfg = Config(workdir=workdir)
    cfg.train.epochs = 3  # validation loss bottoms out at epoch 2-3 at this size; the default 8 only adds time
    cfg.export.version = 1
    cfg.data.unicode_text = True
    return cfg


@pytest.fixture(scope="session")
def run_cfg(tmp_path_factory):
    return small_config(str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="session")
def preprocessed(run_cfg):
    from recsys import steps

    steps.make_raw(run_cfg)
    return steps.preprocess(run_cfg)


@pytest.fixture(scope="session")
def trained(run_cfg, preprocessed):
    from recsys import steps

    model = steps.train(run_cfg, preprocessed)
    ev = steps.evaluate(run_cfg, model)
    return {"trained": model, "results": ev["results"], "item_vectors": ev["item_vectors"]}


@pytest.fixture(scope="session")
def exported(run_cfg, preprocessed, trained):
    from recsys import steps

    request = steps.sample_request(run_cfg, preprocessed)
    paths = steps.export(run_cfg, trained["trained"])  # staged -> blessed (nothing served yet) -> pushed
    return {"paths": paths, "request": request}


# The pipeline's tasks in DAG order: (task, component, {input: (producer task, output)}, {output: artifact class}).
PIPELINE_TASKS = (
    ("ingest", "ingest", {}, {"raw": "Dataset"}),
    ("preprocess", "preprocess", {"raw": ("ingest", "raw")}, {"preprocessed": "Dataset"}),
    ("train-retrieval", "train_retrieval", {"preprocessed": ("preprocess", "preprocessed")}, {"model": "Model"}),
    ("evaluate", "evaluate", {"model": ("train-retrieval", "model")}, {"evaluation": "Artifact", "metrics": "Metrics"}),
    ("train-ranker", "train_ranker", {"model": ("train-retrieval", "model")},
     {"ranker": "Model", "evaluation": "Artifact", "metrics": "Metrics"}),
    ("export", "export", {"model": ("train-retrieval", "model"), "ranker": ("train-ranker", "ranker")},
     {"exported": "Model"}),
    ("bless", "bless", {"exported": ("export", "exported"), "evaluation": ("evaluate", "evaluation")},
     {"blessing": "Artifact"}),
    ("push", "push", {"exported": ("export", "exported"), "blessing": ("bless", "blessing")}, {"pushed": "Model"}),
)


def run_pipeline_in_process(config: str, artifact_root: str, serving_base: str, kfp_root: str):
    """Every component's own Python function (what KFP runs in each task's container), called in DAG order
    in this process with KFP artifact objects, as a KFP launcher would. No subprocesses, so it is cheap
    enough for CI; tests/pipelines/test_pipeline.py checks this wiring against the compiled DAG."""
    from kfp import dsl

    from pipelines import components

    outputs = {}
    for task, comp, inputs, outs in PIPELINE_TASKS:
        fn = getattr(components, comp).python_func
        kwargs = {name: outputs[src][key] for name, (src, key) in inputs.items()}
        made = {name: getattr(dsl, kind)(name=name, uri=f"{kfp_root}/{task}/{name}", metadata={})
                for name, kind in outs.items()}
        params = {"config": config, "artifact_root": artifact_root, "serving_model_base_path": serving_base}
        wanted = fn.__code__.co_varnames[:fn.__code__.co_argcount]
        result = fn(**{k: v for k, v in params.items() if k in wanted}, **kwargs, **made)
        outputs[task] = dict(made, **({"blessed": result.blessed} if comp == "bless" else {}))
    return outputs


@pytest.fixture(scope="session")
def ram_pipeline():
    """The pipeline on TensorFlow's in-memory ram:// filesystem (not the local disk), tiny data, run twice
    with the same config into one content-addressed artifact root and one serving base path."""
    import uuid

    import preprocessing.ram_filesystem  # noqa: F401  (registers ram:// with Beam)
    from pipelines import runtime
    from recsys.config import load_config

    cfg = load_config(overrides=list(runtime.TINY_OVERRIDES))
    root = f"ram://pipeline-{uuid.uuid4().hex[:8]}"
    config = runtime.config_json(cfg)
    first = run_pipeline_in_process(config, f"{root}/artifacts", f"{root}/models", f"{root}/kfp/run1")
    second = run_pipeline_in_process(config, f"{root}/artifacts", f"{root}/models", f"{root}/kfp/run2")
    return {"cfg": cfg, "root": root, "base": f"{root}/models", "first": first, "second": second}
