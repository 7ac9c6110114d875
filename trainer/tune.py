"""Hyper-parameter search for the two-tower (TFX's Tuner), scored the way evaluation scores a model.

The latest ``tune.holdout`` of the train split's events are held out by time, as the eval split is held
out from the train split. Every trial trains on the earlier events only and is scored on the held-out
ones by the evaluation's own rule: the full catalogue, every item the user had before the event excluded,
re-consumption left out. The eval split is never read, so `recsys train` with the chosen settings is still
measured on events that no choice saw. Keras' validation top-K (what early stopping watches) excludes
nothing, so it rewards re-recommending what a user already has; it is not the objective here.

Trial 1 is the config as given: the table says what the search bought on the same queries, with a
user-bootstrap interval, beside popularity and the classic baselines fitted on the same earlier events.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from recsys import config as config_mod
from trainer import baselines, evaluation, text_table

METRIC_KINDS = ("recall", "ndcg")
# what a trial may change: the model and its training; data and preprocessing are fixed by the version tuned on
SECTIONS = ("retrieval", "train", "item2vec")
MIN_QUERIES = 20   # fewer held-out events than this cannot tell trials apart


def parse_space(entries: Sequence[str]) -> Dict[str, List[str]]:
    """``["retrieval.temperature=0.05,0.1", ...]`` -> {key: values}; a ConfigError names a bad key or value.

    Entries split at every comma (as ``--set tune.space=a=1,2,b=3`` arrives) are joined back: a piece
    without ``=`` is one more value of the key before it."""
    space: Dict[str, List[str]] = {}
    key = None
    for piece in (p.strip() for p in entries):
        if not piece:
            continue
        if "=" in piece:
            key, _, values = piece.partition("=")
            key = key.strip()
            if key in space:
                raise config_mod.ConfigError(f"tune.space names {key!r} twice")
            space[key] = [v.strip() for v in values.split(",") if v.strip()]
        elif key is None:
            raise config_mod.ConfigError(f"tune.space entry {piece!r} must look like section.key=v1,v2,...")
        else:
            space[key].append(piece)
    for key, values in space.items():
        if key.split(".")[0] not in SECTIONS:
            raise config_mod.ConfigError(f"tune.space: {key!r} cannot change between trials on one preprocessed "
                                         f"version; tune keys of {', '.join(s + '.*' for s in SECTIONS)}")
        if not values:
            raise config_mod.ConfigError(f"tune.space: {key!r} has no values; give section.key=v1,v2,...")
        probe = config_mod.Config()
        for v in values:  # unknown keys and out-of-range values fail now, not after an hour of trials
            config_mod.apply_override(probe, key, v)
    if not space:
        raise config_mod.ConfigError("tune.space is empty; give section.key=v1,v2,... (e.g. "
                                     "retrieval.temperature=0.05,0.1)")
    return space


def _get(cfg, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def trial_config(base, overrides: Dict[str, str]):
    cfg = copy.deepcopy(base)
    for k, v in overrides.items():
        config_mod.apply_override(cfg, k, v)
    return cfg


def draw(space: Dict[str, List[str]], base, n: int, seed: int = 0) -> List[Dict[str, str]]:
    """Trial settings: ``{}`` (the config as given) first, then up to ``n - 1`` distinct combinations drawn
    at random from the grid (never built: a grid of many keys is large), leaving out those that resolve to
    the config as given or to a combination already drawn (``0.1`` and ``0.10``)."""
    keys = list(space)
    sizes = [len(space[k]) for k in keys]
    total = int(np.prod(sizes, dtype=np.float64)) if keys else 0
    rng = np.random.default_rng(seed)
    # every index once, in random order, when the grid is small; else random indices (repeats skipped below)
    indices = (rng.permutation(total) if total <= 100_000 else
               (int(i) for i in rng.integers(0, total, size=max(100 * n, 1000))))
    seen = {tuple(_get(base, k) for k in keys)}
    trials: List[Dict[str, str]] = [{}]
    for index in indices:
        if len(trials) >= n:
            break
        overrides = {}
        for k, size in zip(keys, sizes):  # mixed-radix digits of the index: one value per key
            index, digit = divmod(int(index), size)
            overrides[k] = space[k][digit]
        resolved = tuple(_get(trial_config(base, overrides), k) for k in keys)
        if resolved not in seen:
            seen.add(resolved)
            trials.append(overrides)
    return trials


def check_metric(metric: str, ks: Sequence[int]) -> Tuple[str, int]:
    kind, _, k = metric.partition("@")
    if kind not in METRIC_KINDS or not k.isdigit() or not 0 < int(k) <= max(ks):
        raise config_mod.ConfigError(f"tune.metric={metric!r} must be recall@K or ndcg@K with K at most "
                                     f"max(eval.ks)={max(ks)}, e.g. recall@50")
    return kind, int(k)


def holdout_cut(times: np.ndarray, fraction: float) -> int:
    """The first held-out second: the latest ``fraction`` of the train events are at or after it."""
    if not 0.0 < fraction < 1.0:
        raise config_mod.ConfigError(f"tune.holdout={fraction} must be between 0 and 1 (e.g. 0.1)")
    return int(np.quantile(np.asarray(times), 1.0 - fraction))


def user_cut(users: np.ndarray, times: np.ndarray):
    """Leave-last-out: each user's latest train time, for the users with an earlier event to train on."""
    from trainer import data

    order = np.lexsort((times, users))     # by user, then time
    u, t = users[order], times[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], len(u)] - 1   # each user's earliest and latest event
    keep = ends[t[starts] < t[ends]]       # something strictly earlier stays in training
    return data.UserCut(dict(zip(u[keep].tolist(), t[keep].tolist())))


def _holdout(t, everything):
    """(cut, what it holds out in words): one time for ``tune.holdout_by=time``, one per user for ``user``."""
    if t.holdout_by == "user":
        cut = user_cut(everything.users, everything.times)
        return cut, f"each user's latest train event ({len(cut)} users with an earlier one)"
    cut = holdout_cut(everything.times, t.holdout)
    return cut, f"the latest {t.holdout:.0%} of train events, from {time.strftime('%Y-%m-%d', time.gmtime(cut))} on"


def run(cfg, version_dir: str, out_dir: str, log: Callable[[str], None] = print,
        train_fn: Optional[Callable] = None) -> Dict:
    """Runs the trials; writes ``tuning.json``, ``best.yaml`` and ``tuning.png`` under ``out_dir``."""
    import tensorflow as tf

    from recsys import fileio
    from trainer import data
    from trainer import evaluate_retrieval as er
    from trainer import train as train_mod
    from trainer.features import FeatureSizes

    t = cfg.tune
    kind, k = check_metric(t.metric, cfg.eval.ks)
    space = parse_space(t.space)
    trials = draw(space, cfg, t.trials, t.seed)
    catalogue = data.load_catalogue(version_dir)
    tft_output = data.transform_output(version_dir)
    sizes = FeatureSizes.from_transform_output(tft_output, cfg.preprocess.num_price_buckets,
                                               cfg.preprocess.num_age_buckets)
    everything = data.train_stats(version_dir, catalogue, sizes.items)
    cut, held_out = _holdout(t, everything)
    window = (cut, None)
    stats = everything.before(cut)  # what every trial trains on
    eq = er.load_queries(version_dir, None, catalogue, stats, t.max_queries, split="train", time_range=window)
    n_scored = int(np.count_nonzero(eq.targets >= 0))
    if n_scored < MIN_QUERIES:
        from preprocessing.sources.tables import DataError

        fix = "raise tune.holdout" if t.holdout_by == "time" else "try tune.holdout_by=time"
        raise DataError(f"tune.holdout_by={t.holdout_by}: {held_out} leaves {n_scored} scorable events (first-time "
                        f"events of catalogue items); {fix} or give more data")
    log(f"[tune] {len(trials)} trials over {', '.join(space)}; held out: {held_out}; each trial trains on the "
        f"earlier events and is scored on the {n_scored} held-out ones ({t.metric}, the user's earlier items "
        f"excluded); the eval split is not read")
    yardsticks = _yardsticks(cfg, eq, stats, catalogue.size, kind, k, log)
    log("[tune] on the same events: " + ", ".join(f"{name} {v:.4f}" for name, v in yardsticks.items()))
    train_fn = train_fn or train_mod.train_retrieval
    records: List[Dict] = []
    per_query: List[np.ndarray] = []
    for n, overrides in enumerate(trials, start=1):
        tcfg = trial_config(cfg, overrides)
        what = ", ".join(f"{a}={b}" for a, b in overrides.items()) or "the config as given"
        log(f"[tune] trial {n}/{len(trials)}: {what}")
        tf.keras.backend.clear_session()
        t0 = time.time()
        trial_dir = fileio.join(out_dir, "trials", str(n))
        trained = train_fn(version_dir, tcfg, trial_dir, before_ts=cut, epochs=t.epochs or None)
        q = er.load_queries(version_dir, trained.model.query_tower, trained.catalogue, trained.stats,
                            t.max_queries, split="train", time_range=window)
        top = evaluation.full_ranking_topk(q.vectors, er.catalogue_vectors(trained), k, q.prior)
        values = evaluation.per_query(kind, top, q.targets, k)
        per_query.append(values)
        if not t.keep_checkpoints:  # the model is in memory and scored; the stages retrain the best settings
            fileio.rmtree(fileio.join(trial_dir, "checkpoints"))
        best_epoch = train_mod.best_epoch(trained.history, trained.monitor)
        records.append({"trial": n, "overrides": overrides, t.metric: float(np.nanmean(values)),
                        "best_epoch": best_epoch, "epochs_run": len(trained.history.get("loss", [])),
                        "seconds": round(time.time() - t0, 1)})
        log(f"[tune] trial {n}: {t.metric} {records[-1][t.metric]:.4f} ({records[-1]['seconds']:.0f}s, "
            f"best epoch {best_epoch})")
    best = max(range(len(records)), key=lambda i: (records[i][t.metric], -i))
    lead = (baselines.bootstrap_lead(per_query[best], per_query[0], eq.users, n_boot=cfg.eval.bootstrap,
                                     seed=cfg.train.seed) if best else None)
    result = {"metric": t.metric, "space": space, "seed": t.seed,
              "holdout": {"by": t.holdout_by, "what": held_out, "n_queries": n_scored,
                          **({"fraction": t.holdout, "cut_ts": cut} if t.holdout_by == "time" else
                             {"users_held_out": len(cut), "cut_digest": cut.digest}),
                          "n_users": int(len(np.unique(eq.users[eq.targets >= 0]))), "split": "train",
                          "rule": er.RULE},
              "trials": records, "best": records[best], "best_over_given": lead, "yardsticks": yardsticks,
              "eval_split_read": False}
    fileio.write_json(fileio.join(out_dir, "tuning.json"), result, indent=2)
    fileio.write_text(fileio.join(out_dir, "best.yaml"), best_yaml(records[best]["overrides"], result))
    plot(result, fileio.join(out_dir, "tuning.png"))
    return result


def _yardsticks(cfg, eq, stats, n_items: int, kind: str, k: int, log) -> Dict[str, float]:
    """Popularity and the classic baselines (``eval.baselines``) on the trials' queries, fitted on the same
    earlier events, at their default hyper-parameters (tuning them is `recsys train`'s evaluation's job)."""
    tops = {"popularity": evaluation.popularity_topk(stats.item_counts, len(eq.targets), k, eq.prior)}
    split = baselines.Split(stats.users, stats.items, stats.times)
    for name in cfg.eval.baselines:
        try:
            model, _ = baselines.fit_tuned(name, split, n_items, tune_first=False)
        except baselines.TooLarge as e:
            log(f"[tune] {e}")
            continue
        tops[name] = model.topk(eq.prior, k, eq.prior, n_items, order_key=eq.users)
    return {name: float(np.nanmean(evaluation.per_query(kind, top, eq.targets, k))) for name, top in tops.items()}


def best_yaml(overrides: Dict[str, str], result: Dict) -> str:
    """The best trial's settings as a config file (``recsys --config best.yaml train``); the config as given
    when it won (then the file holds no settings)."""
    import yaml

    nested: Dict[str, Dict] = {}
    probe = config_mod.Config()
    for key, value in overrides.items():
        config_mod.apply_override(probe, key, value)
        section, _, leaf = key.rpartition(".")
        nested.setdefault(section, {})[leaf] = _get(probe, key)
    b = result["best"]
    head = (f"# recsys tune: trial {b['trial']} of {len(result['trials'])}, {result['metric']} {b[result['metric']]:.4f} "
            f"on {_held_out(result)} (seen items excluded)\n"
            f"# use it: recsys --config best.yaml train (with the other --set options of the tuned run)\n")
    if not nested:
        return head + "# the config as given scored best: nothing to change\n{}\n"
    return head + yaml.safe_dump(nested, sort_keys=True, default_flow_style=False)


def _held_out(result: Dict) -> str:
    h = result["holdout"]
    return (f"the train split's latest {h['fraction']:.0%}" if h.get("by", "time") == "time"
            else "each user's latest train event")


def table(result: Dict) -> str:
    """The trials, best first, with the yardsticks under them."""
    m = result["metric"]
    rows = [{"trial": r["trial"], m: r[m], "epochs": r["epochs_run"], "s": r["seconds"],
             "settings": ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(as given)"}
            for r in sorted(result["trials"], key=lambda r: -r[m])]
    rows += [{"trial": "-", m: v, "settings": name} for name, v in result["yardsticks"].items()]
    text = text_table.format_table(rows, ["trial", (m, m, ".4f"), "epochs", ("s", "s", ".0f"),
                                          text_table.Column("settings", align="<")])
    lead = result["best_over_given"]
    if lead is None:
        return text + "\nthe config as given scored best"
    return (text + f"\nbest (trial {result['best']['trial']}) vs the config as given on {m}: {lead['lead']:+.1%} "
                   f"[{lead['low']:+.1%}, {lead['high']:+.1%}] (95% bootstrap over {lead['n_users']} users)")


def plot(result: Dict, path: str) -> str:
    """Each trial's score (the config as given in grey), popularity and the best baseline as lines."""
    from matplotlib.figure import Figure

    from recsys import fileio

    m = result["metric"]
    trials = sorted(result["trials"], key=lambda r: -r[m])
    fig = Figure(figsize=(7, 0.35 * len(trials) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(trials)), [r[m] for r in trials],
            color=["0.6" if not r["overrides"] else "tab:blue" for r in trials])
    ax.set_yticks(range(len(trials)), [f"trial {r['trial']}" + (" (as given)" if not r["overrides"] else "")
                                       for r in trials], fontsize=8)
    ax.invert_yaxis()
    for i, r in enumerate(trials):
        ax.text(r[m], i, f" {r[m]:.4f}", va="center", fontsize=7)
    sticks = result["yardsticks"]
    others = {k: v for k, v in sticks.items() if k != "popularity"}
    lines = [("popularity", sticks.get("popularity"), "tab:red")]
    if others:
        name = max(others, key=others.get)
        lines.append((name, others[name], "tab:green"))
    for name, value, colour in lines:
        if value is not None:
            ax.axvline(value, color=colour, linestyle="--", label=f"{name} {value:.4f}")
    ax.set_xlabel(f"{m}, {_held_out(result)}, seen items excluded "
                  f"(settings: tuning.json)", fontsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)  # off the bars
    ax.set_title("recsys tune: two-tower trials", fontsize=10)
    fig.tight_layout()
    return fileio.write_png(fig, path, dpi=110)


def default_out_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "tuning")
