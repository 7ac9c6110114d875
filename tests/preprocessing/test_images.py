"""Item images (preprocessing/sources/images.py): deterministic, genre-correlated, pickle-free, optional."""
import io

import numpy as np
import pytest

from preprocessing.sources import images, synthetic


def _tables():
    return synthetic.generate(n_users=20, n_items=80, events_per_user=3, seed=5)


def test_images_are_deterministic_and_leave_the_tables_unchanged(tmp_path):
    a, b = _tables(), _tables()
    ia = images.synthetic_images(a.items, seed=1)[1]
    assert ia.dtype == np.uint8 and ia.shape == (80, images.DEFAULT_SIZE, images.DEFAULT_SIZE, 3)
    assert np.array_equal(ia, images.synthetic_images(b.items, seed=1)[1])
    assert not np.array_equal(ia, images.synthetic_images(b.items, seed=2)[1])  # the seed matters
    # an item's image depends on the item alone, not on its position in the table
    rev = {k: v[::-1] for k, v in a.items.items()}
    assert np.array_equal(images.synthetic_images(rev, seed=1)[1], ia[::-1])
    # writing images draws nothing from the generator's stream: the tables stay the same
    synthetic.write_item_images(a, str(tmp_path), seed=1)
    assert a.items == _tables().items and a.interactions == _tables().interactions


def test_images_look_like_their_primary_genre():
    t = _tables()
    ids, imgs = images.synthetic_images(t.items, seed=0)
    primary = np.array([g.split("|")[0] for g in t.items["item_genres"]])
    feats = imgs.reshape(len(imgs), -1).astype(np.float64)
    # nearest neighbour (other than itself) shares the primary genre far more often than chance
    d = ((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    same = (primary[d.argmin(1)] == primary).mean()
    chance = sum((primary == g).mean() ** 2 for g in set(primary))
    assert same > 0.8 and same > 3 * chance, (same, chance)
    # ...yet no two items are identical (per-item noise)
    assert len({im.tobytes() for im in imgs}) == len(imgs)


def test_write_read_roundtrip_and_bad_files(tmp_path):
    t = _tables()
    path = synthetic.write_item_images(t, str(tmp_path), seed=0, size=8)
    assert path.endswith(images.IMAGES_FILE)
    ids, imgs = images.read(path)
    assert ids.tolist() == t.items["item_id"] and imgs.shape == (80, 8, 8, 3)
    with pytest.raises(images.ImageError, match="does not exist"):
        images.read(str(tmp_path / "missing.npz"))
    # object arrays would need pickle: refused with a clear error, never unpickled
    buf = io.BytesIO()
    np.savez(buf, item_ids=np.array(["a"], dtype=object), images=np.zeros((1, 4, 4, 3), np.uint8))
    (tmp_path / "obj.npz").write_bytes(buf.getvalue())
    with pytest.raises(images.ImageError, match="item_ids and uint8 images"):
        images.read(str(tmp_path / "obj.npz"))
    with pytest.raises(images.ImageError, match="uint8"):
        images.write(str(tmp_path / "f.npz"), ["a"], np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(images.ImageError, match="duplicate"):
        images.write(str(tmp_path / "d.npz"), ["a", "a"], np.zeros((2, 4, 4, 3), np.uint8))
