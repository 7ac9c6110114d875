"""Exploration at re-ranking: which of the top-N scored candidates are shown, and with what propensity.

Why: a recommender that always shows its current best guess only ever learns about what it
already shows (the feedback loop narrows the catalogue). An exploration policy shows other
candidates some of the time and logs, for every shown item, the probability that the policy put
that item at that position -- what off-policy evaluation (recsys/off_policy.py) needs to estimate
another policy's CTR from these logs.

Policies (``ExplorationConfig.policy``), over candidates in their scored order:

* ``none`` -- greedy: the k best scores (stable: ties keep the candidate order). Propensity 1.
* ``epsilon_greedy`` -- with probability 1 - epsilon the greedy list, with probability epsilon a
  uniformly random ordered k-subset of the N candidates. So the item-position marginal is exact:
  P(item i at position p) = (1 - epsilon) * [greedy puts i at p] + epsilon / N, > 0 for every
  candidate at every position (full support, which an unbiased IPS estimate needs).
* ``thompson`` -- Beta-Bernoulli Thompson sampling: each candidate's click rate per examination is
  drawn from its Beta posterior (``BetaPosteriors``) and the k largest draws are shown (optionally
  ranked by a fixed per-candidate offset + logit(draw): the ranker's personal score plus the item
  effect learned from feedback). Its marginals
  have no closed form; they are estimated from ``propensity_samples`` re-draws of the posterior
  (the shown draw included, so a shown item never gets propensity 0).

Served: the recommend SavedModel's ``explore`` signature runs ``epsilon_greedy`` inside the graph
(``trainer.export_recommend.epsilon_greedy_top_k``, epsilon and candidates baked per version), so it works on
stock TF Serving; its logged ``propensities`` are ``epsilon_greedy_marginals`` at the shown (item, position)
(tests/trainer/test_recommend.py checks them against this module). Thompson sampling stays offline here: it
needs the items' feedback posteriors, which no exported graph holds.

Settings come from ``recsys.config.ExplorationConfig``; ``settings_for`` layers a version's and a
request's overrides on top (e.g. the canary explores, stable does not; a request may opt out).
Every random choice takes a ``numpy.random.Generator``; ``request_rng`` derives one from the seed and
the request id, so a request is re-ranked the same way every time it is replayed.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from recsys.config import ExplorationConfig

POLICIES = ("none", "epsilon_greedy", "thompson")


# ---------------------------------------------------------------- settings
def check_settings(s: ExplorationConfig) -> ExplorationConfig:
    """``s`` when usable; otherwise a ValueError naming the bad setting in one line."""
    if s.policy not in POLICIES:
        raise ValueError(f"exploration policy {s.policy!r} is not one of {', '.join(POLICIES)}")
    if isinstance(s.epsilon, bool) or not isinstance(s.epsilon, (int, float)) or not 0.0 <= s.epsilon <= 1.0:
        raise ValueError(f"exploration epsilon must be a number in [0, 1], got {s.epsilon!r}")
    for name in ("candidates", "k", "propensity_samples"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"exploration {name} must be an integer >= 1, got {v!r}")
    if s.k > s.candidates:
        raise ValueError(f"exploration k={s.k} is more than the {s.candidates} candidates it chooses from")
    for name in ("prior_alpha", "prior_beta"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
            raise ValueError(f"exploration {name} must be a positive number, got {v!r}")
    if isinstance(s.seed, bool) or not isinstance(s.seed, int):
        raise ValueError(f"exploration seed must be an integer, got {s.seed!r}")
    return s


def settings_for(base: ExplorationConfig, version: Optional[str] = None,
                 per_version: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 request: Optional[Mapping[str, Any]] = None) -> ExplorationConfig:
    """The settings one request runs with: ``base`` <- ``per_version[version]`` <- ``request``.

    Overrides are {field: value} maps (e.g. {"policy": "epsilon_greedy", "epsilon": 0.2}); an unknown
    field or a bad value is a ValueError, so a typo in a request never silently means "no exploration".
    """
    known = {f.name for f in dataclasses.fields(ExplorationConfig)}
    out = dataclasses.replace(base)
    for source, overrides in (("version " + str(version), (per_version or {}).get(version) if version else None),
                              ("request", request)):
        for key, value in (overrides or {}).items():
            if key not in known:
                raise ValueError(f"{source}: unknown exploration setting {key!r} (known: {', '.join(sorted(known))})")
            setattr(out, key, value)
    return check_settings(out)


def request_rng(seed: int, request_id: str) -> np.random.Generator:
    """A generator fixed by (seed, request id): replaying a request re-ranks it identically."""
    digest = hashlib.sha256(f"{seed}:{request_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


# ---------------------------------------------------------------- what the policies learn from
class BetaPosteriors:
    """Per-item Beta posterior of P(click | examined): alpha = prior + clicks, beta = prior + (examinations - clicks).

    Examinations are position-debiased impressions (an impression at rank k counts its examination
    propensity, e.g. ``PositionBias.of(k)``), so an item is not penalised for being shown low.
    """

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 19.0):
        self.prior_alpha, self.prior_beta = float(prior_alpha), float(prior_beta)
        self.clicks: Dict[str, float] = {}
        self.examinations: Dict[str, float] = {}

    def update(self, item_ids: Iterable[str], examinations: Iterable[float], clicks: Iterable[float]) -> None:
        for item, e, c in zip(item_ids, examinations, clicks):
            self.examinations[item] = self.examinations.get(item, 0.0) + float(e)
            self.clicks[item] = self.clicks.get(item, 0.0) + float(c)

    def params(self, item_ids: Sequence[str]):
        c = np.array([self.clicks.get(i, 0.0) for i in item_ids])
        e = np.array([self.examinations.get(i, 0.0) for i in item_ids])
        # more clicks than (fractional) examinations happens by chance low in the list: no negative beta
        return self.prior_alpha + c, self.prior_beta + np.maximum(e - c, 0.0)

    def mean(self, item_ids: Sequence[str]) -> np.ndarray:
        a, b = self.params(item_ids)
        return a / (a + b)

    def sample(self, item_ids: Sequence[str], rng: np.random.Generator, size: Optional[int] = None) -> np.ndarray:
        """One draw per item ([n]), or ``size`` independent draws ([size, n])."""
        a, b = self.params(item_ids)
        return rng.beta(a, b, size=None if size is None else (size, len(a)))


# ---------------------------------------------------------------- the policies
@dataclasses.dataclass
class Shown:
    """A shown list: items in display order, their indices among the candidates, and the propensity
    P(this item at this position) under the policy that chose them (what the request log must keep)."""

    item_ids: List[str]
    indices: np.ndarray
    propensities: np.ndarray
    policy: str
    explored: bool = False   # epsilon_greedy: this request got the random list


def greedy_order(scores: Sequence[float]) -> np.ndarray:
    """Candidate indices by descending score; ties keep the candidate order."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def epsilon_greedy_marginals(scores: Sequence[float], k: int, epsilon: float) -> np.ndarray:
    """[N, k] matrix of P(candidate i at position p) under epsilon_greedy (each column sums to 1)."""
    n = len(scores)
    k = min(k, n)
    m = np.full((n, k), epsilon / n if n else 0.0)
    m[greedy_order(scores)[:k], np.arange(k)] += 1.0 - epsilon
    return m


def _top_k_rows(draws: np.ndarray, k: int) -> np.ndarray:
    """For each row of draws, the indices of its k largest values in descending order."""
    part = np.argpartition(-draws, k - 1, axis=1)[:, :k] if k < draws.shape[1] else \
        np.tile(np.arange(draws.shape[1]), (draws.shape[0], 1))
    vals = np.take_along_axis(draws, part, axis=1)
    return np.take_along_axis(part, np.argsort(-vals, axis=1, kind="stable"), axis=1)


def _counts(rankings: np.ndarray, n: int) -> np.ndarray:
    k = rankings.shape[1]
    m = np.zeros((n, k))
    np.add.at(m, (rankings, np.broadcast_to(np.arange(k), rankings.shape)), 1.0)
    return m


def rerank(item_ids: Sequence[str], scores: Sequence[float], settings: ExplorationConfig, rng: np.random.Generator,
           posteriors: Optional[BetaPosteriors] = None, offsets: Optional[Sequence[float]] = None) -> Shown:
    """The shown list for one request, with each shown item's propensity at its position.

    ``item_ids``/``scores``: the scored candidates (the first ``settings.candidates`` are used).
    ``posteriors`` is needed by ``thompson`` only; it ranks by ``offsets + logit(draw)`` (``offsets``:
    a fixed per-candidate score on the logit scale, e.g. the ranker's personal score; default 0).
    """
    check_settings(settings)
    n_all = len(item_ids)
    if len(scores) != n_all:
        raise ValueError(f"{n_all} candidates but {len(scores)} scores")
    ids = list(item_ids)[:settings.candidates]
    s = np.asarray(scores, dtype=float)[:settings.candidates]
    n, k = len(ids), min(settings.k, len(ids))
    if n == 0:
        return Shown([], np.zeros(0, np.int64), np.zeros(0), settings.policy)
    if settings.policy == "none":
        idx = greedy_order(s)[:k]
        return Shown([ids[i] for i in idx], idx, np.ones(k), "none")
    if settings.policy == "epsilon_greedy":
        explored = bool(rng.random() < settings.epsilon)
        idx = rng.permutation(n)[:k] if explored else greedy_order(s)[:k]
        marg = epsilon_greedy_marginals(s, k, settings.epsilon)
        return Shown([ids[i] for i in idx], idx, marg[idx, np.arange(k)], "epsilon_greedy", explored)
    if posteriors is None:
        raise ValueError("thompson sampling needs the items' posteriors (BetaPosteriors)")
    off = _offsets(offsets, n_all, settings.candidates)
    idx = _top_k_rows(off + _logit(posteriors.sample(ids, rng)[None, :]), k)[0]
    marg = thompson_marginals(ids, k, posteriors, rng, settings.propensity_samples, shown=idx, offsets=off)
    return Shown([ids[i] for i in idx], idx, marg[idx, np.arange(k)], "thompson")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _offsets(offsets: Optional[Sequence[float]], n_all: int, n: int) -> np.ndarray:
    if offsets is None:
        return np.zeros(min(n, n_all))
    if len(offsets) != n_all:
        raise ValueError(f"{n_all} candidates but {len(offsets)} offsets")
    return np.asarray(offsets, dtype=float)[:n]


def thompson_marginals(item_ids: Sequence[str], k: int, posteriors: BetaPosteriors, rng: np.random.Generator,
                       samples: int, shown: Optional[np.ndarray] = None,
                       offsets: Optional[np.ndarray] = None) -> np.ndarray:
    """[N, k] Monte Carlo estimate of P(candidate i at position p) under Thompson sampling
    (``samples`` re-draws, plus the ``shown`` ranking when given)."""
    n = len(item_ids)
    k = min(k, n)
    off = np.zeros(n) if offsets is None else np.asarray(offsets, dtype=float)
    rankings = _top_k_rows(off + _logit(posteriors.sample(item_ids, rng, size=samples)), k)
    if shown is not None:
        rankings = np.vstack([rankings, np.asarray(shown)[None, :k]])
    return _counts(rankings, n) / len(rankings)


def marginals(item_ids: Sequence[str], scores: Sequence[float], settings: ExplorationConfig,
              rng: Optional[np.random.Generator] = None, posteriors: Optional[BetaPosteriors] = None,
              offsets: Optional[Sequence[float]] = None) -> np.ndarray:
    """[N, k] matrix P(candidate i at position p) of a policy: a target policy's side of an IPS weight."""
    check_settings(settings)
    s = np.asarray(scores, dtype=float)[:settings.candidates]
    ids = list(item_ids)[:settings.candidates]
    k = min(settings.k, len(ids))
    if settings.policy in ("none", "epsilon_greedy"):
        return epsilon_greedy_marginals(s, k, settings.epsilon if settings.policy == "epsilon_greedy" else 0.0)
    if posteriors is None or rng is None:
        raise ValueError("thompson marginals need the items' posteriors and a random generator")
    return thompson_marginals(ids, k, posteriors, rng, settings.propensity_samples,
                              offsets=_offsets(offsets, len(item_ids), settings.candidates))
