"""The Beam pipeline: read raw -> validate (dead letters) -> join -> history -> split -> TFT -> write.

One pipeline, any runner: DirectRunner locally, Dataflow/Flink/Spark with
``preprocess.runner`` and ``preprocess.beam_args``. Beam moves chunks of lines, users and
record batches, not single rows: interaction lines are read and validated a chunk at a time,
grouped by user, given their history with numpy, and handed to TF-Transform as Arrow record
batches in TFXIO's raw layout (what ``TFExampleBeamRecord`` would decode from tf.Examples,
without encoding and decoding every row; the legacy instance-dict input crashes at exit on
this stack).

Output, in a fresh version directory ``<run>/preprocessed/v<N>/`` (written under a
temporary name ``v<N>.tmp-<time>-<pid>`` and renamed, with ``LATEST`` updated last):
  transformed/train-*.tfrecord.gz, transformed/eval-*.tfrecord.gz
  transform_fn/ (+ transformed_metadata/)     TF-Transform output
  raw_schema.json                             raw feature spec (TFXIO writes none)
  dead_letter/{interactions,items,users}-*.jsonl  rows that failed validation, with why
  items.jsonl                                  the raw item catalogue (valid rows, byte for byte)
  stats.json                                   counts (rows, dead letters), split cutoff
A run that fails (too many bad rows, no usable rows) publishes nothing and leaves
``v<N>.failed-<time>/`` with its dead letters and stats until the operator removes it.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import time
from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from tensorflow.io import gfile

from preprocessing import beam_speed, example_sink, schema
from preprocessing.sources import tables
from recsys import fileio

DEAD = "dead"
EVAL = "eval"
TRANSFORMED = "transformed"
TRANSFORM_FN = "transform_fn"


# ---------------------------------------------------------------- read + parse (chunks of lines)
# The per-row work is plain Python over chunks of lines (JSON parsing and validation), then
# per-user numpy (history) and Arrow record batches straight into TF-Transform: Beam moves
# chunks, users and batches, not rows (profile: benchmarks/preprocessing.py --profile).
LINES_PER_CHUNK = 10_000
ROWS_PER_BATCH = 2_048
TIMES = "times"
EVENT_FIELDS = ("timestamp", "item_id", "rating", "click", "device")   # an event in a user's list, in order


def input_files(pattern: str) -> List[str]:
    """The files matching ``pattern`` (local or bucket), sorted; an empty list when none."""
    from apache_beam.io.filesystems import FileSystems

    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def read_line_chunks(path: str, lines_per_chunk: int = LINES_PER_CHUNK) -> Iterable[List[bytes]]:
    """The lines of one (gzipped or plain) file as bytes, ``lines_per_chunk`` at a time, without line ends.

    Bytes, so that each row is decoded strictly on its own: bad UTF-8 is a dead letter, never a crash
    of the whole read and never replacement characters.
    """
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
        chunk: List[bytes] = []
        for line in f:
            chunk.append(line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line)
            if len(chunk) >= lines_per_chunk:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


class ParseInteractions(beam.DoFn):
    """A chunk of raw interaction lines -> (user_id, [event tuples]) per user in the chunk, plus the
    chunk's valid timestamps (TIMES, for the split); bad rows -> DEAD with a reason.

    Bad rows are dead letters, never a crash or silent damage: invalid UTF-8, invalid JSON,
    missing/mistyped fields, non-finite or out-of-range numbers, event times in the future or
    beyond int64, unknown item ids.
    """

    def process(self, lines: List[bytes], items: Dict[str, Any], max_ts: int):
        by_user: Dict[str, List[Tuple]] = {}
        times: List[int] = []
        for line in lines:
            row, why = tables.parse_interaction(line, max_ts)
            if why is None and row["item_id"] not in items:
                why = f"unknown item_id {row['item_id']!r} (not in items table)"
            if why is not None:
                yield beam.pvalue.TaggedOutput(DEAD, {"reason": why, "text": tables.printable(line)})
                continue
            device = row.get("device")
            event = (row["timestamp"], row["item_id"], row["rating"], row["click"],
                     "unknown" if device is None else device)
            events = by_user.get(row["user_id"])
            if events is None:
                by_user[row["user_id"]] = [event]
            else:
                events.append(event)
            times.append(event[0])
        yield from by_user.items()
        if times:
            yield beam.pvalue.TaggedOutput(TIMES, np.asarray(times, dtype=np.int64))


class ParseTableRow(beam.DoFn):
    """items.jsonl / users.jsonl line -> (id, row); bad lines -> DEAD output (their id is then unknown)."""

    def __init__(self, key: str):
        self.key = key
        self.validate = tables.validate_item if key == "item_id" else tables.validate_user

    def process(self, line: bytes):
        row, why = tables.parse_json_line(line)
        if why is None:
            why = self.validate(row)
        if why is not None:
            yield beam.pvalue.TaggedOutput(DEAD, {"reason": why, "text": tables.printable(line)})
            return
        yield row[self.key], row


# ---------------------------------------------------------------- history (no leakage), per user, vectorised
def history_positions(ts: np.ndarray, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """For events sorted by time: [n, length] indices of each event's history and a mask of real entries.

    The history of event i is the last ``length`` events with a strictly earlier timestamp, oldest
    first and left-padded; events that share a timestamp never see each other (MovieLens rates in
    bursts), so no event's features can contain its own future.
    """
    visible = np.searchsorted(ts, ts, side="left")              # events strictly before each one
    pos = visible[:, None] - length + np.arange(length)[None, :]
    real = pos >= 0
    return np.where(real, pos, 0), real


class BuildBatches(beam.DoFn):
    """Users' events -> Arrow record batches of about ``rows`` rows in the raw TFXIO layout (every column a
    large_list), which TF-Transform reads directly: joined with the user and item tables, each event with
    its history, split at the time cutoff into the main output (train) and EVAL.

    Columnar: per user only integer columns are built (item positions in an item table, history as
    positions, times, labels); strings are gathered per batch with Arrow ``take`` from tables of the
    distinct items, users and devices, instead of one Python bytes object per value (a history alone is
    20 strings a row). Batches are cut exactly where a per-split buffer first reaches ``rows`` rows (and
    at the end of a bundle), so their boundaries, and every row's position, do not depend on how the
    columns are built.
    """

    SPLITS = ("train", EVAL)

    def __init__(self, history_length: int, arrow_schema, rows: int = ROWS_PER_BATCH):
        self.length = history_length
        self.arrow_schema = arrow_schema
        self.rows = rows

    def setup(self):
        self._items_of = None      # the items side input the item table was built from

    def start_bundle(self):
        self._buffers = {split: [] for split in self.SPLITS}
        self._sizes = dict.fromkeys(self.SPLITS, 0)
        self._devices: Dict[str, int] = {}

    def _item_table(self, items: Dict[str, Any]) -> None:
        """Item id -> position, and the item columns by position (position len(items) = the '' padding)."""
        if self._items_of is items:
            return
        ids, titles, genres, prices, releases = [], [], [], [], []
        for item_id, raw in items.items():
            row = tables.with_defaults(raw, schema.ITEM_FIELDS)
            ids.append(item_id.encode())
            titles.append(row["item_title"].encode())
            genres.append(row["item_genres"].encode())
            prices.append(row["item_price"])
            releases.append(row["item_release_ts"])
        self._item_pos = {item_id: i for i, item_id in enumerate(items)}
        self._item_cols = {"item_id": pa.array(ids + [b""], type=pa.large_binary()),
                           "item_title": pa.array(titles, type=pa.large_binary()),
                           "item_genres": pa.array(genres, type=pa.large_binary()),
                           "item_price": np.array(prices, dtype=np.float32),
                           "item_release_ts": np.array(releases, dtype=np.int64)}
        self._items_of = items

    def process(self, user_events: Tuple[str, Iterable[List[Tuple]]], items: Dict[str, Any],
                users: Dict[str, Any], cutoff: int):
        self._item_table(items)
        user_id, parts = user_events
        events = sorted((e for part in parts for e in part), key=lambda e: (e[0], e[1]))
        n = len(events)
        ts = np.fromiter((e[0] for e in events), dtype=np.int64, count=n)
        item_pos = np.fromiter((self._item_pos[e[1]] for e in events), dtype=np.int64, count=n)
        devices = self._devices
        device = np.fromiter((devices.setdefault(e[4], len(devices)) for e in events), dtype=np.int64, count=n)
        pos, real = history_positions(ts, self.length)
        rating = np.array([e[2] for e in events], dtype=np.float32)
        user = tables.with_defaults(users.get(user_id, {"user_id": user_id}), schema.USER_FIELDS)
        user_row = (user_id.encode(), user["user_age_bucket"].encode(), user["user_country"].encode(),
                    user["user_signup_ts"])
        cols = {
            "item": item_pos,
            "timestamp": ts,
            "device": device,
            "history_item_ids": np.where(real, item_pos[pos], len(items)),
            "history_ts": np.where(real, ts[pos], 0),
            "history_ratings": np.where(real, rating[pos], 0).astype(np.float32),
            "rating": rating,
            "click": np.array([e[3] for e in events], dtype=np.float32),
        }
        n_train = int(np.searchsorted(ts, cutoff, side="left"))  # sorted by time: train = ts < cutoff
        if n_train:
            yield from self._add("train", user_row, {k: v[:n_train] for k, v in cols.items()} if n_train < n else cols)
        if n_train < n:
            for batch in self._add(EVAL, user_row, {k: v[n_train:] for k, v in cols.items()}):
                yield beam.pvalue.TaggedOutput(EVAL, batch)

    def _add(self, split: str, user_row: Tuple, chunk: Dict[str, np.ndarray]):
        self._buffers[split].append((user_row, chunk))
        self._sizes[split] += len(chunk["timestamp"])
        if self._sizes[split] >= self.rows:
            yield self._flush(split)

    def finish_bundle(self):
        from apache_beam.transforms import window
        from apache_beam.utils.windowed_value import WindowedValue

        for split in self.SPLITS:
            if self._buffers[split]:
                batch = WindowedValue(self._flush(split), window.GlobalWindow().max_timestamp(),
                                      (window.GlobalWindow(),))
                yield batch if split == "train" else beam.pvalue.TaggedOutput(EVAL, batch)

    def _flush(self, split: str) -> "pa.RecordBatch":
        chunks, n = self._buffers[split], self._sizes[split]
        self._buffers[split], self._sizes[split] = [], 0
        col = {k: np.concatenate([c[k] for _, c in chunks]) for k in chunks[0][1]}
        user_pos = pa.array(np.repeat(np.arange(len(chunks)), [len(c["timestamp"]) for _, c in chunks]))
        users = list(zip(*(u for u, _ in chunks)))
        device_names = sorted(self._devices, key=self._devices.get)
        item_pos = pa.array(col["item"])
        flat = {
            "user_id": pa.array(users[0], type=pa.large_binary()).take(user_pos),
            "user_age_bucket": pa.array(users[1], type=pa.large_binary()).take(user_pos),
            "user_country": pa.array(users[2], type=pa.large_binary()).take(user_pos),
            "user_signup_ts": np.array(users[3], dtype=np.int64)[user_pos.to_numpy()],
            "item_id": self._item_cols["item_id"].take(item_pos),
            "item_title": self._item_cols["item_title"].take(item_pos),
            "item_genres": self._item_cols["item_genres"].take(item_pos),
            "item_price": self._item_cols["item_price"][col["item"]],
            "item_release_ts": self._item_cols["item_release_ts"][col["item"]],
            "timestamp": col["timestamp"],
            "device": pa.array([d.encode() for d in device_names], type=pa.large_binary()).take(
                pa.array(col["device"])),
            "history_item_ids": self._item_cols["item_id"].take(pa.array(col["history_item_ids"].ravel())),
            "history_ts": col["history_ts"].ravel(),
            "history_ratings": col["history_ratings"].ravel(),
            "rating": col["rating"],
            "click": col["click"],
        }
        arrays = []
        for field in self.arrow_schema:
            values = flat[field.name]
            width = len(values) // n
            offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int64))
            if not isinstance(values, pa.Array):
                values = pa.array(values, type=field.type.value_type)
            arrays.append(pa.LargeListArray.from_arrays(offsets, values))
        return pa.RecordBatch.from_arrays(arrays, schema=self.arrow_schema)


# ---------------------------------------------------------------- time split
class ExactQuantile(beam.CombineFn):
    """Exact quantile of int timestamps, fed as arrays (8 bytes a row: fine up to ~100M rows on one worker)."""

    def __init__(self, q: float):
        self.q = q

    def create_accumulator(self):
        return []

    def add_input(self, acc, x):
        acc.append(np.asarray(x, dtype=np.int64).ravel())
        return acc

    def merge_accumulators(self, accs):
        return [x for a in accs for x in a]

    def extract_output(self, acc):
        if not acc or not sum(len(a) for a in acc):
            return 0
        return int(np.quantile(np.concatenate(acc), self.q, method="lower"))


# ---------------------------------------------------------------- output
def _with_schema(record_batch_and_props, schema_proto):
    """(transformed record batch, its TFMD schema): what ``example_sink.ExampleBatchSink`` writes."""
    return record_batch_and_props[0], schema_proto


# ---------------------------------------------------------------- the pipeline
def beam_options(cfg, paths=()) -> beam.options.pipeline_options.PipelineOptions:
    args = [f"--runner={cfg.preprocess.runner}"] + list(cfg.preprocess.beam_args)
    in_ram = any(str(p).startswith("ram://") for p in paths)
    if in_ram:   # TensorFlow's in-memory filesystem exists only in this process: Beam must run here too
        from preprocessing import ram_filesystem  # noqa: F401  (registers ram:// with Beam)

        if cfg.preprocess.runner != "DirectRunner":
            raise ValueError(f"ram:// paths live in this process's memory; preprocess.runner="
                             f"{cfg.preprocess.runner} cannot reach them (use DirectRunner)")
    if cfg.preprocess.runner == "DirectRunner":
        workers, mode = (1, "in_memory") if in_ram else (cfg.preprocess.direct_num_workers,
                                                          cfg.preprocess.direct_running_mode)
        args += [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    return beam.options.pipeline_options.PipelineOptions(args)


def next_version_dir(base: str) -> str:
    gfile.makedirs(base)
    used = [int(d[1:]) for d in fileio.listdir(base) if d.startswith("v") and d[1:].isdigit()]
    return os.path.join(base, f"v{max(used, default=0) + 1}")


def latest(base: str) -> str:
    """The newest complete preprocessing output under ``base`` (via its LATEST pointer)."""
    pointer = os.path.join(base, "LATEST")
    if not gfile.exists(pointer):
        raise FileNotFoundError(f"no preprocessing output under {base!r}; run `recsys preprocess` first")
    with gfile.GFile(pointer) as f:
        return os.path.join(base, f.read().strip())


def _require_rows(raw_dir: str) -> None:
    """Fails before any work when an input table is missing or holds no rows (nothing gets published)."""
    for name in (tables.INTERACTIONS_FILE, tables.ITEMS_FILE, tables.USERS_FILE):
        path = os.path.join(raw_dir, name)
        if not gfile.exists(path):
            raise FileNotFoundError(f"no raw table {path}: write the raw data first (`recsys data synth` or "
                                    f"`recsys data movielens --path DIR`)")
    path = os.path.join(raw_dir, tables.INTERACTIONS_FILE)
    with gfile.GFile(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        try:
            if not any(line.strip() for line in f):
                raise tables.DataError(f"{path} holds no interactions; nothing to preprocess")
        except (OSError, EOFError) as e:
            raise tables.DataError(f"{path} is not a readable gzip file: {e}") from e


def _work_dir(final: str) -> str:
    """Where a version is written before it is published. Local: a fresh name beside ``final``, renamed
    when complete (never an earlier run's leftover, so a failed run's dead letters survive). Buckets
    have no directory rename: write in place; either way only the LATEST pointer, written last, publishes."""
    if "://" in final:
        return final
    return f"{final}.tmp-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"


def _keep_failed(work: str, final: str) -> str:
    """After a failed run: drop the bulky partial outputs, keep dead letters and stats for the operator."""
    for sub in ("tmp", TRANSFORMED, TRANSFORM_FN):
        fileio.rmtree(os.path.join(work, sub))
    if work == final:
        return work
    failed = work.replace(".tmp-", ".failed-", 1)
    gfile.rename(work, failed)
    return failed


def run(cfg, raw_dir: str, out_base: str) -> str:
    """Runs preprocessing for ``raw_dir`` into a new version under ``out_base``; returns its path.

    Raises ``DataError`` (nothing published; the run's dead letters are kept under
    ``<out_base>/v<N>.failed-<time>/dead_letter/``) when too many rows are bad or none are usable.
    """
    _require_rows(raw_dir)  # before a version number is taken
    return point_latest(out_base, write(cfg, raw_dir, next_version_dir(out_base)))


def point_latest(out_base: str, final: str) -> str:
    """Makes ``final`` (a complete version under ``out_base``) the one ``latest`` returns."""
    with gfile.GFile(os.path.join(out_base, "LATEST.tmp"), "w") as f:
        f.write(os.path.basename(final))
    gfile.rename(os.path.join(out_base, "LATEST.tmp"), os.path.join(out_base, "LATEST"), overwrite=True)
    return final


def write(cfg, raw_dir: str, final: str) -> str:
    """Preprocesses ``raw_dir`` into exactly ``final`` (the artifact API's entry; ``run`` adds versions)."""
    _require_rows(raw_dir)
    work = _work_dir(final)
    gfile.makedirs(work)
    t0 = time.time()
    print(f"[preprocess] {cfg.preprocess.runner}: {raw_dir} -> {final}", flush=True)
    try:
        _run_beam(cfg, raw_dir, work)
        stats = load_stats(work)
        total = stats["train"] + stats["eval"] + stats["dead_letters"]
        dead_dir = os.path.join(final if work == final else work.replace(".tmp-", ".failed-", 1), "dead_letter")
        if total and stats["dead_letters"] / total > cfg.data.max_bad_fraction:
            raise tables.DataError(
                f"{stats['dead_letters']} of {total} interaction rows failed validation "
                f"(> max_bad_fraction={cfg.data.max_bad_fraction:.1%}); see {dead_dir}")
        if stats["train"] == 0:
            why = (f"; every event is at or after the split time {stats['split_cutoff_ts']} (the time split needs "
                   f"events at more than one time: are the timestamps all the same?)" if stats["eval"] else "")
            raise tables.DataError(
                f"no usable training events in {raw_dir} ({stats['eval']} eval, {stats['dead_letters']} dead "
                f"letters; see {dead_dir}){why}: nothing published")
        _write_items(os.path.join(raw_dir, tables.ITEMS_FILE), os.path.join(work, tables.ITEMS_FILE))
        with gfile.GFile(os.path.join(work, "raw_schema.json"), "w") as f:
            json.dump({c.name: {"dtype": c.dtype, "shape": c.shape, "role": c.role}
                       for c in schema.raw_columns(int(cfg.preprocess.history_length))}, f, indent=2)
    except BaseException:
        if gfile.exists(work):
            _keep_failed(work, final)
        raise
    fileio.rmtree(os.path.join(work, "tmp"))
    if work != final:
        gfile.rename(work, final)
    stats = load_stats(final)
    print(f"[preprocess] done in {time.time() - t0:.1f}s: train={stats['train']} eval={stats['eval']} "
          f"dead_letters={stats['dead_letters']} cutoff_ts={stats['split_cutoff_ts']}", flush=True)
    return final


def _write_items(src: str, dst: str) -> None:
    """The version's item catalogue: the raw items file's valid lines, byte for byte."""
    with fileio.open_read(src) as fin, fileio.open_write(dst) as fout:
        for line in fin:
            row, why = tables.parse_json_line(line)
            if why is None and tables.validate_item(row) is None:
                fout.write(line if line.endswith(b"\n") else line + b"\n")


def _run_beam(cfg, raw_dir: str, work: str) -> None:
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    from preprocessing.transform import preprocessing_fn

    history_length = int(cfg.preprocess.history_length)
    source = tfxio.TFExampleBeamRecord(physical_format="inmem", telemetry_descriptors=["recsys"],
                                       schema=schema.raw_schema(history_length))
    adapter = source.TensorAdapterConfig()   # raw columns as TFXIO lays them out; our batches match it
    options = {"title_vocab_size": cfg.preprocess.title_vocab_size,
               "num_price_buckets": cfg.preprocess.num_price_buckets,
               "num_age_buckets": cfg.preprocess.num_age_buckets}
    max_ts = tables.latest_valid_timestamp()
    as_bytes = beam.coders.BytesCoder()   # decoded (strictly) per row: bad UTF-8 is a dead letter
    dead_dir = os.path.join(work, "dead_letter")
    pipeline_options = beam_options(cfg, (raw_dir, work))
    # DirectRunner: the FnApiRunner it would pick, without its Prism attempt (see beam_speed)
    runner = beam_speed.local_runner(pipeline_options) if cfg.preprocess.runner == "DirectRunner" else None
    with beam_speed.installed(), beam.Pipeline(runner=runner, options=pipeline_options) as p:
        # force_tf_compat_v1: preprocessing_fn is traced into one tf.compat.v1 graph rather than as TF2
        # tf.functions per analysis phase (the TFX Transform component's default for years): the same values
        # (z-scores within 5e-7: float rounding of mean/variance; ids and vocabularies identical) at a fixed
        # cost of 14 s instead of 23 s; TFTransformOutput.transform_features_layer loads it as before
        with tft_beam.Context(temp_dir=os.path.join(work, "tmp"), desired_batch_size=ROWS_PER_BATCH,
                              force_tf_compat_v1=True):
            side, tallies = {}, []   # tallies: (stats.json key, count) pairs, summed by one combine
            for name, key, path in (("Items", "item_id", tables.ITEMS_FILE), ("Users", "user_id", tables.USERS_FILE)):
                parsed_table = (p | f"Read{name}" >> beam.io.ReadFromText(os.path.join(raw_dir, path), coder=as_bytes)
                                | f"Parse{name}" >> beam.ParDo(ParseTableRow(key)).with_outputs(DEAD, main="ok"))
                _ = (parsed_table[DEAD] | f"Dead{name}Json" >> beam.Map(json.dumps, sort_keys=True)
                     | f"WriteDead{name}" >> beam.io.WriteToText(os.path.join(dead_dir, name.lower()),
                                                                 file_name_suffix=".jsonl"))
                side[name] = beam.pvalue.AsDict(parsed_table.ok)
                tallies.append(parsed_table[DEAD] | f"TallyDead{name}" >> beam.Map(_tally, f"dead_{name.lower()}"))
            files = input_files(os.path.join(raw_dir, tables.INTERACTIONS_FILE))
            parsed = (p | "InteractionFiles" >> beam.Create(files)
                      | "ReadChunks" >> beam.FlatMap(read_line_chunks)
                      | "Parse" >> beam.ParDo(ParseInteractions(), side["Items"], max_ts).with_outputs(
                          DEAD, TIMES, main="by_user"))
            _ = (parsed[DEAD] | "DeadJson" >> beam.Map(json.dumps, sort_keys=True)
                 | "WriteDead" >> beam.io.WriteToText(os.path.join(dead_dir, "interactions"),
                                                      file_name_suffix=".jsonl"))
            cutoff = parsed[TIMES] | "Cutoff" >> beam.CombineGlobally(ExactQuantile(1.0 - cfg.preprocess.eval_fraction))
            built = (parsed.by_user | "GroupUser" >> beam.GroupByKey()
                     | "History" >> beam.ParDo(BuildBatches(history_length, adapter.arrow_schema), side["Items"],
                                               side["Users"], beam.pvalue.AsSingleton(cutoff)).with_outputs(
                         EVAL, main="train"))
            batches = {split: built[split] for split in ("train", EVAL)}

            fn = functools.partial(preprocessing_fn, custom_config=options)
            transform_fn = (batches["train"], adapter) | "Analyze" >> tft_beam.AnalyzeDataset(fn)
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(os.path.join(work, TRANSFORM_FN))
            for name, rb in batches.items():
                (out_rb, meta) = (((rb, adapter), transform_fn)
                                  | f"Transform{name}" >> tft_beam.TransformDataset(output_record_batches=True))
                schema_side = beam.pvalue.AsSingleton(
                    meta.deferred_metadata | f"Schema{name}" >> beam.Map(lambda m: m.schema))
                # one element per batch, encoded and written off the main thread (see example_sink)
                _ = (out_rb | f"WithSchema{name}" >> beam.Map(_with_schema, schema_side)
                     | f"Write{name}" >> beam.io.Write(example_sink.ExampleBatchSink(
                         os.path.join(work, TRANSFORMED, name), file_name_suffix=".tfrecord.gz")))
            tallies.append(parsed[DEAD] | "TallyDead" >> beam.Map(_tally, "dead_letters"))
            tallies += [rb | f"Rows{name}" >> beam.Map(_tally, name, rows=True) for name, rb in batches.items()]
            totals = tuple(tallies) | "Tallies" >> beam.Flatten() | "SumTallies" >> beam.CombinePerKey(sum)
            _ = (p | "StatsSeed" >> beam.Create([None])
                 | "Stats" >> beam.Map(_write_stats, work, beam.pvalue.AsDict(totals), beam.pvalue.AsSingleton(cutoff)))


# Every count in stats.json; absent from the tallies means none (e.g. no dead letters).
STAT_COUNTS = ("train", EVAL, "dead_letters", "dead_items", "dead_users")


def _tally(element, key: str, rows: bool = False) -> Tuple[str, int]:
    """(key, 1) per element, or (key, rows in the batch): one CombinePerKey sums every count of the run
    (one branch instead of one Count per statistic: fewer transforms and stages, the same numbers)."""
    return key, element.num_rows if rows else 1


def _write_stats(_, work, totals, cutoff):
    stats = {key: int(totals.get(key, 0)) for key in STAT_COUNTS}
    stats["split_cutoff_ts"] = cutoff
    with gfile.GFile(os.path.join(work, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2, sort_keys=True)


def load_stats(version_dir: str) -> Dict[str, Any]:
    with gfile.GFile(os.path.join(version_dir, "stats.json")) as f:
        return json.load(f)
