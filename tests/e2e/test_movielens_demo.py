"""Real data end to end in CI: `recsys demo --data ml-latest-small` at reduced epochs, then one gRPC query.

The demo itself reloads the ScaNN and recommend exports in fresh processes; this test then serves
the recommend export with `recsys serve`'s server and asks it for one user's top-k over gRPC,
so non-ASCII MovieLens titles ("Misérables, Les") pass through every stage and export.
"""
import json
import os

import numpy as np
import pytest

from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not os.path.isdir(SHARED_DATA),
                                reason=f"{SHARED_DATA} not beside the clone (CI has it)")

# reduced so CI stays within its budget: one epoch, random item tables (item2vec's start runs on real data in
# test_log_demo.py and test_unseen_items.py; here it cost 25 s of the CPU-bound suite), untuned baselines,
# 2,000 evaluated and 1,500 re-ranked eval queries, the blessing on 500 fresh requests. The ranker's
# candidates stay out-of-fold (the default): this is the only test that runs that path
REDUCED = ["--set", "train.epochs=1", "--set", "retrieval.item_init=random", "--set", "ranking.epochs=1", "--set", "ranking.oof_epochs=1",
           "--set", "ranking.max_train_events=4000", "--set", "ranking.eval_max_queries=1500",
           "--set", "eval.max_queries=2000", "--set", "eval.tune_baselines=false", "--set", "eval.bootstrap=200",
           "--set", "gate.max_events=500", "--set", "export.version=1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from recsys import cli

    workdir = str(tmp_path_factory.mktemp("ml"))
    assert cli.main(["--workdir", workdir] + REDUCED + ["demo", "--data", SHARED_DATA]) == 0
    run_dir = os.path.join(workdir, "movielens-ml-latest-small")
    with open(os.path.join(run_dir, "demo_summary.json"), encoding="utf-8") as f:
        return {"workdir": workdir, "run_dir": run_dir, "summary": json.load(f)}


def test_demo_reports_baselines_and_rankers_on_the_same_queries(demo_run):
    s = demo_run["summary"]
    m = s["metrics"]
    for row in ("two_tower", "popularity", "ease", "item_knn", "als"):
        assert row in m and m[row]["n_queries"] == m["two_tower"]["n_queries"] > 1000, row
    assert m["ease"]["recall@50"] > m["popularity"]["recall@50"]  # a real baseline, not a straw man
    lead = m["two_tower"]["lead_over_best"]["recall@50"]
    assert lead["low"] <= lead["lead"] <= lead["high"] and lead["versus"] != "two_tower"
    r = s["ranking_metrics"]
    assert {"retrieval_only", "global_mean", "bias_model", "dcn"} <= set(r)
    assert r["dcn"]["ndcg_gain"]["n_users"] >= 5
    assert r["bias_model"]["rmse"] < r["global_mean"]["rmse"]


def test_recommend_export_answers_over_grpc_with_utf8_titles(demo_run):
    from recsys import steps
    from recsys.config import Config
    from serving.client import ServingClient
    from serving.testing import start_server

    recommend_dir = demo_run["summary"]["exports"]["recommend"]
    assert len(demo_run["summary"]["recommend_top10"]) == 10
    cfg = Config(workdir=demo_run["workdir"])
    cfg.data.source, cfg.data.path = "movielens", SHARED_DATA
    request = steps.sample_request(cfg, steps.latest_preprocessed(cfg))
    srv = start_server(model_base_path=os.path.dirname(recommend_dir), model_name="recommend", rest=False)
    try:
        with ServingClient(srv.grpc_address) as client:
            out = client.predict("recommend", request)
    finally:
        srv.stop(0)
    ids = [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in np.asarray(out["item_ids"])[0]]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert ids == list(demo_run["summary"]["recommend_top10"])  # same model, same request: same answer
    seen = {str(h) for h in request["history_item_ids"][0] if h}
    assert not seen & set(ids), "items the user already had must be excluded"
    items_path = os.path.join(steps.latest_preprocessed(cfg), "items.jsonl")
    with open(items_path, encoding="utf-8") as f:
        titles = [json.loads(line)["item_title"] for line in f]
    assert any("Misérables" in t for t in titles), "the real catalogue's non-ASCII titles made it through"
