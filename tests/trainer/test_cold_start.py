"""Cold start: the item/user hold-out, id dropout, the optional image branch, and content beating ids on
items never seen in training (a tiny planted case, a few training steps; no Beam)."""
import dataclasses

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from preprocessing import schema
from preprocessing.schema import T
from preprocessing.sources import images, synthetic
from recsys.config import Config
from trainer import cold_start
from trainer import evaluate_retrieval as er
from trainer.features import FeatureSizes
from trainer.models import content, retrieval

N_GENRES, PER_GENRE_KNOWN, PER_GENRE_COLD, N_USERS = 4, 12, 4, 40
KNOWN = N_GENRES * PER_GENRE_KNOWN                     # item indices 0..KNOWN-1 are in the vocabulary
N_ITEMS = KNOWN + N_GENRES * PER_GENRE_COLD            # the rest are cold: TFT gives them the OOV index
SIZES = FeatureSizes(users=N_USERS + 1, items=KNOWN + 1, genres=N_GENRES + 1, title_tokens=3 * N_GENRES + 1,
                     ages=3, countries=3, devices=2, price_buckets=4, item_age_buckets=4)
GENRE_NAMES = ("Action", "Comedy", "Drama", "Horror")


def _cfg(**kw):
    base = dict(hidden=(32,), embedding_dim=16, id_dim=8, feature_dim=4, use_history=False)
    return dataclasses.replace(Config().retrieval, **{**base, **kw})


def _items():
    """Transformed features of every catalogue item (cold ones with the OOV index), plus raw ids."""
    rng = np.random.default_rng(0)
    genre = np.arange(N_ITEMS) % N_GENRES
    idx = np.where(np.arange(N_ITEMS) < KNOWN, np.arange(N_ITEMS), KNOWN)   # KNOWN == OOV bucket
    genres = np.full((N_ITEMS, schema.MAX_GENRES), -1, np.int64)
    genres[:, 0] = genre
    titles = np.full((N_ITEMS, schema.TITLE_TOKENS), -1, np.int64)
    titles[:, 0] = 3 * genre + rng.integers(0, 3, N_ITEMS)
    ids = np.array([f"i{i}" for i in range(N_ITEMS)])
    return {T.ITEM_IDX: idx.astype(np.int64), T.GENRE_IDX: genres, T.TITLE_IDX: titles,
            T.PRICE_BUCKET: np.zeros(N_ITEMS, np.int64), T.PRICE_Z: np.zeros(N_ITEMS, np.float32),
            T.ITEM_RELEASE_Z: np.zeros(N_ITEMS, np.float32), "item_id": ids.astype(object)}, genre


def _queries(users):
    n = len(users)
    z = lambda dt=np.int64: np.zeros(n, dt)  # noqa: E731
    return {T.USER_IDX: np.asarray(users, np.int64), T.USER_AGE_IDX: z(), T.USER_COUNTRY_IDX: z(), T.DEVICE_IDX: z(),
            T.USER_TENURE_Z: z(np.float32), T.TIME_Z: z(np.float32), T.HOUR: z(), T.WEEKDAY: z(),
            T.HISTORY_IDX: np.full((n, 3), -1, np.int64), T.HISTORY_LEN: z(),
            T.HISTORY_GAPS: np.zeros((n, 3), np.float32), T.HISTORY_GAP_Z: z(np.float32)}


def _images():
    items, genre = _items()
    return items["item_id"].astype(str), images.genre_images(items["item_id"], [GENRE_NAMES[g] for g in genre], size=8)


def _tensors(d):
    return {k: tf.constant(v) for k, v in d.items()}


def test_hold_out_keeps_items_and_users_out_of_training_only():
    t = synthetic.generate(n_users=120, n_items=100, events_per_user=8, seed=2)
    held, h = cold_start.hold_out(t, item_fraction=0.2, user_fraction=0.2, eval_fraction=0.2, seed=1)
    assert h.items and h.users
    ts = np.asarray(held.interactions["timestamp"])
    items, users = np.asarray(held.interactions["item_id"]), np.asarray(held.interactions["user_id"])
    before = ts < h.cutoff
    assert not np.isin(items[before], h.items).any() and not np.isin(users[before], h.users).any()
    assert np.isin(items[~before], h.items).any()          # they still occur in the eval period
    # the pipeline's quantile with the recomputed fraction lands on the same cutoff
    assert cold_start.split_cutoff(ts, h.eval_fraction) == h.cutoff == cold_start.split_cutoff(
        np.asarray(t.interactions["timestamp"]), 0.2)
    assert len(ts) == t.num_interactions - h.removed_events and held.items == t.items


def test_id_dropout_makes_unknown_ids_depend_on_content_only():
    cfg = _cfg(candidate_tower="content", id_dropout=1.0)
    model = retrieval.TwoTowerModel(SIZES, cfg)
    tower = model.candidate_tower
    assert isinstance(tower, content.ContentTower) and tower.images is None   # no images file: no image branch
    items, _ = _items()
    x = _tensors(items)
    before = tower(x).numpy()
    emb = model.candidate_tower.item_embedding.embedding
    emb.set_weights([w + np.random.default_rng(1).normal(size=w.shape) for w in emb.get_weights()])
    after = tower(x).numpy()
    cold = items[T.ITEM_IDX] == KNOWN
    assert np.allclose(before[cold], after[cold], atol=1e-6)        # OOV: the id embedding has no say
    assert not np.allclose(before[~cold], after[~cold], atol=1e-3)  # known ids use it at serving time
    # an index beyond the table is the same unknown item; same content -> same vector
    far = dict(items, **{T.ITEM_IDX: np.full(N_ITEMS, KNOWN + 7, np.int64)})
    assert np.allclose(tower(_tensors(far)).numpy(), tower(_tensors(dict(items, **{T.ITEM_IDX: np.full(N_ITEMS, KNOWN)}))).numpy())
    # training with id_dropout = 1: every id dropped, known or not -> the content-only vector
    known_as_oov = dict(items, **{T.ITEM_IDX: np.full(N_ITEMS, KNOWN, np.int64)})
    assert np.allclose(tower(x, training=True).numpy(), tower(_tensors(known_as_oov)).numpy(), atol=1e-6)


def test_image_branch_needs_the_item_id_and_handles_items_without_an_image():
    ids, pixels = _images()
    tower = content.ContentTower(SIZES, _cfg(candidate_tower="content"), retrieval.IndexEmbedding(SIZES.items, 8),
                                 images=(ids[:-4], pixels[:-4]))     # the last 4 items have no image
    items, _ = _items()
    out = tower(_tensors(items)).numpy()
    assert out.shape == (N_ITEMS, 16) and np.isfinite(out).all()
    has = tower.images(tf.constant(items["item_id"]))[:, -1].numpy()
    assert has[:-4].all() and not has[-4:].any()
    with pytest.raises(ValueError, match="needs the raw 'item_id'"):
        tower(_tensors({k: v for k, v in items.items() if k != "item_id"}))
    # item_vectors keeps the raw id the lookup needs (other string features are dropped)
    vec = er.item_vectors(tower, dict(_tensors(items), item_title=tf.constant(["t"] * N_ITEMS)))
    assert np.allclose(vec, out, atol=1e-6)


def _train(cfg, epochs=3):
    """A few epochs on the planted data: user u consumes the known items of genre u % N_GENRES."""
    items, genre = _items()
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(N_USERS), 30)
    picks = np.array([rng.choice(np.flatnonzero((genre == u % N_GENRES) & (np.arange(N_ITEMS) < KNOWN)))
                      for u in users])
    rows = dict(_queries(users), **{k: v[picks] for k, v in items.items()})
    tf.keras.utils.set_random_seed(0)
    model = retrieval.TwoTowerModel(SIZES, cfg)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02))
    ds = tf.data.Dataset.from_tensor_slices(rows).shuffle(2000, seed=0).batch(64)
    model.fit(ds, epochs=epochs, verbose=0)
    vectors = er.item_vectors(model.candidate_tower, _tensors(items))
    q = model.query_tower(_tensors(_queries(np.arange(N_USERS)))).numpy()
    return q, vectors, genre


def _cold_recall(q, vectors, genre, k=4):
    """Recall@k of each user's in-genre cold items, ranked over the whole catalogue minus consumed items."""
    users = np.repeat(np.arange(N_USERS), PER_GENRE_COLD)
    targets = np.concatenate([np.flatnonzero((genre == u % N_GENRES) & (np.arange(N_ITEMS) >= KNOWN))
                              for u in range(N_USERS)])
    seen = [np.flatnonzero((genre == u % N_GENRES) & (np.arange(N_ITEMS) < KNOWN)) for u in users]
    per = cold_start.recall_per_query(cold_start.model_topk(q[users], vectors, seen, k), targets,
                                      np.arange(len(targets)), k)
    return float(per.mean())


def test_content_tower_beats_id_only_on_items_never_seen_in_training(tmp_path):
    path = images.write(str(tmp_path / images.IMAGES_FILE), *_images())   # retrieval.item_images
    id_only = _cold_recall(*_train(_cfg(candidate_tower="id", use_item_features=False)))
    with_content = _cold_recall(*_train(_cfg(candidate_tower="content", id_dropout=0.5, item_images=path)))
    # id-only: every cold item is the one OOV vector, so they tie and the top 4 is one per genre (0.25)
    assert with_content >= 0.6 and with_content > 2 * id_only, (with_content, id_only)


def test_ties_are_broken_at_random_and_cold_only_ranks_held_out_items_alone():
    # 6 items; items 3..5 are held out and share one vector (as the OOV row gives an id-only tower)
    items = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0, 1], [0, 1]], np.float32)
    q = np.tile(np.array([[0.0, 1.0]], np.float32), (300, 1))
    targets = np.full(300, 5)
    prior = [np.array([4])] * 300                       # item 4 was seen: excluded
    rows = np.arange(300)
    per = cold_start.recall_per_query(cold_start.model_topk(q, items, prior, k=1, seed=0), targets, rows, 1)
    # tied items 3 and 5 each win about half the time: position in the catalogue decides nothing
    assert 0.35 < per.mean() < 0.65
    held = np.array([3, 4, 5])
    only = cold_start.cold_only_recall(q, items, held, targets, prior, rows, k=2)
    assert np.all(only == 1.0)                          # among held-out items, 4 excluded: 3 and 5 fill the top 2
