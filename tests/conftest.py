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
    ev = steps.evaluate(run_cfg, model, preprocessed)
    return {"trained": model, "results": ev["results"], "item_vectors": ev["item_vectors"]}


@pytest.fixture(scope="session")
def exported(run_cfg, preprocessed, trained):
    from recsys import steps

    request = steps.sample_request(run_cfg, preprocessed)
    paths = steps.export(run_cfg, trained["trained"], trained["item_vectors"], request)
    return {"paths": paths, "request": request}
