"""Offline top-k evaluation in pure NumPy: ranking, accuracy and beyond-accuracy metrics, protocols.

Kept free of model code and TensorFlow so every model (and every baseline) is scored by the
same few functions on the same protocol, and the metrics can be unit-tested by hand.

Representation: ``topk`` is an int array [n_queries, K] of item indices, best first, where -1
pads a short list and never counts as a hit. ``relevant`` is an int array [n_queries] (one
target per query, -1 = none), a 2-D int array padded with -1, or a list of iterables of item
indices. Queries without relevant items are left out of every mean; all-empty gives nan.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

PROTOCOLS = {
    "time_split_full": "time split: the latest events (by time) are the test set; each is ranked "
                       "against the full catalog with every item the user had strictly before the event "
                       "(train and eval period) excluded; re-consumption events are left out",
    "leave_one_out_full": "leave-one-out: each user's latest interaction is the test item, ranked "
                          "against the full catalog with the user's training items excluded",
    "tfrs_random_80_20": "the TensorFlow Recommenders tutorials' protocol: ratings split at random 80/20 "
                         "(seed 42); each test rating's item ranked against the full catalog with nothing "
                         "excluded (FactorizedTopK top-10/top-100 accuracy = recall@10/@100 here)",
    "sampled_1_99": "sampled: the test item is ranked among 99 sampled unseen negatives "
                    "(NCF, He et al. 2017) — for comparison with published numbers only",
}

_CHUNK = 1 << 22  # elements per temporary block: bounds memory for large catalogs


# ---------------------------------------------------------------- ranking
def _ragged(lists: Sequence[Any], n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Flattens n per-query id lists (None = empty) to (row, item) pairs for one vectorised scatter/lookup."""
    if len(lists) != n:
        raise ValueError(f"got {len(lists)} per-query lists for {n} queries")
    arrs = [np.asarray([] if e is None else e if isinstance(e, np.ndarray) else list(e), np.int64).ravel()
            for e in lists]
    return np.repeat(np.arange(n), [a.size for a in arrs]), np.concatenate(arrs or [np.empty(0, np.int64)])


def _mask_out(scores: np.ndarray, exclude: Sequence[Any]) -> None:
    """Sets scores[i, exclude[i]] = -inf in one scatter (ids outside the catalog are ignored)."""
    rows, cols = _ragged(exclude, len(scores))
    ok = (cols >= 0) & (cols < scores.shape[1])
    scores[rows[ok], cols[ok]] = -np.inf


def top_k_from_scores(scores: np.ndarray, k: int, exclude: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """[n, min(k, n_items)] indices by descending score; ties go to the lower index, -inf/NaN/excluded -> -1.

    argpartition keeps it O(n_items) per row; only rows whose k-th score is tied across the
    partition boundary get the (chunked) exact tie fix, so results never depend on partition order.
    """
    s = np.array(scores, dtype=np.result_type(np.asarray(scores).dtype, np.float32))
    if s.ndim != 2:
        raise ValueError(f"scores must be [n, n_items], got shape {s.shape}")
    n, m = s.shape
    kk = min(max(int(k), 0), m)
    if n == 0 or kk == 0:
        return np.empty((n, kk), np.int64)
    s[np.isnan(s)] = -np.inf
    if exclude is not None:
        _mask_out(s, exclude)
    if kk < m:
        part = np.argpartition(s, m - kk, axis=1)[:, m - kk:]
        top_vals = np.take_along_axis(s, part, 1)
        t = top_vals.min(1)
        n_tied = (s == t[:, None]).sum(1) - (top_vals == t[:, None]).sum(1)  # tied items left outside
        bad = np.flatnonzero((n_tied > 0) & (t > -np.inf))  # -inf ties become -1 anyway
        for rows in np.array_split(bad, max(1, -(-bad.size * m // _CHUNK))):
            sub, tc = s[rows], t[rows][:, None]
            eq, gt = sub == tc, sub > tc
            keep = gt | (eq & (np.cumsum(eq, 1, dtype=np.int32) <= kk - gt.sum(1, keepdims=True)))
            part[rows] = np.nonzero(keep)[1].reshape(rows.size, kk)
    else:
        part = np.tile(np.arange(m), (n, 1))
    part.sort(axis=1)  # ascending index, so the stable sort below breaks ties by lower index
    vals = np.take_along_axis(s, part, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    top = np.take_along_axis(part, order, 1).astype(np.int64)
    top[np.take_along_axis(vals, order, 1) == -np.inf] = -1
    return top


def dot_scores(query_vectors, item_vectors) -> np.ndarray:
    """[n, n_items] float32 dot products; an item with a NaN vector (left out of the index:
    trainer/unseen_items.py) scores -inf, so it is never a candidate and a target there is a miss."""
    s = (np.asarray(query_vectors) @ np.asarray(item_vectors).T).astype(np.float32)
    s[np.isnan(s)] = -np.inf
    return s


def full_ranking_topk(query_vectors, item_vectors, k: int, exclude=None, batch_size: int = 1024) -> np.ndarray:
    """Dot-product retrieval over the whole catalog, batch_size queries at a time (memory-bounded)."""
    q, items = np.asarray(query_vectors), np.asarray(item_vectors)
    out = [top_k_from_scores(q[i:i + batch_size] @ items.T, k,
                             None if exclude is None else exclude[i:i + batch_size])
           for i in range(0, len(q), batch_size)]
    return np.concatenate(out) if out else np.empty((0, min(k, len(items))), np.int64)


def popularity_topk(item_counts, n_queries: int, k: int, exclude=None) -> np.ndarray:
    """Most-popular baseline on the same protocol (same exclusion); ties go to the lower index."""
    counts = np.asarray(item_counts, np.float64)
    m = counts.size
    order = np.argsort(-counts, kind="stable")
    if exclude is None:
        return np.tile(order[:min(k, m)].astype(np.int64), (n_queries, 1))
    rank_score = np.empty(m)
    rank_score[order] = np.arange(m, 0, -1)  # unique scores: no tie handling needed per row
    bs = max(1, _CHUNK // max(m, 1))
    out = [top_k_from_scores(np.broadcast_to(rank_score, (min(bs, n_queries - i), m)), k, exclude[i:i + bs])
           for i in range(0, n_queries, bs)]
    return np.concatenate(out) if out else np.empty((0, min(k, m)), np.int64)


# ---------------------------------------------------------------- accuracy metrics
def _as_topk(topk) -> np.ndarray:
    t = np.asarray(topk, np.int64)
    if t.ndim != 2:
        raise ValueError(f"topk must be [n_queries, K], got shape {t.shape}")
    return t


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def _hits(topk: np.ndarray, relevant) -> Tuple[np.ndarray, np.ndarray]:
    """(hits [n, K] bool, n_relevant [n]); multi-relevant lists are matched via (row, item) keys."""
    n = len(topk)
    if len(relevant) != n:
        raise ValueError(f"relevant has {len(relevant)} rows, topk has {n}")
    is_arr = isinstance(relevant, np.ndarray) and relevant.dtype != object
    if (is_arr and relevant.ndim == 1) or (not is_arr and all(isinstance(r, numbers.Integral) for r in relevant)):
        rel = np.asarray(relevant, np.int64)
        return (topk == rel[:, None]) & (topk >= 0), (rel >= 0).astype(np.int64)
    rows, items = _ragged(relevant, n)
    ok = items >= 0
    width = int(max(items.max(initial=0), topk.max(initial=0))) + 1
    keys = np.unique(rows[ok] * width + items[ok])  # unique also drops duplicate relevant items
    n_rel = np.bincount(keys // width, minlength=n)
    hits = np.isin(np.arange(n)[:, None] * width + topk, keys) & (topk >= 0)
    return hits, n_rel


def _per_query(name: str, hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """Per-query metric values; nan where the query has no relevant item (so means skip it)."""
    h = hits[:, :k]
    w = h.shape[1]
    n_hit = h.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "recall":
            v = n_hit / n_rel
        elif name == "precision":
            v = n_hit / k  # k, not the list width: a short list is penalised
        elif name == "hr":
            v = (n_hit > 0).astype(np.float64)
        elif name == "ndcg":
            n_ideal = np.minimum(n_rel, k)
            disc = 1.0 / np.log2(np.arange(max(w, int(n_ideal.max(initial=0)))) + 2.0)
            v = h @ disc[:w] / np.concatenate([[0.0], np.cumsum(disc)])[n_ideal]
        elif name == "map":
            prec = np.cumsum(h, 1) / np.arange(1, w + 1)
            v = (prec * h).sum(1) / np.minimum(n_rel, k)
        elif name == "mrr":
            v = np.where(n_hit > 0, 1.0 / ((h.argmax(1) if w else 0) + 1.0), 0.0)
        else:
            raise ValueError(f"unknown metric {name!r}")
    return np.where(n_rel > 0, v, np.nan)


def _nanmean(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def per_query(name: str, topk, relevant, k: int) -> np.ndarray:
    """Per-query values of one metric (recall, ndcg, precision, hr, map, mrr); nan = no relevant item.

    The unit a bootstrap over users resamples (``trainer.baselines.bootstrap_lead``).
    """
    t = _as_topk(topk)
    return _per_query(name, *_hits(t, relevant), _check_k(k))


def user_means(values, users) -> Tuple[np.ndarray, np.ndarray]:
    """(each user's mean of the per-query ``values``, those users): every user counted once. NaN queries (no
    relevant item) are left out, and a user with only those with them."""
    values, users = np.asarray(values, np.float64), np.asarray(users)
    ok = ~np.isnan(values)
    names, codes = np.unique(users[ok], return_inverse=True)
    sums = np.bincount(codes.ravel(), values[ok], len(names))
    return sums / np.bincount(codes.ravel(), minlength=len(names)), names


def _metric(name: str, topk, relevant, k: int) -> float:
    t = _as_topk(topk)
    return _nanmean(_per_query(name, *_hits(t, relevant), _check_k(k)))


def recall_at_k(topk, relevant, k: int) -> float:
    """Mean fraction of a query's relevant items found in its top k."""
    return _metric("recall", topk, relevant, k)


def precision_at_k(topk, relevant, k: int) -> float:
    """Mean hits / k (divides by k even when the list is shorter)."""
    return _metric("precision", topk, relevant, k)


def ndcg_at_k(topk, relevant, k: int) -> float:
    """Binary-relevance NDCG; the ideal list holds min(|relevant|, k) hits."""
    return _metric("ndcg", topk, relevant, k)


def hit_rate_at_k(topk, relevant, k: int) -> float:
    """Fraction of queries with at least one relevant item in the top k."""
    return _metric("hr", topk, relevant, k)


def map_at_k(topk, relevant, k: int) -> float:
    """Mean average precision, AP normalised by min(|relevant|, k)."""
    return _metric("map", topk, relevant, k)


def mrr(topk, relevant) -> float:
    """Mean reciprocal rank of the first hit within the given list (0 when absent)."""
    t = _as_topk(topk)
    return _metric("mrr", t, relevant, max(t.shape[1], 1))


# ---------------------------------------------------------------- beyond-accuracy metrics
def _list_mean(topk, per_item: np.ndarray, k: int) -> float:
    """Mean over lists of the mean per_item value of their real (non-padding) top-k items."""
    t = _as_topk(topk)[:, :_check_k(k)]
    valid = (t >= 0) & (t < per_item.size)
    cnt = valid.sum(1)
    per_list = np.where(valid, per_item[np.where(valid, t, 0)], 0.0).sum(1)[cnt > 0] / cnt[cnt > 0]
    return float(per_list.mean()) if per_list.size else float("nan")


def catalog_coverage(topk, n_items: int, k: int) -> float:
    """Fraction of the catalog recommended to at least one query: a collapse-to-popular detector."""
    t = _as_topk(topk)[:, :_check_k(k)]
    seen = t[(t >= 0) & (t < n_items)]
    return float(np.count_nonzero(np.bincount(seen, minlength=n_items)) / n_items)


def intra_list_diversity(topk, item_vectors, k: int) -> float:
    """Mean pairwise (1 - cosine) within each list; zero vectors have cosine 0 to everything.

    Uses sum_{i<j} u_i.u_j = (|sum u|^2 - sum |u|^2) / 2, so no [K, K] matrix per list.
    Lists with fewer than two items are skipped.
    """
    t = _as_topk(topk)[:, :_check_k(k)]
    vec = np.asarray(item_vectors, np.float64).reshape(len(item_vectors), -1)
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    unit = np.divide(vec, norms, out=np.zeros_like(vec), where=norms > 0)
    valid = (t >= 0) & (t < len(unit))
    dists = []
    step = max(1, _CHUNK // max(t.shape[1] * unit.shape[1], 1))
    for i in range(0, len(t), step):
        g = unit[np.where(valid[i:i + step], t[i:i + step], 0)] * valid[i:i + step, :, None]
        s = g.sum(1)
        pair_cos = ((s * s).sum(1) - (g * g).sum((1, 2))) / 2.0
        c = valid[i:i + step].sum(1)
        ok = c >= 2
        dists.append(1.0 - pair_cos[ok] / (c[ok] * (c[ok] - 1) / 2.0))
    d = np.concatenate(dists) if dists else np.empty(0)
    return float(d.mean()) if d.size else float("nan")


def novelty(topk, item_popularity, k: int) -> float:
    """Mean self-information -log2 p(item), p = popularity / total (zero counts as the rarest seen item)."""
    pop = np.asarray(item_popularity, np.float64)
    if pop.sum() <= 0:
        raise ValueError("item_popularity must have a positive total")
    floor = pop[pop > 0].min()
    return _list_mean(topk, -np.log2(np.maximum(pop, floor) / pop.sum()), k)


def popularity_bias(topk, item_popularity, k: int) -> float:
    """Mean popularity percentile (share of items at most as popular) of recommendations; 1.0 = the most popular."""
    pop = np.asarray(item_popularity, np.float64)
    return _list_mean(topk, np.searchsorted(np.sort(pop), pop, side="right") / pop.size, k)


def evaluate_topk(topk, relevant, ks: Sequence[int] = (10, 50, 100), n_items: Optional[int] = None,
                  item_popularity=None, item_vectors=None) -> Dict[str, float]:
    """All accuracy metrics at every k (hits computed once) plus beyond-accuracy ones at one k.

    Beyond-accuracy metrics use the largest k <= 10 in ks (else the smallest k); n_items
    defaults to the length of item_popularity or item_vectors when those are given.
    """
    t = _as_topk(topk)
    ks = sorted({_check_k(k) for k in ks})
    hits, n_rel = _hits(t, relevant)
    out: Dict[str, float] = {"n_queries": int((n_rel > 0).sum())}
    for k in ks:
        for name in ("recall", "ndcg", "precision", "hr", "map"):
            out[f"{name}@{k}"] = _nanmean(_per_query(name, hits, n_rel, k))
    out["mrr"] = _nanmean(_per_query("mrr", hits, n_rel, max(t.shape[1], 1)))
    if not ks:
        return out
    bk = max([k for k in ks if k <= 10] or [ks[0]])
    if n_items is None:
        n_items = len(item_popularity) if item_popularity is not None else (
            len(item_vectors) if item_vectors is not None else None)
    if n_items:
        out[f"coverage@{bk}"] = catalog_coverage(t, n_items, bk)
    if item_popularity is not None:
        out[f"novelty@{bk}"] = novelty(t, item_popularity, bk)
        out[f"popularity_bias@{bk}"] = popularity_bias(t, item_popularity, bk)
    if item_vectors is not None:
        out[f"diversity@{bk}"] = intra_list_diversity(t, item_vectors, bk)
    return out


# ---------------------------------------------------------------- protocols
def random_split(n: int, test_fraction: float = 0.2, seed: int = 42) -> np.ndarray:
    """Test mask of the TFRS tutorials' random split (``tfrs_random_80_20``): deterministic for a seed."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = np.zeros(n, bool)
    test[rng.permutation(n)[: int(round(n * test_fraction))]] = True
    return test


def leave_one_out(user_ids, item_ids, timestamps) -> Tuple[np.ndarray, np.ndarray]:
    """(train_mask, test_mask): each user's latest row is test; equal times -> the later row is latest."""
    users, ts = np.asarray(user_ids), np.asarray(timestamps)
    n = len(users)
    if len(item_ids) != n or len(ts) != n:
        raise ValueError("user_ids, item_ids and timestamps must have the same length")
    codes = np.unique(users, return_inverse=True)[1].ravel()
    order = np.lexsort((np.arange(n), ts, codes))
    last = np.ones(n, bool)
    last[:-1] = codes[order][1:] != codes[order][:-1]
    test = np.zeros(n, bool)
    test[order[last]] = True
    return ~test, test


def _dup_mask(a: np.ndarray) -> np.ndarray:
    """True at every repeat (after the first occurrence) of a value within its row."""
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, 1)
    dup = np.zeros(a.shape, bool)
    np.put_along_axis(dup, order[:, 1:], s[:, 1:] == s[:, :-1], 1)
    return dup


def _sample_negatives(targets, n_items, n_neg, rng, exclude) -> np.ndarray:
    """[n, n_neg] distinct uniform items per row, never the target nor exclude[i] (-1 rows for no target)."""
    n = targets.size
    rows, items = _ragged([None] * n if exclude is None else exclude, n)
    rows, items = np.concatenate([rows, np.arange(n)]), np.concatenate([items, targets])
    ok = (items >= 0) & (items < n_items)
    forbidden = np.unique(rows[ok] * n_items + items[ok])
    has = targets >= 0
    short = has & (n_items - np.bincount(forbidden // n_items, minlength=n) < n_neg)
    if short.any():
        raise ValueError(f"{short.sum()} queries have fewer than {n_neg} allowed negatives")
    neg = rng.integers(0, n_items, (n, n_neg))
    key_rows = np.arange(n)[:, None] * n_items
    for attempt in range(101):  # rejection: redraw forbidden items and repeats until none are left
        bad = (np.isin(key_rows + neg, forbidden) | _dup_mask(neg)) & has[:, None]
        if not bad.any() or attempt == 100:
            break
        neg[bad] = rng.integers(0, n_items, int(bad.sum()))
    if bad.any():  # nearly exhausted rows: sample exactly from what is allowed
        for i in np.flatnonzero(bad.any(1)):
            allowed = np.setdiff1d(np.arange(n_items), forbidden[forbidden // n_items == i] - i * n_items)
            neg[i] = rng.choice(allowed, n_neg, replace=False)
    neg[~has] = -1
    return neg


def sampled_negatives_topk(scores_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], targets, n_items: int,
                           n_negatives: int = 99, seed: int = 0, exclude=None, batch_size: int = 4096) -> np.ndarray:
    """NCF protocol ("sampled_1_99"): rank each target among n_negatives sampled unseen items.

    scores_fn(rows, candidates) gets query row indices [b] and item indices [b, 1 + n_negatives]
    and returns scores of the same shape. Returns a topk [n, 1 + n_negatives] of *item indices*
    (the candidates re-ranked by score), so e.g. hit_rate_at_k(topk, targets, 10) is the paper's
    HR@10. The positive is the last candidate, so a tie ranks it below the tied negatives
    (conservative). Rows with target -1 are not scored and come back as all -1.
    """
    targets = np.asarray(targets, np.int64).ravel()
    neg = _sample_negatives(targets, n_items, n_negatives, np.random.default_rng(seed), exclude)
    cand = np.concatenate([neg, targets[:, None]], 1)
    out = np.full(cand.shape, -1, np.int64)
    scored = np.flatnonzero(targets >= 0)
    for i in range(0, scored.size, batch_size):
        rows = scored[i:i + batch_size]
        s = np.asarray(scores_fn(rows, cand[rows]), np.float64)
        if s.shape != cand[rows].shape:
            raise ValueError(f"scores_fn returned shape {s.shape}, expected {cand[rows].shape}")
        order = top_k_from_scores(s, cand.shape[1])
        out[rows] = np.where(order >= 0, np.take_along_axis(cand[rows], np.maximum(order, 0), 1), -1)
    return out
