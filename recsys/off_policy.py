"""Off-policy evaluation: a new policy's CTR estimated from impressions logged under another policy.

Why: the logs of an exploring policy (recsys/exploration.py) keep, for each shown item, the
probability ``p_log`` that the logging policy put it at that position. Under the item-position
click model (P(click) = examination(position) x relevance(user, item)), a target policy that puts
the same item at the same position with probability ``p_target`` expects ``click * p_target / p_log``
clicks there, so the target's CTR is estimated without serving it:

* IPS: mean over logged impressions of click * w, w = p_target / p_log. Unbiased when p_log > 0
  wherever p_target > 0 (epsilon-greedy's full support).
* SNIPS: per position, sum(click * w) / sum(w) (self-normalised: lower variance, slightly biased),
  averaged over positions weighted by their impressions.

Intervals: percentile bootstrap over users (the unit traffic is split by: one user's impressions
are not independent draws). Diagnostics: the effective sample size (sum w)^2 / sum w^2.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np

from preprocessing.utf8 import to_str


@dataclasses.dataclass
class Estimate:
    estimator: str
    value: float
    interval: Sequence[float]
    level: float
    n_boot: int
    users: int
    impressions: int
    effective_sample_size: float
    max_weight: float

    def contains(self, value: float) -> bool:
        return self.interval[0] <= value <= self.interval[1]

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _tables(users, positions, clicks, p_log, p_target, clip):
    """Per (user, position): sums of click*w, w and impressions; plus the weights."""
    n = len(users)
    arrays = [np.asarray(a, dtype=float) for a in (positions, clicks, p_log, p_target)]
    if not n:
        raise ValueError("off-policy estimate needs at least one logged impression")
    if any(len(a) != n for a in arrays):
        raise ValueError("users, positions, clicks and propensities must have the same length, got "
                         + ", ".join(str(len(a)) for a in [users] + arrays))
    positions, clicks, p_log, p_target = arrays
    if not np.all(np.isfinite(p_log)) or np.any(p_log <= 0) or np.any(p_log > 1):
        raise ValueError("logging propensities must be in (0, 1]: an impression the logging policy could not show "
                         "cannot be re-weighted")
    if not np.all(np.isfinite(p_target)) or np.any(p_target < 0) or np.any(p_target > 1):
        raise ValueError("target propensities must be in [0, 1]")
    if not np.all(np.isfinite(clicks)) or np.any(clicks < 0):
        raise ValueError("clicks must be finite and >= 0")
    if clip is not None and not clip > 0:
        raise ValueError(f"weight clip must be positive, got {clip}")
    w = p_target / p_log
    if clip is not None:
        w = np.minimum(w, clip)
    user_ids, u = np.unique(to_str(users), return_inverse=True)
    pos_ids, p = np.unique(positions, return_inverse=True)
    shape = (len(user_ids), len(pos_ids))
    cw, ws, imps = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    np.add.at(cw, (u, p), clicks * w)
    np.add.at(ws, (u, p), w)
    np.add.at(imps, (u, p), 1.0)
    return cw, ws, imps, w


def _snips_value(cw: np.ndarray, ws: np.ndarray, imps: np.ndarray) -> np.ndarray:
    """SNIPS from per-position sums (last axis: positions; leading axes: bootstrap replicates).
    A position where no logged item has target weight contributes 0 (the target never shows it there)."""
    per_pos = np.divide(cw, ws, out=np.zeros_like(cw), where=ws > 0)
    return (per_pos * imps).sum(-1) / imps.sum(-1)


def _estimate(name, users, positions, clicks, p_log, p_target, n_boot, seed, level, clip) -> Estimate:
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    cw, ws, imps, w = _tables(users, positions, clicks, p_log, p_target, clip)
    n_users = cw.shape[0]
    counts = np.random.default_rng(seed).multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_boot)
    if name == "ips":
        value = cw.sum() / imps.sum()
        boots = (counts @ cw.sum(1)) / (counts @ imps.sum(1))
    else:
        value = float(_snips_value(cw.sum(0), ws.sum(0), imps.sum(0)))
        boots = _snips_value(counts @ cw, counts @ ws, counts @ imps)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    ess = float(w.sum() ** 2 / (w ** 2).sum()) if (w > 0).any() else 0.0
    return Estimate(name, float(value), [float(lo), float(hi)], level, n_boot, n_users, len(w), ess, float(w.max()))


def ips(users: Sequence[str], positions: Sequence[int], clicks: Sequence[float], p_log: Sequence[float],
        p_target: Sequence[float], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
        clip: Optional[float] = None) -> Estimate:
    """IPS: the target's CTR = mean over logged impressions of click * p_target / p_log (item-position model)."""
    return _estimate("ips", users, positions, clicks, p_log, p_target, n_boot, seed, level, clip)


def snips(users: Sequence[str], positions: Sequence[int], clicks: Sequence[float], p_log: Sequence[float],
          p_target: Sequence[float], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
          clip: Optional[float] = None) -> Estimate:
    """SNIPS: per position sum(click * w) / sum(w), w = p_target / p_log, averaged over positions by impressions."""
    return _estimate("snips", users, positions, clicks, p_log, p_target, n_boot, seed, level, clip)
