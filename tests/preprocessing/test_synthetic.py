import collections

import numpy as np

from preprocessing.sources import synthetic, tables


def test_same_seed_same_data_and_different_seed_differs(tmp_path):
    a = synthetic.generate(n_users=150, n_items=120, events_per_user=10, seed=3)
    b = synthetic.generate(n_users=150, n_items=120, events_per_user=10, seed=3)
    c = synthetic.generate(n_users=150, n_items=120, events_per_user=10, seed=4)
    assert a.interactions == b.interactions and a.items == b.items and a.users == b.users
    assert a.interactions != c.interactions
    pa = tables.write_raw(a, str(tmp_path / "a"))
    pb = tables.write_raw(b, str(tmp_path / "b"))
    for key in ("interactions", "items", "users"):
        assert open(pa[key], "rb").read() == open(pb[key], "rb").read()


def test_planted_structure_is_present():
    t = synthetic.generate(n_users=400, n_items=300, events_per_user=20, seed=1)
    inter = t.interactions
    counts = collections.Counter(inter["item_id"])
    top = sum(c for _, c in counts.most_common(len(counts) // 10))
    assert top / len(inter["item_id"]) > 0.25, "popularity skew: top 10% of items get a large share"
    succ = t.truth["successor"]
    by_user = collections.defaultdict(list)
    for u, i, ts in zip(inter["user_id"], inter["item_id"], inter["timestamp"]):
        by_user[u].append((ts, int(i[1:])))
    follows = total = 0
    for events in by_user.values():
        events.sort()
        for (_, prev), (_, cur) in zip(events, events[1:]):
            if succ[prev] >= 0:
                total += 1
                follows += cur == succ[prev]
    assert follows / total > 0.2, "sequential dependence: sequels follow their predecessor"
    release = dict(zip(t.items["item_id"], t.items["item_release_ts"]))
    assert all(ts >= release[i] for i, ts in zip(inter["item_id"], inter["timestamp"])), "no unreleased items"
    for events in by_user.values():
        items = [i for _, i in events]
        assert len(items) == len(set(items)), "a user consumes an item at most once"


def test_sizes_scale_and_columns_follow_schema():
    t = synthetic.generate(n_users=50, n_items=40, events_per_user=5, seed=0)
    assert set(t.interactions) == {"user_id", "item_id", "timestamp", "rating", "click", "device"}
    assert all(1 <= r <= 5 for r in t.interactions["rating"])
    assert t.num_interactions >= 50 * 3


def test_next_item_probability_follows_the_generator():
    t = synthetic.generate(n_users=200, n_items=150, events_per_user=12, seed=2)
    truth, succ = t.truth, t.truth["successor"]
    series_head = int(np.flatnonzero(succ >= 0)[0])
    nxt = int(succ[series_head])
    late = int(truth["release"].max()) + 1
    p = synthetic.next_item_probability(truth, 0, late, [series_head])
    assert abs(p.sum() - 1.0) < 1e-9 and p[series_head] == 0.0, "a distribution over unseen items"
    assert p[nxt] >= truth["p_sequel"] and p.argmax() == nxt, "the released, unseen sequel takes p_sequel"
    p_seen = synthetic.next_item_probability(truth, 0, late, [nxt, series_head])
    assert p_seen[nxt] == 0.0 and p_seen.max() < truth["p_sequel"], "a sequel already seen is not planted again"
    early = int(truth["release"].min())
    p_early = synthetic.next_item_probability(truth, 0, early, [])
    assert np.all(p_early[truth["release"] > early] == 0.0), "unreleased items never come next"
