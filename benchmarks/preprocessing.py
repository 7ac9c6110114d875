"""preprocessing: TF-Transform throughput of the Beam pipeline on the DirectRunner, and its memory.

For each size (default ~100K and ~1M interaction rows of synthetic data) and each runner
mode (default ``in_memory`` with 1 worker and ``multi_processing`` with 2 workers) this
runs the project's real pipeline, ``preprocessing.pipeline.run`` (read JSON lines ->
validate -> join -> per-user history -> time split -> TF-Transform analyze + transform ->
TFRecords), and reports

* wall time of ``pipeline.run`` and rows/s (input interaction rows / wall seconds);
* CPU seconds of the run (this process + its reaped children, from getrusage);
* peak memory of the whole process tree (the run's process plus any SDK-harness worker
  processes), sampled every 0.25 s: RSS summed over the processes, PSS summed (shared
  library pages split instead of counted once per process) and the main process' RSS;
* with two or more sizes: a fixed + per-row cost fit (wall = a + b * rows) per mode, so
  the marginal rows/s without the pipeline's start-up cost is visible.

Every (size, mode) runs in a fresh Python process (``--_worker``) so memory peaks are
not polluted by the previous run and Beam starts cold, as a real job would. Raw data is
generated once per size and cached under ``<out>/cache``. A run whose estimated time
(from the smaller size, scaled by rows) would overrun ``--time-budget`` is skipped and
listed with the reason; nothing is extrapolated in the table.

Run ``python -m benchmarks.preprocessing --help``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import common

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SIZES = "100000,1000000"
QUICK_SIZES = "2000"
DEFAULT_MODES = "in_memory:1,multi_processing:2"
EVENTS_PER_USER = 25.0


# --------------------------------------------------------------------------- data


def synthetic_shape(rows: int) -> Dict[str, int]:
    """Generator arguments that give about ``rows`` interactions (25 events a user on average).

    The catalogue grows with the data (rows / 50, at least 300 items), as a real one would.
    """
    n_users = max(20, int(round(rows / EVENTS_PER_USER)))
    n_items = max(300, rows // 50)
    return {"n_users": n_users, "n_items": n_items}


def ensure_raw(rows: int, cache: str, seed: int = 42) -> Tuple[str, Dict[str, Any]]:
    """Generates (or reuses) the raw tables for ``rows`` target rows; returns (raw_dir, info)."""
    shape = synthetic_shape(rows)
    raw_dir = os.path.join(cache, f"raw-{rows}-u{shape['n_users']}-i{shape['n_items']}-s{seed}")
    info_path = os.path.join(raw_dir, "bench_info.json")
    if os.path.exists(info_path):
        with open(info_path) as f:
            return raw_dir, json.load(f)
    from preprocessing.sources import synthetic, write_raw

    t0 = time.perf_counter()
    tables = synthetic.generate(n_users=shape["n_users"], n_items=shape["n_items"],
                                events_per_user=EVENTS_PER_USER, seed=seed)
    gen_s = time.perf_counter() - t0
    tmp = raw_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    write_raw(tables, tmp)
    info = {"target_rows": rows, "rows": tables.num_interactions, "n_users": len(tables.users["user_id"]),
            "n_items": len(tables.items["item_id"]), "seed": seed, "generate_s": round(gen_s, 2),
            "write_s": round(time.perf_counter() - t0, 2),
            "raw_mb": round(common.dir_size_bytes(tmp) / common.MiB, 2)}
    with open(os.path.join(tmp, "bench_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    shutil.rmtree(raw_dir, ignore_errors=True)
    os.rename(tmp, raw_dir)
    return raw_dir, info


# --------------------------------------------------------------------------- worker (one run, fresh process)


def _rusage_cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def worker(args: argparse.Namespace) -> int:
    import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    import logging

    from preprocessing import pipeline
    from recsys.config import Config

    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    import tensorflow_transform  # noqa: F401  (import cost outside the timed region)
    import apache_beam  # noqa: F401

    cfg = Config(workdir=args.work)
    cfg.preprocess.direct_running_mode = args.mode
    cfg.preprocess.direct_num_workers = args.workers
    rss_ready = common.rss_bytes()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)   # CPU time: meaningful on a shared machine too
        profiler.enable()
    cpu0 = _rusage_cpu()
    t0 = time.perf_counter()
    version_dir = pipeline.run(cfg, args.raw, os.path.join(args.work, "preprocessed"))
    wall = time.perf_counter() - t0
    cpu = _rusage_cpu() - cpu0
    if profiler is not None:
        profiler.disable()
        write_profile(profiler, args.profile)
    stats = pipeline.load_stats(version_dir)
    out = {"wall_s": wall, "cpu_s": cpu, "rss_after_imports_mb": round(rss_ready / common.MiB, 1),
           "version_dir": version_dir, "stats": stats,
           "output_mb": round(common.dir_size_bytes(version_dir) / common.MiB, 2)}
    with open(args.result, "w") as f:
        json.dump(out, f, indent=2)
    return 0


def write_profile(profiler, path: str, top: int = 40) -> None:
    """The run's profile as text: top functions by own CPU time, then by cumulative CPU time."""
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    with open(path, "w") as f:
        f.write(buf.getvalue())
    profiler.dump_stats(path.replace(".txt", ".prof"))


def run_one(raw_dir: str, rows: int, mode: str, workers: int, work: str, timeout: float,
            log_path: str, profile: str = "") -> Dict[str, Any]:
    """Runs one (size, mode) in a fresh process, sampling the memory of its whole process tree."""
    os.makedirs(work, exist_ok=True)
    result_path = os.path.join(work, "result.json")
    if os.path.exists(result_path):
        os.remove(result_path)
    cmd = [sys.executable, "-m", "benchmarks.preprocessing", "--_worker", "--raw", raw_dir, "--mode", mode,
           "--workers", str(workers), "--work", work, "--result", result_path]
    cmd += ["--profile", profile] if profile else []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
        log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        sampler = common.ProcessTreeSampler(proc.pid, interval=0.25).start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)  # the worker's own session: only processes this run started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        mem = sampler.stop()
    process_s = time.perf_counter() - t0
    out: Dict[str, Any] = {"rows": rows, "mode": mode, "workers": workers, "process_s": round(process_s, 1),
                           "memory": mem, "exit_code": proc.returncode}
    if timed_out:
        out["error"] = f"timed out after {timeout:.0f} s (killed)"
        return out
    if proc.returncode != 0 or not os.path.exists(result_path):
        out["error"] = f"worker exited with {proc.returncode}; see {log_path}"
        return out
    with open(result_path) as f:
        res = json.load(f)
    stats = res["stats"]
    processed = stats["train"] + stats["eval"] + stats["dead_letters"]
    out.update({
        "wall_s": round(res["wall_s"], 2),
        "rows_per_s": rows / res["wall_s"],
        "cpu_s": round(res["cpu_s"], 1),
        "cpu_utilisation": round(res["cpu_s"] / res["wall_s"], 2),
        "rows_per_cpu_s": rows / max(res["cpu_s"], 1e-9),
        "rss_after_imports_mb": res["rss_after_imports_mb"],
        "peak_rss_tree_mb": mem["peak_rss_tree_mb"],
        "peak_pss_tree_mb": mem["peak_pss_tree_mb"],
        "peak_rss_main_mb": mem["peak_rss_main_mb"],
        "processes": mem["max_processes"],
        "rows_processed": processed,
        "train": stats["train"], "eval": stats["eval"], "dead_letters": stats["dead_letters"],
        "output_mb": res["output_mb"],
        "version_dir": res["version_dir"],
    })
    return out


# --------------------------------------------------------------------------- planning


def estimate_seconds(rows: int, mode: str, results: Sequence[Dict[str, Any]]) -> Optional[float]:
    """Wall-clock estimate for (rows, mode) from the runs so far; None when nothing to go on.

    Same mode at a smaller size: scaled by the growth another mode showed between the same
    sizes if there is one, else proportionally to rows (conservative: start-up cost is
    scaled too). Plus the process start-up seen so far.
    """
    ok = [r for r in results if "wall_s" in r]
    same = sorted((r for r in ok if r["mode"] == mode and r["rows"] < rows), key=lambda r: r["rows"])
    if not same:
        return None
    base = same[-1]
    factor = rows / base["rows"]
    for other in ok:
        if other["mode"] != mode and other["rows"] == rows:
            ref = [r for r in ok if r["mode"] == other["mode"] and r["rows"] == base["rows"]]
            if ref:
                factor = other["wall_s"] / ref[0]["wall_s"]
    overhead = base["process_s"] - base["wall_s"]
    return base["wall_s"] * factor + overhead


def linear_fits(results: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per mode: wall = fixed + per_row * rows (least squares over the measured sizes)."""
    fits: Dict[str, Dict[str, Any]] = {}
    for mode in sorted({r["mode"] for r in results}):
        pts = [(r["rows"], r["wall_s"]) for r in results if r["mode"] == mode and "wall_s" in r]
        if len({x for x, _ in pts}) < 2:
            continue
        n = len(pts)
        mx = sum(x for x, _ in pts) / n
        my = sum(y for _, y in pts) / n
        b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        a = my - b * mx
        fits[mode] = {"fixed_s": a, "per_row_s": b, "marginal_rows_per_s": (1.0 / b) if b > 0 else None,
                      "points": n}
    return fits


# --------------------------------------------------------------------------- output


COLUMNS = [
    common.Column("rows", "rows", ",d"),
    common.Column("mode", "mode"),
    common.Column("workers", "workers", "d"),
    common.Column("wall_s", "wall s", ".1f"),
    common.Column("rows_per_s", "rows/s", ",.0f"),
    common.Column("cpu_s", "CPU s", ".0f"),
    common.Column("cpu_utilisation", "CPU/wall", ".2f"),
    common.Column("peak_rss_tree_mb", "peak RSS MB (tree)", ",.0f"),
    common.Column("peak_pss_tree_mb", "peak PSS MB (tree)", ",.0f"),
    common.Column("peak_rss_main_mb", "peak RSS MB (main)", ",.0f"),
    common.Column("processes", "procs", "d"),
    common.Column("output_mb", "output MB", ",.1f"),
]


def plot(results: List[Dict[str, Any]], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return None
    ok = [r for r in results if "wall_s" in r]
    if not ok:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for mode in sorted({r["mode"] for r in ok}):
        rs = sorted((r for r in ok if r["mode"] == mode), key=lambda r: r["rows"])
        label = f"{mode} ({rs[0]['workers']} worker{'s' if rs[0]['workers'] > 1 else ''})"
        axes[0].plot([r["rows"] for r in rs], [r["rows_per_s"] for r in rs], marker="o", label=label)
        axes[1].plot([r["rows"] for r in rs], [r["peak_rss_tree_mb"] for r in rs], marker="o", label=label + " RSS")
        if rs[0].get("peak_pss_tree_mb"):
            axes[1].plot([r["rows"] for r in rs], [r["peak_pss_tree_mb"] for r in rs], marker="s", ls="--",
                         label=label + " PSS")
    for ax, title, ylabel in ((axes[0], "TF-Transform pipeline throughput (DirectRunner)", "rows/s (wall)"),
                              (axes[1], "peak memory of the process tree", "MB")):
        ax.set_xscale("log")
        ax.set_xlabel("input interaction rows")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("preprocessing.pipeline.run on synthetic data (measured points only)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.preprocessing",
        description=(
            "TF-Transform preprocessing benchmark: runs the project's Beam pipeline (preprocessing.pipeline.run: "
            "validate, join, history, time split, TF-Transform analyze + transform, TFRecords) on the DirectRunner "
            "for synthetic data of each size, once per runner mode, each in a fresh process. Reports wall time, "
            "rows/s, CPU seconds and peak memory of the whole process tree (RSS and PSS, sampled every 0.25 s), "
            "and, with 2+ sizes, a fixed + per-row cost fit. Writes <out>/preprocessing.json and "
            "<out>/preprocessing.png. Run it niced on a shared machine: nice -n 10 python -m benchmarks.preprocessing"),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="bench_results/preprocessing", help="output directory")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_SIZES} rows only")
    p.add_argument("--sizes", default=None,
                   help=f"comma-separated target interaction rows (default {DEFAULT_SIZES}; --quick: {QUICK_SIZES}); "
                        f"users = rows / {EVENTS_PER_USER:g}, items = rows / 50 (at least 300)")
    p.add_argument("--modes", default=DEFAULT_MODES,
                   help="comma-separated direct_running_mode:direct_num_workers pairs "
                        "(in_memory | multi_threading | multi_processing)")
    p.add_argument("--time-budget", type=float, default=900.0,
                   help="seconds for all pipeline runs; a run whose estimate (from the smaller size) would "
                        "overrun it is skipped and reported, never extrapolated into the table")
    p.add_argument("--cache", default=None, help="raw data cache directory (default <out>/cache)")
    p.add_argument("--keep-outputs", action="store_true",
                   help="keep each run's preprocessed output (<out>/work/...); default: delete after measuring")
    p.add_argument("--seed", type=int, default=42, help="synthetic data seed")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--profile", nargs="?", const=True, default=False,
                   help="cProfile each run in CPU time (in_memory runs everything in one process) and write "
                        "<out>/profile-<rows>-<mode>.txt (top functions) and .prof (pstats)")
    # internal: one measured run in a fresh process
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raw", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def parse_modes(text: str) -> List[Tuple[str, int]]:
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        mode, _, n = part.strip().partition(":")
        if mode not in ("in_memory", "multi_threading", "multi_processing"):
            raise SystemExit(f"unknown direct_running_mode {mode!r}")
        out.append((mode, int(n or 1)))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args._worker:
        return worker(args)
    t_start = time.perf_counter()
    sizes = sorted({int(float(x)) for x in (args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)).split(",")
                    if x.strip()})
    modes = parse_modes(args.modes)
    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)
    cache = args.cache or os.path.join(out_dir, "cache")
    log_path = os.path.join(out_dir, "runs.log")
    machine = common.machine_info(common.DEFAULT_PACKAGES + ("apache-beam", "tensorflow-transform", "tfx-bsl"))

    print("Preprocessing benchmark: preprocessing.pipeline.run (Beam DirectRunner + TF-Transform) on synthetic data")
    print(f"Sizes (target rows): {', '.join(f'{s:,}' for s in sizes)}; modes: "
          f"{', '.join(f'{m} x{w}' for m, w in modes)}; each run in a fresh process; time budget {args.time_budget:.0f} s")
    print("rows/s = input interaction rows / wall seconds of pipeline.run (imports excluded). Memory: peak over the "
          "run's process tree, sampled every 0.25 s (RSS summed per process counts shared library pages once per "
          "process; PSS splits them).")
    print(common.format_machine(machine))
    print(flush=True)

    data: Dict[int, Dict[str, Any]] = {}
    results: List[Dict[str, Any]] = []
    skipped: List[Dict[str, Any]] = []
    for rows in sizes:
        raw_dir, info = ensure_raw(rows, cache, args.seed)
        data[rows] = info
        print(f"[data] {info['rows']:,} rows, {info['n_users']:,} users, {info['n_items']:,} items "
              f"({info['raw_mb']} MB raw; generated in {info['generate_s']} s) -> {raw_dir}", flush=True)
        for mode, workers in modes:
            used = time.perf_counter() - t_start
            est = estimate_seconds(info["rows"], mode, results)
            left = args.time_budget - used
            if est is not None and est > left:
                reason = (f"estimated {est:,.0f} s (from the smaller size) but {max(left, 0):,.0f} s of the "
                          f"{args.time_budget:,.0f} s budget left")
                skipped.append({"rows": info["rows"], "mode": mode, "workers": workers, "reason": reason,
                                "estimate_s": est})
                print(f"Skipping {info['rows']:,} rows / {mode}: {reason}", flush=True)
                continue
            work = os.path.join(out_dir, "work", f"{rows}-{mode}-{workers}")
            shutil.rmtree(work, ignore_errors=True)
            print(f"[run] {info['rows']:,} rows, {mode} x{workers}"
                  + (f" (estimated {est:,.0f} s)" if est else "") + " ...", flush=True)
            timeout = max(60.0, left + 120.0)
            profile = os.path.abspath(os.path.join(out_dir, f"profile-{rows}-{mode}.txt")) if args.profile else ""
            res = run_one(raw_dir, info["rows"], mode, workers, work, timeout, log_path, profile)
            if profile:
                res["profile"] = profile
            res.update({"n_users": info["n_users"], "n_items": info["n_items"]})
            results.append(res)
            if "error" in res:
                print(f"[run]   FAILED: {res['error']}", flush=True)
            else:
                print(f"[run]   {res['wall_s']:.1f} s, {res['rows_per_s']:,.0f} rows/s, peak RSS (tree) "
                      f"{res['peak_rss_tree_mb']:,.0f} MB", flush=True)
            if not args.keep_outputs:
                shutil.rmtree(work, ignore_errors=True)
                res.pop("version_dir", None)
            common.write_json(os.path.join(out_dir, "preprocessing.json"),
                              {"benchmark": "preprocessing", "partial": True, "results": results})

    ok = [r for r in results if "wall_s" in r]
    table = common.format_table(ok, COLUMNS, title="TF-Transform preprocessing on the DirectRunner (synthetic data)")
    print()
    print(table)
    fits = linear_fits(ok)
    if fits:
        print("\nFixed + per-row cost (least squares over the measured sizes; with two sizes the line is exact):")
        for mode, f in fits.items():
            mr = f"{f['marginal_rows_per_s']:,.0f}" if f["marginal_rows_per_s"] else "n/a"
            print(f"  {mode}: wall ~ {f['fixed_s']:.1f} s + {f['per_row_s'] * 1e6:.1f} us/row -> marginal {mr} rows/s")
    for s in skipped:
        print(f"Skipped: {s['rows']:,} rows / {s['mode']}: {s['reason']}")
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"Failed: {r['rows']:,} rows / {r['mode']}: {r['error']}")
    try:
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(f"Load average at end: {machine['load_average_at_end']}")
    except OSError:
        pass
    png = None if args.no_plot else plot(ok, os.path.join(out_dir, "preprocessing.png"))
    payload = {
        "benchmark": "preprocessing",
        "partial": False,
        "command": "python -m benchmarks.preprocessing " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"sizes": sizes, "modes": [{"mode": m, "workers": w} for m, w in modes],
                     "time_budget_s": args.time_budget, "seed": args.seed, "quick": args.quick},
        "machine": machine,
        "data": {str(k): v for k, v in data.items()},
        "method": {
            "measured": "preprocessing.pipeline.run(cfg, raw_dir, out_base) with cfg.preprocess.direct_running_mode "
                        "and direct_num_workers set; DirectRunner; each run in a fresh Python process",
            "rows_per_s": "input interaction rows / wall seconds of pipeline.run (Python/TF imports excluded)",
            "cpu_s": "getrusage(SELF) + getrusage(CHILDREN) of the run's process over pipeline.run",
            "memory": "peak over samples every 0.25 s of the run's process and all descendants: RSS summed, PSS "
                      "summed, RSS of the main process",
            "data": f"preprocessing.sources.synthetic.generate(n_users=rows/{EVENTS_PER_USER:g}, n_items=rows/50, "
                    f"events_per_user={EVENTS_PER_USER:g})",
        },
        "results": results,
        "linear_fits": fits,
        "skipped": skipped,
        "table": table,
        "plot": png,
        "elapsed_s": time.perf_counter() - t_start,
    }
    path = common.write_json(os.path.join(out_dir, "preprocessing.json"), payload)
    print(f"Wrote {path}" + (f" and {png}" if png else "") + f" in {payload['elapsed_s']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
