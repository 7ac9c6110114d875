"""Deterministic synthetic interaction logs with planted, measurable structure.

Planted so that a good model can find it and a popularity baseline cannot:
- latent tastes: users and items share a low-dimensional space built from genre centroids;
- genre affinity: item genres and title words come from the item's genre, so content
  features generalise to rarely seen items;
- popularity skew: a per-item log-normal bias (a few items get most events);
- sequential dependence: items form series (part 1, 2, 3...) and a user who just
  consumed part n moves on to part n+1 with probability ``p_sequel``;
- freshness: recently released items are preferred, unreleased items never occur;
- context: each user has a preferred device and active hours.
Same seed, same output, byte for byte.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from preprocessing.sources import images
from preprocessing.sources.tables import RawTables
from recsys import fileio

GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Horror", "Musical", "Mystery", "Romance", "SciFi", "Thriller", "War", "Western", "Noir")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+", "unknown")
COUNTRIES = ("US", "IN", "BR", "DE", "GB", "FR", "JP", "MX")
DEVICES = ("mobile", "web", "tv")
T_START = 1_577_836_800          # 2020-01-01: first event
SPAN = 2 * 365 * 86400           # two years of events
DAY = 86400
_SYLLABLES = ("ka", "lo", "mi", "ra", "ne", "zu", "to", "vi", "sa", "qu", "bel", "dor", "fen", "gar", "hul", "jin")


def _word(rng: np.random.Generator, n: int = 3) -> str:
    return "".join(rng.choice(_SYLLABLES, size=n))


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def generate(n_users: int = 2000, n_items: int = 1500, events_per_user: float = 25.0, seed: int = 42,
             latent_dim: int = 16, p_sequel: float = 0.5, taste_strength: float = 5.0) -> RawTables:
    """Returns users, items and interactions as columnar tables (see ``RawTables``)."""
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    centroids = _normalize(rng.normal(size=(n_genres, latent_dim)))

    # ---------------------------------------------------------------- items
    genre_p = 1.0 / np.arange(1, n_genres + 1) ** 0.6
    primary = rng.choice(n_genres, size=n_items, p=genre_p / genre_p.sum())
    secondary = np.where(rng.random(n_items) < 0.5, rng.integers(0, n_genres, n_items), -1)
    secondary = np.where(secondary == primary, -1, secondary)
    item_vec = centroids[primary] + 0.5 * np.where(secondary[:, None] >= 0, centroids[np.maximum(secondary, 0)], 0)
    item_vec = _normalize(item_vec + 0.45 * rng.normal(size=(n_items, latent_dim)))
    pop_bias = rng.normal(0.0, 1.1, n_items)
    quality = rng.normal(0.0, 1.0, n_items)
    genre_words = [[_word(rng, 2) for _ in range(12)] for _ in range(n_genres)]

    # series: consecutive items of one primary genre, 1-5 parts, released in order
    successor = np.full(n_items, -1, dtype=np.int64)
    series_of = np.zeros(n_items, dtype=np.int64)
    part_of = np.ones(n_items, dtype=np.int64)
    release = rng.integers(T_START - 3 * 365 * DAY, T_START + SPAN - 30 * DAY, size=n_items)
    order = np.argsort(primary, kind="stable")
    pos, series_id = 0, 0
    while pos < n_items:
        length = int(rng.integers(1, 6))
        members = [i for i in order[pos:pos + length] if primary[i] == primary[order[pos]]]
        members_release = np.sort(release[members])
        for part, (m, r) in enumerate(zip(members, members_release), start=1):
            series_of[m], part_of[m], release[m] = series_id, part, r
        for a, b in zip(members[:-1], members[1:]):
            successor[a] = b
        pos += len(members)
        series_id += 1
    series_name = [_word(rng, 3).capitalize() for _ in range(series_id)]

    titles, genres_str, prices = [], [], []
    for i in range(n_items):
        g = int(primary[i])
        words = rng.choice(genre_words[g], size=int(rng.integers(1, 3)), replace=False)
        title = f"{series_name[series_of[i]]} {' '.join(words)}"
        titles.append(title + (f" {part_of[i]}" if part_of[i] > 1 else ""))
        gs = [GENRES[g]] + ([GENRES[secondary[i]]] if secondary[i] >= 0 else [])
        genres_str.append("|".join(gs))
        price = 0.0 if rng.random() < 0.1 else float(np.round(np.exp(rng.normal(1.5 + 0.08 * g, 0.5)), 2))
        prices.append(price)

    # ---------------------------------------------------------------- users
    n_tastes = rng.integers(1, 3, n_users)
    taste = centroids[rng.integers(0, n_genres, n_users)]
    taste = taste + np.where(n_tastes[:, None] > 1, centroids[rng.integers(0, n_genres, n_users)], 0)
    taste = _normalize(taste + 0.5 * rng.normal(size=(n_users, latent_dim)))
    age = rng.choice(len(AGE_BUCKETS), size=n_users, p=[0.18, 0.3, 0.22, 0.14, 0.1, 0.06])
    country = rng.choice(len(COUNTRIES), size=n_users, p=[0.35, 0.2, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04])
    signup = rng.integers(T_START - 2 * 365 * DAY, T_START + SPAN // 2, size=n_users)
    device_pref = rng.integers(0, len(DEVICES), n_users)
    active_hour = rng.integers(0, 24, n_users)

    # ---------------------------------------------------------------- interactions
    cols = {k: [] for k in ("user_id", "item_id", "timestamp", "rating", "click", "device")}
    counts = np.maximum(3, rng.geometric(1.0 / max(events_per_user - 2.0, 1.0), size=n_users) + 2)
    item_ids = np.array([f"i{i}" for i in range(n_items)])
    for u in range(n_users):
        n = int(counts[u])
        start = max(int(signup[u]), T_START)
        days = np.sort(rng.integers(0, max((T_START + SPAN - start) // DAY, 1), size=n))
        hours = (active_hour[u] + np.round(rng.normal(0, 2.5, n))).astype(np.int64) % 24
        ts = start - start % DAY + days * DAY + hours * 3600 + rng.integers(0, 3600, n)
        ts = np.sort(np.maximum(ts, start))
        logits = taste_strength * item_vec @ taste[u] + pop_bias
        p = np.exp(logits - logits.max())
        p /= p.sum()
        pool = rng.choice(n_items, size=8 * n + 16, p=p)
        accept = rng.random(pool.size)
        seq_flip = rng.random(n)
        seen: set = set()
        last, k = -1, 0
        for j in range(n):
            t = ts[j]
            choice = -1
            nxt = successor[last] if last >= 0 else -1
            if nxt >= 0 and seq_flip[j] < p_sequel and nxt not in seen and release[nxt] <= t:
                choice = nxt
            while choice < 0 and k < pool.size:
                cand = pool[k]
                age_days = (t - release[cand]) / DAY
                if cand not in seen and age_days >= 0 and accept[k] < 0.3 + 0.7 * np.exp(-age_days / 240.0):
                    choice = cand
                k += 1
            if choice < 0:  # pool exhausted: fall back to the most likely released, unseen item
                mask = (release <= t) & ~np.isin(np.arange(n_items), list(seen))
                if not mask.any():
                    break
                choice = int(np.argmax(np.where(mask, p, -1)))
            seen.add(choice)
            last = choice
            affinity = float(item_vec[choice] @ taste[u])
            rating = float(np.clip(np.round(3.0 + 2.2 * affinity + 0.3 * quality[choice] + rng.normal(0, 0.6)), 1, 5))
            dev = device_pref[u] if rng.random() < 0.7 else rng.integers(0, len(DEVICES))
            cols["user_id"].append(f"u{u}")
            cols["item_id"].append(item_ids[choice])
            cols["timestamp"].append(int(t))
            cols["rating"].append(rating)
            cols["click"].append(1.0 if rating >= 4 else 0.0)
            cols["device"].append(DEVICES[dev])

    users = {
        "user_id": [f"u{u}" for u in range(n_users)],
        "user_age_bucket": [AGE_BUCKETS[a] for a in age],
        "user_country": [COUNTRIES[c] for c in country],
        "user_signup_ts": [int(s) for s in signup],
    }
    items = {
        "item_id": item_ids.tolist(),
        "item_title": titles,
        "item_genres": genres_str,
        "item_price": prices,
        "item_release_ts": [int(r) for r in release],
    }
    truth = {"successor": successor, "item_vec": item_vec, "taste": taste, "pop_bias": pop_bias, "release": release,
             "p_sequel": p_sequel, "taste_strength": taste_strength}
    return RawTables(users=users, items=items, interactions=cols, truth=truth)


def next_item_probability(truth, user: int, t: int, history: Sequence[int]) -> np.ndarray:
    """The generator's own probability of each item being ``user``'s next event at time ``t`` after ``history``
    (item indices, oldest first): the planted successor of the latest item with probability ``p_sequel`` when it is
    released and unseen, else an item drawn by taste x popularity and accepted by freshness, as ``generate`` draws
    them (its rare pool-exhaustion fallback aside). Ranking by it is the Bayes-optimal next-item ranking: the
    ceiling no model can beat on average, so a benchmark can say how much of the planted signal a model finds."""
    seen = np.zeros(len(truth["release"]), bool)
    seen[np.asarray(history, np.int64)] = True
    age_days = (t - truth["release"]) / DAY
    accept = np.where(age_days >= 0, 0.3 + 0.7 * np.exp(-np.maximum(age_days, 0.0) / 240.0), 0.0)
    logits = truth["taste_strength"] * truth["item_vec"] @ truth["taste"][user] + truth["pop_bias"]
    q = np.exp(logits - logits.max()) * accept * ~seen
    q = q / max(q.sum(), 1e-300)
    nxt = truth["successor"][history[-1]] if len(history) else -1
    if nxt >= 0 and not seen[nxt] and truth["release"][nxt] <= t:
        q = (1.0 - truth["p_sequel"]) * q
        q[nxt] += truth["p_sequel"]
    return q


def write_item_images(tables: RawTables, raw_dir: str, seed: int = 42, size: int = images.DEFAULT_SIZE) -> str:
    """The synthetic items' images (look follows genre, plus per-item noise) as ``raw_dir/item_images.npz``.

    Drawn from their own seeded streams, so the tables above stay byte for byte what they were.
    """
    ids, pixels = images.synthetic_images(tables.items, seed=seed, size=size)
    return images.write(fileio.join(raw_dir, images.IMAGES_FILE), ids, pixels)
