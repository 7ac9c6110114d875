"""Two-tower retrieval on planted synthetic data: it must clearly beat popularity."""
import numpy as np
import pytest
import tensorflow as tf

from preprocessing.schema import T
from trainer.features import IndexEmbedding, masked_mean


def test_beats_popularity_by_2x_recall_at_50(trained):
    res = trained["results"]
    model, pop = res["two_tower"], res["popularity"]
    assert model["n_queries"] == pop["n_queries"] > 500
    assert model["recall@50"] >= 2.0 * pop["recall@50"], (model, pop)
    assert model["ndcg@10"] > pop["ndcg@10"]


def test_evaluation_is_an_artifact_with_its_protocol_and_lineage(run_cfg, trained):
    from recsys import artifacts as af
    from recsys.layout import RunLayout

    layout = RunLayout(run_cfg)
    ev = af.Evaluation.read(layout.retrieval_evaluation)
    payload = ev.metrics()
    assert payload["protocol"] == "time_split_full" and "popularity" in payload["results"]
    assert ev.get("two_tower_recall_at_50") == payload["results"]["two_tower"]["recall@50"]
    model = af.RetrievalModel.read(ev.inputs["model"])
    assert model.uri == trained["trained"].out_dir == layout.retrieval
    pre = af.Preprocessed.read(model.inputs["preprocessed"])
    assert af.RawData.read(pre.inputs["raw"]).uri == layout.raw
    with pytest.raises(af.ArtifactError, match="not a Ranker"):
        af.Ranker.read(model.uri)


def test_index_embedding_masks_padding_and_clips_unknown():
    emb = IndexEmbedding(5, 3)
    out = emb(tf.constant([[-1, 0, 4, 99]])).numpy()
    assert np.all(out[0, 0] == 0.0)
    np.testing.assert_allclose(out[0, 2], out[0, 3])  # beyond the table -> the OOV row
    pooled = masked_mean(tf.constant([[[1.0], [3.0], [100.0]]]), tf.constant([[0, 1, -1]])).numpy()
    assert pooled[0, 0] == 2.0


def test_towers_are_normalised_and_share_the_item_table(trained):
    model = trained["trained"].model
    assert model.query_tower.item_embedding is model.candidate_tower.item_embedding
    cands = trained["item_vectors"]
    dim = trained["trained"].model.cfg.embedding_dim
    np.testing.assert_allclose(np.linalg.norm(cands[:, :dim], axis=1), 1.0, rtol=1e-4)
    assert T.ITEM_IDX  # schema names are the contract between preprocessing and the towers


def test_best_epoch_follows_the_monitored_metric_and_none_without_one():
    from trainer.train import best_epoch

    assert best_epoch({"val_loss": [3.0, 1.0, 2.0, 1.5]}) == 2  # 1-based: what early stopping restored
    recall = "val_factorized_top_k/top_50_categorical_accuracy"
    history = {"val_loss": [3.0, 1.0, 2.0], recall: [0.1, 0.2, 0.3]}
    assert best_epoch(history, (recall, "max")) == 3  # recall still rising while the loss turned
    assert best_epoch({"loss": [3.0, 2.0]}) is None  # parameter-server coordinators validate nothing


def test_early_stopping_watches_recall_at_k_or_the_loss():
    from recsys.config import TrainConfig
    from trainer.train import early_stopping_monitor

    top_50 = TrainConfig(early_stopping_metric="top_50")
    assert early_stopping_monitor(top_50, (10, 50, 100), True) == (
        "val_factorized_top_k/top_50_categorical_accuracy", "max")
    assert early_stopping_monitor(top_50, (10, 50, 100), False) == ("val_loss", "min")  # no metrics computed
    assert early_stopping_monitor(TrainConfig(), (10,), True) == ("val_loss", "min")  # the default
    with pytest.raises(ValueError, match="one of eval.ks"):
        early_stopping_monitor(TrainConfig(early_stopping_metric="top_20"), (10, 50), True)


def test_training_can_stop_on_validation_recall(run_cfg, preprocessed, tmp_path):
    """train.early_stopping_metric=top_K: Keras finds the metric under the key it watches (a wrong key would
    only warn, and the best-weights checkpoint would never be written)."""
    import copy

    from trainer.train import best_epoch, train_retrieval

    cfg = copy.deepcopy(run_cfg)
    cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.early_stopping_metric = 2, 15, "top_10"
    trained = train_retrieval(preprocessed, cfg, str(tmp_path / "model"))
    key, mode = trained.monitor
    assert (key, mode) == ("val_factorized_top_k/top_10_categorical_accuracy", "max")
    assert len(trained.history[key]) == 2 and best_epoch(trained.history, trained.monitor) in (1, 2)
    assert tf.io.gfile.glob(str(tmp_path / "model" / "checkpoints" / "best.weights*"))
