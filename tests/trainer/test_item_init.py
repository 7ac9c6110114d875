"""retrieval.item_init=item2vec: item tables start at item2vec's centred vectors, row by id, at the table's own norm."""
import copy

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.utf8 import to_str
from trainer import data, item_init, train
from trainer.features import IndexEmbedding
from trainer.models import item2vec


def _table(n_vocab: int, dim: int = 4) -> IndexEmbedding:
    t = IndexEmbedding(n_vocab + 1, dim, vocab=schema.VOCAB_ITEM)
    t(tf.constant([0]))  # builds the (n_vocab + 2)-row table: padding, the vocabulary, the OOV bucket
    return t


def test_rows_follow_ids_not_positions_and_keep_the_tables_scale():
    vocab = ["c", "a", "zz", "b"]                     # TF-Transform order (by frequency); "zz" has no vector
    item_ids = ["a", "b", "c"]                        # item2vec's catalogue order
    vectors = np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, -3]], np.float32) + [5, 5, 5, 5]  # a shared direction
    centred = vectors - vectors.mean(0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    tables = [_table(len(vocab)), _table(len(vocab))]
    before = [t.embedding.embeddings.numpy().copy() for t in tables]
    assert item_init.copy_rows(tables, vectors, item_ids, vocab) == 3
    for t, old in zip(tables, before):
        new = t.embedding.embeddings.numpy()
        norm = np.linalg.norm(old[1:-1], axis=1).mean()
        for row, expected in ((1, unit[2]), (2, unit[0]), (4, unit[1])):  # row = vocab index + 1
            np.testing.assert_allclose(new[row], expected * norm, rtol=1e-5, atol=1e-6)
        # uncentred the three rows would be near-parallel (their mean ~0.99 of a row's norm)
        assert np.linalg.norm(new[[1, 2, 4]].mean(0)) < 0.5 * norm, "the shared +5 direction is not handed over"
        for row in (0, 3, 5):  # padding, the id without a vector, the OOV bucket: untouched
            np.testing.assert_array_equal(new[row], old[row])


def _built_model(cfg, preprocessed):
    model, _, catalogue, _, tft_output = train.build_retrieval(preprocessed, cfg, with_metrics=False)
    spec = tft_output.transformed_feature_spec()
    train._build_towers(model, next(iter(data.dataset(preprocessed, "train", 64, spec, keep="valid"))))
    vocab = to_str(tft_output.vocabulary_by_name(schema.VOCAB_ITEM)).tolist()
    return model, catalogue, vocab


def test_two_tower_tables_start_at_item2vec_vectors(run_cfg, preprocessed, monkeypatch):
    cfg = copy.deepcopy(run_cfg)
    cfg.retrieval.item_init_epochs = 1
    trained = []
    real = item2vec.train_item2vec
    monkeypatch.setattr(item2vec, "train_item2vec", lambda *a, **k: trained.append(real(*a, **k)) or trained[-1])
    monkeypatch.setattr(item_init, "_LAST", {})   # not the vectors of a model trained earlier in this process
    model, catalogue, vocab = _built_model(cfg, preprocessed)
    done = item_init.from_item2vec(model, preprocessed, catalogue, vocab, cfg, log=lambda _: None)
    tables = item_init.item_tables(model, cfg.retrieval.id_dim)
    assert done["tables"] == len(tables) >= 2  # the candidates' id table and the next-item table at least
    assert done["item_rows_from_item2vec"] == len(set(catalogue.item_ids.tolist()) & set(vocab))
    emb = trained[0]
    assert emb.vectors.shape[1] == cfg.retrieval.id_dim and len(emb.history) == 1  # its own epochs setting
    index = {v: n for n, v in enumerate(vocab)}
    some = [i for i in catalogue.item_ids.tolist()[:50] if i in index]
    rows = np.array([index[i] + 1 for i in some])
    found = [catalogue.index()[i] for i in catalogue.item_ids.tolist() if i in index]
    expected = emb.vectors[[catalogue.index()[i] for i in some]] - emb.vectors[found].mean(0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    for t in tables:  # each table's rows point where item2vec's centred vectors point (scale aside)
        got = t.embedding.embeddings.numpy()[rows]
        np.testing.assert_allclose((got * expected).sum(1) / np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    # a second model on the same events and item2vec settings (`recsys tune`'s next trial) reuses the vectors
    notes, again = [], _built_model(cfg, preprocessed)[0]
    assert item_init.from_item2vec(again, preprocessed, catalogue, vocab, cfg, log=notes.append) == dict(
        done, item2vec_seconds=0.0)
    assert len(trained) == 1 and "reused" in notes[0]
    for t, first in zip(item_init.item_tables(again, cfg.retrieval.id_dim), tables):
        np.testing.assert_allclose(t.embedding.embeddings.numpy()[rows], first.embedding.embeddings.numpy()[rows],
                                   rtol=1e-5)
    other = copy.deepcopy(cfg)
    other.item2vec.window += 1   # another setting: trained anew
    item_init.from_item2vec(_built_model(other, preprocessed)[0], preprocessed, catalogue, vocab, other,
                            log=lambda _: None)
    assert len(trained) == 2


def test_no_co_occurring_items_keeps_the_random_rows(run_cfg, preprocessed, monkeypatch):
    """A log where every user has one train event: nothing for item2vec to learn, training goes on as before."""
    model, catalogue, vocab = _built_model(copy.deepcopy(run_cfg), preprocessed)
    monkeypatch.setattr(item2vec, "user_sequences", lambda *a, **k: {"u1": np.array([0]), "u2": np.array([1])})
    monkeypatch.setattr(item_init, "_LAST", {})   # the shared run's model may have trained item2vec here
    before = [t.embedding.embeddings.numpy().copy() for t in item_init.item_tables(model, run_cfg.retrieval.id_dim)]
    notes = []
    done = item_init.from_item2vec(model, preprocessed, catalogue, vocab, run_cfg, log=notes.append)
    assert done["item_rows_from_item2vec"] == 0 and "stay random" in notes[0]
    for t, old in zip(item_init.item_tables(model, run_cfg.retrieval.id_dim), before):
        np.testing.assert_array_equal(t.embedding.embeddings.numpy(), old)
