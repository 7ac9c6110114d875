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


# ---------------------------------------------------------------- retrieval.history_content
def _sizes():
    from trainer.features import FeatureSizes

    return FeatureSizes(users=3, items=7, genres=4, title_tokens=9, ages=2, countries=2, devices=2, price_buckets=2,
                        item_age_buckets=2)


def _content_model():
    from recsys.config import RetrievalConfig
    from trainer.models.retrieval import TwoTowerModel, item_content_table

    sizes = _sizes()
    # a catalogue of 6 items in an order unlike the vocabulary's; index 6 is the OOV bucket
    catalogue = {T.ITEM_IDX: np.array([3, 0, 5, 1, 4, 2]),
                 T.TITLE_IDX: np.array([[3, 4, -1], [0, -1, -1], [5, 6, 7], [1, 2, -1], [4, -1, -1], [2, 8, -1]]),
                 T.GENRE_IDX: np.array([[1, -1], [0, -1], [2, 3], [1, 0], [3, -1], [2, -1]])}
    table = item_content_table(catalogue, sizes.items)
    cfg = RetrievalConfig(embedding_dim=8, id_dim=4, feature_dim=2, hidden=(16,), history_content=True)
    tf.keras.utils.set_random_seed(1)
    return TwoTowerModel(sizes, cfg, item_content=table), table


def _query_rows(latest):
    n = len(latest)
    z = np.zeros(n, np.int64)
    hist = np.stack([np.full(n, -1), np.full(n, 2), np.asarray(latest)], axis=1)
    return {T.USER_IDX: z, T.USER_AGE_IDX: z, T.USER_COUNTRY_IDX: z, T.DEVICE_IDX: z, T.HOUR: z, T.WEEKDAY: z,
            T.USER_TENURE_Z: z.astype(np.float32), T.TIME_Z: z.astype(np.float32), T.HISTORY_IDX: hist,
            T.HISTORY_GAPS: np.zeros(hist.shape, np.float32), T.HISTORY_LEN: (hist >= 0).sum(1),
            T.HISTORY_GAP_Z: z.astype(np.float32)}


def test_item_content_table_follows_the_item_index_and_leaves_the_oov_row_empty():
    _, table = _content_model()
    assert table[T.TITLE_IDX].shape == (7, 3) and table[T.GENRE_IDX].shape == (7, 2)
    assert table[T.TITLE_IDX][3].tolist() == [3, 4, -1] and table[T.TITLE_IDX][2].tolist() == [2, 8, -1]
    assert table[T.GENRE_IDX][5].tolist() == [2, 3]
    assert (table[T.TITLE_IDX][6] == -1).all() and (table[T.GENRE_IDX][6] == -1).all()


def test_history_content_reads_the_latest_items_title_through_the_candidate_tables():
    model, _ = _content_model()
    tower = model.query_tower
    assert tower.content_tables[T.TITLE_IDX] is model.candidate_tower.title, "one token space for both towers"
    rows = _query_rows([3, 5, 6])  # 6 = OOV: no content
    base = tower(rows).numpy()
    titles = tower.item_content[T.TITLE_IDX]
    old = titles.numpy()
    titles.assign(np.where(np.arange(7)[:, None] == 3, [[7, 7, 7]], old).astype(np.int32))
    moved = np.abs(tower(rows).numpy() - base).max(axis=1)
    assert moved[0] > 1e-5 and moved[1] < 1e-6 and moved[2] < 1e-6, "only the query whose latest item changed"
    titles.assign(np.where(np.arange(7)[:, None] == 2, [[7, 7, 7]], old).astype(np.int32))
    np.testing.assert_allclose(tower(rows).numpy(), base, atol=1e-6, err_msg="older history items' titles are not read")
    with pytest.raises(ValueError, match="history_content"):
        from trainer.models.retrieval import TwoTowerModel

        TwoTowerModel(_sizes(), model.cfg)


def test_history_content_model_exports_and_answers_the_same_in_a_fresh_process(run_cfg, preprocessed, tmp_path):
    """The item content table is saved with the exported query tower: a fresh interpreter gives the top-10 the
    in-memory model gives."""
    import copy

    from recsys import steps
    from trainer import evaluate_retrieval as er, export
    from trainer import train as trainer_train

    cfg = copy.deepcopy(run_cfg)
    cfg.retrieval.history_content = True
    cfg.train.epochs, cfg.train.batch_size, cfg.train.steps_per_epoch = 1, 256, 3
    cfg.export.top_k = 10
    trained = trainer_train.train_retrieval(preprocessed, cfg, out_dir=str(tmp_path / "train"))
    assert trained.model.query_tower.content_tables is not None
    vectors = er.item_vectors(trained.model.candidate_tower,
                              trained.catalogue.transformed(trained.tft_output.transform_features_layer()))
    request = steps.sample_request(cfg, preprocessed)
    path = export.export_retrieval(trained.tft_output, trained.model.query_tower, trained.catalogue.item_ids,
                                   vectors, str(tmp_path / "models"), 1, cfg.export, kind="brute_force")
    fresh = steps.reload_in_subprocess(path, request)
    raw = {k: tf.constant(v) for k, v in request.items()}
    query = trained.model.query_tower(trained.tft_output.transform_features_layer()(raw)).numpy()[0]
    ids = [x.decode("utf-8") if isinstance(x, bytes) else str(x)
           for x in trained.catalogue.item_ids[np.argsort(-(vectors @ query), kind="stable")[:10]]]
    assert fresh["item_ids"][0] == ids


def test_too_few_events_to_train_on_is_one_clear_error(run_cfg, tmp_path):
    """A handful of events leaves the validation slice empty: a DataError saying so (the CLI's one line), not
    Keras' "weights have not yet been created" from deep inside training."""
    import copy

    from preprocessing import pipeline
    from preprocessing.sources import synthetic, tables
    from trainer import train as trainer_train

    cfg = copy.deepcopy(run_cfg)
    cfg.workdir = str(tmp_path)
    raw, pre = str(tmp_path / "raw"), str(tmp_path / "pre")
    tables.write_raw(synthetic.generate(n_users=3, n_items=6, events_per_user=3, seed=1), raw)
    version_dir = pipeline.run(cfg, raw, pre)
    with pytest.raises(tables.DataError, match="validation slice .* is empty: [0-9]+ train events are too few"):
        trainer_train.train_retrieval(version_dir, cfg, out_dir=str(tmp_path / "train"))


# ---------------------------------------------------------------- retrieval.sampled_negatives
def test_negative_sampler_draws_catalogue_items_and_corrects_for_the_mixture():
    from trainer.models.retrieval import NegativeSampler

    catalogue = {T.ITEM_IDX: tf.constant([3, 0, 5, 1], tf.int64), T.TITLE_IDX: tf.constant([[1], [2], [3], [4]]),
                 T.HISTORY_IDX: tf.constant([[0], [0], [0], [0]])}   # not a candidate-tower input: never drawn
    share = np.array([0.1, 0.2, 0.1, 0.3, 0.2, 0.05, 0.05])             # in-batch probability per item index
    tf.random.set_seed(3)
    for alpha, expected in ((0.0, np.full(4, 0.25)), (1.0, share[[3, 0, 5, 1]] / share[[3, 0, 5, 1]].sum())):
        sampler = NegativeSampler(catalogue, share, count=8000, alpha=alpha)
        drawn = sampler.sample()
        assert set(drawn) == {T.ITEM_IDX, T.TITLE_IDX}
        ids = drawn[T.ITEM_IDX].numpy()
        np.testing.assert_array_equal(drawn[T.TITLE_IDX].numpy()[:, 0], np.array([2, 4, 0, 1, 0, 3])[ids])
        freq = np.array([np.mean(ids == i) for i in (3, 0, 5, 1)])
        np.testing.assert_allclose(freq, expected, atol=0.02)
        # share of the B in-batch + M sampled candidates: (B p(j) + M q(j)) / (B + M), a probability (TFRS clips
        # its input to [1e-6, 1]); item 2 is not in the catalogue
        q3 = expected[0]
        prob = sampler.probability(tf.constant([3, 2], tf.int64), 10).numpy()
        np.testing.assert_allclose(prob, [(10 * 0.3 + 8000 * q3) / 8010, 10 * 0.1 / 8010], rtol=1e-5)
        assert (prob <= 1).all()


def test_mixed_negative_sampling_trains_and_beats_popularity(run_cfg, preprocessed, tmp_path):
    import copy

    from trainer import evaluate_retrieval as er
    from trainer.train import train_retrieval

    cfg = copy.deepcopy(run_cfg)
    cfg.retrieval.sampled_negatives = 64
    cfg.train.epochs = 2
    trained = train_retrieval(preprocessed, cfg, str(tmp_path / "model"))
    assert trained.model._sampler is not None and trained.model._sampler.count == 64
    loss = trained.history["loss"]
    assert np.isfinite(loss).all() and loss[-1] < loss[0]
    vectors = er.item_vectors(trained.model.candidate_tower,
                              trained.catalogue.transformed(trained.tft_output.transform_features_layer()))
    res = er.evaluate(preprocessed, lambda b: trained.model.query_tower(b), vectors, trained.catalogue, trained.stats,
                      cfg, with_baselines=False)
    assert res["two_tower"]["recall@50"] >= 1.8 * res["popularity"]["recall@50"], res


def test_a_small_log_gets_batches_small_enough_for_enough_steps_an_epoch():
    from recsys.config import TrainConfig
    from trainer.train import effective_batch_size

    t = TrainConfig()                                           # batch 512, at least 64 steps an epoch
    assert effective_batch_size(t, 68_063) == 512               # ml-latest-small's train split: unchanged
    assert effective_batch_size(t, 14_356) == 224               # a 14K-event shop log: 28 -> 64 steps an epoch
    assert effective_batch_size(t, 500) == 32                   # never below 32 in-batch candidates
    assert effective_batch_size(TrainConfig(batch_size=16), 500) == 16
    assert effective_batch_size(TrainConfig(min_steps_per_epoch=0), 14_356) == 512
