"""item2vec / Meta-Prod2Vec: pairs, learning on planted data, the similar_items export served over gRPC."""
import json

import numpy as np
import pytest

from recsys.config import ExportConfig, Item2VecConfig
from trainer import data, evaluation
from trainer.models import item2vec


@pytest.fixture(scope="module")
def planted():
    """300 users, 200 items in 10 taste clusters (genre = cluster), Zipf popularity inside each cluster.

    Each user draws 85% of their 8-16 events from one cluster, the rest from anywhere; the latest
    event per user is held out (leave-one-out). Popularity cannot tell clusters apart; co-occurrence can.
    """
    rng = np.random.default_rng(5)
    n_items, n_clusters = 200, 10
    cluster = np.arange(n_items) % n_clusters
    zipf = 1.0 / np.arange(1, n_items + 1) ** 0.8
    zipf /= zipf.sum()
    item_ids = np.array([f"i{i}" for i in range(n_items)])
    genres = np.array([f"g{c}" + ("|noise" if i % 7 == 0 else "") for i, c in enumerate(cluster)], dtype=object)
    cat = data.Catalogue(item_ids=item_ids, raw={"item_id": item_ids, "item_genres": genres})
    users, items, ts = [], [], []
    for u in range(300):
        taste = rng.integers(n_clusters)
        p_in = np.where(cluster == taste, zipf, 0.0)
        for t in range(int(rng.integers(8, 17))):
            p = p_in / p_in.sum() if rng.random() < 0.85 else zipf
            users.append(f"u{u}")
            items.append(int(rng.choice(n_items, p=p)))
            ts.append(t)
    users, items, ts = np.array(users), np.array(items), np.array(ts)
    train_mask, test_mask = evaluation.leave_one_out(users, items, ts)
    seqs = {}
    for u, i in zip(users[train_mask], items[train_mask]):
        seqs.setdefault(u, []).append(i)
    return {"catalogue": cat, "seqs": {u: np.array(s) for u, s in seqs.items()}, "users": users[test_mask],
            "targets": items[test_mask]}


def _cfg(**kw) -> Item2VecConfig:
    base = dict(dim=32, window=3, negatives=5, epochs=4, batch_size=512, learning_rate=0.01, subsample=0.0)
    base.update(kw)
    return Item2VecConfig(**base)


def test_skipgram_pairs_stay_within_a_user_and_the_window():
    t, c = item2vec.skipgram_pairs([np.array([0, 1, 2]), np.array([3, 4]), np.array([5])], 1,
                                   np.random.default_rng(0))
    assert sorted(zip(t.tolist(), c.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)]
    t, c = item2vec.skipgram_pairs([np.array([0, 1, 2])], 2, np.random.default_rng(0))
    assert (0, 2) in set(zip(t.tolist(), c.tolist())) and len(t) == 6


def test_meta_pairs_link_items_to_genre_tokens():
    genres = [np.array([0]), np.array([1]), np.array([], np.int64)]  # item 2 has no genre
    t, c = item2vec.meta_pairs(np.array([0, 1]), np.array([1, 0]), genres, 3, np.random.default_rng(0))
    pairs = set(zip(t.tolist(), c.tolist()))
    # genre tokens are numbered after the 3 items: genre 0 -> 3, genre 1 -> 4
    assert {(0, 4), (1, 3), (3, 1), (4, 0), (0, 3), (3, 0), (1, 4), (4, 1)} == pairs


@pytest.mark.parametrize("side,optimizer", [(False, "adam"), (True, "adam"), (True, "sparse_adam")])
def test_neighbours_of_the_history_beat_popularity(planted, side, optimizer):
    cat = planted["catalogue"]
    emb = item2vec.train_item2vec(list(planted["seqs"].values()), cat,
                                  _cfg(side_information=side, optimizer=optimizer), seed=1, log=lambda *_: None)
    assert emb.side_information is side and emb.history[-1] < emb.history[0]
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, rtol=1e-4)
    hist = np.full((len(planted["users"]), 20), -1)
    for r, u in enumerate(planted["users"]):
        h = planted["seqs"][u][-20:]
        hist[r, 20 - len(h):] = h
    exclude = [planted["seqs"][u] for u in planted["users"]]
    exclude = [e[e != t] for e, t in zip(exclude, planted["targets"])]
    topk = evaluation.full_ranking_topk(emb.history_queries(hist), emb.vectors, 20, exclude)
    pop = evaluation.popularity_topk(emb.train_counts, len(hist), 20, exclude)
    model_r, pop_r = (evaluation.recall_at_k(x, planted["targets"], 20) for x in (topk, pop))
    assert model_r > 1.3 * pop_r, (side, model_r, pop_r)


def test_the_vectors_share_no_common_direction(planted):
    """Skip-gram's raw input vectors are nearly parallel (a shared direction most of a row's norm); cosine
    neighbours are only about items once it is taken out."""
    emb = item2vec.train_item2vec(list(planted["seqs"].values()), planted["catalogue"], _cfg(epochs=2), seed=1,
                                  log=lambda *_: None)
    trained = emb.vectors[emb.train_counts > 0]
    assert np.linalg.norm(trained.mean(0)) < 0.2, "the rows' mean is what all of them share"
    assert np.median(trained @ trained.T) < 0.2, "a typical pair of items is not alike"


def test_cold_items_get_their_genres_vector(planted):
    cat = planted["catalogue"]
    seqs = [s[s != 0] for s in planted["seqs"].values()]  # item 0 never seen in training
    emb = item2vec.train_item2vec(seqs, cat, _cfg(epochs=1), seed=1, log=lambda *_: None)
    genres, names = item2vec.item_genres(cat)
    expected = emb.genre_vectors[genres[0]].mean(0)
    np.testing.assert_allclose(emb.vectors[0], expected / np.linalg.norm(expected), rtol=1e-4)


def test_similar_items_export_reloads_and_answers_over_grpc(planted, tmp_path, capsys):
    from recsys import cli, steps
    from serving.client import ServingClient
    from serving.testing import start_server
    from trainer import export_similar

    cat = planted["catalogue"]
    emb = item2vec.train_item2vec(list(planted["seqs"].values()), cat, _cfg(epochs=1), seed=1, log=lambda *_: None)
    path = export_similar.export_similar_items(cat.item_ids, emb.vectors, str(tmp_path), 5, ExportConfig(), k=10)
    queries = [str(cat.item_ids[3]), "no-such-item", str(cat.item_ids[7])]
    fresh = steps.reload_in_subprocess(path, {"item_ids": np.array(queries, dtype=object)})
    for row, q in ((0, 3), (2, 7)):
        exact = [str(cat.item_ids[i]) for i in emb.neighbours(q, 10)]
        got = fresh["item_ids"][row]
        assert len(got) == 10 and cat.item_ids[q] not in got, "never the item itself"
        assert len(set(got) & set(exact)) >= 9, (got, exact)
        assert np.all(np.diff(fresh["scores"][row]) <= 1e-6)
    assert fresh["item_ids"][1] == [""] * 10 and fresh["scores"][1] == [0.0] * 10, "unknown id: empty answer"

    server = start_server(model_base_path=str(tmp_path / export_similar.MODEL_NAME),
                          model_name=export_similar.MODEL_NAME, rest=False)
    try:
        with ServingClient(server.grpc_address) as client:
            out = client.predict(export_similar.MODEL_NAME, {"item_ids": np.array(queries[:1], dtype=object)})
        assert cli.main(["query", "--similar", queries[0], "--k", "5", "--json", "--address",
                         server.grpc_address]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    finally:
        server.stop(0)
    assert [x.decode() if isinstance(x, bytes) else x for x in out["item_ids"][0]] == fresh["item_ids"][0]
    assert printed["item_ids"][0] == fresh["item_ids"][0][:5]


def test_user_sequences_read_utf8_ids_in_time_order(preprocessed):
    """The shared run's user and item ids are non-ASCII (numpy's astype(str) would raise on them)."""
    import tensorflow as tf

    cat = data.load_catalogue(preprocessed)
    seqs = item2vec.user_sequences(preprocessed, cat)
    spec = {k: tf.io.FixedLenFeature([], t) for k, t in
            (("user_id", tf.string), ("item_id", tf.string), ("timestamp", tf.int64))}
    cols = {"user_id": [], "item_id": [], "timestamp": []}
    for b in tf.data.TFRecordDataset(data.files(preprocessed, "train"), compression_type="GZIP").batch(8192):
        for k, v in tf.io.parse_example(b, spec).items():
            cols[k].extend(v.numpy().tolist())
    users = [u.decode("utf-8") for u in cols["user_id"]]
    assert any(not u.isascii() for u in seqs) and sum(map(len, seqs.values())) == len(users)
    user = users[0]
    mine = sorted((t, i.decode("utf-8")) for u, i, t in zip(users, cols["item_id"], cols["timestamp"]) if u == user)
    assert [cat.item_ids[i] for i in seqs[user]] == [i for _, i in mine]
    cut = mine[len(mine) // 2][0]
    early = item2vec.user_sequences(preprocessed, cat, before_ts=cut)
    assert [cat.item_ids[i] for i in early.get(user, [])] == [i for t, i in mine if t < cut]
