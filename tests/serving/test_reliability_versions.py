"""Issue 16, model versions on disk: odd names, half-copied versions, a vanishing base path, export sets.

Each test reproduces what an unlucky operator did to the old server (a ``²`` directory stopped the
poller; ``99999999999999999999`` broke every status call; a version visible while still being
written loaded and kept serving the wrong files; a deleted base path still said AVAILABLE).
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from contracts import completion
from serving.client import ServingClient
from serving.models import ModelManager, single_model_config
from serving.testing import start_server

from .conftest import install_version, query, wait_for


def score(client):
    return float(client.predict("toy", query())["scores"][0, 0])


def test_only_ascii_int64_version_names_and_one_bad_name_never_stops_polling(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    with start_server(model_base_path=base, model_name="toy", rest=False) as srv:
        client = ServingClient(srv.grpc_address)
        for odd in ("²", "99999999999999999999", "٣", "1e3", "-4"):
            shutil.copytree(os.path.join(model_src, "2"), os.path.join(base, odd))
        time.sleep(0.5)  # a few polls over the odd names
        assert [s["version"] for s in client.status("toy")] == [1]  # old: 'Value out of range' here
        assert client.predict("toy", query()).model_version == 1
        install_version(model_src, base, 2)  # old: the poller had died on '²', so 2 never loaded
        assert wait_for(lambda: client.predict("toy", query()).model_version == 2)
        shutil.rmtree(os.path.join(base, "99999999999999999999"))
        assert [s["version"] for s in client.status("toy")][0] == 2


def test_half_copied_marked_version_waits_for_every_listed_file(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    with start_server(model_base_path=base, model_name="toy") as srv:
        client = ServingClient(srv.grpc_address)
        src = os.path.join(tmp_path, "v2src")  # a marked version copied in file by file, marker first
        shutil.copytree(os.path.join(model_src, "2"), src)
        completion.write_marker(src)
        target = os.path.join(base, "2")
        os.makedirs(os.path.join(target, "assets.extra"))
        shutil.copy(os.path.join(src, completion.MARKER), os.path.join(target, completion.MARKER))
        shutil.copy(os.path.join(src, "saved_model.pb"), target)
        time.sleep(1.0)  # five polls: never loaded while listed files are missing
        assert client.predict("toy", query()).model_version == 1
        ready = json.loads(urllib.request.urlopen(srv.rest_url + "/readyz", timeout=5).read())
        assert "files listed in" in ready["problems"]["toy"]
        for rel in sorted(completion.file_sizes(src)):
            dst = os.path.join(target, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if not os.path.exists(dst):
                shutil.copy(os.path.join(src, rel), dst)
        assert wait_for(lambda: client.predict("toy", query()).model_version == 2)
        assert score(client) == pytest.approx(2.0)


def test_unmarked_version_written_in_place_loads_once_its_files_stop_changing(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    manager = ModelManager(single_model_config("toy", base), poll_seconds=0, warmup=False).start()
    shutil.copytree(os.path.join(model_src, "2"), os.path.join(base, "2"))  # written in place, no marker
    time.sleep(0.05)
    os.utime(os.path.join(base, "2", "variables", "variables.index"))       # ... and still being written
    manager.poll()
    assert manager.available_versions("toy") == [1]                         # old: loaded on first sight
    assert "files still changing" in manager.problems()["toy"]
    manager.poll()                                                           # unchanged since: stable
    assert manager.available_versions("toy") == [2] and manager.problems() == {}
    manager.stop()


def test_a_version_whose_files_change_after_loading_is_reloaded(model_src, tmp_path):
    """Old: a version loaded from half-written files kept serving them forever. Now its fingerprint is
    watched: when the files change (the writer finished), it is loaded again and swapped in."""
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1, as_version=5)
    with start_server(model_base_path=base, model_name="toy", rest=False) as srv:
        client = ServingClient(srv.grpc_address)
        assert score(client) == pytest.approx(1.0)
        for sub in ("variables",):  # the writer finishes: version 5 now holds version 2's weights
            for name in os.listdir(os.path.join(model_src, "2", sub)):
                shutil.copy(os.path.join(model_src, "2", sub, name), os.path.join(base, "5", sub, name))
        assert wait_for(lambda: score(client) == pytest.approx(2.0))
        assert [s["state"] for s in client.status("toy")] == ["AVAILABLE"]


def test_base_path_that_disappears_is_reported_in_status(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    with start_server(model_base_path=base, model_name="toy") as srv:
        client = ServingClient(srv.grpc_address)
        os.rename(base, base + ".moved")
        assert wait_for(lambda: client.status("toy")[0]["error_code"] == "NOT_FOUND")
        st = client.status("toy")[0]
        assert st["state"] == "AVAILABLE" and "does not exist" in st["error_message"]  # old: AVAILABLE/OK
        assert client.predict("toy", query()).model_version == 1  # still serving what it loaded
        assert srv.metrics.value("model_base_path_readable", {"model_name": "toy"}) == 0
        ready = json.loads(urllib.request.urlopen(srv.rest_url + "/readyz", timeout=5).read())
        assert "does not exist" in ready["problems"]["toy"]
        os.rename(base + ".moved", base)
        assert wait_for(lambda: client.status("toy")[0]["error_code"] == "OK")
        assert srv.metrics.value("model_base_path_readable", {"model_name": "toy"}) == 1


# ---------------------------------------------------------------- export side
_KILL_BETWEEN_RENAMES = r"""
import os, sys
from trainer import publish
base = sys.argv[1]
real_rename = os.rename
def rename(src, dst):
    real_rename(src, dst)
    if "/b/" in dst:  # killed right after the first model of the set went live
        os._exit(9)
os.rename = rename
with publish.export_set(base):
    for name in ("b", "a"):  # what save_atomically does: stage under .tmp-<version>-<pid>, then publish
        tmp = os.path.join(base, name, f".tmp-7-{os.getpid()}")
        os.makedirs(os.path.join(tmp, "variables"))
        for rel, data in (("saved_model.pb", b"graph" * 100), ("variables/variables.index", b"index")):
            with open(os.path.join(tmp, rel), "wb") as f:
                f.write(data)
        publish.publish_version(base, tmp, os.path.join(base, name, "7"))
"""


def test_export_publishes_a_consistent_set_and_recovers_after_a_kill(tmp_path):
    from trainer import publish

    base = str(tmp_path / "models")
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_RENAMES, base], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert os.path.isdir(os.path.join(base, "b", "7")) and not os.path.exists(os.path.join(base, "a", "7"))
    journals = [f for f in os.listdir(base) if f.startswith(".publish-")]
    assert len(journals) == 1                                     # the interrupted publish is on record
    stale = os.path.join(base, "a", ".tmp-3-999999")              # a temporary of a long-gone export
    os.makedirs(stale)
    done = publish.recover(base)                                  # what the next export does first
    assert done == [os.path.join(base, "a", "7")]
    assert completion.check(os.path.join(base, "a", "7"),
                            completion.file_sizes(os.path.join(base, "a", "7")))[0] == "complete"
    assert not os.path.exists(stale) and not [f for f in os.listdir(base) if f.startswith(".publish-")]
    assert sorted(os.listdir(os.path.join(base, "a"))) == ["7"] and sorted(os.listdir(os.path.join(base, "b"))) == ["7"]


def test_export_set_publishes_nothing_until_every_model_is_saved(tmp_path):
    import tensorflow as tf

    from trainer import export, publish

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def f(self, x):
            return {"y": x + 1.0}

    m, base = M(), str(tmp_path / "models")
    with publish.export_set(base):
        export.save_atomically(m, {"serving_default": m.f}, base, "first", 3)
        assert not os.path.exists(os.path.join(base, "first", "3"))   # staged, not visible
        export.save_atomically(m, {"serving_default": m.f}, base, "second", 3)
    for name in ("first", "second"):
        path = os.path.join(base, name, "3")
        assert completion.check(path, completion.file_sizes(path))[0] == "complete"
        assert os.listdir(os.path.join(base, name)) == ["3"]
    with pytest.raises(RuntimeError):
        with publish.export_set(base):
            export.save_atomically(m, {"serving_default": m.f}, base, "first", 4)
            raise RuntimeError("training crashed")
    assert os.listdir(os.path.join(base, "first")) == ["3"]              # nothing published, nothing left
    out = tf.saved_model.load(os.path.join(base, "second", "3")).signatures["serving_default"](
        tf.constant([1.0]))["y"].numpy()
    np.testing.assert_allclose(out, [2.0])
