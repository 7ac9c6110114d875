"""recsys.fileio on the local disk and on ram:// (a filesystem that is not the local disk)."""
import uuid

import numpy as np
import pytest

from recsys import fileio
from recsys.config import Config, ConfigError, load_config


@pytest.fixture(params=["local", "ram"])
def base(request, tmp_path):
    return str(tmp_path) if request.param == "local" else f"ram://fileio-{uuid.uuid4().hex[:8]}"


def test_files_arrays_and_trees(base):
    fileio.write_text(fileio.join(base, "a", "b", "c.txt"), "héllo")
    fileio.write_json(fileio.join(base, "a", "j.json"), {"x": [1, 2]}, atomic=True)
    fileio.np_save(fileio.join(base, "a", "v.npy"), np.arange(6, dtype=np.float32).reshape(2, 3))
    fileio.makedirs(fileio.join(base, "a", "empty"))
    assert fileio.read_text(fileio.join(base, "a", "b", "c.txt")) == "héllo"
    assert fileio.read_json(fileio.join(base, "a", "j.json")) == {"x": [1, 2]}
    np.testing.assert_array_equal(fileio.np_load(fileio.join(base, "a", "v.npy")), np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError):   # no pickles
        fileio.np_save(fileio.join(base, "a", "o.npy"), np.array([{"x": 1}], dtype=object))
    assert fileio.listdir(fileio.join(base, "a")) == ["b", "empty", "j.json", "v.npy"]
    assert fileio.files_under(fileio.join(base, "a")) == ["b/c.txt", "j.json", "v.npy"]
    order = []
    fileio.copy_tree(fileio.join(base, "a"), fileio.join(base, "copy"), order=lambda r: (r == "j.json", r),
                     on_file=order.append)
    assert order == ["b/c.txt", "v.npy", "j.json"] and fileio.isdir(fileio.join(base, "copy", "empty"))
    fileio.rename_or_copy(fileio.join(base, "copy"), fileio.join(base, "moved"))
    assert not fileio.exists(fileio.join(base, "copy"))
    assert fileio.files_under(fileio.join(base, "moved")) == ["b/c.txt", "j.json", "v.npy"]
    with fileio.open_write(fileio.join(base, "lines.txt")) as f:
        f.write(b"one\ntwo\n")
    with fileio.open_read(fileio.join(base, "lines.txt"), buffer_size=3) as f:
        assert list(f) == [b"one\n", b"two\n"]
    with fileio.open_write(fileio.join(base, "empty.txt")):
        pass
    assert fileio.exists(fileio.join(base, "empty.txt")) and fileio.size(fileio.join(base, "empty.txt")) == 0
    fileio.rmtree(fileio.join(base, "moved"))
    fileio.rmtree(fileio.join(base, "moved"))   # already gone: fine
    assert not fileio.exists(fileio.join(base, "moved"))


def test_ram_names_are_exact_not_prefixes():
    base = f"ram://fileio-{uuid.uuid4().hex[:8]}"
    fileio.write_text(f"{base}/v/assets/a.txt", "a")
    fileio.write_text(f"{base}/v/assets.extra/b.txt", "b")
    fileio.write_text(f"{base}/m/30/x", "x")
    assert fileio.listdir(f"{base}/v/assets") == ["a.txt"]           # tf.io.gfile also lists ".extra"
    assert not fileio.exists(f"{base}/m/3") and not fileio.isdir(f"{base}/m/3")   # tf: both True
    fileio.rmtree(f"{base}/v/assets")                                  # tf.io.gfile.rmtree raises here
    assert fileio.files_under(f"{base}/v") == ["assets.extra/b.txt"]


def test_only_local_disks_and_hdfs_rename_atomically():
    assert fileio.renames_atomically("/tmp/x") and fileio.renames_atomically("file:///tmp/x")
    assert fileio.renames_atomically("hdfs://nn/x")
    assert not any(fileio.renames_atomically(p) for p in ("gs://b/x", "s3://b/x", "ram://x"))


def test_config_save_and_load_on_ram():
    base = f"ram://fileio-{uuid.uuid4().hex[:8]}"
    fileio.write_text(f"{base}/c.yaml", "train:\n  epochs: 7\n")
    assert load_config(f"{base}/c.yaml").train.epochs == 7
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(f"{base}/missing.yaml")
    Config().save(f"{base}/run/config.json")
    assert fileio.read_json(f"{base}/run/config.json")["train"]["epochs"] == Config().train.epochs
