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

_BLOCK = 1024  # most item rows of the item x item similarity computed at a time
BLOCK_BYTES = 512 << 20  # and at most this much dense memory per block (fewer rows for big catalogues / user bases)
DENSE_BYTES = 1 << 30  # up to here the users x items matrix (and its transpose) is dense: BLAS beats sparse products
MAX_WORK = 4e12  # multiply-adds (interactions x items) beyond which the exact table would take hours here


class TooLarge(ValueError):
    """The interactions are beyond what this exact builder finishes in reasonable time; the message says why."""


def table(users: np.ndarray, items: np.ndarray, times: np.ndarray, n_items: int, k: int,
          before_ts: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(neighbour ids [n_items + 1, k] int64, weights [n_items + 1, k] float32), row = TFT item index + 1.

    Row 0 is padding (history slot -1); -1 ids / 0 weights fill rows with fewer than k neighbours.
    Past ``DENSE_BYTES`` the user x item matrix is never dense: a block of items' co-occurrence counts is the
    sparse item x user matrix times that block's dense user columns, so memory follows the interactions and
    ``BLOCK_BYTES``, not users x items (MovieLens-20M-sized random data, 138K users x 27K items, 20M events:
    236 s, 2.9 GiB peak). Below it (MovieLens 1M and smaller) dense BLAS products are faster; both give the
    same table.
    """
    ok = (items >= 0) & (items < n_items)
    if before_ts is not None:
        ok &= times < before_ts
    u = np.unique(np.asarray(users)[ok], return_inverse=True)[1].ravel().astype(np.int64)
    n_users = int(u.max(initial=-1)) + 1
    ids = np.full((n_items + 1, k), -1, np.int64)
    weights = np.zeros((n_items + 1, k), np.float32)
    kk = min(k, max(n_items - 1, 0))
    if kk == 0 or n_users == 0:
        return ids, weights
    pairs = np.unique(np.asarray(items)[ok].astype(np.int64) * n_users + u)  # (item, user) once each, item-major
    ii, uu = pairs // n_users, pairs % n_users
    if float(len(pairs)) * n_items > MAX_WORK:
        raise TooLarge(f"co-visitation table: {len(pairs):,} distinct user-item pairs x {n_items:,} items is "
                       f"{len(pairs) * n_items:.1e} multiply-adds (limit {MAX_WORK:.0e}, hours on this machine); "
                       f"lower the catalogue (e.g. drop items with very few events) or set "
                       f"ranking.covisit_neighbours=0 to train the ranker without co-visitation features")
    norms = np.sqrt(np.bincount(ii, minlength=n_items).astype(np.float32))
    block = int(max(1, min(_BLOCK, BLOCK_BYTES // (4 * (n_users + 4 * n_items)))))
    counts = _block_counts(ii, uu, n_items, n_users, block)
    for s in range(0, n_items, block):
        e = min(s + block, n_items)
        co = counts(s, e)                                            # [b, n_items] co-occurrence counts
        denom = norms[s:e, None] * norms[None, :]
        sim = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
        sim[np.arange(len(sim)), np.arange(s, e)] = 0.0              # never your own neighbour
        top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        w = np.take_along_axis(sim, top, 1)
        order = np.argsort(-w, axis=1, kind="stable")
        top, w = np.take_along_axis(top, order, 1), np.take_along_axis(w, order, 1)
        ids[s + 1:e + 1, :kk] = np.where(w > 0, top, -1)
        weights[s + 1:e + 1, :kk] = np.maximum(w, 0.0)
    return ids, weights


def _block_counts(ii: np.ndarray, uu: np.ndarray, n_items: int, n_users: int, block: int):
    """``counts(s, e)`` -> [e - s, n_items] float32: how many users had both item s+j and each item."""
    if 8 * n_users * n_items <= DENSE_BYTES:
        x = np.zeros((n_users, n_items), np.float32)
        x[uu, ii] = 1.0
        xt = np.ascontiguousarray(x.T)
        return lambda s, e: xt[s:e] @ x
    import tensorflow as tf  # only here: the CLI imports this module for TooLarge

    item_user = tf.sparse.SparseTensor(np.stack([ii, uu], 1), tf.ones(len(ii), tf.float32), [n_items, n_users])
    starts = np.searchsorted(ii, np.arange(0, n_items + block, block))  # (item, user) pairs are sorted by item

    def counts(s: int, e: int) -> np.ndarray:
        cols = np.zeros((n_users, e - s), np.float32)                # the block's items, as dense user columns
        lo, hi = starts[s // block], starts[s // block + 1]
        cols[uu[lo:hi], ii[lo:hi] - s] = 1.0
        return tf.sparse.sparse_dense_matmul(item_user, cols).numpy().T
    return counts
