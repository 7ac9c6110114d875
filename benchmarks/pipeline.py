"""pipeline: `recsys pipeline run-local` twice on the same config, step by step.

The first run executes every stage with kfp's local SubprocessRunner (one interpreter per task, as on a
cluster); the second, with the same config and artifact root, should reuse every stage up to the
staged export (content-addressed artifacts) and only re-run the blessing (against what the first run
pushed) and the push. Per task: wall seconds (from each task's KFP artifact metadata) and whether it
was reused; per run: total wall time. Writes ``<out>/pipeline.json``.

    python -m benchmarks.pipeline [--workdir DIR] [--set key=value ...] [--full-size]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from benchmarks import common

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def task_records(pipeline_root: str, run_dir: str) -> Dict[str, Dict[str, Any]]:
    """{task: {seconds, reused}} from kfp.local's executor outputs of one run."""
    out = {}
    for path in glob.glob(os.path.join(pipeline_root, run_dir, "*", "executor_output.json")):
        task = os.path.basename(os.path.dirname(path))
        with open(path) as f:
            artifacts = json.load(f).get("artifacts", {})
        meta = [a["metadata"] for lst in artifacts.values() for a in lst.get("artifacts", [])
                if "reused" in a.get("metadata", {})]   # stage artifacts (a Metrics artifact carries figures only)
        seconds = max((m.get("seconds", 0.0) for m in meta), default=None)
        out[task] = {"seconds": seconds, "reused": all(m.get("reused") for m in meta) if meta else None}
    return out


def run_twice(workdir: str, overrides: Sequence[str]) -> Dict[str, Any]:
    from pipelines import pipeline as pl

    root = os.path.join(workdir, "kfp-local-root")
    runs: List[Dict[str, Any]] = []
    for attempt in (1, 2):
        before = set(os.listdir(root)) if os.path.isdir(root) else set()
        t0 = time.perf_counter()
        pl.run_local(workdir, overrides)
        wall = time.perf_counter() - t0
        (run_dir,) = sorted(set(os.listdir(root)) - before)
        runs.append({"run": attempt, "wall_seconds": round(wall, 1), "tasks": task_records(root, run_dir)})
    return {"runs": runs}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from pipelines.runtime import TINY_OVERRIDES

    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="", help="default: a fresh temporary directory (removed afterwards)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--full-size", action="store_true", help="the config's own sizes instead of the tiny ones")
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "bench_results", "pipeline"))
    args = p.parse_args(list(argv) if argv is not None else None)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-")
    overrides = ([] if args.full_size else list(TINY_OVERRIDES)) + list(args.set)
    try:
        result = run_twice(workdir, overrides)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    from pipelines.pipeline import STEPS

    rows = []
    for task in STEPS:
        row: Dict[str, Any] = {"task": task}
        for r in result["runs"]:
            rec = r["tasks"].get(task, {})
            row[f"run {r['run']} s"] = rec.get("seconds")
            row[f"run {r['run']} reused"] = rec.get("reused")
        rows.append(row)
    rows.append({"task": "whole run (wall)", **{f"run {r['run']} s": r["wall_seconds"] for r in result["runs"]}})
    columns = ["task"] + [f"run {r['run']} {c}" for r in result["runs"] for c in ("s", "reused")]
    common.print_table(rows, columns, title="recsys pipeline run-local, twice with the same config "
                                            "(kfp.local SubprocessRunner; task seconds exclude interpreter start-up)")
    payload = {"benchmark": "pipeline", "overrides": overrides, "machine": common.machine_info(), **result}
    path = common.write_json(os.path.join(args.out, "pipeline.json"), payload)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
