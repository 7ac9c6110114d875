"""`recsys loop`: the feedback loop end to end, with simulated users, against a running server.

Each round: the synthetic users (whose true tastes the generator planted, so their clicks follow them,
with position bias: preprocessing/feedback_sim.py) ask the served model for recommendations over gRPC;
the server logs every request as TF Serving would (``logging_config``); the round's slice of that log
is joined with the users' events; ``recsys retrain`` (``steps.retrain``) warm-starts a candidate on the
old data plus the feedback, blesses it against the served version on the round's fresh data, and
pushes it; the server swaps to it without a restart while a probe keeps querying it (every failed
request is counted). After the rounds, a deliberately worse candidate (no warm start, one training
step) must be blocked by the same gate.

The last round is a live A/B test: the server loads the first and the last version side by side under
the version labels ``stable`` and ``canary`` (TF Serving's two-step procedure through the polled model
config: load both versions, then label them), and the users are split between the labels by a hash of
their id, on the same day. The report compares the two arms' measured CTR with a bootstrap interval over
users, beside the simulator's true expected CTR of what each arm showed.

Request times follow a simulated clock (one day per round after the data ends), so the new events
sit after the old ones on the same timeline; the log's wall-clock times are not used for features.
"""
from __future__ import annotations

import copy
import os
import threading
import zlib
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from recsys import fileio, steps
from recsys.config import Config
from recsys.layout import RunLayout

DAY = 86400
LOG_NAME = "requests"


ARMS = ("stable", "canary")  # the A/B round's version labels: the first served version, the last pushed one


def model_config(base_path: str, names: Sequence[str], log_dir: str, versions: Sequence[int] = (),
                 labels: Dict[str, int] = None) -> str:
    """A TF Serving model config (text proto) serving ``names`` with every request logged (rate 1);
    ``versions``: serve exactly these side by side (specific policy), ``labels``: label -> version."""
    entries = []
    for name in names:
        policy = ("model_version_policy { specific { " + " ".join(f"versions: {int(v)}" for v in versions) + " } } "
                  if versions else "")
        policy += "".join(f'version_labels {{ key: "{k}" value: {int(v)} }} ' for k, v in (labels or {}).items())
        entries.append(f'config {{ name: "{name}" base_path: "{fileio.join(base_path, name)}" '
                       f'model_platform: "tensorflow" {policy}logging_config {{ log_collector_config {{ '
                       f'type: "tfrecord" filename_prefix: "{fileio.join(log_dir, name)}" }} sampling_config {{ '
                       f'sampling_rate: 1.0 }} }} }}')
    return "model_config_list {\n  " + "\n  ".join(entries) + "\n}\n"


def arm_of(user_id: str) -> str:
    """The A/B arm of a user: a stable hash of the id (the same user always sees the same arm)."""
    return ARMS[zlib.crc32(str(user_id).encode("utf-8")) % len(ARMS)]


def user_requests(raw_dir: str, at_ts: int) -> Dict[str, Dict[str, np.ndarray]]:
    """One raw request per user at ``at_ts``, history = the user's interactions before it (old + feedback)."""
    from preprocessing import requests
    from preprocessing.sources import tables

    users = tables.read_table(fileio.join(raw_dir, tables.USERS_FILE))
    events: Dict[str, list] = {}
    for e in tables.read_interactions(fileio.join(raw_dir, tables.INTERACTIONS_FILE)):
        events.setdefault(e["user_id"], []).append(e)
    return {u: requests.query_request(users.get(u, {"user_id": u}), events[u], at_ts) for u in sorted(events)}


class Probe(threading.Thread):
    """Queries the served model in a loop (what live traffic would do during a swap); counts every outcome."""

    def __init__(self, address: str, model: str, request: Dict[str, np.ndarray]):
        super().__init__(daemon=True)
        self.address, self.model, self.request = address, model, request
        self.ok = self.failed = 0
        self.versions: List[int] = []
        self.errors: List[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        from serving.client import ServingClient

        with ServingClient(self.address) as client:
            while not self._halt.is_set():
                try:
                    out = client.predict(self.model, self.request)
                    self.ok += 1
                    if not self.versions or self.versions[-1] != out.model_version:
                        self.versions.append(out.model_version)
                except Exception as e:  # noqa: BLE001  (a failed request is what the probe measures)
                    self.failed += 1
                    self.errors.append(str(e)[:200])
                self._halt.wait(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def wait_for_version(client, model: str, version: int, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s["version"] == version and s["state"] == "AVAILABLE" for s in client.status(model)):
            return True
        time.sleep(0.25)
    return False


def serve_round(client, model: str, reqs: Dict[str, Dict[str, np.ndarray]], log_prefix: str, at_ts: int,
                out_log: str, k: int, labels: Dict[str, int] = None) -> Tuple[List[Dict[str, Any]], int]:
    """Every user asks once; returns the round's served lists as the server logged them (also written, with
    the simulated request time, to ``out_log``: the round's slice of the request log) and the version.

    ``labels`` (arm -> version): each user asks the label of their arm (``arm_of``), and every answer must
    come from that label's version; the version returned is then the canary's."""
    from preprocessing import feedback_sim
    from serving import request_log

    versions = {}
    for user, request in reqs.items():
        label = arm_of(user) if labels else None
        got = client.predict(model, request, version=label).model_version
        if labels and got != labels[label]:
            raise RuntimeError(f"label {label!r} answered from version {got}, not {labels[label]}")
        versions[user] = got
    if not labels and len(set(versions.values())) != 1:
        raise RuntimeError(f"the model changed version during a round: {sorted(set(versions.values()))}")
    wanted = set(reqs)
    deadline = time.monotonic() + 30
    while True:  # the logger writes off the request path: wait until the round's records are on disk
        lists = [s for s in request_log.read_served_lists(log_prefix)
                 if s.user_id in wanted and s.version == versions[s.user_id]
                 and int(s.inputs.get("timestamp", -1)) == at_ts]
        if len({s.user_id for s in lists}) >= len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    last = {s.user_id: s for s in lists}  # one list per user: their round request, logged after any probe
    served = [{"request_id": s.request_id, "user_id": s.user_id, "timestamp": at_ts, "version": s.version,
               "item_ids": [i.item_id for i in s.items][:k], "scores": [float(i.score) for i in s.items][:k]}
              for s in last.values()]
    for version in sorted({s["version"] for s in served}):
        feedback_sim.write_served_log(version_log(out_log, version) if labels else out_log,
                                      [s for s in served if s["version"] == version], model, version)
    return served, labels["canary"] if labels else next(iter(versions.values()))


def version_log(out_log: str, version: int) -> str:
    """An A/B round's log of one version: ``round3.tfrecord`` -> ``round3-v2.tfrecord``."""
    stem = out_log[:-len(".tfrecord")] if out_log.endswith(".tfrecord") else out_log
    return f"{stem}-v{int(version)}.tfrecord"


def label_versions(config_path: str, client, base_path: str, model: str, log_dir: str, labels: Dict[str, int],
                   request: Dict[str, np.ndarray], timeout: float = 120.0) -> None:
    """TF Serving's procedure for labels on a polled model config: serve the labelled versions side by side
    first, wait until each is AVAILABLE, then add the labels (a label may only point at a loaded version).
    Done when ``request`` sent to each label is answered by its version (GetModelStatus ignores labels)."""
    versions = sorted(set(labels.values()))
    fileio.write_text(config_path, model_config(base_path, [model], log_dir, versions))
    for v in versions:
        if not wait_for_version(client, model, v, timeout):
            raise RuntimeError(f"the server did not load version {v} of {model} for the A/B round")
    fileio.write_text(config_path, model_config(base_path, [model], log_dir, versions, labels))
    deadline = time.monotonic() + timeout
    while not all(_labelled(client, model, label, request) == v for label, v in labels.items()):
        if time.monotonic() > deadline:  # the polled config is re-read every model_config_file_poll_wait_seconds
            raise RuntimeError(f"the server did not apply the version labels {labels} of {model}")
        time.sleep(0.25)


def _labelled(client, model: str, label: str, request: Dict[str, np.ndarray]):
    """The version that answers ``request`` sent to a label (None while the label does not exist)."""
    try:
        return client.predict(model, request, version=label).model_version
    except Exception:  # noqa: BLE001  (INVALID_ARGUMENT / NOT_FOUND until the new config is read)
        return None


def run_loop(cfg: Config, rounds: int = 2, model: str = "retrieval", k: int = 10, seed: int = 0,
             log=print) -> Dict[str, Any]:
    """Base model (trained and pushed when the run has none) -> ``rounds`` x (serve -> feedback -> retrain ->
    bless -> push -> hot swap) -> a worse candidate that must be blocked -> the report. Returns the figures."""
    from preprocessing import feedback, feedback_sim
    from preprocessing.sources import load_source
    from recsys import artifacts as af
    from recsys import report as report_mod
    from serving.client import ServingClient
    from serving.testing import start_server

    if cfg.data.source != "synthetic":
        raise ValueError("recsys loop simulates users from the synthetic generator's planted tastes: "
                         "use data.source=synthetic")
    layout = RunLayout(cfg)
    if not af.RetrievalModel.exists(layout.retrieval):
        log("[loop] no trained model in this run: training and pushing the first version")
        steps.make_raw(cfg)
        version_dir = steps.preprocess(cfg)
        trained = steps.train(cfg, version_dir)
        steps.evaluate(cfg, trained)
        steps.export(cfg, trained)
    truth = load_source(cfg.data).truth
    loop_dir = layout.path("loop")
    log_dir = fileio.join(loop_dir, "server_logs")
    fileio.makedirs(log_dir)
    config_path = fileio.write_text(fileio.join(loop_dir, "models.config"),
                                    model_config(cfg.model_base_path, [model], log_dir))
    server = start_server(model_config_file=config_path, rest=False, poll_seconds=0.5,
                          model_config_file_poll_wait_seconds=0.5)
    log(f"[loop] serving {model} from {cfg.model_base_path} at {server.grpc_address}, logging to {log_dir}")
    rows, round_logs, round_events, labels = [], [], [], None
    try:
        with ServingClient(server.grpc_address) as client:
            data_end = max_timestamp(newest_raw(cfg))
            for r in range(1, rounds + 2):
                at_ts = data_end + r * DAY
                reqs = user_requests(newest_raw(cfg), at_ts)
                pushed = [x["new_version"] for x in rows if x.get("pushed")]
                if r > rounds and pushed:  # the A/B round: the first version vs the last one pushed
                    labels = {"stable": rows[0]["version"], "canary": pushed[-1]}
                    label_versions(config_path, client, cfg.model_base_path, model, log_dir, labels,
                                   next(iter(reqs.values())))
                    log(f"[loop] A/B round: {model} versions {labels} served side by side; users split by "
                        f"a hash of their id")
                out_log = fileio.join(loop_dir, f"round{r}.tfrecord")
                served, version = serve_round(client, model, reqs, fileio.join(log_dir, model), at_ts, out_log, k,
                                              labels if r > rounds else None)
                events = feedback_sim.simulate_events(
                    ({"request_id": s["request_id"], "user_id": s["user_id"], "timestamp": s["timestamp"],
                      "items": list(enumerate(s["item_ids"], 1))} for s in served), truth, seed=seed + r)
                events_path = feedback.write_jsonl(events, fileio.join(loop_dir, f"events{r}.jsonl"))
                logs_r = ([version_log(out_log, v) for v in sorted(set(labels.values()))]
                          if labels and r > rounds else [out_log])
                round_logs.append(logs_r)
                round_events.append(events_path)
                row = {"round": r, "version": version, "requests": len(served), "events": len(events),
                       "true_ctr": feedback_sim.expected_ctr(truth, served),
                       "clicks": sum(e["event"] == "click" for e in events)}
                row["measured_ctr"] = row["clicks"] / max(1, sum(len(s["item_ids"]) for s in served))
                if labels and r > rounds:
                    row["arms"] = arm_rows(labels, served, events, truth)
                    row["version"] = " vs ".join(f"{a}=v{v}" for a, v in labels.items())
                log(f"[loop] round {r}: version {row['version']} served {len(served)} users; {row['clicks']} clicks "
                    f"(CTR {row['measured_ctr']:.4f}, true {row['true_ctr']:.4f})")
                if r > rounds:  # the last round only measures: the A/B test, or the last version alone
                    rows.append(row)
                    break
                probe = Probe(server.grpc_address, model, next(iter(reqs.values())))
                probe.start()
                try:
                    out = steps.retrain(cfg, round_logs[-1], [events_path])
                    if out["pushed"] and not wait_for_version(client, model, int(out["version"])):
                        raise RuntimeError(f"the server did not load version {out['version']} of {model}")
                    time.sleep(1.0)
                finally:
                    probe.stop()
                row.update(retrained=out["round"], pushed=out["pushed"], reason=out["reason"],
                           new_version=out["version"] if out["pushed"] else None, probe_ok=probe.ok,
                           probe_failed=probe.failed, probe_versions=probe.versions)
                fate = f"pushed as version {out['version']}" if out["pushed"] else f"BLOCKED: {out['reason']}"
                log(f"[loop] round {r}: candidate {fate}; {probe.ok} probe requests during retrain and swap, "
                    f"{probe.failed} failed, versions seen {probe.versions}")
                rows.append(row)
            worse = worse_candidate(cfg, round_logs[-1], round_events[-1], log)
    finally:
        server.stop(0)
    items_path = fileio.join(newest_raw(cfg), "items.jsonl")
    every_log = [p for logs_r in round_logs for p in logs_r]
    rep, paths = report_mod.run_report(every_log, round_events, items_path, fileio.join(loop_dir, "report"))
    ab = None
    if labels:  # the live A/B test: the last round's two arms, same day, users split by hash
        ab_rep, ab_paths = report_mod.run_report(round_logs[-1], round_events[-1:], items_path,
                                                 fileio.join(loop_dir, "report_ab"),
                                                 baseline=f"{model}/v{labels['stable']}",
                                                 candidate=f"{model}/v{labels['canary']}")
        ab, paths = ab_rep.get("ab"), {**paths, "ab_html": ab_paths.get("html")}
    first = rows[0]["version"]
    last = labels["canary"] if labels else rows[-1]["version"]
    summary = {"rounds": rows, "worse_candidate": worse, "report": paths, "ab": ab, "labels": labels,
               "first_version": first, "last_version": last}
    fileio.write_json(fileio.join(loop_dir, "loop.json"), summary, indent=2)
    return summary


def arm_rows(labels: Dict[str, int], served: List[Dict[str, Any]], events: List[Dict[str, Any]],
             truth) -> Dict[str, Dict[str, Any]]:
    """Per A/B arm: users, impressions, clicks, measured CTR and the simulator's true CTR of what it showed."""
    from preprocessing import feedback_sim

    clicks_by_request: Dict[str, int] = {}
    for e in events:
        if e["event"] == "click" and e.get("request_id"):
            clicks_by_request[e["request_id"]] = clicks_by_request.get(e["request_id"], 0) + 1
    out = {}
    for arm, version in labels.items():
        lists = [s for s in served if s["version"] == version]
        shown = sum(len(s["item_ids"]) for s in lists)
        clicks = sum(clicks_by_request.get(s["request_id"], 0) for s in lists)
        out[arm] = {"version": version, "users": len(lists), "impressions": shown, "clicks": clicks,
                    "measured_ctr": clicks / max(1, shown), "true_ctr": feedback_sim.expected_ctr(truth, lists)}
    return out


def worse_candidate(cfg: Config, logs: Sequence[str], events_path: str, log) -> Dict[str, Any]:
    """A candidate that is trained in name only (no warm start, one step at a learning rate of 1e-9: its
    vectors are their random initialisation) on the same data: the gate must block it. (One real step
    from scratch is not reliably worse: on a tiny catalogue it already learns popularity.)"""
    bad = copy.deepcopy(cfg)
    bad.train.epochs, bad.train.steps_per_epoch, bad.train.learning_rate = 1, 1, 1e-9
    out = steps.retrain(bad, list(logs), [events_path], warm_start=False)
    log(f"[loop] deliberately worse candidate (untrained: no warm start, one step at learning rate 1e-9): "
        f"{'PUSHED (the gate failed to block it)' if out['pushed'] else 'blocked: ' + str(out['reason'])}")
    return {"pushed": out["pushed"], "reason": out["reason"], "blessing": out["blessing"]}


def newest_raw(cfg: Config) -> str:
    """The newest raw data (the old data + every round's feedback): the users' histories."""
    return steps.latest_raw(cfg).uri


def max_timestamp(raw_dir: str) -> int:
    from preprocessing.sources import tables

    return max(e["timestamp"] for e in tables.read_interactions(fileio.join(raw_dir, tables.INTERACTIONS_FILE)))


def format_summary(summary: Dict[str, Any]) -> str:
    """The loop's table: one row per round, then the A/B line and the worse candidate's fate."""
    lines = ["round  version        users  clicks  CTR     true CTR  candidate               probe ok/failed",
             "-----  -------------  -----  ------  ------  --------  ----------------------  ---------------"]
    for r in summary["rounds"]:
        cand = ("-" if "pushed" not in r else f"pushed v{r['new_version']}" if r["pushed"] else "blocked")
        probe = f"{r['probe_ok']}/{r['probe_failed']}" if "probe_ok" in r else "-"
        lines.append(f"{r['round']:>5}  {str(r['version']):<13}  {r['requests']:>5}  {r['clicks']:>6}  "
                     f"{r['measured_ctr']:.4f}  {r['true_ctr']:.4f}    {cand:<22}  {probe}")
    for r in summary["rounds"]:
        for arm, a in (r.get("arms") or {}).items():
            lines.append(f"  A/B arm {arm:<6} v{a['version']}: {a['users']} users, CTR {a['measured_ctr']:.4f} "
                         f"(true {a['true_ctr']:.4f})")
    if summary.get("ab"):
        from recsys.report import format_ab

        lines.append(format_ab(summary["ab"]))
    w = summary["worse_candidate"]
    fate = "PUSHED (the gate failed)" if w["pushed"] else f"blocked ({w['reason']})"
    lines.append(f"deliberately worse candidate: {fate}")
    lines.append(f"report: {summary['report'].get('html', summary['report'])}")
    return "\n".join(lines)
