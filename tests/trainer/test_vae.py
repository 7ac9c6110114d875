"""Mult-VAE: shapes, the dot-product form of its scores, learning on planted clusters."""
import numpy as np
import tensorflow as tf

from recsys.config import VAEConfig
from trainer import evaluation
from trainer.models import vae


def test_bags_are_binary_and_ignore_padding_and_repeats():
    m = vae.bags([np.array([0, 2, 2]), np.array([-1, 1]), np.array([], np.int64)], 3)
    np.testing.assert_array_equal(m, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])


def test_scores_are_a_dot_product_of_query_and_item_vectors():
    model = vae.MultVAE(5, 8, 3, 0.5)
    x = vae.bags([np.array([0, 1]), np.array([4])], 5)
    logits, mu, _ = model(tf.constant(x), training=False)
    np.testing.assert_allclose(model.query_vectors(x) @ model.item_vectors().T, logits.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.query_vectors(x)[:, :3], mu.numpy(), rtol=1e-6)


def test_learns_planted_clusters_and_beats_popularity():
    """300 users in 10 taste clusters of 20 items each (Zipf popularity); hold out one item per user."""
    rng = np.random.default_rng(0)
    n_items, n_clusters = 200, 10
    cluster = np.arange(n_items) % n_clusters
    zipf = 1.0 / np.arange(1, n_items + 1) ** 0.8
    train, targets = [], []
    for _ in range(300):
        p = np.where(cluster == rng.integers(n_clusters), zipf, 0.0)
        items = rng.choice(n_items, size=9, replace=False, p=p / p.sum())
        train.append(items[:-1])
        targets.append(items[-1])
    cfg = VAEConfig(hidden=64, latent=16, epochs=15, batch_size=64, anneal_steps=50, learning_rate=0.003)
    trained = vae.train_vae(train, n_items, cfg, seed=1, log=lambda *_: None)
    assert trained.history[-1]["nll"] < trained.history[0]["nll"]
    q = trained.model.query_vectors(vae.bags(train, n_items))
    topk = evaluation.full_ranking_topk(q, trained.model.item_vectors(), 10, exclude=train)
    counts = np.bincount(np.concatenate(train), minlength=n_items)
    pop = evaluation.popularity_topk(counts, len(train), 10, exclude=train)
    model_r, pop_r = (evaluation.recall_at_k(t, np.array(targets), 10) for t in (topk, pop))
    assert model_r > max(2 * pop_r, 0.3), (model_r, pop_r)
