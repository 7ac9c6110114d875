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

Exploration (``exploration.policy=epsilon_greedy``, ``exploration.epsilon``; ``--model recommend``): the policy
runs inside the served graph (the recommend model's ``explore`` signature, epsilon and its candidate pool baked
into each version at export), so the same clients work against stock TF Serving. Users are split by a second,
independent hash into a ``greedy`` half (serving_default) and an ``explore`` half (the explore signature); the
server's log keeps each exploring response's propensities and greedy list, the round's slice carries them to
the join, and each round reports, per half, CTR (measured and true), the coverage of the served lists, and from
the exploring half alone an IPS/SNIPS estimate of the greedy policy's CTR beside the simulator's truth. Both
halves feed the same retraining, so the split measures exploration's cost and coverage per round; its long-run
effect on what the model learns needs two loop runs (one with epsilon 0) compared round by round.

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
CLIENT_TIMEOUT_S = 120.0  # the simulated users' deadline per request (serving.client's default is 10 s)
LOG_NAME = "requests"


ARMS = ("stable", "canary")  # the A/B round's version labels: the first served version, the last pushed one
POLICIES = ("greedy", "explore")  # exploration halves: serving_default vs the recommend model's explore signature
SIGNATURES = {"greedy": "serving_default", "explore": "explore"}
POLICY_OUTPUTS = ("propensities", "greedy_item_ids", "explored", "epsilon")  # what an exploring response adds


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


def policy_of(user_id: str) -> str:
    """The exploration half of a user: a hash independent of ``arm_of`` (its own salt), stable across rounds."""
    return POLICIES[zlib.crc32(f"explore:{user_id}".encode("utf-8")) % len(POLICIES)]


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
                out_log: str, k: int, labels: Dict[str, int] = None,
                explore: bool = False) -> Tuple[List[Dict[str, Any]], int]:
    """Every user asks once; returns the round's served lists as the server logged them (also written, with
    the simulated request time, to ``out_log``: the round's slice of the request log) and the version.

    ``labels`` (arm -> version): each user asks the label of their arm (``arm_of``), and every answer must
    come from that label's version; the version returned is then the canary's. ``explore``: the users of the
    ``explore`` half (``policy_of``) call the explore signature; their lists keep the logged propensities,
    greedy list, explored flag and epsilon (``outputs``), which the round's slice of the log carries too."""
    from preprocessing import feedback_sim
    from contracts import prediction_log

    for label in (labels or {None: None}):
        if explore and SIGNATURES["explore"] not in client.metadata(model, label):
            raise RuntimeError(f"{model} ({label or 'latest version'}) has no explore signature: versions get it when "
                               f"exported with exploration.policy=epsilon_greedy")
    versions = {}
    for user, request in reqs.items():
        label = arm_of(user) if labels else None
        signature = SIGNATURES[policy_of(user)] if explore else "serving_default"
        got = client.predict(model, request, signature_name=signature, version=label).model_version
        if labels and got != labels[label]:
            raise RuntimeError(f"label {label!r} answered from version {got}, not {labels[label]}")
        versions[user] = got
    if not labels and len(set(versions.values())) != 1:
        raise RuntimeError(f"the model changed version during a round: {sorted(set(versions.values()))}")
    wanted = set(reqs)
    deadline = time.monotonic() + 30
    while True:  # the logger writes off the request path: wait until the round's records are on disk
        lists = [s for s in prediction_log.read_served_lists(log_prefix)
                 if s.user_id in wanted and s.version == versions[s.user_id]
                 and int(s.inputs.get("timestamp", -1)) == at_ts]
        if len({s.user_id for s in lists}) >= len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    last = {s.user_id: s for s in lists}  # one list per user: their round request, logged after any probe
    served = [{"request_id": s.request_id, "user_id": s.user_id, "timestamp": at_ts, "version": s.version,
               "item_ids": [i.item_id for i in s.items][:k], "scores": [float(i.score) for i in s.items][:k]}
              for s in last.values()]
    if explore:
        logged = {r.request_id: r for r in prediction_log.read_requests(log_prefix)
                  if r.request_id in {s["request_id"] for s in served}}
        for s in served:
            r = logged[s["request_id"]]
            s["policy"], s["signature_name"] = policy_of(s["user_id"]), r.signature_name
            s["outputs"] = {name: (r.outputs[name][0][:k] if r.outputs[name].ndim > 1 else r.outputs[name][:1])
                            for name in POLICY_OUTPUTS if name in r.outputs}
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
             log=print, explore_epsilon: float = None) -> Dict[str, Any]:
    """Base model (trained and pushed when the run has none) -> ``rounds`` x (serve -> feedback -> retrain ->
    bless -> push -> hot swap) -> a worse candidate that must be blocked -> the report. Returns the figures.

    ``explore_epsilon`` (default: the config's exploration.*): > 0 exports every version with an
    epsilon-greedy explore signature and sends half the users to it (module docstring); 0 turns it off."""
    from preprocessing import feedback, feedback_sim
    from preprocessing.sources import load_source
    from recsys import artifacts as af
    from recsys import report as report_mod
    from serving.client import ServingClient
    from serving.testing import start_server

    if cfg.data.source != "synthetic":
        raise ValueError("recsys loop simulates users from the synthetic generator's planted tastes: "
                         "use data.source=synthetic")
    cfg = with_exploration(cfg, explore_epsilon)
    explore = cfg.exploration.policy == "epsilon_greedy" and cfg.exploration.epsilon > 0
    if explore and model != "recommend":
        raise ValueError("exploration runs inside the recommend model (its explore signature): use --model recommend")
    layout = RunLayout(cfg)
    if not af.RetrievalModel.exists(layout.retrieval):
        log("[loop] no trained model in this run: training and pushing the first version")
        steps.make_raw(cfg)
        version_dir = steps.preprocess(cfg)
        trained = steps.train(cfg, version_dir)
        steps.evaluate(cfg, trained)
        if model == "recommend":
            steps.train_ranking(cfg, trained)
        steps.export(cfg, trained)
    elif model == "recommend" and not steps.has_ranker(cfg):
        log("[loop] the run has no ranker for the recommend model: training it and pushing a version with it")
        trained = steps.load_trained(cfg)
        steps.train_ranking(cfg, trained)
        steps.export(cfg, trained)
    if explore:
        log(f"[loop] exploration: epsilon-greedy, epsilon {cfg.exploration.epsilon} over the best "
            f"{cfg.exploration.candidates} re-ranked candidates, in every version exported from now on; "
            f"half the users (by a hash of their id) call the explore signature")
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
        # a signature's first call on a fresh version may take seconds on a loaded machine: a patient client
        with ServingClient(server.grpc_address, timeout=CLIENT_TIMEOUT_S) as client:
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
                                              labels if r > rounds else None, explore=explore)
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
                n_items = catalogue_size(newest_raw(cfg))
                row["coverage"] = coverage(served, n_items)
                if explore:
                    row["policies"] = policy_rows(served, events, truth, n_items, seed=seed + r)
                    for line in format_policies(row["policies"]):
                        log(f"[loop] round {r}: {line}")
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
               "first_version": first, "last_version": last,
               "exploration": ({"policy": "epsilon_greedy", "epsilon": cfg.exploration.epsilon,
                                "candidates": cfg.exploration.candidates} if explore else None)}
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


def with_exploration(cfg: Config, epsilon: float = None) -> Config:
    """``cfg`` with epsilon-greedy at ``epsilon`` (0: none); unchanged when ``epsilon`` is None."""
    if epsilon is None:
        return cfg
    if isinstance(epsilon, bool) or not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"explore epsilon must be a number in [0, 1], got {epsilon!r}")
    out = copy.deepcopy(cfg)
    out.exploration.policy, out.exploration.epsilon = ("epsilon_greedy" if epsilon > 0 else "none"), float(epsilon)
    return out


def catalogue_size(raw_dir: str) -> int:
    from preprocessing.sources import tables

    return len(tables.read_table(fileio.join(raw_dir, tables.ITEMS_FILE)))


def coverage(served: Sequence[Dict[str, Any]], n_items: int) -> float:
    """Share of the catalogue shown at least once in these lists."""
    return len({i for s in served for i in s["item_ids"] if i}) / max(1, n_items)


def policy_rows(served: List[Dict[str, Any]], events: List[Dict[str, Any]], truth, n_items: int,
                seed: int = 0) -> Dict[str, Dict[str, Any]]:
    """Per exploration half: users, impressions, clicks, measured and true CTR, coverage; for the explore half
    also the epsilon the version served, the share of lists explored, and the greedy policy's CTR estimated
    off-policy from the explore half's logged propensities (IPS, SNIPS, 95% bootstrap over users) beside the
    simulator's true CTR of the greedy lists those same users were not shown."""
    from preprocessing import feedback_sim

    clicked = {(e["request_id"], e["item_id"]) for e in events if e["event"] == "click" and e.get("request_id")}
    out: Dict[str, Dict[str, Any]] = {}
    for policy in POLICIES:
        lists = [s for s in served if s.get("policy") == policy]
        shown = sum(len(s["item_ids"]) for s in lists)
        clicks = sum((s["request_id"], i) in clicked for s in lists for i in s["item_ids"])
        row = {"users": len(lists), "impressions": shown, "clicks": clicks, "measured_ctr": clicks / max(1, shown),
               "true_ctr": feedback_sim.expected_ctr(truth, lists), "coverage": coverage(lists, n_items)}
        logged = [s for s in lists if "propensities" in s.get("outputs", {})]
        if policy == "explore" and logged:
            row["epsilon"] = float(np.mean([float(np.ravel(s["outputs"]["epsilon"])[0]) for s in logged]))
            row["explored_share"] = float(np.mean([bool(np.ravel(s["outputs"]["explored"])[0]) for s in logged]))
            row.update(greedy_off_policy(logged, clicked, truth, seed))
        out[policy] = row
    return out


def greedy_off_policy(lists: List[Dict[str, Any]], clicked, truth, seed: int = 0) -> Dict[str, Any]:
    """IPS/SNIPS of the greedy policy from exploring lists: p_log = the logged propensity, p_target = 1 where the
    greedy list has the same item at that position, else 0; the truth is the greedy lists' expected CTR."""
    from preprocessing import feedback_sim
    from preprocessing.utf8 import to_str
    from recsys import off_policy

    users, positions, clicks, p_log, p_target = [], [], [], [], []
    for s in lists:
        greedy = to_str(s["outputs"]["greedy_item_ids"]).tolist()
        for pos, (item, p) in enumerate(zip(s["item_ids"], s["outputs"]["propensities"]), 1):
            users.append(s["user_id"])
            positions.append(pos)
            clicks.append(float((s["request_id"], item) in clicked))
            p_log.append(float(p))
            p_target.append(float(pos <= len(greedy) and greedy[pos - 1] == item))
    truth_greedy = feedback_sim.expected_ctr(truth, [{"user_id": s["user_id"], "item_ids": [
        g for g in to_str(s["outputs"]["greedy_item_ids"]).tolist() if g]} for s in lists])
    est = {name: fn(users, positions, clicks, p_log, p_target, seed=seed).to_json()
           for name, fn in (("ips", off_policy.ips), ("snips", off_policy.snips))}
    return {"greedy_true_ctr": truth_greedy, "greedy_ips": est["ips"], "greedy_snips": est["snips"]}


def format_policies(policies: Dict[str, Dict[str, Any]]) -> List[str]:
    lines = []
    for policy, p in policies.items():
        line = (f"{policy:<7} {p['users']:>4} users, CTR {p['measured_ctr']:.4f} (true {p['true_ctr']:.4f}), "
                f"coverage {p['coverage']:.1%}")
        if "epsilon" in p:
            line += f", epsilon {p['epsilon']:.2f} ({p['explored_share']:.0%} of lists explored)"
        lines.append(line)
        if "greedy_ips" in p:
            ips, sn = p["greedy_ips"], p["greedy_snips"]
            lines.append(f"        greedy CTR off-policy from the explore half: IPS {ips['value']:.4f} "
                         f"[{ips['interval'][0]:.4f}, {ips['interval'][1]:.4f}], SNIPS {sn['value']:.4f} "
                         f"[{sn['interval'][0]:.4f}, {sn['interval'][1]:.4f}]; true {p['greedy_true_ctr']:.4f}")
    return lines


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
    lines = ["round  version        users  clicks  CTR     true CTR  coverage  candidate               probe ok/failed",
             "-----  -------------  -----  ------  ------  --------  --------  ----------------------  ---------------"]
    for r in summary["rounds"]:
        cand = ("-" if "pushed" not in r else f"pushed v{r['new_version']}" if r["pushed"] else "blocked")
        probe = f"{r['probe_ok']}/{r['probe_failed']}" if "probe_ok" in r else "-"
        cov = f"{r['coverage']:.1%}" if "coverage" in r else "-"
        lines.append(f"{r['round']:>5}  {str(r['version']):<13}  {r['requests']:>5}  {r['clicks']:>6}  "
                     f"{r['measured_ctr']:.4f}  {r['true_ctr']:.4f}    {cov:>8}  {cand:<22}  {probe}")
    if summary.get("exploration"):
        x = summary["exploration"]
        lines.append(f"exploration: epsilon-greedy, epsilon {x['epsilon']} over the best {x['candidates']}, "
                     f"half the users (explore signature) vs the other half (serving_default):")
        for r in summary["rounds"]:
            lines.extend(f"  round {r['round']} {line}" for line in format_policies(r.get("policies") or {}))
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
