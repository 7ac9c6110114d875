"""Ranking data: (query, candidate) pairs drawn from the retrieval stage's candidates.

A re-ranker only ever sees what retrieval hands it, so it is trained on exactly that --
and on candidates that look like serving time. A retriever scoring events it was trained
on ranks their items far too well (the logged item is in its top-100 for most train events
but far fewer eval events), and a ranker trained on such lists learns "trust retrieval".
So by default (``ranking.candidates = "out_of_fold"``, see ``trainer.train_ranking``) the
candidates for the ranker's train events (the latest slice of the train split) come from a
retriever trained only on the events before that slice.

For every such event the retriever returns its top-N with the protocol's exclusions (every
item the user had strictly before the event; re-consumption events are skipped). Events
whose logged item is in that list give one positive row (the logged item) and ``negatives``
rows sampled from the rest of the list, each with the retrieval features the ranker gets at
serving time (source, 1-based rank, score).

Every row is a raw request (the event's raw query features, which TFT passes through,
plus the candidate's raw item features from the catalogue) pushed through the same TFT
layer that the exported ``ranking``/``recommend`` models use, so pair features such as
freshness (item age at *this* event) and user-country x genre are computed by the graph
that serves, never re-implemented.

Evaluation (``build_eval_set``): each eval event's retrieval top-N with the exclusions of
``trainer.evaluate_retrieval.eval_queries`` (same split, same candidates for every
ranker, the GBDT and retrieval-only), plus the logged item's own row for RMSE.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.schema import RANKER_INPUTS as MODEL_INPUTS
from preprocessing.schema import RANKER_TRANSFORMED_INPUTS as TRANSFORMED_INPUTS
from preprocessing.schema import T
from preprocessing.utf8 import to_str
from trainer import baselines, data, evaluation
from trainer import evaluate_retrieval as er

SOURCE = "scann"  # what the serving retrieval stage calls itself (exact offline, ScaNN online)


@dataclasses.dataclass
class Pairs:
    """Rows of (event, candidate): model inputs, multi-task labels and bookkeeping."""

    features: Dict[str, np.ndarray]   # MODEL_INPUTS, one row per pair
    engagement: np.ndarray            # [n] 1 = the user engaged with this candidate
    engagement_weight: np.ndarray     # [n] 0 = rating-only row (logged item outside retrieval's list)
    rating: np.ndarray                # [n] explicit rating where observed, else 0
    rating_weight: np.ndarray         # [n] 1 where the rating is observed (positives with a rating)
    event: np.ndarray                 # [n] event number within the split
    item: np.ndarray                  # [n] catalogue index of the candidate
    positive: np.ndarray              # [n] the logged item of the event

    def __len__(self) -> int:
        return len(self.item)

    def labels(self) -> Dict[str, np.ndarray]:
        return {"engagement": self.engagement, "engagement_weight": self.engagement_weight, "rating": self.rating,
                "rating_weight": self.rating_weight}

    def subset(self, mask: np.ndarray) -> "Pairs":
        return Pairs({k: v[mask] for k, v in self.features.items()}, self.engagement[mask],
                     self.engagement_weight[mask], self.rating[mask], self.rating_weight[mask], self.event[mask],
                     self.item[mask], self.positive[mask])

    def user_balanced(self, power: float) -> "Pairs":
        """The same rows with each event's weights scaled by (its user's events here) ** -power, normalised to a mean of
        1 over events (the loss keeps its scale): heavy users stop dominating what the ranker learns. The user is the
        rows' transformed user index."""
        if not power or not len(self):
            return self
        _, first, row_event = np.unique(self.event, return_index=True, return_inverse=True)
        users = np.asarray(self.features[T.USER_IDX]).reshape(-1)[first]       # one per event
        _, event_user = np.unique(users, return_inverse=True)
        per_user = np.bincount(event_user).astype(np.float64)
        event_w = per_user[event_user] ** -float(power)
        row_w = (event_w / event_w.mean())[row_event.reshape(-1)].astype(np.float32)
        return dataclasses.replace(self, engagement_weight=self.engagement_weight * row_w,
                                   rating_weight=self.rating_weight * row_w)

    def dataset(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """Batches of rows (shuffled row by row). Row numbers go through tf.data and each batch is one gather per
        column: slicing the columns element by element cost 13x more (5.8 s an epoch of 180K pairs on 2 cores)."""
        return self._gathered(tf.data.Dataset.range(len(self)), batch_size, shuffle, seed, lambda rows: (rows, {}))

    def _gathered(self, units: tf.data.Dataset, batch_size: int, shuffle: bool, seed: int,
                  rows_of: Callable) -> tf.data.Dataset:
        """``units`` (rows or events) shuffled and batched; ``rows_of(batch)`` -> (row numbers, extra labels)."""
        features = {k: tf.constant(v) for k, v in self.features.items()}
        labels = {k: tf.constant(v) for k, v in self.labels().items()}

        def gather(batch):
            take, extra = rows_of(batch)
            return ({k: tf.gather(v, take) for k, v in features.items()},
                    {**{k: tf.gather(v, take) for k, v in labels.items()}, **extra})

        if shuffle:
            units = units.shuffle(int(units.cardinality()), seed=seed, reshuffle_each_iteration=True)
        return data.without_autotune_model(units.batch(batch_size).map(gather).prefetch(tf.data.AUTOTUNE))

    def batches(self, batch_size: int = 8192) -> Iterator[Dict[str, tf.Tensor]]:
        for s in range(0, len(self), batch_size):
            yield {k: tf.constant(v[s:s + batch_size]) for k, v in self.features.items()}

    def groups(self) -> np.ndarray:
        """[events, most rows of one event] row numbers of each event's rows (-1 pads), events in order."""
        order = np.argsort(self.event, kind="stable")
        ev = self.event[order]
        starts = np.flatnonzero(np.r_[True, ev[1:] != ev[:-1]]) if len(ev) else np.zeros(0, np.int64)
        counts = np.diff(np.r_[starts, len(ev)])
        out = np.full((len(starts), int(counts.max()) if len(counts) else 1), -1, np.int64)
        out[np.repeat(np.arange(len(starts)), counts), np.arange(len(ev)) - np.repeat(starts, counts)] = order
        return out

    def grouped_dataset(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """Batches of whole events (about ``batch_size`` rows each), for a listwise loss: every row of an event is in
        the same batch, and ``labels["group"]`` numbers the events within the batch. Shuffled event by event."""
        groups = self.groups()

        def rows_of(batch):   # [events, width] row numbers, -1 pads -> the real rows and their event's number
            flat = tf.reshape(batch, [-1])
            real = flat >= 0
            event = tf.repeat(tf.range(tf.shape(batch)[0]), tf.shape(batch)[1])
            return tf.boolean_mask(flat, real), {"group": tf.boolean_mask(event, real)}

        return self._gathered(tf.data.Dataset.from_tensor_slices(groups), max(1, batch_size // groups.shape[1]),
                              shuffle, seed, rows_of)


class LazyPairs(Pairs):
    """Pairs whose features are built when read, batch by batch: an eval set of millions of (event, candidate)
    rows would otherwise hold them all at once (MovieLens-1M-sized data: 9.9M rows, ~6 GB of features). Each
    scorer rebuilds its batches through the TFT layer (about 5 s per million rows); ``features`` builds every
    row (only the GBDT baseline asks for that)."""

    def __init__(self, build: Callable[[int, int], Dict[str, np.ndarray]], *labels: np.ndarray):
        self._build = build
        super().__init__({}, *labels)

    @property
    def features(self) -> Dict[str, np.ndarray]:
        return self._build(0, len(self))

    @features.setter
    def features(self, value: Dict[str, np.ndarray]) -> None:
        if value:
            raise AttributeError("LazyPairs builds its own features")

    def __repr__(self) -> str:
        return f"LazyPairs({len(self)} rows)"

    def batches(self, batch_size: int = 8192) -> Iterator[Dict[str, tf.Tensor]]:
        for s in range(0, len(self), batch_size):
            yield {k: tf.constant(v) for k, v in self._build(s, min(s + batch_size, len(self))).items()}


# eval sets up to this many rows keep their features in memory (ml-latest-small: ~1M rows, ~0.6 GB); larger
# ones build each scorer's batches when it reads them (LazyPairs)
EAGER_EVAL_ROWS = 2_000_000


@dataclasses.dataclass
class EvalSet:
    """Retrieval's top-N per eval event, as rows to re-rank, plus the logged items' rows for RMSE."""

    targets: np.ndarray               # [E] catalogue index of the logged item (-1 = not in catalogue)
    candidates: np.ndarray            # [E, N] retrieval's list, best first (-1 pad)
    retrieval_scores: np.ndarray      # [E, N]
    pairs: Pairs                      # one row per real candidate, in (event, position) order
    position: np.ndarray              # [n] position of each row in its event's list
    target_pairs: Pairs               # the logged item of every eval event with an observed rating
    users: np.ndarray                 # [E]
    query_raw: Dict[str, np.ndarray]  # raw query features per event (for explanations / requests)

    @property
    def n_queries(self) -> int:
        return len(self.targets)

    def rerank(self, scores: np.ndarray) -> np.ndarray:
        """Candidates re-ordered by ``scores`` (one per row of ``pairs``); ties keep retrieval order."""
        s = np.full(self.candidates.shape, -np.inf)
        s[self.pairs.event, self.position] = scores
        order = np.argsort(-s, axis=1, kind="stable")
        out = np.take_along_axis(self.candidates, order, 1)
        out[np.take_along_axis(s, order, 1) == -np.inf] = -1
        return out


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- reading events
QUERY_RAW = tuple(schema.QUERY_FEATURES)


def read_events(version_dir: str, split: str, batch_size: int = 1024) -> Iterator[Dict[str, np.ndarray]]:
    """Batches of one split as numpy: raw query features (TFT passes them through), labels, valid flag."""
    for batch in data.dataset(version_dir, split, batch_size):
        out = {k: batch[k].numpy() for k in QUERY_RAW + ("item_id", "rating", "click")}
        out["valid"] = data._is_valid(batch).numpy()  # the train-split slice early stopping uses
        out["_batch"] = batch
        yield out


def _concat_dicts(parts: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


# ---------------------------------------------------------------- pair features through the TFT graph
def transform_pairs(tft_layer, query_raw: Dict[str, np.ndarray], event: np.ndarray, items: np.ndarray,
                    catalogue: data.Catalogue, rank: np.ndarray, score: np.ndarray, source: str = SOURCE,
                    chunk: int = 16384) -> Dict[str, np.ndarray]:
    """MODEL_INPUTS for rows (query_raw[event[r]], catalogue item items[r]) via the TFT layer."""
    parts: List[Dict[str, np.ndarray]] = []
    for s in range(0, len(event), chunk):
        ev, it = event[s:s + chunk], items[s:s + chunk]
        raw = {k: tf.constant(query_raw[k][ev]) for k in QUERY_RAW}
        raw.update({k: tf.constant(catalogue.raw[k][it]) for k in schema.CANDIDATE_FEATURES})
        out = data.transform(tft_layer, raw)
        parts.append({k: out[k].numpy() for k in TRANSFORMED_INPUTS})
    feats = _concat_dicts(parts) if parts else {k: np.empty(0) for k in TRANSFORMED_INPUTS}
    feats["candidate_source"] = np.full(len(event), source.encode(), dtype=object)
    feats["retrieval_rank"] = np.asarray(rank, np.int64)
    feats["retrieval_score"] = np.asarray(score, np.float32)
    assert set(feats) == set(MODEL_INPUTS)
    return feats


def _engagement(is_pos: np.ndarray, click: np.ndarray, label: str) -> np.ndarray:
    if label == "consumed":
        return is_pos.astype(np.float32)
    if label == "click":
        return (is_pos & (click > 0)).astype(np.float32)
    raise ValueError(f"ranking.engagement_label must be 'consumed' or 'click', got {label!r}")


def _masked_scores(q: np.ndarray, item_vectors: np.ndarray, exclude: List[np.ndarray]) -> np.ndarray:
    s = evaluation.dot_scores(q, item_vectors)
    rows = np.repeat(np.arange(len(s)), [len(e) for e in exclude])
    cols = np.concatenate(exclude) if exclude else np.empty(0, np.int64)
    s[rows, cols.astype(np.int64)] = -np.inf
    return s


# ---------------------------------------------------------------- training pairs
def build_train_pairs(version_dir: str, query_fn: Callable, item_vectors: np.ndarray, catalogue: data.Catalogue,
                      stats: data.TrainStats, tft_layer, rcfg, seed: int = 0, since_ts: Optional[int] = None,
                      ) -> Tuple[Pairs, Pairs, Dict]:
    """(train pairs, valid pairs, info) from the train split; valid = the train slice held out for early stopping.

    ``stats`` must hold every train event (the exclusions are the user's items strictly before
    each event); ``since_ts`` keeps only events at or after that time (the out-of-fold slice).

    ``query_fn`` maps a batch of transformed features to query vectors (as in evaluate_retrieval).
    Negatives are drawn without replacement from the retrieved list with probability ~
    rank^-negative_rank_power (0 = uniform): the top of the list is where re-ranking matters.
    Logged items outside the list still teach the rating head (rows with engagement_weight 0).
    """
    t0 = time.time()
    rng = np.random.default_rng(seed)
    index = catalogue.index()
    n_cand = min(rcfg.train_candidates, catalogue.size)
    n_neg = min(rcfg.negatives, n_cand - 1)
    power = float(getattr(rcfg, "negative_rank_power", 0.0))
    keep_p = min(1.0, rcfg.max_train_events / max(stats.n_examples, 1)) if rcfg.max_train_events else 1.0
    queries: List[Dict[str, np.ndarray]] = []
    keys = ("event", "item", "rank", "score", "pos", "in_list", "rating", "click")
    rows: Dict[str, List[np.ndarray]] = {k: [] for k in keys}
    valid_event: List[np.ndarray] = []
    n_events = n_seen = n_listed = 0
    position_weight = (np.arange(1, n_cand + 1, dtype=np.float64)) ** -power
    priors = baselines.PriorIndex(stats.users, stats.items, stats.times)
    if since_ts is not None:  # sample among the slice's events only
        keep_p = min(1.0, rcfg.max_train_events / max(int((stats.times >= since_ts).sum()), 1)) \
            if rcfg.max_train_events else 1.0
    n_repeat = 0
    for b in read_events(version_dir, "train"):
        take = rng.random(len(b["item_id"])) < keep_p
        if since_ts is not None:
            take &= b[T.TIMESTAMP] >= since_ts
        if not take.any():
            continue
        kept = np.flatnonzero(take)  # one gather per feature: eager boolean_mask is ~20 ops, 10x slower here
        transformed = {k: tf.gather(v, kept) for k, v in b.pop("_batch").items()}
        b = {k: v[take] for k, v in b.items()}
        n_seen += int(take.sum())
        users = to_str(b["user_id"])
        target = np.array([index.get(i, -1) for i in to_str(b["item_id"])], np.int64)
        q = np.asarray(query_fn(transformed))
        exclude = priors.before(users, b[T.TIMESTAMP])
        repeat = np.array([t >= 0 and t in e for t, e in zip(target, exclude)], bool)
        n_repeat += int(repeat.sum())
        s = _masked_scores(q, item_vectors, exclude)
        t_score = s[np.arange(len(s)), np.maximum(target, 0)]
        rank = (s > t_score[:, None]).sum(1) + 1
        known = (target >= 0) & np.isfinite(t_score) & ~repeat
        listed = known & (rank <= n_cand)
        rated = known & ~listed & (b["rating"] > 0)            # rating-only rows
        ev_ok = listed | rated
        if not ev_ok.any():
            continue
        ev_num = np.full(len(s), -1, np.int64)
        ev_num[ev_ok] = n_events + np.arange(int(ev_ok.sum()))
        # positives (and rating-only rows)
        rows["event"].append(ev_num[ev_ok])
        rows["item"].append(target[ev_ok])
        rows["rank"].append(rank[ev_ok])
        rows["score"].append(t_score[ev_ok])
        rows["pos"].append(np.ones(int(ev_ok.sum()), bool))
        rows["in_list"].append(listed[ev_ok])
        rows["rating"].append(b["rating"][ev_ok])
        rows["click"].append(b["click"][ev_ok])
        if listed.any():
            top = evaluation.top_k_from_scores(s[listed], n_cand)              # [e, N]
            # weighted sampling without replacement (Efraimidis-Spirakis): largest u^(1/w)
            key = np.log(rng.random(top.shape)) / position_weight[None, :top.shape[1]]
            key[(top == target[listed][:, None]) | (top < 0)] = -np.inf
            pick = np.argsort(-key, axis=1)[:, :n_neg]                         # positions of negatives
            neg_items = np.take_along_axis(top, pick, 1)
            good = (neg_items >= 0) & np.isfinite(np.take_along_axis(key, pick, 1))
            neg_scores = np.take_along_axis(s[listed], np.maximum(neg_items, 0), 1)
            n_good = int(good.sum())
            rows["event"].append(np.repeat(ev_num[listed], n_neg)[good.ravel()])
            rows["item"].append(neg_items[good])
            rows["rank"].append((pick + 1)[good])
            rows["score"].append(neg_scores[good])
            rows["pos"].append(np.zeros(n_good, bool))
            rows["in_list"].append(np.ones(n_good, bool))
            rows["rating"].append(np.zeros(n_good, np.float32))
            rows["click"].append(np.zeros(n_good, np.float32))
        queries.append({k: b[k][ev_ok] for k in QUERY_RAW})
        valid_event.append(b["valid"][ev_ok])
        n_events += int(ev_ok.sum())
        n_listed += int(listed.sum())
    if not n_listed:
        raise ValueError("no train event has its item in retrieval's top-N: is the retrieval model trained?")
    r = {k: np.concatenate(v) for k, v in rows.items()}
    order = np.lexsort((~r["pos"], r["event"]))  # event by event, positive first
    r = {k: v[order] for k, v in r.items()}
    query_raw = _concat_dicts(queries)
    feats = transform_pairs(tft_layer, query_raw, r["event"], r["item"], catalogue, r["rank"], r["score"])
    rating = r["rating"].astype(np.float32)
    pairs = Pairs(feats, _engagement(r["pos"], r["click"], rcfg.engagement_label), r["in_list"].astype(np.float32),
                  rating, ((rating > 0) & r["pos"]).astype(np.float32), r["event"], r["item"], r["pos"])
    is_valid = np.concatenate(valid_event)[r["event"]]
    info = {"train_events_read": n_seen, "events_with_positive_in_top_n": n_listed, "repeat_events_skipped": n_repeat,
            "positive_in_top_n_rate": n_listed / max(n_seen, 1), "rating_only_rows": n_events - n_listed,
            "rows": len(pairs), "candidates": n_cand, "negatives": n_neg, "negative_rank_power": power,
            "seconds": round(time.time() - t0, 1)}
    log(f"[ranking-data] {n_listed}/{n_seen} train events have their item in retrieval's top-{n_cand}; "
        f"{len(pairs)} pairs ({n_neg} negatives each, {n_events - n_listed} rating-only) in {info['seconds']}s")
    return pairs.subset(~is_valid), pairs.subset(is_valid), info


# ---------------------------------------------------------------- evaluation set
def build_eval_set(version_dir: str, query_fn: Callable, item_vectors: np.ndarray, catalogue: data.Catalogue,
                   stats: data.TrainStats, tft_layer, cfg, n_candidates: Optional[int] = None,
                   max_queries: Optional[int] = None) -> EvalSet:
    """Retrieval top-N for every eval event (the retrieval evaluation's exclusions), as rows to re-rank."""
    t0 = time.time()
    rcfg = cfg.ranking
    n_cand = min(n_candidates or rcfg.eval_candidates, catalogue.size)
    max_q = rcfg.eval_max_queries if max_queries is None else max_queries
    q, targets, exclude, users = er.eval_queries(version_dir, query_fn, catalogue, stats, cfg.eval.exclude_seen,
                                                 max_q)
    raw_parts = []
    n = 0
    for b in read_events(version_dir, "eval"):
        raw_parts.append({k: b[k] for k in QUERY_RAW + ("rating", "click")})
        n += len(b["item_id"])
        if n >= len(q):
            break
    raw = {k: v[:len(q)] for k, v in _concat_dicts(raw_parts).items()}
    assert (to_str(raw["user_id"]) == users).all(), "eval events out of order"
    exclude = exclude if exclude is not None else [np.empty(0, np.int64)] * len(q)
    cands, cscores, t_rank, t_score = [], [], [], []
    for s0 in range(0, len(q), 1024):
        s = _masked_scores(q[s0:s0 + 1024], item_vectors, exclude[s0:s0 + 1024])
        top = evaluation.top_k_from_scores(s, n_cand)
        cands.append(top)
        cscores.append(np.where(top >= 0, np.take_along_axis(s, np.maximum(top, 0), 1), -np.inf))
        t = targets[s0:s0 + 1024]
        ts = s[np.arange(len(s)), np.maximum(t, 0)]
        t_score.append(np.where(t >= 0, ts, 0.0))
        t_rank.append(np.where(t >= 0, (s > ts[:, None]).sum(1) + 1, 0))
    cand, cscore = np.concatenate(cands), np.concatenate(cscores)
    ev, pos = np.nonzero(cand >= 0)
    items = cand[ev, pos]
    is_pos = items == targets[ev]
    rating = np.where(is_pos, raw["rating"][ev], 0.0).astype(np.float32)
    labels = (_engagement(is_pos, raw["click"][ev], rcfg.engagement_label), np.ones(len(ev), np.float32), rating,
              ((rating > 0) & is_pos).astype(np.float32), ev, items, is_pos)
    score = cscore[ev, pos]

    def build(s0: int, s1: int) -> Dict[str, np.ndarray]:
        return transform_pairs(tft_layer, raw, ev[s0:s1], items[s0:s1], catalogue, pos[s0:s1] + 1, score[s0:s1])

    pairs = Pairs(build(0, len(ev)), *labels) if len(ev) <= EAGER_EVAL_ROWS else LazyPairs(build, *labels)
    # the logged item of every event with an observed rating (RMSE), its rank clipped to the list length
    rated = np.flatnonzero((targets >= 0) & (raw["rating"] > 0))
    tr = np.minimum(np.concatenate(t_rank)[rated], n_cand)
    tfeats = transform_pairs(tft_layer, raw, rated, targets[rated], catalogue, tr, np.concatenate(t_score)[rated])
    ones = np.ones(len(rated), np.float32)
    target_pairs = Pairs(tfeats, ones, np.zeros(len(rated), np.float32), raw["rating"][rated].astype(np.float32),
                         ones, rated, targets[rated],
                         np.ones(len(rated), bool))
    lazy = "; features built batch by batch when scored" if isinstance(pairs, LazyPairs) else ""
    log(f"[ranking-data] eval: {len(q)} queries x top-{n_cand} = {len(pairs)} pairs, "
        f"{int(is_pos.sum())} with the logged item in the list, {len(rated)} rated; {time.time() - t0:.1f}s{lazy}")
    return EvalSet(targets, cand, cscore, pairs, pos, target_pairs, users, raw)


def rating_mean(pairs: Pairs) -> float:
    w = pairs.rating_weight > 0
    return float(pairs.rating[w].mean()) if w.any() else 3.5
