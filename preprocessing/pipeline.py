"""The Beam pipeline: read raw -> validate (dead letters) -> join -> history -> split -> TFT -> write.

One pipeline, any runner: DirectRunner locally, Dataflow/Flink/Spark with
``preprocess.runner`` and ``preprocess.beam_args``. Raw examples reach TF-Transform
as serialized tf.Examples through tfx-bsl's TFXIO (the production input path; the
legacy instance-dict path crashes at interpreter exit on this stack).

Output, in a fresh version directory ``<run>/preprocessed/v<N>/`` (written under a
temporary name and renamed, with ``LATEST`` updated last):
  transformed/train-*.tfrecord.gz, transformed/eval-*.tfrecord.gz
  transform_fn/ (+ transformed_metadata/)     TF-Transform output
  raw_schema.json                             raw feature spec (TFXIO writes none)
  dead_letter/interactions-*.jsonl             rows that failed validation, with why
  items.jsonl                                  the raw item catalogue (candidates)
  stats.json                                   counts, split cutoff
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import numpy as np
from tensorflow.io import gfile

from preprocessing import schema
from preprocessing.sources import tables

DEAD = "dead"
TRANSFORMED = "transformed"
TRANSFORM_FN = "transform_fn"


# ---------------------------------------------------------------- parse and validate
class ParseInteraction(beam.DoFn):
    """JSON line -> interaction dict joined with user/item features; bad rows -> DEAD output."""

    def process(self, line: str, items: Dict[str, Dict], users: Dict[str, Dict]):
        try:
            row = json.loads(line)
        except ValueError as e:
            yield beam.pvalue.TaggedOutput(DEAD, {"reason": f"invalid JSON: {e}", "text": line[:500]})
            return
        why = tables.validate_interaction(row)
        if why is None and row["item_id"] not in items:
            why = f"unknown item_id {row['item_id']!r} (not in items table)"
        if why is not None:
            yield beam.pvalue.TaggedOutput(DEAD, {"reason": why, "text": line[:500]})
            return
        out = tables.with_defaults(row, schema.INTERACTION_FIELDS)
        out.update(tables.with_defaults(users.get(row["user_id"], {"user_id": row["user_id"]}), schema.USER_FIELDS))
        out.update(tables.with_defaults(items[row["item_id"]], schema.ITEM_FIELDS))
        yield out


def parse_table_line(line: str, key: str) -> Iterable[Tuple[str, Dict[str, Any]]]:
    row = json.loads(line)
    yield row[key], row


# ---------------------------------------------------------------- history (no leakage)
def add_history(user_events: Tuple[str, Iterable[Dict[str, Any]]], length: int) -> Iterable[Dict[str, Any]]:
    """For each event of one user: the last ``length`` items with a strictly earlier timestamp.

    Events that share a timestamp never see each other (MovieLens rates in bursts),
    so no event's features can contain its own future.
    """
    _, events = user_events
    events = sorted(events, key=lambda e: (e["timestamp"], e["item_id"]))
    ids: List[str] = []
    times: List[int] = []
    visible = 0  # number of events strictly before the current timestamp
    for i, event in enumerate(events):
        while visible < i and events[visible]["timestamp"] < event["timestamp"]:
            ids.append(events[visible]["item_id"])
            times.append(events[visible]["timestamp"])
            visible += 1
        h_ids, h_ts = ids[-length:], times[-length:]
        pad = length - len(h_ids)
        out = dict(event)
        out["history_item_ids"] = [""] * pad + h_ids
        out["history_ts"] = [0] * pad + h_ts
        yield out


# ---------------------------------------------------------------- time split
class ExactQuantile(beam.CombineFn):
    """Exact quantile of int timestamps (8 bytes a row: fine up to ~100M rows on one worker)."""

    def __init__(self, q: float):
        self.q = q

    def create_accumulator(self):
        return []

    def add_input(self, acc, x):
        acc.append(x)
        return acc

    def merge_accumulators(self, accs):
        return [x for a in accs for x in a]

    def extract_output(self, acc):
        if not acc:
            return 0
        return int(np.quantile(np.asarray(acc, dtype=np.int64), self.q, method="lower"))


def split_fn(example: Dict[str, Any], n: int, cutoff: int) -> int:
    return 1 if example["timestamp"] >= cutoff else 0


# ---------------------------------------------------------------- tf.Example encoding
class EncodeExample(beam.DoFn):
    def setup(self):
        import tensorflow as tf

        self._tf = tf

    def process(self, ex: Dict[str, Any]):
        tf = self._tf
        feats = {}
        for col in schema.RAW_COLUMNS:
            v = ex[col.name]
            values = v if col.length else [v]
            if col.dtype == "string":
                feats[col.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[s.encode() for s in values]))
            elif col.dtype == "int64":
                feats[col.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in values]))
            else:
                feats[col.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in values]))
        yield tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _records_to_examples(record_batch_and_props, schema_proto):
    from tfx_bsl.coders import example_coder

    rb, _ = record_batch_and_props
    encoder = example_coder.RecordBatchToExamplesEncoder(schema_proto)
    return encoder.encode(rb)


# ---------------------------------------------------------------- the pipeline
def beam_options(cfg) -> beam.options.pipeline_options.PipelineOptions:
    args = [f"--runner={cfg.preprocess.runner}"] + list(cfg.preprocess.beam_args)
    if cfg.preprocess.runner == "DirectRunner":
        args += [f"--direct_num_workers={cfg.preprocess.direct_num_workers}",
                 f"--direct_running_mode={cfg.preprocess.direct_running_mode}"]
    return beam.options.pipeline_options.PipelineOptions(args)


def next_version_dir(base: str) -> str:
    gfile.makedirs(base)
    used = [int(d.strip("/")[1:]) for d in gfile.listdir(base) if d.startswith("v") and d.strip("/")[1:].isdigit()]
    return os.path.join(base, f"v{max(used, default=0) + 1}")


def latest(base: str) -> str:
    """The newest complete preprocessing output under ``base`` (via its LATEST pointer)."""
    pointer = os.path.join(base, "LATEST")
    if not gfile.exists(pointer):
        raise FileNotFoundError(f"no preprocessing output under {base!r}; run `recsys preprocess` first")
    with gfile.GFile(pointer) as f:
        return os.path.join(base, f.read().strip())


def run(cfg, raw_dir: str, out_base: str) -> str:
    """Runs preprocessing for ``raw_dir`` into a new version under ``out_base``; returns its path."""
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    from preprocessing.transform import preprocessing_fn

    final = next_version_dir(out_base)
    # Local: write beside and rename (atomic). Buckets have no directory rename: write in place;
    # either way the version is published only by the LATEST pointer, written last.
    work = final if "://" in final else final + ".tmp"
    if gfile.exists(work):
        gfile.rmtree(work)
    gfile.makedirs(work)
    raw_schema = schema.raw_schema()
    options = {"title_vocab_size": cfg.preprocess.title_vocab_size,
               "num_price_buckets": cfg.preprocess.num_price_buckets,
               "num_age_buckets": cfg.preprocess.num_age_buckets}
    t0 = time.time()
    print(f"[preprocess] {cfg.preprocess.runner}: {raw_dir} -> {final}", flush=True)
    with beam.Pipeline(options=beam_options(cfg)) as p:
        with tft_beam.Context(temp_dir=os.path.join(work, "tmp"), desired_batch_size=1024):
            items = (p | "ReadItems" >> beam.io.ReadFromText(os.path.join(raw_dir, tables.ITEMS_FILE))
                     | "KeyItems" >> beam.FlatMap(parse_table_line, "item_id"))
            users = (p | "ReadUsers" >> beam.io.ReadFromText(os.path.join(raw_dir, tables.USERS_FILE))
                     | "KeyUsers" >> beam.FlatMap(parse_table_line, "user_id"))
            parsed = (p | "ReadInteractions" >> beam.io.ReadFromText(os.path.join(raw_dir, tables.INTERACTIONS_FILE))
                      | "Parse" >> beam.ParDo(ParseInteraction(), beam.pvalue.AsDict(items),
                                              beam.pvalue.AsDict(users)).with_outputs(DEAD, main="ok"))
            _ = (parsed[DEAD] | "DeadJson" >> beam.Map(json.dumps, sort_keys=True)
                 | "WriteDead" >> beam.io.WriteToText(os.path.join(work, "dead_letter", "interactions"),
                                                      file_name_suffix=".jsonl"))
            examples = (parsed.ok | "ByUser" >> beam.Map(lambda e: (e["user_id"], e))
                        | "GroupUser" >> beam.GroupByKey()
                        | "History" >> beam.FlatMap(add_history, schema.HISTORY_LENGTH))
            cutoff = (examples | "Times" >> beam.Map(lambda e: e["timestamp"])
                      | "Cutoff" >> beam.CombineGlobally(ExactQuantile(1.0 - cfg.preprocess.eval_fraction)))
            train, evals = (examples | "Split" >> beam.Partition(
                lambda e, n, c: split_fn(e, n, c), 2, beam.pvalue.AsSingleton(cutoff)))

            source = tfxio.TFExampleBeamRecord(physical_format="inmem", telemetry_descriptors=["recsys"],
                                               schema=raw_schema)
            train_rb = train | "EncodeTrain" >> beam.ParDo(EncodeExample()) | "TrainRB" >> source.BeamSource()
            eval_rb = evals | "EncodeEval" >> beam.ParDo(EncodeExample()) | "EvalRB" >> source.BeamSource()
            fn = functools.partial(preprocessing_fn, custom_config=options)
            transform_fn = (train_rb, source.TensorAdapterConfig()) | "Analyze" >> tft_beam.AnalyzeDataset(fn)
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(os.path.join(work, TRANSFORM_FN))
            for name, rb in (("train", train_rb), ("eval", eval_rb)):
                (out_rb, meta) = (((rb, source.TensorAdapterConfig()), transform_fn)
                                  | f"Transform{name}" >> tft_beam.TransformDataset(output_record_batches=True))
                schema_side = beam.pvalue.AsSingleton(
                    meta.deferred_metadata | f"Schema{name}" >> beam.Map(lambda m: m.schema))
                _ = (out_rb | f"ToExamples{name}" >> beam.FlatMap(_records_to_examples, schema_side)
                     | f"Write{name}" >> beam.io.WriteToTFRecord(
                         os.path.join(work, TRANSFORMED, name), file_name_suffix=".tfrecord.gz"))
            counts = {
                "train": train | "CountTrain" >> beam.combiners.Count.Globally(),
                "eval": evals | "CountEval" >> beam.combiners.Count.Globally(),
                "dead_letters": parsed[DEAD] | "CountDead" >> beam.combiners.Count.Globally(),
                "split_cutoff_ts": cutoff,
            }
            _ = (p | "StatsSeed" >> beam.Create([None])
                 | "Stats" >> beam.Map(_write_stats, work, **{k: beam.pvalue.AsSingleton(v) for k, v in counts.items()}))

    stats = load_stats(work)
    total = stats["train"] + stats["eval"] + stats["dead_letters"]
    if total and stats["dead_letters"] / total > cfg.data.max_bad_fraction:
        raise tables.DataError(
            f"{stats['dead_letters']} of {total} interaction rows failed validation "
            f"(> max_bad_fraction={cfg.data.max_bad_fraction:.1%}); see {os.path.join(work, 'dead_letter')}")
    gfile.copy(os.path.join(raw_dir, tables.ITEMS_FILE), os.path.join(work, tables.ITEMS_FILE), overwrite=True)
    with gfile.GFile(os.path.join(work, "raw_schema.json"), "w") as f:
        json.dump({c.name: {"dtype": c.dtype, "shape": c.shape, "role": c.role} for c in schema.RAW_COLUMNS}, f,
                  indent=2)
    if gfile.exists(os.path.join(work, "tmp")):
        gfile.rmtree(os.path.join(work, "tmp"))
    if work != final:
        gfile.rename(work, final)
    with gfile.GFile(os.path.join(out_base, "LATEST.tmp"), "w") as f:
        f.write(os.path.basename(final))
    gfile.rename(os.path.join(out_base, "LATEST.tmp"), os.path.join(out_base, "LATEST"), overwrite=True)
    stats = load_stats(final)
    print(f"[preprocess] done in {time.time() - t0:.1f}s: train={stats['train']} eval={stats['eval']} "
          f"dead_letters={stats['dead_letters']} cutoff_ts={stats['split_cutoff_ts']}", flush=True)
    return final


def _write_stats(_, work, **stats):
    with gfile.GFile(os.path.join(work, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2, sort_keys=True)


def load_stats(version_dir: str) -> Dict[str, Any]:
    with gfile.GFile(os.path.join(version_dir, "stats.json")) as f:
        return json.load(f)
