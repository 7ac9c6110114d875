"""A user simulator for the feedback loop: served lists in, events out, for synthetic users.

Why: the synthetic generator (preprocessing/sources/synthetic.py) knows every user's true taste
(``truth["taste"]``, ``truth["item_vec"]``, ``truth["pop_bias"]``), so a simulated user can click,
watch, rate and buy what it is shown as a user would -- with position bias -- and an A/B between
two served versions can be scored against the ground truth. Seeded: same inputs, same events.

    P(click | item at rank k) = propensity(k) * relevance(user, item)
    relevance = sigmoid(taste_strength * <taste_u, item_vec_i> + pop_weight * pop_bias_i + offset)

A click may be followed by a watch (seconds grow with relevance), a rating (the generator's
rating formula) and a purchase. ``write_served_log`` writes served lists as PredictionLog
TFRecords (what ``recsys serve`` logs), so a simulation needs no running server.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from preprocessing.feedback import PositionBias, prior_bias


@dataclasses.dataclass
class UserModel:
    taste_strength: float = 5.0     # as synthetic.generate's default: how sharply tastes decide
    pop_weight: float = 0.3         # a little of the popularity bias users have
    offset: float = -2.5            # base rate: sigmoid(-2.5) ~ 0.08 for an indifferent item
    watch_seconds: float = 5400.0   # a film's length; a watch covers relevance x that, plus noise
    p_watch: float = 0.8            # P(watch | click)
    p_rate: float = 0.3             # P(rating | click)
    p_purchase: float = 0.15        # P(purchase | click) at relevance 1


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _index(ids: Sequence[str], prefix: str) -> np.ndarray:
    """Synthetic ids are "<prefix><row>"; anything else (unknown, padding) -> -1."""
    out = np.full(len(ids), -1, dtype=np.int64)
    for j, s in enumerate(ids):
        if isinstance(s, str) and s.startswith(prefix) and s[len(prefix):].isdigit():
            out[j] = int(s[len(prefix):])
    return out


def relevance(truth: Mapping[str, Any], user_id: str, item_ids: Sequence[str], model: UserModel = UserModel()) -> np.ndarray:
    """The simulated user's P(click | examined) for each item (0 for items or users it does not know)."""
    u = _index([user_id], "u")[0]
    items = _index(item_ids, "i")
    taste, item_vec, pop = truth["taste"], truth["item_vec"], truth["pop_bias"]
    known = (items >= 0) & (items < len(item_vec))
    out = np.zeros(len(item_ids))
    if 0 <= u < len(taste) and known.any():
        idx = items[known]
        out[known] = _sigmoid(model.taste_strength * item_vec[idx] @ taste[u] + model.pop_weight * pop[idx]
                              + model.offset)
    return out


def simulate_events(served: Iterable[Any], truth: Mapping[str, Any], *, bias: Optional[PositionBias] = None,
                    model: UserModel = UserModel(), seed: int = 0, delay_s: int = 30) -> List[Dict[str, Any]]:
    """Events (feedback.py's table) for served lists (contracts/prediction_log.ServedList, or dicts with
    request_id, user_id, timestamp and items as (rank, item_id) pairs)."""
    rng = np.random.default_rng(seed)
    events: List[Dict[str, Any]] = []
    for s in served:
        if isinstance(s, Mapping):
            rid, user, ts, ranked = s["request_id"], s["user_id"], s["timestamp"], list(s["items"])
        else:
            rid, user, ts, ranked = s.request_id, s.user_id, s.timestamp, [(i.rank, i.item_id) for i in s.items]
        if not user or not ranked:
            continue
        ranks = np.array([r for r, _ in ranked])
        items = [i for _, i in ranked]
        b = bias or prior_bias(int(ranks.max()))
        rel = relevance(truth, user, items, model)
        clicks = rng.random(len(items)) < np.array([b.of(int(k)) for k in ranks]) * rel
        t = int(ts) + delay_s
        for j in np.flatnonzero(clicks):
            item, r = items[j], float(rel[j])
            base = {"request_id": rid, "user_id": user, "item_id": item}
            events.append(dict(base, event="click", value=1.0, timestamp=t))
            if rng.random() < model.p_watch:
                secs = float(np.clip(model.watch_seconds * (r + 0.2 * rng.normal()), 1.0, model.watch_seconds))
                events.append(dict(base, event="watch", value=round(secs, 1), timestamp=t + 1))
            if rng.random() < model.p_rate:
                rating = float(np.clip(np.round(1.0 + 4.0 * r + rng.normal(0, 0.6)), 1, 5))
                events.append(dict(base, event="rating", value=rating, timestamp=t + 2))
            if rng.random() < model.p_purchase * r:
                events.append(dict(base, event="purchase", value=3.99, timestamp=t + 3))
    return events


def write_served_log(path: str, lists: Iterable[Mapping[str, Any]], model_name: str, version: int) -> str:
    """Writes served lists as PredictionLog TFRecords, one record per list, as ``recsys serve`` logs them.

    Each list: {"request_id", "user_id", "timestamp" (s), "item_ids": [...], optional "scores": [...],
    optional "outputs": {name: values} (more response tensors, e.g. the explore signature's propensities)
    and "signature_name"}.
    ``path`` should end in ``.tfrecord`` (contracts/prediction_log.log_files reads it as it is).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from contracts.prediction_log import serialize_record

    with tf.io.TFRecordWriter(path) as w:
        for s in lists:
            plog = prediction_log_pb2.PredictionLog()
            md = plog.log_metadata
            md.model_spec.name, md.model_spec.version.value = model_name, int(version)
            md.model_spec.signature_name = s.get("signature_name") or "serving_default"
            md.sampling_config.sampling_rate = 1.0
            md.saved_model_tags.append("serve")
            md.timestamp_secs = int(s["timestamp"])
            req, resp = plog.predict_log.request, plog.predict_log.response
            req.model_spec.name = model_name
            req.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.array([s["user_id"]], dtype=object)))
            resp.outputs["item_ids"].CopyFrom(tf.make_tensor_proto(np.array([s["item_ids"]], dtype=object)))
            scores = s.get("scores") or [float(-k) for k in range(len(s["item_ids"]))]
            resp.outputs["scores"].CopyFrom(tf.make_tensor_proto(np.array([scores], dtype=np.float32)))
            for name, values in (s.get("outputs") or {}).items():
                resp.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(values)[None]))
            w.write(serialize_record(plog, s["request_id"], int(float(s["timestamp"]) * 1e6)))
    return path


# ---------------------------------------------------------------- a simulated A/B, end to end (offline)
def assign_arm(user_id: str, arms: Sequence[str] = ("stable", "canary"), weights: Optional[Sequence[float]] = None,
               salt: str = "ab") -> str:
    """The arm a user's traffic goes to: a stable hash of (salt, user) -- the same in every process and
    round (Python's hash() is salted per process), so a user always sees one version."""
    import hashlib

    weights = list(weights or [1.0] * len(arms))
    u = int.from_bytes(hashlib.sha256(f"{salt}:{user_id}".encode()).digest()[:8], "big") / 2.0 ** 64
    edges = np.cumsum(weights) / float(sum(weights))
    return arms[int(np.searchsorted(edges, u, side="right").clip(0, len(arms) - 1))]


def expected_ctr(truth: Mapping[str, Any], lists: Iterable[Mapping[str, Any]], bias: Optional[PositionBias] = None,
                 model: UserModel = UserModel()) -> float:
    """The true CTR of served lists under the simulated users (what a measured CTR estimates)."""
    num = den = 0.0
    for s in lists:
        rel = relevance(truth, s["user_id"], s["item_ids"], model)
        b = bias or prior_bias(len(s["item_ids"]))
        num += float(sum(b.of(k) * r for k, r in enumerate(rel, 1)))
        den += len(rel)
    return num / den if den else 0.0


def simulate_ab(truth: Mapping[str, Any], users: Sequence[str], arms: Mapping[str, Any], out_dir: str, *,
                days: int = 2, requests_per_user_day: int = 1, start_ts: int = 1_699_920_000,
                bias: Optional[PositionBias] = None, model: UserModel = UserModel(), seed: int = 0) -> Dict[str, Any]:
    """Serves every user from the arm their hash picks, logs it, and simulates their events.

    ``arms``: label -> (model_name, version, recommend) with ``recommend(user_id) -> [item ids]``
    (a served model's client call, or any policy). Writes ``<out_dir>/<label>.tfrecord`` request
    logs and ``<out_dir>/events.jsonl``; returns their paths, the served lists per arm and each
    arm's true expected CTR (the ground truth the report's measured CTR is checked against).
    """
    import os

    from preprocessing.feedback import write_jsonl

    rng = np.random.default_rng(seed)
    labels = list(arms)
    served: Dict[str, List[Dict[str, Any]]] = {a: [] for a in labels}
    for day in range(days):
        for u in users:
            arm = assign_arm(u, labels)
            for n in range(requests_per_user_day):
                ts = start_ts + day * 86400 + int(rng.integers(0, 86400))
                served[arm].append({"request_id": f"{arm}-{u}-{day}-{n}", "user_id": u, "timestamp": ts,
                                    "item_ids": list(arms[arm][2](u))})
    os.makedirs(out_dir, exist_ok=True)
    logs = {a: write_served_log(os.path.join(out_dir, f"{a}.tfrecord"), served[a], arms[a][0], arms[a][1])
            for a in labels}
    events = simulate_events(({"request_id": s["request_id"], "user_id": s["user_id"], "timestamp": s["timestamp"],
                               "items": list(enumerate(s["item_ids"], 1))} for a in labels for s in served[a]),
                             truth, bias=bias, model=model, seed=seed + 1)
    return {"logs": logs, "events": write_jsonl(events, os.path.join(out_dir, "events.jsonl")),
            "served": served, "true_ctr": {a: expected_ctr(truth, served[a], bias, model) for a in labels}}
