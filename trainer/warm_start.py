"""Warm start: a new model begins from the previous one's weights, even though its vocabularies grew.

Continuous training retrains on the old data plus what users did since. New users, items and title tokens
enter the TF-Transform vocabularies, and a vocabulary is ordered by frequency, so the same id usually moves
to another index. Copying tables by position would hand an item another item's vector; here every
vocabulary-indexed table (``IndexEmbedding(vocab=...)``) is copied row by row through the two vocabularies,
new ids keep their fresh initialisation, and every other trainable variable is copied when its shape is
unchanged. The optimizer starts fresh (its moments belong to the old index layout).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Sequence

import numpy as np
import tensorflow as tf

from trainer.features import IndexEmbedding


def _decode(tokens: Iterable) -> List[str]:
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in tokens]


def row_map(old_vocab: Sequence[str], new_vocab: Sequence[str]) -> np.ndarray:
    """For each row of the new table, the old table's row holding the same id, or -1 for a new id.

    Rows follow ``IndexEmbedding``: row 0 is padding, row i + 1 is vocabulary index i, the last row is
    the OOV bucket (kept: it has learned what unseen ids look like).
    """
    old_index = {t: i for i, t in enumerate(old_vocab)}
    rows = np.full(len(new_vocab) + 2, -1, np.int64)
    rows[0], rows[-1] = 0, len(old_vocab) + 1
    for j, token in enumerate(new_vocab):
        i = old_index.get(token)
        if i is not None:
            rows[j + 1] = i + 1
    return rows


def embeddings(model: tf.Module) -> List[IndexEmbedding]:
    """The model's index embeddings in a stable order (tf.Module.submodules walks attributes sorted)."""
    return [m for m in model.submodules if isinstance(m, IndexEmbedding)]


def warm_start(new: tf.Module, old: tf.Module, vocabulary: Callable[[str, str], Sequence[str]]) -> Dict[str, int]:
    """Copies ``old``'s trainable weights into ``new`` (both built: their variables exist).

    ``vocabulary(side, name)`` returns the token list of vocabulary ``name`` for ``side`` "old" or "new".
    Returns counts: rows copied / new per vocabulary, dense variables copied and skipped (shape changed).
    """
    new_emb, old_emb = embeddings(new), embeddings(old)
    if [e.vocab for e in new_emb] != [e.vocab for e in old_emb]:  # layer names carry per-process counters
        raise ValueError("warm start needs the same model architecture: the previous model's embedding tables "
                         f"(by vocabulary) {[e.vocab for e in old_emb]} differ from {[e.vocab for e in new_emb]}")
    report: Dict[str, int] = {}
    done = set()
    cache: Dict[str, np.ndarray] = {}
    for n, o in zip(new_emb, old_emb):
        if not (n.embedding.built and o.embedding.built):  # a table the configured towers never call
            continue
        nv, ov = n.embedding.embeddings, o.embedding.embeddings
        done.update({id(nv), id(ov)})
        if nv.shape[1] != ov.shape[1]:
            report["skipped"] = report.get("skipped", 0) + 1
            continue
        if n.vocab is None:  # fixed index spaces (hour, weekday, buckets): same meaning by position
            if nv.shape == ov.shape:
                nv.assign(ov)
            else:
                report["skipped"] = report.get("skipped", 0) + 1
            continue
        if n.vocab not in cache:
            cache[n.vocab] = row_map(_decode(vocabulary("old", n.vocab)), _decode(vocabulary("new", n.vocab)))
        rows = cache[n.vocab]
        if len(rows) != nv.shape[0] or rows.max() >= ov.shape[0]:
            raise ValueError(f"embedding {n.name}: table sizes {ov.shape[0]} -> {nv.shape[0]} do not match "
                             f"vocabulary {n.vocab!r} ({len(rows) - 2} ids)")
        keep = rows >= 0
        value = nv.numpy()
        value[keep] = ov.numpy()[rows[keep]]
        nv.assign(value)
        report[f"{n.vocab}_rows_copied"] = int(keep.sum()) - 2
        report[f"{n.vocab}_rows_new"] = int((~keep).sum())
    rest_new = [v for v in new.trainable_variables if id(v) not in done]
    rest_old = [v for v in old.trainable_variables if id(v) not in done]
    copied = skipped = 0
    for nv, ov in zip(rest_new, rest_old):
        if nv.shape == ov.shape:
            nv.assign(ov)
            copied += 1
        else:
            skipped += 1
    report["dense_copied"] = copied
    report["skipped"] = report.get("skipped", 0) + skipped + abs(len(rest_new) - len(rest_old))
    return report
