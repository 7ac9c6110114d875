"""item2vec (Barkan & Koenigstein 2016) and Meta-Prod2Vec (Vasile et al. 2016) item embeddings, in TensorFlow.

Skip-gram with negative sampling over user histories: items a user consumed close together
(within ``window`` positions, in time order) get similar vectors. Meta-Prod2Vec adds the
items' genres as extra tokens in the same space and extra pairs weighted by ``side_weight``
(item -> neighbour's genre, genre -> neighbour item, item <-> its own genre), so items with
few interactions are pulled towards their genre; an item never seen in training gets the
mean of its genres' vectors. The vectors serve item-to-item "similar items" (cosine,
``trainer/export_similar.py``) and, pooled over a history, a next-item recommender.

Only the train split is read, so no evaluation event leaks into the embeddings.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from preprocessing.utf8 import to_str
from trainer import data, optimizers


# ---------------------------------------------------------------- input: user histories
def user_sequences(version_dir: str, catalogue: data.Catalogue, split: str = "train",
                   before_ts: Optional[data.Cut] = None) -> Dict[str, np.ndarray]:
    """user_id -> catalogue indices of the user's events in ``split`` (before ``before_ts`` when given), in time
    order (ties by item id)."""
    spec = {"user_id": tf.io.FixedLenFeature([], tf.string), "item_id": tf.io.FixedLenFeature([], tf.string),
            "timestamp": tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(data.files(version_dir, split), compression_type="GZIP").batch(8192)
    users, items, ts = [], [], []
    for b in ds.map(lambda x: tf.io.parse_example(x, spec)):
        users.append(b["user_id"].numpy())
        items.append(b["item_id"].numpy())
        ts.append(b["timestamp"].numpy())
    if not users:
        return {}
    u = to_str(np.concatenate(users))  # UTF-8 ids (not .astype(str): numpy decodes bytes as ASCII)
    it = to_str(np.concatenate(items))
    t = np.concatenate(ts)
    if before_ts is not None:
        early = data.before_mask(u, t, before_ts)
        u, it, t = u[early], it[early], t[early]
    index = catalogue.index()
    idx = np.array([index.get(i, -1) for i in it], np.int64)
    order = np.lexsort((it, t, u))
    u, idx = u[order], idx[order]
    bounds = np.flatnonzero(u[1:] != u[:-1]) + 1
    return {chunk_u[0]: chunk_i[chunk_i >= 0] for chunk_u, chunk_i in zip(np.split(u, bounds), np.split(idx, bounds))}


def item_genres(catalogue: data.Catalogue) -> Tuple[List[np.ndarray], List[str]]:
    """Per item, its genre token indices (0..n_genres-1), and the genre names."""
    lists = [[g for g in s.split("|") if g] for s in catalogue.raw["item_genres"].astype(str)]
    names = sorted({g for gs in lists for g in gs})
    col = {g: n for n, g in enumerate(names)}
    return [np.array([col[g] for g in gs], np.int64) for gs in lists], names


# ---------------------------------------------------------------- skip-gram pairs
def skipgram_pairs(sequences: List[np.ndarray], window: int, rng: np.random.Generator,
                   keep_prob: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(target, context) pairs of items within ``window`` positions of each other in one sequence (both orders).

    ``keep_prob[item]`` subsamples frequent items first (Mikolov et al. 2013), as word2vec does.
    """
    seqs = [s for s in sequences if len(s)]
    if keep_prob is not None:
        seqs = [s[rng.random(len(s)) < keep_prob[s]] for s in seqs]
    seqs = [s for s in seqs if len(s) > 1]
    if not seqs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    flat = np.concatenate(seqs)
    owner = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    targets, contexts = [], []
    for offset in range(1, window + 1):
        same = owner[:-offset] == owner[offset:]
        a, b = flat[:-offset][same], flat[offset:][same]
        targets += [a, b]
        contexts += [b, a]
    return np.concatenate(targets), np.concatenate(contexts)


def meta_pairs(targets: np.ndarray, contexts: np.ndarray, genres: List[np.ndarray], n_items: int,
               rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Meta-Prod2Vec's side-information pairs, genre tokens numbered from ``n_items``.

    For each item pair (i, j): (i, genre(j)) and (genre(i), j); for each item once: (i, genre(i))
    and (genre(i), i). A random one of an item's genres is used each time; items without genres add none.
    """
    n_g = np.array([len(g) for g in genres])
    offsets = np.concatenate([[0], np.cumsum(n_g)])
    flat = np.concatenate(genres + [np.empty(0, np.int64)])

    def pick(items: np.ndarray) -> np.ndarray:
        has = n_g[items] > 0
        choice = offsets[items] + (rng.random(len(items)) * np.maximum(n_g[items], 1)).astype(np.int64)
        return np.where(has, n_items + flat[np.minimum(choice, max(len(flat) - 1, 0))] if len(flat) else -1, -1)

    all_items = np.unique(np.concatenate([targets, contexts])) if len(targets) else np.empty(0, np.int64)
    gi, gj, own = pick(targets), pick(contexts), pick(all_items)
    t = np.concatenate([targets, gi, all_items, own])
    c = np.concatenate([gj, contexts, own, all_items])
    ok = (t >= 0) & (c >= 0)
    return t[ok], c[ok]


# ---------------------------------------------------------------- the model
class SkipGram(tf.Module):
    """Target and context tables; loss = -log s(t.c) - sum_k log s(-t.n_k), n_k ~ unigram^0.75."""

    def __init__(self, vocab_size: int, dim: int, counts: np.ndarray, negatives: int, seed: int = 0):
        super().__init__()
        init = tf.random.stateless_uniform([vocab_size, dim], seed=[seed, 1], minval=-0.5 / dim, maxval=0.5 / dim)
        self.target = tf.Variable(init, name="target")
        self.context = tf.Variable(tf.zeros([vocab_size, dim]), name="context")
        p = np.power(np.asarray(counts, np.float64) + 1e-3, 0.75)
        # negatives by inverse-CDF lookup: a binary search per draw, the same distribution as
        # tf.random.categorical over the log-probabilities and about 10% less time per epoch on ml-latest-small
        cdf = np.cumsum(p)
        self.noise_cdf = tf.constant(cdf / cdf[-1], tf.float64)  # last entry exactly 1: a draw in [0, 1) finds an item
        self.negatives = negatives

    def loss(self, t, c, w):
        tv = tf.gather(self.target, t)
        pos = tf.reduce_sum(tv * tf.gather(self.context, c), axis=1)
        draws = tf.random.uniform([tf.shape(t)[0] * self.negatives], dtype=tf.float64)
        neg_ids = tf.reshape(tf.searchsorted(self.noise_cdf, draws, side="right"), [-1, self.negatives])
        neg = tf.einsum("bd,bkd->bk", tv, tf.gather(self.context, neg_ids))
        per_pair = tf.nn.softplus(-pos) + tf.reduce_sum(tf.nn.softplus(neg), axis=1)
        return tf.reduce_sum(w * per_pair) / tf.maximum(tf.reduce_sum(w), 1e-9)


@dataclasses.dataclass
class ItemEmbeddings:
    """Unit-norm item vectors in catalogue order (+ genre token vectors when side information was used), both
    with the trained items' shared direction taken out."""

    item_ids: np.ndarray          # [n] str, catalogue order
    vectors: np.ndarray           # [n, dim] float32, centred on the trained items, then L2-normalised
    genre_names: List[str]
    genre_vectors: np.ndarray     # [n_genres, dim]
    train_counts: np.ndarray      # [n] train events per item
    history: List[float]          # mean loss per epoch
    train_seconds: float
    side_information: bool

    def neighbours(self, item_index: int, k: int = 10) -> np.ndarray:
        """Catalogue indices of the k most similar items (cosine), the item itself left out."""
        s = self.vectors @ self.vectors[item_index]
        s[item_index] = -np.inf
        return np.argsort(-s, kind="stable")[:k]

    def history_queries(self, history_idx: np.ndarray) -> np.ndarray:
        """[B, dim] query vectors: the normalised mean of each row's history item vectors (-1 = pad)."""
        h = np.asarray(history_idx)
        valid = (h >= 0)[..., None]
        q = (self.vectors[np.maximum(h, 0)] * valid).sum(1)
        return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-9)


def train_item2vec(sequences: List[np.ndarray], catalogue: data.Catalogue, icfg, seed: int = 0,
                   log=print) -> ItemEmbeddings:
    """Trains (Meta-)item2vec on catalogue-index sequences; returns normalised item vectors."""
    n = catalogue.size
    rng = np.random.default_rng(seed)
    counts = np.bincount(np.concatenate([s for s in sequences if len(s)] or [np.empty(0, np.int64)]),
                         minlength=n).astype(np.float64)
    genres, genre_names = item_genres(catalogue)
    side = bool(icfg.side_information) and bool(genre_names)
    vocab = n + (len(genre_names) if side else 0)
    keep = None
    if icfg.subsample > 0 and counts.sum() > 0:
        f = counts / counts.sum()
        keep = np.minimum(1.0, np.sqrt(icfg.subsample / np.maximum(f, 1e-12)) + icfg.subsample / np.maximum(f, 1e-12))
    token_counts = counts.copy()
    if side:
        g_counts = np.zeros(len(genre_names))
        for i, g in enumerate(genres):
            g_counts[g] += counts[i]
        token_counts = np.concatenate([counts, g_counts])
    model = SkipGram(vocab, icfg.dim, token_counts, icfg.negatives, seed)
    # item2vec.optimizer: adam = one fused kernel per table (dense moments, as Keras' Adam computes them);
    # sparse_adam (lazy Adam) touches only the rows a step looked up, for catalogues where decaying two whole
    # tables every step would dominate it (on ml-latest-small it cost the two-tower 3% of nDCG@10)
    opt = optimizers.build(icfg)
    opt.build([model.target, model.context])  # slots before the first trace: the epoch is traced once, not twice

    batch = int(icfg.batch_size)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None], tf.float32)])
    def run_epoch(t: tf.Tensor, c: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        """Every step of an epoch in one graph (no Python between steps); the mean of the steps' losses.

        Each step's batch is a slice of the epoch's shuffled pairs. A tf.data iterator inside the loop
        made each step about a fifth slower, and in some processes (4 of 15 measured, 2 cores) almost twice
        as slow; the cause was not pinned down, slicing has neither."""
        n = tf.shape(t, out_type=tf.int64)[0]
        steps = (n + batch - 1) // batch
        total = tf.constant(0.0)
        for i in tf.range(steps):
            lo = i * batch
            hi = tf.minimum(lo + batch, n)
            with tf.GradientTape() as tape:
                loss = model.loss(t[lo:hi], c[lo:hi], w[lo:hi])
            grads = tape.gradient(loss, [model.target, model.context])
            opt.apply_gradients(zip(grads, [model.target, model.context]))
            total += loss
        return total / tf.maximum(tf.cast(steps, tf.float32), 1.0)

    tf.random.set_seed(seed)
    history = []
    t0 = time.time()
    for epoch in range(icfg.epochs):
        t, c = skipgram_pairs(sequences, icfg.window, rng, keep)  # fresh subsample every epoch
        w = np.ones(len(t), np.float32)
        if side and len(t):
            mt, mc = meta_pairs(t, c, genres, n, rng)
            t, c = np.concatenate([t, mt]), np.concatenate([c, mc])
            w = np.concatenate([w, np.full(len(mt), icfg.side_weight, np.float32)])
        if not len(t):
            raise ValueError("no item pairs to train on: every user history has fewer than two items")
        order = rng.permutation(len(t))
        history.append(float(run_epoch(t[order].astype(np.int64, copy=False), c[order].astype(np.int64, copy=False),
                                       w[order])))
        log(f"[item2vec] epoch {epoch + 1}/{icfg.epochs} {time.time() - t0:6.1f}s loss={history[-1]:.4f} "
            f"pairs={len(t)}")
    target = model.target.numpy()
    vectors = target[:n].copy()
    genre_vectors = target[n:].copy() if side else np.zeros((0, icfg.dim), np.float32)
    if side:  # cold items: the mean of their genres' vectors (content fallback)
        for i in np.flatnonzero(counts == 0):
            if len(genres[i]):
                vectors[i] = genre_vectors[genres[i]].mean(0)
    # Skip-gram's input vectors share one large common direction (it is most of a row's norm), which carries
    # no item's identity but decides cosine: it favours items whose own part is small. Removed before the
    # rows are normalised ("all-but-the-top", Mu & Viswanath 2018), the neighbours of ml-latest-small's
    # leave-one-out recommender went from recall@50 0.1295 to 0.2557 (popularity 0.1148, EASE 0.2639).
    # Genre tokens share the space, so they move by the same vector and a cold item stays its genres' mean.
    trained = counts > 0  # (one trained item alone would be all shared: left as it is)
    shared = vectors[trained].mean(0) if trained.sum() > 1 else np.zeros(icfg.dim, np.float32)
    vectors -= shared
    genre_vectors -= shared  # (no genres: an empty [0, dim] array, unchanged)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    return ItemEmbeddings(item_ids=catalogue.item_ids, vectors=vectors.astype(np.float32), genre_names=genre_names,
                          genre_vectors=genre_vectors, train_counts=counts, history=history,
                          train_seconds=time.time() - t0, side_information=side)
