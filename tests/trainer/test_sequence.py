"""Sequence history encoders (GRU, causal transformer): masking, time gaps, learning, export with a set history length."""
import copy
import os

import numpy as np
import pytest
import tensorflow as tf

from preprocessing import schema
from preprocessing.schema import T
from preprocessing.transform import HOUR, history_gaps
from recsys.config import RetrievalConfig
from trainer import evaluation
from trainer.features import FeatureSizes, IndexEmbedding
from trainer.models import sequence
from trainer.models.retrieval import TwoTowerModel


def _cfg(encoder: str, pooled: bool = False) -> RetrievalConfig:
    """Small towers; ``pooled=False``: the encoder alone reads the history (what its own tests are about)."""
    cfg = RetrievalConfig(history_encoder=encoder, embedding_dim=32, id_dim=16, feature_dim=4, hidden=(64,),
                          seq_dim=32, seq_layers=2, seq_heads=2, seq_dropout=0.0, seq_keep_pooled=pooled,
                          seq_tables="shared" if not pooled else RetrievalConfig.seq_tables)
    return cfg


def _encoder(kind: str, n_items: int = 30):
    tf.keras.utils.set_random_seed(3)
    item = IndexEmbedding(n_items, 8, name="items")
    nxt = IndexEmbedding(n_items, 8, name="next")
    return sequence.build_encoder(_cfg(kind), item, nxt)


@pytest.mark.parametrize("kind", ["transformer", "gru"])
def test_no_future_item_changes_an_earlier_output(kind):
    enc = _encoder(kind)
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 30, (4, 10))
    hist[:, :3] = -1  # left padding, as preprocessing writes it
    gaps = np.sort(rng.uniform(0, 8, (4, 10)), axis=1)[:, ::-1].copy()
    base = enc.sequence(tf.constant(hist), tf.constant(gaps, tf.float32)).numpy()
    for j in (4, 7, 9):
        changed, changed_gaps = hist.copy(), gaps.copy()
        changed[:, j] = (changed[:, j] + 1 + rng.integers(0, 28, 4)) % 30
        changed_gaps[:, j] += 3.0
        out = enc.sequence(tf.constant(changed), tf.constant(changed_gaps, tf.float32)).numpy()
        np.testing.assert_allclose(out[:, :j], base[:, :j], atol=1e-6, err_msg=f"position {j} leaked backwards")
        assert np.abs(out[:, j:] - base[:, j:]).max() > 1e-4, "the changed item must affect its own position"
    assert np.all(base[:, :3] == 0.0), "padded positions give zeros"


def test_transformer_attention_mask_is_causal_and_skips_padding():
    valid = tf.constant([[False, True, True, True]])
    m = sequence.causal_mask(valid).numpy()[0]
    expected = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]], bool)
    np.testing.assert_array_equal(m, expected)


def test_attention_softmax_without_the_softmax_op_gives_keras_numbers():
    """The transformer's attention (exp - logsumexp) equals Keras' MultiHeadAttention with the same weights
    and causal mask, and its graph has no Softmax op (grappler warns about that op in loaded SavedModels)."""
    x = tf.random.stateless_normal([2, 5, 8], seed=[1, 2])
    mask = sequence.causal_mask(tf.constant([[False, True, True, True, True], [True] * 5]))
    ours = sequence._Attention(2, 4)
    keras = tf.keras.layers.MultiHeadAttention(2, 4)
    ours(x, x, attention_mask=mask), keras(x, x, attention_mask=mask)
    keras.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x, x, attention_mask=mask).numpy(), keras(x, x, attention_mask=mask).numpy(),
                               rtol=1e-5, atol=1e-6)
    graph = tf.function(lambda t: ours(t, t, attention_mask=mask)).get_concrete_function(x).graph
    assert "Softmax" not in {op.type for op in graph.get_operations()}


def test_time_gap_features_on_a_hand_built_case():
    now = 1_000 * HOUR
    # left-padded history: pad, 10 days ago, 2 days ago, 2 hours ago, 10 minutes ago, same second (clipped at 0)
    hist_ts = np.array([[0, now - 240 * HOUR, now - 48 * HOUR, now - 2 * HOUR, now - 600, now]], np.int64)
    real = tf.constant([[False, True, True, True, True, True]])
    gaps = history_gaps(tf.constant([now], tf.int64), tf.constant(hist_ts), real).numpy()
    np.testing.assert_allclose(gaps[0], np.log1p([0.0, 240.0, 48.0, 2.0, 1.0 / 6.0, 0.0]), rtol=1e-6)
    # buckets: edges 0.25h, 1h, 3h, 6h, 12h, 24h, 48h, 168h, 720h, ...: [<0.25h]=0, 2h=2, 48h=7 (inclusive edge), 240h=8
    np.testing.assert_array_equal(sequence.gap_buckets(tf.constant(gaps)).numpy()[0], [0, 8, 7, 2, 0, 0])
    assert sequence.NUM_GAP_BUCKETS == len(sequence.GAP_EDGES_HOURS) + 1


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="history_encoder"):
        sequence.build_encoder(_cfg("lstm"), IndexEmbedding(3, 2))


# ---------------------------------------------------------------- learning on planted structure
N_ITEMS, L = 60, 8


def _planted(n_users: int, seed: int):
    """Transformed-feature rows whose next item follows a fixed successor of the last item 85% of the time."""
    rng = np.random.default_rng(seed)
    successor = np.random.default_rng(1).permutation(N_ITEMS)
    pop = 1.0 / np.arange(1, N_ITEMS + 1)
    pop /= pop.sum()
    rows = []
    for _ in range(n_users):
        seq = [int(rng.choice(N_ITEMS, p=pop))]
        for _ in range(int(rng.integers(6, 16))):
            seq.append(int(successor[seq[-1]]) if rng.random() < 0.85 else int(rng.choice(N_ITEMS, p=pop)))
        for t in range(1, len(seq)):
            h = seq[max(0, t - L):t]
            rows.append((h, seq[t], len(seq) - t))
    hist = np.full((len(rows), L), -1, np.int64)
    for r, (h, _, _) in enumerate(rows):
        hist[r, L - len(h):] = h
    gaps = np.where(hist >= 0, np.log1p(np.arange(L, 0, -1, dtype=np.float32) * 3.0), 0.0).astype(np.float32)
    n = len(rows)
    z = np.zeros(n, np.int64)
    feats = {T.USER_IDX: z, T.USER_AGE_IDX: z, T.USER_COUNTRY_IDX: z, T.DEVICE_IDX: z, T.HOUR: z, T.WEEKDAY: z,
             T.USER_TENURE_Z: z.astype(np.float32), T.TIME_Z: z.astype(np.float32), T.HISTORY_IDX: hist,
             T.HISTORY_GAPS: gaps, T.HISTORY_LEN: (hist >= 0).sum(1), T.HISTORY_GAP_Z: z.astype(np.float32),
             T.ITEM_IDX: np.array([r[1] for r in rows], np.int64)}
    return feats


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_a_few_training_steps_beat_popularity_on_planted_sequences(kind):
    train, test = _planted(300, seed=2), _planted(60, seed=3)
    sizes = FeatureSizes(users=2, items=N_ITEMS, genres=2, title_tokens=2, ages=2, countries=2, devices=2,
                         price_buckets=2, item_age_buckets=2)
    cfg = _cfg(kind)
    cfg.use_item_features, cfg.use_user_id = False, False
    cfg.seq_dim, cfg.seq_layers, cfg.hidden = 16, 1, (32,)
    tf.keras.utils.set_random_seed(5)
    counts = np.bincount(train[T.ITEM_IDX], minlength=N_ITEMS)
    model = TwoTowerModel(sizes, cfg, counts)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    ds = tf.data.Dataset.from_tensor_slices(train).shuffle(4096, seed=1).batch(128).repeat()
    # the GRU learns the successor faster (recall@10 0.72 after 25 steps vs the transformer's 0.51, popularity 0.34)
    model.fit(ds, steps_per_epoch={"gru": 30, "transformer": 50}[kind], epochs=1, verbose=0)
    q = model.query_tower(test).numpy()
    items = model.candidate_tower({T.ITEM_IDX: tf.range(N_ITEMS, dtype=tf.int64)}).numpy()
    target = test[T.ITEM_IDX]
    model_r10 = evaluation.recall_at_k(evaluation.full_ranking_topk(q, items, 10), target, 10)
    pop_r10 = evaluation.recall_at_k(evaluation.popularity_topk(counts, len(q), 10), target, 10)
    assert model_r10 > max(1.5 * pop_r10, 0.5), (kind, model_r10, pop_r10)


# ---------------------------------------------------------------- history length setting and export
def test_history_length_setting_shapes_the_raw_inputs_and_the_signature():
    from preprocessing import requests
    from trainer import export

    assert [c.length for c in schema.raw_columns(6) if c.role == schema.HISTORY] == [6, 6, 6]
    assert schema.raw_columns(None) is schema.RAW_COLUMNS
    assert schema.raw_feature_spec(history_length=6)["history_ts"].shape == [6]
    specs = export.query_signature_specs(6)
    assert specs["history_item_ids"].shape.as_list() == [None, 6]
    assert export._dummy(specs)["history_ts"].shape == (1, 6)
    events = [{"item_id": f"i{n}", "timestamp": 100 + n, "rating": n % 2 * 4.0} for n in range(10)]
    req = requests.query_request({"user_id": "u"}, events, at_ts=105, history_length=6)
    assert req["history_item_ids"].tolist() == [["", "i0", "i1", "i2", "i3", "i4"]]
    assert req["history_ts"].tolist() == [[0, 100, 101, 102, 103, 104]]
    assert req["history_ratings"].tolist() == [[0.0, 0.0, 4.0, 0.0, 4.0, 0.0]]
    spec = {T.HISTORY_IDX: tf.io.FixedLenFeature([6], tf.int64)}
    assert schema.history_length_of(spec) == 6
    with pytest.raises(ValueError, match="history length"):
        schema.raw_columns(0)


def test_transformer_export_reloads_in_a_fresh_process_and_answers_over_grpc(run_cfg, preprocessed, tmp_path):
    """A few training steps on the session's preprocessing, ScaNN export, same top-10 in a fresh interpreter."""
    from recsys import steps
    from trainer import evaluate_retrieval as er, export
    from trainer import train as trainer_train

    cfg = copy.deepcopy(run_cfg)  # the session's run_cfg is shared: never mutate it
    cfg.retrieval = _cfg("transformer", pooled=True)  # the defaults: pooled features + a gated encoder
    cfg.train.epochs, cfg.train.batch_size, cfg.train.steps_per_epoch = 1, 256, 3
    cfg.export.top_k = 20
    trained = trainer_train.train_retrieval(preprocessed, cfg, out_dir=str(tmp_path / "train"))
    assert isinstance(trained.model.query_tower.history_encoder, sequence.TransformerEncoder)
    vectors = er.item_vectors(trained.model.candidate_tower,
                              trained.catalogue.transformed(trained.tft_output.transform_features_layer()))
    request = steps.sample_request(cfg, preprocessed)
    path = export.export_retrieval(trained.tft_output, trained.model.query_tower, trained.catalogue.item_ids,
                                   vectors, str(tmp_path / "models"), 1, cfg.export, kind="scann",
                                   name="retrieval_transformer")
    fresh = steps.reload_in_subprocess(path, request)
    from serving.client import ServingClient
    from serving.testing import start_server

    server = start_server(model_base_path=os.path.dirname(path), model_name="retrieval_transformer", rest=False)
    try:  # what `recsys serve` answers over gRPC, as TF Serving would
        with ServingClient(server.grpc_address) as client:
            served = client.predict("retrieval_transformer", request)
    finally:
        server.stop(0)
    assert len(fresh["item_ids"][0]) == 20
    ids = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in np.asarray(served["item_ids"])[0][:10]]
    assert fresh["item_ids"][0][:10] == ids
    # the signature as saved, read from saved_model.pb (a third restore of the model would cost seconds)
    from tensorflow.python.saved_model import loader_impl

    sig = loader_impl.parse_saved_model(path).meta_graphs[0].signature_def["serving_default"]
    assert [d.size for d in sig.inputs["history_item_ids"].tensor_shape.dim] == [-1, schema.HISTORY_LENGTH]


def test_pooled_path_kept_beside_a_silent_encoder_that_can_grow():
    """retrieval.seq_keep_pooled: mean + last-3 features stay; the encoder enters through a learned scale from 0."""
    feats = {k: v[:16] for k, v in _planted(4, seed=4).items()}
    sizes = FeatureSizes(users=2, items=N_ITEMS, genres=2, title_tokens=2, ages=2, countries=2, devices=2,
                         price_buckets=2, item_age_buckets=2)
    cfg = _cfg("transformer", pooled=True)
    cfg.seq_tables, cfg.seq_dim, cfg.seq_layers = "shared", 8, 1
    tf.keras.utils.set_random_seed(6)
    tower = TwoTowerModel(sizes, cfg).query_tower
    base = tower(feats).numpy()
    assert any(w is tower.encoder_scale for w in tower.trainable_weights) and float(tower.encoder_scale) == 0.0
    shared = {id(w) for w in tower.item_embedding.weights + tower.next_item.weights}  # the tables it reads
    own = [w for w in tower.history_encoder.trainable_weights if id(w) not in shared]
    assert own, "the encoder has weights of its own"
    for w in own:  # a silent encoder: its own weights cannot move the query yet
        w.assign(w + 1.0)
    np.testing.assert_allclose(tower(feats).numpy(), base, atol=1e-6)
    tower.encoder_scale.assign(1.0)
    assert np.abs(tower(feats).numpy() - base).max() > 1e-3, "once the scale grows the encoder contributes"
    tower.encoder_scale.assign(0.0)
    changed = dict(feats, **{T.HISTORY_IDX: feats[T.HISTORY_IDX].copy()})
    changed[T.HISTORY_IDX][:, -1] = (changed[T.HISTORY_IDX][:, -1] + 1) % N_ITEMS
    assert np.abs(tower(changed).numpy() - base).max() > 1e-4, "the pooled last-item features are still read"


def test_sequence_settings_are_validated_in_the_config():
    from recsys.config import ConfigError, load_config

    cfg = load_config(None, ["retrieval.seq_tables=own", "retrieval.seq_keep_pooled=false"])
    assert (cfg.retrieval.seq_tables, cfg.retrieval.seq_keep_pooled) == ("own", False)
    with pytest.raises(ConfigError, match="seq_tables"):
        load_config(None, ["retrieval.seq_tables=nearby"])
