"""Classic collaborative-filtering baselines, scored on exactly the queries and exclusions of the model.

Popularity alone is a weak yardstick; these are the ones a reviewer reaches for first:

- ``EASE`` (Steck, 2019): a closed-form item-item linear model, B = I - P diag(1/diag(P)),
  P = (X'X + lambda I)^-1, diag(B) = 0. Usually the strongest simple baseline on MovieLens.
- ``ItemKNN``: cosine item-item similarity over the binary user x item matrix, top-n neighbours
  per item (Sarwar et al., 2001).
- ``ImplicitALS``: implicit-feedback matrix factorisation (Hu, Koren & Volinsky, 2008) by
  alternating least squares; queries are *folded in* (one least-squares solve over the query's
  items), so it scores users and events it never saw, like the item-item models.

Every baseline scores a query from the set of items the user had **strictly before** the query
(the same set the evaluation excludes), so a sequential split is handled the same way for all of
them and none sees the future. Matrices are dense NumPy (no extra dependency): meant for
catalogues up to a few tens of thousands of items, which covers MovieLens 100K-1M and the demo.
Beyond ``MAX_DENSE_BYTES`` item-kNN is built from each item's neighbour lists instead
(``NeighbourKNN``: the exact cosine table of ``trainer/covisit.py``, computed in blocks) and ALS from
the interactions' positions, so memory follows the interactions; EASE, whose inverse is items x items,
is skipped with the reason (``TooLarge``) rather than exhausting memory part-way through an evaluation.

``tune`` picks each baseline's main hyper-parameter on a validation slice of the train split
(the latest train events by time), never on the evaluation split.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from trainer import evaluation

_ROWS = 2048  # queries scored per block (bounds the [rows, n_items] temporaries)
_CELLS = 1 << 25  # and at most this many scores per block (128 MiB of float32): fewer rows for large catalogues


def input_matrix(item_sets: Sequence[np.ndarray], n_items: int, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Binary [len(rows), n_items] float32 matrix of the given per-query item sets (ids outside are ignored)."""
    rows = np.arange(len(item_sets)) if rows is None else rows
    x = np.zeros((len(rows), n_items), np.float32)
    for r, i in enumerate(rows):
        s = np.asarray(item_sets[i], np.int64)
        s = s[(s >= 0) & (s < n_items)]
        x[r, s] = 1.0
    return x


def gram(x: np.ndarray) -> np.ndarray:
    """``x.T @ x`` in float32. Dense BLAS costs users x items^2 whatever the density; interaction matrices are
    sparse (ml-latest-small 1.7% filled, a review log 0.04%), so where each user's own outer product is
    cheaper (sum of their item counts squared) the Gram matrix is added up user by user. Equal either way
    for a binary ``x`` (integer counts are exact in float32)."""
    rows, cols = np.nonzero(x)
    counts = np.bincount(rows, minlength=len(x)).astype(np.float64)
    n_users, n_items = x.shape
    # ~20x the cost per sparse update of a BLAS multiply-add, plus ~10 us of Python per user
    if 20.0 * float((counts ** 2).sum()) + 2e4 * n_users >= float(n_users) * n_items * n_items:
        xf = x.astype(np.float32, copy=False)
        return xf.T @ xf
    g = np.zeros((n_items, n_items), np.float32)
    vals = x[rows, cols].astype(np.float32)
    bounds = np.flatnonzero(np.diff(rows)) + 1
    for c, v in zip(np.split(cols, bounds), np.split(vals, bounds)):
        g[np.ix_(c, c)] += np.outer(v, v)
    return g


class Baseline:
    """fit(X: binary [users, items]) then score(item sets) -> [n, items]; higher is better."""

    name = "baseline"
    param_name = ""

    def fit(self, x: np.ndarray) -> "Baseline":
        raise NotImplementedError

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def topk(self, item_sets: Sequence[np.ndarray], k: int, exclude: Optional[Sequence[np.ndarray]] = None,
             n_items: Optional[int] = None, order_key: Optional[np.ndarray] = None) -> np.ndarray:
        """[n, k] catalogue indices, best first, with exclude[i] removed (as evaluation.full_ranking_topk).

        ``order_key`` (e.g. the queries' users): linear item-item models then score each user's
        queries in order of growing history, adding only the new items' rows to the previous
        query's scores, so a time split costs O(events x items) instead of O(queries x items^2).
        """
        n_items = n_items or self.n_items
        n = len(item_sets)
        if n == 0:
            return np.empty((0, min(k, n_items)), np.int64)
        linear = hasattr(self, "item_rows")
        rows_sum = getattr(self, "rows_sum", None)  # models without dense rows (NeighbourKNN)
        if linear and order_key is not None:
            order = np.lexsort(([len(item_sets[i]) for i in range(n)], np.asarray(order_key)))
        else:
            order = np.arange(n)
        out = np.empty((n, min(k, n_items)), np.int64)
        prev_set, prev_vec = None, None
        step = max(1, min(_ROWS, _CELLS // max(n_items, 1)))
        for s in range(0, n, step):
            rows = order[s:s + step]
            if linear:
                block = np.empty((len(rows), n_items), np.float32)
                for r, i in enumerate(rows):
                    cur = np.unique(np.asarray(item_sets[i], np.int64))
                    cur = cur[(cur >= 0) & (cur < n_items)]
                    if prev_set is not None and prev_set.size <= cur.size and np.isin(prev_set, cur).all():
                        new_items = np.setdiff1d(cur, prev_set)
                        vec = prev_vec + (rows_sum(new_items) if rows_sum else self.item_rows(new_items).sum(0))
                    else:
                        vec = rows_sum(cur) if rows_sum else self.item_rows(cur).sum(0, dtype=np.float64)
                    prev_set, prev_vec = cur, vec
                    block[r] = self.finish(vec)
            else:
                block = self.score_matrix(input_matrix(item_sets, n_items, rows))
            ex = None if exclude is None else [exclude[i] for i in rows]
            out[rows] = evaluation.top_k_from_scores(block, k, ex)
        return out

    @property
    def param(self):
        return getattr(self, self.param_name) if self.param_name else None


class EASE(Baseline):
    """Embarrassingly Shallow Autoencoder: closed form, one regulariser (lam)."""

    name, param_name = "ease", "lam"

    def __init__(self, lam: float = 500.0, min_count: int = 2):
        self.lam, self.min_count = float(lam), int(min_count)

    def _active(self, x: np.ndarray) -> np.ndarray:
        # items seen fewer than min_count times carry no co-occurrence signal: left out of the inverse (n^3)
        return np.flatnonzero(x.sum(0) >= self.min_count)

    def fit(self, x: np.ndarray) -> "EASE":
        return self.sweep(x, [self.lam])[0]

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        out = np.full((len(x), self.n_items), -np.inf, np.float32)  # inactive items are never recommended
        out[:, self.active] = x[:, self.active] @ self.b
        return out

    def item_rows(self, items: np.ndarray) -> np.ndarray:
        """Rows of B for the given catalogue items (inactive items add nothing)."""
        pos = self.row_of[items]
        return self.b[pos[pos >= 0]]

    def finish(self, vec: np.ndarray) -> np.ndarray:
        out = np.full(self.n_items, -np.inf, np.float32)
        out[self.active] = vec
        return out

    def sweep(self, x: np.ndarray, lams: Sequence[float]) -> List["EASE"]:
        """One fit per lambda sharing the Gram matrix (item side) or the users' kernel (user side).

        B only needs P up to a scale (B = -P / diag(P)), and by Woodbury
        (X'X + lam I)^-1 = (I - X'(XX' + lam I)^-1 X) / lam, so with fewer users than items the inverse is
        users x users: ml-latest-small's is 610^2, not 6,278^2 (a 2n^3 LU inverse: 21 s on 2 cores), and
        what remains is one items x items product over the users (about 1 s)."""
        active = self._active(x)
        xa = x[:, active].astype(np.float32, copy=False)
        if len(xa) < len(active):
            return [self._model(x.shape[1], active, p, lam) for p, lam in zip(_ease_dual(xa, lams), lams)]
        g = gram(xa)
        diag = np.diag_indices_from(g)
        base = g[diag].copy()
        models = []
        for lam in lams:
            g[diag] = base + lam
            models.append(self._model(x.shape[1], active, np.linalg.inv(g), lam))  # float32 LU: 2n^3 flops
        return models

    def _model(self, n_items: int, active: np.ndarray, p: np.ndarray, lam: float) -> "EASE":
        """B from P (or any positive multiple of it), in place."""
        d = np.diag(p).copy()
        p /= -d[None, :]
        p[np.diag_indices_from(p)] = 0.0
        m = EASE(lam, self.min_count)
        m.n_items, m.active, m.b = n_items, active, p.astype(np.float32, copy=False)
        m.row_of = np.full(n_items, -1, np.int64)  # catalogue index -> row of B (-1: inactive)
        m.row_of[active] = np.arange(len(active))
        return m


def _ease_dual(xa: np.ndarray, lams: Sequence[float]):
    """lam * P = I - X'(XX' + lam I)^-1 X for each lambda (float64 users x users inverse, float32 products:
    the kernel of a binary X holds integer counts, exact in float32)."""
    kernel = (xa @ xa.T).astype(np.float64)
    diag = np.diag_indices_from(kernel)
    base = kernel[diag].copy()
    for lam in lams:
        kernel[diag] = base + lam
        q = -(xa.T @ (np.linalg.inv(kernel).astype(np.float32) @ xa))
        q[np.diag_indices_from(q)] += 1.0
        yield q


class ItemKNN(Baseline):
    """Cosine item-item similarity, keeping each item's top-n neighbours (0 = all)."""

    name, param_name = "item_knn", "neighbours"

    def __init__(self, neighbours: int = 100, shrink: float = 0.0):
        self.neighbours, self.shrink = int(neighbours), float(shrink)

    def fit(self, x: np.ndarray) -> "ItemKNN":
        return self.sweep(x, [self.neighbours])[0]

    def sweep(self, x: np.ndarray, neighbours: Sequence[int]) -> List["ItemKNN"]:
        """One model per neighbour count, sharing the cosine matrix (the Gram matrix is most of the cost)."""
        co = gram(x)
        norms = np.sqrt(np.diag(co)).astype(np.float32)
        denom = np.outer(norms, norms) + self.shrink
        full = np.divide(co, denom, out=co, where=denom > 0)   # in place: co is not needed again
        full[denom <= 0] = 0.0
        del denom
        full[np.diag_indices_from(full)] = 0.0
        models = []
        for i, n in enumerate(neighbours):
            n = int(n)
            s = full if i == len(neighbours) - 1 else full.copy()   # the last one may take the shared matrix
            if 0 < n < s.shape[0]:  # keep the n most similar items to each target item (per column)
                cut = np.partition(s, s.shape[0] - n, axis=0)[s.shape[0] - n]
                s[s < cut[None, :]] = 0.0
            m = ItemKNN(n, self.shrink)
            m.n_items, m.sim = x.shape[1], s
            models.append(m)
        return models

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        return x @ self.sim

    def item_rows(self, items: np.ndarray) -> np.ndarray:
        return self.sim[items]

    def finish(self, vec: np.ndarray) -> np.ndarray:
        return vec.astype(np.float32)


class NeighbourKNN(Baseline):
    """Item-kNN kept as each item's n nearest items (cosine), not as an items x items matrix.

    The table is ``trainer/covisit.py``'s (exact counts, computed in blocks of items from the sparse
    interactions), so a catalogue past ``MAX_DENSE_BYTES`` (a shop's 100K items, MovieLens 20M) still gets
    its strongest cheap yardstick. It scores as ``ItemKNN`` with the same n and no shrinkage: a target's score
    is the summed similarity of the history items among its n nearest (at a tie on the n-th, ``ItemKNN`` keeps
    every tied item, this keeps n).
    """

    name, param_name = "item_knn", "neighbours"

    def __init__(self, neighbours: int = 100):
        self.neighbours = int(neighbours)

    @classmethod
    def sweep(cls, users: np.ndarray, items: np.ndarray, n_items: int,
              neighbours: Sequence[int]) -> List["NeighbourKNN"]:
        """One model per neighbour count from one table of the most neighbours asked for (rows are sorted)."""
        from trainer import covisit

        wanted = [int(n) if 0 < int(n) < n_items else max(n_items - 1, 1) for n in neighbours]
        try:
            ids, weights = covisit.table(np.asarray(users), np.asarray(items, np.int64),
                                         np.zeros(len(items), np.int64), n_items, max(wanted))
        except covisit.TooLarge as e:
            raise TooLarge(f"item_knn skipped: {e}") from None
        models = []
        for given, n in zip(neighbours, wanted):
            m = cls(int(given))
            m.n_items = n_items
            src, m._targets, m._weights = _by_source(ids[1:, :n], weights[1:, :n])
            m._starts = np.searchsorted(src, np.arange(n_items + 1))
            models.append(m)
        return models

    def fit_pairs(self, users: np.ndarray, items: np.ndarray, n_items: int) -> "NeighbourKNN":
        return self.sweep(users, items, n_items, [self.neighbours])[0]

    def rows_sum(self, items: np.ndarray) -> np.ndarray:
        """The summed rows of the (never built) kept similarity matrix for these history items."""
        items = np.asarray(items, np.int64)
        lo, n = self._starts[items], self._starts[items + 1] - self._starts[items]
        idx = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(n.sum())  # each item's edges, concatenated
        return np.bincount(self._targets[idx], weights=self._weights[idx], minlength=self.n_items)

    def finish(self, vec: np.ndarray) -> np.ndarray:
        return vec.astype(np.float32)

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        return np.stack([self.finish(self.rows_sum(np.flatnonzero(row > 0))) for row in x]) if len(x) else \
            np.zeros((0, self.n_items), np.float32)


def _by_source(ids: np.ndarray, weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour lists (target j -> its nearest items i) as edges sorted by i: (i, j, weight) arrays."""
    keep = ids >= 0
    targets = np.broadcast_to(np.arange(len(ids), dtype=np.int32)[:, None], ids.shape)[keep]
    src = ids[keep]
    order = np.argsort(src, kind="stable")
    return src[order], targets[order], weights[keep][order]


def _batched_cg(a: np.ndarray, b: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Solves a[n] x[n] = b[n] for many small SPD systems at once by conjugate gradients.

    f steps solve an f x f system exactly (up to rounding); einsum keeps it in a few vectorised
    calls, where np.linalg.solve makes one LAPACK call per matrix (and crawls under BLAS threads).
    """
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rs = (r * r).sum(1)
    for _ in range(b.shape[1]):
        ap = np.einsum("nij,nj->ni", a, p)
        step = rs / np.maximum((p * ap).sum(1), 1e-300)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = (r * r).sum(1)
        if rs_new.max(initial=0.0) < tol:
            break
        p = r + (rs_new / np.maximum(rs, 1e-300))[:, None] * p
        rs = rs_new
    return x


class ImplicitALS(Baseline):
    """Weighted matrix factorisation for implicit feedback; confidence 1 + alpha for observed pairs."""

    name, param_name = "als", "reg"

    def __init__(self, factors: int = 32, reg: float = 10.0, alpha: float = 10.0, iterations: int = 8,
                 seed: int = 0):
        self.factors, self.reg, self.alpha, self.iterations, self.seed = factors, float(reg), alpha, iterations, seed

    def _solve(self, fixed: np.ndarray, n_rows: int, nonzero: tuple) -> np.ndarray:
        """Least-squares factors for each of ``n_rows`` rows of a binary matrix given the other side's factors.

        Row r solves (F'F + alpha F_r' F_r + reg I) v = (1 + alpha) sum(F_r), F_r = the rows of F
        that row r marks (``nonzero``: (rows, cols) of its ones, sorted by row, as np.nonzero gives them).
        Each F_r' F_r is one small BLAS product over that row's non-zeros only (a reduceat over
        materialised outer products was 70% of the fit), and the solves are one batched call per chunk of
        rows, so cost follows the interactions, not rows x items.
        """
        f = fixed.shape[1]
        gram = fixed.T @ fixed + self.reg * np.eye(f)
        rows, cols = nonzero
        out = np.zeros((n_rows, f))
        if rows.size == 0:
            return out
        starts = np.r_[0, np.flatnonzero(rows[1:] != rows[:-1]) + 1]
        ends = np.r_[starts[1:], rows.size]
        y = fixed[cols]
        step = max(1, 4_000_000 // (f * f))            # rows per chunk (bounds the stacked f x f systems)
        for i in range(0, len(starts), step):
            lo, hi = starts[i:i + step], ends[i:i + step]
            a = np.empty((len(lo), f, f))
            for r, (s, e) in enumerate(zip(lo, hi)):
                np.dot(y[s:e].T, y[s:e], out=a[r])
            a = gram[None] + self.alpha * a
            b = (1.0 + self.alpha) * np.add.reduceat(y[lo[0]:hi[-1]], lo - lo[0], axis=0)
            out[rows[lo]] = _batched_cg(a, b)
        return out

    def fit(self, x: np.ndarray) -> "ImplicitALS":
        return self.fit_pairs(*np.nonzero(x), *x.shape)

    def fit_pairs(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> "ImplicitALS":
        """From the (user, item) positions of the ones, sorted by user and distinct: no users x items matrix, so
        a catalogue past ``MAX_DENSE_BYTES`` fits in memory that follows the interactions."""
        self.n_items = n_items
        rng = np.random.default_rng(self.seed)
        factors = rng.normal(0, 0.01, (n_items, self.factors))
        by_item = np.lexsort((users, items))
        for _ in range(self.iterations):
            user_factors = self._solve(factors, n_users, (users, items))
            factors = self._solve(user_factors, n_items, (items[by_item], users[by_item]))
        self.items = factors
        return self

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        return (self._solve(self.items, len(x), np.nonzero(x)) @ self.items.T).astype(np.float32)


BASELINES = {"ease": EASE, "item_knn": ItemKNN, "als": ImplicitALS}
GRIDS = {"ease": (50.0, 200.0, 1000.0, 5000.0), "item_knn": (20, 100, 400),
         "als": (5.0, 50.0)}


# ---------------------------------------------------------------- data for the baselines
@dataclasses.dataclass
class Split:
    """Train interactions as (user code, item index, time) plus the users' item sets."""

    users: np.ndarray      # [n] str user ids
    items: np.ndarray      # [n] catalogue indices (-1 = not in catalogue)
    times: np.ndarray      # [n] int64

    def pairs(self, n_items: int, mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, int, int]:
        """(user codes, items, n_users, n_items): the ones of ``matrix`` without building it, sorted by user."""
        u, i = self.users, self.items
        if mask is not None:
            u, i = u[mask], i[mask]
        ok = i >= 0
        codes = np.unique(u[ok], return_inverse=True)[1].ravel().astype(np.int64)
        flat = np.unique(codes * n_items + i[ok])
        return flat // n_items, flat % n_items, int(codes.max(initial=-1)) + 1, n_items

    def matrix(self, n_items: int, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """Binary users x items float32 (users in the order of their sorted ids)."""
        rows, cols, n_users, _ = self.pairs(n_items, mask)
        x = np.zeros((n_users, n_items), np.float32)
        x[rows, cols] = 1.0
        return x


class PriorIndex:
    """Per-user time-sorted item lists, to answer "what did this user have strictly before time t"."""

    def __init__(self, users: np.ndarray, items: np.ndarray, times: np.ndarray):
        self.by_user: Dict[str, tuple] = {}
        users = np.asarray(users)
        order = np.lexsort((times, users))
        u, i, t = users[order], np.asarray(items)[order], np.asarray(times)[order]
        bounds = np.flatnonzero(u[1:] != u[:-1]) + 1
        for uu, ii, tt in zip(np.split(u, bounds), np.split(i, bounds), np.split(t, bounds)):
            if len(uu):
                self.by_user[uu[0]] = (ii, tt)

    def before(self, q_users: np.ndarray, q_times: np.ndarray) -> List[np.ndarray]:
        empty = (np.empty(0, np.int64), np.empty(0, np.int64))
        out = []
        for qu, qt in zip(q_users, q_times):
            ii, tt = self.by_user.get(qu, empty)
            prior = ii[: np.searchsorted(tt, qt, side="left")]
            out.append(np.unique(prior[prior >= 0]))
        return out


def prior_items(users: np.ndarray, items: np.ndarray, times: np.ndarray, q_users: np.ndarray,
                q_times: np.ndarray) -> List[np.ndarray]:
    """For each query (user, time): the distinct items that user had strictly before that time."""
    return PriorIndex(users, items, times).before(q_users, q_times)


def tune(kind: str, split: Split, n_items: int, valid_fraction: float = 0.1, metric: str = "recall@50",
         max_queries: int = 2000, grid: Optional[Sequence] = None, seed: int = 0, sparse: bool = False) -> Dict:
    """Best grid value on the latest ``valid_fraction`` of train events, fit on the earlier ones.

    ``sparse``: no dense matrix (past ``MAX_DENSE_BYTES``): item-kNN as neighbour lists (``NeighbourKNN``),
    ALS from the interactions' positions."""
    t0 = time.time()
    cut = np.quantile(split.times, 1.0 - valid_fraction)
    fit_mask = split.times < cut
    valid = np.flatnonzero(~fit_mask & (split.items >= 0))
    if fit_mask.sum() == 0 or valid.size == 0:
        raise ValueError(f"cannot tune {kind}: the train split is too small for a validation slice")
    rng = np.random.default_rng(seed)
    if valid.size > max_queries:
        valid = np.sort(rng.choice(valid, max_queries, replace=False))
    qsets = prior_items(split.users, split.items, split.times, split.users[valid], split.times[valid])
    targets = split.items[valid].copy()
    targets[[t in s for t, s in zip(targets, qsets)]] = -1  # re-consumption: not a new-item query
    grid = tuple(grid or GRIDS[kind])
    k = int(metric.split("@")[1])
    if sparse and kind == "item_knn":  # one neighbour table for the whole grid
        models = NeighbourKNN.sweep(split.users[fit_mask], split.items[fit_mask], n_items, grid)
    elif sparse:
        pairs = split.pairs(n_items, fit_mask)
        models = [BASELINES[kind](**{BASELINES[kind].param_name: g}).fit_pairs(*pairs) for g in grid]
    elif kind in ("ease", "item_knn"):   # one Gram matrix for the whole grid
        models = BASELINES[kind]().sweep(split.matrix(n_items, fit_mask), grid)
    else:
        x = split.matrix(n_items, fit_mask)
        models = [BASELINES[kind](**{BASELINES[kind].param_name: g}).fit(x) for g in grid]
    scores = {}
    for g, m in zip(grid, models):
        topk = m.topk(qsets, k, qsets, n_items, order_key=split.users[valid])
        scores[g] = evaluation.evaluate_topk(topk, targets, (k,))[metric]
    best = max(grid, key=lambda g: (scores[g], -grid.index(g)))
    return {"kind": kind, "param": BASELINES[kind].param_name, "best": best, "grid": {str(g): v for g, v in scores.items()},
            "metric": metric, "valid_queries": int((targets >= 0).sum()), "seconds": round(time.time() - t0, 1)}


# past MAX_DENSE_BYTES: how a baseline is built without a dense matrix (EASE's inverse is items x items: skipped)
SPARSE_FORMS = {"item_knn": "neighbour lists", "als": "sparse interactions"}
MAX_DENSE_BYTES = 4 << 30  # the largest dense float32 matrix a baseline may build (users x items or items^2)


class TooLarge(ValueError):
    """The data set is beyond what these dense baselines are meant for; callers skip the baseline and say why."""


def check_size(kind: str, n_users: int, n_items: int, limit: Optional[int] = None) -> None:
    """Raises TooLarge when ``kind`` would build a dense matrix above ``limit`` bytes: the user x item input of
    every baseline, and the item x item matrices of EASE (Gram, inverse and weights at once) and item-kNN."""
    need = {"users x items": 4 * n_users * n_items}
    if kind in ("ease", "item_knn"):
        need["items x items"] = 4 * n_items * n_items * (3 if kind == "ease" else 2)
    what, size = max(need.items(), key=lambda kv: kv[1])
    limit = MAX_DENSE_BYTES if limit is None else limit
    if size > limit:
        raise TooLarge(f"{kind} skipped: {n_users:,} users x {n_items:,} items need a {size / 2**30:.1f} GiB dense "
                       f"{what} matrix (limit {limit / 2**30:.0f} GiB; these baselines are dense NumPy)")


def positions(items: np.ndarray, n_items: int) -> np.ndarray:
    """catalogue index -> position in ``items`` (-1: not among them)."""
    out = np.full(n_items, -1, np.int64)
    out[items] = np.arange(len(items))
    return out


class OnTrainItems:
    """A baseline fitted on the items the train split has (the only ones it can score), answering in catalogue
    indices: a products file far larger than the log then costs nothing (20,500 listed, 500 sold: EASE's
    inverse is 500^2, not 20,500^2). Rankings are those of the baseline over the whole catalogue, except that
    items it cannot score are never filled in (-1, as for scores of -inf)."""

    def __init__(self, inner: Baseline, items: np.ndarray, n_items: int):
        self.inner, self.items, self.n_items = inner, np.asarray(items, np.int64), int(n_items)
        self.position = positions(self.items, self.n_items)

    def __getattr__(self, name):  # lam, neighbours, b, ... of the fitted baseline
        if name.startswith("__") or name == "inner":  # (copy and pickle probe before __init__ has run)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _inner_sets(self, sets: Sequence[np.ndarray]) -> List[np.ndarray]:
        out = []
        for s in sets:
            s = np.asarray(s, np.int64)
            p = self.position[s[(s >= 0) & (s < self.n_items)]]
            out.append(p[p >= 0])
        return out

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        """[n, catalogue] scores of binary catalogue-wide inputs; items without a train event -inf."""
        out = np.full((len(x), self.n_items), -np.inf, np.float32)
        out[:, self.items] = self.inner.score_matrix(np.ascontiguousarray(x[:, self.items]))
        return out

    def topk(self, item_sets: Sequence[np.ndarray], k: int, exclude: Optional[Sequence[np.ndarray]] = None,
             n_items: Optional[int] = None, order_key: Optional[np.ndarray] = None) -> np.ndarray:
        n_items = n_items or self.n_items
        kk = min(k, n_items)
        top = self.inner.topk(self._inner_sets(item_sets), kk, None if exclude is None else self._inner_sets(exclude),
                              len(self.items), order_key)
        out = np.full((len(item_sets), kk), -1, np.int64)
        out[:, :top.shape[1]] = np.where(top >= 0, self.items[np.maximum(top, 0)], -1)
        return out


def fit_tuned(kind: str, split: Split, n_items: int, tune_first: bool = True, **tune_kwargs) -> tuple:
    """(fitted baseline on the whole train split, tuning record); past dense NumPy, item-kNN and ALS are built
    sparse (``SPARSE_FORMS``, ``record["form"]``) and EASE raises TooLarge.

    The baseline sees only the items with a train event (``OnTrainItems``); it answers in catalogue indices."""
    active = np.unique(split.items[split.items >= 0])
    position = positions(active, n_items)
    local = Split(split.users, np.where(split.items >= 0, position[np.maximum(split.items, 0)], -1), split.times)
    sparse = False
    try:
        check_size(kind, len(np.unique(split.users[split.items >= 0])), len(active))
    except TooLarge:
        if kind not in SPARSE_FORMS:
            raise
        sparse = True
    record = (tune(kind, local, len(active), sparse=sparse, **tune_kwargs) if tune_first
              else {"kind": kind, "best": None})
    kwargs = {BASELINES[kind].param_name: record["best"]} if record.get("best") is not None else {}
    t0 = time.time()
    if sparse and kind == "item_knn":
        ok = local.items >= 0
        model = NeighbourKNN(**kwargs).fit_pairs(local.users[ok], local.items[ok], len(active))
    elif sparse:
        model = BASELINES[kind](**kwargs).fit_pairs(*local.pairs(len(active)))
    else:
        model = BASELINES[kind](**kwargs).fit(local.matrix(len(active)))
    record.update({"param": BASELINES[kind].param_name, "best": model.param, "tuned": bool(tune_first),
                   "fit_seconds": round(time.time() - t0, 1), "items": int(len(active)),
                   "form": SPARSE_FORMS[kind] if sparse else "dense"})
    return OnTrainItems(model, active, n_items), record


# ---------------------------------------------------------------- rating baseline
class BiasModel:
    """Regularised global mean + user bias + item bias for explicit ratings (Koren, 2009, sec. 2.1).

    The yardstick for any rating head: a model that cannot beat it has learned nothing about
    users and items beyond their averages.
    """

    def __init__(self, reg_user: float = 10.0, reg_item: float = 25.0, iterations: int = 10):
        self.reg_user, self.reg_item, self.iterations = reg_user, reg_item, iterations

    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> "BiasModel":
        ratings = np.asarray(ratings, np.float64)
        self.mu = float(ratings.mean()) if len(ratings) else 0.0
        self.user_ids, u = np.unique(np.asarray(users), return_inverse=True)
        self.item_ids, i = np.unique(np.asarray(items), return_inverse=True)
        bu, bi = np.zeros(len(self.user_ids)), np.zeros(len(self.item_ids))
        nu = np.bincount(u, minlength=len(bu))
        ni = np.bincount(i, minlength=len(bi))
        for _ in range(self.iterations):
            bi = np.bincount(i, ratings - self.mu - bu[u], len(bi)) / (ni + self.reg_item)
            bu = np.bincount(u, ratings - self.mu - bi[i], len(bu)) / (nu + self.reg_user)
        self.bu, self.bi = bu, bi
        return self

    @staticmethod
    def _lookup(ids: np.ndarray, table: np.ndarray, values) -> np.ndarray:
        values = np.asarray(values)
        pos = np.clip(np.searchsorted(ids, values), 0, max(len(ids) - 1, 0))
        hit = (ids[pos] == values) if len(ids) else np.zeros(values.shape, bool)
        return np.where(hit, table[pos] if len(ids) else 0.0, 0.0)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mu + self._lookup(self.user_ids, self.bu, users) + self._lookup(self.item_ids, self.bi, items)

    def blend_parts(self, users: np.ndarray, items: np.ndarray, history_items: np.ndarray,
                    history_ratings: np.ndarray, reg: float = 2.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean + item bias, the train-time user bias, the recent ratings' offset) per row."""
        return (self.mu + self._lookup(self.item_ids, self.bi, items), self._lookup(self.user_ids, self.bu, users),
                self.recent_offset(history_items, history_ratings, reg))

    def recent_offset(self, history_items: np.ndarray, history_ratings: np.ndarray, reg: float = 2.0) -> np.ndarray:
        """The user's deviation from the rated history items' biases, shrunk by ``reg`` pseudo-ratings (0 =
        unrated); trainer/models/ranking.recent_rating_offset computes the same in the graph."""
        r = np.asarray(history_ratings, np.float64)
        rated = r > 0
        dev = np.where(rated, r - self.mu - self._lookup(self.item_ids, self.bi, history_items), 0.0).sum(1)
        return dev / (rated.sum(1) + reg)

    def fit_blend(self, users, items, history_items, history_ratings, ratings, reg: float = 2.0) -> Tuple[float, float]:
        """Least-squares weights of the user bias and of the recent offset on held-out rated rows (stacking):
        how much each says about this data's users. (1, 0) = the plain bias model when there are too few rows."""
        base, bu, dev = self.blend_parts(users, items, history_items, history_ratings, reg)
        if len(base) < 20:
            return 1.0, 0.0
        w = np.linalg.lstsq(np.stack([bu, dev], 1), np.asarray(ratings, np.float64) - base, rcond=None)[0]
        return float(w[0]), float(w[1])

    def predict_blend(self, weights: Tuple[float, float], users, items, history_items, history_ratings,
                      reg: float = 2.0) -> np.ndarray:
        base, bu, dev = self.blend_parts(users, items, history_items, history_ratings, reg)
        return base + weights[0] * bu + weights[1] * dev

    def predict_recent(self, items: np.ndarray, history_items: np.ndarray, history_ratings: np.ndarray,
                       reg: float = 2.0) -> np.ndarray:
        """mean + item bias + the user's recent ratings' offset: their deviation from the rated history
        items' biases, shrunk by ``reg`` pseudo-ratings (0 = unrated). The classic baseline for a
        request that carries the user's recent ratings, where the train-time user bias is stale."""
        return self.mu + self._lookup(self.item_ids, self.bi, items) + self.recent_offset(history_items,
                                                                                          history_ratings, reg)


# ---------------------------------------------------------------- intervals
def bootstrap_lead(a: np.ndarray, b: np.ndarray, users: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   relative: bool = True) -> Dict[str, float]:
    """Lead of per-query metric ``a`` over ``b`` with a 95% interval from resampling *users*.

    Queries of one user are correlated, so users (not queries) are drawn with replacement; each
    replicate recomputes both means over the drawn users' queries. NaN queries (no relevant
    item) are left out, as in every mean of ``trainer.evaluation``.
    """
    a, b, users = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(users)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b, users = a[ok], b[ok], users[ok]
    if a.size == 0:
        return {"lead": float("nan"), "low": float("nan"), "high": float("nan"), "n_users": 0, "n_queries": 0}
    codes = np.unique(users, return_inverse=True)[1].ravel()
    n_users = int(codes.max()) + 1
    sa, sb = np.bincount(codes, a, n_users), np.bincount(codes, b, n_users)
    cnt = np.bincount(codes, minlength=n_users).astype(np.float64)
    rng = np.random.default_rng(seed)
    leads = np.empty(n_boot)
    for s in range(0, n_boot, 100):
        draws = rng.integers(0, n_users, (min(100, n_boot - s), n_users))
        w = np.stack([np.bincount(d, minlength=n_users) for d in draws]).astype(np.float64)
        ma, mb = (w @ sa) / (w @ cnt), (w @ sb) / (w @ cnt)
        with np.errstate(divide="ignore", invalid="ignore"):  # a draw of only users at 0 (few users)
            leads[s:s + len(w)] = (ma / mb - 1.0) if relative else (ma - mb)
    leads[~np.isfinite(leads)] = np.nan  # such draws say nothing about a ratio: left out of the interval
    point = (a.mean() / b.mean() - 1.0) if relative else (a.mean() - b.mean())
    low, high = np.nanpercentile(leads, [2.5, 97.5])
    return {"lead": float(point), "low": float(low), "high": float(high), "n_users": n_users,
            "n_queries": int(a.size), "relative": relative}


def format_lead(r: Dict[str, float]) -> str:
    if r.get("relative", True):
        return f"{100 * r['lead']:+.1f}% [{100 * r['low']:+.1f}%, {100 * r['high']:+.1f}%]"
    return f"{r['lead']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]"
