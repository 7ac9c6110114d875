"""The quality gate between training and push: plain functions, unit-tested without kfp.

The model's recall@K must beat the popularity baseline's recall@K (same split, same protocol,
both in the ``metrics.json`` that ``recsys.steps.evaluate`` writes at
``<run>/training/retrieval/metrics.json``) by the factor ``min_lift``: it passes only if ``model_recall > min_lift * popularity_recall``
(strictly, so a zero recall never passes).
Anything missing or malformed fails the gate: a model is pushed only on evidence.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, Mapping

MODEL_KEY = "two_tower"
BASELINE_KEY = "popularity"


class QualityGateError(RuntimeError):
    """The candidate model did not pass the gate; the push must not happen."""


@dataclasses.dataclass(frozen=True)
class GateResult:
    passed: bool
    model_recall: float
    baseline_recall: float
    lift: float
    min_lift: float
    k: int
    message: str

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _recall(results: Mapping[str, Any], name: str, key: str) -> float:
    try:
        value = float(results[name][key])
    except KeyError as e:
        raise QualityGateError(f"metrics have no results.{name}.{key} (missing {e})") from None
    except (TypeError, ValueError):
        raise QualityGateError(f"results.{name}.{key} is not a number: {results[name][key]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise QualityGateError(f"results.{name}.{key} is not a valid recall: {value!r}")
    return value


def check(metrics: Mapping[str, Any], min_lift: float = 1.1, k: int = 50, model: str = MODEL_KEY,
          baseline: str = BASELINE_KEY) -> GateResult:
    """Evaluates the gate on a parsed metrics.json; never raises for a *failing* model, only for bad input."""
    if not (isinstance(min_lift, (int, float)) and math.isfinite(min_lift) and min_lift > 0):
        raise ValueError(f"min_lift must be a positive number, got {min_lift!r}")
    results = metrics.get("results") if isinstance(metrics, Mapping) else None
    if not isinstance(results, Mapping):
        raise QualityGateError("metrics have no 'results' mapping")
    key = f"recall@{int(k)}"
    m, b = _recall(results, model, key), _recall(results, baseline, key)
    lift = m / b if b > 0 else (math.inf if m > 0 else 0.0)
    passed = m > min_lift * b
    verdict = "PASS" if passed else "FAIL"
    message = (f"quality gate {verdict}: {model} {key}={m:.4f} vs {baseline} {key}={b:.4f} "
               f"(lift {lift:.2f}x, required > {min_lift:.2f}x)")
    return GateResult(passed, m, b, lift, float(min_lift), int(k), message)


def check_file(path: str, min_lift: float = 1.1, k: int = 50) -> GateResult:
    """Reads a metrics.json (local path or bucket URI) and evaluates the gate."""
    if "://" in path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path) as f:
            text = f.read()
    else:
        with open(path) as f:
            text = f.read()
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as e:
        raise QualityGateError(f"{path} is not valid JSON: {e}") from None
    return check(metrics, min_lift=min_lift, k=k)


def enforce(path: str, min_lift: float = 1.1, k: int = 50) -> GateResult:
    """``check_file`` that raises ``QualityGateError`` when the model fails (this blocks the push)."""
    result = check_file(path, min_lift=min_lift, k=k)
    if not result.passed:
        raise QualityGateError(result.message)
    return result
