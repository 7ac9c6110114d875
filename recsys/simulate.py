"""`recsys simulate`: rounds of serve -> simulated feedback -> update, with and without exploration.

Why: exploration costs clicks now to learn what else users like; whether that pays off shows only
over rounds. Here simulated users (preprocessing/feedback_sim.py, on the synthetic generator's
planted tastes) answer every round, and each policy learns only from what it showed, so the
feedback loop is closed: a greedy policy keeps showing what it already believes in, an exploring
one also gathers evidence on the rest.

Each round, every user makes one request:

1. candidates: the user's top-N items by a fixed retrieval stand-in -- the planted taste seen through
   noise (``retrieval_noise``), i.e. an imperfect two-tower; the same for every policy and round;
2. re-ranking: score = ``retrieval_weight`` x retrieval score (personal, fixed; 5 = the simulated
   users' taste strength) + logit of the item's click rate learned from feedback (``BetaPosteriors``:
   its mean for greedy and epsilon-greedy, a posterior draw for Thompson sampling); the policy
   (recsys/exploration.py) picks the shown list and logs each shown item's propensity;
3. feedback: ``feedback_sim.simulate_events`` clicks with position bias;
4. update: each shown item's posterior gains its clicks and its position-debiased examinations.

Per round and policy: the true CTR of the shown lists (``feedback_sim.expected_ctr``: the
expectation under the simulated users, not a noisy count), the measured CTR, coverage (distinct
items shown / catalogue) in the round and so far, and the exploit CTR (true CTR of the greedy lists
on the posteriors learned so far: what the policy knows, without paying for exploration).

Off-policy check: from the epsilon-greedy logs, IPS and SNIPS estimate the CTR of the greedy policy
on the same posteriors at each request (what not exploring would have given), compared with that
policy's true CTR on the same requests.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from preprocessing import feedback_sim
from preprocessing.feedback import prior_bias
from recsys import exploration, fileio, off_policy
from recsys.config import ExplorationConfig

POLICY_LABELS = {"greedy": "none", "epsilon_greedy": "epsilon_greedy", "thompson": "thompson"}
START_TS = 1_699_920_000


def retrieval_candidates(truth: Mapping[str, Any], n_candidates: int, noise: float, seed: int):
    """([users, N] item indices, their scores): each user's top-N by <taste + noise, item_vec> (noise of
    norm ~``noise``)."""
    taste, item_vec = np.asarray(truth["taste"]), np.asarray(truth["item_vec"])
    rng = np.random.default_rng(seed)
    query = taste + noise * rng.normal(size=taste.shape) / np.sqrt(taste.shape[1])
    scores = query @ item_vec.T
    n = min(n_candidates, item_vec.shape[0])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return top, np.take_along_axis(scores, top, axis=1)


def ranking_scores(post: exploration.BetaPosteriors, ids: Sequence[str], personal: np.ndarray) -> np.ndarray:
    """The re-ranker's score: the fixed personal score plus the item's learned click rate, on the logit scale."""
    m = post.mean(ids)
    return personal + np.log(m) - np.log1p(-m)


def _greedy_lists(users, cand_ids, personal, post, k) -> List[Dict[str, Any]]:
    return [{"user_id": u, "item_ids": [ids[i] for i in exploration.greedy_order(ranking_scores(post, ids, o))[:k]]}
            for u, ids, o in zip(users, cand_ids, personal)]


def run_policy(label: str, settings: ExplorationConfig, truth: Mapping[str, Any], users: Sequence[str],
               cand_ids: Sequence[Sequence[str]], personal: np.ndarray, rounds: int, n_items: int, *, seed: int = 0,
               model: feedback_sim.UserModel = feedback_sim.UserModel(),
               log_impressions: bool = False) -> Dict[str, Any]:
    """``rounds`` rounds of one policy; per-round metrics, and (``log_impressions``) the logged
    impressions with logging and greedy-target propensities for off-policy evaluation."""
    exploration.check_settings(settings)
    k = settings.k
    bias = prior_bias(k)
    rng = np.random.default_rng([settings.seed, seed, sorted(POLICY_LABELS).index(label)])
    post = exploration.BetaPosteriors(settings.prior_alpha, settings.prior_beta)
    seen: set = set()
    rows, log, target_lists = [], [], []
    for r in range(rounds):
        served = []
        for u, ids, offsets in zip(users, cand_ids, personal):
            scores = ranking_scores(post, ids, offsets)
            shown = exploration.rerank(ids, scores, settings, rng, post, offsets=offsets)
            served.append({"request_id": f"{label}-r{r}-{u}", "user_id": u, "timestamp": START_TS + r * 86400,
                           "items": list(enumerate(shown.item_ids, 1)), "item_ids": shown.item_ids,
                           "propensities": shown.propensities})
            if log_impressions:
                greedy = exploration.greedy_order(scores)[:len(shown.indices)]
                served[-1]["p_target"] = (greedy == shown.indices).astype(float)
                target_lists.append({"user_id": u, "item_ids": [ids[i] for i in greedy]})
        events = feedback_sim.simulate_events(served, truth, bias=bias, model=model,
                                              seed=int(rng.integers(2 ** 31)))
        clicked = {(e["request_id"], e["item_id"]) for e in events if e["event"] == "click"}
        n_clicks = n_imps = 0
        shown_now: set = set()
        for s in served:
            clicks = [float((s["request_id"], i) in clicked) for i in s["item_ids"]]
            post.update(s["item_ids"], [bias.of(p) for p in range(1, len(clicks) + 1)], clicks)
            n_clicks, n_imps = n_clicks + sum(clicks), n_imps + len(clicks)
            shown_now.update(s["item_ids"])
            if log_impressions:
                log.extend({"user_id": s["user_id"], "position": p, "click": c, "p_log": float(pl),
                            "p_target": float(pt)}
                           for p, (c, pl, pt) in enumerate(zip(clicks, s["propensities"], s["p_target"]), 1))
        seen |= shown_now
        rows.append({"policy": label, "round": r + 1, "true_ctr": feedback_sim.expected_ctr(truth, served, bias, model),
                     "measured_ctr": n_clicks / n_imps if n_imps else 0.0,
                     "coverage": len(shown_now) / n_items, "coverage_cumulative": len(seen) / n_items,
                     "exploit_ctr": feedback_sim.expected_ctr(truth, _greedy_lists(users, cand_ids, personal, post, k),
                                                              bias, model)})
    out: Dict[str, Any] = {"rows": rows}
    if log_impressions:
        out["impressions"] = log
        out["target_true_ctr"] = feedback_sim.expected_ctr(truth, target_lists, bias, model)
    return out


def run_simulation(truth: Mapping[str, Any], settings: ExplorationConfig, *, rounds: int = 10,
                   policies: Sequence[str] = tuple(POLICY_LABELS), retrieval_noise: float = 1.0,
                   retrieval_weight: float = 5.0, seed: int = 0, n_boot: int = 1000,
                   model: feedback_sim.UserModel = feedback_sim.UserModel()) -> Dict[str, Any]:
    """Every policy over the same users, candidates and rounds; the result as a JSON-able dict."""
    exploration.check_settings(settings)
    for p in policies:
        if p not in POLICY_LABELS:
            raise ValueError(f"unknown policy {p!r}; choose from {', '.join(POLICY_LABELS)}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if retrieval_noise < 0:
        raise ValueError(f"retrieval noise must be >= 0, got {retrieval_noise}")
    n_users, n_items = len(truth["taste"]), len(truth["item_vec"])
    users = [f"u{u}" for u in range(n_users)]
    cands, cand_scores = retrieval_candidates(truth, settings.candidates, retrieval_noise, seed)
    personal = retrieval_weight * cand_scores
    cand_ids = [[f"i{i}" for i in row] for row in cands]
    bias = prior_bias(settings.k)
    oracle = []
    for u, ids in zip(users, cand_ids):
        rel = feedback_sim.relevance(truth, u, ids, model)
        oracle.append({"user_id": u, "item_ids": [ids[i] for i in np.argsort(-rel, kind="stable")[:settings.k]]})
    result: Dict[str, Any] = {
        "settings": dataclasses.asdict(settings), "rounds": rounds, "users": n_users, "items": n_items,
        "retrieval_noise": retrieval_noise, "retrieval_weight": retrieval_weight, "seed": seed,
        "user_model": dataclasses.asdict(model),
        "oracle_ctr": feedback_sim.expected_ctr(truth, oracle, bias, model), "rows": [], "summary": {}}
    for label in policies:
        run = run_policy(label, dataclasses.replace(settings, policy=POLICY_LABELS[label]), truth, users, cand_ids,
                         personal, rounds, n_items, seed=seed, model=model, log_impressions=(label == "epsilon_greedy"))
        rows = run["rows"]
        result["rows"].extend(rows)
        result["summary"][label] = {
            "mean_true_ctr": float(np.mean([r["true_ctr"] for r in rows])),
            "last_round_true_ctr": rows[-1]["true_ctr"], "last_exploit_ctr": rows[-1]["exploit_ctr"],
            "coverage_cumulative": rows[-1]["coverage_cumulative"], "last_round_coverage": rows[-1]["coverage"]}
        if "impressions" in run:
            imps = run["impressions"]
            args = ([i["user_id"] for i in imps], [i["position"] for i in imps], [i["click"] for i in imps],
                    [i["p_log"] for i in imps], [i["p_target"] for i in imps])
            result["off_policy"] = {
                "logging_policy": f"epsilon_greedy (epsilon={settings.epsilon})",
                "target_policy": "greedy on the same posteriors",
                "target_true_ctr": run["target_true_ctr"],
                "logged_measured_ctr": float(np.mean(args[2])),
                "ips": off_policy.ips(*args, n_boot=n_boot, seed=seed).to_json(),
                "snips": off_policy.snips(*args, n_boot=n_boot, seed=seed).to_json()}
    return result


# ---------------------------------------------------------------- output
def format_table(result: Mapping[str, Any]) -> str:
    policies = list(result["summary"])
    head = f"{'round':>5} | " + " | ".join(f"{p[:14] + ' CTR':>18} {'cov':>6} {'so far':>6}" for p in policies)
    lines = [f"true CTR per round (expected under the simulated users); coverage of the {result['items']} items "
             f"in the round and so far; {result['users']} users, k={result['settings']['k']} of "
             f"{result['settings']['candidates']} candidates, epsilon={result['settings']['epsilon']}, "
             f"item effect {result['user_model']['pop_weight']}",
             head, "-" * len(head)]
    by = {(r["policy"], r["round"]): r for r in result["rows"]}
    for rnd in range(1, result["rounds"] + 1):
        lines.append(f"{rnd:>5} | " + " | ".join(
            f"{by[(p, rnd)]['true_ctr']:>18.4f} {by[(p, rnd)]['coverage']:>6.1%} "
            f"{by[(p, rnd)]['coverage_cumulative']:>6.1%}" for p in policies))
    lines.append("")
    lines.append(f"{'policy':<15} {'mean CTR':>9} {'last CTR':>9} {'exploit CTR':>12} {'cov so far':>10} "
                 f"{'cov last rnd':>12}")
    for p, s in result["summary"].items():
        lines.append(f"{p:<15} {s['mean_true_ctr']:>9.4f} {s['last_round_true_ctr']:>9.4f} "
                     f"{s['last_exploit_ctr']:>12.4f} {s['coverage_cumulative']:>10.1%} "
                     f"{s['last_round_coverage']:>12.1%}")
    lines.append(f"{'oracle':<15} {result['oracle_ctr']:>9.4f}   (each user's k truly best candidates)")
    ope = result.get("off_policy")
    if ope:
        lines.append("")
        lines.append(f"off-policy: CTR of '{ope['target_policy']}' from {ope['logging_policy']} logs "
                     f"(logged CTR {ope['logged_measured_ctr']:.4f}); true {ope['target_true_ctr']:.4f}")
        for name in ("ips", "snips"):
            e = ope[name]
            inside = "covers" if e["interval"][0] <= ope["target_true_ctr"] <= e["interval"][1] else "MISSES"
            lines.append(f"  {name.upper():<6} {e['value']:.4f}  {e['level']:.0%} CI [{e['interval'][0]:.4f}, "
                         f"{e['interval'][1]:.4f}] {inside} the truth; ESS {e['effective_sample_size']:.0f} of "
                         f"{e['impressions']} impressions")
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: str) -> str:
    from matplotlib.figure import Figure   # not pyplot: no backend switch in the caller's process (a notebook)

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    for p in result["summary"]:
        rows = [r for r in result["rows"] if r["policy"] == p]
        line, = ax1.plot([r["round"] for r in rows], [r["true_ctr"] for r in rows], marker="o", label=p)
        ax1.plot([r["round"] for r in rows], [r["exploit_ctr"] for r in rows], ls=":", color=line.get_color())
        ax2.plot([r["round"] for r in rows], [r["coverage"] for r in rows], marker="o", label=p,
                 color=line.get_color())
        ax2.plot([r["round"] for r in rows], [r["coverage_cumulative"] for r in rows], ls=":", color=line.get_color())
    ax1.axhline(result["oracle_ctr"], color="grey", ls="--", lw=1, label="oracle")
    ax1.set(xlabel="round", ylabel="true CTR", title="CTR per round (dotted: greedy on what was learned)")
    ax2.set(xlabel="round", ylabel="items shown / catalogue", title="coverage in the round (dotted: so far)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fileio.write_png(fig, path, dpi=100)


def write(result: Mapping[str, Any], out_dir: str) -> Dict[str, str]:
    path = fileio.write_bytes(os.path.join(out_dir, "simulation.json"), json.dumps(result, indent=2, sort_keys=True).encode())
    return {"json": path, "png": plot(result, os.path.join(out_dir, "simulation.png"))}


def simulate(settings: ExplorationConfig, out_dir: str, *, users: int = 500, items: int = 300, rounds: int = 10,
             policies: Sequence[str] = tuple(POLICY_LABELS), retrieval_noise: float = 1.0,
             retrieval_weight: float = 5.0, data_seed: int = 42, n_boot: int = 1000,
             item_effect: float = feedback_sim.UserModel.pop_weight) -> Dict[str, Any]:
    """Synthetic planted tastes -> ``run_simulation`` -> JSON + PNG in ``out_dir``; what `recsys simulate` runs.

    ``item_effect``: the simulated users' weight on the item's own appeal (``UserModel.pop_weight``;
    the generator's interactions use 1.0): how much of relevance an item-level learner can learn.
    """
    from preprocessing.sources import synthetic

    if users < 1 or items < 1:
        raise ValueError(f"users and items must be >= 1, got {users} and {items}")
    if not np.isfinite(item_effect):
        raise ValueError(f"item effect must be a finite number, got {item_effect}")
    if settings.candidates > items:
        raise ValueError(f"{settings.candidates} candidates from a catalogue of {items} items: lower "
                         f"exploration.candidates or raise --items")
    truth = synthetic.generate(n_users=users, n_items=items, events_per_user=1.0, seed=data_seed).truth
    result = run_simulation(truth, settings, rounds=rounds, policies=policies, retrieval_noise=retrieval_noise,
                            retrieval_weight=retrieval_weight, seed=settings.seed, n_boot=n_boot,
                            model=feedback_sim.UserModel(pop_weight=item_effect))
    result["data_seed"] = data_seed
    result["paths"] = write(result, out_dir)
    return result
