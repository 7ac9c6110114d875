"""Publishing model versions into a filesystem that is not the local disk (TensorFlow's ram://).

ram:// renames are not treated as atomic (only local disks and HDFS are), so these runs take the
object-store path of trainer/publish.py: copy under a ``.publishing-<version>`` file, marker last.
The server's version discovery (serving/models.py) reads the same ram:// paths.
"""
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf

from contracts import completion
from contracts.warmup import WARMUP_FILE
from recsys import fileio
from serving.models import ModelManager, list_versions, parse_version, single_model_config
from trainer import export, publish


class Toy(tf.Module):
    def __init__(self, offset):
        super().__init__()
        self.offset = tf.Variable(offset)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def f(self, x):
        return {"y": x + self.offset}


def ram_base():
    return f"ram://publish-{uuid.uuid4().hex[:8]}/models"


def served_versions(model_dir):
    manager = ModelManager(single_model_config("m", model_dir), poll_seconds=0, warmup=False)
    manager.poll()
    return manager.available_versions("m")


class Crash(BaseException):
    """What a kill looks like from inside: no handler runs (ram:// dies with its process, so the
    'process' here is this one, with a pid that is dead for recover())."""


def test_export_set_on_ram_appears_complete_and_together():
    base = ram_base()
    assert not fileio.renames_atomically(base)   # the copy path, as on gs:// and s3://
    m = Toy(1.0)
    with publish.export_set(base):
        export.save_atomically(m, {"serving_default": m.f}, base, "first", 3)
        export.save_atomically(m, {"serving_default": m.f}, base, "second", 3)
        for name in ("first", "second"):   # staged under non-integer names only
            entries = fileio.listdir(fileio.join(base, name))
            assert entries and all(parse_version(e) is None for e in entries), entries
            assert list_versions(fileio.join(base, name)) == {}
    for name in ("first", "second"):
        model_dir = fileio.join(base, name)
        assert fileio.listdir(model_dir) == ["3"]              # no temporaries, no .publishing- left
        path = fileio.join(model_dir, "3")
        assert completion.check(path, completion.file_sizes(path))[0] == "complete"
        assert list(list_versions(model_dir)) == [3]
    assert not fileio.glob(fileio.join(base, ".publish-*"))  # journal gone
    out = tf.saved_model.load(fileio.join(base, "second", "3")).signatures["serving_default"](tf.constant([1.0]))
    np.testing.assert_allclose(out["y"].numpy(), [2.0])
    assert served_versions(fileio.join(base, "first")) == [3]   # the server's discovery, on ram://


def test_crash_mid_copy_leaves_no_visible_version_and_recover_finishes_it(monkeypatch):
    base = ram_base()
    m = Toy(5.0)
    real_copy, copies = tf.io.gfile.copy, []

    def copy(src, dst, overwrite=False):
        if "/second/7/" in dst and len([c for c in copies if "/second/7/" in c]) == 2:
            raise Crash()   # killed in the middle of the second model's copy
        real_copy(src, dst, overwrite=overwrite)
        copies.append(dst)

    monkeypatch.setattr(tf.io.gfile, "copy", copy)
    monkeypatch.setattr(os, "getpid", lambda: 999999)   # this export's pid: gone by the time recover() runs
    with pytest.raises(Crash):
        with publish.export_set(base):
            for name in ("first", "second"):
                export.save_atomically(m, {"serving_default": m.f}, base, name, 7)
    monkeypatch.undo()
    assert any("/first/7/" in c for c in copies)         # the first model was copied completely
    partial = fileio.join(base, "second", "7")
    assert fileio.isdir(partial) and not fileio.exists(fileio.join(partial, "saved_model.pb"))
    for name in ("first", "second"):   # neither is visible: the set appears together or not at all
        assert list_versions(fileio.join(base, name)) == {}
        assert served_versions(fileio.join(base, name)) == []

    done = publish.recover(base)                          # what the next export does first
    assert sorted(done) == [fileio.join(base, "first", "7"), fileio.join(base, "second", "7")]
    for name in ("first", "second"):
        model_dir = fileio.join(base, name)
        assert fileio.listdir(model_dir) == ["7"]
        path = fileio.join(model_dir, "7")
        assert completion.check(path, completion.file_sizes(path))[0] == "complete"
        assert served_versions(model_dir) == [7]
    assert not fileio.glob(fileio.join(base, ".publish-*"))
    out = tf.saved_model.load(fileio.join(base, "second", "7")).signatures["serving_default"](tf.constant([1.0]))
    np.testing.assert_allclose(out["y"].numpy(), [6.0])


def test_single_version_publish_on_ram_and_immutability():
    base = ram_base()
    m = Toy(2.0)
    path = export.save_atomically(m, {"serving_default": m.f}, base, "solo", 1,
                                  warmup={"x": np.array([1.0], np.float32)})
    assert path == fileio.join(base, "solo", "1") and fileio.listdir(fileio.join(base, "solo")) == ["1"]
    assert fileio.exists(fileio.join(path, WARMUP_FILE))
    assert completion.check(path, completion.file_sizes(path))[0] == "complete"
    with pytest.raises(FileExistsError):
        export.save_atomically(m, {"serving_default": m.f}, base, "solo", 1)
    assert fileio.listdir(fileio.join(base, "solo")) == ["1"]
