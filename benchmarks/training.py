"""training: CPU training throughput (examples/s) of the retrieval and ranking models by batch size.

On one preprocessed synthetic dataset (default ~100K interaction rows, generated and run
through the project's TF-Transform pipeline once, then cached) this times Keras' own train
function (``model.make_train_function()``, what ``fit`` runs each step) for

* the two-tower retrieval model (``trainer.models.retrieval.TwoTowerModel``: in-batch
  softmax with logQ correction, so its cost has a batch^2 term: the [B, B] logits);
* every ranking model of ``trainer.models.ranking`` (DCN-v2, Wide & Deep, DeepFM) when that
  module is present (otherwise the output says ranking is pending);

at batch sizes 1024 / 4096 / 16384: warm-up steps first (tracing), then timed steps until
``--min-seconds`` and ``--min-steps`` are both reached (at most ``--max-steps``). The models of
one batch size are timed *interleaved* (round-robin), so changes in load from other users of
a shared machine hit all of them alike.
examples/s = batch / median step time (the mean-based figure, which load spikes inflate, is in
the JSON). Batches are pre-built in memory, so the input pipeline is not what is measured.

Ranking inputs are the same transformed rows (query + item features) with synthetic
candidate-source features (source "scann", rank 1..100, a score) and labels (1 positive
per 9 rows, ratings 1..5 on positives): step cost does not depend on the values.

It also sweeps the *vocabulary* size at one batch size: the same two-tower step with the
item table (and, separately, the user table) resized to 10K..1M ids and the ids in the
batch remapped uniformly into the larger range, once per optimizer (``--optimizers``, timed
interleaved): TF-Keras' Adam (``adam``) updates the whole embedding table and its two slots on
every step even when the gradient is sparse, so its step time grows with the catalogue;
``sparse_adam`` (trainer/optimizers.py, the default ``train.optimizer``) updates only the rows
the batch looked up. This is the measured basis of the "100M items" discussion in
``benchmarks.scale``.

Run ``python -m benchmarks.training --help``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np

from benchmarks import common

DEFAULT_BATCHES = "1024,4096,16384"
QUICK_BATCHES = "64,256"
DEFAULT_ROWS = 100_000
QUICK_ROWS = 2_000
DEFAULT_RANKERS = "dcn,wide_deep,deepfm"
DEFAULT_ITEM_SWEEP = "10000,100000,1000000"
DEFAULT_USER_SWEEP = "100000,1000000"
DEFAULT_OPTIMIZERS = "adam,sparse_adam"
# Peak memory of the two-tower step per in-batch logit (B x B), measured here at B = 16384 (~18 GB):
# the logits, their softmax, gradients and the accidental-hit masks. Used to skip a batch that cannot fit.
TWO_TOWER_BYTES_PER_LOGIT = 72


# --------------------------------------------------------------------------- data


def prepare_dataset(rows: int, cache: str, seed: int = 42) -> str:
    """Synthetic raw data of ~rows interactions through pipeline.run, cached; returns the version dir."""
    from benchmarks.preprocessing import ensure_raw, synthetic_shape
    from preprocessing import pipeline
    from recsys.config import Config

    shape = synthetic_shape(rows)
    base = os.path.join(cache, f"prep-{rows}-u{shape['n_users']}-i{shape['n_items']}-s{seed}")
    try:
        return pipeline.latest(base)
    except FileNotFoundError:
        pass
    raw_dir, info = ensure_raw(rows, cache, seed)
    print(f"[data] preprocessing {info['rows']:,} synthetic rows ({info['n_users']:,} users, "
          f"{info['n_items']:,} items) once; cached in {base}", flush=True)
    cfg = Config(workdir=cache)
    return pipeline.run(cfg, raw_dir, base)


def load_train_arrays(version_dir: str, max_rows: int = 0) -> Dict[str, np.ndarray]:
    """All numeric transformed features of the train split as numpy arrays (strings dropped)."""
    import tensorflow as tf

    from trainer import data

    spec = data.transform_output(version_dir).transformed_feature_spec()
    spec = {k: v for k, v in spec.items() if v.dtype != tf.string}
    parts: Dict[str, List[np.ndarray]] = {k: [] for k in spec}
    n = 0
    for batch in data.dataset(version_dir, "train", 8192, spec):
        for k in spec:
            parts[k].append(batch[k].numpy())
        n += int(batch[next(iter(spec))].shape[0])
        if max_rows and n >= max_rows:
            break
    return {k: np.concatenate(v)[: max_rows or None] for k, v in parts.items()}


def make_batches(arrays: Dict[str, np.ndarray], batch: int, n_batches: int, seed: int) -> Dict[str, np.ndarray]:
    """[n_batches, batch, ...] arrays drawn from a permutation of the rows (wrapping round if needed)."""
    n = len(next(iter(arrays.values())))
    perm = np.random.default_rng(seed).permutation(n)
    idx = perm[np.arange(n_batches * batch) % n].reshape(n_batches, batch)
    return {k: v[idx] for k, v in arrays.items()}


EVENT_ROWS = 9  # rows of one ranked list in the synthetic ranker batches: 1 logged item + 8 candidates


def ranking_inputs(arrays: Dict[str, np.ndarray], seed: int):
    """(features, labels) for the rankers from transformed rows plus synthetic retrieval fields and labels."""
    from preprocessing import schema

    rng = np.random.default_rng(seed)
    n = len(next(iter(arrays.values())))
    feats = {k: arrays[k] for k in schema.RANKER_TRANSFORMED_INPUTS}
    feats["candidate_source"] = np.full(n, b"scann", dtype=object)
    feats["retrieval_rank"] = rng.integers(1, 101, n).astype(np.int64)
    feats["retrieval_score"] = rng.normal(0.3, 0.2, n).astype(np.float32)
    positive = rng.random(n) < 1.0 / EVENT_ROWS
    labels = {"engagement": positive.astype(np.float32), "engagement_weight": np.ones(n, np.float32),
              "rating": np.where(positive, rng.integers(1, 6, n), 0).astype(np.float32),
              "rating_weight": positive.astype(np.float32)}
    return feats, labels


# --------------------------------------------------------------------------- timing


def measure_group(entries: List[Dict[str, Any]], args) -> List[Dict[str, Any]]:
    """Times several models *interleaved*, so that load from other users of the machine hits all alike.

    Each entry is {"name", "build", "batches", "batch", ...}. Every model is built and warmed up
    first (``args.warmup`` steps; the first traces the train function), then timed round-robin:
    per round each model runs enough steps to fill about ``args.round_seconds`` (at least one).
    Rounds continue until every model has >= ``args.min_steps`` timed steps and >= ``args.min_seconds``
    timed seconds, up to ``args.max_steps`` steps per model or ``args.max_seconds`` x models in all.
    Returns one result per entry (with "error" instead of timings when building or warm-up failed).
    """
    import gc

    import tensorflow as tf

    tf.keras.backend.clear_session()
    gc.collect()
    states: List[Dict[str, Any]] = []
    out: List[Dict[str, Any]] = []
    for e in entries:
        base = {k: v for k, v in e.items() if k not in ("build", "batches")}
        with common.ProcessTreeSampler(interval=0.1, pss=False) as mem:
            try:
                model = e["build"]()
                it = iter(tf.data.Dataset.from_tensor_slices(e["batches"]).repeat().prefetch(2))
                fn = model.make_train_function()
                t0 = time.perf_counter()
                warm = []
                for _ in range(max(2, args.warmup)):
                    t = time.perf_counter()
                    float(fn(it)["loss"])
                    warm.append(time.perf_counter() - t)
            except Exception as ex:  # noqa: BLE001  (the ranking stage is developed concurrently)
                print(f"[time]   {e['name']} (batch {e['batch']:,}) failed: {type(ex).__name__}: {ex}", flush=True)
                out.append(dict(base, error=f"{type(ex).__name__}: {ex}"))
                continue
        n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
        st = {"base": base, "model": model, "it": it, "fn": fn, "times": [], "warmup_s": time.perf_counter() - t0,
              "per_round": max(1, int(round(args.round_seconds / max(warm[-1], 1e-4)))), "params": n_params,
              "peak_rss_mb": mem.result()["peak_rss_main_mb"], "loss": None}
        states.append(st)
        out.append(st)
    budget = args.max_seconds * max(len(states), 1)
    t_start = time.perf_counter()
    rounds = 0

    def satisfied(st):
        n, tot = len(st["times"]), sum(st["times"])
        return n >= args.max_steps or (n >= args.min_steps and tot >= args.min_seconds)

    while states and not all(satisfied(st) for st in states) and time.perf_counter() - t_start < budget:
        rounds += 1
        for st in states:
            if len(st["times"]) >= args.max_steps:
                continue
            for _ in range(min(st["per_round"], args.max_steps - len(st["times"]))):
                t = time.perf_counter()
                st["loss"] = float(st["fn"](st["it"])["loss"])  # the step has finished
                st["times"].append(time.perf_counter() - t)
    results = []
    for st in out:
        if "times" not in st:
            results.append(st)
            continue
        times = st["times"] or [float("nan")]
        b = st["base"]["batch"]
        r = dict(st["base"])
        r.update({"warmup_steps": max(2, args.warmup), "warmup_s": st["warmup_s"], "steps": len(st["times"]),
                  "timed_s": float(sum(st["times"])), "rounds": rounds, "steps_per_round": st["per_round"],
                  "step_s_median": float(np.median(times)), "step_s_min": float(min(times)),
                  "step_s_max": float(max(times)), "step_s_mean": float(np.mean(times)),
                  "examples_per_s": b / float(np.median(times)),
                  "examples_per_s_mean": b * len(st["times"]) / max(sum(st["times"]), 1e-9), "params": st["params"],
                  "peak_rss_mb": st["peak_rss_mb"], "final_loss": st["loss"],
                  "interleaved_with": [x["base"]["name"] for x in states if x is not st]})
        results.append(r)
    del states, out
    gc.collect()
    return results


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.training",
        description=(
            "Training throughput benchmark (CPU): examples/s of Keras' train step for the two-tower retrieval model "
            "and every ranking model (DCN-v2, Wide & Deep, DeepFM; when trainer/models/ranking.py exists) at each "
            "batch size, on one preprocessed synthetic dataset held in memory; plus a vocabulary sweep (two-tower "
            "step time as the item / user embedding tables grow to 1M ids). Writes <out>/training.json and "
            "<out>/training.png. Run it niced on a shared machine."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="bench_results/training", help="output directory")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK_ROWS:,} rows, batches {QUICK_BATCHES}, 2 timed steps, tiny sweeps")
    p.add_argument("--data", default=None,
                   help="an existing preprocessed version directory (<run>/preprocessed/vN) to use instead of "
                        "generating synthetic data")
    p.add_argument("--rows", type=int, default=None,
                   help=f"synthetic interaction rows to generate and preprocess (default {DEFAULT_ROWS:,}; "
                        f"--quick: {QUICK_ROWS:,})")
    p.add_argument("--batches", default=None, help=f"comma-separated batch sizes (default {DEFAULT_BATCHES}; "
                                                     f"--quick: {QUICK_BATCHES})")
    p.add_argument("--rankers", default=DEFAULT_RANKERS,
                   help="comma-separated ranking variants to time (names of trainer.train_ranking.VARIANTS); "
                        "'none' to skip")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (tracing) (default 3; --quick: 1)")
    p.add_argument("--min-steps", type=int, default=None, help="timed steps at least (default 5; --quick: 2)")
    p.add_argument("--max-steps", type=int, default=200, help="timed steps at most")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="keep timing until this many seconds are timed (default 8; --quick: 0)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="timing budget per model: a group of n interleaved models stops after n x this many seconds")
    p.add_argument("--round-seconds", type=float, default=None,
                   help="models of one batch size are timed round-robin; each runs about this long per round "
                        "(default 1.0; --quick: 0.05)")
    p.add_argument("--sweep-batch", type=int, default=None, help="batch size of the vocabulary sweep (default 4096; "
                                                                 "--quick: 64)")
    p.add_argument("--item-sweep", default=None,
                   help=f"comma-separated item-table sizes for the sweep, besides the dataset's own "
                        f"(default {DEFAULT_ITEM_SWEEP}; --quick: 5000; 'none' to skip)")
    p.add_argument("--user-sweep", default=None,
                   help=f"comma-separated user-table sizes for the sweep, besides the dataset's own "
                        f"(default {DEFAULT_USER_SWEEP}; --quick: 5000; 'none' to skip)")
    p.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS,
                   help="comma-separated train.optimizer values the vocabulary sweep times side by side "
                        "(trainer/optimizers.OPTIMIZERS)")
    p.add_argument("--threads", type=int, default=None,
                   help="TensorFlow intra/inter-op threads (default: TensorFlow's default, all usable cores)")
    p.add_argument("--cache", default=None, help="data cache directory (default <out>/cache)")
    p.add_argument("--seed", type=int, default=42, help="synthetic data seed")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    return p


def _ints(text: Optional[str]) -> List[int]:
    if not text or text.strip().lower() == "none":
        return []
    return sorted({int(float(x)) for x in text.split(",") if x.strip()})


def resolve_args(argv) -> argparse.Namespace:
    a = build_parser().parse_args(argv)
    q = a.quick
    a.rows = a.rows or (QUICK_ROWS if q else DEFAULT_ROWS)
    a.batch_list = _ints(a.batches or (QUICK_BATCHES if q else DEFAULT_BATCHES))
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 3)
    a.min_steps = a.min_steps if a.min_steps is not None else (2 if q else 5)
    a.min_seconds = a.min_seconds if a.min_seconds is not None else (0.0 if q else 8.0)
    a.sweep_batch = a.sweep_batch or (64 if q else 4096)
    a.round_seconds = a.round_seconds or (0.05 if q else 1.0)
    a.item_sweep_list = _ints(a.item_sweep if a.item_sweep is not None else ("5000" if q else DEFAULT_ITEM_SWEEP))
    a.user_sweep_list = _ints(a.user_sweep if a.user_sweep is not None else ("5000" if q else DEFAULT_USER_SWEEP))
    a.optimizer_list = [o.strip() for o in a.optimizers.split(",") if o.strip()]
    a.ranker_list = [] if a.rankers.strip().lower() == "none" else [r.strip() for r in a.rankers.split(",") if r.strip()]
    return a


def ranking_status(names: Sequence[str]) -> Dict[str, Any]:
    """Whether the ranking stage can be timed here (its modules exist and import)."""
    if not names:
        return {"available": False, "reason": "skipped (--rankers none)"}
    try:
        from trainer import train_ranking  # noqa: F401
        from trainer.models import ranking  # noqa: F401
    except ImportError as e:
        return {"available": False, "reason": f"ranking pending: trainer/models/ranking.py not importable ({e})"}
    unknown = [n for n in names if n not in train_ranking.VARIANTS]
    if unknown:
        return {"available": False, "reason": f"unknown ranking variants {unknown}; known: {sorted(train_ranking.VARIANTS)}"}
    return {"available": True, "variants": list(names)}


def remap_ids(kind: str, batches: Dict[str, np.ndarray], n: int, own: int, counts: np.ndarray, rng):
    """Batches with item ids (candidate + history) or user ids redrawn uniformly from [0, n - 1); pads stay -1.

    n - 1 is the out-of-vocabulary row (FeatureSizes counts it), so it is never drawn. Returns
    (batches, item-index counts for the logQ correction: Zipf-distributed for a resized item table).
    """
    from preprocessing.schema import T

    out = {k: v.copy() for k, v in batches.items()}
    if n == own:
        return out, counts
    if kind == "items":
        out[T.ITEM_IDX] = rng.integers(0, n - 1, out[T.ITEM_IDX].shape)
        h = out[T.HISTORY_IDX]
        out[T.HISTORY_IDX] = np.where(h >= 0, rng.integers(0, n - 1, h.shape), -1)
        return out, rng.zipf(1.3, n).astype(np.float64)
    if kind == "users":
        out[T.USER_IDX] = rng.integers(0, n - 1, out[T.USER_IDX].shape)
        return out, counts
    raise ValueError(f"unknown sweep {kind!r}")


def vocab_sweep(kind: str, sizes_list: Sequence[int], arrays, sizes, cfg, stats, args) -> List[Dict[str, Any]]:
    """Two-tower step time with the item (or user) table resized; ids remapped uniformly into the new range."""
    from trainer import optimizers
    from trainer.models.retrieval import TwoTowerModel
    import tensorflow as tf

    own = sizes.items if kind == "items" else sizes.users
    rows: List[Dict[str, Any]] = []
    batch = args.sweep_batch
    n_batches = 4
    base = make_batches(arrays, batch, n_batches, args.seed + 7)
    entries = []
    for n in [own] + [s for s in sizes_list if s > own]:
        rng = np.random.default_rng(args.seed + n)
        new_sizes = dataclasses.replace(sizes, **{kind: n})
        b, counts = remap_ids(kind, base, n, own, np.asarray(stats.item_idx_counts, np.float64), rng)
        for opt in args.optimizer_list:
            def build(new_sizes=new_sizes, counts=counts, opt=opt):
                tf.keras.utils.set_random_seed(args.seed)
                m = TwoTowerModel(new_sizes, cfg.retrieval, counts, None)
                m.compile(optimizer=optimizers.build(dataclasses.replace(cfg.train, optimizer=opt)))
                return m

            entries.append({"name": "two_tower", "build": build, "batches": b, "batch": batch, "sweep": kind,
                            "vocab": n, "own": n == own, "optimizer": opt})
    sizes_text = ", ".join(dict.fromkeys(f"{e['vocab']:,}" for e in entries))
    print(f"[sweep] two-tower, {kind} table = {sizes_text} (first = the dataset's own), batch {batch}, "
          f"optimizers {', '.join(args.optimizer_list)}, interleaved ...", flush=True)
    for res in measure_group(entries, args):
        res["model"] = res.pop("name")
        if "error" in res:
            continue
        print(f"[sweep]   {kind} {res['vocab']:,}, {res['optimizer']}: step {res['step_s_median'] * 1e3:,.1f} ms, "
              f"{res['params']:,} params", flush=True)
        rows.append(res)
    return rows


def plot(results: List[Dict[str, Any]], sweep: List[Dict[str, Any]], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for name in dict.fromkeys(r["model"] for r in results):
        rs = sorted((r for r in results if r["model"] == name), key=lambda r: r["batch"])
        axes[0].plot([r["batch"] for r in rs], [r["examples_per_s"] for r in rs], marker="o", label=name)
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("batch size")
    axes[0].set_ylabel("training examples/s (CPU)")
    axes[0].set_title("train-step throughput by batch size", fontsize=10)
    for kind, marker in (("items", "o"), ("users", "s")):
        for opt in dict.fromkeys(r.get("optimizer", "adam") for r in sweep):
            rs = sorted((r for r in sweep if r["sweep"] == kind and r.get("optimizer", "adam") == opt),
                        key=lambda r: r["vocab"])
            if rs:
                axes[1].plot([r["vocab"] for r in rs], [r["step_s_median"] * 1e3 for r in rs], marker=marker,
                             label=f"{kind} table resized, {opt} (batch {rs[0]['batch']})")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("embedding table rows")
    axes[1].set_ylabel("median step time (ms)")
    axes[1].set_title("two-tower step time vs vocabulary: adam (whole tables) vs sparse_adam (rows used)",
                      fontsize=10)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("training throughput, CPU (measured points only)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


COLUMNS = [
    common.Column("model", "model"),
    common.Column("batch", "batch", ",d"),
    common.Column("steps", "timed steps", "d"),
    common.Column("step_ms", "step ms (median)", ",.1f"),
    common.Column("examples_per_s", "examples/s", ",.0f"),
    common.Column("params", "params", ",d"),
    common.Column("peak_rss_mb", "peak RSS MB", ",.0f"),
]
SWEEP_COLUMNS = [
    common.Column("sweep", "table"),
    common.Column("vocab", "rows", ",d"),
    common.Column("optimizer", "optimizer"),
    common.Column("batch", "batch", ",d"),
    common.Column("steps", "timed steps", "d"),
    common.Column("step_ms", "step ms (median)", ",.1f"),
    common.Column("examples_per_s", "examples/s", ",.0f"),
    common.Column("params", "params", ",d"),
    common.Column("peak_rss_mb", "peak RSS MB", ",.0f"),
]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(argv)
    t_start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from recsys.config import Config
    from trainer import data
    from trainer import optimizers
    from trainer.features import FeatureSizes
    from trainer.models.retrieval import TwoTowerModel

    machine = common.machine_info()
    status = ranking_status(args.ranker_list)
    print("Training throughput benchmark (CPU): Keras train step of the two-tower retrieval model"
          + (" and the rankers " + ", ".join(status["variants"]) if status["available"] else "")
          + f" at batch sizes {', '.join(map(str, args.batch_list))}")
    print(f"Timing: the models of one batch size are built and warmed up ({max(2, args.warmup)} steps each), then "
          f"timed interleaved, round-robin (~{args.round_seconds:g} s per model per round), until each has >= "
          f"{args.min_steps} steps and >= {args.min_seconds:g} s timed (at most {args.max_steps} steps); so load from "
          f"other users of the machine hits every model alike. examples/s = batch / median step time (robust to "
          f"load spikes; the mean-based figure is in the JSON). "
          f"Batches pre-built in memory. Peak RSS: this process during the model's build + warm-up (includes "
          f"everything loaded before it).")
    if not status["available"]:
        print(f"Ranking: {status['reason']}")
    print(common.format_machine(machine))
    print(flush=True)

    cache = args.cache or os.path.join(args.out, "cache")
    t0 = time.perf_counter()
    version_dir = args.data or prepare_dataset(args.rows, cache, args.seed)
    prep_s = time.perf_counter() - t0
    cfg = Config()
    tft_output = data.transform_output(version_dir)
    sizes = FeatureSizes.from_transform_output(tft_output, cfg.preprocess.num_price_buckets,
                                               cfg.preprocess.num_age_buckets)
    catalogue = data.load_catalogue(version_dir)
    stats = data.train_stats(version_dir, catalogue, sizes.items)
    arrays = load_train_arrays(version_dir)
    n_rows = len(next(iter(arrays.values())))
    dataset_info = {"version_dir": version_dir, "train_rows": n_rows, "items": catalogue.size,
                    "feature_sizes": sizes.to_dict(), "prepare_s": round(prep_s, 1),
                    "source": "--data" if args.data else f"synthetic ~{args.rows:,} rows (cached)"}
    print(f"[data] {n_rows:,} train rows in memory; {catalogue.size:,} items, {sizes.users:,} user ids "
          f"({version_dir})", flush=True)

    results: List[Dict[str, Any]] = []
    ranking_rows: List[Dict[str, Any]] = []
    skipped: List[Dict[str, Any]] = []
    for batch in args.batch_list:
        n_batches = max(1, min(6, math.ceil(n_rows / batch)))
        batches = make_batches(arrays, batch, n_batches, args.seed)

        def build_two_tower():
            tf.keras.utils.set_random_seed(args.seed)
            m = TwoTowerModel(sizes, cfg.retrieval, stats.item_idx_counts, None)
            m.compile(optimizer=optimizers.build(cfg.train))
            return m

        entries = [{"name": "two_tower", "build": build_two_tower, "batches": batches, "batch": batch}]
        need = TWO_TOWER_BYTES_PER_LOGIT * batch * batch
        avail = common.available_memory_bytes()
        if avail is not None and need > avail - common.GiB:
            reason = (f"skipped: the in-batch softmax needs about {need / common.GiB:.1f} GiB at batch {batch:,} "
                      f"({TWO_TOWER_BYTES_PER_LOGIT} bytes per logit, measured), {avail / common.GiB:.1f} GiB available")
            print(f"[time] two_tower, batch {batch:,}: {reason}", flush=True)
            skipped.append({"model": "two_tower", "batch": batch, "reason": reason})
            entries = []
        if status["available"]:
            from trainer import train_ranking

            feats, labels = ranking_inputs({k: v.reshape((-1,) + v.shape[2:]) for k, v in batches.items()},
                                           args.seed)
            # whole events of EVENT_ROWS rows within each batch, for the listwise part of ranking.loss
            labels["group"] = ((np.arange(len(labels["engagement"])) % batch) // EVENT_ROWS).astype(np.int32)
            rbatches = ({k: v.reshape((n_batches, batch) + v.shape[1:]) for k, v in feats.items()},
                        {k: v.reshape(n_batches, batch) for k, v in labels.items()})
            for name in status["variants"]:
                def build_ranker(name=name):
                    tf.keras.utils.set_random_seed(args.seed)
                    m = train_ranking.build_ranker(name, sizes, cfg.ranking, 3.5)
                    m.compile(optimizer=tf.keras.optimizers.Adam(cfg.ranking.learning_rate))
                    return m

                entries.append({"name": name, "build": build_ranker, "batches": rbatches, "batch": batch})
        print(f"[time] batch {batch:,}: {', '.join(e['name'] for e in entries)} (interleaved) ...", flush=True)
        for r in measure_group(entries, args):
            r["model"] = r.pop("name")
            if "error" in r:
                if r["model"] != "two_tower":
                    ranking_rows.append(r)
                else:
                    skipped.append({"model": "two_tower", "batch": batch, "reason": f"failed: {r['error']}"})
                continue
            print(f"[time]   {r['model']}: {r['examples_per_s']:,.0f} examples/s ({r['steps']} steps, median "
                  f"{r['step_s_median'] * 1e3:,.1f} ms)", flush=True)
            results.append(r)
            if r["model"] != "two_tower":
                ranking_rows.append(r)

    sweep: List[Dict[str, Any]] = []
    if args.item_sweep_list:
        sweep += vocab_sweep("items", args.item_sweep_list, arrays, sizes, cfg, stats, args)
    if args.user_sweep_list:
        sweep += vocab_sweep("users", args.user_sweep_list, arrays, sizes, cfg, stats, args)

    for r in results + sweep:
        r["step_ms"] = r["step_s_median"] * 1e3
    table = common.format_table(results, COLUMNS, title=f"Training throughput, CPU ({n_rows:,} train rows in memory)")
    print()
    print(table)
    if not status["available"]:
        print(f"Ranking: {status['reason']}")
    for sk in skipped:
        print(f"Skipped: {sk['model']} at batch {sk['batch']:,}: {sk['reason']}")
    for r in ranking_rows:
        if "error" in r:
            print(f"Failed: {r['model']} at batch {r['batch']:,}: {r['error']}")
    sweep_table = None
    if sweep:
        sweep_table = common.format_table(
            sweep, SWEEP_COLUMNS, title="Two-tower step time vs embedding-table size (ids remapped uniformly)")
        print()
        print(sweep_table)
        for kind in ("items", "users"):
            for opt in args.optimizer_list:
                pts = sorted((r for r in sweep if r["sweep"] == kind and r["optimizer"] == opt), key=lambda r: r["vocab"])
                fit = common.fit_power_law([r["vocab"] for r in pts], [r["step_s_median"] for r in pts])
                if fit:
                    print(f"  {opt}: step time ~ {kind}^{fit['b']:.2f} over {pts[0]['vocab']:,}..{pts[-1]['vocab']:,} "
                          f"(log-log fit of {fit['n']} points); largest / smallest table: "
                          f"{pts[-1]['step_s_median'] / pts[0]['step_s_median']:.2f}x")
    try:
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(f"Load average at end: {machine['load_average_at_end']}")
    except OSError:
        pass
    png = None if args.no_plot else plot(results, sweep, os.path.join(args.out, "training.png"))
    payload = {
        "benchmark": "training",
        "partial": False,
        "command": "python -m benchmarks.training " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items()},
        "machine": machine,
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "note": "0 = TensorFlow's default (all usable cores)"},
        "dataset": dataset_info,
        "method": {
            "step": "model.make_train_function() (the function Keras' fit runs per step) on an iterator over "
                    "pre-built in-memory batches; the two-tower with train.optimizer (default sparse_adam), "
                    "rankers with Adam; TF-Keras 2 (TF_USE_LEGACY_KERAS=1)",
            "interleaving": "the models of one batch size (and the sizes of one vocabulary sweep) are warmed up, then "
                            "timed round-robin, so a change in machine load affects all of them alike",
            "peak_rss_mb": "peak RSS of this process during the model's build and warm-up steps (the step's "
                           "allocations happen there); includes everything loaded before",
            "examples_per_s": "batch / median timed step (after warm-up); examples_per_s_mean = batch x steps / "
                              "timed seconds, which load spikes from other users of the machine inflate",
            "retrieval": "trainer.models.retrieval.TwoTowerModel with the default RetrievalConfig (in-batch softmax, "
                         "logQ correction, accidental-hit removal): the [B, B] logits make cost grow with B^2",
            "ranking": "trainer.train_ranking.build_ranker(variant) with the default RankingConfig; inputs = the "
                       "transformed rows + synthetic candidate-source fields and labels",
            "vocab_sweep": "the two-tower step with FeatureSizes.items (or .users) replaced and ids in the batch "
                           "remapped uniformly into the new range; logQ counts Zipf-distributed; once per "
                           "optimizer in --optimizers (adam = TF-Keras dense table updates, sparse_adam = "
                           "trainer/optimizers.SparseAdam, looked-up rows only), timed interleaved",
        },
        "ranking_status": status,
        "results": results,
        "retrieval": [r for r in results if r["model"] == "two_tower"],
        "ranking": ranking_rows,
        "skipped": skipped,
        "vocab_sweep": sweep,
        "table": table,
        "sweep_table": sweep_table,
        "plot": png,
        "elapsed_s": time.perf_counter() - t_start,
    }
    path = common.write_json(os.path.join(args.out, "training.json"), payload)
    print(f"Wrote {path}" + (f" and {png}" if png else "") + f" in {payload['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
