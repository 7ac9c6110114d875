"""Extra rows for ``benchmarks/quality.py``: sequence query towers, item2vec neighbours and Mult-VAE.

Every model here is scored on the quality benchmark's own queries (the same eval events,
targets and exclusions as the two-tower row: ``ev`` from ``quality.full_ranking``), so its
rows sit beside popularity, the classic baselines and the mean-pool two-tower on the same split.

* ``gru`` / ``transformer``: the two-tower with ``retrieval.history_encoder`` set
  (``trainer/models/sequence.py``), trained exactly like the ``two_tower`` row.
* ``item2vec``: Meta-Prod2Vec vectors (``trainer/models/item2vec.py``) trained on the split's
  train events; a query is the normalised mean of its history items' vectors, ranked by cosine.
* ``mult_vae``: Mult-VAE (``trainer/models/vae.py``) on the train users' item bags; a query's
  bag is its prior items (everything the user had before the event).

Per row: training seconds, and for exported models the median in-process latency of one
batch-1 call to the exported SavedModel (ScaNN inside), so the cost of a model is shown
beside its quality.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

MODELS = ("gru", "transformer", "item2vec", "mult_vae")


def model_list(spec: str) -> List[str]:
    names = [] if spec.strip().lower() == "none" else [m.strip() for m in spec.split(",") if m.strip()]
    for m in names:
        if m not in MODELS:
            raise SystemExit(f"--models: unknown model {m!r}; choose from {', '.join(MODELS)} or 'none'")
    return names


def _queries(version_dir: str, query_fn: Callable, trained, cfg):
    """(query vectors, targets) on the eval split, through the evaluation's own query loader."""
    from trainer import evaluate_retrieval as er

    if hasattr(er, "load_queries"):
        eq = er.load_queries(version_dir, query_fn, trained.catalogue, trained.stats, cfg.eval.max_queries)
        return eq.vectors, eq.targets
    q, targets, _, _ = er.eval_queries(version_dir, query_fn, trained.catalogue, trained.stats,
                                       cfg.eval.exclude_seen, cfg.eval.max_queries)
    return q, targets


def _latency_ms(model_dir: str, request: Dict[str, np.ndarray], calls: int = 30) -> float:
    """Median wall time of one call to the exported serving_default (in process, after a warm-up call)."""
    import tensorflow as tf

    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    inputs = {k: tf.constant(v) for k, v in request.items()}
    fn(**inputs)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(**inputs)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _sample_request(version_dir: str, trained) -> Dict[str, np.ndarray]:
    """One raw eval-period query (the first eval event's raw features) for latency measurements."""
    from preprocessing import schema
    from trainer import data

    batch = next(iter(data.dataset(version_dir, "eval", 1)))
    return {k: batch[k].numpy() for k in schema.QUERY_FEATURES}


def extra_topks(protocol: str, version_dir: str, trained, ev: Dict[str, Any], cfg, names: Sequence[str],
                work: str, log: Callable[[str], None], tag: str, kmax: int = 100) -> Dict[str, Any]:
    """Top-``kmax`` lists of the requested models on ``ev``'s queries; {"topk", "extra", "timings", "vectors"}.

    ``vectors``: each model's (query vectors, item vectors), whose dot product is its score: what the
    sampled protocol (``quality.sampled``) ranks the test item and its sampled negatives by."""
    from trainer import evaluation

    topk: Dict[str, np.ndarray] = {}
    extra: Dict[str, Dict[str, Any]] = {}
    timings: Dict[str, float] = {}
    vectors: Dict[str, tuple] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            fn = {"gru": _sequence, "transformer": _sequence, "item2vec": _item2vec, "mult_vae": _vae}[name]
            q, item_vectors, targets, info = fn(name, protocol, version_dir, trained, ev, cfg, work, log)
            if not np.array_equal(np.asarray(targets), np.asarray(ev["targets"])):
                raise RuntimeError(f"{name}: its eval queries differ from the two-tower's")
            topk[name] = evaluation.full_ranking_topk(q, item_vectors, kmax, ev["exclude"])
            vectors[name] = (np.asarray(q), np.asarray(item_vectors))
            extra[name] = info
        except Exception as e:  # noqa: BLE001  (one failing model must not cost the other rows)
            import traceback

            traceback.print_exc()
            log(f"[{tag}] {name} failed: {type(e).__name__}: {e}")
            extra[name] = {"error": f"{type(e).__name__}: {e}"}
        timings[f"{name}_{protocol}_s"] = time.perf_counter() - t0
    return {"topk": topk, "extra": {k: v for k, v in extra.items() if k in topk}, "timings": timings,
            "vectors": vectors, "errors": {k: v["error"] for k, v in extra.items() if "error" in v}}


# ---------------------------------------------------------------- the models
def _sequence(name, protocol, version_dir, trained, ev, cfg, work, log):
    from trainer import evaluate_retrieval as er
    from trainer import export
    from trainer import train as trainer_train

    c = copy.deepcopy(cfg)
    c.retrieval.history_encoder = name
    t0 = time.perf_counter()
    model = trainer_train.train_retrieval(version_dir, c, out_dir=os.path.join(work, f"train_{name}_{protocol}"))
    vectors = er.catalogue_vectors(model)
    train_s = time.perf_counter() - t0
    log(f"[{protocol}] {name}: trained in {train_s:.0f} s")
    q, targets = _queries(version_dir, lambda b: model.model.query_tower(b), model, c)
    info: Dict[str, Any] = {"train_s": round(train_s, 1)}
    try:
        path = export.export_retrieval(model.tft_output, model.model.query_tower, model.catalogue.item_ids, vectors,
                                       os.path.join(work, f"models_{protocol}"), 1, c.export, kind="scann",
                                       name=f"retrieval_{name}")
        info["serving_ms"] = round(_latency_ms(path, _sample_request(version_dir, model)), 2)
    except Exception as e:  # noqa: BLE001
        info["serving_error"] = f"{type(e).__name__}: {e}"
    return q, vectors, targets, info


def _item2vec(name, protocol, version_dir, trained, ev, cfg, work, log):
    from trainer import export_similar
    from trainer.models import item2vec

    t0 = time.perf_counter()
    seqs = item2vec.user_sequences(version_dir, trained.catalogue)
    emb = item2vec.train_item2vec(list(seqs.values()), trained.catalogue, cfg.item2vec, seed=cfg.train.seed,
                                  log=log)
    train_s = time.perf_counter() - t0
    index = trained.catalogue.index()

    def query_fn(batch):
        raw = batch["history_item_ids"].numpy()
        hist = np.array([[index.get(h.decode("utf-8"), -1) if h else -1 for h in row] for row in raw], np.int64)
        return emb.history_queries(hist)

    q, targets = _queries(version_dir, query_fn, trained, cfg)
    info: Dict[str, Any] = {"train_s": round(train_s, 1)}
    try:
        path = export_similar.export_similar_items(trained.catalogue.item_ids, emb.vectors,
                                                   os.path.join(work, f"models_{protocol}"), 1, cfg.export,
                                                   k=cfg.item2vec.top_k)
        info["serving_ms"] = round(_latency_ms(path, {"item_ids": np.array([trained.catalogue.item_ids[0]],
                                                                            dtype=object)}), 2)
        info["serving_note"] = "similar_items (item -> k neighbours)"
    except Exception as e:  # noqa: BLE001
        info["serving_error"] = f"{type(e).__name__}: {e}"
    return q, emb.vectors, targets, info


def _vae(name, protocol, version_dir, trained, ev, cfg, work, log):
    from trainer.models import item2vec, vae

    t0 = time.perf_counter()
    seqs = item2vec.user_sequences(version_dir, trained.catalogue)
    n_items = trained.catalogue.size
    model = vae.train_vae(list(seqs.values()), n_items, cfg.vae, seed=cfg.train.seed, log=log)
    train_s = time.perf_counter() - t0
    prior = ev.get("prior") or ev["exclude"]
    if prior is None:
        raise RuntimeError("mult_vae needs each query's prior items (run with eval.exclude_seen)")
    q = model.model.query_vectors(vae.bags(prior, n_items))
    return q, model.model.item_vectors(), ev["targets"], {"train_s": round(train_s, 1),
                                                         "serving_note": "not exported (scores are a dot product "
                                                                         "with [mu(bag), 1]; export not built)"}
