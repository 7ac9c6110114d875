"""Fixtures: tiny SavedModels built once per session, and a shared running server.

The tests build their own models (serving.testing.write_toy_model) so they don't depend
on the training/export code; each test that mutates a model directory gets its own copy.
"""
import os
import shutil
import time

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest

from serving.client import ServingClient
from serving.testing import start_server, write_toy_model

MAX_REQUEST_BYTES = 1 << 20


@pytest.fixture(scope="session")
def model_src(tmp_path_factory):
    """Directory with versions 1 and 2 of the toy model (warmup files included); never served directly."""
    src = str(tmp_path_factory.mktemp("src"))
    write_toy_model(src, 1)
    write_toy_model(src, 2)
    return src


def install_version(model_src: str, base: str, version: int, as_version: int = None) -> str:
    """Copies a version in the way exports do: write a temp sibling, then rename into place."""
    os.makedirs(base, exist_ok=True)
    target = os.path.join(base, str(as_version or version))
    tmp = os.path.join(base, f".tmp-{as_version or version}")
    shutil.copytree(os.path.join(model_src, str(version)), tmp)
    os.rename(tmp, target)
    return target


@pytest.fixture(scope="session")
def server(model_src, tmp_path_factory):
    """One server on toy version 1 shared by the read-only tests."""
    base = str(tmp_path_factory.mktemp("models") / "toy")
    install_version(model_src, base, 1)
    srv = start_server(model_base_path=base, model_name="toy", max_request_bytes=MAX_REQUEST_BYTES)
    yield srv
    srv.stop(0)


@pytest.fixture(scope="session")
def grpc_client(server):
    with ServingClient(server.grpc_address) as c:
        yield c


@pytest.fixture(scope="session")
def rest_client(server):
    return ServingClient(rest=server.rest_url)


def wait_for(predicate, timeout=20.0, interval=0.05):
    """Polls ``predicate`` until it holds or ``timeout`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def query(users=("u1", "u2")):
    return {"user_id": np.array(list(users), dtype=object), "timestamp": np.arange(len(users), dtype=np.int64)}
