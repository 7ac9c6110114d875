"""Thread by thread: where a gRPC call's time goes that the in-process call does not pay.

cProfile sees only Python, and on 2 cores a call's threads may also wait for a core. The kernel's
scheduler trace shows both: every switch of every thread of the server and the client, how long each
waited on the run queue and how long it ran. Two steps (``perf`` must be installed and allowed to trace
the scheduler):

    perf sched record -k CLOCK_MONOTONIC -o /tmp/sched.data -- \\
        python -m benchmarks.sched_split run --model_base_path runs/<run>/models --out /tmp/phases.json
    python -m benchmarks.sched_split report --perf /tmp/sched.data --phases /tmp/phases.json

``run`` serves the models, then for each one calls it over gRPC and in-process, c=1, with the bench's
1 ms gap, and writes each phase's CLOCK_MONOTONIC window and its pids. ``report`` reads ``perf sched
timehist`` and prints, per phase and thread, switches, run-queue delay and CPU per request, then per
process; ``--json F`` also writes F and a PNG beside it (per phase, CPU and waiting stacked, the p50 a line).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
from typing import Dict, Iterable, List, Optional

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np

from benchmarks import common

# "  76363.02  [0001]  python[16071/16027]   0.011   0.004   2.185"  time, cpu, comm[tid/pid], wait, sch delay, run
_TIMEHIST = re.compile(r"^\s*([\d.]+)\s+\[(\d+)\]\s+(.*?)\[(\d+)(?:/(\d+))?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")


def parse_timehist(lines: Iterable[str]) -> List[tuple]:
    """(time s, tid, pid, run-queue delay ms, run time ms) for each switch-in ``perf sched timehist`` lists."""
    out = []
    for line in lines:
        m = _TIMEHIST.match(line)
        if m:
            t, _cpu, _comm, tid, pid, _wait, delay, run = m.groups()
            out.append((float(t), int(tid), int(pid or tid), float(delay), float(run)))
    return out


def split(events: List[tuple], phase: Dict, roles: Dict[int, str]) -> List[Dict]:
    """Per thread of the phase's processes (``roles``: pid -> name): switches, delay and run time per request."""
    n = max(1, phase["requests"])
    agg: Dict[tuple, List[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for t, tid, pid, delay, run in events:
        if phase["start"] <= t <= phase["end"] and pid in roles:
            a = agg[(roles[pid], tid)]
            a[0] += 1
            a[1] += delay
            a[2] += run
    rows = [{"phase": phase["name"], "process": proc, "tid": str(tid), "switches_per_request": c / n,
             "run_queue_ms_per_request": d / n, "run_ms_per_request": r / n}
            for (proc, tid), (c, d, r) in agg.items()]
    rows = [r for r in rows if r["switches_per_request"] >= 0.5]   # threads that take part in every request
    return sorted(rows, key=lambda r: (r["process"], -r["switches_per_request"]))


def _run(args) -> int:
    from benchmarks.serving_latency import (ServerProcess, _candidates, make_batches, signature_spec,
                                            write_models_config)
    from serving.client import ServingClient
    from serving.models import list_versions
    from serving.servable import Servable

    models = [m for m in args.models.split(",") if os.path.isdir(os.path.join(args.model_base_path, m))]
    if not models:
        print(f"no models among {args.models} under {args.model_base_path}", file=sys.stderr)
        return 2
    loaded = {m: Servable(m, max(v), v[max(v)]) for m in models
              for v in [list_versions(os.path.join(args.model_base_path, m))]}
    candidates = _candidates(loaded, args.rank_candidates)
    batches = {m: make_batches(signature_spec(s.signature("")), 16, 1, 10, candidates) for m, s in loaded.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    config = write_models_config(os.path.abspath(args.out) + ".models.config", args.model_base_path, models)
    phases = []
    with ServerProcess(["--model_config_file", config], os.path.abspath(args.out) + ".server.log") as server:
        client = ServingClient(server.address, timeout=30)
        pids = {"client": os.getpid(), "server": server.proc.pid}
        for m in models:
            sig = loaded[m].signature("")
            calls = {"grpc": lambda i: client.predict(m, batches[m][i % 16]),
                     "in-process": lambda i: sig.run_unchecked(batches[m][i % 16])}
            for mode, call in calls.items():
                for i in range(20):
                    call(i)
                latencies, start = [], time.monotonic()
                for i in range(args.requests):
                    t0 = time.perf_counter()
                    call(i)
                    latencies.append(time.perf_counter() - t0)
                    time.sleep(args.gap_ms / 1e3)
                phases.append({"name": f"{m} {mode}", "start": start, "end": time.monotonic(),
                               "requests": args.requests, "p50_ms": float(np.median(latencies) * 1e3)})
                print(f"  {m:<10} {mode:<10} p50 {phases[-1]['p50_ms']:.2f} ms", flush=True)
                time.sleep(0.3)
        client.close()
    common.write_json(args.out, {"pids": pids, "phases": phases, "gap_ms": args.gap_ms})
    print(f"wrote {args.out}")
    return 0


def _report(args) -> int:
    with open(args.phases) as f:
        spec = json.load(f)
    try:
        text = subprocess.run(["perf", "sched", "timehist", "-i", args.perf], capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"perf sched timehist failed: {e}", file=sys.stderr)
        return 1
    events = parse_timehist(text.splitlines())
    roles = {pid: role for role, pid in spec["pids"].items()}
    rows = [r for phase in spec["phases"] for r in split(events, phase, roles)]
    common.print_table(rows, [("phase", "phase"), ("process", "process"), ("tid", "thread"),
                              ("switches_per_request", "switches/req", ".1f"),
                              ("run_queue_ms_per_request", "run-queue ms/req", ".3f"),
                              ("run_ms_per_request", "run ms/req", ".3f")],
                       title="Scheduler trace per request (perf sched)")
    totals = []
    for phase in spec["phases"]:
        for proc in ("server", "client"):
            mine = [r for r in rows if r["phase"] == phase["name"] and r["process"] == proc]
            if mine:
                totals.append({"phase": phase["name"], "process": proc, "p50_ms": phase["p50_ms"], **{
                    k: sum(r[k] for r in mine) for k in
                    ("switches_per_request", "run_queue_ms_per_request", "run_ms_per_request")}})
    print()
    common.print_table(totals, [("phase", "phase"), ("process", "process"), ("p50_ms", "call p50 ms", ".2f"),
                                ("switches_per_request", "switches/req", ".1f"),
                                ("run_queue_ms_per_request", "run-queue ms/req", ".3f"),
                                ("run_ms_per_request", "CPU ms/req", ".3f")],
                       title="Per process (its threads summed)")
    if args.json:
        common.write_json(args.json, {"phases": spec["phases"], "threads": rows, "processes": totals})
        png = plot(totals, os.path.splitext(args.json)[0] + ".png")
        if png:
            print(f"wrote {args.json} and {png}")
    return 0


def plot(totals: List[Dict], path: str) -> Optional[str]:
    """Per phase, one bar per process: CPU and run-queue wait per request, beside the call's p50."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    phases = list(dict.fromkeys(t["phase"] for t in totals))
    fig, ax = plt.subplots(figsize=(1.3 + 1.1 * len(phases), 3.6))
    for i, phase in enumerate(phases):
        bottom = 0.0
        for proc, colour in (("client", "tab:blue"), ("server", "tab:orange")):
            t = next((t for t in totals if t["phase"] == phase and t["process"] == proc), None)
            if t is None:
                continue
            for key, alpha in (("run_ms_per_request", 0.9), ("run_queue_ms_per_request", 0.35)):
                ax.bar(i, t[key], bottom=bottom, color=colour, alpha=alpha, width=0.6,
                       label=f"{proc} {'CPU' if key.startswith('run_ms') else 'waiting for a core'}")
                bottom += t[key]
        p50 = next(t["p50_ms"] for t in totals if t["phase"] == phase)
        ax.plot([i - 0.35, i + 0.35], [p50, p50], c="black", lw=1.5, label="call p50")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))   # one legend entry per label
    ax.legend(unique.values(), unique.keys(), fontsize=7)
    ax.set_xticks(range(len(phases)), [p.replace(" ", "\n") for p in phases], fontsize=8)
    ax.set_ylabel("ms per request (all threads summed)")
    ax.set_title("Scheduler trace: CPU and run-queue wait per request, by process", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sched_split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="serve and call each model over gRPC and in-process "
                                   "(run it under perf sched record)")
    r.add_argument("--model_base_path", required=True)
    r.add_argument("--models", default="retrieval,ranking,recommend")
    r.add_argument("--requests", type=int, default=300)
    r.add_argument("--gap_ms", type=float, default=1.0)
    r.add_argument("--rank_candidates", type=int, default=50)
    r.add_argument("--out", default="bench_results/sched_split/phases.json")
    s = sub.add_parser("report", help="per-thread switches and run-queue delay per request, per phase")
    s.add_argument("--perf", required=True, help="perf.data from perf sched record")
    s.add_argument("--phases", required=True, help="the JSON `run` wrote")
    s.add_argument("--json", default="", help="also write the table here")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args) if args.command == "run" else _report(args)


if __name__ == "__main__":
    sys.exit(main())
