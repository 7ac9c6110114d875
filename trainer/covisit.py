"""Co-visitation tables: for each item, its most similar items by who consumed both (cosine).

The ranker reads them in-graph ("how strongly does this candidate co-occur with what the user
just watched?"), the signal item-kNN and EASE live on, which a two-tower's dot product blurs.
A table is a model weight, so the exported ``ranking``/``recommend`` models carry it.

Leakage: a table built from the events a ranker learns from contains those very pairs, so the
ranker's training table is built only from events *before* its training slice (the same cut
as the out-of-fold retriever); the table of the final model uses the whole train split.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

_BLOCK = 1024  # rows of the item x item similarity computed at a time (bounds memory)
MAX_DENSE_BYTES = 4 << 30  # the dense users x items matrix (and its transpose) this module may build


class TooLarge(ValueError):
    """The interactions are beyond this dense builder; the message says the sizes and what to do."""


def table(users: np.ndarray, items: np.ndarray, times: np.ndarray, n_items: int, k: int,
          before_ts: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(neighbour ids [n_items + 1, k] int64, weights [n_items + 1, k] float32), row = TFT item index + 1.

    Row 0 is padding (history slot -1); -1 ids / 0 weights fill rows with fewer than k neighbours.
    """
    ok = (items >= 0) & (items < n_items)
    if before_ts is not None:
        ok &= times < before_ts
    u = np.unique(np.asarray(users)[ok], return_inverse=True)[1].ravel()
    n_users = int(u.max(initial=-1)) + 1
    if 8 * n_users * n_items > MAX_DENSE_BYTES:  # x and its transpose, float32: fail now, not out of memory later
        raise TooLarge(f"co-visitation table: {n_users:,} users x {n_items:,} items need "
                       f"{8 * n_users * n_items / 2**30:.1f} GiB dense here (limit {MAX_DENSE_BYTES / 2**30:.0f} GiB); "
                       f"the ranker's co-visitation features are built for catalogues and user bases the size of "
                       f"MovieLens 1M-10M")
    x = np.zeros((n_users, n_items), np.float32)
    x[u, np.asarray(items)[ok]] = 1.0
    norms = np.sqrt(x.sum(0))
    ids = np.full((n_items + 1, k), -1, np.int64)
    weights = np.zeros((n_items + 1, k), np.float32)
    kk = min(k, max(n_items - 1, 0))
    if kk == 0 or x.shape[0] == 0:
        return ids, weights
    xt = np.ascontiguousarray(x.T)
    for s in range(0, n_items, _BLOCK):
        co = xt[s:s + _BLOCK] @ x                                    # [b, n_items] co-occurrence counts
        denom = norms[s:s + _BLOCK, None] * norms[None, :]
        sim = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = 0.0   # never your own neighbour
        top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        w = np.take_along_axis(sim, top, 1)
        order = np.argsort(-w, axis=1, kind="stable")
        top, w = np.take_along_axis(top, order, 1), np.take_along_axis(w, order, 1)
        ids[s + 1:s + 1 + len(sim), :kk] = np.where(w > 0, top, -1)
        weights[s + 1:s + 1 + len(sim), :kk] = np.maximum(w, 0.0)
    return ids, weights
