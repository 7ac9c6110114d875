"""Serving under hostile load: memory per REST body and answers while idle/slow connections pile up.

Starts ``python -m serving.server`` (what ``recsys serve`` runs) on a generated model and measures
(1) the server's peak RSS growth for one large predict body, as a multiple of the body size
(Linux: ``/proc/<pid>/clear_refs`` resets the high-water mark ``VmHWM`` before each request), with
its CPU seconds; (2) with 200 idle + 20 slowloris connections open: the latency of valid REST
requests, and the server's threads and file descriptors. ``--server_pythonpath`` runs another
checkout's ``serving`` package (e.g. the code before issue 16) for before/after figures.

    python -m benchmarks.serving_reliability --out bench_results/serving_reliability
    python -m benchmarks.serving_reliability --server_pythonpath /tmp/old --label before_issue16
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

from serving.launch import announced, free_port, stop_process

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY = 20


def write_model(base: str, version: int = 1) -> str:
    """A retrieval-shaped signature: ids [None, 20] string, ts [None, 20] int64, x [None, 8] float -> s [None]."""
    import recsys  # noqa: F401
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, HISTORY], tf.string, name="ids"),
                                      tf.TensorSpec([None, HISTORY], tf.int64, name="ts"),
                                      tf.TensorSpec([None, 8], tf.float32, name="x")])
        def serve(self, ids, ts, x):
            n = tf.cast(tf.reduce_sum(tf.strings.length(ids), axis=1), tf.float32)
            return {"s": n + tf.reduce_sum(x, axis=1) + 0.0 * tf.cast(ts[:, 0], tf.float32)}

    m = M()
    path = os.path.join(base, str(version))
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})
    return path


def body(rows: int, id_len: int = 8) -> bytes:
    """A row-format predict body; ``id_len`` sets the string length; 0 = empty strings and zeros (the
    most tensor bytes per JSON byte: a 3-byte "" becomes a 24-byte TensorFlow string)."""
    if id_len == 0:
        row = (f'{{"ids": {json.dumps([""] * HISTORY)}, "ts": {json.dumps([0] * HISTORY)}, '
               f'"x": {json.dumps([0] * 8)}}}').encode()
        return b'{"instances": [' + b", ".join([row] * rows) + b"]}"
    ids = json.dumps([("i" * id_len + str(j))[-id_len:] for j in range(HISTORY)])
    ts = json.dumps([1700000000 + j for j in range(HISTORY)])
    row = f'{{"ids": {ids}, "ts": {ts}, "x": [0.5, 1.25, -2.0, 3.5, 0.0, 1.0, 2.0, 4.0]}}'.encode()
    return b'{"instances": [' + b", ".join([row] * rows) + b"]}"


class ServerProcess:
    """``python -m serving.server`` on fixed free loopback ports (0 disables REST in both old and new code)."""

    def __init__(self, model_base: str, pythonpath: Optional[str] = None, extra: List[str] = (),
                 timeout: float = 240.0):
        self.rest_port, grpc_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "serving.server", "--host", "127.0.0.1", "--port", str(grpc_port),
               "--rest_api_port", str(self.rest_port), "--model_name", "m", "--model_base_path", model_base,
               "--file_system_poll_wait_seconds", "0", *extra]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        cwd = REPO_ROOT
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + os.pathsep + REPO_ROOT
            cwd = pythonpath
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = f"http://127.0.0.1:{self.rest_port}"
        if announced(self.proc, "REST", timeout) is None:   # REST is the last thing the server starts
            self.stop()
            self.log.seek(0)
            raise RuntimeError("server did not start: " + self.log.read()[-3000:].decode("utf-8", "replace"))

    def status(self) -> Dict[str, int]:
        """VmRSS / VmHWM in bytes, threads, open file descriptors, CPU seconds."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) * 1024
                elif k == "Threads":
                    out[k] = int(v)
        out["fds"] = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def reset_peak(self) -> bool:
        """Resets VmHWM to the current RSS; False where /proc does not allow it (then RSS is sampled)."""
        try:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc, 20)


def post(url: str, data: bytes, timeout: float = 300.0):
    req = urllib.request.Request(url + "/v1/models/m:predict", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def memory_for(server: ServerProcess, data: bytes) -> Dict[str, float]:
    """Peak RSS growth of one request (a multiple of its body), its CPU and wall seconds."""
    post(server.url, body(2))  # warm: the signature is traced and its first allocations made
    time.sleep(0.2)
    before = server.status()
    exact = server.reset_peak()
    peak, done = [before["VmRSS"]], threading.Event()

    def sample():  # fallback where VmHWM cannot be reset: RSS every 2 ms
        while not done.wait(0.002):
            peak.append(server.status()["VmRSS"])

    sampler = None if exact else threading.Thread(target=sample, daemon=True)
    if sampler:
        sampler.start()
    t0 = time.perf_counter()
    status, raw = post(server.url, data)
    wall = time.perf_counter() - t0
    done.set()
    if sampler:
        sampler.join()
    after = server.status()
    growth = max(0, (after["VmHWM"] if exact else max(peak + [after["VmRSS"]])) - before["VmRSS"])
    return {"body_mb": round(len(data) / 2**20, 1), "status": status, "peak_growth_mb": round(growth / 2**20, 1),
            "x_body": round(growth / len(data), 1), "cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
            "wall_s": round(wall, 2)}


def connections(server: ServerProcess, idle: int = 200, slow: int = 20, requests: int = 20) -> Dict[str, float]:
    """Valid requests' latency and the server's threads/fds while idle and slowloris connections are open."""
    small = body(2)
    post(server.url, small)
    before = server.status()
    socks = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) for _ in range(idle + slow)]
    for s in socks[idle:]:
        s.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
    time.sleep(0.5)
    lat, ok = [], 0
    try:
        for _ in range(requests):
            t0 = time.perf_counter()
            try:
                status, _ = post(server.url, small, timeout=15)
                ok += status == 200
            except OSError:
                pass
            lat.append((time.perf_counter() - t0) * 1000)
        during = server.status()
    finally:
        for s in socks:
            s.close()
    return {"open_connections": idle + slow, "answered": ok, "requests": requests,
            "p50_ms": round(statistics.median(lat), 1), "max_ms": round(max(lat), 1),
            "threads_before": before["Threads"], "threads_during": during["Threads"],
            "fds_before": before["fds"], "fds_during": during["fds"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_results/serving_reliability")
    p.add_argument("--server_pythonpath", default="", help="run this checkout's serving package instead")
    p.add_argument("--label", default="current")
    p.add_argument("--rows", default="15000,60000", help="rows per body (about 550 bytes each)")
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="reliability-")
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)   # the generated model; the results are written under --out


def _run(args, work: str) -> int:
    write_model(os.path.join(work, "m"))
    results = {"label": args.label, "memory": [], "connections": None}
    for rows in [int(r) for r in args.rows.split(",")]:
        for id_len in (8, 2, 0):
            # a fresh server per case: memory freed by an earlier request stays resident and would hide growth
            server = ServerProcess(os.path.join(work, "m"), args.server_pythonpath or None)
            try:
                r = memory_for(server, body(rows, id_len))
            finally:
                server.stop()
            r["id_len"] = id_len
            results["memory"].append(r)
    server = ServerProcess(os.path.join(work, "m"), args.server_pythonpath or None)
    try:
        results["connections"] = connections(server)
    finally:
        server.stop()
    print(f"\n{args.label}: peak RSS growth per predict body (row format, {HISTORY} ids + {HISTORY} ints + 8 floats)")
    print("(id len 0: empty strings and zeros)")
    print(f"{'body MB':>8} {'id len':>6} {'status':>6} {'growth MB':>10} {'x body':>7} {'CPU s':>6} {'wall s':>7}")
    for r in results["memory"]:
        print(f"{r['body_mb']:>8} {r['id_len']:>6} {r['status']:>6} {r['peak_growth_mb']:>10} {r['x_body']:>7} "
              f"{r['cpu_s']:>6} {r['wall_s']:>7}")
    c = results["connections"]
    print(f"\n{c['open_connections']} idle/slow connections: {c['answered']}/{c['requests']} valid requests answered, "
          f"p50 {c['p50_ms']} ms, max {c['max_ms']} ms; threads {c['threads_before']} -> {c['threads_during']}, "
          f"fds {c['fds_before']} -> {c['fds_during']}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{args.label}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
