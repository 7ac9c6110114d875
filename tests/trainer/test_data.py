"""trainer.data: the train/valid split and the time window select rows, never reorder or lose them."""
import numpy as np

from preprocessing.schema import T
from trainer import data


def _rows(version_dir, **kw):
    spec = data.transform_output(version_dir).transformed_feature_spec()
    batches = list(data.dataset(version_dir, "train", 256, spec, **kw))
    assert all(len(b["user_id"]) == 256 for b in batches[:-1])  # full batches after filtering
    return [(u, t) for b in batches for u, t in zip(b["user_id"].numpy(), b[T.TIMESTAMP].numpy())]


def test_train_and_valid_partition_the_train_split_and_the_window_bounds_time(preprocessed):
    everything = _rows(preprocessed)
    train, valid = _rows(preprocessed, keep="train"), _rows(preprocessed, keep="valid")
    assert 0.02 < len(valid) / len(everything) < 0.08  # ~5% by a stable hash of user and time
    assert not set(train) & set(valid)
    # in file order: each split is the unfiltered stream with the other split's rows taken out
    assert sorted(train + valid) == sorted(everything)
    in_valid = set(valid)
    assert [r for r in everything if r in in_valid] == valid
    cut = int(np.median([t for _, t in everything]))
    early = _rows(preprocessed, keep="train", time_range=(None, cut))
    assert early and all(t < cut for _, t in early)
    assert early == [r for r in train if r[1] < cut]


def test_training_input_runs_without_the_autotuning_thread_whose_sleep_stalled_every_epoch(preprocessed):
    ds = data.dataset(preprocessed, "train", 64, shuffle=True, keep="train")
    assert ds.options().autotune.enabled is False
    first = next(iter(ds))
    assert first["user_id"].shape[0] == 64  # and it still reads batches
