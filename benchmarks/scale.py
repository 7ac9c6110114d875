"""scale: how cost grows with items, users and rows, from the other benchmarks' measured points.

Reads the JSON written by ``benchmarks.ann`` (``<results>/ann/ann.json``),
``benchmarks.preprocessing`` (``<results>/preprocessing/preprocessing.json``) and
``benchmarks.training`` (``<results>/training/training.json``); any that is missing is
reported and its panels are left out. For every series it fits a power law
``cost = a * size^b`` by least squares in log-log space over the *measured* points and
extrapolates the fit to the "100M items" scale (1e8 items, 1e8 users, 1e9 interaction
rows: about 10 events per item).

Outputs: ``<out>/scale.json`` (points, fits, extrapolations), ``<out>/scale.png`` (log-log:
measured points as markers, the fit as a solid line over the measured range and a dashed
line beyond it, the extrapolated value marked with an open marker and labelled as such),
and ``<out>/README_section.md``: what changes at 100M items, grounded in the measured slopes.
Extrapolations are never reported as measurements.

Run ``python -m benchmarks.scale --help``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from benchmarks import common

TARGET = {"items": 1e8, "users": 1e8, "rows": 1e9}
AXIS_LABEL = {"items": "catalogue items (N)", "users": "user ids in the embedding table",
              "rows": "interaction rows preprocessed", "batch": "training batch size"}
PANELS = [
    ("query", "items", "ms per query", "Retrieval: top-10 query cost vs items"),
    ("build_train", "items", "seconds", "Index build / train step vs items"),
    ("memory_items", "items", "MB", "Memory vs items"),
    ("users", "users", "seconds per step", "Two-tower train step vs user table"),
    ("prep_time", "rows", "seconds", "Preprocessing wall time vs rows"),
    ("prep_mem", "rows", "MB", "Preprocessing peak memory vs rows"),
    ("batch", "batch", "seconds per step", "Train step time vs batch size"),
]


def _load(path: str) -> Optional[Dict[str, Any]]:
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("partial"):
        data["_partial"] = True
    return data


def series_from_ann(ann: Dict[str, Any]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    sizes = ann.get("sizes", [])
    by_method: Dict[str, List] = {}
    for s in sizes:
        for r in s.get("brute_force", []):
            if r.get("qps"):
                by_method.setdefault(r["method"], []).append((s["n_items"], 1e3 / r["qps"]))
    batch = ann.get("settings", {}).get("batch_size")
    threads = ann.get("settings", {}).get("threads")
    for method, pts in by_method.items():
        out.append({"name": f"{method} (exact)", "panel": "query", "axis": "items", "points": pts,
                    "unit": "ms/query", "note": f"batched queries (batch {batch}, {threads} threads), 1000/QPS"})
    best = [(s["n_items"], s["best"]) for s in sizes if s.get("best")]
    if best:
        out.append({"name": "ScaNN, fastest config with recall@10 >= target", "panel": "query", "axis": "items",
                    "points": [(n, 1e3 / b["qps"]) for n, b in best], "unit": "ms/query",
                    "note": "best ScaNN configuration meeting the recall target at each size (batched)",
                    "configs": {str(n): b.get("config") for n, b in best}})
        out.append({"name": "ScaNN index build (best config)", "panel": "build_train", "axis": "items",
                    "points": [(n, b["build_s"]) for n, b in best if b.get("build_s")], "unit": "s"})
        idx = [(n, b["index_mb"]) for n, b in best if b.get("index_mb")]
        if idx:
            out.append({"name": "ScaNN serialized index (best config)", "panel": "memory_items", "axis": "items",
                        "points": idx, "unit": "MB"})
    missing = [s["n_items"] for s in sizes if not s.get("best")]
    if missing:
        for s in out:
            if s["name"].startswith("ScaNN"):
                s["missing_sizes"] = missing
    data = [(s["n_items"], s["data_mb"]) for s in sizes if s.get("data_mb")]
    if data:
        out.append({"name": "raw item vectors (float32)", "panel": "memory_items", "axis": "items", "points": data,
                    "unit": "MB", "note": f"N x {ann.get('data', {}).get('dim', '?')} x 4 bytes"})
    return out


def series_from_training(tr: Dict[str, Any]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    sweep = tr.get("vocab_sweep", [])
    for kind, panel in (("items", "build_train"), ("users", "users")):
        rows = sorted((r for r in sweep if r.get("sweep") == kind), key=lambda r: r["vocab"])
        if rows:
            b = rows[0]["batch"]
            out.append({"name": f"two-tower train step (batch {b}), {kind} table", "panel": panel, "axis": kind,
                        "points": [(r["vocab"], r["step_s_median"]) for r in rows], "unit": "s/step",
                        "note": "TF-Keras Adam updates every row of an embedding table (and its two slots) each step"})
            params = [(r["vocab"], r["params"] * 12 / common.MiB) for r in rows if r.get("params")]
            if kind == "items" and params:
                out.append({"name": "two-tower weights + Adam slots (measured params x 12 bytes)",
                            "panel": "memory_items", "axis": kind, "points": params, "unit": "MB",
                            "note": "trainable parameters counted in the sweep x (4 bytes weight + 8 bytes Adam slots)"})
    models = {}
    for r in tr.get("results", []):
        if "step_s_median" in r:
            models.setdefault(r["model"], []).append((r["batch"], r["step_s_median"]))
    for model, pts in models.items():
        out.append({"name": f"{model} train step", "panel": "batch", "axis": "batch", "points": sorted(pts),
                    "unit": "s/step"})
    return out


def series_from_preprocessing(pp: Dict[str, Any]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    results = [r for r in pp.get("results", []) if "wall_s" in r]
    for mode in sorted({r["mode"] for r in results}):
        rs = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["rows"])
        label = f"{mode} x{rs[0]['workers']}"
        out.append({"name": f"DirectRunner {label}: wall time", "panel": "prep_time", "axis": "rows",
                    "points": [(r["rows"], r["wall_s"]) for r in rs], "unit": "s"})
        out.append({"name": f"DirectRunner {label}: peak RSS (process tree)", "panel": "prep_mem", "axis": "rows",
                    "points": [(r["rows"], r["peak_rss_tree_mb"]) for r in rs if r.get("peak_rss_tree_mb")],
                    "unit": "MB"})
        pss = [(r["rows"], r["peak_pss_tree_mb"]) for r in rs if r.get("peak_pss_tree_mb")]
        if pss:
            out.append({"name": f"DirectRunner {label}: peak PSS (process tree)", "panel": "prep_mem",
                        "axis": "rows", "points": pss, "unit": "MB"})
    return out


def fit_all(series: List[Dict[str, Any]]) -> None:
    for s in series:
        pts = sorted(s["points"])
        s["points"] = [[float(x), float(y)] for x, y in pts]
        fit = common.fit_power_law([x for x, _ in pts], [y for _, y in pts])
        s["fit"] = fit
        target = TARGET.get(s["axis"])
        if fit and target and target > max(x for x, _ in pts):
            s["extrapolated"] = {"x": target, "y": common.power_law_at(fit, target),
                                 "label": "fitted power law, extrapolated (not measured)"}


# --------------------------------------------------------------------------- plot


def plot(series: List[Dict[str, Any]], path: str, title: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except Exception:  # noqa: BLE001
        return None
    panels = [p for p in PANELS if any(s["panel"] == p[0] for s in series)]
    if not panels:
        return None
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, axis, ylabel, ptitle) in zip(axes.ravel(), panels):
        for i, s in enumerate(s for s in series if s["panel"] == key):
            c = colors[i % len(colors)]
            xs = [p[0] for p in s["points"]]
            ys = [p[1] for p in s["points"]]
            fit = s.get("fit")
            label = s["name"] + (f" (slope {fit['b']:.2f})" if fit else " (1 point: no fit)")
            ax.plot(xs, ys, "o", color=c, ms=6, label=label, zorder=3)
            if fit:
                lo, hi = min(xs), max(xs)
                gx = np.geomspace(lo, hi, 20)
                ax.plot(gx, [common.power_law_at(fit, x) for x in gx], "-", color=c, lw=1.2, alpha=0.8)
                ex = s.get("extrapolated")
                if ex:
                    gx2 = np.geomspace(hi, ex["x"], 20)
                    ax.plot(gx2, [common.power_law_at(fit, x) for x in gx2], "--", color=c, lw=1, alpha=0.7)
                    ax.plot([ex["x"]], [ex["y"]], "o", mfc="none", mec=c, ms=8, zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(AXIS_LABEL[axis])
        ax.set_ylabel(ylabel)
        ax.set_title(ptitle, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=6.5, loc="upper left")
        if axis in TARGET:
            ax.axvline(TARGET[axis], color="grey", lw=0.8, ls=":")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    ax = axes.ravel()[-1] if len(panels) < rows * cols else None
    if ax is not None:
        ax.text(0.02, 0.95, "filled markers: measured\nsolid line: power-law fit over the measured range\n"
                "dashed line + open marker: the fit extrapolated\n(to 1e8 items / users, 1e9 rows; NOT measured)",
                va="top", fontsize=9, transform=ax.transAxes)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- README section


def _fmt(v: Optional[float], unit: str = "") -> str:
    if v is None:
        return "n/a"
    if unit == "s":
        if v >= 3600:
            return f"{v / 3600:,.1f} h"
        if v >= 120:
            return f"{v / 60:,.1f} min"
        if v >= 1:
            return f"{v:,.1f} s"
        return f"{v * 1e3:,.1f} ms"
    if unit == "ms":
        return f"{v:,.2f} ms" if v < 1000 else f"{v / 1e3:,.1f} s"
    if unit == "MB":
        return f"{v:,.0f} MiB" if v < 1024 else f"{v / 1024:,.1f} GiB"
    return f"{v:,.3g}"


def _find(series: List[Dict[str, Any]], panel: str, contains: str) -> Optional[Dict[str, Any]]:
    for s in series:
        if s["panel"] == panel and contains in s["name"]:
            return s
    return None


def readme_section(series: List[Dict[str, Any]], inputs: Dict[str, Any], machine: Dict[str, Any],
                   pp: Optional[Dict[str, Any]], tr: Optional[Dict[str, Any]], ann: Optional[Dict[str, Any]]) -> str:
    L: List[str] = []
    cpu = f"{machine.get('cpu_model')} ({machine.get('usable_cores')} cores), {machine.get('memory_total_gib')} GiB"
    L.append("## Scale: how cost grows, and what changes at 100M items")
    L.append("")
    L.append(f"Measured on one shared CPU machine ({cpu}) by `benchmarks.ann`, `benchmarks.preprocessing` and "
             f"`benchmarks.training`; `python -m benchmarks.scale` fits `cost = a * size^b` to the measured points "
             f"(log-log least squares) and draws `bench_results/scale/scale.png`. **Every value in the \"at 100M\" "
             f"column is an extrapolation of such a fit, not a measurement**; slopes from two points are exact lines "
             f"through them, with no error estimate.")
    L.append("")
    L.append("| cost | measured sizes | slope b | largest measured | fit extrapolated to |")
    L.append("|---|---|---|---|---|")
    for s in series:
        if s["panel"] == "batch":
            continue
        fit, ex = s.get("fit"), s.get("extrapolated")
        xs = [p[0] for p in s["points"]]
        unit = {"ms/query": "ms", "s/step": "s", "s": "s", "MB": "MB"}.get(s["unit"], "")
        last = s["points"][-1][1] if s["points"] else None
        ext = f"{_fmt(ex['y'], unit)} at {ex['x']:.0e} {s['axis']}" if ex else "-"
        L.append(f"| {s['name']} | {', '.join(f'{int(x):,}' for x in xs)} {s['axis']} | "
                 f"{fit['b']:.2f} |" if fit else f"| {s['name']} | {', '.join(f'{int(x):,}' for x in xs)} | - |")
        L[-1] += f" {_fmt(last, unit)} | {ext} |"
    L.append("")

    # ---- serving
    bf = _find(series, "query", "numpy") or _find(series, "query", "exact")
    sc = _find(series, "query", "ScaNN")
    raw = _find(series, "memory_items", "raw item vectors")
    dim = (ann or {}).get("data", {}).get("dim", 64)
    L.append("### Serving retrieval at 100M items: sharded ScaNN, GPU for the exact fallback")
    if bf and bf.get("fit"):
        L.append(f"- Exact top-k costs O(N) per query: measured slope {bf['fit']['b']:.2f} for {bf['name']} "
                 f"({_fmt(bf['points'][-1][1], 'ms')}/query at {int(bf['points'][-1][0]):,} items, batched, all "
                 f"cores). The fit gives {_fmt(bf['extrapolated']['y'], 'ms') if bf.get('extrapolated') else 'n/a'} "
                 f"per query at 100M items on this machine: brute force on CPU stops being an option long before.")
    if sc and sc.get("fit"):
        L.append(f"- ScaNN (tree + anisotropic quantization + reordering, the configuration that meets the recall "
                 f"target at each size) grows with slope {sc['fit']['b']:.2f}; the fit reaches "
                 f"{_fmt(sc['extrapolated']['y'], 'ms') if sc.get('extrapolated') else 'n/a'} per query at 100M. "
                 + ("It did not meet the recall target at every measured size ("
                    + ", ".join(f"{n:,}" for n in sc.get("missing_sizes", [])) + " items), so the sweep "
                    "(leaves searched, reordering) has to widen with N. " if sc.get("missing_sizes") else ""))
    vec_gb = 1e8 * dim * 4 / 1e9
    L.append(f"- Memory decides the layout: 100M x {dim}-d float32 vectors are {vec_gb:.1f} GB before any index "
             + (f"(measured raw vectors grow with slope {raw['fit']['b']:.2f}, i.e. linearly)" if raw and raw.get('fit')
                else "") + ". So the index is **sharded**: split the catalogue into shards of ~5-10M items (the "
             "largest sizes measured here), build one ScaNN index per shard offline, serve each shard from its own "
             "replica set and merge the per-shard top-k (scatter-gather; the merge is cheap: k x shards candidates). "
             "Each shard's index is exported like today's (SavedModel with the ScaNN ops, so it needs a TF Serving "
             "build that includes them, STACK.md trap 2).")
    bt = _find(series, "build_train", "ScaNN index build")
    if bt and bt.get("fit") and bt.get("extrapolated"):
        sub = bt["fit"]["b"] < 0.9
        L.append(f"- Index build time grows with slope {bt['fit']['b']:.2f} over the measured sizes (the fit says "
                 f"{_fmt(bt['extrapolated']['y'], 's')} for 100M on one machine"
                 + ("; that understates it: ScaNN trains its tree and quantizer on a capped sample "
                    f"({(ann or {}).get('settings', {}).get('training_sample_size', 'a fixed number of')} points), a "
                    "fixed cost that dominates small sizes, while assigning and encoding every item is O(N), so expect "
                    "at least linear growth beyond the measured range" if sub else "")
                 + "). Shards are built in parallel by a batch job after each training run, from item vectors "
                 "computed by a Beam/Dataflow job that runs the candidate tower over the catalogue.")
    L.append("- GPU serving: the query tower is a few small matmuls; what a GPU changes is exact search. At "
             f"100M x {dim} in fp16 ({vec_gb / 2:.1f} GB) the catalogue fits in one 80 GB GPU, and one batched "
             f"query costs 2 x 1e8 x {dim} = {2 * 1e8 * dim / 1e9:.1f} GFLOP, so a batch of 1,000 queries is "
             f"{2 * 1e8 * dim * 1000 / 1e12:.1f} TFLOP: tens of ms on a current data-centre GPU (arithmetic, **not "
             "measured here: no GPU was available to this benchmark**). That makes GPU brute force a good exact "
             "fallback and recall oracle for the sharded ScaNN tier, and GPU-side ANN (e.g. IVF-PQ) an alternative to "
             "CPU ScaNN shards when query volume is high.")
    L.append("")

    # ---- training
    ti = _find(series, "build_train", "two-tower train step")
    tu = _find(series, "users", "two-tower train step")
    sizes = (tr or {}).get("dataset", {}).get("feature_sizes", {})
    L.append("### Training at 100M items: sparse updates, sharded embeddings, multi-worker")
    if ti and ti.get("fit"):
        L.append(f"- Measured: the two-tower train step grows with the item table, slope {ti['fit']['b']:.2f} "
                 f"({_fmt(ti['points'][0][1], 's')} at {int(ti['points'][0][0]):,} ids, "
                 f"{_fmt(ti['points'][-1][1], 's')} at {int(ti['points'][-1][0]):,}, same batch). The batch touches "
                 "only a few thousand rows, but TF-Keras' Adam decays both slot variables and writes every row of "
                 "every table each step. The fit gives "
                 f"{_fmt(ti['extrapolated']['y'], 's') if ti.get('extrapolated') else 'n/a'} per step at 100M ids.")
    if tu and tu.get("fit"):
        L.append(f"- The user table behaves the same (slope {tu['fit']['b']:.2f}; "
                 f"{_fmt(tu['extrapolated']['y'], 's') if tu.get('extrapolated') else 'n/a'} per step at 100M users, "
                 "extrapolated).")
    per_item = 32 + 32 + 1
    L.append(f"- Parameters: the two-tower keeps {per_item} floats per item (32-d id embedding shared with the "
             f"history, 32-d next-item embedding, 1 bias), so 100M items are {1e8 * per_item * 4 / 1e9:.0f} GB of "
             f"weights and {2 * 1e8 * per_item * 4 / 1e9:.0f} GB of Adam slots: more than one worker's memory.")
    L.append("- What changes: (1) row-sparse optimizer updates (Adagrad/SGD-style sparse updates or a lazy Adam), so a "
             "step costs what the batch touches, not the table size; (2) embedding tables sharded over parameter "
             "servers (`tf.distribute.ParameterServerStrategy` with variable partitioners) or TPU/GPU embedding "
             "tables, with multi-worker data parallelism for the dense towers; (3) a bounded id vocabulary: TFT's "
             "`vocabulary(top_k=..., frequency_threshold=...)` with OOV/hash buckets for the long tail, which the "
             "candidate tower already covers with content features (genres, title tokens, price, release).")
    bstep = _find(series, "batch", "two_tower")
    if bstep and bstep.get("fit"):
        L.append(f"- Batch size: the in-batch softmax's [B, B] logits make the two-tower step grow with slope "
                 f"{bstep['fit']['b']:.2f} over batches {', '.join(str(int(p[0])) for p in bstep['points'])} "
                 "(measured); large batches (more negatives per step) are where accelerators pay off first.")
    L.append("")

    # ---- preprocessing
    L.append("### Preprocessing at 1B rows: Dataflow instead of the DirectRunner")
    fits = (pp or {}).get("linear_fits", {})
    results = [r for r in (pp or {}).get("results", []) if "wall_s" in r]
    for mode, f in fits.items():
        if not f.get("marginal_rows_per_s"):
            continue
        hours = 1e9 * f["per_row_s"] / 3600 + f["fixed_s"] / 3600
        L.append(f"- DirectRunner `{mode}`: wall ~ {f['fixed_s']:.0f} s + {f['per_row_s'] * 1e6:.0f} us/row "
                 f"(marginal {f['marginal_rows_per_s']:,.0f} rows/s, fitted to the measured sizes); 1B rows would "
                 f"take ~{hours:,.0f} h on this machine (extrapolated).")
    for s in series:
        if s["panel"] == "prep_mem" and "RSS" in s["name"] and s.get("fit") and s.get("extrapolated"):
            L.append(f"- {s['name']}: slope {s['fit']['b']:.2f}, {_fmt(s['points'][-1][1], 'MB')} at "
                     f"{int(s['points'][-1][0]):,} rows; extrapolated {_fmt(s['extrapolated']['y'], 'MB')} at 1B rows.")
    if results:
        L.append("- What changes: the same pipeline runs on Dataflow (`preprocess.runner=DataflowRunner` plus "
                 "`preprocess.beam_args`: project, region, temp_location, autoscaling), reading from and writing to "
                 "GCS; TF-Transform's analyzers (vocabularies, z-scores, quantile buckets) are already distributed "
                 "combiners. Two parts of today's pipeline need care at that size: the exact time-split quantile "
                 "gathers every timestamp on one worker (8 bytes a row, 8 GB at 1B rows; switch to "
                 "`beam.ApproximateQuantiles`), and the per-user history GroupByKey needs a cap on very active users "
                 "(hot keys). The 100M-item vocabulary file itself is fine (~1-2 GB).")
    L.append("")
    L.append("Inputs: " + ", ".join(f"`{k}`: {'found' if v else 'missing'}" for k, v in inputs.items()) + ".")
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- main


COLUMNS = [
    common.Column("name", "series"),
    common.Column("n", "points", "d"),
    common.Column("x_range", "measured sizes"),
    common.Column("slope", "slope b", ".2f"),
    common.Column("r2", "r2", ".3f"),
    common.Column("last", "cost at largest"),
    common.Column("extrapolated", "fit at 1e8 items/users, 1e9 rows (NOT measured)"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=(
            "Scale analysis: reads the JSON of the ann, preprocessing and training benchmarks, fits power laws "
            "(cost = a * size^b) to their measured points, extrapolates the fits to 1e8 items / users and 1e9 rows "
            "(clearly labelled as such), and writes <out>/scale.json, <out>/scale.png (log-log) and "
            "<out>/README_section.md (what changes at 100M items). Missing inputs are reported and skipped."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="bench_results/scale", help="output directory")
    p.add_argument("--results", default="bench_results", help="directory holding ann/, preprocessing/, training/")
    p.add_argument("--ann", default=None, help="path of ann.json (default <results>/ann/ann.json)")
    p.add_argument("--preprocessing", default=None,
                   help="path of preprocessing.json (default <results>/preprocessing/preprocessing.json)")
    p.add_argument("--training", default=None, help="path of training.json (default <results>/training/training.json)")
    p.add_argument("--quick", action="store_true", help="accepted for symmetry with the other benchmarks (scale is "
                                                       "always quick: it only reads JSON)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    paths = {"ann": args.ann or os.path.join(args.results, "ann", "ann.json"),
             "preprocessing": args.preprocessing or os.path.join(args.results, "preprocessing", "preprocessing.json"),
             "training": args.training or os.path.join(args.results, "training", "training.json")}
    ann, pp, tr = (_load(paths[k]) for k in ("ann", "preprocessing", "training"))
    found = {"ann": ann is not None, "preprocessing": pp is not None, "training": tr is not None}
    machine = common.machine_info(())
    print("Scale analysis: power-law fits (log-log least squares) of the measured points; extrapolations to 1e8 "
          "items / users and 1e9 rows are fits, not measurements")
    for k, v in paths.items():
        print(f"  {k}: {v} ({'found' if found[k] else 'MISSING: its panels are left out'}"
              + (", partial run" if found[k] and (ann if k == 'ann' else pp if k == 'preprocessing' else tr)
                 .get("_partial") else "") + ")")
    series: List[Dict[str, Any]] = []
    if ann:
        series += series_from_ann(ann)
    if tr:
        series += series_from_training(tr)
    if pp:
        series += series_from_preprocessing(pp)
    fit_all(series)
    rows = []
    for s in series:
        xs = [p[0] for p in s["points"]]
        unit = {"ms/query": "ms", "s/step": "s", "s": "s", "MB": "MB"}.get(s["unit"], "")
        ex = s.get("extrapolated")
        rows.append({"name": s["name"], "n": len(xs),
                     "x_range": f"{int(min(xs)):,}..{int(max(xs)):,} {s['axis']}" if xs else "-",
                     "slope": s["fit"]["b"] if s.get("fit") else None,
                     "r2": s["fit"]["r2"] if s.get("fit") else None,
                     "last": _fmt(s["points"][-1][1], unit) if s["points"] else "-",
                     "extrapolated": _fmt(ex["y"], unit) if ex else "-"})
    table = common.format_table(rows, COLUMNS, title="Cost growth: measured ranges, fitted slopes, extrapolations")
    print()
    print(table)
    png = None
    if not args.no_plot and series:
        png = plot(series, os.path.join(args.out, "scale.png"),
                   "How cost grows with items, users and rows (measured points; fits; dashed = extrapolated)")
    section = readme_section(series, found, machine, pp, tr, ann)
    md_path = os.path.join(args.out, "README_section.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(section)
    payload = {
        "benchmark": "scale",
        "partial": False,
        "command": "python -m benchmarks.scale " + " ".join(argv if argv is not None else sys.argv[1:]),
        "inputs": {k: {"path": paths[k], "found": found[k]} for k in paths},
        "targets": TARGET,
        "method": "least squares of log(cost) on log(size) over the measured points of each series; "
                  "'extrapolated' = the fitted power law evaluated at the target size (not a measurement)",
        "machine": machine,
        "series": series,
        "table": table,
        "plot": png,
        "readme_section": md_path,
        "elapsed_s": time.perf_counter() - t0,
    }
    path = common.write_json(os.path.join(args.out, "scale.json"), payload)
    print(f"\nWrote {path}, {md_path}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
