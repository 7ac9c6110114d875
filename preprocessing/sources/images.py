"""Item images: small uint8 RGB arrays keyed by item id, in one ``item_images.npz`` beside the raw tables.

What a user with real product images supplies is the same file: ``item_ids`` (a unicode string array)
and ``images`` (uint8 ``[n, H, W, 3]``), written with ``np.savez_compressed`` and read with
``allow_pickle=False`` (no pickled objects, ever). Items without a row simply have no image; a data
set without the file (MovieLens) has no image input at all, and the content tower then has no image
branch (``trainer/models/content.py``).

The synthetic images (``genre_images``) are deterministic and look like their genres: each genre has
its own colour and stripe pattern (from a stable hash of the genre's name, so they do not depend on
the order of items or genres), the primary genre dominates, a secondary genre is blended in, and
per-item noise (seeded by the item id) keeps two items of a genre from being identical.
"""
from __future__ import annotations

import io
import zlib
from typing import Dict, Sequence, Tuple

import numpy as np

from preprocessing.utf8 import to_str
from recsys import fileio

IMAGES_FILE = "item_images.npz"
DEFAULT_SIZE = 16


class ImageError(ValueError):
    """An images file that cannot be used (wrong arrays, shapes or types)."""


def _genre_pattern(genre: str, size: int) -> np.ndarray:
    """[size, size, 3] float in [0, 1]: the genre's colour modulated by its stripes."""
    h = zlib.crc32(genre.encode("utf-8"))
    colour = np.array([(h >> 0) & 255, (h >> 8) & 255, (h >> 16) & 255], np.float64) / 255.0
    angle = ((h >> 24) & 3) * np.pi / 4.0          # 0, 45, 90 or 135 degrees
    freq = 1.0 + ((h >> 26) & 3)                   # 1..4 stripes per image
    yy, xx = np.mgrid[0:size, 0:size] / float(size)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    return colour[None, None, :] * (0.35 + 0.65 * stripes[:, :, None])


def genre_images(item_ids: Sequence[str], item_genres: Sequence[str], seed: int = 0, size: int = DEFAULT_SIZE,
                 noise: float = 0.15, secondary_weight: float = 0.3) -> np.ndarray:
    """uint8 [n, size, size, 3]: primary genre's look (+ the second genre's, + noise); deterministic."""
    patterns: Dict[str, np.ndarray] = {}
    out = np.zeros((len(item_ids), size, size, 3), np.uint8)
    for n, (item, genres) in enumerate(zip(item_ids, item_genres)):
        names = [g for g in str(genres).split("|") if g]
        img = np.full((size, size, 3), 0.5)
        if names:
            for g in names[:2]:
                if g not in patterns:
                    patterns[g] = _genre_pattern(g, size)
            img = patterns[names[0]]
            if len(names) > 1:
                img = (1.0 - secondary_weight) * img + secondary_weight * patterns[names[1]]
        rng = np.random.default_rng([seed, zlib.crc32(str(item).encode("utf-8"))])
        img = img + noise * rng.standard_normal(img.shape)
        out[n] = np.clip(np.round(255.0 * img), 0, 255).astype(np.uint8)
    return out


def synthetic_images(items: Dict[str, Sequence], seed: int = 0, size: int = DEFAULT_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """(item ids, images) for a synthetic items table (``RawTables.items``)."""
    ids = np.asarray([str(i) for i in items["item_id"]], dtype=str)
    return ids, genre_images(ids, items["item_genres"], seed=seed, size=size)


def write(path: str, item_ids: Sequence[str], images: np.ndarray) -> str:
    """Writes ``item_images.npz`` (any filesystem ``recsys.fileio`` knows); returns ``path``."""
    ids = np.asarray([str(i) for i in item_ids], dtype=str)
    images = np.asarray(images)
    _check(ids, images, path)
    buf = io.BytesIO()
    np.savez_compressed(buf, item_ids=ids, images=images)
    return fileio.write_bytes(path, buf.getvalue(), atomic=True)


def read(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """(item ids [n] str, images uint8 [n, H, W, 3]) from ``path``; ImageError when unusable."""
    if not fileio.exists(path):
        raise ImageError(f"item images file {path!r} does not exist")
    data = fileio.read_bytes(path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if "item_ids" not in z.files or "images" not in z.files:
                raise ImageError(f"{path}: expected arrays 'item_ids' and 'images', found {sorted(z.files)}")
            ids, images = z["item_ids"], z["images"]
    except ValueError as e:  # object arrays need pickle: refused
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{path}: not a plain npz of item_ids and uint8 images ({e})") from None
    _check(ids, images, path)
    return to_str(ids), images


def _check(ids: np.ndarray, images: np.ndarray, path: str) -> None:
    if ids.ndim != 1 or ids.dtype.kind != "U":
        raise ImageError(f"{path}: item_ids must be a 1-D string array, got {ids.dtype} {ids.shape}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ImageError(f"{path}: images must be uint8 [n, S, S, 3], got {images.dtype} {images.shape}")
    if len(ids) != len(images):
        raise ImageError(f"{path}: {len(ids)} item ids but {len(images)} images")
    if len(set(ids.tolist())) != len(ids):
        raise ImageError(f"{path}: duplicate item ids")
