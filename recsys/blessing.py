"""The blessing: is the candidate good enough to replace what is being served? (TFX Evaluator's job.)

Two checks, both recorded with their figures in the Blessing artifact:

1. Offline, absolute: the two-tower's recall@K on the evaluation protocol must beat popularity's
   by ``gate.min_lift`` (``check_vs_popularity``; read from the Evaluation's metrics.json).
2. Online-shaped, relative: the candidate's exported SavedModels and the *currently served*
   versions (the newest complete version under the serving model base path) answer the same
   fresh requests, the latest evaluation events' raw queries, exactly as a client would call
   them. Items already in the request's history are removed from both answers; a hit is the
   event's logged item. Retrieval is judged on recall@K, the recommend stack on nDCG@10. The
   candidate is blocked when a metric is lower than the served one by more than
   ``gate.tolerance`` (relative), or when it fails to load or answer. The difference is
   reported with a user-bootstrap 95% interval.

With nothing served yet only check 1 (and a successful call of every candidate model) applies.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

MODEL_KEY = "two_tower"
BASELINE_KEY = "popularity"
JUDGED = {"retrieval": "recall", "recommend": "ndcg@10"}   # served model name -> its key metric


class QualityGateError(RuntimeError):
    """A metrics file the gate cannot judge (missing, malformed)."""


# ---------------------------------------------------------------- 1. offline, vs popularity
def _metric(results: Mapping[str, Any], name: str, key: str) -> float:
    try:
        value = float(results[name][key])
    except KeyError as e:
        raise QualityGateError(f"metrics have no results.{name}.{key} (missing {e})") from None
    except (TypeError, ValueError):
        raise QualityGateError(f"results.{name}.{key} is not a number: {results[name][key]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise QualityGateError(f"results.{name}.{key} is not a valid recall: {value!r}")
    return value


def check_vs_popularity(metrics: Mapping[str, Any], min_lift: float = 1.1, k: int = 50) -> Dict[str, Any]:
    """Passes only if the model's recall@k > min_lift x popularity's (strictly: zero recall never passes)."""
    if not (isinstance(min_lift, (int, float)) and math.isfinite(min_lift) and min_lift > 0):
        raise ValueError(f"min_lift must be a positive number, got {min_lift!r}")
    results = metrics.get("results") if isinstance(metrics, Mapping) else None
    if not isinstance(results, Mapping):
        raise QualityGateError("metrics have no 'results' mapping")
    key = f"recall@{int(k)}"
    m, b = _metric(results, MODEL_KEY, key), _metric(results, BASELINE_KEY, key)
    lift = m / b if b > 0 else (math.inf if m > 0 else 0.0)
    passed = m > min_lift * b
    message = (f"{'PASS' if passed else 'FAIL'}: {MODEL_KEY} {key}={m:.4f} vs {BASELINE_KEY} {key}={b:.4f} "
               f"(lift {lift:.2f}x, required > {min_lift:.2f}x)")
    return {"check": "vs_popularity", "passed": passed, "model": m, "baseline": b, "lift": lift,
            "min_lift": float(min_lift), "k": int(k), "message": message}


# ---------------------------------------------------------------- 2. candidate vs served
def latest_versions(base_path: str, names: Sequence[str]) -> Dict[str, int]:
    """The newest complete version of each model under ``base_path`` (absent models left out), as the
    server discovers them (``serving.models.list_versions``) and judges them (the completion marker)."""
    from recsys import fileio
    from contracts import completion
    from serving.models import list_versions

    out = {}
    for name in names:
        d = fileio.join(base_path, name)
        if not fileio.isdir(d):
            continue
        for v, vdir in sorted(list_versions(d).items(), reverse=True):
            if completion.check(vdir, completion.file_sizes(vdir))[0] != "incomplete":
                out[name] = v
                break
    return out


def served_version(base_path: str, names: Sequence[str]) -> Optional[int]:
    """The served version of the judged models (the newest one the retrieval model has), if any."""
    if not base_path:
        return None
    versions = latest_versions(base_path, [n for n in names if n in JUDGED])
    return versions.get("retrieval", max(versions.values(), default=None))


def fresh_requests(version_dir: str, max_events: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """The eval split's raw queries + logged item (a deterministic sample of at most ``max_events``)."""
    from trainer.ranking_data import QUERY_RAW, read_events

    parts = [{k: b[k] for k in QUERY_RAW + ("item_id",)} for b in read_events(version_dir, "eval")]
    if not parts:
        raise QualityGateError(f"{version_dir} has no evaluation events to judge the candidate on")
    events = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(events["item_id"])
    if max_events and n > max_events:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_events, replace=False))
        events = {k: v[keep] for k, v in events.items()}
    return events


def _fit_history(values: np.ndarray, length: int) -> np.ndarray:
    """Left-pads or keeps the most recent ``length`` history entries (most recent is last)."""
    have = values.shape[1]
    if have >= length:
        return values[:, have - length:]
    pad = np.zeros((len(values), length - have), values.dtype) if values.dtype != object else \
        np.full((len(values), length - have), b"", object)
    return np.concatenate([pad, values], axis=1)


def answer(model_dir: str, events: Dict[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Item ids the SavedModel's serving_default returns for every event's raw query ([n, K] bytes)."""
    import tensorflow as tf

    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    inputs = {}
    for key, spec in specs.items():
        v = events[key]
        if spec.shape.rank == 2:
            v = _fit_history(v, int(spec.shape[1]))
        inputs[key] = v
    out = []
    for s in range(0, len(events["item_id"]), batch_size):
        res = fn(**{k: tf.constant(v[s:s + batch_size], specs[k].dtype) for k, v in inputs.items()})
        out.append(res["item_ids"].numpy())
    return np.concatenate(out)


def per_event(item_ids: np.ndarray, events: Dict[str, np.ndarray], metric: str, k: int) -> np.ndarray:
    """recall@k / nDCG@k per event after removing the request's history items from the answer."""
    hist, target = events["history_item_ids"], events["item_id"]
    out = np.zeros(len(target))
    for i, row in enumerate(item_ids):
        seen = set(hist[i].tolist())
        ranked = [x for x in row.tolist() if x not in seen and x != b""][:k]
        if target[i] in ranked:
            r = ranked.index(target[i])
            out[i] = 1.0 if metric == "recall" else 1.0 / math.log2(r + 2)
    return out


def compare(exported, base_path: str, served: int, events: Dict[str, np.ndarray], gate) -> Dict[str, Any]:
    """Candidate vs served on the same events, per judged model both have."""
    from recsys import fileio
    from recsys.artifacts import join
    from trainer.baselines import bootstrap_lead

    out = {}
    for name, metric in JUDGED.items():
        served_dir = join(base_path, name, str(served))
        if name not in exported.names or not fileio.exists(served_dir):
            continue
        metric_name, k = ("recall", int(gate.k)) if metric == "recall" else ("ndcg", 10)
        cand = per_event(answer(exported.model_dir(name), events), events, metric_name, k)
        try:
            old = per_event(answer(served_dir, events), events, metric_name, k)
        except Exception as e:  # noqa: BLE001 - a served version we cannot call cannot block a candidate
            out[name] = {"metric": f"{metric_name}@{k}", "served_error": f"{type(e).__name__}: {e}"}
            continue
        lead = bootstrap_lead(cand, old, events["user_id"], n_boot=int(gate.bootstrap), relative=False)
        c, o = float(cand.mean()), float(old.mean())
        passed = c >= o * (1.0 - float(gate.tolerance))
        out[name] = {"metric": f"{metric_name}@{k}", "candidate": c, "served": o, "difference": lead,
                     "passed": passed, "n_events": int(len(cand))}
    return out


def decide(exported, pre, base_path: str, served: Optional[int], gate,
           offline: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The blessing record: ``blessed``, a one-line ``message`` and every check's figures."""
    checks: Dict[str, Any] = {}
    reasons = []
    if offline is not None:
        try:
            checks["vs_popularity"] = check_vs_popularity(offline, gate.min_lift, gate.k)
        except QualityGateError as e:
            checks["vs_popularity"] = {"passed": False, "message": f"FAIL: {e}"}
        if not checks["vs_popularity"]["passed"]:
            reasons.append(checks["vs_popularity"]["message"])
    events = fresh_requests(pre.uri, int(gate.max_events))
    try:
        if served is not None:
            checks["vs_served"] = compare(exported, base_path, served, events, gate)
            for name, r in checks["vs_served"].items():
                if r.get("passed") is False:
                    reasons.append(f"{name} {r['metric']} {r['candidate']:.4f} < served v{served} "
                                   f"{r['served']:.4f} by more than {gate.tolerance:.0%}")
        else:  # nothing served: the candidate must still answer real requests
            for name in JUDGED:
                if name in exported.names:
                    answer(exported.model_dir(name), {k: v[:8] for k, v in events.items()})
    except Exception as e:  # noqa: BLE001 - a candidate that cannot answer is never blessed
        reasons.append(f"candidate failed on fresh requests: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    blessed = not reasons
    against = f"served v{served}" if served is not None else "nothing served yet"
    summary = "; ".join(f"{n} {r['metric']} {r['candidate']:.4f} vs {r['served']:.4f}"
                        for n, r in checks.get("vs_served", {}).items() if "candidate" in r)
    message = (f"BLESSED ({against}{': ' + summary if summary else ''})" if blessed
               else f"NOT BLESSED ({against}): " + "; ".join(reasons))
    return {"blessed": blessed, "message": message, "served_version": served, "checks": checks,
            "n_events": int(len(events["item_id"])), "tolerance": float(gate.tolerance)}
