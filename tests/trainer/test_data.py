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


def test_skip_repeats_leaves_out_only_events_whose_item_is_in_their_history(preprocessed):
    import tensorflow as tf

    f = {"user_id": tf.constant([b"a", b"a", b"b", b"b"]), T.TIMESTAMP: tf.constant([1, 2, 3, 4], tf.int64),
         T.ITEM_IDX: tf.constant([5, 7, 0, 3], tf.int64),
         T.HISTORY_IDX: tf.constant([[-1, 5], [5, 6], [-1, -1], [3, -1]], tf.int64)}
    assert data._keep_mask(f, None, None, skip_repeats=True).numpy().tolist() == [False, True, True, False]
    assert data._keep_mask(f, None, None).numpy().all()
    # the synthetic users never repeat an item: nothing is left out, padding (-1) never matches
    assert _rows(preprocessed, keep="train", skip_repeats=True) == _rows(preprocessed, keep="train")


def test_a_cut_per_user_holds_out_the_same_events_in_tf_data_numpy_and_train_stats(preprocessed):
    """tune.holdout_by=user: each user's own cut; the training input, the statistics and item2vec's sequences
    (numpy) must agree on which events are earlier, and the time window's lower end takes the same cut."""
    from trainer import tune

    everything = _rows(preprocessed)
    users = np.array([u.decode() for u, _ in everything])
    times = np.array([t for _, t in everything], np.int64)
    cut = tune.user_cut(users, times)
    assert 0.9 * len(set(users)) <= len(cut) <= len(set(users))   # users with an earlier event to train on
    early = _rows(preprocessed, time_range=(None, cut))
    late = _rows(preprocessed, time_range=(cut, None))
    assert sorted(early + late) == sorted(everything) and not set(early) & set(late)
    mask = data.before_mask(users, times, cut)
    assert early == [r for r, m in zip(everything, mask) if m]
    assert {u for u, _ in late} == {u.encode() for u in cut.cut}, "one latest event (or tie) per listed user"
    last = {}
    for u, t in zip(users, times):
        last[u] = max(last.get(u, t), t)
    assert all(t == last[u.decode()] for u, t in late)
    catalogue = data.load_catalogue(preprocessed)
    from preprocessing import schema

    n = data.transform_output(preprocessed).vocabulary_size_by_name(schema.VOCAB_ITEM) + 1
    assert data.train_stats(preprocessed, catalogue, n, before_ts=cut).n_examples == len(early)
    assert cut == tune.user_cut(users[::-1], times[::-1]) and hash(cut) == hash(tune.user_cut(users, times))
    assert data.before_mask(users, times, None).all() and data.before_mask(users, times, 0).sum() == 0


def test_user_cut_on_a_hand_built_log():
    from trainer import tune

    users = np.array(["a", "a", "a", "a", "b", "c", "c", "é"])
    times = np.array([1, 2, 5, 5, 3, 4, 4, 9], np.int64)
    cut = tune.user_cut(users, times)
    assert cut.cut == {"a": 5}, "b has one event, c two at one time, é one: nothing earlier to train on"
    assert data.before_mask(users, times, cut).tolist() == [True, True, False, False, True, True, True, True]
