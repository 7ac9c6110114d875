"""tf.data input from the TF-Transform output, plus the item catalogue and train-set statistics.

Everything here reads files written by ``preprocessing.pipeline`` (a version
directory), so training can run on another machine than preprocessing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import weakref
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from preprocessing import schema
from preprocessing.utf8 import to_str
from preprocessing.schema import T

ITEMS_FILE = "items.jsonl"


class UserCut:
    """A cut time per user: each listed user's events at or after their own time are "later" (a leave-last-out
    holdout); users not listed have no later events. It stands wherever one cut time does (``before_ts``, either
    end of ``time_range``), so every reader of the train split holds out the same events."""

    NEVER = np.iinfo(np.int64).max

    def __init__(self, cut: Dict[str, int]):
        self.cut = {str(u): int(t) for u, t in cut.items()}
        text = json.dumps(sorted(self.cut.items()), ensure_ascii=False)
        self.digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        self._table = None

    def __len__(self) -> int:
        return len(self.cut)

    def __eq__(self, other) -> bool:   # (item2vec's memo keys on it)
        return isinstance(other, UserCut) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"UserCut({len(self.cut)} users, {self.digest})"

    def times(self, users: np.ndarray) -> np.ndarray:
        """[n] int64: each event's user's cut (NEVER for users not listed)."""
        return np.fromiter((self.cut.get(u, self.NEVER) for u in to_str(users)), np.int64, len(users))

    def table(self) -> tf.lookup.StaticHashTable:
        """user_id -> cut, for tf.data filters (built once, eagerly, outside any traced function)."""
        if self._table is None:
            keys = tf.constant(list(self.cut) or [""], tf.string)
            values = tf.constant(list(self.cut.values()) or [self.NEVER], tf.int64)
            self._table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), self.NEVER)
        return self._table


Cut = Union[int, UserCut]


def before_mask(users: np.ndarray, times: np.ndarray, cut: Optional[Cut]) -> np.ndarray:
    """[n] bool: the events before ``cut`` (all of them when it is None)."""
    if cut is None:
        return np.ones(len(times), bool)
    return times < (cut.times(users) if isinstance(cut, UserCut) else cut)


def transform_output(version_dir: str) -> tft.TFTransformOutput:
    return tft.TFTransformOutput(os.path.join(version_dir, "transform_fn"))


def files(version_dir: str, split: str) -> List[str]:
    found = sorted(tf.io.gfile.glob(os.path.join(version_dir, "transformed", f"{split}-*.tfrecord.gz")))
    if not found:
        raise FileNotFoundError(f"no {split} TFRecords in {version_dir}/transformed")
    return found


def dataset(version_dir: str, split: str, batch_size: int, spec: Optional[Dict] = None, shuffle: bool = False,
            seed: int = 0, shuffle_buffer: int = 10000, keep: Optional[str] = None,
            time_range: Optional[Tuple[Optional[int], Optional[int]]] = None,
            skip_repeats: bool = False) -> tf.data.Dataset:
    """Batches of transformed features (dicts of dense tensors).

    ``keep`` = "train" / "valid" splits the train files at event level (5% valid,
    by a stable hash of user and time) so early stopping never looks at the eval split.
    ``time_range`` = (start, end) keeps events with start <= timestamp < end (None = open):
    how the ranker's out-of-fold retriever is trained on the earlier part of the train split.
    ``skip_repeats``: leaves out events whose item is already in the event's own history (re-consumption
    within the last ``history_length`` items), the events evaluation leaves out too.
    """
    spec = spec or transform_output(version_dir).transformed_feature_spec()
    ds = tf.data.TFRecordDataset(files(version_dir, split), compression_type="GZIP")
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if keep is not None or time_range is not None or skip_repeats:
        # filtered as serialized records, reading only the keys the filter needs: per-record work on a few
        # keys instead of ~30 parsed tensors (an epoch 3x faster); the same records in the same order
        keys = ("user_id", T.TIMESTAMP) + ((T.ITEM_IDX, T.HISTORY_IDX) if skip_repeats else ())
        key_spec = {k: spec[k] for k in keys}
        for end in time_range or ():
            if isinstance(end, UserCut):
                end.table()   # created here, eagerly; the filter below captures it
        kept = lambda x: tf.boolean_mask(x, _keep_mask(tf.io.parse_example(x, key_spec), keep, time_range,  # noqa: E731
                                                       skip_repeats))
        ds = ds.batch(4096).map(kept, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = ds.batch(batch_size).map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotune_model(ds.prefetch(tf.data.AUTOTUNE))


def without_autotune_model(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` without tf.data's autotuning model thread.

    That thread sleeps between optimisations, and destroying an iterator waits for it to wake. Keras makes
    new train and validation iterators every epoch, so with other TensorFlow processes on the machine (the
    demo's second interpreter, the fresh-process reloads) each epoch boundary stalled 1-4 s with the CPU
    idle: the demo's two-tower, 5 epochs, 26-31 s -> 22-24 s beside two idle TensorFlow processes, the
    epochs themselves unchanged (3.3-3.6 s). AUTOTUNE settings keep tf.data's starting values instead.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _keep_mask(f: Dict[str, tf.Tensor], keep: Optional[str],
               time_range: Optional[Tuple[Optional[int], Optional[int]]], skip_repeats: bool = False) -> tf.Tensor:
    """[batch] bool: the rows of ``dataset``'s ``keep`` split inside its ``time_range`` (first-time events only
    with ``skip_repeats``; history padding is -1, never an item index)."""
    ok = tf.ones_like(f[T.TIMESTAMP], tf.bool)
    if skip_repeats:
        item = tf.reshape(f[T.ITEM_IDX], [-1, 1])
        ok = tf.logical_not(tf.reduce_any(tf.equal(f[T.HISTORY_IDX], item), axis=1))
    if keep is not None:
        ok = tf.logical_and(ok, _is_valid(f) if keep == "valid" else tf.logical_not(_is_valid(f)))
    if time_range is not None:
        ok = tf.logical_and(ok, _in_range(f, *time_range))
    return ok


def _in_range(f: Dict[str, tf.Tensor], lo: Optional[Cut], hi: Optional[Cut]) -> tf.Tensor:
    ok = tf.constant(True)
    if lo is not None:
        ok = tf.logical_and(ok, tf.logical_not(_before(f, lo)))
    if hi is not None:
        ok = tf.logical_and(ok, _before(f, hi))
    return ok


def _before(f: Dict[str, tf.Tensor], cut: Cut) -> tf.Tensor:
    """[batch] bool: the rows before ``cut`` (one time, or each user's own)."""
    ts = f[T.TIMESTAMP]
    return ts < (cut.table().lookup(f["user_id"]) if isinstance(cut, UserCut) else cut)


def _is_valid(f) -> tf.Tensor:
    key = tf.strings.join([f["user_id"], tf.strings.as_string(f[T.TIMESTAMP])])
    return tf.equal(tf.strings.to_hash_bucket_fast(key, 20), 0)


# ---------------------------------------------------------------- traced calls
_TRACED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def traced(layer, inputs: Dict[str, tf.Tensor], **kwargs):
    """``layer(x, **kwargs)`` as one tf.function per layer, input keys and kwargs, for any batch size (the
    input signature leaves the batch dimension open): traced once, not on every call or batch shape."""
    fns = _TRACED.setdefault(layer, {})
    key = (tuple(sorted(inputs)), tuple(sorted(kwargs.items())))
    if key not in fns:
        spec = {k: tf.TensorSpec([None, *inputs[k].shape[1:]], inputs[k].dtype) for k in key[0]}
        ref = weakref.ref(layer)  # a strong reference here would keep the cache's key alive forever
        fns[key] = tf.function(lambda x: ref()(x, **kwargs), input_signature=[spec])
    return fns[key]


def transform(tft_layer, raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """``tft_layer(raw)`` through ``traced``: an eager call of the (tf.compat.v1-traced) transform graph prunes
    it afresh (~0.1-0.3 s a call); the function, after one trace, takes milliseconds."""
    return traced(tft_layer, raw)(raw)


# ---------------------------------------------------------------- catalogue
@dataclasses.dataclass
class Catalogue:
    """All items that can be recommended, in a fixed order (index = position)."""

    item_ids: np.ndarray                 # [n] str
    raw: Dict[str, np.ndarray]           # raw item features (schema ITEM columns)

    @property
    def size(self) -> int:
        return len(self.item_ids)

    def index(self) -> Dict[str, int]:
        return {i: n for n, i in enumerate(self.item_ids.tolist())}

    def raw_tensors(self) -> Dict[str, tf.Tensor]:
        return {k: tf.constant(v) for k, v in self.raw.items()}

    def transformed(self, tft_layer, batch_size: int = 4096) -> Dict[str, tf.Tensor]:
        """Item features through the transform graph (TFT prunes it to the item inputs)."""
        parts = []
        for start in range(0, self.size, batch_size):
            batch = {k: tf.constant(v[start:start + batch_size]) for k, v in self.raw.items()}
            parts.append(transform(tft_layer, batch))
        return {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]}


def load_catalogue(version_dir: str) -> Catalogue:
    rows = []
    with tf.io.gfile.GFile(os.path.join(version_dir, ITEMS_FILE)) as f:
        for line in f:
            rows.append(json.loads(line))
    raw = {}
    for name in schema.CANDIDATE_FEATURES:
        col = schema.COLUMNS[name]
        dtype = {"string": object, "int64": np.int64, "float32": np.float32}[col.dtype]
        raw[name] = np.array([r.get(name, col.default) for r in rows], dtype=dtype)
    raw["item_id"] = to_str(raw["item_id"])
    return Catalogue(item_ids=raw["item_id"], raw=raw)


# ---------------------------------------------------------------- statistics of the train split
@dataclasses.dataclass
class TrainStats:
    item_counts: np.ndarray               # by catalogue index
    item_idx_counts: np.ndarray           # by TFT item index (vocab + OOV)
    seen: Dict[str, np.ndarray]           # user_id -> catalogue indices seen in train
    n_examples: int
    users: np.ndarray = None              # [n] user id of every train event (for the classic baselines)
    items: np.ndarray = None              # [n] catalogue index of every train event (-1 = not in catalogue)
    times: np.ndarray = None              # [n] event time
    item_index: np.ndarray = None         # [n] TFT item index of every train event (co-visitation tables)
    servable: Optional[np.ndarray] = None  # bool by catalogue index: the items retrieval indexes (None = all;
                                           # trainer/unseen_items.py decides)
    servable_info: Optional[Dict] = None   # ... and why

    def before(self, cut: Cut) -> "TrainStats":
        """The same statistics over the events before ``cut`` only (no second pass over the files)."""
        keep = before_mask(self.users, self.times, cut)
        return _stats_of(self.users[keep], self.items[keep], self.item_index[keep], self.times[keep],
                         len(self.item_counts), len(self.item_idx_counts))


def train_stats(version_dir: str, catalogue: Catalogue, n_item_idx: int, before_ts: Optional[Cut] = None) -> TrainStats:
    """One pass over the train split (events before ``before_ts`` if given): popularity and seen items."""
    spec = {k: tf.io.FixedLenFeature([], tf.string if k in ("user_id", "item_id") else tf.int64)
            for k in ("user_id", "item_id", T.ITEM_IDX, T.TIMESTAMP)}
    ds = tf.data.TFRecordDataset(files(version_dir, "train"), compression_type="GZIP").batch(8192)
    ds = ds.map(lambda x: tf.io.parse_example(x, spec))
    index = catalogue.index()
    users, items, idx, times = [], [], [], []
    for b in ds:
        users.append(b["user_id"].numpy())
        items.append(b["item_id"].numpy())
        idx.append(b[T.ITEM_IDX].numpy())
        times.append(b[T.TIMESTAMP].numpy())
    users_a = to_str(np.concatenate(users))
    items_a = np.array([index.get(i, -1) for i in to_str(np.concatenate(items))], dtype=np.int64)
    stats = _stats_of(users_a, items_a, np.concatenate(idx), np.concatenate(times).astype(np.int64), catalogue.size,
                      n_item_idx)
    return stats if before_ts is None else stats.before(before_ts)


def _stats_of(users: np.ndarray, items: np.ndarray, item_index: np.ndarray, times: np.ndarray, n_items: int,
              n_item_idx: int) -> TrainStats:
    """Popularity (by catalogue and by TFT index) and each user's seen items, from the events' arrays."""
    item_counts = np.bincount(items[items >= 0], minlength=n_items).astype(np.float64)
    idx_counts = np.bincount(item_index, minlength=n_item_idx).astype(np.float64)
    order = np.argsort(users, kind="stable")
    seen: Dict[str, np.ndarray] = {}
    if len(order):
        su, si = users[order], items[order]
        bounds = np.flatnonzero(su[1:] != su[:-1]) + 1
        for u, chunk in zip(np.split(su, bounds), np.split(si, bounds)):
            seen[u[0]] = np.unique(chunk[chunk >= 0])
    return TrainStats(item_counts=item_counts, item_idx_counts=idx_counts, seen=seen, n_examples=len(users),
                      users=users, items=items, times=times, item_index=item_index)
