"""benchmarks/serving_latency.py end to end on toy models: every workload in-process, over gRPC and REST, JSON written."""
import json

import numpy as np

from benchmarks import serving_latency


def test_toy_run_measures_every_workload_side_by_side(tmp_path):
    out = tmp_path / "bench"
    rc = serving_latency.main(["--toy", "--out", str(out), "--concurrency", "1", "--requests", "10", "--rounds", "1",
                               "--warmup", "1", "--skip_swap", "--rest"])
    assert rc == 0
    data = json.loads((out / "serving_latency.json").read_text())
    rows = {(r["model"], r["mode"], r["batching"]) for r in data["results"]}
    for model in ("retrieval", "ranking", "ranking:query_once", "recommend"):
        assert {(model, "in-process", "-"), (model, "grpc", "off"), (model, "grpc", "on"), (model, "rest", "off")} <= rows
    assert all(r["failed"] == 0 and r["request_kb"] > 0 for r in data["results"])
    grpc_rows = [r for r in data["results"] if r["mode"] in ("grpc", "rest")]
    assert all(r["overhead_p50_ms"] == r["p50_ms"] - next(
        b["p50_ms"] for b in data["results"] if b["model"] == r["model"] and b["mode"] == "in-process")
        for r in grpc_rows)
    assert {f["floor"] for f in data["floors"]} >= {"echo: sync server, sync client",
                                                     "GetModelStatus: model server, ServingClient",
                                                     "GetModelStatus right after a ranking request",
                                                     "GetModelStatus after a 5 ms idle pause"}
    assert all(f["failed"] == 0 and f["requests"] == 10 for f in data["floors"])
    for r in grpc_rows:  # each overhead comes with its bootstrap interval (10 requests: wide, but finite)
        lo, hi = r["overhead_p50_ci_ms"]
        assert np.isfinite([lo, hi]).all() and lo <= hi
    assert set(data["checks"]["grpc_overhead_at_c1"]) == {"retrieval", "ranking", "ranking:query_once", "recommend"}


def test_overhead_interval_and_verdict():
    rng = np.random.default_rng(1)
    fast, slow = rng.normal(1.0, 0.1, 300), rng.normal(3.0, 0.1, 300)
    lo, hi = serving_latency.median_difference_interval(slow, fast)
    assert 1.9 < lo < 2.0 < hi < 2.1
    assert serving_latency.target_verdict(2.0, (lo, hi), 1.0) == "NOT met"
    assert serving_latency.target_verdict(0.5, (0.4, 0.6), 1.0) == "met"
    assert "spans the target" in serving_latency.target_verdict(0.95, (0.8, 1.1), 1.0)


def test_a_probe_is_timed_alone_after_what_comes_before_it():
    import time
    calls = []
    r = serving_latency.probe_after_load(lambda i: (calls.append(("before", i)), time.sleep(0.01)),
                                         lambda i: calls.append(("probe", i)), requests=5, warmup=1, gap_s=0.0)
    assert len(r["latencies"]) == 5 and not r["failures"]
    assert max(r["latencies"]) < 0.01, "the 10 ms before each probe is not in its latency"
    assert calls[:4] == [("before", 0), ("probe", 0), ("before", 0), ("probe", 0)]
