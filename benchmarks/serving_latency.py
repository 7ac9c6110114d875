"""Serving latency: gRPC through the local TF-Serving-compatible server vs. the same signature in-process.

For each model in the base path (retrieval, ranking, recommend, ...): p50/p95/p99 and QPS
at concurrency 1, 8 and 32, in-process and over gRPC (loopback only) with batching off and
on (``--rest``: also REST, JSON in columnar form); the overhead of the server (absolute p50 ms
and ratio); and a version swap under load that counts failed requests. A ranker is measured
twice: one query row per candidate (``ranking``) and the query's features once for all
candidates (``ranking:query_once``), with each request's size. Request counts are bounded. The server runs as a
separate process (``python -m serving.server``) as it would in production.

Every mode runs under the same pacing: each client thread waits ``--gap_ms`` after each
reply before its next request, so the in-process baseline sees the same idle gaps (TF
thread pools going to sleep and waking up) as the server does between gRPC requests.
``--profile`` then runs a cProfile'd server (RECSYS_SERVING_PROFILE) and the client loop
under cProfile and splits one request's time into inference, request decoding and
validation, response encoding, metrics, client encode/decode and the rest (gRPC
transport and thread hand-offs).

Floors, measured in the same run at concurrency 1 with the same pacing: a bare gRPC echo of a
real request's bytes (no protos parsed, no TensorFlow) served by a threaded ``grpc.server`` and
by a ``grpc.aio`` server, each called by a sync and an aio client, and the model server's empty
GetModelStatus through ServingClient, alone, right after each model's request and after a 5 ms idle
pause (what one request leaves the next: sleeping threads, halted cores). Every process here uses
serving/grpc_settings.py's gRPC poller choice (GRPC_EXPERIMENTS, recorded in the JSON). Per-thread
CPU and run-queue time: benchmarks/sched_split.py.

    python -m benchmarks.serving_latency --model_base_path runs/<run>/models --out bench_results/serving
    python -m benchmarks.serving_latency --toy --out bench_results/serving   # dry run on toy models

Targets (2 cores, batch 1, concurrency 1): gRPC p50 overhead over in-process <= 1.0 ms for
every model; recommend end to end (gRPC) p99 <= 25 ms; zero failed requests during the swap.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np

from benchmarks import common
from serving import codec
from serving.client import ServingClient, build_query_inputs, predict_request
from serving.models import list_versions
from serving.launch import announced, free_port, stop_process

KNOWN_MODELS = ("retrieval", "retrieval_brute_force", "ranking", "recommend")
DEFAULT_MODELS = ("retrieval", "ranking", "recommend")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_OVERHEAD_P50_MS = 1.0
TARGET_RECOMMEND_P99_MS = 25.0


# ---------------------------------------------------------------- server process
class ServerProcess:
    """``python -m serving.server`` on a free loopback port; the address is read from its first output line.
    REST is off unless ``rest_port`` names a port for it."""

    def __init__(self, args: Sequence[str], log_path: str, timeout: float = 300.0,
                 env: Optional[Dict[str, str]] = None, command: Optional[Sequence[str]] = None, rest_port: int = 0):
        cmd = list(command) if command else [sys.executable, "-m", "serving.server", "--host", "127.0.0.1",
                                             "--port", "0", "--rest_api_port", str(rest_port), *args]
        self.log = open(log_path, "ab")
        self.log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        self.log.flush()
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=None if env is None else {**os.environ, **env})
        line = announced(self.proc, "gRPC", timeout)   # "gRPC  host:port" once it serves
        if line is None:
            self.stop()
            raise RuntimeError(f"server did not start; see {log_path}")
        self.address = line.split()[1]

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- load generation
def run_load(call: Callable[[int], Any], requests: int, concurrency: int, warmup: int = 10,
             gap_s: float = 0.0) -> Dict[str, Any]:
    """``requests`` calls spread over ``concurrency`` threads, each waiting ``gap_s`` after every reply:
    raw latencies (s), failures and wall time."""
    for i in range(warmup):
        call(i)
    counter = itertools.count()
    latencies: List[float] = []
    failures: List[str] = []
    lock = threading.Lock()

    def worker():
        while True:
            i = next(counter)
            if i >= requests:
                return
            t0 = time.perf_counter()
            try:
                call(i)
                error = None
            except Exception as e:  # noqa: BLE001
                error = f"{type(e).__name__}: {e}"[:200]
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if error:
                    failures.append(error)
            if gap_s:
                time.sleep(gap_s)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "failures": failures, "wall_s": time.perf_counter() - t0}


def median_difference_interval(a_ms: Sequence[float], b_ms: Sequence[float], n_boot: int = 2000,
                               seed: int = 0) -> List[float]:
    """95% bootstrap interval of median(a) - median(b), each mode's requests resampled on their own.

    One run's overhead is a difference of two medians of a few hundred noisy requests; on 2 shared cores
    it moves by a few tenths of a millisecond between runs, so a target is only met (or missed) when the
    interval says so."""
    a, b = np.asarray(a_ms, float), np.asarray(b_ms, float)
    if not (a.size and b.size):
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    diffs = (np.median(rng.choice(a, (n_boot, a.size)), axis=1)
             - np.median(rng.choice(b, (n_boot, b.size)), axis=1))
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


def target_verdict(value: float, interval: Sequence[float], target: float) -> str:
    """'met' / 'NOT met' when the whole interval is on one side of the target, else says it is within noise."""
    lo, hi = interval
    if hi <= target:
        return "met"
    if lo > target:
        return "NOT met"
    return f"{'met' if value <= target else 'NOT met'} on the median, interval spans the target"


def summarize(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Pools rounds: percentiles (ms) over all latencies, QPS = requests / total wall time."""
    lat = [x * 1e3 for r in runs for x in r["latencies"]]
    failures = [f for r in runs for f in r["failures"]]
    wall = sum(r["wall_s"] for r in runs)
    pct = common.percentiles(lat, (50, 95, 99))
    return {"requests": len(lat), "failed": len(failures), "p50_ms": pct["p50"], "p95_ms": pct["p95"],
            "p99_ms": pct["p99"], "qps": len(lat) / wall if wall > 0 else float("nan"),
            "errors": sorted(set(failures))[:5]}


def grpc_caller(address: str, model: str, batches: List[Dict[str, np.ndarray]], signature: str,
                rest: bool = False) -> Callable:
    """One ServingClient per thread calling Predict over gRPC at ``address`` (``rest``: over REST at that URL)."""
    local = threading.local()

    def call(i: int):
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = (ServingClient(rest=address, timeout=30) if rest
                                     else ServingClient(address, timeout=30))
        return client.predict(model, batches[i % len(batches)], signature)

    return call


# ---------------------------------------------------------------- floors: gRPC without the model server
ECHO_METHOD = "/recsys.bench.Echo/Echo"
ECHO_COMMAND = [sys.executable, "-m", "benchmarks.serving_latency", "--echo_server"]
SERVER_GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", -1),
                       ("grpc.so_reuseport", 0)]  # what ModelServer passes (serving/server.py)
CLIENT_GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                       ("grpc.max_send_message_length", 64 << 20)]  # what ServingClient passes


def echo_server_main(kind: str) -> int:
    """A bare gRPC echo (bytes back as they came: no protos, no TensorFlow, no metrics) with the model
    server's options and gRPC settings; ``sync`` = grpc.server + thread pool (as ModelServer), ``aio`` =
    grpc.aio with an ``async def`` handler on the event loop. Prints ``gRPC host:port`` like the server."""
    import asyncio

    import grpc

    def handler(fn):
        return grpc.method_handlers_generic_handler(ECHO_METHOD.split("/")[1], {
            "Echo": grpc.unary_unary_rpc_method_handler(fn)})

    if kind == "sync":
        from concurrent import futures

        server = grpc.server(futures.ThreadPoolExecutor(16), options=SERVER_GRPC_OPTIONS)
        server.add_generic_rpc_handlers((handler(lambda request, context: request),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(f"gRPC 127.0.0.1:{port}", flush=True)
        server.wait_for_termination()
        return 0

    async def echo(request, context):
        return request

    async def serve():
        server = grpc.aio.server(options=SERVER_GRPC_OPTIONS)
        server.add_generic_rpc_handlers((handler(echo),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"gRPC 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())
    return 0


def sync_echo_caller(address: str, payload: bytes) -> Callable:
    import grpc

    channel = grpc.insecure_channel(address, options=CLIENT_GRPC_OPTIONS)
    echo = channel.unary_unary(ECHO_METHOD)
    return lambda i: echo(payload, timeout=30)


def aio_echo_load(address: str, payload: bytes, requests: int, warmup: int, gap_s: float) -> Dict[str, Any]:
    """Like run_load at concurrency 1, with a grpc.aio client awaiting each call on its own event loop."""
    import asyncio

    import grpc

    async def go():
        async with grpc.aio.insecure_channel(address, options=CLIENT_GRPC_OPTIONS) as channel:
            echo = channel.unary_unary(ECHO_METHOD)
            for _ in range(warmup):
                await echo(payload, timeout=30)
            latencies, t_start = [], time.perf_counter()
            for _ in range(requests):
                t0 = time.perf_counter()
                await echo(payload, timeout=30)
                latencies.append(time.perf_counter() - t0)
                if gap_s:
                    await asyncio.sleep(gap_s)
            return latencies, time.perf_counter() - t_start

    latencies, wall = asyncio.run(go())
    return {"latencies": latencies, "failures": [], "wall_s": wall}


def probe_after_load(before: Callable[[int], Any], probe: Callable[[int], Any], requests: int, warmup: int,
                     gap_s: float) -> Dict[str, Any]:
    """``probe`` timed right after an untimed ``before`` and the usual gap, as run_load's result: what the
    previous request leaves behind (threads asleep, cores idle, caches cold) costs the next call this much."""
    for i in range(warmup):
        before(i)
        probe(i)
    latencies, failures = [], []
    for i in range(requests):
        before(i)
        time.sleep(gap_s)
        t0 = time.perf_counter()
        try:
            probe(i)
        except Exception as e:  # noqa: BLE001
            failures.append(f"{type(e).__name__}: {e}"[:200])
        latencies.append(time.perf_counter() - t0)
        time.sleep(gap_s)
    # wall time as if only the probes and their gaps ran, so QPS reads like the other floors'
    return {"latencies": latencies, "failures": failures, "wall_s": sum(latencies) + 2 * gap_s * requests}


def measure_floors(floors: Dict[str, Callable[[], Dict[str, Any]]], rounds: int) -> List[Dict[str, Any]]:
    """Each floor's load function run ``rounds`` times, interleaved round by round (drift spreads evenly)."""
    runs: Dict[str, list] = {k: [] for k in floors}
    for _ in range(rounds):
        for key, load in floors.items():
            runs[key].append(load())
    return [{"floor": key, **summarize(r)} for key, r in runs.items()]


# ---------------------------------------------------------------- profile: where the overhead goes
# (label, file suffix, function names): per-request cumulative time of these functions
SERVER_PARTS = (
    ("server: TensorFlow run", "tensorflow/python/client/session.py", ("__call__",)),
    ("server: decode request (TensorProto -> numpy)", "serving/codec.py", ("proto_to_ndarray",)),
    ("server: validate (names, dtypes, output filter)", "serving/servable.py", ("check_inputs", "check_output_filter")),
    ("server: encode response (numpy -> typed fields)", "serving/codec.py", ("ndarray_to_response_proto",)),
    ("server: model lookup + ref count", "serving/models.py", ("_resolve",)),
    ("server: metrics", "serving/metrics.py", ("record",)),
)
CLIENT_PARTS = (
    ("client: encode request", "serving/codec.py", ("ndarray_to_proto",)),
    ("client: decode response", "serving/codec.py", ("proto_to_ndarray",)),
)


def _per_request_ms(stats, suffix: str, names: Sequence[str], requests: int) -> float:
    total = 0.0
    for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if filename.replace(os.sep, "/").endswith(suffix) and func in names:
            total += ct
    return total * 1e3 / max(1, requests)


def profile_overhead(model: str, base: str, batch_list: List[Dict[str, np.ndarray]], flags: List[str],
                     log_path: str, out_dir: str, requests: int, gap_s: float) -> Dict[str, Any]:
    """One cProfile'd server process for ``model`` plus the client loop under cProfile."""
    import cProfile
    import pstats

    prof_path = os.path.abspath(os.path.join(out_dir, f"server_profile_{model}.prof"))
    if os.path.exists(prof_path):
        os.remove(prof_path)
    with ServerProcess(["--model_name", model, "--model_base_path", os.path.join(base, model), *flags], log_path,
                       env={"RECSYS_SERVING_PROFILE": prof_path}) as server:
        client = ServingClient(server.address, timeout=30)
        for i in range(20):
            client.predict(model, batch_list[i % len(batch_list)])
        client_prof = cProfile.Profile()
        for i in range(requests):
            client_prof.enable()
            client.predict(model, batch_list[i % len(batch_list)])
            client_prof.disable()
            if gap_s:
                time.sleep(gap_s)
        client.close()
    server_stats = pstats.Stats(prof_path)
    client_stats = pstats.Stats(client_prof)
    n_server = requests + 20
    parts = {label: _per_request_ms(server_stats, suffix, names, n_server) for label, suffix, names in SERVER_PARTS}
    parts.update({label: _per_request_ms(client_stats, suffix, names, requests)
                  for label, suffix, names in CLIENT_PARTS})
    server_total = _per_request_ms(server_stats, "serving/server.py", ("_handle",), n_server)
    client_total = _per_request_ms(client_stats, "serving/client.py", ("predict",), requests)
    client_wait = _per_request_ms(client_stats, "grpc/_channel.py", ("_blocking",), requests)
    known = sum(v for k, v in parts.items() if k.startswith("server:"))
    parts["server: other handler Python"] = max(0.0, server_total - known)
    parts["transport: gRPC core, loopback, thread hand-offs (client wait - server handler)"] = \
        max(0.0, client_wait - server_total)
    return {"model": model, "requests": requests, "server_handler_ms": server_total, "client_predict_ms": client_total,
            "client_wait_ms": client_wait, "parts_ms": parts, "server_profile": prof_path,
            "note": "cProfile timings (profiler on: Python-heavy parts are inflated)"}


def print_profile(prof: Dict[str, Any]) -> None:
    print(f"\nWhere one gRPC request to {prof['model']} spends its time (cProfile, ms per request; "
          f"client wait {prof['client_wait_ms']:.2f}, server handler {prof['server_handler_ms']:.2f}):")
    for label, ms in prof["parts_ms"].items():
        print(f"  {label:<84} {ms:7.3f}")


# ---------------------------------------------------------------- requests
def signature_spec(sig) -> dict:
    """A serving.servable.Signature in the client's metadata format (for build_query_inputs)."""
    def conv(m):
        return {k: {"dtype": codec.dtype_name(d), "shape": None if s is None else list(s)} for k, (d, s) in m.items()}

    return {"method_name": sig.method_name, "inputs": conv(sig.inputs), "outputs": conv(sig.outputs)}


def make_batches(spec: dict, n: int, batch_size: int, k: int, candidates: Sequence[str],
                 query_once: bool = False) -> List[Dict[str, np.ndarray]]:
    """``n`` distinct requests of ``batch_size`` users each (a ranker gets one row per candidate instead;
    ``query_once``: with the user, context and history features once, batch_size 1 only)."""
    out = []
    for j in range(n):
        users = [f"u{(j * batch_size + b) % 997}" for b in range(batch_size)]
        rows = [build_query_inputs(spec, u, k=k, items=candidates if "item_id" in spec["inputs"] else (),
                                   query_once=query_once) for u in users]
        out.append({name: (rows[0][name] if rows[0][name].ndim == 0 else np.concatenate([r[name] for r in rows]))
                    for name in rows[0]})
    return out


def query_once_workload(ranking, k: int, candidates: Sequence[str]) -> list:
    """[("ranking:query_once", "ranking", requests)]: the same ranking requests with the query's features sent
    once (``build_query_inputs(query_once=True)``), or [] with a note when this ranker does not broadcast them
    (exported before ``export_recommend.broadcast_query``)."""
    sig = ranking.signature("")
    requests = make_batches(signature_spec(sig), 16, 1, k, candidates, query_once=True)
    try:
        sig.run_unchecked(requests[0])
    except Exception as e:  # noqa: BLE001  (TensorFlow's shape error: an older export)
        print(f"  ranking:query_once skipped: this ranker needs one query row per candidate "
              f"({str(e).splitlines()[0][:120]})", flush=True)
        return []
    return [("ranking:query_once", "ranking", requests)]


def write_models_config(path: str, base: str, models: Sequence[str]) -> str:
    """A TF Serving ``--model_config_file`` serving each of ``models`` from ``base``/<name>; returns ``path``."""
    with open(path, "w") as f:
        f.write("model_config_list {\n" + "".join(
            f'  config {{ name: "{m}" base_path: "{os.path.abspath(os.path.join(base, m))}" '
            f'model_platform: "tensorflow" }}\n' for m in models) + "}\n")
    return path


def _candidates(loaded: Dict[str, Any], n: int) -> List[str]:
    """Candidate ids for a ranker: the top ``n`` of a retrieval model when there is one."""
    for name in ("retrieval", "retrieval_brute_force"):
        if name in loaded:
            sig = loaded[name].signature("")
            out = sig.run_unchecked(build_query_inputs(signature_spec(sig), "u1", k=n))
            strings = [v for v in out.values() if v.dtype == object]
            if strings:
                ids = [codec._as_bytes(x).decode() for x in strings[0].reshape(-1)[:n]]
                if ids:
                    return ids
    return [f"item{i}" for i in range(n)]


# ---------------------------------------------------------------- swap under load
def swap_under_load(model: str, src_version_dir: str, workdir: str, log_path: str, concurrency: int,
                    batch: Dict[str, np.ndarray], signature: str, timeout: float = 180.0) -> Dict[str, Any]:
    """Serves version N, installs N+1 (temp dir + rename) while ``concurrency`` clients call; counts failures."""
    base = os.path.join(workdir, "swap", model)
    v = int(os.path.basename(src_version_dir.rstrip("/")))
    shutil.copytree(src_version_dir, os.path.join(base, str(v)))
    with ServerProcess(["--model_name", model, "--model_base_path", base, "--file_system_poll_wait_seconds", "0.5"],
                       log_path) as server:
        stop = threading.Event()
        records: List[tuple] = []
        lock = threading.Lock()

        def worker():
            client = ServingClient(server.address, timeout=30)
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    version, error = client.predict(model, batch, signature).model_version, None
                except Exception as e:  # noqa: BLE001
                    version, error = None, f"{type(e).__name__}: {e}"[:200]
                with lock:
                    records.append((t0, time.perf_counter() - t0, version, error))
            client.close()

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        tmp = os.path.join(base, f".tmp-{v + 1}")
        shutil.copytree(src_version_dir, tmp)
        t_install = time.perf_counter()
        os.rename(tmp, os.path.join(base, str(v + 1)))
        switched = None
        while time.perf_counter() - t_install < timeout:
            with lock:
                new = [r[0] + r[1] for r in records if r[2] == v + 1]
            if new:
                switched = min(new) - t_install
                break
            time.sleep(0.05)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
    errors = [r[3] for r in records if r[3]]
    pct = common.percentiles([r[1] * 1e3 for r in records], (50, 95, 99))
    return {"model": model, "concurrency": concurrency, "requests": len(records), "failed": len(errors),
            "errors": sorted(set(errors))[:5], "versions_seen": sorted({r[2] for r in records if r[2] is not None}),
            "new_version_served_after_s": switched, "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p99_ms": pct["p99"]}


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_base_path", default="", help="directory with <model>/<version>/ SavedModels")
    p.add_argument("--out", default="bench_results/serving", help="output directory (JSON + server logs)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="models to measure when present")
    p.add_argument("--requests", type=int, default=300, help="measured requests per model, mode and concurrency")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds the requests are split into")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured requests before each run")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--gap_ms", type=float, default=1.0,
                   help="pause after each reply, per client thread, in every mode (same pacing in-process and gRPC)")
    p.add_argument("--profile", action="store_true",
                   help="also profile server and client (cProfile) and split the gRPC overhead by component")
    p.add_argument("--profile_requests", type=int, default=300, help="requests per model in the profile run")
    p.add_argument("--batch_size", type=int, default=1, help="users per request")
    p.add_argument("--k", type=int, default=10, help="k input for models that take one")
    p.add_argument("--rank_candidates", type=int, default=50, help="candidates per ranking request")
    p.add_argument("--max_batch_size", type=int, default=32)
    p.add_argument("--batch_timeout_micros", type=int, default=0)
    p.add_argument("--tf_threads", type=int, default=0,
                   help="TF intra/inter-op threads, in-process and in the server (0 = TF's default: all cores)")
    p.add_argument("--swap_model", default="", help="model for the swap-under-load run (default: first measured)")
    p.add_argument("--skip_swap", action="store_true")
    p.add_argument("--rest", action="store_true",
                   help="also measure REST (JSON, columnar) on the batching-off server: one more mode per row")
    p.add_argument("--toy", action="store_true", help="dry run on generated toy models (no exports needed)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--echo_server", choices=("sync", "aio"), help=argparse.SUPPRESS)  # the floors' echo process
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.echo_server:
        return echo_server_main(args.echo_server)
    from serving.servable import Servable

    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "server.log")
    workdir = tempfile.mkdtemp(prefix="serving-bench-")
    try:
        base = args.model_base_path
        if args.toy:
            from serving.testing import write_toy_model

            base = os.path.join(workdir, "toy")
            for name in DEFAULT_MODELS:
                write_toy_model(os.path.join(base, name), 1, k=100, model_name=name)
        if not base:
            print("give --model_base_path (or --toy)", file=sys.stderr)
            return 2
        wanted = [m for m in args.models.split(",") if m]
        present = {m: list_versions(os.path.join(base, m)) for m in wanted if os.path.isdir(os.path.join(base, m))}
        present = {m: v for m, v in present.items() if v}
        if not present:
            print(f"no models among {wanted} under {base}", file=sys.stderr)
            return 2
        concurrencies = [int(c) for c in args.concurrency.split(",") if c]
        info = common.machine_info(common.DEFAULT_PACKAGES + ("grpcio", "tensorflow-serving-api"))
        print(common.format_machine(info), flush=True)

        if args.tf_threads:  # same thread pools in-process as in the server, for a fair comparison
            import tensorflow as tf

            from serving import tf1_loader

            tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads)
            tf1_loader.SESSION_THREADS.update(intra_op=args.tf_threads, inter_op=args.tf_threads)
        # in-process: the same SavedModel signature, loaded by the same code the server uses
        loaded = {m: Servable(m, max(v), v[max(v)]) for m, v in present.items()}
        candidates = _candidates(loaded, args.rank_candidates)
        batches = {m: make_batches(signature_spec(s.signature("")), 16, args.batch_size, args.k, candidates)
                   for m, s in loaded.items()}
        workloads = [(m, m, batches[m]) for m in loaded]  # (row label, served model, requests)
        if "ranking" in loaded and args.batch_size == 1:
            at = [w[0] for w in workloads].index("ranking") + 1
            workloads[at:at] = query_once_workload(loaded["ranking"], args.k, candidates)
        config = write_models_config(os.path.join(workdir, "models.config"), base, present)
        common_flags = ["--model_config_file", config]
        if args.tf_threads:
            common_flags += ["--tensorflow_intra_op_parallelism", str(args.tf_threads),
                             "--tensorflow_inter_op_parallelism", str(args.tf_threads)]
        batching_flags = ["--enable_batching", "--max_batch_size", str(args.max_batch_size),
                          "--batch_timeout_micros", str(args.batch_timeout_micros)]
        # Both servers stay up (idle ones cost nothing) so the three modes run interleaved, round by
        # round: on a shared machine, load drifts; interleaving spreads it evenly over the modes.
        rest_port = free_port() if args.rest else 0
        with ServerProcess(common_flags, log_path, rest_port=rest_port) as off, \
                ServerProcess(common_flags + batching_flags, log_path) as on:
            modes = [("in-process", "in-process", "-", None), ("grpc-off", "grpc", "off", off.address),
                     ("grpc-on", "grpc", "on", on.address)]
            if args.rest:  # the same requests as JSON (columnar) to the batching-off server's REST API
                modes.append(("rest-off", "rest", "off", f"http://127.0.0.1:{rest_port}"))
            rows: List[Dict[str, Any]] = []
            per_round = max(1, args.requests // args.rounds)
            for m, served, requests in workloads:
                sig = loaded[served].signature("")
                calls = {"in-process": lambda i, sig=sig, b=requests: sig.run_unchecked(b[i % len(b)])}
                for key, mode, _, address in modes[1:]:
                    calls[key] = grpc_caller(address, served, requests, "serving_default", rest=mode == "rest")
                size = len(predict_request(served, requests[0]).SerializeToString())
                for c in concurrencies:
                    runs: Dict[str, list] = {key: [] for key, *_ in modes}
                    for _ in range(args.rounds):
                        for key, *_ in modes:
                            runs[key].append(run_load(calls[key], per_round, c, args.warmup, args.gap_ms / 1e3))
                    base_ms = [x * 1e3 for run in runs["in-process"] for x in run["latencies"]]
                    for key, mode, batching, _ in modes:
                        r = summarize(runs[key])
                        if mode != "in-process":
                            r["overhead_p50_ci_ms"] = median_difference_interval(
                                [x * 1e3 for run in runs[key] for x in run["latencies"]], base_ms)
                        rows.append({"model": m, "mode": mode, "batching": batching, "concurrency": c,
                                     "request_kb": size / 1024, **r})
                        print(f"  {m:<22} {mode:<10} batching={batching:<3} c={c}: p50 {r['p50_ms']:.2f} ms  "
                              f"p99 {r['p99_ms']:.2f} ms  qps {r['qps']:.0f}  failed {r['failed']}", flush=True)
            # floors, c=1, same pacing: bare echo servers (sync and aio, sync and aio clients) echoing a
            # real request's bytes, and the model server's GetModelStatus (no TensorFlow) through ServingClient
            first = next(iter(present))
            payload = predict_request(first, batches[first][0]).SerializeToString()
            status_client = ServingClient(off.address)
            gap_s = args.gap_ms / 1e3
            with ServerProcess([], log_path, command=ECHO_COMMAND + ["sync"]) as echo_sync, \
                    ServerProcess([], log_path, command=ECHO_COMMAND + ["aio"]) as echo_aio:
                floor_loads = {
                    "echo: sync server, sync client": (echo_sync.address, "sync"),
                    "echo: aio server, sync client": (echo_aio.address, "sync"),
                    "echo: sync server, aio client": (echo_sync.address, "aio"),
                    "echo: aio server, aio client": (echo_aio.address, "aio")}
                loads = {}
                for key, (address, client) in floor_loads.items():
                    if client == "sync":
                        loads[key] = functools.partial(run_load, sync_echo_caller(address, payload), per_round, 1,
                                                       args.warmup, gap_s)
                    else:
                        loads[key] = functools.partial(aio_echo_load, address, payload, per_round, args.warmup,
                                                       gap_s)
                status_key = "GetModelStatus: model server, ServingClient"

                def status(i):
                    return status_client.status(first)

                def predict(m, i):
                    return status_client.predict(m, batches[m][i % len(batches[m])])

                loads[status_key] = functools.partial(run_load, status, per_round, 1, args.warmup, gap_s)
                # the same empty call right after a request (or an idle pause): the wake-up cost a request
                # leaves for the next one, which the in-process baseline does not pay
                for m in present:
                    loads[f"GetModelStatus right after a {m} request"] = functools.partial(
                        probe_after_load, functools.partial(predict, m), status, per_round, args.warmup, gap_s)
                loads["GetModelStatus after a 5 ms idle pause"] = functools.partial(
                    probe_after_load, lambda i: time.sleep(0.005), status, per_round, args.warmup, gap_s)
                floors = measure_floors(loads, args.rounds)
            status_client.close()
            floor = next(f for f in floors if f["floor"] == status_key)
        profiles = []
        if args.profile:
            flags = [f for f in common_flags if f != "--model_config_file" and f != config]
            for m in present:
                profiles.append(profile_overhead(m, base, batches[m], flags, log_path, args.out,
                                                 args.profile_requests, args.gap_ms / 1e3))
        del loaded
        info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

        base_p50 = {(r["model"], r["concurrency"]): r["p50_ms"] for r in rows if r["mode"] == "in-process"}
        for r in rows:
            ref = base_p50.get((r["model"], r["concurrency"]))
            if r["mode"] in ("grpc", "rest") and ref:
                r["overhead_p50_ms"] = r["p50_ms"] - ref
                r["overhead_ratio"] = r["p50_ms"] / ref
                r["overhead_ci_text"] = "[{:.2f}, {:.2f}]".format(*r["overhead_p50_ci_ms"])

        swap = None
        if not args.skip_swap:
            m = args.swap_model or next(iter(present))
            v = present[m]
            swap = swap_under_load(m, v[max(v)], workdir, log_path, max(concurrencies), batches[m][0],
                                   "serving_default")

        cols = [("model", "model"), ("mode", "mode"), ("batching", "batching"), ("concurrency", "conc"),
                ("request_kb", "req KB", ".1f"), ("requests", "requests"), ("failed", "failed"), ("p50_ms", "p50 ms", ".2f"),
                ("p95_ms", "p95 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"), ("qps", "QPS", ".0f"),
                ("overhead_p50_ms", "overhead p50 ms", ".2f"), ("overhead_ci_text", "95% CI"),
                ("overhead_ratio", "ratio", ".2f")]
        print()
        common.print_table(rows, cols, title=f"Serving latency (batch_size={args.batch_size}, loopback gRPC"
                                             f"{' and REST' if args.rest else ''})")
        c1_rows = {r["model"]: r for r in rows if r["mode"] == "grpc" and r["batching"] == "off"
                   and r["concurrency"] == 1 and "overhead_p50_ms" in r}
        overhead_c1 = {m: r["overhead_p50_ms"] for m, r in c1_rows.items()}
        print()
        common.print_table(floors, [("floor", "gRPC floor (c=1, no TensorFlow)"), ("requests", "requests"),
                                    ("failed", "failed"), ("p50_ms", "p50 ms", ".3f"), ("p95_ms", "p95 ms", ".3f"),
                                    ("p99_ms", "p99 ms", ".3f"), ("qps", "QPS", ".0f")],
                           title=f"Floors (GRPC_EXPERIMENTS={os.environ.get('GRPC_EXPERIMENTS', '')!r})")
        checks = {"grpc_overhead_p50_ms_at_c1_max": max(overhead_c1.values()) if overhead_c1 else None,
                  "grpc_status_round_trip_p50_ms": floor["p50_ms"],
                  "grpc_overhead_target_ms": TARGET_OVERHEAD_P50_MS,
                  "grpc_overhead_ok": bool(overhead_c1) and max(overhead_c1.values()) <= TARGET_OVERHEAD_P50_MS,
                  "grpc_overhead_at_c1": {m: {"p50_ms": r["overhead_p50_ms"], "ci95_ms": r["overhead_p50_ci_ms"],
                                              "verdict": target_verdict(r["overhead_p50_ms"], r["overhead_p50_ci_ms"],
                                                                        TARGET_OVERHEAD_P50_MS)}
                                          for m, r in c1_rows.items()},
                  "failed_requests": sum(r["failed"] for r in rows)}
        if swap is not None:
            print(f"\nVersion swap under load ({swap['model']}, concurrency {swap['concurrency']}): "
                  f"{swap['requests']} requests, {swap['failed']} failed, versions {swap['versions_seen']}, "
                  f"new version served {swap['new_version_served_after_s']} s after install, "
                  f"p99 {swap['p99_ms']:.1f} ms")
            checks["swap_failed_requests"] = swap["failed"]
            checks["swap_ok"] = swap["failed"] == 0 and swap["new_version_served_after_s"] is not None
        rec = [r for r in rows if r["model"] == "recommend" and r["mode"] == "grpc" and r["batching"] == "off"
               and r["concurrency"] == 1]
        if rec:
            checks["recommend_p99_ms_at_c1"] = rec[0]["p99_ms"]
            checks["recommend_p99_target_ms"] = TARGET_RECOMMEND_P99_MS
            checks["recommend_p99_ok"] = rec[0]["p99_ms"] <= TARGET_RECOMMEND_P99_MS
        for prof in profiles:
            print_profile(prof)
        print("\nTargets (concurrency 1, batching off):")
        for m, o in checks["grpc_overhead_at_c1"].items():
            lo, hi = o["ci95_ms"]
            print(f"  gRPC overhead p50 {m:<20} {o['p50_ms']:5.2f} ms [{lo:.2f}, {hi:.2f}]  {o['verdict']} "
                  f"(target {TARGET_OVERHEAD_P50_MS} ms; 95% bootstrap interval over requests)")
        if rec:
            print(f"  recommend p99 {rec[0]['p99_ms']:.1f} ms  {'met' if checks['recommend_p99_ok'] else 'NOT met'} "
                  f"(target {TARGET_RECOMMEND_P99_MS} ms)")
        print(f"  failed requests {checks['failed_requests']}"
              + (f", during the swap {checks['swap_failed_requests']}" if swap is not None else ""))
        path = common.write_json(os.path.join(args.out, "serving_latency.json"), {
            "benchmark": "serving_latency", "machine": info, "args": vars(args), "model_base_path": base,
            "models": {m: sorted(v) for m, v in present.items()}, "results": rows, "floors": floors, "swap": swap,
            "checks": checks, "grpc_experiments": os.environ.get("GRPC_EXPERIMENTS"),
            "profiles": profiles})
        print(f"wrote {path}")
        ok = checks["grpc_overhead_ok"] and checks.get("swap_ok", True) and checks["failed_requests"] == 0 \
            and checks.get("recommend_p99_ok", True)
        return 0 if ok or not args.strict else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
