"""seeds: how much of a two-tower figure is the training seed, per setting, beside the classic baselines.

A bootstrap interval over users says how much a figure would move with other users; it says nothing of
how much it moves with another training seed, and on ml-latest-small's time split (74 eval users, a
model that trains 2-4 epochs) that was as large as the lead over EASE. Per dataset this benchmark
preprocesses once, fits popularity and the classic baselines once (they have no seed), then trains the
two-tower once per (variant, seed) on the same split and ranks the same queries with the same
exclusions. It prints every run and, per variant, the mean, standard deviation, min and max of
recall@10, recall@50 and nDCG@10, and each run's lead over the best baseline with its 95% bootstrap
interval over users (how many of the seeds' intervals exclude zero). Then each variant against the first
on the per-query metrics averaged over the seeds, with a 95% bootstrap interval over users: with the
training seed's noise averaged out, a lead no single seed resolves may be resolved (or shown not to be).

A variant is a set of ``--set`` overrides (``default`` = none), e.g. the default
``default;train.weight_average=0`` compares weight averaging with the raw weights.

    recsys bench seeds                                       # synthetic + ml-latest-small, seeds 7,1,2
    recsys bench seeds --datasets movielens --seeds 7,1,2,3,4 --variants "default;retrieval.temperature=0.1"

Writes ``<out>/seeds.json`` and ``<out>/seeds.png`` (each run a dot, per dataset and variant, the best
baseline a dashed line).
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np

from benchmarks import common, quality

METRICS = ("recall@10", "recall@50", "ndcg@10")
PROTOCOL_CHOICES = ("time_split_full", "leave_one_out_full")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.seeds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_results/seeds", help="output directory")
    p.add_argument("--datasets", default="synthetic,movielens", help="comma list of synthetic, movielens")
    p.add_argument("--movielens", default=quality.DEFAULT_MOVIELENS,
                   help="MovieLens directory (any layout); skipped when absent")
    p.add_argument("--seeds", default="7,1,2", help="comma list of train.seed values")
    p.add_argument("--variants", default="default;train.weight_average=0",
                   help="';'-separated variants, each 'default' or comma-separated SECTION.KEY=VALUE overrides")
    p.add_argument("--protocol", default="time_split_full", choices=PROTOCOL_CHOICES, help="evaluation protocol")
    p.add_argument("--loo-source", choices=("full", "time_split"), default="full",
                   help="leave_one_out_full: the preprocessing the split is cut from, as in `bench quality`: 'full' = "
                        "a pipeline run with eval_fraction=0 (default), 'time_split' = the time-split run, whose "
                        "vocabularies miss the items first seen after its cutoff (the model cannot rank them)")
    p.add_argument("--baselines", default="ease", help="comma list of classic baselines (ease, item_knn, als) or none")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    p.add_argument("--synthetic-users", type=int, default=2000)
    p.add_argument("--synthetic-items", type=int, default=1500)
    p.add_argument("--synthetic-events", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=42, help="data seed (synthetic) and bootstrap seed")
    p.add_argument("--prepared", action="append", default=[], metavar="DATASET=VERSION_DIR",
                   help="use an existing preprocessing output for DATASET: a time-split run, or for "
                        "leave_one_out_full a run with preprocess.eval_fraction=0 (unless --loo-source time_split)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="overrides for every variant")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: synthetic data of 300 users, 2 epochs, seeds 1,2")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p


def parse_variants(text: str) -> List[Dict[str, Any]]:
    """'default;train.weight_average=0' -> [{'name': 'default', 'set': []}, {'name': ..., 'set': [...]}]."""
    out = []
    for part in (v.strip() for v in text.split(";")):
        if not part:
            continue
        sets = [] if part == "default" else [s.strip() for s in part.split(",") if s.strip()]
        for s in sets:
            if "=" not in s:
                raise SystemExit(f"--variants: {s!r} is not SECTION.KEY=VALUE")
        out.append({"name": part, "set": sets})
    if not out:
        raise SystemExit("--variants names no variant")
    return out


def resolve_args(argv) -> argparse.Namespace:
    a = build_parser().parse_args(argv)
    if a.quick:
        a.synthetic_users, a.synthetic_items, a.synthetic_events = 300, 400, 15.0
        a.epochs = a.epochs or 2
        if a.seeds == "7,1,2":
            a.seeds = "1,2"
    try:
        a.seed_list = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds: {a.seeds!r} is not a comma list of integers") from None
    a.variant_list = parse_variants(a.variants)
    a.baseline_list = [] if a.baselines.strip().lower() == "none" else [
        b.strip() for b in a.baselines.split(",") if b.strip()]
    a.dataset_list = [d.strip() for d in a.datasets.split(",") if d.strip()]
    for d in a.dataset_list:
        if d not in ("synthetic", "movielens"):
            raise SystemExit(f"unknown dataset {d!r}; use synthetic and/or movielens")
    a.prepared_map = quality.parse_prepared(a.prepared)
    from recsys.config import ConfigError, load_config

    for v in a.variant_list:  # a bad override fails here, in one line, before any data is read
        try:
            load_config(overrides=a.set + v["set"])
        except ConfigError as e:
            raise SystemExit(f"variant {v['name']!r}: {e}") from None
    # what quality's helpers read
    a.ranker_max_train_events, a.ranker_epochs, a.log = 0, None, ""
    return a


def _prepare(name: str, args, work: str, log) -> Optional[str]:
    """The dataset's time-split version dir, or for leave-one-out its cut from a full-vocabulary run (from a
    time split with ``--loo-source time_split``); None when the data is absent."""
    from preprocessing import pipeline

    full_vocab = args.protocol == "leave_one_out_full" and args.loo_source == "full"
    version_dir = args.prepared_map.get(name)
    if version_dir:
        stats = pipeline.load_stats(version_dir)
        # eval_fraction=0 still puts the events at the very last timestamp in eval (the cutoff is inclusive)
        if full_vocab and stats.get("eval", 0) > 0.01 * (stats.get("train", 0) + stats.get("eval", 0)):
            raise SystemExit(f"--prepared {name}={version_dir} is a time split: leave_one_out_full is cut from a "
                             "run with preprocess.eval_fraction=0 (pass --loo-source time_split to cut it anyway)")
    else:
        if name == "movielens" and not os.path.isdir(args.movielens or ""):
            log(f"[{name}] skipped: {args.movielens!r} does not exist")
            return None
        raw_dir = os.path.join(work, "raw")
        info, _ = quality.write_tables(name, args, raw_dir)
        log(f"[{name}] {info['label']}: {info['interactions']:,} interactions")
        version_dir = (quality.preprocess_full_vocabulary(args, raw_dir, work) if full_vocab else
                       pipeline.run(quality.make_config(args, work), raw_dir, os.path.join(work, "time_split")))
    if args.protocol == "leave_one_out_full":
        version_dir = quality.derive_leave_one_out(version_dir, os.path.join(work, "leave_one_out"))
    return version_dir


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean, sample standard deviation, min and max of each metric over a variant's seeds."""
    out: Dict[str, Any] = {"runs": len(runs)}
    for m in METRICS:
        v = np.array([r["metrics"][m] for r in runs], np.float64)
        out[m] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                  "min": float(v.min()), "max": float(v.max())}
    leads = [r["lead"] for r in runs if r.get("lead")]
    out["lead_intervals_above_zero"] = sum(1 for x in leads if x["low"] > 0)
    out["lead_intervals_below_zero"] = sum(1 for x in leads if x["high"] < 0)
    return out


def run_dataset(name: str, args, out_dir: str, log) -> Optional[Dict[str, Any]]:
    from trainer import evaluate_retrieval as er

    work = os.path.join(out_dir, "work", name)
    shutil.rmtree(work, ignore_errors=True)
    version_dir = _prepare(name, args, work, log)
    if version_dir is None:
        return None
    baseline_topks: Dict[str, np.ndarray] = {}
    baseline_rows: Dict[str, Dict[str, float]] = {}
    n_items = popularity = genres = None
    variants: List[Dict[str, Any]] = []
    per_query: List[List[Dict[str, np.ndarray]]] = []   # per variant, per seed: each metric's per-query values
    users = None
    for variant in args.variant_list:
        runs, per_seed = [], []
        for seed in args.seed_list:
            args_v = argparse.Namespace(**vars(args))
            args_v.set = list(args.set) + variant["set"] + [f"train.seed={seed}"]
            cfg = quality.make_config(args_v, work)
            tag = f"{variant['name']} seed {seed}"
            trained, vectors, train_s = quality.train_two_tower(
                version_dir, cfg, os.path.join(work, "train", f"{len(variants)}-{seed}"))
            ev = quality.full_ranking(version_dir, trained, vectors, cfg)
            if n_items is None:  # once per dataset: same split, same queries, no seed
                n_items = trained.catalogue.size
                popularity = np.asarray(trained.stats.item_counts, np.float64)
                genres = er.genre_matrix(trained.catalogue)
                baseline_topks["popularity"] = ev["topk"]["popularity"]
                for kind, (model, _) in quality.fit_baselines(trained, args.baseline_list, log, name).items():
                    baseline_topks[kind] = model.topk(ev["prior"], max(quality.KS), ev["exclude"], n_items,
                                                      order_key=ev["users"])
                for kind, topk in baseline_topks.items():
                    baseline_rows[kind] = quality.metrics_row(topk, ev["targets"], n_items, popularity, genres)
            metrics = quality.metrics_row(ev["topk"]["two_tower"], ev["targets"], n_items, popularity, genres)
            if users is None:
                users = np.asarray(ev["users"])
            elif not np.array_equal(users, np.asarray(ev["users"])):
                raise RuntimeError("the queries differ between runs on one split; seed-averaged leads need the same")
            per_seed.append(per_query_metrics(ev["topk"]["two_tower"], ev["targets"]))
            lead = quality.lead_over_best(dict(baseline_topks, two_tower=ev["topk"]["two_tower"]), ev["targets"],
                                          ev["users"], metric="recall@50", seed=args.seed)
            runs.append({"seed": seed, "train_s": round(train_s, 1), "epochs": len(trained.history.get("loss", [])),
                         "metrics": {m: float(metrics[m]) for m in METRICS}, "lead": lead})
            lead_txt = (f"; vs {lead['versus']} recall@50 {lead['lead']:+.1%} [{lead['low']:+.1%}, "
                        f"{lead['high']:+.1%}]" if lead else "")
            log(f"[{name}] {tag}: " + " ".join(f"{m} {metrics[m]:.4f}" for m in METRICS)
                + f" ({train_s:.0f} s){lead_txt}")
        variants.append({"name": variant["name"], "set": variant["set"], "runs": runs, "summary": summarize(runs)})
        per_query.append(per_seed)
    return {"name": name, "version_dir": version_dir, "protocol": args.protocol,
            "baselines": {k: {m: float(v[m]) for m in METRICS} for k, v in baseline_rows.items()},
            "variants": variants,
            "seed_averaged": seed_averaged_leads([v["name"] for v in variants], per_query, users, args.seed)}


def per_query_metrics(topk: np.ndarray, targets) -> Dict[str, np.ndarray]:
    """Each of METRICS per query (NaN where a query has no target), the unit the bootstrap resamples by user."""
    from trainer import evaluation

    out = {}
    for m in METRICS:
        kind, k = m.split("@")
        out[m] = evaluation.per_query(kind, topk, targets, int(k))
    return out


def seed_averaged_leads(names: Sequence[str], per_query: Sequence[Sequence[Dict[str, np.ndarray]]],
                        users: Optional[np.ndarray], seed: int = 0) -> List[Dict[str, Any]]:
    """Each variant against the first, on per-query metrics averaged over the seeds first: the training
    seed's noise shrinks with the seeds' count, so a lead one seed's interval cannot resolve may be
    resolved here. 95% bootstrap interval over users; the same seeds and queries on both sides."""
    from trainer.baselines import bootstrap_lead

    if users is None or len(names) < 2 or not per_query[0]:
        return []
    mean = [{m: np.mean([r[m] for r in runs], axis=0) for m in METRICS} for runs in per_query]
    return [{"variant": name, "versus": names[0], "seeds": len(per_query[i]),
             **{m: bootstrap_lead(mean[i][m], mean[0][m], users, seed=seed) for m in METRICS}}
            for i, name in enumerate(names) if i > 0 and per_query[i]]


def table_rows(ds: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for v in ds["variants"]:
        for r in v["runs"]:
            lead = r["lead"]
            rows.append({"variant": v["name"], "seed": r["seed"], **{m: f"{r['metrics'][m]:.4f}" for m in METRICS},
                         "lead@50 [95% CI]": (f"{lead['lead']:+.1%} [{lead['low']:+.1%}, {lead['high']:+.1%}] "
                                              f"vs {lead['versus']}" if lead else "-")})
        s = v["summary"]
        rows.append({"variant": v["name"], "seed": "mean +- sd",
                     **{m: f"{s[m]['mean']:.4f} +- {s[m]['sd']:.4f}" for m in METRICS},
                     "lead@50 [95% CI]": f"{s['lead_intervals_above_zero']}/{s['runs']} intervals above 0"})
    for kind, m in ds["baselines"].items():
        rows.append({"variant": kind, "seed": "-", **{k: f"{m[k]:.4f}" for k in METRICS}, "lead@50 [95% CI]": ""})
    return rows


def plot(datasets: List[Dict[str, Any]], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(len(datasets), len(METRICS), figsize=(4.2 * len(METRICS), 3.2 * len(datasets)),
                             squeeze=False)
    for row, ds in zip(axes, datasets):
        for ax, m in zip(row, METRICS):
            names = [v["name"] for v in ds["variants"]]
            for i, v in enumerate(ds["variants"]):
                ys = [r["metrics"][m] for r in v["runs"]]
                ax.scatter([i] * len(ys), ys, s=22, zorder=3)
                ax.hlines(np.mean(ys), i - 0.25, i + 0.25, colors="black", lw=1)
            if ds["baselines"]:
                best = max(ds["baselines"], key=lambda k: ds["baselines"][k][m])
                ax.axhline(ds["baselines"][best][m], ls="--", c="grey", lw=1, label=best)
                ax.legend(fontsize=7)
            ax.set_xticks(range(len(names)), [n if len(n) < 26 else n[:24] + ".." for n in names], fontsize=7)
            ax.set_title(f"{ds['name']} ({ds['protocol']}): {m}", fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Two-tower over training seeds (dots = runs, bar = mean, dashed = best baseline)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"Seeds benchmark: two-tower, seeds {args.seed_list}, variants "
        f"{[v['name'] for v in args.variant_list]}, {args.protocol}, baselines {args.baseline_list or 'none'}")
    datasets = [d for d in (run_dataset(n, args, args.out, log) for n in args.dataset_list) if d]
    columns = ("variant", "seed") + METRICS + ("lead@50 [95% CI]",)
    tables = [common.print_table(table_rows(ds), columns, title=f"\n{ds['name']} ({ds['protocol']})")
              for ds in datasets]
    from trainer.baselines import format_lead

    for ds in datasets:
        if ds["seed_averaged"]:
            tables.append(common.print_table(
                [{"variant": r["variant"], "versus": r["versus"], "seeds": r["seeds"],
                  **{m: format_lead(r[m]) for m in METRICS}} for r in ds["seed_averaged"]],
                ("variant", "versus", "seeds") + METRICS,
                title=f"\n{ds['name']}: each variant vs the first, per-query metrics averaged over the seeds "
                      f"(lead, 95% bootstrap over users)"))
    png = None if args.no_plot or not datasets else plot(datasets, os.path.join(args.out, "seeds.png"))
    path = common.write_json(os.path.join(args.out, "seeds.json"), {
        "benchmark": "seeds", "machine": common.machine_info(), "args": dict(vars(args)),
        "datasets": datasets, "table": "\n".join(tables), "png": png,
        "seconds": round(time.perf_counter() - t0, 1)})
    log(f"Wrote {path}" + (f" and {png}" if png else "") + f" in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
