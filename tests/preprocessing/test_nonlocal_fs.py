"""The Beam + TF-Transform pipeline with input and output on a filesystem that is not the local disk.

TensorFlow's ram:// (in this process's memory) stands in for gs:// / s3://: raw tables written there,
the real pipeline (DirectRunner, in process) reading and writing there through Beam's FileSystems
(preprocessing/ram_filesystem.py) and tf.io.gfile, and the output read back from there with
TFTransformOutput and tf.data, checked against the raw events (every valid event exactly once, split
at the cutoff). The run checked is the session's ram:// pipeline run (tests/conftest.py ``ram_pipeline``:
its ingest and preprocess stages), as each preprocessing run costs ~35 s of CPU.
"""
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from preprocessing import pipeline, schema
from preprocessing.sources import load_source, tables, write_raw
from recsys import fileio
from recsys.config import load_config

TINY = ["data.n_users=30", "data.n_items=20", "data.events_per_user=8"]


def count_records(version_dir, split):
    files = tf.io.gfile.glob(f"{version_dir}/transformed/{split}-*.tfrecord.gz")
    assert files, f"no {split} files under {version_dir}"
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def events(version_dir, split, spec):
    """(user_id, item_id, timestamp) of every transformed row, sorted (shard order may differ)."""
    files = tf.io.gfile.glob(f"{version_dir}/transformed/{split}-*.tfrecord.gz")
    out = []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024).map(
            lambda x: tf.io.parse_example(x, spec)):
        out += zip(batch["user_id"].numpy().ravel().tolist(), batch["item_id"].numpy().ravel().tolist(),
                   batch["timestamp"].numpy().ravel().tolist())
    return sorted(out)


@pytest.fixture(scope="module")
def run(ram_pipeline, tmp_path_factory):
    """The ram:// run's raw tables and preprocessed version, and the same config's tables written locally."""
    first = ram_pipeline["first"]
    local_raw = str(tmp_path_factory.mktemp("raw"))
    write_raw(load_source(ram_pipeline["cfg"].data), local_raw)
    return {"local_raw": local_raw, "raw": first["ingest"]["raw"].uri,
            "version": first["preprocess"]["preprocessed"].uri}


def test_raw_tables_on_ram_are_the_local_bytes(run):
    for name in ("interactions.jsonl.gz", "items.jsonl", "users.jsonl"):
        assert fileio.read_bytes(f"{run['raw']}/{name}") == fileio.read_bytes(f"{run['local_raw']}/{name}")


def test_preprocessing_on_ram_writes_every_raw_event_once_split_by_time(run):
    version = run["version"]
    assert version.startswith("ram://")
    raw = [(e["user_id"].encode(), e["item_id"].encode(), e["timestamp"])   # read back from ram:// too
           for e in tables.read_interactions(f"{run['raw']}/{tables.INTERACTIONS_FILE}")]
    stats = pipeline.load_stats(version)
    cutoff = stats["split_cutoff_ts"]
    assert stats["dead_letters"] == 0 and stats["train"] + stats["eval"] == len(raw) > 0
    out = tft.TFTransformOutput(f"{version}/transform_fn")     # the transform graph, read back from ram://
    spec = out.transformed_feature_spec()
    train, ev = events(version, "train", spec), events(version, "eval", spec)
    assert len(train) == count_records(version, "train") == stats["train"] > 0
    assert len(ev) == count_records(version, "eval") == stats["eval"] > 0
    assert train == sorted(e for e in raw if e[2] < cutoff) and ev == sorted(e for e in raw if e[2] >= cutoff)
    vocab = set(out.vocabulary_by_name(schema.VOCAB_USER))   # analyzers saw the train split only
    assert vocab == {u for u, _, _ in train}
    assert fileio.read_bytes(f"{version}/items.jsonl") == fileio.read_bytes(f"{run['local_raw']}/items.jsonl")
    assert fileio.exists(f"{version}/raw_schema.json") and not fileio.exists(f"{version}/tmp")


def test_ram_paths_need_the_in_process_runner():
    cfg = load_config(overrides=TINY + ["preprocess.direct_running_mode=multi_processing",
                                        "preprocess.direct_num_workers=2"])
    opts = pipeline.beam_options(cfg, ("ram://x/raw",)).get_all_options()
    assert (opts["direct_running_mode"], opts["direct_num_workers"]) == ("in_memory", 1)
    assert pipeline.beam_options(cfg, ("/tmp/raw",)).get_all_options()["direct_running_mode"] == "multi_processing"
    cfg.preprocess.runner = "DataflowRunner"
    with pytest.raises(ValueError, match="ram://"):
        pipeline.beam_options(cfg, ("ram://x/raw",))
