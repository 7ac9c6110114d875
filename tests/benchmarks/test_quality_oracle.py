"""The quality benchmark's ceiling row on synthetic data ranks by the planted truth, with the rows' exclusions."""
import numpy as np

from benchmarks import quality_oracle
from preprocessing.sources import synthetic
from trainer import evaluation


def _last_events(t):
    by_user = {}
    for u, i, ts in zip(t.interactions["user_id"], t.interactions["item_id"], t.interactions["timestamp"]):
        by_user.setdefault(u, []).append((int(ts), i))
    users, times, targets, prior = [], [], [], []
    index = {item: n for n, item in enumerate(t.items["item_id"])}
    for u, ev in by_user.items():
        ev.sort()
        if len(ev) < 3:
            continue
        users.append(u)
        times.append(ev[-1][0])
        targets.append(index[ev[-1][1]])
        prior.append(np.array(sorted({index[i] for _, i in ev[:-1]}), np.int64))
    return users, np.array(times), np.array(targets), prior


def test_oracle_finds_the_planted_structure_and_honours_exclusions():
    t = synthetic.generate(n_users=300, n_items=200, events_per_user=15, seed=5)
    users, times, targets, prior = _last_events(t)
    ids = np.array(t.items["item_id"])
    topk = quality_oracle.PlantedTruth(t, ids).topk(users, times, prior, 10)
    assert not any(set(row) & set(p) for row, p in zip(topk.tolist(), prior)), "seen items excluded"
    counts = np.bincount(np.concatenate(prior), minlength=len(ids))
    pop = evaluation.popularity_topk(counts, len(users), 10, prior)
    oracle_r10, pop_r10 = evaluation.recall_at_k(topk, targets, 10), evaluation.recall_at_k(pop, targets, 10)
    assert oracle_r10 > 2 * pop_r10, (oracle_r10, pop_r10)
    # a user whose latest item has a released, unseen sequel gets that sequel first
    succ, release = t.truth["successor"], t.truth["release"]
    index = {item: n for n, item in enumerate(ids)}
    checked = 0
    for q, u in enumerate(users):
        ev = sorted((int(ts), i) for uu, i, ts in zip(t.interactions["user_id"], t.interactions["item_id"],
                                                     t.interactions["timestamp"]) if uu == u)
        last = index[ev[-2][1]]
        nxt = succ[last]
        if nxt >= 0 and nxt not in prior[q] and release[nxt] <= times[q]:
            assert topk[q, 0] == nxt
            checked += 1
        if checked >= 20:
            break
    assert checked > 0


def test_successor_targets_mark_the_planted_sequels():
    t = synthetic.generate(n_users=150, n_items=120, events_per_user=12, seed=6)
    users, times, targets, _ = _last_events(t)
    ids = np.array(t.items["item_id"])
    mask = quality_oracle.PlantedTruth(t, ids).sequel_targets(users, times, targets)
    succ = t.truth["successor"]
    expected = []
    for u, tgt in zip(users, targets):
        ev = sorted((int(ts), int(i[1:])) for uu, i, ts in zip(t.interactions["user_id"], t.interactions["item_id"],
                                                               t.interactions["timestamp"]) if uu == u)
        expected.append(succ[ev[-2][1]] == tgt)
    assert mask.tolist() == expected and 0 < mask.sum() < len(mask)


def test_a_lead_is_never_measured_against_the_oracle():
    from benchmarks import quality

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 50, 200)
    users = np.arange(200).astype(str)
    perfect = np.stack([targets] + [np.full(200, -1)] * 9, axis=1)   # the ceiling: every target first
    weak = rng.integers(0, 50, (200, 10))
    lead = quality.lead_over_best({"two_tower": weak, "ease": weak[:, ::-1], quality_oracle.NAME: perfect},
                                  targets, users, metric="recall@10")
    assert lead["versus"] == "ease"
