"""Item tables started from item2vec vectors instead of random ones (``retrieval.item_init=item2vec``).

Skip-gram over user histories (trainer/models/item2vec.py) puts items consumed close together near each
other; starting the two-tower's item id tables there hands it that neighbourhood before its first step,
which matters most for items with few events, where the in-batch softmax sees too few examples to place
them. item2vec reads the train split only, so no evaluation event leaks in. Rows are copied by item id
through the TF-Transform vocabulary (as a warm start does), scaled to the norm of the table's own random
rows so the optimizer starts on the same footing; ids item2vec has no vector for keep their random row.

The rows are centred. Skip-gram's raw input vectors share one large common direction (on a shop log of
one-category customers their mean was 0.99 of a row's norm), so uncentred every item starts nearly parallel:
the in-batch softmax begins unable to tell items apart, and three epochs did not undo it (recall@50
0.54-0.60 against 0.67 from random rows; 0.71-0.72 centred). item2vec now returns centred vectors
(trainer/models/item2vec.py); ``copy_rows`` centres again over the ids it copies, so no vector source
can hand the shared direction over.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.utf8 import to_str
from trainer import data
from trainer.models import item2vec
from trainer.warm_start import embeddings, row_map


def item_tables(model: tf.Module, dim: int) -> list:
    """The model's built item-id tables of width ``dim`` (candidate ids, next-item, sequence tables; not the bias)."""
    return [e for e in embeddings(model) if e.vocab == schema.VOCAB_ITEM and e.embedding.built and e.dim == dim]


def copy_rows(tables: list, vectors: np.ndarray, item_ids: Sequence[str], vocab: Sequence[str]) -> int:
    """Writes ``vectors`` (one per ``item_ids``), centred over the ids found, into each table's rows for those
    ids at each table's own mean row norm; returns the rows written per table."""
    rows = row_map(list(item_ids), list(vocab))  # table row -> index + 1 into item_ids, or -1
    keep = rows >= 0
    keep[0] = keep[-1] = False  # padding and the OOV bucket keep their own rows
    src = vectors[rows[keep] - 1]
    if len(src) > 1:  # the shared direction carries no item's identity (one row alone would be all shared)
        src = src - src.mean(axis=0, keepdims=True)
    src = src / np.maximum(np.linalg.norm(src, axis=1, keepdims=True), 1e-9)
    for t in tables:
        value = t.embedding.embeddings.numpy()
        if value.shape[0] != len(rows):
            raise ValueError(f"item table {t.name} has {value.shape[0]} rows; vocabulary {t.vocab!r} needs {len(rows)}")
        norm = float(np.linalg.norm(value[1:-1], axis=1).mean())
        value[keep] = src * norm
        t.embedding.embeddings.assign(value)
    return int(keep.sum())


_LAST: Dict = {}   # the last item2vec run in this process: its key and vectors (one, to bound memory)


def from_item2vec(model: tf.Module, version_dir: str, catalogue: data.Catalogue, vocab: Sequence[str], cfg,
                  before_ts: Optional[data.Cut] = None, log: Callable[[str], None] = print) -> Dict[str, int]:
    """Trains item2vec (the ``item2vec.*`` settings at the model's id width, ``retrieval.item_init_epochs``
    epochs) on the train split (events before ``before_ts`` when given) and copies it into ``model``'s item
    tables."""
    dim = cfg.retrieval.id_dim
    tables = item_tables(model, dim)
    if not tables:
        raise ValueError(f"retrieval.item_init=item2vec: the model has no built item table of width {dim}")
    icfg = dataclasses.replace(cfg.item2vec, dim=dim, epochs=cfg.retrieval.item_init_epochs)
    key = (version_dir, before_ts, dataclasses.astuple(icfg), cfg.train.seed)
    seconds = 0.0
    if _LAST.get("key") == key:  # `recsys tune`: trials that change neither reuse the vectors (seeded: the same)
        emb = _LAST["emb"]
        log("[train] item2vec: the same events and settings as the last model's, its vectors reused")
    else:
        seqs = item2vec.user_sequences(version_dir, catalogue, before_ts=before_ts)
        if not any(len(q) > 1 for q in seqs.values()):  # nothing co-occurs: the random rows are as good
            log("[train] retrieval.item_init=item2vec: no user has two train events; item rows stay random")
            return {"item_rows_from_item2vec": 0, "tables": len(tables)}
        emb = item2vec.train_item2vec(list(seqs.values()), catalogue, icfg, seed=cfg.train.seed, log=log)
        _LAST.update(key=key, emb=emb)
        seconds = emb.train_seconds
    n = copy_rows(tables, emb.vectors, to_str(emb.item_ids).tolist(), to_str(vocab).tolist())
    return {"item_rows_from_item2vec": n, "tables": len(tables), "item2vec_seconds": round(seconds, 1)}

