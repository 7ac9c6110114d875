"""Mult-VAE collaborative filtering (Liang et al., "Variational Autoencoders for Collaborative Filtering", 2018).

A user is the bag of items they interacted with (train split); the encoder maps the
L2-normalised, dropped-out bag to a Gaussian latent z (I -> hidden -> 2 x latent, tanh),
the decoder maps z to a multinomial over all items, and the loss is the multinomial
log-likelihood of the bag plus beta x KL, beta annealed linearly from 0 to ``beta_max``.

One deviation from the paper, to fit the project's retrieval contract: the decoder is one
linear layer (latent -> items) instead of latent -> 600 -> items, so a score is a dot
product, [mu(x), 1] . [W_item, b_item]: the same full-ranking / ScaNN path as the two-tower.
At evaluation a query's bag is what is known before its event (the user's train items and
the event's history), so the time split never sees the future.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf


class MultVAE(tf.keras.Model):
    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.n_items, self.latent = n_items, latent
        self.drop = tf.keras.layers.Dropout(dropout)
        self.hidden = tf.keras.layers.Dense(hidden, activation="tanh", name="encoder_hidden")
        self.stats = tf.keras.layers.Dense(2 * latent, name="encoder_stats")
        self.decoder = tf.keras.layers.Dense(n_items, name="decoder")

    def encode(self, x, training: bool = False):
        h = self.drop(tf.math.l2_normalize(x, axis=1), training=training)
        stats = self.stats(self.hidden(h))
        return stats[:, :self.latent], stats[:, self.latent:]   # mu, log variance

    def call(self, x, training: bool = False):
        mu, logvar = self.encode(x, training)
        z = mu + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mu)) if training else mu
        return self.decoder(z), mu, logvar

    def loss_terms(self, x, training: bool = True):
        logits, mu, logvar = self(x, training=training)
        nll = -tf.reduce_mean(tf.reduce_sum(tf.nn.log_softmax(logits) * x, axis=1))
        kl = tf.reduce_mean(0.5 * tf.reduce_sum(tf.exp(logvar) + tf.square(mu) - 1.0 - logvar, axis=1))
        return nll, kl

    def query_vectors(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """[B, latent + 1]: [mu(x), 1], to dot with ``item_vectors``."""
        out = []
        for s in range(0, len(x), batch_size):
            mu, _ = self.encode(tf.constant(x[s:s + batch_size], tf.float32))
            out.append(np.concatenate([mu.numpy(), np.ones((len(mu), 1), np.float32)], axis=1))
        return np.concatenate(out) if out else np.zeros((0, self.latent + 1), np.float32)

    def item_vectors(self) -> np.ndarray:
        """[n_items, latent + 1]: decoder weights and bias, so query . item = the decoder's logit."""
        w, b = self.decoder.kernel.numpy(), self.decoder.bias.numpy()
        return np.concatenate([w.T, b[:, None]], axis=1).astype(np.float32)


def bags(rows: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Binary [len(rows), n_items] interaction matrix from per-row item index lists (-1 and duplicates ignored)."""
    m = np.zeros((len(rows), n_items), np.float32)
    r = np.repeat(np.arange(len(rows)), [len(x) for x in rows])
    c = np.concatenate([np.asarray(x, np.int64) for x in rows] or [np.empty(0, np.int64)])
    ok = (c >= 0) & (c < n_items)
    m[r[ok], c[ok]] = 1.0
    return m


@dataclasses.dataclass
class TrainedVAE:
    model: MultVAE
    history: List[Dict[str, float]]
    train_seconds: float


def train_vae(user_items: Sequence[np.ndarray], n_items: int, vcfg, seed: int = 0, log=print) -> TrainedVAE:
    """Trains Mult-VAE on per-user item index lists (the train split)."""
    x = bags([u for u in user_items if len(u)], n_items)
    if not len(x):
        raise ValueError("Mult-VAE needs at least one user with a train interaction")
    tf.keras.utils.set_random_seed(seed)
    model = MultVAE(n_items, vcfg.hidden, vcfg.latent, vcfg.dropout, name="mult_vae")
    opt = tf.keras.optimizers.Adam(vcfg.learning_rate)
    model(tf.zeros([1, n_items]))
    opt.build(model.trainable_variables)  # slots before the first trace: `step` is traced once, not twice

    @tf.function(reduce_retracing=True)
    def step(batch, beta):
        with tf.GradientTape() as tape:
            nll, kl = model.loss_terms(batch, training=True)
            loss = nll + beta * kl
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return nll, kl

    rng = np.random.default_rng(seed)
    history, n_steps, t0 = [], 0, time.time()
    for epoch in range(vcfg.epochs):
        nlls, kls = [], []
        order = rng.permutation(len(x))
        for s in range(0, len(x), vcfg.batch_size):
            beta = min(vcfg.beta_max, vcfg.beta_max * n_steps / max(vcfg.anneal_steps, 1))
            nll, kl = step(tf.constant(x[order[s:s + vcfg.batch_size]]), tf.constant(beta, tf.float32))
            nlls.append(float(nll))
            kls.append(float(kl))
            n_steps += 1
        history.append({"nll": float(np.mean(nlls)), "kl": float(np.mean(kls)), "beta": float(beta)})
        if epoch == vcfg.epochs - 1 or (epoch + 1) % max(1, vcfg.epochs // 5) == 0:
            log(f"[vae] epoch {epoch + 1}/{vcfg.epochs} {time.time() - t0:6.1f}s nll={history[-1]['nll']:.3f} "
                f"kl={history[-1]['kl']:.3f} beta={beta:.3f}")
    return TrainedVAE(model=model, history=history, train_seconds=time.time() - t0)
