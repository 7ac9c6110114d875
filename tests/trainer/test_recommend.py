"""The ranking and one-call recommend SavedModels: layout, fresh-process reload, exclusions, bad inputs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from preprocessing.utf8 import to_str
from recsys.config import ExplorationConfig
from trainer import export_recommend as xr

K, N = 10, 50
EXPLORE_AT_ZERO = ExplorationConfig(policy="epsilon_greedy", epsilon=0.0)  # the explore signature, greedy


def _requests(cfg, version_dir, n_users=6):
    from preprocessing import pipeline, requests
    from preprocessing.sources import tables

    cutoff = pipeline.load_stats(version_dir)["split_cutoff_ts"]
    users = tables.read_table(os.path.join(cfg.path("raw"), tables.USERS_FILE))
    events = {}
    for e in tables.read_interactions(os.path.join(cfg.path("raw"), tables.INTERACTIONS_FILE)):
        events.setdefault(e["user_id"], []).append(e)
    active = sorted(users, key=lambda u: (-len(events.get(u, [])), u))[:n_users]
    batches = [requests.query_request(users[u], events.get(u, []), cutoff, "web") for u in active]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.fixture(scope="module")
def exported_stages(ranking_cfg, preprocessed, trained, dcn_ranker, tmp_path_factory):
    import copy

    cfg = copy.deepcopy(ranking_cfg)
    tr = trained["trained"]
    base = str(tmp_path_factory.mktemp("models"))
    cfg.export.model_base_path = base
    request = _requests(cfg, preprocessed)
    one = {k: v[:1] for k, v in request.items()}
    paths = {"ranking": xr.export_ranking(tr.tft_output, dcn_ranker.model, base, 3,
                                          warmup=xr.ranking_request(one, tr.catalogue, [0, 1, 2])),
             "recommend": xr.export_recommend(tr.tft_output, tr.model.query_tower, trained["item_vectors"],
                                              tr.catalogue, dcn_ranker.model, base, 3, cfg.export, cfg.ranking,
                                              warmup=one, exploration=EXPLORE_AT_ZERO)}
    return {"paths": paths, "request": request, "base": base}


def _reload(model_dir, request, signature="serving_default"):
    """Fresh interpreter: TensorFlow + ScaNN ops only (recsys.reload_check)."""
    path = os.path.join(os.path.dirname(model_dir), "..", f"request-{signature}.json")
    with open(path, "w") as f:
        json.dump({k: np.asarray(v).tolist() for k, v in request.items()}, f)
    proc = subprocess.run([sys.executable, "-m", "recsys.reload_check", model_dir, path, signature],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_layout_and_warmup(exported_stages):
    from contracts.warmup import WARMUP_FILE

    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    for name, signatures in (("ranking", ["serving_default"]), ("recommend", ["serving_default", "explore"])):
        model_dir = os.path.join(exported_stages["base"], name)
        assert os.listdir(model_dir) == ["3"]
        warmup = os.path.join(model_dir, "3", WARMUP_FILE)
        logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(warmup)]
        # every signature a client calls plain is warmed up, the explore one included
        assert [log.predict_log.request.model_spec.signature_name for log in logs] == signatures, name


def test_recommend_in_a_fresh_process_excludes_seen_and_sorts(exported_stages):
    request = dict(exported_stages["request"])
    rows = len(request["user_id"])
    default = _reload(exported_stages["paths"]["recommend"], request)
    # the `recommend` signature: also exclude each row's top-2 from the default call, N and k per row
    exclude = np.array([r[:2] for r in default["item_ids"]], dtype=object)
    options = dict(request, exclude_item_ids=exclude, num_candidates=np.full(rows, N, np.int32),
                   k=np.full(rows, K, np.int32))
    out = _reload(exported_stages["paths"]["recommend"], options, "recommend")
    for result, excluded in ((default, [[] for _ in range(rows)]), (out, exclude.tolist())):
        for i in range(rows):
            items = result["item_ids"][i]
            seen = {h for h in request["history_item_ids"][i].tolist() if h} | set(excluded[i])
            assert len(items) == K and len(set(items)) == K and "" not in items
            assert not set(items) & seen, "already-seen or excluded item recommended"
            scores = result["scores"][i]
            assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:])), "sorted by score"
            assert all(1 <= r <= N for r in result["retrieval_ranks"][i])
            assert set(result["stage"][i]) <= {"retrieval", "ranking"} and set(result["source"][i]) == {"scann"}
            stage_is_retrieval = [s == "retrieval" for s in result["stage"][i]]
            assert stage_is_retrieval == [r <= K for r in result["retrieval_ranks"][i]]


def test_per_row_k_and_n_options(exported_stages):
    request = {k: v[:2] for k, v in exported_stages["request"].items()}
    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    fn = tf.saved_model.load(exported_stages["paths"]["recommend"]).signatures["recommend"]
    out = fn(**{k: tf.constant(v) for k, v in request.items()}, exclude_item_ids=tf.zeros([2, 0], tf.string),
             num_candidates=tf.constant([5, 30]), k=tf.constant([3, 8]))
    ids = to_str(out["item_ids"])
    assert ids.shape == (2, 8)
    assert (ids[0, :3] != "").all() and (ids[0, 3:] == "").all()  # row 0: k=3, padded to the batch's k
    assert (out["retrieval_ranks"].numpy()[0, :3] <= 5).all()      # row 0 re-ranks only its top-5
    assert (ids[1] != "").all()


def test_recommend_scores_equal_the_ranking_model(exported_stages, trained):
    """The ranker inside `recommend` and the standalone ranking SavedModel agree on the same rows."""
    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    request = {k: v[:1] for k, v in exported_stages["request"].items()}
    rec = tf.saved_model.load(exported_stages["paths"]["recommend"]).signatures["serving_default"]
    out = {k: v.numpy() for k, v in rec(**{k: tf.constant(v) for k, v in request.items()}).items()}
    catalogue = trained["trained"].catalogue
    index = catalogue.index()
    items = [index[i] for i in to_str(out["item_ids"][0])]
    rows = xr.ranking_request(request, catalogue, items, out["retrieval_ranks"][0], out["retrieval_scores"][0])
    ranking = tf.saved_model.load(exported_stages["paths"]["ranking"]).signatures["serving_default"]
    scores = ranking(**{k: tf.constant(v) for k, v in rows.items()})["score"].numpy()
    np.testing.assert_allclose(scores, out["scores"][0], rtol=1e-4, atol=1e-5)


def test_ranking_takes_the_query_once_for_all_candidates(exported_stages, trained):
    """The query's features sent as one row score exactly as one row per candidate; 2 rows for 5 candidates
    is TensorFlow's own INVALID_ARGUMENT, not a silent broadcast."""
    from preprocessing import schema
    from serving.errors import ServingError
    from serving.servable import Servable

    request = {k: v[:1] for k, v in exported_stages["request"].items()}
    rows = xr.ranking_request(request, trained["trained"].catalogue, [0, 1, 2, 3, 4])
    once = {k: (v[:1] if k in schema.QUERY_FEATURES else v) for k, v in rows.items()}
    servable = Servable("ranking", 3, exported_stages["paths"]["ranking"])
    full, compact = servable.predict(rows), servable.predict(once)
    assert compact["score"].shape == (5,)
    np.testing.assert_allclose(compact["score"], full["score"], rtol=1e-6)
    np.testing.assert_allclose(compact["rating"], full["rating"], rtol=1e-6)
    two = dict(once, history_item_ids=np.repeat(once["history_item_ids"], 2, axis=0))
    with pytest.raises(ServingError) as e:
        servable.predict(two)
    assert e.value.code_name == "INVALID_ARGUMENT"


def test_ranking_from_tf_examples_matches_raw_signature(exported_stages, trained):
    from preprocessing import schema

    request = {k: v[:1] for k, v in exported_stages["request"].items()}
    rows = xr.ranking_request(request, trained["trained"].catalogue, [0, 1, 2])
    examples = []
    for i in range(3):
        feats = {}
        for name, values in rows.items():
            col = schema.COLUMNS[name]
            v = np.asarray(values[i]).ravel().tolist()
            if col.dtype == "string":
                feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[x.encode() if isinstance(x, str) else x for x in v]))
            elif col.dtype == "int64":
                feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=v))
            else:
                feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=v))
        examples.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    model = tf.saved_model.load(exported_stages["paths"]["ranking"])
    a = model.signatures["serving_default"](**{k: tf.constant(v) for k, v in rows.items()})["score"].numpy()
    b = model.signatures["from_examples"](examples=tf.constant(examples))["score"].numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_bad_inputs_give_clear_errors(exported_stages):
    from serving.errors import ServingError
    from serving.servable import Servable

    request = {k: v[:1] for k, v in exported_stages["request"].items()}
    servable = Servable("recommend", 3, exported_stages["paths"]["recommend"])
    ok = servable.predict(request)
    assert ok["item_ids"].shape == (1, 10)
    missing = {k: v for k, v in request.items() if k != "device"}
    with pytest.raises(ServingError, match=r"Missing but required: \{device\}") as e:
        servable.predict(missing)
    assert e.value.code_name == "INVALID_ARGUMENT"
    wrong = dict(request, timestamp=request["timestamp"].astype(np.float32))
    with pytest.raises(ServingError, match=r"Expects arg\[\d+\] to be int64 but float is provided"):
        servable.predict(wrong)
    short = dict(request, history_item_ids=request["history_item_ids"][:, :5])
    with pytest.raises(ServingError) as e:  # shapes are left to the graph, as in TF Serving: TF refuses it
        servable.predict(short)
    assert e.value.code_name == "INVALID_ARGUMENT"
    # the same checks in Python before a request is sent, and TF's own error when calling the function
    with pytest.raises(ValueError, match=r"missing \['device'\]"):
        xr.check_request(missing, xr.query_specs())
    with pytest.raises(ValueError, match="'timestamp' must be int64"):
        xr.check_request(wrong, xr.query_specs())
    fn = tf.saved_model.load(exported_stages["paths"]["recommend"]).signatures["serving_default"]
    with pytest.raises(TypeError, match="device"):
        fn(**{k: tf.constant(v) for k, v in missing.items()})


def test_one_grpc_predict_call_gives_final_recommendations(exported_stages):
    """The recommend model behind the TF-Serving-compatible server: one Predict, final top-k."""
    from serving.client import ServingClient
    from serving.errors import ServingError
    from serving.testing import start_server

    request = {k: v[:2] for k, v in exported_stages["request"].items()}
    base = os.path.join(exported_stages["base"], "recommend")
    with start_server(model_base_path=base, model_name="recommend", rest=False) as srv:
        with ServingClient(srv.grpc_address) as client:
            out = client.predict("recommend", request)
            mixed = client.predict("recommend", dict(request, exclude_item_ids=np.array([["", ""], ["", ""]],
                                                                                         dtype=object),
                                                      num_candidates=np.array([20, 20], np.int32),
                                                      k=np.array([5, 5], np.int32)), signature_name="recommend")
            one_row = client.predict("recommend", dict(request, exclude_item_ids=np.array([[""]], dtype=object),
                                                       num_candidates=np.array([20], np.int32),
                                                       k=np.array([5], np.int32)), signature_name="recommend")
            with pytest.raises(ServingError) as e:  # 3 rows of k for 2 users: refused, not mis-shaped
                client.predict("recommend", dict(request, exclude_item_ids=np.array([[""]], dtype=object),
                                                 num_candidates=np.array([20], np.int32),
                                                 k=np.array([5, 5, 5], np.int32)), signature_name="recommend")
    assert e.value.code_name == "INVALID_ARGUMENT"
    ids = to_str(np.asarray(out["item_ids"]))
    assert ids.shape == (2, K) and all(len(set(r)) == K for r in ids)
    assert np.asarray(mixed["item_ids"]).shape == (2, 5)
    np.testing.assert_array_equal(np.asarray(one_row["item_ids"]), np.asarray(mixed["item_ids"]))  # one k for all
    assert out.model_version == 3


def test_in_graph_epsilon_greedy_propensities_are_exploration_pys():
    """The explore signature's policy on a hand case: each shown (item, position)'s propensity is
    recsys/exploration.py's epsilon_greedy marginal, and over many request keys the shown lists follow it."""
    from recsys import exploration

    logit = np.array([[0.3, 2.0, -np.inf, 1.0, 0.5, -1.0, 1.5]], np.float32)  # -inf: excluded candidate
    rows = 4000
    out = xr.epsilon_greedy_top_k(tf.constant(np.repeat(logit, rows, 0)), tf.fill([rows], 3), 4, 0.3,
                                  tf.constant([f"u{i}|1700000000|seed0" for i in range(rows)]))
    order, prop = out["order"].numpy(), out["propensities"].numpy()
    pool = [1, 6, 3, 4]  # the 4 best by logit, best first
    marg = exploration.epsilon_greedy_marginals(logit[0, pool], 3, 0.3)
    where = {c: i for i, c in enumerate(pool)}
    want = np.array([[marg[where[c], p] for p, c in enumerate(r)] for r in order])
    np.testing.assert_allclose(prop, want, atol=1e-6)
    assert np.allclose(prop[~out["explored"].numpy()], 0.7 + 0.3 / 4)       # greedy rows: [1, 6, 3]
    assert (order[~out["explored"].numpy()] == [1, 6, 3]).all()
    assert 0.26 < out["explored"].numpy().mean() < 0.34
    seen = np.zeros_like(marg)
    np.add.at(seen, (np.vectorize(where.get)(order), np.broadcast_to(np.arange(3), order.shape)), 1.0 / rows)
    assert np.abs(seen - marg).max() < 0.03, (seen, marg)                   # the propensities are the real odds
    again = xr.epsilon_greedy_top_k(tf.constant(logit), tf.constant([3]), 4, 0.3, tf.constant(["u7|1700000000|seed0"]))
    assert (again["order"].numpy()[0] == order[7]).all()                    # replaying a request: the same list


def test_explore_signature_greedy_at_epsilon_zero_and_exploring_above(exported_stages):
    """Exported at epsilon 0, `explore` is serving_default plus propensity 1; the same graph with the version's
    epsilon raised explores within the top candidates, excluding seen items."""
    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    request = dict(exported_stages["request"])
    model = tf.saved_model.load(exported_stages["paths"]["recommend"])
    args = {k: tf.constant(v) for k, v in request.items()}
    greedy = {k: v.numpy() for k, v in model.signatures["serving_default"](**args).items()}
    out = {k: v.numpy() for k, v in model.signatures["explore"](**args).items()}
    for name, value in greedy.items():
        np.testing.assert_array_equal(out[name], value) if value.dtype == object else \
            np.testing.assert_allclose(out[name], value, rtol=1e-5, atol=1e-6)
    assert (out["propensities"] == 1.0).all() and not out["explored"].any() and (out["epsilon"] == 0).all()
    np.testing.assert_array_equal(out["greedy_item_ids"], greedy["item_ids"])

    model.explore_epsilon.assign(1.0)  # every row explores: a random ordered k-subset of the best C
    c = int(model.explore_candidates.numpy())
    assert c == N  # the default pool (exploration.candidates = 50), at most the N re-ranked
    wide = model.signatures["recommend"](**args, exclude_item_ids=tf.zeros([len(request["user_id"]), 0], tf.string),
                                         num_candidates=tf.fill([len(request["user_id"])], N),
                                         k=tf.fill([len(request["user_id"])], c))["item_ids"].numpy()
    out = {k: v.numpy() for k, v in model.signatures["explore"](**args).items()}
    assert out["explored"].all() and (out["epsilon"] == 1.0).all()
    np.testing.assert_array_equal(out["greedy_item_ids"], greedy["item_ids"])
    for i in range(len(request["user_id"])):
        shown = list(out["item_ids"][i])
        assert len(set(shown)) == K and set(shown) <= set(wide[i])          # from the top-C re-ranked pool
        np.testing.assert_allclose(out["propensities"][i], np.full(K, 1.0 / c), rtol=1e-5)  # (1 - 1) [greedy] + 1/C
        assert [s == "exploration" for s in to_str(out["stage"][i])] == [a not in set(greedy["item_ids"][i])
                                                                          for a in shown]
    assert any(list(out["item_ids"][i]) != list(greedy["item_ids"][i]) for i in range(len(request["user_id"])))
