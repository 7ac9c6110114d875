"""ranking: retrieval-only vs every ranker re-ranking retrieval's top-100, plus the GBDT baseline.

Per dataset (synthetic data at the config's default size; ``ml-latest-small`` from
``../shared/data`` when present, else skipped with the reason): the pipeline's time split
(latest 10% of events = eval), the two-tower retrieval model, then
``trainer.train_ranking.train_and_evaluate``: ranking pairs from retrieval's own top-N on the
latest slice of the train split proposed by an out-of-fold retriever (``ranking.candidates``), every
ranker and the GBDT trained on the same pairs, and all of them scored on the same eval candidates
(each eval event's retrieval top-100 with the retrieval evaluation's exclusions): nDCG@10 with its
gain over retrieval-only and a 95% bootstrap interval over users, Recall@10, MRR against the
event's logged item, AUC of the engagement score over all (event, candidate) pairs, and RMSE of
the rating head on the eval events' logged rated items beside the global mean and the regularised
user + item bias model on the same rows.

Run ``python -m benchmarks.ranking --help`` (or ``recsys bench ranking``). Writes
``<out>/ranking.json`` and prints one table per dataset.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from benchmarks import common

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MOVIELENS = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "ml-latest-small"))
DEFAULT_RANKERS = "dcn,dcn_parallel,dcn_lowrank,wide_deep,deepfm"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ranking", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="synthetic,movielens", help="comma list of synthetic, movielens")
    p.add_argument("--movielens", default=DEFAULT_MOVIELENS, help="ml-latest-small directory")
    p.add_argument("--rankers", default=DEFAULT_RANKERS, help="comma list of trainer.train_ranking.VARIANTS")
    p.add_argument("--no-gbdt", action="store_true", help="skip the gradient-boosted-trees baseline")
    p.add_argument("--epochs", type=int, default=3, help="ranker epochs (early stopping on the valid pairs)")
    p.add_argument("--max-train-events", type=int, default=20000, help="train events to build pairs from (0 = all)")
    p.add_argument("--eval-queries", type=int, default=0, help="eval events re-ranked (0 = all)")
    p.add_argument("--candidates", type=int, default=100, help="retrieval top-N that is re-ranked")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, ~3 minutes)")
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "bench_results", "ranking"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    return p


def dataset_config(name: str, args, work: str):
    from recsys.config import load_config

    cfg = load_config(None, args.set)
    cfg.workdir = work
    cfg.export.version = 1
    if name == "movielens":
        cfg.data.source, cfg.data.path = "movielens", args.movielens
    if args.quick:
        cfg.data.n_users, cfg.data.n_items, cfg.data.events_per_user = 400, 300, 20
        cfg.train.epochs = 3
    r = cfg.ranking
    r.epochs, r.max_train_events = args.epochs, args.max_train_events
    r.eval_max_queries, r.eval_candidates, r.train_candidates = args.eval_queries, args.candidates, args.candidates
    return cfg


def run_dataset(name: str, args, log) -> Dict[str, Any]:
    from recsys import steps
    from trainer import train_ranking

    work = os.path.join(args.out, "work", name)
    cfg = dataset_config(name, args, work)
    t0 = time.perf_counter()
    steps.make_raw(cfg)
    version_dir = steps.preprocess(cfg)
    t_pre = time.perf_counter() - t0
    t0 = time.perf_counter()
    trained = steps.train(cfg, version_dir)
    ev = steps.evaluate(cfg, trained)
    t_ret = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = train_ranking.train_and_evaluate(cfg, version_dir, trained, ev["item_vectors"], rankers=args.ranker_list,
                                           gbdt=not args.no_gbdt, out_dir=os.path.join(work, "ranking"))
    results = out["results"]
    # a ranker "beats" retrieval-only when the user-bootstrap 95% interval of its nDCG@10 gain excludes zero
    verdict = {n: bool(m["ndcg_gain"]["low"] > 0) for n, m in results.items() if m.get("ndcg_gain")}
    return {"name": name, "results": results, "beats_retrieval_ndcg@10": verdict, "data": out["info"],
            "eval_queries": out["eval_set"].n_queries, "candidates": int(out["eval_set"].candidates.shape[1]),
            "retrieval_full_ranking": ev["results"], "config": copy.deepcopy(cfg.to_dict()),
            "seconds": {"preprocess": round(t_pre, 1), "retrieval": round(t_ret, 1),
                        "ranking": round(time.perf_counter() - t0, 1)}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    args.ranker_list = [r.strip() for r in args.rankers.split(",") if r.strip()]
    from trainer import train_ranking

    unknown = [r for r in args.ranker_list if r not in train_ranking.VARIANTS]
    if unknown:
        print(f"unknown rankers {unknown}; known: {sorted(train_ranking.VARIANTS)}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    machine = common.machine_info(common.DEFAULT_PACKAGES + ("tensorflow-decision-forests", "ydf"))
    print(f"Ranking benchmark: retrieval-only vs {', '.join(args.ranker_list)}"
          f"{'' if args.no_gbdt else ' + gbdt'} re-ranking the two-tower's top-{args.candidates}")
    print(common.format_machine(machine) + "\n", flush=True)
    datasets: List[Dict[str, Any]] = []
    t_start = time.perf_counter()
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name == "movielens" and not os.path.isdir(args.movielens):
            reason = f"{args.movielens} not found (expected ml-latest-small); skipped"
            log(f"[movielens] {reason}")
            datasets.append({"name": name, "skipped": reason})
            continue
        try:
            datasets.append(run_dataset(name, args, log))
        except Exception as e:  # noqa: BLE001  (one dataset failing must not lose the other's results)
            import traceback

            traceback.print_exc()
            datasets.append({"name": name, "error": f"{type(e).__name__}: {e}"})
        common.write_json(os.path.join(args.out, "ranking.json"),
                          {"benchmark": "ranking", "partial": True, "datasets": datasets, "machine": machine})
    print()
    for d in datasets:
        if "results" in d:
            print(train_ranking.report(d["results"], title=f"{d['name']}: re-ranking retrieval's top-{d['candidates']}"
                                       f" ({d['eval_queries']} eval events, same candidates for every row)"))
            print(f"beats retrieval-only nDCG@10 (95% interval above 0): {d['beats_retrieval_ndcg@10']}\n")
        else:
            print(f"{d['name']}: {d.get('skipped') or d.get('error')}\n")
    payload = {"benchmark": "ranking", "partial": False, "datasets": datasets, "machine": machine,
               "args": {k: v for k, v in vars(args).items()}, "seconds": round(time.perf_counter() - t_start, 1)}
    path = common.write_json(os.path.join(args.out, "ranking.json"), payload)
    print(f"[ranking] results -> {path}")
    return 0 if all("error" not in d for d in datasets) else 1


if __name__ == "__main__":
    sys.exit(main())
