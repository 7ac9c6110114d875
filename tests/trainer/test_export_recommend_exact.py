"""recommend_exact: the GPU tier's recommend (exact retrieval), with no custom ops in the SavedModel.

k8s/base/config/models-gpu.config serves it, from stock tensorflow/serving:<version>-gpu, under the
name `recommend`. Stock TF Serving has no ScaNN ops, so the graph must not contain any: checked op by
op over the graph and every function in its library (the same check finds them in the ScaNN export).
"""
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from trainer import export_recommend as xr


def op_types(model_dir):
    """Every op type in a SavedModel: graph nodes and every function in its library."""
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    ops = set()
    for mg in sm.meta_graphs:
        ops |= {n.op for n in mg.graph_def.node}
        for fn in mg.graph_def.library.function:
            ops |= {n.op for n in fn.node_def}
    return ops


def test_exact_recommend_has_no_custom_ops(ranking_cfg, trained, dcn_ranker, exported,
                                          tmp_path):
    tr = trained["trained"]
    request = exported["request"]
    path = xr.export_recommend_exact(tr.tft_output, tr.model.query_tower, trained["item_vectors"], tr.catalogue,
                                     dcn_ranker.model, str(tmp_path), 7, ranking_cfg.export, ranking_cfg.ranking,
                                     warmup=request)
    assert path == str(tmp_path / "recommend_exact" / "7")
    assert os.path.exists(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
    ops = op_types(path)
    assert {"MatMul", "TopKV2"} <= ops and not [o for o in ops if o.lower().startswith("scann")], sorted(ops)
    assert [o for o in op_types(exported["paths"]["scann"]) if o.startswith("Scann")]  # the check can see them

    # loads and answers (the op check above is what shows stock TF Serving can load it)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    raw = fn(**{k: tf.constant(v) for k, v in request.items()})
    out = {k: (np.char.decode(v.numpy().astype(bytes)) if v.dtype == tf.string else v.numpy()).tolist()
           for k, v in raw.items()}
    k = ranking_cfg.ranking.recommend_k
    items = out["item_ids"][0]
    assert len(items) == k and all(items) and len(set(items)) == k
    assert set(out["source"][0]) == {"brute_force"}
    history = {h for h in np.asarray(request["history_item_ids"]).astype(str)[0] if h}
    assert not history & set(items), "the request's history is excluded"
    # same ranker, exact candidates: the scores are sorted and the ranks point into the exact top-N
    assert out["scores"][0] == sorted(out["scores"][0], reverse=True)
    assert all(1 <= r <= ranking_cfg.ranking.recommend_candidates for r in out["retrieval_ranks"][0])
