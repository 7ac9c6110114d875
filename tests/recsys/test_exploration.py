"""Exploration at re-ranking, its logged propensities, off-policy estimates and the multi-round simulation.

Numpy only (no TensorFlow): tiny synthetic worlds, each test about a second.
"""
import dataclasses
import json

import numpy as np
import pytest

from preprocessing import feedback_sim
from preprocessing.feedback import prior_bias
from preprocessing.sources import synthetic
from recsys import exploration, off_policy, simulate
from recsys.config import ExplorationConfig

EPS = ExplorationConfig(policy="epsilon_greedy", epsilon=0.25, candidates=5, k=3)


def test_epsilon_greedy_propensities_on_a_hand_built_list():
    ids, scores = ["a", "b", "c", "d", "e"], [0.1, 0.9, 0.5, 0.3, 0.7]   # greedy: b, e, c
    m = exploration.epsilon_greedy_marginals(scores, 3, 0.25)
    expected = np.full((5, 3), 0.05)                                       # epsilon / N everywhere ...
    expected[[1, 4, 2], [0, 1, 2]] = 0.8                                    # ... + (1 - epsilon) where greedy puts it
    np.testing.assert_allclose(m, expected)
    np.testing.assert_allclose(m.sum(0), 1.0)                               # each position shows one item
    rng = np.random.default_rng(0)
    counts = np.zeros((5, 3))
    for _ in range(4000):
        shown = exploration.rerank(ids, scores, EPS, rng)
        counts[shown.indices, np.arange(3)] += 1
        np.testing.assert_allclose(shown.propensities, expected[shown.indices, np.arange(3)])
        assert shown.explored or shown.item_ids == ["b", "e", "c"]
    np.testing.assert_allclose(counts / 4000, expected, atol=0.025)      # the logged propensities are the truth
    greedy = exploration.rerank(ids, scores, dataclasses.replace(EPS, policy="none"), rng)
    assert greedy.item_ids == ["b", "e", "c"] and list(greedy.propensities) == [1.0, 1.0, 1.0]


def test_thompson_propensities_match_how_often_it_shows_each_item_there():
    post = exploration.BetaPosteriors(1.0, 19.0)
    ids = ["a", "b", "c", "d"]
    post.update(ids, [40.0, 40.0, 5.0, 0.0], [12.0, 4.0, 1.0, 0.0])       # a clearly best; d unknown
    settings = ExplorationConfig(policy="thompson", candidates=4, k=2, propensity_samples=2000)
    rng = np.random.default_rng(1)
    m = exploration.marginals(ids, post.mean(ids), settings, rng, post)
    np.testing.assert_allclose(m.sum(0), 1.0)
    counts = np.zeros((4, 2))
    for _ in range(1500):
        shown = exploration.rerank(ids, post.mean(ids), dataclasses.replace(settings, propensity_samples=50), rng, post)
        counts[shown.indices, np.arange(2)] += 1
        assert np.all(shown.propensities > 0)
    np.testing.assert_allclose(counts / 1500, m, atol=0.04)
    assert m[0, 0] > 0.8 and m[3].sum() > 0.05                              # exploits a, still tries the unknown d


def _logged_world(seed=0, epsilon=0.5, n_candidates=10, k=4, repeats=24):
    """Users' candidates, an epsilon-greedy logging policy on the retrieval score, and a target policy
    (greedy on the true relevance: very different CTR) -- logged impressions with both propensities."""
    truth = synthetic.generate(n_users=150, n_items=60, events_per_user=1, seed=7).truth
    cands, scores = simulate.retrieval_candidates(truth, n_candidates, noise=1.5, seed=3)
    settings = ExplorationConfig(policy="epsilon_greedy", epsilon=epsilon, candidates=n_candidates, k=k)
    rng = np.random.default_rng(seed)
    served, target_lists, rows = [], [], []
    for u in range(len(cands)):
        ids = [f"i{i}" for i in cands[u]]
        target = exploration.greedy_order(feedback_sim.relevance(truth, f"u{u}", ids))[:k]
        for r in range(repeats):
            shown = exploration.rerank(ids, scores[u], settings, rng)
            served.append({"request_id": f"r{u}-{r}", "user_id": f"u{u}", "timestamp": 1_700_000_000,
                           "items": list(enumerate(shown.item_ids, 1))})
            target_lists.append({"user_id": f"u{u}", "item_ids": [ids[i] for i in target]})
            rows.extend((f"u{u}", f"r{u}-{r}", ids[i], p, pl, float(target[p - 1] == i))
                        for p, (i, pl) in enumerate(zip(shown.indices, shown.propensities), 1))
    clicked = {(e["request_id"], e["item_id"]) for e in feedback_sim.simulate_events(served, truth, seed=seed + 1)
               if e["event"] == "click"}
    users, rids, items, positions, p_log, p_target = zip(*rows)
    clicks = [float((rid, i) in clicked) for rid, i in zip(rids, items)]
    true_ctr = feedback_sim.expected_ctr(truth, target_lists, prior_bias(k))
    return (users, positions, clicks, p_log, p_target), true_ctr


def test_ips_and_snips_of_a_target_policy_from_epsilon_greedy_logs_cover_its_true_ctr():
    logged, true_ctr = _logged_world()
    naive = float(np.mean(logged[2]))
    for estimate in (off_policy.ips(*logged, n_boot=500), off_policy.snips(*logged, n_boot=500)):
        lo, hi = estimate.interval
        assert lo <= true_ctr <= hi, (estimate, true_ctr)
        assert hi - lo < 0.35 * true_ctr                      # an interval that says something
        assert not lo <= naive <= hi                           # the logged CTR itself is not the target's CTR
        assert abs(estimate.value - true_ctr) < abs(naive - true_ctr) / 3
    # the interval is the bootstrap over users: reproducible with its seed
    assert off_policy.ips(*logged, n_boot=200, seed=3) == off_policy.ips(*logged, n_boot=200, seed=3)


def test_exploration_raises_coverage_over_rounds_and_seeded_runs_repeat(tmp_path):
    truth = synthetic.generate(n_users=80, n_items=300, events_per_user=1, seed=2).truth
    settings = ExplorationConfig(epsilon=0.2, candidates=20, k=5, propensity_samples=30)
    result = simulate.run_simulation(truth, settings, rounds=4, n_boot=100)
    with open(simulate.plot(result, str(tmp_path / "simulate.png")), "rb") as f:
        assert f.read(4) == b"\x89PNG"
    by = {(r["policy"], r["round"]): r for r in result["rows"]}
    assert by[("greedy", 4)]["coverage"] < by[("greedy", 1)]["coverage"]    # the greedy loop narrows what it shows
    for explorer in ("epsilon_greedy", "thompson"):
        assert by[(explorer, 4)]["coverage"] > 1.1 * by[("greedy", 4)]["coverage"]
        assert by[(explorer, 4)]["coverage_cumulative"] > by[("greedy", 4)]["coverage_cumulative"]
    assert all(0 < r["true_ctr"] < result["oracle_ctr"] for r in result["rows"])
    ope = result["off_policy"]
    assert ope["ips"]["interval"][0] <= ope["target_true_ctr"] <= ope["ips"]["interval"][1]
    again = simulate.run_simulation(truth, settings, rounds=4, n_boot=100, policies=["thompson"])
    assert again["rows"] == [r for r in result["rows"] if r["policy"] == "thompson"]   # seeded
    other = simulate.run_simulation(truth, dataclasses.replace(settings, seed=1), rounds=4, n_boot=100,
                                    policies=["thompson"])
    assert other["rows"] != again["rows"]
    rng_a, rng_b = exploration.request_rng(5, "req-1"), exploration.request_rng(5, "req-1")
    assert exploration.rerank(list("abcde"), [5, 4, 3, 2, 1], EPS, rng_a).item_ids == \
        exploration.rerank(list("abcde"), [5, 4, 3, 2, 1], EPS, rng_b).item_ids


def test_settings_per_version_and_request_and_bad_settings_are_clear_errors():
    base = ExplorationConfig()
    per_version = {"canary": {"policy": "epsilon_greedy", "epsilon": 0.2}}
    assert exploration.settings_for(base, "stable", per_version).policy == "none"
    assert exploration.settings_for(base, "canary", per_version).epsilon == 0.2
    assert exploration.settings_for(base, "canary", per_version, {"policy": "none"}).policy == "none"
    bad = [({"epsilon": 1.5}, "epsilon must be a number in \\[0, 1\\]"),
           ({"epsilon": -0.1}, "epsilon"), ({"policy": "ucb"}, "policy 'ucb' is not one of"),
           ({"k": 60}, "k=60 is more than the 50 candidates"),
           ({"prior_beta": 0}, "prior_beta must be a positive number"),
           ({"propensity_samples": 0}, "propensity_samples must be an integer >= 1"),
           ({"epsilom": 0.1}, "unknown exploration setting 'epsilom'")]
    for request, message in bad:
        with pytest.raises(ValueError, match=message):
            exploration.settings_for(base, request=request)
    with pytest.raises(ValueError, match="thompson sampling needs the items' posteriors"):
        exploration.rerank(["a"], [1.0], ExplorationConfig(policy="thompson"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="2 candidates but 1 scores"):
        exploration.rerank(["a", "b"], [1.0], EPS, np.random.default_rng(0))
    with pytest.raises(ValueError, match="logging propensities must be in \\(0, 1\\]"):
        off_policy.ips(["u"], [1], [1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="same length"):
        off_policy.snips(["u", "v"], [1], [1.0], [0.5], [1.0])
    with pytest.raises(ValueError, match="unknown policy 'ucb'"):
        simulate.run_simulation({"taste": np.zeros((1, 2)), "item_vec": np.zeros((60, 2))}, base, policies=["ucb"])


def test_simulate_writes_the_table_json_and_plot(tmp_path):
    settings = ExplorationConfig(epsilon=0.2, candidates=10, k=3, propensity_samples=20)
    result = simulate.simulate(settings, str(tmp_path), users=30, items=60, rounds=2, n_boot=50, item_effect=1.0)
    saved = json.loads((tmp_path / "simulation.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"])) and saved["user_model"]["pop_weight"] == 1.0
    assert (tmp_path / "simulation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = simulate.format_table(result)
    assert "thompson" in table and "IPS" in table and "SNIPS" in table and "oracle" in table
    with pytest.raises(ValueError, match="20 candidates from a catalogue of 10 items"):
        simulate.simulate(dataclasses.replace(settings, candidates=20), str(tmp_path), items=10)
