"""Shared fixtures: one small synthetic run (raw -> preprocess -> train -> export) per test run.

The suite runs on pytest-xdist workers (pytest.ini). The run is built once per test run, not once per
worker: the first worker to need a stage builds it under a file lock in the run's shared temp
directory; the others wait, then load what it wrote, as the CLI's later steps would.
"""
import contextlib
import fcntl
import json
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
    # baselines at their default hyper-parameters: tuning is covered by the ram:// pipeline run (TINY
    # sizes, tuned as by default) and tests/trainer/test_baselines.py; here it would cost ~25 s on idle cores
    cfg.eval.tune_baselines = False
    cfg.export.version = 1
    cfg.data.unicode_text = True
    cfg.data.statistics_plot = False  # drawn and checked in tests/preprocessing/test_profile.py and the e2e demos
    return cfg


def shared_dir(tmp_path_factory) -> str:
    """A directory every xdist worker of this test run sees (the session's own temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return str(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)


@contextlib.contextmanager
def built_once(tmp_path_factory, name: str):
    """Yields ``(marker, done)`` under an exclusive lock named ``name``: ``done`` says whether another worker
    already built it (then load it), otherwise build it and call ``marker()`` (after which it counts as built)."""
    root = shared_dir(tmp_path_factory)
    done_path = os.path.join(root, f"{name}.done")
    with open(os.path.join(root, f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield (lambda: open(done_path, "w").close()), os.path.exists(done_path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def run_cfg(tmp_path_factory):
    workdir = os.path.join(shared_dir(tmp_path_factory), "runs")
    os.makedirs(workdir, exist_ok=True)
    return small_config(workdir)


@pytest.fixture(scope="session")
def preprocessed(run_cfg, tmp_path_factory):
    from recsys import steps

    with built_once(tmp_path_factory, "preprocessed") as (mark, done):
        if done:
            return steps.latest_preprocessed(run_cfg)
        steps.make_raw(run_cfg)
        version_dir = steps.preprocess(run_cfg)
        mark()
        return version_dir


@pytest.fixture(scope="session")
def trained(run_cfg, preprocessed, tmp_path_factory):
    from recsys import artifacts as af
    from recsys import stages, steps
    from recsys.layout import RunLayout

    with built_once(tmp_path_factory, "trained") as (mark, done):
        if done:  # what `recsys evaluate` after `recsys train` would load
            model = steps.load_trained(run_cfg)
            results = af.Evaluation.read(RunLayout(run_cfg).retrieval_evaluation).metrics()["results"]
            return {"trained": model, "results": results, "item_vectors": stages.item_vectors(model)}
        model = steps.train(run_cfg, preprocessed)
        ev = steps.evaluate(run_cfg, model)
        mark()
        return {"trained": model, "results": ev["results"], "item_vectors": ev["item_vectors"]}


@pytest.fixture(scope="session")
def exported(run_cfg, preprocessed, trained, tmp_path_factory):
    from recsys import steps

    request = steps.sample_request(run_cfg, preprocessed)
    paths_file = os.path.join(shared_dir(tmp_path_factory), "exported.json")
    with built_once(tmp_path_factory, "exported") as (mark, done):
        if done:
            with open(paths_file, encoding="utf-8") as f:
                return {"paths": json.load(f), "request": request}
        paths = steps.export(run_cfg, trained["trained"])  # staged -> blessed (nothing served yet) -> pushed
        with open(paths_file, "w", encoding="utf-8") as f:
            json.dump(paths, f)
        mark()
        return {"paths": paths, "request": request}


def run_pipeline_in_process(config: str, artifact_root: str, serving_base: str, kfp_root: str):
    """Every component's own Python function (what KFP runs in each task's container), called in DAG order
    in this process with KFP artifact objects (pipelines/in_process.py, as `recsys retrain` runs its
    pipeline). No subprocesses, so it is cheap enough for CI; tests/pipelines/test_pipeline.py checks
    pipelines.pipeline.PIPELINE_TASKS against the compiled DAG."""
    from pipelines import in_process
    from pipelines.pipeline import PIPELINE_TASKS

    params = {"config": config, "artifact_root": artifact_root, "serving_model_base_path": serving_base}
    return in_process.run(PIPELINE_TASKS, params, lambda task, name: f"{kfp_root}/{task}/{name}")


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


# ---------------------------------------------------------------- scheduling on xdist workers
# A module's tests run on one worker (its module fixtures are built once). Modules sharing in-process
# session state run on one worker too: the ranking fixtures (tests/trainer/conftest.py) and the ram://
# pipeline (ram:// lives in one process). The synthetic run itself is shared across workers on disk.
MODULE_GROUPS = {
    "tests/trainer/test_ranking.py": "ranking", "tests/trainer/test_recommend.py": "ranking",
    "tests/trainer/test_explain.py": "ranking", "tests/trainer/test_export_recommend_exact.py": "ranking",
    "tests/pipelines/test_pipeline.py": "ram_pipeline", "tests/recsys/test_stages.py": "ram_pipeline",
    "tests/recsys/test_retrain.py": "ram_pipeline", "tests/preprocessing/test_nonlocal_fs.py": "ram_pipeline",
}
# The groups that take minutes start first, longest first, so the two workers finish at about the same time
# (longest-processing-time-first); the rest follow in collection order.
SLOW_FIRST = ("tests/e2e/test_movielens_demo.py", "ranking", "tests/serving/test_conformance.py",
              "tests/e2e/test_log_demo.py", "ram_pipeline", "tests/benchmarks/test_bench_smoke.py",
              "tests/trainer/test_distribute.py", "tests/notebooks/test_walkthrough.py",
              "tests/trainer/test_sequence.py", "tests/preprocessing/test_bad_input.py")


def group_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].split("@", 1)[0]
    return MODULE_GROUPS.get(module, module)


def pytest_collection_modifyitems(config, items):
    rank = {g: i for i, g in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: collection order otherwise


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling with the groups above as scopes (and the queue in collection order)."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)
