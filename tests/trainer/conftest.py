"""Session fixtures of the ranking stage, shared by test_ranking.py, test_recommend.py and test_explain.py.

Built on the session's ``run_cfg``/``preprocessed``/``trained`` (tests/conftest.py) with small limits:
8000 train events x (1 + 4 negatives), 400 eval queries, a DCN trained for 2 epochs.
"""
import copy

import pytest

from trainer import ranking_data, train_ranking


@pytest.fixture(scope="session")
def ranking_cfg(run_cfg):
    cfg = copy.deepcopy(run_cfg)  # the session's run_cfg is shared: never mutate it
    r = cfg.ranking
    r.max_train_events, r.negatives, r.eval_max_queries, r.batch_size = 8000, 4, 400, 256
    r.hidden, r.recommend_candidates, r.recommend_k = (64, 32), 50, 10
    return cfg


@pytest.fixture(scope="session")
def ranking_data_fixture(ranking_cfg, preprocessed, trained):
    tr = trained["trained"]
    tft_layer = tr.tft_output.transform_features_layer()
    query_fn = lambda b: tr.model.query_tower(b)  # noqa: E731
    train, valid, info = ranking_data.build_train_pairs(preprocessed, query_fn, trained["item_vectors"], tr.catalogue,
                                                        tr.stats, tft_layer, ranking_cfg.ranking, seed=1)
    eval_set = ranking_data.build_eval_set(preprocessed, query_fn, trained["item_vectors"], tr.catalogue, tr.stats,
                                           tft_layer, ranking_cfg)
    tables = train_ranking.item_tables(tr.catalogue, tft_layer)
    return {"train": train, "valid": valid, "info": info, "eval": eval_set, "tables": tables, "sizes": tr.sizes}


@pytest.fixture(scope="session")
def dcn_ranker(ranking_cfg, ranking_data_fixture, tmp_path_factory):
    d = ranking_data_fixture
    return train_ranking.train_ranker("dcn", d["train"], d["valid"], d["sizes"], ranking_cfg,
                                      str(tmp_path_factory.mktemp("ranking") / "dcn"), epochs=2,
                                      tables=d["tables"])
