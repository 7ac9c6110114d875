"""cold-start: id-only vs content candidate towers on items never seen in training, and new users.

Per dataset (synthetic with item images; ml-latest-small from ``../shared/data`` without images, skipped
with the reason when absent): ``trainer.cold_start.run`` holds out 10% of the items and 10% of the users
seen in the eval period (their earlier events removed, so training never sees them; they stay in the
catalogue / user table), preprocesses with the pipeline's own time split, trains one two-tower per
candidate tower and scores, all on the same queries:

* cold items: Recall@50 on eval events whose target is a held-out item, ranking the full catalogue
  (held-out items included), every item the user had before the event excluded;
* cold only: the same queries ranked among the held-out items alone (Recall@10; a "new arrivals" shelf);
* warm items: the same on every other eval event (what the content tower costs or gains there);
* cold users: Recall@50 on held-out users' first eval events (no history, unknown user id: context and
  demographics only), beside popularity;
* serving: the content model exported as an exact-retrieval SavedModel over the whole catalogue (held-out
  items included), reloaded and sent the cold-item queries as raw requests (``--no-export`` skips it).

Rows: ``id_only`` (item id alone), ``id_content`` (today's default tower: id + title, genres, price,
release), ``content`` (``retrieval.candidate_tower=content``: content + image CNN where images exist, id
dropout 0.5), ``content_no_image`` (the same without the image branch; synthetic only), popularity.
Every variant drops unknown user ids (``retrieval.user_id_dropout`` 0.5), so the candidate tower is the
only difference. Differences carry a 95% bootstrap interval over users.

Run ``python -m benchmarks.cold_start --help`` (or ``recsys bench cold-start``). Writes
``<out>/cold_start.json`` and ``<out>/cold_start.png`` and prints one table per dataset.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from benchmarks import common

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MOVIELENS = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "ml-latest-small"))
METRICS = ("cold_items_recall@50", "cold_only_recall@10", "warm_items_recall@50", "cold_users_recall@50")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="synthetic,movielens", help="comma list of synthetic, movielens")
    p.add_argument("--movielens", default=DEFAULT_MOVIELENS, help="ml-latest-small directory")
    p.add_argument("--models", default="id_only,id_content,content_no_image,content",
                   help="comma list of id_only, id_content, content, content_no_image")
    p.add_argument("--users", type=int, default=2000, help="synthetic users")
    p.add_argument("--items", type=int, default=1500, help="synthetic items")
    p.add_argument("--events", type=float, default=25.0, help="synthetic events per user")
    p.add_argument("--image-size", type=int, default=16, help="synthetic image side (pixels)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (early stopping on the valid split)")
    p.add_argument("--item-fraction", type=float, default=0.1, help="share of eval-period items held out")
    p.add_argument("--user-fraction", type=float, default=0.1, help="share of eval-period users held out")
    p.add_argument("--no-export", action="store_true",
                   help="skip exporting the content model (exact retrieval SavedModel) and querying it with raw requests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates over users")
    p.add_argument("--workdir", default="", help="keep the runs here (default: a temporary directory)")
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "bench_results", "cold_start"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    return p


def _tables(name: str, args, work: str):
    """(raw tables, images path or '', description) for a dataset."""
    if name == "synthetic":
        from preprocessing.sources import synthetic

        tables = synthetic.generate(n_users=args.users, n_items=args.items, events_per_user=args.events, seed=args.seed)
        path = synthetic.write_item_images(tables, os.path.join(work, "images"), seed=args.seed, size=args.image_size)
        return tables, path, (f"synthetic.generate(n_users={args.users}, n_items={args.items}, "
                              f"events_per_user={args.events:g}, seed={args.seed}) + {args.image_size}x{args.image_size} "
                              f"genre images")
    from preprocessing.sources import movielens

    return movielens.load(args.movielens), "", f"movielens.load({args.movielens!r}) (no images)"


def run_dataset(name: str, args, work: str) -> Dict[str, Any]:
    from recsys.config import load_config
    from trainer import cold_start

    cfg = load_config(None, args.set)
    cfg.workdir = work
    cfg.train.epochs = args.epochs
    tables, images_path, desc = _tables(name, args, work)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not images_path:
        models = [m for m in models if m != "content_no_image"]  # without images it is the content row
    t0 = time.time()
    res = cold_start.run(tables, cfg, os.path.join(work, "run"), images_path=images_path, variants=models,
                         item_fraction=args.item_fraction, user_fraction=args.user_fraction, seed=args.seed,
                         n_boot=args.bootstrap, export_base="" if args.no_export else os.path.join(work, "models"))
    res.update(dataset=name, description=desc, images=bool(images_path), seconds=round(time.time() - t0, 1),
               interactions=tables.num_interactions, n_items=len(tables.items["item_id"]))
    res.pop("version_dir", None)
    return res


def report(res: Dict[str, Any]) -> str:
    from trainer.baselines import format_lead

    q = res["queries"]
    title = (f"cold start, {res['dataset']} ({res['description']}): {res['held_out_items']} items and "
             f"{res['held_out_users']} users held out; queries: {q['cold_items']} cold-item, {q['warm_items']} warm-item, "
             f"{q['cold_users']} cold-user")
    text = common.print_table(res["rows"], ["model", *METRICS, "train_s"], title=title)
    for key, r in res["leads"].items():
        ratio = "n/a (the second row scores 0)" if r["ratio"] == float("inf") else f"{r['ratio']:.2f}x"
        line = (f"{key}: {format_lead(r)} {r.get('metric', 'recall@50')} (absolute; 95% bootstrap over "
                f"{r['n_users']} users), ratio {ratio}")
        print(line, flush=True)
        text += "\n" + line
    ex = res.get("export")
    if ex:
        line = (f"exported content model: {ex['indexed_items']} items indexed, {ex['indexed_held_out_items']} of them never "
                f"seen in training; {ex['queries']} cold-item raw requests: held-out target returned in "
                f"{100 * ex['served_cold_target_hits@50']:.1f}%, a held-out item in "
                f"{100 * ex['served_results_with_a_held_out_item']:.1f}% of responses; top-50 overlap with the in-process "
                f"ranking {ex['served_vs_in_process_overlap@50']:.3f}")
        print(line, flush=True)
        text += "\n" + line
    return text


def plot(results: List[Dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        models = [r["model"] for r in res["rows"]]
        x = np.arange(len(METRICS))
        w = 0.8 / max(len(models), 1)
        for i, row in enumerate(res["rows"]):
            ax.bar(x + i * w, [row[m] or 0.0 for m in METRICS], w, label=row["model"])
        ax.set_xticks(x + w * (len(models) - 1) / 2)
        ax.set_xticklabels([m.replace("_recall", "") for m in METRICS])
        ax.set_ylabel("Recall@k")
        ax.set_title(f"{res['dataset']}{' (images)' if res['images'] else ' (no images)'}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _kept(path: str, rerun: List[str]) -> List[Dict[str, Any]]:
    """Results in an earlier ``cold_start.json`` for datasets not run this time."""
    import json

    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [r for r in json.load(f).get("results", []) if r.get("dataset") not in rerun]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        if d not in ("synthetic", "movielens"):
            print(f"--datasets: unknown dataset {d!r}; choose synthetic, movielens", file=sys.stderr)
            return 2
    os.makedirs(args.out, exist_ok=True)
    machine = common.machine_info()
    print(common.format_machine(machine), flush=True)
    results, skipped = [], {}
    work_root = args.workdir or tempfile.mkdtemp(prefix="cold_start_")
    try:
        for d in datasets:
            if d == "movielens" and not os.path.isdir(args.movielens):
                skipped[d] = f"{args.movielens} is not a directory"
                print(f"[cold-start] movielens skipped: {skipped[d]}", flush=True)
                continue
            res = run_dataset(d, args, os.path.join(work_root, d))
            report(res)
            results.append(res)
    finally:
        if not args.workdir:   # our own temporary models; a --workdir is the caller's to keep
            shutil.rmtree(work_root, ignore_errors=True)
    path = os.path.join(args.out, "cold_start.json")
    results = _kept(path, datasets) + results   # a rerun of one dataset keeps the other's figures
    payload = {"benchmark": "cold_start", "args": vars(args), "machine": machine, "results": results,
               "skipped": skipped}
    common.write_json(path, payload)
    if results:
        plot(results, os.path.join(args.out, "cold_start.png"))
    print(f"wrote {path}" + (f" and {os.path.join(args.out, 'cold_start.png')}" if results else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
