"""benchmarks/sched_split.py: perf sched timehist lines split per phase, process and thread."""
import pytest

from benchmarks import sched_split

TIMEHIST = """\
           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
   100.000100 [0000]  python[11/10]                       0.000      0.010      0.500
   100.000200 [0001]  python[12/10]                       0.100      0.200      0.300
   100.000300 [0001]  <idle>                              0.000      0.000      0.100
   100.000400 [0000]  python[21/20]                       0.000      0.030      0.050
   100.000500 [0000]  python[11/10]                       0.010      0.010      0.500
   100.000600 [0001]  kworker/1:1-vir[99]                 0.000      0.001      0.010
   200.000000 [0000]  python[11/10]                       0.000      5.000      5.000
"""


def test_timehist_lines_parse_with_and_without_a_pid():
    events = sched_split.parse_timehist(TIMEHIST.splitlines())
    assert len(events) == 6, "headers and <idle> are skipped"
    assert events[0] == (100.0001, 11, 10, 0.010, 0.500)
    assert events[4] == (100.0006, 99, 99, 0.001, 0.010), "a kernel thread: pid = tid"


def test_switches_and_delays_are_per_request_per_thread_inside_the_window():
    events = sched_split.parse_timehist(TIMEHIST.splitlines())
    phase = {"name": "ranking grpc", "start": 100.0, "end": 101.0, "requests": 2}
    rows = sched_split.split(events, phase, {10: "server", 20: "client"})
    by_tid = {int(r["tid"]): r for r in rows}
    assert set(by_tid) == {11, 12, 21}, "the kernel thread is in no role; the event at t=200 is outside"
    assert by_tid[11]["process"] == "server" and by_tid[11]["switches_per_request"] == 1.0
    assert by_tid[11]["run_queue_ms_per_request"] == pytest.approx(0.01)
    assert by_tid[12]["run_queue_ms_per_request"] == pytest.approx(0.1)
    assert by_tid[21]["process"] == "client" and by_tid[21]["run_ms_per_request"] == pytest.approx(0.025)
    rare = sched_split.split(events, {**phase, "requests": 10}, {10: "server", 20: "client"})
    assert rare == [], "threads that switch less than every other request are left out"


def test_the_plot_is_written(tmp_path):
    totals = [{"phase": "ranking grpc", "process": p, "p50_ms": 6.0, "switches_per_request": 3.0,
               "run_queue_ms_per_request": 0.1, "run_ms_per_request": 1.0} for p in ("client", "server")]
    path = sched_split.plot(totals, str(tmp_path / "threads.png"))
    assert path and (tmp_path / "threads.png").stat().st_size > 1000


def test_run_writes_each_phase_window_and_both_pids(tmp_path):
    """The half that runs under perf: every model over gRPC and in-process, windows in CLOCK_MONOTONIC."""
    import json
    import os
    import time

    from serving.testing import write_toy_model

    base = tmp_path / "models"
    write_toy_model(str(base / "retrieval"), 1, k=10, model_name="retrieval")
    out = tmp_path / "phases.json"
    before = time.monotonic()
    assert sched_split.main(["run", "--model_base_path", str(base), "--models", "retrieval,ranking",
                             "--requests", "5", "--out", str(out)]) == 0
    spec = json.loads(out.read_text())
    assert [p["name"] for p in spec["phases"]] == ["retrieval grpc", "retrieval in-process"], "absent models skipped"
    assert spec["pids"]["client"] == os.getpid() and spec["pids"]["server"] != os.getpid()
    assert all(before < p["start"] < p["end"] < time.monotonic() and p["p50_ms"] > 0 and p["requests"] == 5
               for p in spec["phases"])
