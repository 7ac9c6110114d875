"""SavedModel export in TF Serving layout: ``<base>/<name>/<version>/``, raw features in.

The transform graph (TFT layer) is tracked inside every export, so serving takes
the raw features of ``preprocessing.schema`` and never re-implements a vocabulary.
Each version is written to a hidden temporary sibling and moved into place
(``trainer/publish.py``: a rename locally, copy + marker on object stores): TF Serving
(and our server) only load integer directories, so a reader never sees a half-written
version. Any filesystem tf.io.gfile supports (``recsys.fileio``). ScaNN indexes need
``namespace_whitelist=["Scann"]`` and the ScaNN ops at load time (``serving.ops.load_scann_ops``).
"""
from __future__ import annotations

import contextlib
import time
import uuid
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from preprocessing import schema
from preprocessing.utf8 import to_bytes
from recsys import fileio


def new_version(cfg_version: int = 0) -> int:
    return int(cfg_version) or int(time.time())


def query_signature_specs(history_length: Optional[int] = None) -> Dict[str, tf.TensorSpec]:
    return schema.serving_signature([schema.USER, schema.CONTEXT, schema.HISTORY], history_length)


def history_length(tft_output) -> int:
    """The history length the preprocessing behind ``tft_output`` wrote (the serving inputs' [batch, L])."""
    return schema.history_length_of(tft_output.transformed_feature_spec())


def _kwargs_function(fn, specs: Dict[str, tf.TensorSpec]):
    """A concrete function whose signature inputs are named exactly as the raw features."""
    return tf.function(fn).get_concrete_function(**specs)


class RetrievalModule(tf.Module):
    """tft_layer -> query tower -> top-k index (ScaNN or brute force) -> item ids + scores."""

    def __init__(self, tft_layer, query_tower, index, k: int):
        super().__init__()
        self.tft_layer = tft_layer
        self.query_tower = query_tower
        self.index = index
        self.k = k

    def retrieve(self, **raw):
        feats = self.tft_layer(raw)
        query = self.query_tower(feats, training=False)
        scores, ids = self.index(query, k=self.k)
        return {"item_ids": ids, "scores": scores}

    def embed(self, **raw):
        return {"query_embedding": self.query_tower(self.tft_layer(raw), training=False)}


def scann_leaves(n: int, ecfg, k: int = 0) -> tuple:
    """Partitioning defaults: sqrt(n) leaves; search 10% of them but at least ~5000 items' worth, and enough
    leaves to hold ~2x the ``k`` fetched (ScaNN returns at most the points in the leaves it searches).

    Small catalogues are then searched almost exhaustively (recall ~1); at 1M items this is
    1000 leaves / 100 searched, recall@10 ~0.99 in benchmarks/ann.py.
    """
    leaves = ecfg.scann_num_leaves or max(1, int(np.sqrt(n)))
    per_leaf = max(n / leaves, 1.0)
    to_search = ecfg.scann_leaves_to_search or max(int(np.ceil(0.1 * leaves)), int(np.ceil(5000 / per_leaf)))
    to_search = max(to_search, int(np.ceil(2.0 * k * leaves / max(n, 1))))
    return leaves, max(1, min(to_search, leaves))


# Below this many items the ScaNN index scores every item exactly: its asymmetric-hashing codebooks
# (16 centres per block) cannot be trained on fewer than 16 items, and under a few hundred a tree and
# codebooks buy nothing over a brute-force pass (still a ScaNN searcher, so the exported graph is the same).
SCANN_EXACT_BELOW = 256


def _exact_scann_searcher(name: str, k: int):
    from scann import scann_ops

    return lambda candidates: scann_ops.builder(db=candidates, num_neighbors=k, distance_measure="dot_product") \
        .score_brute_force().build(shared_name=f"{name}/{uuid.uuid4()}")


def indexed(item_vectors: np.ndarray) -> int:
    """How many items ``build_index`` will hold (rows with finite vectors)."""
    return int(np.isfinite(np.asarray(item_vectors)).all(axis=1).sum())


def build_index(kind: str, item_ids: Optional[np.ndarray], item_vectors: np.ndarray, k: int,
                ecfg) -> tf.keras.layers.Layer:
    """A TFRS top-k layer over ``item_vectors`` (``scann`` or ``brute_force``) returning ``item_ids``, or the
    catalogue positions (int32) when ``item_ids`` is None, so a graph can gather the candidates' own features.
    Rows that are not finite (items the index leaves out: trainer/unseen_items.py) are skipped; ``k`` is capped
    at the indexed items' number (a 15-item shop answers with 15, not an error)."""
    item_vectors = np.asarray(item_vectors)
    keep = np.isfinite(item_vectors).all(axis=1)
    positions = np.flatnonzero(keep).astype(np.int32)
    if not keep.all():
        item_vectors = item_vectors[keep]
        item_ids = None if item_ids is None else np.asarray(item_ids)[keep]
    n = len(item_vectors)
    if n == 0:
        raise ValueError("no item to index: every item vector is missing (NaN)")
    k = max(1, min(k, n))
    if kind == "scann":
        leaves, to_search = scann_leaves(n, ecfg, k)
        index = tfrs.layers.factorized_top_k.ScaNN(
            k=k, num_leaves=leaves, num_leaves_to_search=to_search,
            num_reordering_candidates=max(ecfg.scann_reordering, k))
        if n < SCANN_EXACT_BELOW:
            index._build_searcher = _exact_scann_searcher(index.name, k)  # noqa: SLF001 (TFRS has no option)
    elif kind == "brute_force":
        index = tfrs.layers.factorized_top_k.BruteForce(k=k)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    if item_ids is None:
        index.index(tf.constant(item_vectors, tf.float32), tf.constant(positions))
    else:
        index.index(tf.constant(item_vectors, tf.float32), tf.constant(to_bytes(item_ids), tf.string))
    return index


def write_warmup(version_dir: str, model_name: str, example: Dict[str, np.ndarray],
                 signature_names: Sequence[str] = ("serving_default",)) -> str:
    """assets.extra/tf_serving_warmup_requests: ``example`` once per signature (contracts/warmup.py, the records
    TF Serving and the server replay at load)."""
    from contracts.warmup import write_warmup_requests

    return write_warmup_requests(version_dir, model_name, [example], signature_names)


def _signatures_only():
    """Skips Keras' traces of every layer's ``call`` (its own loader's ``save_traces``): TF Serving, our server
    and every reload here read the signatures alone, and those traces were about half of the exports' time
    (the --quick demo's four: 35.5 -> 18.8 s). The signatures, variables and assets are saved as before."""
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # another Keras layout: save as Keras would by default
        return contextlib.nullcontext()
    return keras_option_scope(save_traces=False)


def save_atomically(module: tf.Module, signatures: Dict, base: str, name: str, version: int,
                    warmup: Optional[Dict[str, np.ndarray]] = None, namespace_whitelist=None,
                    warmup_signatures: Sequence[str] = ("serving_default",)) -> str:
    """Saves into ``<base>/<name>/.tmp-<version>-<pid>``, then publishes it (``trainer/publish.py``).
    ``warmup``: one request, written as a warmup record for each of ``warmup_signatures``."""
    from trainer import publish  # completion marker last, then the move (with its export set, if any)

    model_dir = fileio.join(base, name)
    final = fileio.join(model_dir, str(version))
    if fileio.exists(final):
        raise FileExistsError(f"{final} already exists; versions are immutable")
    tmp = fileio.join(model_dir, publish.tmp_name(version, base))
    fileio.rmtree(tmp)
    fileio.makedirs(model_dir)
    options = tf.saved_model.SaveOptions(namespace_whitelist=namespace_whitelist) if namespace_whitelist else None
    with _signatures_only():
        tf.saved_model.save(module, tmp, signatures=signatures, options=options)
    if warmup is not None:
        write_warmup(tmp, name, warmup, warmup_signatures)
    return publish.publish_version(base, tmp, final)


def export_retrieval(tft_output, query_tower, item_ids: np.ndarray, item_vectors: np.ndarray, base: str,
                     version: int, ecfg, kind: str = "scann", name: Optional[str] = None,
                     warmup: Optional[Dict[str, np.ndarray]] = None) -> str:
    """Exports one retrieval model (``retrieval`` = ScaNN, ``retrieval_brute_force`` = exact)."""
    name = name or ("retrieval" if kind == "scann" else "retrieval_brute_force")
    k = min(ecfg.top_k, indexed(item_vectors))
    index = build_index(kind, item_ids, item_vectors, k, ecfg)
    module = RetrievalModule(tft_output.transform_features_layer(), query_tower, index, k)
    specs = query_signature_specs(history_length(tft_output))
    serve = _kwargs_function(module.retrieve, specs)
    if kind == "scann":  # ScaNN builds its searcher lazily: call once before saving
        serve(**{k_: tf.constant(v) for k_, v in (warmup or _dummy(specs)).items()})
    signatures = {"serving_default": serve, "query_embedding": _kwargs_function(module.embed, specs)}
    return save_atomically(module, signatures, base, name, version, warmup,
                           namespace_whitelist=["Scann"] if kind == "scann" else None)


def _dummy(specs: Dict[str, tf.TensorSpec]) -> Dict[str, np.ndarray]:
    out = {}
    for key, spec in specs.items():
        col = schema.COLUMNS[key]
        shape = [1] + spec.shape.as_list()[1:]  # the signature's own length (history length is a setting)
        out[key] = np.full(shape, col.pad_value(), dtype=object if col.dtype == "string" else col.dtype)
    return out
