"""ann: ScaNN vs brute-force exact search for dot-product (MIPS) retrieval.

For each item-set size this benchmark measures

* exact top-k with a batched float32 matmul, twice: NumPy (BLAS matmul + argpartition
  top-k) and ``tfrs.layers.factorized_top_k.BruteForce`` (what the exported model uses);
  the NumPy result is the ground truth;
* ScaNN through its Python builder
  (``scann_ops_pybind.builder(db, k, "dot_product").tree(...).score_ah(2, anisotropic_quantization_threshold=...)
  .reorder(...).build()``), one index per (num_leaves, threshold), with leaves_to_search and
  the number of reordering candidates swept at query time;
* one configuration through ``tfrs.layers.factorized_top_k.ScaNN``, next to a builder index
  with the identical settings, to show the TFRS layer matches the library;

and reports recall@k against the exact search, batched queries/s, single-query latency,
build time and memory. Results go to ``<out>/ann.json`` and a recall-vs-QPS plot
``<out>/ann_recall_qps.png``.

The data is synthetic but shaped like trained two-tower embeddings (see ``DataSpec``):
a Gaussian mixture with a Zipf popularity skew over clusters, a decaying spectrum and
log-normal item norms; queries come from the same distribution. Pure isotropic Gaussian
data would be the worst case for every ANN method and says little about real embeddings.

Run ``python -m benchmarks.ann --help``.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np

from benchmarks import common

DEFAULT_SIZES = "100000,1000000,5000000"
QUICK_SIZES = "5000"


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class DataSpec:
    """A clustered embedding distribution (fixed before any result was looked at).

    * ``n_clusters`` cluster centres ~ N(0, diag(lambda)) rotated by a random orthogonal
      matrix, lambda_i proportional to (i+1)^-spectrum_decay (mean 1): learned embeddings
      have a decaying spectrum and are not axis-aligned.
    * cluster popularity ~ Zipf: p(cluster of rank r) proportional to r^-zipf_exponent.
    * a point = centre + N(0, noise_std^2 I), times exp(N(0, norm_log_std^2)), so norms
      vary as they do for trained item embeddings (which matters for dot-product search).
    * queries are drawn from the same mixture, with their own random stream.
    """

    n_clusters: int = 2048
    zipf_exponent: float = 0.8
    spectrum_decay: float = 0.5
    noise_std: float = 0.5
    norm_log_std: float = 0.15
    seed: int = 1234

    def describe(self, dim: int) -> str:
        return (
            f"synthetic {dim}-d float32 embeddings: mixture of {self.n_clusters} Gaussian clusters "
            f"(Zipf popularity, exponent {self.zipf_exponent}; centre spectrum ~ (i+1)^-{self.spectrum_decay}, "
            f"randomly rotated; within-cluster std {self.noise_std}; log-normal norm scale, sigma {self.norm_log_std}); "
            f"queries from the same distribution; seed {self.seed}; similarity: dot product (MIPS), as in TFRS retrieval"
        )


class Mixture:
    def __init__(self, dim: int, spec: DataSpec):
        self.dim = dim
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        lam = (np.arange(dim, dtype=np.float64) + 1.0) ** (-spec.spectrum_decay)
        lam *= dim / lam.sum()
        rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        centres = rng.standard_normal((spec.n_clusters, dim)) * np.sqrt(lam)
        self.centres = (centres @ rot.T).astype(np.float32)
        w = (np.arange(spec.n_clusters, dtype=np.float64) + 1.0) ** (-spec.zipf_exponent)
        self.weights = w / w.sum()

    def sample(self, n: int, stream: int, chunk: int = 1 << 20) -> np.ndarray:
        rng = np.random.default_rng([self.spec.seed, stream])
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            assign = rng.choice(self.spec.n_clusters, size=m, p=self.weights)
            block = rng.standard_normal((m, self.dim), dtype=np.float32)
            block *= np.float32(self.spec.noise_std)
            block += self.centres[assign]
            scale = np.exp(rng.normal(0.0, self.spec.norm_log_std, size=(m, 1))).astype(np.float32)
            block *= scale
            out[start : start + m] = block
        return out


def make_data(n_items: int, n_queries: int, dim: int, spec: DataSpec) -> Tuple[np.ndarray, np.ndarray]:
    mix = Mixture(dim, spec)
    items = mix.sample(n_items, stream=1 + n_items)  # each size its own item draw
    queries = mix.sample(n_queries, stream=1)  # the same queries for every size
    return items, queries


# --------------------------------------------------------------------------- exact search


class NumpyBruteForce:
    """Exact top-k: BLAS float32 matmul over item chunks, ``np.argpartition`` top-k.

    The first chunk seeds each query's top-k with argpartition; later chunks only keep
    the scores that beat the query's current k-th best (an exact, vectorised threshold
    filter over 256-wide block maxima), then candidates are merged. This is a strong
    NumPy baseline: a plain argpartition over every score is several times slower.
    """

    def __init__(self, db: np.ndarray, k: int, item_chunk: int = 65536, seed_chunk: int = 8192):
        self.db = db
        self.k = k
        self.item_chunk = item_chunk
        self.seed_chunk = max(seed_chunk, k)
        self._buf: Optional[np.ndarray] = None

    def _scratch(self, rows: int, cols: int) -> np.ndarray:
        need = rows * cols
        if self._buf is None or self._buf.size < need:
            self._buf = np.empty(need, dtype=np.float32)
        return self._buf[:need].reshape(rows, cols)

    def search_batched(self, queries: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        db, k = self.db, self.k
        n, b = db.shape[0], queries.shape[0]
        first = min(n, self.seed_chunk)
        s = self._scratch(b, first)
        np.matmul(queries, db[:first].T, out=s)
        idx = np.argpartition(s, first - k, axis=1)[:, first - k :] if first > k else np.tile(np.arange(first), (b, 1))
        best_i = idx.astype(np.int64)
        best_s = np.take_along_axis(s, idx, axis=1)
        start = first
        rows_base = np.repeat(np.arange(b), k)
        while start < n:
            stop = min(n, start + self.item_chunk)
            s = self._scratch(b, stop - start)
            np.matmul(queries, db[start:stop].T, out=s)
            thresh = best_s.min(axis=1)
            r, c = self._above(s, thresh)
            if r.size:
                all_r = np.concatenate([rows_base, r])
                all_s = np.concatenate([best_s.ravel(), s[r, c]])
                all_i = np.concatenate([best_i.ravel(), c.astype(np.int64) + start])
                order = np.lexsort((-all_s, all_r))
                all_r, all_s, all_i = all_r[order], all_s[order], all_i[order]
                starts = np.searchsorted(all_r, np.arange(b))
                keep = (np.arange(all_r.size) - starts[all_r]) < k
                best_s = all_s[keep].reshape(b, k)
                best_i = all_i[keep].reshape(b, k)
            start = stop
        order = np.argsort(-best_s, axis=1, kind="stable")
        return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)

    BLOCK = 256

    @classmethod
    def _above(cls, s: np.ndarray, thresh: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(row, col) of the entries of ``s`` greater than their row's threshold.

        Block maxima first (cheap, vectorised), then only the few blocks that can hold a
        hit are scanned: a full ``np.nonzero(s > t)`` costs more than the matmul.
        """
        b, n = s.shape
        nb = n // cls.BLOCK
        rows: List[np.ndarray] = []
        cols: List[np.ndarray] = []
        if nb:
            blocks = s[:, : nb * cls.BLOCK].reshape(b, nb, cls.BLOCK)
            rr, bb = np.nonzero(blocks.max(axis=2) > thresh[:, None])
            if rr.size:
                sub = blocks[rr, bb]
                i, j = np.nonzero(sub > thresh[rr][:, None])
                rows.append(rr[i])
                cols.append(bb[i] * cls.BLOCK + j)
        if nb * cls.BLOCK < n:
            r, c = np.nonzero(s[:, nb * cls.BLOCK :] > thresh[:, None])
            rows.append(r)
            cols.append(c + nb * cls.BLOCK)
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(rows), np.concatenate(cols)


def exact_scores(db: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    safe = np.clip(ids, 0, db.shape[0] - 1)
    return np.einsum("qd,qkd->qk", queries, db[safe], optimize=False)


def recall_at_k(db: np.ndarray, queries: np.ndarray, ids: np.ndarray, gt_kth: np.ndarray, k: int) -> Tuple[float, np.ndarray]:
    """Tie-aware recall@k: a returned item counts when its exact score >= the k-th exact score.

    (Items tied with the k-th neighbour are as good as it; float32 round-off of at most
    1e-5 relative is tolerated, as ann-benchmarks does with its distance epsilon.)
    Duplicate and out-of-range ids never count. Returns (mean, per-query).
    """
    ids = np.asarray(ids)[:, :k].astype(np.int64)
    valid = (ids >= 0) & (ids < db.shape[0])
    scores = exact_scores(db, queries, ids)
    tol = 1e-5 * (np.abs(gt_kth) + 1.0)
    hit = valid & (scores >= (gt_kth - tol)[:, None])
    order = np.argsort(ids, axis=1)
    ids_s = np.take_along_axis(ids, order, 1)
    hit_s = np.take_along_axis(hit, order, 1)
    hit_s[:, 1:] &= ids_s[:, 1:] != ids_s[:, :-1]
    per_q = hit_s.sum(axis=1) / float(k)
    return float(per_q.mean()), per_q


def id_overlap(ids: np.ndarray, gt_ids: np.ndarray, k: int) -> float:
    hits = [len(set(a[:k].tolist()) & set(b[:k].tolist())) for a, b in zip(np.asarray(ids), gt_ids)]
    return float(np.mean(hits)) / k


# --------------------------------------------------------------------------- timing helpers


def run_batched(search: Callable[[np.ndarray], Any], queries: np.ndarray, batch: int) -> Any:
    outs = [search(queries[i : i + batch]) for i in range(0, queries.shape[0], batch)]
    return outs


def measure_qps(
    search: Callable[[np.ndarray], Any],
    queries: np.ndarray,
    batch: int,
    reps: int,
    max_seconds: float,
    min_seconds: float = 0.0,
    max_reps: int = 25,
) -> Dict[str, Any]:
    """Warm up on one batch, then time passes over all queries; report the median pass.

    Runs ``reps`` passes, stopping early once ``max_seconds`` of timed passes are spent (at
    least one pass), and keeps going (up to ``max_reps``) while fewer than ``min_seconds``
    have been timed, so that fast configurations get enough passes for a stable median.
    """
    search(queries[: min(batch, queries.shape[0])])  # warm-up: caches, lazy init, tracing
    times: List[float] = []
    outs = None
    while True:
        t0 = time.perf_counter()
        outs = run_batched(search, queries, batch)
        times.append(time.perf_counter() - t0)
        total = sum(times)
        if total >= max_seconds:
            break
        if len(times) >= max(1, reps) and (total >= min_seconds or len(times) >= max_reps):
            break
    med = statistics.median(times)
    return {"qps": queries.shape[0] / med, "median_s": med, "times_s": times, "reps": len(times), "outs": outs}


def measure_latency(search_one: Callable[[np.ndarray], Any], queries: np.ndarray, n: int, max_seconds: float) -> Dict[str, Any]:
    """Single-query latency on up to ``n`` queries (time-bounded), after 5 warm-up calls."""
    for i in range(min(5, queries.shape[0])):
        search_one(queries[i])
    lat: List[float] = []
    t_end = time.perf_counter() + max_seconds
    for i in range(min(n, queries.shape[0])):
        t0 = time.perf_counter()
        search_one(queries[i])
        lat.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end and len(lat) >= 10:
            break
    pct = common.percentiles(lat, (50, 99))
    return {"n": len(lat), "p50_ms": pct["p50"] * 1e3, "p99_ms": pct["p99"] * 1e3, "mean_ms": 1e3 * sum(lat) / max(1, len(lat))}


def stack_ids(outs: Sequence[Any], pick: Callable[[Any], np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(pick(o)) for o in outs], axis=0)


# --------------------------------------------------------------------------- configuration


def _ints(text: str) -> List[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _floats(text: str) -> List[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _threshold_label(t: float) -> str:
    return "none" if math.isnan(t) else f"{t:g}"


def leaves_for(n_items: int, args: argparse.Namespace) -> List[int]:
    if args.num_leaves:
        vals = _ints(args.num_leaves)
    else:
        base = max(4, int(round(math.sqrt(n_items))))
        vals = [base, 2 * base]
    return sorted({max(2, min(v, n_items // 20 if n_items >= 40 else 2)) for v in vals})


def leaves_to_search_for(num_leaves: int, args: argparse.Namespace) -> List[int]:
    if args.leaves_to_search:
        vals = _ints(args.leaves_to_search)
    else:
        vals = [int(round(f * num_leaves)) for f in _floats(args.leaves_to_search_frac)]
    return sorted({max(1, min(v, num_leaves)) for v in vals})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ann",
        description=(
            "ANN benchmark: ScaNN vs brute-force exact top-k for dot-product (MIPS) retrieval on synthetic "
            "clustered embeddings. For each item-set size it measures recall@k against exact search, batched "
            "queries/s, single-query latency, build time and memory, sweeping ScaNN's num_leaves (one index each), "
            "leaves_to_search and reordering candidates (at query time). Prints one table per size, marks the "
            "fastest ScaNN configuration with recall >= --target-recall, checks the target (recall >= 0.95 at >= 10x "
            "the brute-force QPS on 1M items), and writes <out>/ann.json and <out>/ann_recall_qps.png."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--sizes", default=None, help=f"comma-separated item counts (default {DEFAULT_SIZES}; --quick: {QUICK_SIZES}). "
                   "Sizes above --target-size are skipped, with the reason printed, if they would not fit in "
                   "--time-budget or in free memory.")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension")
    p.add_argument("--queries", type=int, default=None, help="number of queries (default 2000; --quick: 200)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (recall@k)")
    p.add_argument("--out", default="bench_results/ann", help="output directory for ann.json and ann_recall_qps.png")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 5K items, 200 queries, a small sweep, 1 repetition")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every method (BLAS, TensorFlow intra/inter-op, ScaNN search and training); "
                        "default: all usable cores")
    p.add_argument("--batch-size", type=int, default=1000, help="queries per batched call (all methods)")
    p.add_argument("--tf-max-scores-mib", type=float, default=1024.0,
                   help="TFRS BruteForce materialises a (batch x items) score matrix: its batch is reduced so that "
                        "matrix stays under this many MiB")
    p.add_argument("--reps", type=int, default=None, help="timed passes over all queries, median reported (default 3; --quick: 1)")
    p.add_argument("--max-rep-seconds", type=float, default=40.0,
                   help="stop repeating a measurement once this much timed work is done (at least one pass)")
    p.add_argument("--min-rep-seconds", type=float, default=None,
                   help="keep repeating a fast measurement until this much timed work is done, up to 25 passes "
                        "(default 1.0; --quick: 0)")
    p.add_argument("--latency-queries", type=int, default=None, help="queries for single-query latency (default 200; --quick: 20)")
    p.add_argument("--latency-seconds", type=float, default=4.0, help="time bound per single-query latency measurement")
    p.add_argument("--num-leaves", default=None, help="comma-separated ScaNN num_leaves (default: round(sqrt(N)) and 2x that: 1000,2000 for 1M)")
    p.add_argument("--leaves-to-search", default=None, help="comma-separated absolute leaves_to_search (overrides --leaves-to-search-frac)")
    p.add_argument("--leaves-to-search-frac", default=None,
                   help="comma-separated fractions of num_leaves to search (default 0.005,0.01,0.02,0.04,0.08,0.16,0.32; --quick: 0.05,0.3)")
    p.add_argument("--reorder", default=None, help="comma-separated reordering candidate counts (default 100,250,500; --quick: 100,250)")
    p.add_argument("--aq-threshold", default="0.2",
                   help="comma-separated anisotropic_quantization_threshold values for score_ah (one index per value; 'nan' = plain PQ)")
    p.add_argument("--dims-per-block", type=int, default=2, help="score_ah dimensions_per_block")
    p.add_argument("--training-sample-size", type=int, default=100000, help="ScaNN tree and AH training sample size")
    p.add_argument("--no-tfrs", action="store_true", help="skip the TFRS BruteForce and ScaNN layers")
    p.add_argument("--no-index-size", action="store_true", help="skip serialising each ScaNN index to measure its size on disk")
    p.add_argument("--clusters", type=int, default=None, help="mixture clusters (default 2048; --quick: 128)")
    p.add_argument("--seed", type=int, default=1234, help="data seed")
    p.add_argument("--target-size", type=int, default=1_000_000, help="item count the target applies to")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@k the target requires")
    p.add_argument("--target-speedup", type=float, default=10.0, help="speedup over the fastest brute force the target requires")
    p.add_argument("--time-budget", type=float, default=1200.0,
                   help="seconds for the whole run; sizes above --target-size are skipped if the estimate exceeds it")
    p.add_argument("--full-sweep-above-target", action="store_true",
                   help="run the full sweep (not the reduced one) for sizes above --target-size too")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 1 when the target size was run and the target was not met")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    return p


def resolve_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    q = args.quick
    if args.sizes is None:
        args.sizes = QUICK_SIZES if q else DEFAULT_SIZES
    if args.queries is None:
        args.queries = 200 if q else 2000
    if args.reps is None:
        args.reps = 1 if q else 3
    if args.min_rep_seconds is None:
        args.min_rep_seconds = 0.0 if q else 1.0
    if args.latency_queries is None:
        args.latency_queries = 20 if q else 200
    if args.leaves_to_search_frac is None:
        args.leaves_to_search_frac = "0.05,0.3" if q else "0.005,0.01,0.02,0.04,0.08,0.16,0.32"
    if args.reorder is None:
        args.reorder = "100,250" if q else "100,250,500"
    if args.clusters is None:
        args.clusters = 128 if q else 2048
    if args.threads is None:
        try:
            args.threads = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            args.threads = os.cpu_count() or 1
    args.size_list = sorted(set(_ints(args.sizes)))
    args.reorder_list = sorted(set(_ints(args.reorder)))
    args.aq_list = [float(x) for x in args.aq_threshold.split(",") if x.strip()]
    return args


# --------------------------------------------------------------------------- the benchmark


def _log(t0: float, msg: str) -> None:
    print(f"[ann +{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def configure_threads(n: int) -> Dict[str, Any]:
    info = common.limit_threads(n)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
        info["tensorflow"] = {"intra_op": n, "inter_op": n}
    except RuntimeError as e:  # runtime already initialised in this process (e.g. under pytest)
        info["tensorflow"] = {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)",
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "default (all cores)",
            "note": f"could not change: {e}",
        }
    info["scann"] = {"search": n, "training": n, "api": "search_batched_parallel" if n > 1 else "search_batched"}
    return info


def _scann_searcher(db: np.ndarray, k: int, num_leaves: int, lts: int, threshold: float, reorder: int, args) -> Any:
    import scann

    builder = (
        scann.scann_ops_pybind.builder(db, k, "dot_product")
        .tree(num_leaves=num_leaves, num_leaves_to_search=lts, training_sample_size=min(args.training_sample_size, db.shape[0]))
        .score_ah(args.dims_per_block, anisotropic_quantization_threshold=threshold,
                  training_sample_size=min(args.training_sample_size, db.shape[0]))
        .reorder(reorder)
    )
    builder.set_n_training_threads(args.threads)
    searcher = builder.build()
    searcher.set_num_threads(args.threads)
    return searcher


def _index_size_mb(searcher: Any, workdir: str) -> Optional[float]:
    d = tempfile.mkdtemp(prefix="scann_index_", dir=workdir)
    try:
        searcher.serialize(d)
        return common.dir_size_bytes(d) / common.MiB
    except Exception:  # noqa: BLE001 - size is informative only
        return None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _scann_search_fns(searcher: Any, k: int, lts: int, reorder: int, threads: int):
    if threads > 1:
        def batched(q):
            return searcher.search_batched_parallel(q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder, leaves_to_search=lts)
    else:
        def batched(q):
            return searcher.search_batched(q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder, leaves_to_search=lts)

    def one(q):
        return searcher.search(q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder, leaves_to_search=lts)

    return batched, one


@dataclasses.dataclass
class Plan:
    """What to run at one size."""

    builds: List[Tuple[int, float]]          # (num_leaves, anisotropic threshold): one ScaNN index each
    leaves_to_search: Dict[int, List[int]]   # per num_leaves
    reorders: List[int]
    reps: int
    tfrs_bf: bool
    tfrs_scann: bool
    note: str = "full sweep"

    @property
    def n_configs(self) -> int:
        return sum(len(self.leaves_to_search[L]) for L, _ in self.builds) * len(self.reorders)


def full_plan(n_items: int, args: argparse.Namespace) -> Plan:
    reorders = [r for r in args.reorder_list if r >= args.k] or [max(args.k, 100)]
    leaves = leaves_for(n_items, args)
    return Plan(
        builds=[(L, t) for L in leaves for t in args.aq_list],
        leaves_to_search={L: leaves_to_search_for(L, args) for L in leaves},
        reorders=reorders, reps=args.reps, tfrs_bf=not args.no_tfrs, tfrs_scann=not args.no_tfrs,
    )


def reduced_plan(n_items: int, args: argparse.Namespace, results: Sequence[Dict[str, Any]]) -> Plan:
    """For sizes above the target size: one index, a short sweep around the best configuration
    found at the largest size already run (num_leaves scaled by sqrt(N)), one timed pass,
    no TFRS ScaNN layer. Keeps 5M within the time budget of a 2-core machine."""
    ref = next((r for r in sorted(results, key=lambda r: -r["n_items"]) if r.get("best")), None)
    if ref is not None:
        b = ref["best"]
        L = max(2, int(round(b["num_leaves"] * math.sqrt(n_items / ref["n_items"]))))
        frac = b["leaves_to_search"] / b["num_leaves"]
        lts = sorted({max(1, min(L, int(round(L * frac * f)))) for f in (0.5, 1.0, 1.5, 2.0, 3.0)})
        thr = float("nan") if b["aq_threshold"] is None else b["aq_threshold"]
        reorders = [b["reorder"]]
        note = (f"reduced sweep around the best {ref['n_items']:,}-item configuration ({b['config']}; num_leaves "
                f"scaled by sqrt(N)), 1 timed pass, no TFRS ScaNN layer")
    else:
        L = 2 * max(4, int(round(math.sqrt(n_items))))
        lts = sorted({max(1, int(round(f * L))) for f in (0.01, 0.02, 0.04, 0.08)})
        thr = args.aq_list[0]
        reorders = [min([r for r in args.reorder_list if r >= args.k] or [100])]
        note = "reduced sweep (no smaller size to centre it on), 1 timed pass, no TFRS ScaNN layer"
    return Plan(builds=[(L, thr)], leaves_to_search={L: lts}, reorders=reorders, reps=1,
                tfrs_bf=not args.no_tfrs, tfrs_scann=False, note=note)


def estimate_seconds(plan: Plan, n_items: int, prev: Dict[str, Any], args: argparse.Namespace) -> float:
    """Rough cost of ``plan`` at ``n_items`` from the phase timings of a smaller run (linear in N)."""
    r = n_items / prev["n_items"]
    ph = prev["phase_s"]
    nq = args.queries

    def bf_cost(row_method: str) -> float:
        row = next((x for x in prev["brute_force"] if x["method"] == row_method), None)
        if row is None:
            return 0.0
        pass_s = nq / row["qps"] * r
        return pass_s * (plan.reps + 0.5) + args.latency_seconds + 2.0

    est = ph["data"] * r + bf_cost("numpy brute force")
    if plan.tfrs_bf:
        est += bf_cost("tfrs BruteForce") + ph.get("tfrs_bf_index", 0.0) * r
    est += ph["scann_build_mean"] * r * len(plan.builds)
    est += ph["scann_config_mean"] * r * plan.n_configs * (plan.reps + 0.5) / (prev["reps"] + 0.5)
    if plan.tfrs_scann:
        est += ph.get("tfrs_scann", 0.0) * r
    return 1.15 * est


def run_size(n_items: int, args: argparse.Namespace, t0: float, plan: Plan) -> Dict[str, Any]:
    k, dim = args.k, args.dim
    spec = DataSpec(n_clusters=args.clusters, seed=args.seed)
    res: Dict[str, Any] = {"n_items": n_items, "dim": dim, "n_queries": args.queries, "k": k,
                           "plan": dataclasses.asdict(plan), "reps": plan.reps}
    phase: Dict[str, float] = {}
    res["phase_s"] = phase
    t_size = time.perf_counter()

    _log(t0, f"N={n_items:,}: generating data")
    tg = time.perf_counter()
    items, queries = make_data(n_items, args.queries, dim, spec)
    res["data_gen_s"] = phase["data"] = time.perf_counter() - tg
    res["data_mb"] = items.nbytes / common.MiB
    batch = args.batch_size
    rows: List[Dict[str, Any]] = []

    # ---- NumPy brute force (also the ground truth)
    _log(t0, f"N={n_items:,}: NumPy brute force ({args.queries} queries, batch {batch})")
    tp = time.perf_counter()
    bf = NumpyBruteForce(items, k)
    m = measure_qps(bf.search_batched, queries, batch, plan.reps, args.max_rep_seconds, args.min_rep_seconds)
    gt_ids = stack_ids(m["outs"], lambda o: o[0])
    gt_kth = exact_scores(items, queries, gt_ids[:, k - 1 : k])[:, 0]
    rec, _ = recall_at_k(items, queries, gt_ids, gt_kth, k)
    lat = measure_latency(lambda q: bf.search_batched(q[None, :]), queries, args.latency_queries, args.latency_seconds)
    scratch_mb = batch * min(n_items, bf.item_chunk) * 4 / common.MiB
    rows.append({
        "method": "numpy brute force", "kind": "exact", "config": f"matmul+argpartition, batch {batch}",
        "recall": rec, "qps": m["qps"], "reps": m["reps"], "latency": lat, "build_s": 0.0,
        "memory_mb": scratch_mb, "memory_note": "scores scratch only; uses the float32 item matrix in place",
        "index_mb": items.nbytes / common.MiB, "batch_size": batch,
    })
    del m
    gc.collect()
    phase["numpy_bf"] = time.perf_counter() - tp

    # ---- TFRS BruteForce
    tf_bf_row = None
    if plan.tfrs_bf:
        import tensorflow as tf
        import tensorflow_recommenders as tfrs

        tf_batch = max(1, min(batch, int(args.tf_max_scores_mib * common.MiB // (4 * n_items))))
        _log(t0, f"N={n_items:,}: TFRS BruteForce (batch {tf_batch})")
        with common.MemoryDelta() as md:
            tb = time.perf_counter()
            layer = tfrs.layers.factorized_top_k.BruteForce(k=k)
            cand = tf.constant(items)
            layer.index(cand)
            del cand
            build_s = phase["tfrs_bf_index"] = time.perf_counter() - tb
        tp = time.perf_counter()
        fn = tf.function(lambda q: layer(q, k=k), input_signature=[tf.TensorSpec([None, dim], tf.float32)],
                         autograph=False)
        m = measure_qps(lambda q: fn(q), queries, tf_batch, plan.reps, args.max_rep_seconds, args.min_rep_seconds)
        ids = stack_ids(m["outs"], lambda o: o[1].numpy())
        rec, _ = recall_at_k(items, queries, ids, gt_kth, k)
        lat = measure_latency(lambda q: fn(q[None, :]), queries, args.latency_queries, args.latency_seconds)
        tf_bf_row = {
            "method": "tfrs BruteForce", "kind": "exact", "config": f"tf.matmul+top_k, batch {tf_batch}",
            "recall": rec, "qps": m["qps"], "reps": m["reps"], "latency": lat, "build_s": build_s,
            "memory_mb": md.delta_mb, "memory_note": "RSS delta of index() (a tf.Variable copy of the items)",
            "index_mb": (items.nbytes + 4 * n_items) / common.MiB, "batch_size": tf_batch,
            "id_overlap": id_overlap(ids, gt_ids, k),
        }
        rows.append(tf_bf_row)
        del layer, fn, m
        gc.collect()
        phase["tfrs_bf"] = time.perf_counter() - tp

    bf_rows = list(rows)
    bf_best = max(bf_rows, key=lambda r: r["qps"])
    res["brute_force_reference_qps"] = bf_best["qps"]
    res["brute_force_reference"] = bf_best["method"]

    # ---- ScaNN sweep through the pybind builder
    scann_rows: List[Dict[str, Any]] = []
    build_times: List[float] = []
    config_times: List[float] = []
    reorders = plan.reorders
    for num_leaves, thr in plan.builds:
        lts_list = plan.leaves_to_search[num_leaves]
        _log(t0, f"N={n_items:,}: ScaNN build num_leaves={num_leaves} aq_threshold={_threshold_label(thr)}")
        tp = time.perf_counter()
        with common.MemoryDelta() as md:
            tb = time.perf_counter()
            searcher = _scann_searcher(items, k, num_leaves, lts_list[0], thr, max(reorders), args)
            build_s = time.perf_counter() - tb
        index_mb = None if args.no_index_size else _index_size_mb(searcher, args.out)
        build_times.append(time.perf_counter() - tp)
        for lts in lts_list:
            for reorder in reorders:
                tp = time.perf_counter()
                batched, one = _scann_search_fns(searcher, k, lts, reorder, args.threads)
                m = measure_qps(batched, queries, batch, plan.reps, args.max_rep_seconds, args.min_rep_seconds)
                ids = stack_ids(m["outs"], lambda o: o[0])
                rec, _ = recall_at_k(items, queries, ids, gt_kth, k)
                lat = measure_latency(one, queries, args.latency_queries, args.latency_seconds)
                scann_rows.append({
                    "method": "scann", "kind": "ann",
                    "config": f"L={num_leaves} search={lts} reorder={reorder} aq={_threshold_label(thr)}",
                    "num_leaves": num_leaves, "leaves_to_search": lts, "reorder": reorder,
                    "aq_threshold": None if math.isnan(thr) else thr,
                    "recall": rec, "qps": m["qps"], "reps": m["reps"], "latency": lat,
                    "build_s": build_s, "memory_mb": md.delta_mb, "index_mb": index_mb, "batch_size": batch,
                    "memory_note": "RSS delta of build(); includes ScaNN's float32 copy for reordering",
                })
                _log(t0, f"    search={lts:5d} reorder={reorder:4d}: recall {rec:.4f}  {m['qps']:9.0f} q/s")
                del m
                config_times.append(time.perf_counter() - tp)
        del searcher
        gc.collect()

    phase["scann_build_mean"] = statistics.mean(build_times) if build_times else 0.0
    phase["scann_config_mean"] = statistics.mean(config_times) if config_times else 0.0
    for r in rows + scann_rows:
        r["speedup"] = r["qps"] / bf_best["qps"]
        for b in bf_rows:
            r["speedup_vs_" + b["method"].replace(" ", "_")] = r["qps"] / b["qps"]
    meeting = [r for r in scann_rows if r["recall"] >= args.target_recall]
    best = max(meeting, key=lambda r: r["qps"]) if meeting else None
    if best is not None:
        best["best"] = True
    res["best"] = _summary(best) if best else None
    res["best_recall_config"] = _summary(max(scann_rows, key=lambda r: (r["recall"], r["qps"]))) if scann_rows else None

    # ---- one configuration through the TFRS ScaNN layer, next to the identical builder index
    tfrs_rows: List[Dict[str, Any]] = []
    if plan.tfrs_scann and scann_rows:
        tp = time.perf_counter()
        ref = best or max(scann_rows, key=lambda r: (r["recall"], r["qps"]))
        tfrs_rows = _tfrs_scann(items, queries, gt_kth, gt_ids, ref, args, t0, plan.reps)
        for r in tfrs_rows:
            r["speedup"] = r["qps"] / bf_best["qps"]
        phase["tfrs_scann"] = time.perf_counter() - tp

    res["brute_force"] = _strip(bf_rows)
    res["scann"] = _strip(scann_rows)
    res["tfrs_scann"] = _strip(tfrs_rows)
    res["elapsed_s"] = time.perf_counter() - t_size
    del items, queries
    gc.collect()
    return res


def _tfrs_scann(items, queries, gt_kth, gt_ids, ref, args, t0, reps) -> List[Dict[str, Any]]:
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    k, dim, batch = args.k, args.dim, args.batch_size
    L, lts, R = ref["num_leaves"], ref["leaves_to_search"], ref["reorder"]
    out: List[Dict[str, Any]] = []
    _log(t0, f"N={items.shape[0]:,}: TFRS ScaNN layer L={L} search={lts} reorder={R}")
    with common.MemoryDelta() as md:
        tb = time.perf_counter()
        layer = tfrs.layers.factorized_top_k.ScaNN(
            k=k, distance_measure="dot_product", num_leaves=L, num_leaves_to_search=lts,
            dimensions_per_block=args.dims_per_block, num_reordering_candidates=R,
        )
        cand = tf.constant(items)
        layer.index(cand)
        del cand
        build_s = time.perf_counter() - tb
    fn = tf.function(lambda q: layer(q, k=k), input_signature=[tf.TensorSpec([None, dim], tf.float32)],
                     autograph=False)
    m = measure_qps(lambda q: fn(q), queries, batch, reps, args.max_rep_seconds, args.min_rep_seconds)
    ids = stack_ids(m["outs"], lambda o: o[1].numpy())
    rec, _ = recall_at_k(items, queries, ids, gt_kth, k)
    lat = measure_latency(lambda q: fn(q[None, :]), queries, args.latency_queries, args.latency_seconds)
    tfrs_ids = ids
    out.append({
        "method": "tfrs ScaNN layer", "kind": "ann",
        "config": f"L={L} search={lts} reorder={R} aq=none",
        "num_leaves": L, "leaves_to_search": lts, "reorder": R, "aq_threshold": None,
        "recall": rec, "qps": m["qps"], "reps": m["reps"], "latency": lat, "build_s": build_s,
        "memory_mb": md.delta_mb, "index_mb": None, "batch_size": batch,
        "memory_note": "RSS delta of index() (builds through ScaNN's TF ops)",
        "note": "TFRS 0.7.7 calls score_ah(dimensions_per_block) without an anisotropic threshold (plain PQ) "
                "and searches with search_batched_parallel",
    })
    del layer, fn, m
    gc.collect()

    # The same settings through the builder: TFRS's layer is a thin wrapper, so this should match.
    _log(t0, f"N={items.shape[0]:,}: builder index with the TFRS layer's settings (aq=none)")
    with common.MemoryDelta() as md:
        tb = time.perf_counter()
        searcher = _scann_searcher(items, k, L, lts, float("nan"), R, args)
        build_s = time.perf_counter() - tb
    index_mb = None if args.no_index_size else _index_size_mb(searcher, args.out)
    out[0]["index_mb"] = index_mb  # the layer wraps the same index (its own serialisation is a TF module)
    batched, one = _scann_search_fns(searcher, k, lts, R, args.threads)
    m = measure_qps(batched, queries, batch, reps, args.max_rep_seconds, args.min_rep_seconds)
    ids = stack_ids(m["outs"], lambda o: o[0])
    rec, _ = recall_at_k(items, queries, ids, gt_kth, k)
    lat = measure_latency(one, queries, args.latency_queries, args.latency_seconds)
    out.append({
        "method": "scann (as TFRS)", "kind": "ann",
        "config": f"L={L} search={lts} reorder={R} aq=none",
        "num_leaves": L, "leaves_to_search": lts, "reorder": R, "aq_threshold": None,
        "recall": rec, "qps": m["qps"], "reps": m["reps"], "latency": lat, "build_s": build_s,
        "memory_mb": md.delta_mb, "index_mb": index_mb, "batch_size": batch,
        "memory_note": "RSS delta of build()",
        "same_results_as_tfrs_layer": id_overlap(ids, tfrs_ids, k),
    })
    del searcher, m
    gc.collect()
    return out


def _summary(r: Dict[str, Any]) -> Dict[str, Any]:
    return {key: r.get(key) for key in ("method", "config", "num_leaves", "leaves_to_search", "reorder", "aq_threshold",
                                         "recall", "qps", "speedup", "build_s", "memory_mb", "index_mb", "latency")}


def _strip(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "outs"} for r in rows]


# --------------------------------------------------------------------------- output


TABLE_COLUMNS = [
    common.Column("method", "method"),
    common.Column("config", "config"),
    common.Column("recall", "recall@k", ".4f"),
    common.Column("qps", "QPS", ",.0f"),
    common.Column("speedup", "speedup", ".1f"),
    common.Column("p50", "p50 ms", ".3f"),
    common.Column("p99", "p99 ms", ".3f"),
    common.Column("build_s", "build s", ".1f"),
    common.Column("memory_mb", "mem MB", ",.0f"),
    common.Column("index_mb", "index MB", ",.0f"),
    common.Column("mark", "", align="<"),
]


def size_table(res: Dict[str, Any], args: argparse.Namespace) -> str:
    rows = []
    for r in res["brute_force"] + res["scann"] + res["tfrs_scann"]:
        row = dict(r)
        row["p50"] = r["latency"]["p50_ms"]
        row["p99"] = r["latency"]["p99_ms"]
        mark = ""
        if r.get("best"):
            mark = f"<= best with recall >= {args.target_recall:g}"
        elif r["method"] == res["brute_force_reference"]:
            mark = "<= brute-force reference (speedup 1.0)"
        row["mark"] = mark
        rows.append(row)
    title = (f"N = {res['n_items']:,} items, d = {res['dim']}, {res['n_queries']} queries, k = {res['k']}, "
             f"{args.threads} thread(s) for every method")
    note = res.get("plan", {}).get("note")
    if note and note != "full sweep":
        title += f"\n({note})"
    return common.format_table(rows, TABLE_COLUMNS, title=title)


def target_verdict(results: List[Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    t = {"n_items": args.target_size, "recall": args.target_recall, "speedup": args.target_speedup}
    res = next((r for r in results if r["n_items"] == args.target_size), None)
    if res is None:
        t.update(evaluated=False, met=None, reason=f"size {args.target_size:,} was not run")
        return t
    best = res.get("best")
    t["evaluated"] = True
    t["brute_force_reference"] = res["brute_force_reference"]
    t["brute_force_qps"] = res["brute_force_reference_qps"]
    if best is None:
        t.update(met=False, reason=f"no ScaNN configuration reached recall@{args.k} >= {args.target_recall}")
        return t
    # fastest config meeting recall is the best candidate for the speedup too
    t["best"] = best
    t["met"] = bool(best["speedup"] >= args.target_speedup)
    t["reason"] = (f"{best['config']}: recall@{args.k} {best['recall']:.4f} at {best['qps']:,.0f} q/s = "
                   f"{best['speedup']:.1f}x the fastest brute force ({res['brute_force_reference']}, "
                   f"{res['brute_force_reference_qps']:,.0f} q/s)")
    return t


def plot(results: List[Dict[str, Any]], args: argparse.Namespace, path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return None
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 5.2), squeeze=False)
    markers = ["o", "s", "^", "D", "v", "P"]
    for ax, res in zip(axes[0], results):
        by_build: Dict[Tuple[int, Any], List[Dict[str, Any]]] = {}
        for r in res["scann"]:
            by_build.setdefault((r["num_leaves"], r["aq_threshold"]), []).append(r)
        for i, ((L, thr), rs) in enumerate(sorted(by_build.items(), key=lambda kv: kv[0][0])):
            for j, R in enumerate(sorted({r["reorder"] for r in rs})):
                pts = sorted([r for r in rs if r["reorder"] == R], key=lambda r: r["leaves_to_search"])
                ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker=markers[j % len(markers)],
                        ls="-" if i == 0 else "--", lw=1, ms=4,
                        label=f"ScaNN L={L} reorder={R}" + ("" if thr in (None, 0.2) else f" aq={thr}"))
        for r in res["tfrs_scann"]:
            ax.scatter([r["recall"]], [r["qps"]], marker="*", s=140, zorder=5, label=f"{r['method']} ({r['config']})")
        ref = res["brute_force_reference_qps"]
        for r in res["brute_force"]:
            ax.axhline(r["qps"], color="k", ls="-" if r["qps"] == ref else ":", lw=1.2,
                       label=f"{r['method']} ({r['qps']:,.0f} q/s)")
        ax.axhline(ref * args.target_speedup, color="tab:red", ls="--", lw=1, label=f"{args.target_speedup:g}x brute force")
        ax.axvline(args.target_recall, color="tab:gray", ls="--", lw=1, label=f"recall {args.target_recall:g}")
        if res.get("best"):
            b = res["best"]
            ax.scatter([b["recall"]], [b["qps"]], s=220, facecolors="none", edgecolors="tab:red", lw=2, zorder=6,
                       label="best meeting recall target")
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{args.k} (vs exact search)")
        ax.set_ylabel(f"queries/s (batch {args.batch_size}, {args.threads} threads)")
        ax.set_title(f"N = {res['n_items']:,}, d = {res['dim']}, dot product")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left")
    fig.suptitle("ScaNN recall vs QPS (synthetic clustered embeddings)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def _needed_memory_bytes(n_items: int, dim: int, batch: int) -> int:
    data = n_items * dim * 4
    # items + TF variable copy + ScaNN copies (one index alive at a time, plus TF's) + scores scratch
    return int(4.5 * data + 1024 * common.MiB)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(argv)
    t0 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    threads_info = configure_threads(args.threads)
    machine = common.machine_info()
    spec = DataSpec(n_clusters=args.clusters, seed=args.seed)

    print("ANN benchmark: ScaNN vs brute force (exact), dot-product / MIPS retrieval")
    print("Data: " + spec.describe(args.dim))
    print(f"Threads: {args.threads} for every method (NumPy BLAS matmul, TensorFlow intra/inter-op, ScaNN search and "
          f"training; NumPy's top-k selection itself is single-threaded). Usable cores: {machine.get('usable_cores')}.")
    print(f"Batched QPS: passes over all {args.queries} queries in batches of {args.batch_size}, 1 warm-up batch, "
          f"median of {args.reps}+ passes (more while under {args.min_rep_seconds:g} s timed). Latency (p50/p99): one "
          f"query per call, up to {args.latency_queries} queries (ScaNN's search() uses one thread; the brute-force "
          f"matmuls may use all {args.threads}).")
    print("Recall: tie-aware recall@k against the exact NumPy search. Memory: RSS delta of building the index "
          "(mem MB) and size of the serialised ScaNN index (index MB; for brute force, the raw vectors).")
    print(common.format_machine(machine))
    print(flush=True)

    results: List[Dict[str, Any]] = []
    skipped: List[Dict[str, Any]] = []
    tables: List[str] = []
    for n_items in args.size_list:
        elapsed = time.perf_counter() - t0
        large = n_items > args.target_size and not args.quick
        plan = reduced_plan(n_items, args, results) if large and not args.full_sweep_above_target else full_plan(n_items, args)
        if results and large:
            prev = results[-1]
            estimate = estimate_seconds(plan, n_items, prev, args)
            if elapsed + estimate > args.time_budget:
                reason = (f"estimated {estimate:,.0f} s (phase timings of the {prev['n_items']:,}-item run, linear in N) "
                          f"would exceed the time budget: {elapsed:,.0f} s used of {args.time_budget:,.0f} s")
                skipped.append({"n_items": n_items, "reason": reason, "plan": plan.note})
                print(f"Skipping N = {n_items:,}: {reason}\n", flush=True)
                continue
            print(f"N = {n_items:,}: {plan.note}; estimated {estimate:,.0f} s "
                  f"({elapsed:,.0f} s used of {args.time_budget:,.0f} s)", flush=True)
        need = _needed_memory_bytes(n_items, args.dim, args.batch_size)
        avail = common.available_memory_bytes()
        if avail is not None and need > avail:
            reason = f"needs about {need / common.GiB:.1f} GiB, {avail / common.GiB:.1f} GiB available"
            skipped.append({"n_items": n_items, "reason": reason})
            print(f"Skipping N = {n_items:,}: {reason}\n", flush=True)
            continue
        res = run_size(n_items, args, t0, plan)
        results.append(res)
        table = size_table(res, args)
        tables.append(table)
        print(table)
        if res["best"]:
            b = res["best"]
            print(f"Best ScaNN configuration with recall@{args.k} >= {args.target_recall:g}: {b['config']} -> recall "
                  f"{b['recall']:.4f}, {b['qps']:,.0f} q/s, {b['speedup']:.1f}x {res['brute_force_reference']}")
        else:
            print(f"No ScaNN configuration reached recall@{args.k} >= {args.target_recall:g}")
        for r in res["tfrs_scann"]:
            if "same_results_as_tfrs_layer" in r:
                tf_row = res["tfrs_scann"][0]
                print(f"TFRS ScaNN layer vs builder with the same settings: recall {tf_row['recall']:.4f} vs "
                      f"{r['recall']:.4f}, {r['same_results_as_tfrs_layer']:.4f} of returned ids identical")
        print(f"(N = {n_items:,} took {res['elapsed_s']:.0f} s)\n", flush=True)
        write_partial = {"benchmark": "ann", "partial": True, "sizes": results}
        common.write_json(os.path.join(args.out, "ann.json"), write_partial)

    target = target_verdict(results, args)
    if target["evaluated"]:
        verdict = "MET" if target["met"] else "NOT MET"
        print(f"Target (recall@{args.k} >= {args.target_recall:g} at >= {args.target_speedup:g}x brute-force QPS on "
              f"{args.target_size:,} items): {verdict} - {target['reason']}")
    else:
        print(f"Target not evaluated: {target['reason']}")

    try:
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(f"Load average at end: {machine['load_average_at_end']}")
    except OSError:
        pass
    png = None
    if not args.no_plot and results:
        png = plot(results, args, os.path.join(args.out, "ann_recall_qps.png"))
    out = {
        "benchmark": "ann",
        "partial": False,
        "command": "python -m benchmarks.ann " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items()},
        "data": {"description": spec.describe(args.dim), "spec": dataclasses.asdict(spec), "dim": args.dim,
                 "n_queries": args.queries, "similarity": "dot_product"},
        "threads": threads_info,
        "machine": machine,
        "method_notes": {
            "numpy brute force": NumpyBruteForce.__doc__.strip().split("\n")[0],
            "tfrs BruteForce": "tfrs.layers.factorized_top_k.BruteForce(k).index(items), called in a tf.function",
            "scann": "scann_ops_pybind.builder(db, k, 'dot_product').tree(num_leaves, ...).score_ah(dims_per_block, "
                     "anisotropic_quantization_threshold).reorder(max reorder).build(); leaves_to_search and "
                     "pre_reorder_num_neighbors set per query call",
            "recall": recall_at_k.__doc__.strip().split("\n")[0],
            "speedup": "QPS / QPS of the fastest brute force at the same size",
        },
        "sizes": results,
        "skipped": skipped,
        "target": target,
        "tables": tables,
        "plot": png,
        "elapsed_s": time.perf_counter() - t0,
    }
    path = common.write_json(os.path.join(args.out, "ann.json"), out)
    print(f"Wrote {path}" + (f" and {png}" if png else "") + f" in {out['elapsed_s']:.0f} s")
    if args.fail_on_miss and target["evaluated"] and not target["met"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
