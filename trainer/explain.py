"""Explanations for one user and a recommended item (``recsys explain``).

- Integrated gradients (Sundararajan et al., 2017) on the ranking model's engagement logit,
  taken at the shared feature-input layer's field tensors (ids are discrete, their
  embeddings are not): attribution(field) = sum_d (x - x') * mean_alpha dF/dx at
  x' + alpha (x - x'), with x' = 0 (padding embedding / feature at its train mean). The
  attributions add up to F(x) - F(x') (completeness), reported as ``ig_error``.
- "Because you watched X": the history item most similar (cosine) to the recommended item
  in the two-tower item space.
- DCN-v2 cross-layer importance: the Frobenius norm of each (field i, field j) block of
  every cross layer's W (U V when low rank), as in the DCN-v2 paper, plotted to a PNG.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from preprocessing.utf8 import to_str
from trainer.models import ranking as ranking_models


def integrated_gradients(model: ranking_models.RankingModel, x: Dict[str, tf.Tensor], steps: int = 64,
                         output: str = "engagement_logit") -> Tuple[Dict[str, float], float, float]:
    """(attribution per field, F(x), F(baseline)) for a batch of one row; wide/* fields fold into their feature."""
    fields = {k: v[:1] for k, v in model.fields(x).items() if not k.startswith("rating_bias/")}  # rating-only
    alphas = tf.reshape((tf.range(steps, dtype=tf.float32) + 0.5) / steps, [-1, 1])   # midpoint Riemann sum
    path = {k: alphas * v for k, v in fields.items()}                                 # baseline 0 -> x
    with tf.GradientTape() as tape:
        tape.watch(list(path.values()))
        out = model.from_fields(path, training=False)[output]
    grads = tape.gradient(out, path)
    attr: Dict[str, float] = {}
    for k, v in fields.items():
        name = k.replace("wide/", "")
        attr[name] = attr.get(name, 0.0) + float(tf.reduce_sum(v[0] * tf.reduce_mean(grads[k], 0)))
    at_x = float(model.from_fields(fields, training=False)[output][0])
    at_base = float(model.from_fields({k: tf.zeros_like(v) for k, v in fields.items()}, training=False)[output][0])
    return attr, at_x, at_base


def top_features(attr: Dict[str, float], n: int = 5) -> List[Dict[str, object]]:
    order = sorted(attr, key=lambda k: -abs(attr[k]))[:n]
    return [{"feature": k, "attribution": round(attr[k], 4),
             "what": ranking_models.FIELD_DOCS.get(k, "wide / explicit-cross terms" if k in (
                 "numeric", "device_x_genre") else k)} for k in order]


def because_you_watched(item: int, history: Sequence[int], item_vectors: np.ndarray) -> Optional[Tuple[int, float]]:
    """(history catalogue index most similar to ``item``, cosine) or None for an empty history."""
    hist = [h for h in history if h >= 0 and np.isfinite(item_vectors[h]).all()]  # (left-out items: NaN)
    if not hist:
        return None
    v = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    sims = v[hist] @ v[item]
    best = int(np.argmax(sims))
    return hist[best], float(sims[best])


def cross_importance(model: ranking_models.RankingModel) -> np.ndarray:
    """[layers, F, F] block Frobenius norms of every DCN cross layer's W over FIELDS."""
    if model.kind != "dcn":
        raise ValueError(f"cross-layer importance needs a DCN ranker, this one is {model.kind!r}")
    dim = model.cfg.embedding_dim
    f = len(ranking_models.FIELDS)
    out = []
    for w in model.interaction.cross_kernels():
        w = np.asarray(w)[: f * dim, : f * dim].reshape(f, dim, f, dim)
        out.append(np.sqrt((w ** 2).sum(axis=(1, 3))))
    return np.stack(out)


def plot_cross_importance(model: ranking_models.RankingModel, path: str) -> str:
    """Heat map per cross layer (rows: output field i, columns: input field j of x0 * (W x)); PNG."""
    from matplotlib.figure import Figure   # not pyplot: no backend switch in the caller's process (a notebook)

    imp = cross_importance(model)
    names = list(ranking_models.FIELDS)
    fig = Figure(figsize=(7.5 * len(imp), 7))
    axes = fig.subplots(1, len(imp), squeeze=False)
    for i, (ax, m) in enumerate(zip(axes[0], imp)):
        im = ax.imshow(m, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"cross layer {i + 1}: ||W[i, j]||_F")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"DCN-v2 ({model.cfg.dcn_structure}) feature-interaction importance")
    fig.tight_layout()
    from recsys import fileio

    return fileio.write_png(fig, path, dpi=110)


# ---------------------------------------------------------------- one request, end to end (in process)
def example_batch(trained, n: int = 2) -> Dict[str, tf.Tensor]:
    """A tiny batch of ranker inputs (builds a ranker's variables before its weights are loaded)."""
    from trainer.export import _dummy
    from trainer.export_recommend import query_specs
    from trainer.ranking_data import QUERY_RAW, transform_pairs

    query = _dummy(query_specs())
    n = min(n, trained.catalogue.size)
    rows = transform_pairs(trained.tft_output.transform_features_layer(), {k: query[k] for k in QUERY_RAW},
                           np.zeros(n, np.int64), np.arange(n), trained.catalogue, np.arange(1, n + 1), np.zeros(n))
    return {k: tf.constant(v) for k, v in rows.items()}


def recommend_in_process(trained, item_vectors: np.ndarray, ranker, request: Dict[str, np.ndarray],
                         n: int = 100, k: int = 10) -> Dict[str, object]:
    """What the recommend SavedModel computes, with exact retrieval: candidates, their rows and the top-k."""
    from trainer import evaluation
    from trainer.ranking_data import QUERY_RAW, transform_pairs

    tft_layer = trained.tft_output.transform_features_layer()
    raw = {k_: tf.constant(request[k_]) for k_ in QUERY_RAW}
    q = np.asarray(trained.model.query_tower(tft_layer(raw), training=False))[:1]
    index = trained.catalogue.index()
    history = [index[h] for h in to_str(np.asarray(request["history_item_ids"])[0]) if h in index]
    scores = evaluation.dot_scores(q, item_vectors)
    scores[0, history] = -np.inf
    n = min(n, int(np.isfinite(scores[0]).sum()))   # neither in the history nor left out of the index
    top = evaluation.top_k_from_scores(scores, n)[0]
    rows = transform_pairs(tft_layer, {k_: np.asarray(request[k_])[:1] for k_ in QUERY_RAW}, np.zeros(n, np.int64),
                           top, trained.catalogue, np.arange(1, n + 1), scores[0, top])
    out = ranker({k_: tf.constant(v) for k_, v in rows.items()}, training=False)
    logits, ratings = out["engagement_logit"].numpy(), out["rating"].numpy()
    order = np.argsort(-logits, kind="stable")[:k]
    return {"candidates": top, "retrieval_scores": scores[0, top], "rows": rows, "logits": logits,
            "ratings": ratings, "top": order, "history": history, "all_scores": scores[0]}


def explain_request(cfg, trained, item_vectors: np.ndarray, ranker, request: Dict[str, np.ndarray],
                    item_id: Optional[str] = None, out_dir: Optional[str] = None, top_n: int = 6) -> Dict:
    """Explains ``item_id`` (default: the top recommendation) for the batch-of-one ``request``."""
    import json

    from trainer.export_recommend import check_request, query_specs
    from trainer.ranking_data import QUERY_RAW, transform_pairs

    check_request({k: request[k] for k in request if k in query_specs()}, query_specs())
    rec = recommend_in_process(trained, item_vectors, ranker, request, cfg.ranking.recommend_candidates,
                               cfg.ranking.recommend_k)
    ids = trained.catalogue.item_ids
    index = trained.catalogue.index()
    cands = list(rec["candidates"])
    if item_id is None:
        item = int(cands[rec["top"][0]])
    elif item_id not in index:
        raise ValueError(f"unknown item_id {item_id!r}: not in the catalogue")
    else:
        item = index[item_id]
    if item in cands:
        row = cands.index(item)
        x = {k: tf.constant(v[row:row + 1]) for k, v in rec["rows"].items()}
        r_rank, r_score = row + 1, float(rec["retrieval_scores"][row])
    else:  # not retrieved: explain it at its exact retrieval rank
        s = rec["all_scores"]
        r_score = float(s[item])
        r_rank = int((s > r_score).sum() + 1)
        tl = trained.tft_output.transform_features_layer()
        one = transform_pairs(tl, {k: np.asarray(request[k])[:1] for k in QUERY_RAW}, np.zeros(1, np.int64),
                              np.array([item]), trained.catalogue, [r_rank], [r_score])
        x = {k: tf.constant(v) for k, v in one.items()}
    attr, fx, fb = integrated_gradients(ranker, x)
    because = because_you_watched(item, rec["history"], item_vectors)
    result = {
        "user_id": _text(np.asarray(request["user_id"])[0]),
        "item_id": str(ids[item]),
        "recommendations": [str(ids[cands[i]]) for i in rec["top"]],
        "score": float(1.0 / (1.0 + np.exp(-fx))), "engagement_logit": fx, "baseline_logit": fb,
        "ig_error": float(sum(attr.values()) - (fx - fb)),
        "retrieval_rank": int(r_rank), "retrieval_score": r_score,
        "top_features": top_features(attr, top_n),
        "attributions": {k: round(v, 5) for k, v in sorted(attr.items(), key=lambda kv: -abs(kv[1]))},
        "because_you_watched": None if because is None else {"item_id": str(ids[because[0]]),
                                                             "similarity": round(because[1], 4)},
    }
    if out_dir:
        tf.io.gfile.makedirs(out_dir)
        if ranker.kind == "dcn":
            result["cross_importance_png"] = plot_cross_importance(ranker, os.path.join(out_dir,
                                                                                          "dcn_cross_importance.png"))
        path = os.path.join(out_dir, f"explanation-{result['user_id']}-{result['item_id']}.json")
        with tf.io.gfile.GFile(path, "w") as f:
            json.dump(result, f, indent=2)
        result["json"] = path
    return result


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def format_explanation(result: Dict, items: Optional[Dict[str, Dict]] = None) -> str:
    """Human-readable explanation; ``items`` = the raw item table (id -> row) for titles."""
    def named(i: str) -> str:   # the id, and its title where the catalogue has one (a log's may not)
        title = (items or {}).get(i, {}).get("item_title", "")
        return f"{i} {title!r}" if title else i

    lines = [f"Why {named(result['item_id'])} for user {result['user_id']} "
             f"(score {result['score']:.3f}, retrieval rank {result['retrieval_rank']}):"]
    if result.get("because_you_watched"):   # (the key keeps its MovieLens-era name: demo_summary.json reads it)
        b = result["because_you_watched"]
        lines.append(f"  because of {named(b['item_id'])} in your history (similarity {b['similarity']:.2f})")
    lines.append("  top contributing features (integrated gradients on the engagement logit):")
    for f in result["top_features"]:
        lines.append(f"    {f['attribution']:+.3f}  {f['feature']:<22} {f['what']}")
    lines.append(f"  (attributions sum to logit - baseline within {abs(result['ig_error']):.3f})")
    if result.get("cross_importance_png"):
        lines.append(f"  DCN cross-layer importance: {result['cross_importance_png']}")
    return "\n".join(lines)
