"""Model lifecycle: hot swap under load, corrupt versions, config files with version policies, batching."""
import os
import threading
import time

import numpy as np
import pytest

from serving.client import ServingClient
from serving.testing import start_server

from .conftest import install_version, query, wait_for


class RequestLoop:
    """Predicts in a background thread, counting failures and the versions that answered."""

    def __init__(self, address):
        self.client = ServingClient(address)
        self.failures, self.ok, self.versions = [], 0, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.versions.add(self.client.predict("toy", query()).model_version)
                self.ok += 1
            except Exception as e:  # noqa: BLE001
                self.failures.append(e)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.client.close()


def test_hot_swap_without_restart_or_failures(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    with start_server(model_base_path=base, model_name="toy", rest=False) as srv, RequestLoop(srv.grpc_address) as loop:
        assert wait_for(lambda: loop.ok >= 5)
        install_version(model_src, base, 2)
        assert wait_for(lambda: 2 in loop.versions), "version 2 was never served"
        ok_at_swap = loop.ok
        assert wait_for(lambda: loop.ok >= ok_at_swap + 5)
        client = ServingClient(srv.grpc_address)
        assert wait_for(lambda: [s["state"] for s in client.status("toy")] == ["AVAILABLE", "END"])
        assert client.predict("toy", query()).model_version == 2
        np.testing.assert_allclose(client.predict("toy", query())["scores"][0, 0], 2.0)
    assert loop.failures == []
    assert loop.versions == {1, 2}


def test_corrupt_version_keeps_old_one_serving(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    with start_server(model_base_path=base, model_name="toy", rest=False) as srv:
        client = ServingClient(srv.grpc_address)
        bad = os.path.join(base, "3")
        os.makedirs(os.path.join(bad, "variables"))
        with open(os.path.join(bad, "saved_model.pb"), "wb") as f:
            f.write(b"\x00garbage, not a SavedModel")
        assert wait_for(lambda: any(s["version"] == 3 for s in client.status("toy")))
        st = {s["version"]: s for s in client.status("toy")}
        assert st[3]["state"] == "END" and st[3]["error_code"] != "OK" and "Failed to load" in st[3]["error_message"]
        assert st[1]["state"] == "AVAILABLE"
        assert client.predict("toy", query()).model_version == 1
        assert srv.metrics.value("model_load_count_total", {"model_name": "toy", "status": "ERROR"}) == 1
        time.sleep(0.5)  # several polls: an unchanged broken dir is not retried
        assert srv.metrics.value("model_load_count_total", {"model_name": "toy", "status": "ERROR"}) == 1
        # fixing the directory makes the next poll retry it
        os.rename(bad, bad + ".broken")
        install_version(model_src, base, 2, as_version=3)
        assert wait_for(lambda: client.predict("toy", query()).model_version == 3)


def test_model_config_file_with_policies_and_labels(model_src, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for v in (1, 2):
        install_version(model_src, a, 1 if v == 1 else 2, as_version=v)
        install_version(model_src, b, 1 if v == 1 else 2, as_version=v)
    install_version(model_src, a, 2, as_version=3)
    config = tmp_path / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: "alpha"
    base_path: "{a}"
    model_platform: "tensorflow"
    model_version_policy {{ latest {{ num_versions: 2 }} }}
    version_labels {{ key: "stable" value: 2 }}
    version_labels {{ key: "canary" value: 3 }}
  }}
  config {{
    name: "beta"
    base_path: "{b}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
  }}
}}
""")
    with start_server(model_config_file=str(config), rest=False) as srv:
        client = ServingClient(srv.grpc_address)
        assert [s["version"] for s in client.status("alpha")] == [3, 2]
        assert [s["version"] for s in client.status("beta")] == [1]
        assert client.predict("alpha", query()).model_version == 3
        assert client.predict("alpha", query(), version=2).model_version == 2
        assert client.predict("alpha", query(), version="stable").model_version == 2
        assert client.predict("alpha", query(), version="canary").model_version == 3
        assert client.predict("beta", query()).model_version == 1
        with pytest.raises(Exception):
            client.predict("alpha", query(), version=1)
        with pytest.raises(Exception):
            client.predict("beta", query(), version=2)


def test_batching_merges_concurrent_requests(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    with start_server(model_base_path=base, model_name="toy", rest=False, enable_batching=True,
                      max_batch_size=8, batch_timeout_micros=20000) as srv:
        client = ServingClient(srv.grpc_address)
        results, errors = {}, []

        def one(i):
            try:
                results[i] = client.predict("toy", query([f"user{i}"]))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert errors == []
        for i, out in results.items():
            assert out["item_ids"].shape == (1, 5) and out["item_ids"][0, 0] == f"user{i}-0".encode()
        hist_count = srv.metrics.value("batch_size_count", {"model_name": "toy"})
        hist_sum = srv.metrics.value("batch_size_sum", {"model_name": "toy"})
        assert hist_sum >= 8 and hist_count < 8 + 1  # warmup batch + fewer batches than requests
