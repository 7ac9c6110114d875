"""Multi-stage export: the ``ranking`` SavedModel and the one-call ``recommend`` SavedModel.

``<base>/ranking/<version>/`` — raw features in, scores out, one row per (query, candidate):
  serving_default(raw USER/ITEM/CONTEXT/HISTORY features + candidate_source, retrieval_rank,
  retrieval_score) -> score (P(engagement)), engagement_logit, rating
  from_examples(examples: serialized tf.Examples with the same features) -> the same

``<base>/recommend/<version>/`` — the whole stack in one graph, so one Predict call to TF
Serving (with the ScaNN ops) returns final recommendations:
  raw query features -> TFT layer -> query tower -> ScaNN top candidates -> drop already-seen
  items (the request's history_item_ids, plus exclude_item_ids) -> the top N left -> gather
  the candidates' raw item features from the catalogue stored in the model -> TFT layer on
  (query x candidate) -> ranker -> top-k.
  serving_default(raw query features): N = ranking.recommend_candidates, k = ranking.recommend_k
  recommend(raw query features, exclude_item_ids [B, M] string ('' = none), num_candidates [B] int32,
            k [B] int32): per-row N (clipped to 1..max N fixed at export) and k (clipped to 1..N);
            output width = the largest k in the batch, shorter rows padded with '' / 0.
  explore(raw query features), in versions exported with exploration.policy=epsilon_greedy (opt-in: one
            more traced graph costs export time): serving_default's list, re-ranked epsilon-greedily
            (``epsilon_greedy_top_k``: epsilon and the candidate pool C baked at export from
            ``config.exploration``; epsilon 0 gives serving_default's list), plus
            propensities [B, k] (P(this item at this position) under the policy), greedy_item_ids
            [B, k] (what serving_default shows), explored [B] (this row got the random list) and
            epsilon [B]. The client picks the policy per request by the signature it calls; the
            request log (the whole response) then carries the propensities off-policy evaluation needs.
  Outputs [B, k]: item_ids (string), scores (ranker P(engagement), sorted), ratings (predicted),
  retrieval_scores, retrieval_ranks (1-based among the non-excluded candidates), source
  (the retriever: 'scann'), stage ('retrieval' = retrieval alone had it in its top-k too,
  'ranking' = promoted into the top-k by the ranker).

ScaNN returns at most N + |history| + M candidates before exclusion (capped at
``max_fetch``), so up to that many exclusions still leave N real candidates.

Exploration lives in the graph (not in the server) so it works unchanged on stock TF Serving,
which has no exploration feature of its own. Its randomness is stateless: a hash of the row's
user id, request timestamp and the version's exploration seed, so replaying a request re-ranks it
identically (as ``recsys.exploration.request_rng`` does offline) and concurrent requests share no state.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.utf8 import to_bytes
from trainer import data
from trainer.export import _dummy, build_index, indexed, save_atomically

MAX_EXCLUDE = 200  # exclusions (history + exclude_item_ids) the candidate fetch makes room for


def ranking_signature_specs() -> Dict[str, tf.TensorSpec]:
    return schema.serving_signature(schema.RANKING_ROLES)


def query_specs() -> Dict[str, tf.TensorSpec]:
    return schema.serving_signature([schema.USER, schema.CONTEXT, schema.HISTORY])


def check_request(request: Dict[str, np.ndarray], specs: Dict[str, tf.TensorSpec]) -> None:
    """Raises ValueError naming every missing/unknown feature and any wrong dtype or shape."""
    missing = sorted(set(specs) - set(request))
    extra = sorted(set(request) - set(specs))
    if missing or extra:
        raise ValueError(f"request does not match the signature: missing {missing}, unknown {extra}; "
                         f"expected features: {sorted(specs)}")
    rows = None
    for name, spec in specs.items():
        arr = np.asarray(request[name])
        want = spec.dtype
        ok = (arr.dtype.kind in "OSU") if want == tf.string else (
            arr.dtype.kind in "iu" if want.is_integer else arr.dtype.kind == "f")
        if not ok:
            raise ValueError(f"feature {name!r} must be {want.name}, got {arr.dtype} (e.g. {arr.ravel()[:1]})")
        want_shape = spec.shape.as_list()
        if arr.ndim != len(want_shape) or any(w is not None and w != g for w, g in zip(want_shape, arr.shape)):
            raise ValueError(f"feature {name!r} must have shape {['batch' if w is None else w for w in want_shape]}, "
                             f"got {list(arr.shape)}")
        if want_shape and want_shape[0] is None:
            if rows is not None and arr.shape[0] != rows:
                raise ValueError(f"feature {name!r} has {arr.shape[0]} rows, others have {rows}")
            rows = arr.shape[0]


def _model_inputs(tft_out: Dict[str, tf.Tensor], raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    feats = {k: tft_out[k] for k in schema.RANKER_TRANSFORMED_INPUTS}
    feats.update({k: raw[k] for k in schema.RETRIEVAL_FEATURES})
    return feats


def broadcast_query(raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """The query's features (``schema.QUERY_FEATURES``: user, context, history) may come once, as one row, for
    every candidate: TF Ranking's context/example split. A 50-candidate request with a 20-item history then
    carries 40 history values instead of 2,000. One row per candidate still works; any other row count is
    TensorFlow's own broadcast error (INVALID_ARGUMENT from the server)."""
    rows = tf.shape(raw["item_id"])[0]
    out = dict(raw)
    for name in schema.QUERY_FEATURES:
        if name in out:
            v = out[name]
            out[name] = tf.broadcast_to(v, tf.concat([[rows], tf.shape(v)[1:]], 0))
    return out


class RankingModule(tf.Module):
    """Raw (query x candidate) rows -> TFT layer -> ranker -> score / rating."""

    def __init__(self, tft_layer, ranker):
        super().__init__()
        self.tft_layer = tft_layer
        self.ranker = ranker

    def rank(self, **raw):
        raw = broadcast_query(raw)
        tft_in = {k: v for k, v in raw.items() if k not in schema.RETRIEVAL_FEATURES}
        out = self.ranker(_model_inputs(self.tft_layer(tft_in), raw), training=False)
        return {"score": tf.sigmoid(out["engagement_logit"]), "engagement_logit": out["engagement_logit"],
                "rating": out["rating"]}

    def rank_examples(self, examples):
        parsed = tf.io.parse_example(examples, schema.raw_feature_spec(schema.RANKING_ROLES))
        return self.rank(**parsed)


def _item_attr(name: str) -> str:
    """RecommendModule attribute holding a catalogue column (``item_ids`` for ``item_id``, else the column name)."""
    return "item_ids" if name == "item_id" else name


def _catalogue_variable(catalogue: data.Catalogue, name: str) -> tf.Variable:
    """One raw catalogue column as a constant variable of its schema dtype (ids: named ``item_ids``)."""
    col = schema.COLUMNS[name]
    if name == "item_id":
        return tf.Variable(to_bytes(catalogue.item_ids), trainable=False, name="item_ids", dtype=tf.string)
    if col.dtype == "string":
        return tf.Variable(to_bytes(catalogue.raw[name]), trainable=False, dtype=tf.string)
    return tf.Variable(catalogue.raw[name].astype({"int64": np.int64, "float32": np.float32}[col.dtype]),
                       trainable=False)


class RecommendModule(tf.Module):
    """Retrieval (ScaNN) -> exclusions -> ranking -> top-k, in one graph."""

    def __init__(self, tft_layer, query_tower, index, ranker, catalogue: data.Catalogue, max_candidates: int,
                 default_candidates: int, default_k: int, max_fetch: int):
        super().__init__()
        self.tft_layer, self.query_tower, self.index, self.ranker = tft_layer, query_tower, index, ranker
        self.max_candidates, self.max_fetch = int(max_candidates), int(max_fetch)
        self.default_candidates, self.default_k = int(default_candidates), int(default_k)
        self.source = "scann"  # the retriever named in the `source` output ("brute_force": exact variant)
        self.set_exploration(0.0, default_candidates, 0)
        # the catalogue's raw item features (schema.CANDIDATE_FEATURES), by catalogue index (= the index's row order)
        for name in schema.CANDIDATE_FEATURES:
            setattr(self, _item_attr(name), _catalogue_variable(catalogue, name))

    def set_exploration(self, epsilon: float, candidates: int, seed: int) -> None:
        """The explore signature's policy (baked into this version): epsilon-greedy over the best ``candidates``
        (at least k, at most N); epsilon is a saved variable, the seed salts the per-request hash."""
        c = int(min(max(candidates, self.default_k), self.max_candidates))
        if hasattr(self, "explore_epsilon"):
            self.explore_epsilon.assign(float(epsilon))
            self.explore_candidates.assign(c)
        else:
            self.explore_epsilon = tf.Variable(float(epsilon), trainable=False, dtype=tf.float32,
                                               name="explore_epsilon")
            self.explore_candidates = tf.Variable(c, trainable=False, dtype=tf.int32, name="explore_candidates")
        self.explore_salt = f"seed{int(seed)}"

    def _item_raw(self, idx: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {name: tf.gather(getattr(self, _item_attr(name)), idx) for name in schema.CANDIDATE_FEATURES}

    def _scored(self, raw: Dict[str, tf.Tensor], exclude: tf.Tensor, num_candidates: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Retrieval -> exclusions -> the ranker's logits over each row's first ``num_candidates`` candidates."""
        query = self.query_tower(self.tft_layer(raw), training=False)
        batch = tf.shape(query)[0]
        n_row = tf.clip_by_value(tf.cast(num_candidates, tf.int32), 1, self.max_candidates)        # [B]
        n = tf.maximum(tf.reduce_max(n_row), 1)
        seen = tf.concat([raw["history_item_ids"], exclude], axis=1)                                # [B, E]
        fetch = tf.minimum(n + tf.shape(seen)[1], self.max_fetch)
        r_scores, r_idx = self.index(query, k=fetch)                                               # [B, F]
        n = tf.minimum(n, tf.shape(r_scores)[1])  # an approximate index may return fewer than asked
        n_row = tf.minimum(n_row, n)
        r_idx = tf.cast(r_idx, tf.int32)
        r_ids = tf.gather(self.item_ids, r_idx)
        hit = tf.equal(tf.expand_dims(r_ids, 2), tf.expand_dims(seen, 1)) & tf.expand_dims(seen != "", 1)
        masked = tf.where(tf.reduce_any(hit, axis=2), tf.fill(tf.shape(r_scores), -np.inf), r_scores)
        c_scores, pos = tf.math.top_k(masked, k=n)                                                  # ScaNN order kept
        c_idx = tf.gather(r_idx, pos, batch_dims=1)                                                 # [B, n]
        ranks = tf.broadcast_to(tf.range(1, n + 1), tf.shape(c_idx))
        valid = (c_scores > -np.inf) & (ranks <= tf.expand_dims(n_row, 1))
        # (query x candidate) rows through the same TFT graph as training, then the ranker
        rows = {name: tf.repeat(raw[name], n, axis=0) for name in schema.QUERY_FEATURES}
        rows.update(self._item_raw(tf.reshape(c_idx, [-1])))
        retrieval = {"candidate_source": tf.fill([batch * n], "scann"),
                     "retrieval_rank": tf.cast(tf.reshape(ranks, [-1]), tf.int64),
                     "retrieval_score": tf.reshape(tf.where(valid, c_scores, 0.0), [-1])}
        out = self.ranker(_model_inputs(self.tft_layer(rows), retrieval), training=False)
        logit = tf.where(valid, tf.reshape(out["engagement_logit"], [batch, n]), -np.inf)
        return {"c_idx": c_idx, "c_scores": c_scores, "ranks": ranks, "logit": logit,
                "rating": tf.reshape(out["rating"], [batch, n]), "n_row": n_row}

    def _listed(self, s: Dict[str, tf.Tensor], order: tf.Tensor, ok: tf.Tensor, k_row: tf.Tensor):
        """The outputs for the candidates at ``order`` ([B, K] indices into the scored candidates)."""
        take = lambda t: tf.gather(t, order, batch_dims=1)  # noqa: E731
        ids = tf.gather(self.item_ids, take(s["c_idx"]))
        r_rank = take(s["ranks"])
        return {
            "item_ids": tf.where(ok, ids, ""),
            "scores": tf.where(ok, tf.sigmoid(take(s["logit"])), 0.0),
            "ratings": tf.where(ok, take(s["rating"]), 0.0),
            "retrieval_scores": tf.where(ok, take(s["c_scores"]), 0.0),
            "retrieval_ranks": tf.where(ok, r_rank, 0),
            "source": tf.where(ok, tf.fill(tf.shape(ids), self.source), ""),
            "stage": tf.where(ok, tf.where(r_rank <= tf.expand_dims(k_row, 1), "retrieval", "ranking"), ""),
        }

    def run(self, raw: Dict[str, tf.Tensor], exclude: tf.Tensor, num_candidates: tf.Tensor, k: tf.Tensor):
        s = self._scored(raw, exclude, num_candidates)
        k_row = tf.minimum(tf.clip_by_value(tf.cast(k, tf.int32), 1, self.max_candidates), s["n_row"])
        kk = tf.reduce_max(k_row)
        top_logit, order = tf.math.top_k(s["logit"], k=kk)
        ok = (top_logit > -np.inf) & (tf.range(kk)[tf.newaxis, :] < tf.expand_dims(k_row, 1))
        return self._listed(s, order, ok, k_row)

    def serve(self, **raw):
        batch = tf.shape(raw["user_id"])[0]
        return self.run(raw, tf.zeros([batch, 0], tf.string), tf.fill([batch], self.default_candidates),
                        tf.fill([batch], self.default_k))

    def serve_with_options(self, exclude_item_ids, num_candidates, k, **raw):
        # one row of options is for every user; any other row count fails here, in the graph, so TF Serving
        # (which leaves shapes to the graph) rejects it as INVALID_ARGUMENT too instead of mis-shaping outputs
        batch = tf.shape(raw["user_id"])[0]
        exclude_item_ids = tf.broadcast_to(exclude_item_ids, tf.stack([batch, tf.shape(exclude_item_ids)[1]]))
        return self.run(raw, exclude_item_ids, tf.broadcast_to(num_candidates, [batch]), tf.broadcast_to(k, [batch]))

    def explore(self, **raw):
        """serving_default's list under the version's exploration policy, with each item's propensity."""
        batch = tf.shape(raw["user_id"])[0]
        s = self._scored(raw, tf.zeros([batch, 0], tf.string), tf.fill([batch], self.default_candidates))
        k_row = tf.minimum(tf.fill([batch], self.default_k), s["n_row"])
        keys = tf.strings.join([raw["user_id"], tf.strings.as_string(raw["timestamp"]), self.explore_salt],
                               separator="|")
        shown = epsilon_greedy_top_k(s["logit"], k_row, self.explore_candidates, self.explore_epsilon, keys)
        out = self._listed(s, shown["order"], shown["ok"], k_row)
        greedy_ids = tf.gather(self.item_ids, tf.gather(s["c_idx"], shown["greedy"], batch_dims=1))
        in_greedy = tf.reduce_any(tf.equal(out["item_ids"][:, :, None], greedy_ids[:, None, :]), axis=2)
        out["stage"] = tf.where(shown["ok"] & ~in_greedy, "exploration", out["stage"])
        out.update(propensities=shown["propensities"], greedy_item_ids=tf.where(shown["ok"], greedy_ids, ""),
                   explored=shown["explored"], epsilon=tf.fill([batch], tf.identity(self.explore_epsilon)))
        return out


HASH_BUCKETS = 2 ** 53  # a fingerprint modulo 2^53 is exact in float64: uniform on [0, 1) in steps of 2^-53


def _uniform(keys: tf.Tensor) -> tf.Tensor:
    """One uniform [0, 1) number per string key (FarmHash fingerprint): stateless, replayable randomness."""
    return tf.cast(tf.strings.to_hash_bucket_fast(keys, HASH_BUCKETS), tf.float64) / float(HASH_BUCKETS)


def epsilon_greedy_top_k(logit: tf.Tensor, k_row: tf.Tensor, candidates, epsilon, keys: tf.Tensor) -> Dict[str, tf.Tensor]:
    """``recsys.exploration``'s epsilon_greedy in the graph, over each row's ``candidates`` best by ``logit``.

    ``logit`` [B, n] (-inf = no candidate), ``k_row`` [B] items to show, ``candidates`` C, ``epsilon`` scalar,
    ``keys`` [B] strings the row's random draws are hashed from. Per row, over its C_row = min(C, valid)
    best candidates: with probability epsilon a uniformly random ordered k-subset of them (random keys,
    sorted), else the k best. Returns [B, K] (K = the batch's largest k) ``order`` (indices into n),
    ``propensities`` = (1 - epsilon) [the greedy list has this item at this position] + epsilon / C_row,
    exactly ``exploration.epsilon_greedy_marginals`` at the shown (item, position); ``greedy`` (the k best);
    ``ok`` (a real item); and [B] ``explored``.
    """
    n = tf.shape(logit)[1]
    c = tf.minimum(tf.cast(candidates, tf.int32), n)
    top_logit, top = tf.math.top_k(logit, k=c)                   # [B, C] best first; ties: lower index first
    c_row = tf.reduce_sum(tf.cast(top_logit > -np.inf, tf.int32), axis=1)
    k_row = tf.minimum(tf.cast(k_row, tf.int32), c_row)
    kk = tf.reduce_max(tf.concat([k_row, [0]], axis=0))
    eps = tf.cast(epsilon, tf.float64)
    explored = _uniform(tf.strings.join([keys, "coin"], separator="|")) < eps
    slot_keys = tf.strings.join([tf.broadcast_to(keys[:, None], tf.shape(top)),
                                 tf.broadcast_to(tf.strings.as_string(tf.range(c))[None, :], tf.shape(top))],
                                separator="|")
    draws = tf.where(tf.range(c)[None, :] < c_row[:, None], _uniform(slot_keys), -1.0)
    shuffled = tf.math.top_k(draws, k=kk)[1]                    # a uniformly random ordered subset of the valid
    greedy = tf.broadcast_to(tf.range(kk)[None, :], tf.shape(shuffled))
    slots = tf.where(explored[:, None], shuffled, greedy)
    prop = ((1.0 - eps) * tf.cast(tf.equal(slots, greedy), tf.float64)
            + eps / tf.cast(tf.maximum(c_row, 1), tf.float64)[:, None])
    ok = greedy < k_row[:, None]
    return {"order": tf.gather(top, slots, batch_dims=1), "greedy": tf.gather(top, greedy, batch_dims=1),
            "propensities": tf.where(ok, tf.cast(prop, tf.float32), 0.0), "ok": ok, "explored": explored}


def _call(fn, request: Dict[str, np.ndarray]):
    return fn(**{k: tf.constant(v) for k, v in request.items()})


def ranking_request(query: Dict[str, np.ndarray], catalogue: data.Catalogue, items: Sequence[int],
                    ranks: Optional[Sequence[int]] = None, scores: Optional[Sequence[float]] = None,
                    source: str = "scann") -> Dict[str, np.ndarray]:
    """A ranking request: one row per candidate (the batch-of-one query repeated; ``broadcast_query`` also
    accepts it once)."""
    n = len(items)
    out = {k: np.repeat(np.asarray(v)[:1], n, axis=0) for k, v in query.items()}
    for k in schema.CANDIDATE_FEATURES:
        out[k] = np.asarray(catalogue.raw[k])[list(items)]
        if schema.COLUMNS[k].dtype == "string":
            out[k] = out[k].astype(object)
    out["candidate_source"] = np.array([source] * n, dtype=object)
    out["retrieval_rank"] = np.asarray(ranks if ranks is not None else np.arange(1, n + 1), np.int64)
    out["retrieval_score"] = np.asarray(scores if scores is not None else np.zeros(n), np.float32)
    return out


def export_ranking(tft_output, ranker, base: str, version: int,
                   warmup: Optional[Dict[str, np.ndarray]] = None, name: str = "ranking") -> str:
    module = RankingModule(tft_output.transform_features_layer(), ranker)
    specs = ranking_signature_specs()
    serve = tf.function(module.rank).get_concrete_function(**specs)
    examples = tf.function(module.rank_examples).get_concrete_function(tf.TensorSpec([None], tf.string,
                                                                                     name="examples"))
    if warmup is not None:
        check_request(warmup, specs)
    return save_atomically(module, {"serving_default": serve, "from_examples": examples}, base, name, version, warmup)


def exploration_settings(xcfg) -> Dict[str, float]:
    """The explore signature's policy from ``config.exploration`` (None: greedy): epsilon-greedy's epsilon,
    candidates and seed. Only epsilon_greedy runs in the graph (and only then is the signature exported):
    Thompson sampling needs the items' feedback posteriors (recsys simulate, offline)."""
    from recsys.config import ExplorationConfig
    from recsys.exploration import check_settings

    if xcfg is None or xcfg.policy != "epsilon_greedy":
        return {"epsilon": 0.0, "candidates": ExplorationConfig.candidates, "seed": 0}
    check_settings(xcfg)
    return {"epsilon": float(xcfg.epsilon), "candidates": int(xcfg.candidates), "seed": int(xcfg.seed)}


def export_recommend(tft_output, query_tower, item_vectors: np.ndarray, catalogue: data.Catalogue, ranker,
                     base: str, version: int, ecfg, rcfg, kind: str = "scann",
                     warmup: Optional[Dict[str, np.ndarray]] = None, name: str = "recommend",
                     exploration=None) -> str:
    """The one-call recommender (see the module docstring); ``kind`` = scann | brute_force;
    ``exploration``: ``config.exploration``; with policy epsilon_greedy the version gets the explore signature."""
    n_indexed = indexed(item_vectors)  # left-out items (NaN rows) are not in the index
    max_n = max(1, min(rcfg.recommend_candidates, n_indexed))
    max_fetch = min(n_indexed, max_n + schema.HISTORY_LENGTH + MAX_EXCLUDE)
    index = build_index(kind, None, item_vectors, max_fetch, ecfg)  # positions: gather the candidates' features
    module = RecommendModule(tft_output.transform_features_layer(), query_tower, index, ranker, catalogue, max_n,
                             max_n, min(rcfg.recommend_k, max_n), max_fetch)
    module.source = kind
    module.set_exploration(**exploration_settings(exploration))
    specs = query_specs()
    serve = tf.function(module.serve).get_concrete_function(**specs)
    options = dict(specs, exclude_item_ids=tf.TensorSpec([None, None], tf.string, name="exclude_item_ids"),
                   num_candidates=tf.TensorSpec([None], tf.int32, name="num_candidates"),
                   k=tf.TensorSpec([None], tf.int32, name="k"))
    serve_options = tf.function(module.serve_with_options).get_concrete_function(**options)
    request = warmup if warmup is not None else _dummy(specs)
    check_request(request, specs)
    _call(serve, request)  # ScaNN builds its searcher lazily: call once before saving
    signatures = {"serving_default": serve, "recommend": serve_options}
    if exploration is not None and exploration.policy == "epsilon_greedy":
        signatures["explore"] = tf.function(module.explore).get_concrete_function(**specs)
    return save_atomically(module, signatures, base, name, version,
                           warmup, namespace_whitelist=["Scann"] if kind == "scann" else None,
                           warmup_signatures=[s for s in ("serving_default", "explore") if s in signatures])


def export_recommend_exact(tft_output, query_tower, item_vectors: np.ndarray, catalogue: data.Catalogue, ranker,
                           base: str, version: int, ecfg, rcfg, warmup: Optional[Dict[str, np.ndarray]] = None,
                           exploration=None) -> str:
    """``<base>/recommend_exact/<version>``: recommend with exact retrieval (a catalogue matmul + top-k, no ScaNN
    ops), for the GPU serving tier, which runs stock TF Serving (k8s/base/config/models-gpu.config serves it
    under the name ``recommend``, so clients switch tiers by address only)."""
    return export_recommend(tft_output, query_tower, item_vectors, catalogue, ranker, base, version, ecfg, rcfg,
                            kind="brute_force", warmup=warmup, name="recommend_exact", exploration=exploration)
