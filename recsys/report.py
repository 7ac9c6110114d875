"""Online metrics from request logs and events: `recsys report`.

Per served model version (``<model name>/v<version>``) and per UTC day of serving:
requests, impressions, CTR (clicked impressions / impressions), conversion (purchased
impressions / impressions), watch seconds per impression (when the events have watches), and
the guardrails: coverage (distinct items served / catalogue), intra-list diversity (1 - mean
pairwise Jaccard of item genres, over the items of a list the catalogue knows), popularity share
(impressions of the top 10% most popular catalogue items) and novelty (mean -log2 p(item),
p = (count + 1) / (total + catalogue size), counts from the interactions or, without them, all
events). With two versions: the CTR difference with a bootstrap interval over users (users are
the unit the traffic is split by, so impressions of one user are not independent draws).

Writes ``report.json``, ``ctr_by_day.png``, ``ctr_by_position.png`` and ``report.html`` (one
self-contained file: the PNGs are embedded as base64). Why a separate module from the CLI: the
pipeline and notebooks call ``run_report`` directly.
"""
from __future__ import annotations

import base64
import collections
import html
import itertools
import math
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from preprocessing import feedback
from preprocessing.sources.tables import DataError
from recsys import fileio
from trainer import text_table
from trainer.text_table import Column

TOP_POPULAR_FRACTION = 0.10
ALL_DAYS = "all"


def version_label(example: Mapping[str, Any]) -> str:
    return f"{example['model_name']}/v{example['model_version']}"


def utc_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def genre_sets(items: Mapping[str, Mapping[str, Any]]) -> Dict[str, Set[str]]:
    """item id -> its set of genres (items.jsonl's '|'-separated item_genres)."""
    return {i: {g for g in str(row.get("item_genres") or "").split("|") if g} for i, row in items.items()}


def intra_list_diversity(item_ids: Sequence[str], genres: Mapping[str, Set[str]]) -> Optional[float]:
    """1 - mean pairwise genre Jaccard over the list's items with known genres; None with fewer than 2."""
    known = [genres[i] for i in item_ids if genres.get(i)]
    if len(known) < 2:
        return None
    sims = [len(a & b) / len(a | b) for a, b in itertools.combinations(known, 2)]
    return 1.0 - float(np.mean(sims))


class Popularity:
    """Interaction counts over the catalogue: the top-10% set and the novelty of an item."""

    def __init__(self, counts: Mapping[str, float], catalogue: Iterable[str]):
        self.catalogue = sorted(set(catalogue))
        self.counts = {i: float(counts.get(i, 0.0)) for i in self.catalogue}  # items outside the catalogue: ignored
        self.total = sum(self.counts.values())
        n_top = max(1, math.ceil(TOP_POPULAR_FRACTION * len(self.catalogue))) if self.catalogue else 0
        ranked = sorted(self.catalogue, key=lambda i: (-self.counts[i], i))  # ties: by id, so it is deterministic
        self.top: Set[str] = set(ranked[:n_top])

    def novelty(self, item: str) -> float:
        """-log2 of the item's smoothed share of interactions (an item never seen: 1 / (total + catalogue))."""
        return -math.log2((self.counts.get(item, 0.0) + 1.0) / (self.total + len(self.catalogue)))


def _metrics(examples: List[Mapping[str, Any]], genres: Mapping[str, Set[str]], catalogue_size: int,
             pop: Popularity, with_watch: bool) -> Dict[str, Any]:
    n = len(examples)
    lists: Dict[Tuple[str, int], List[Tuple[int, str]]] = collections.defaultdict(list)
    for e in examples:
        lists[(e["request_id"], e["example"])].append((e["position"], e["item_id"]))
    ild = [d for d in (intra_list_diversity([i for _, i in sorted(v)], genres) for v in lists.values())
           if d is not None]
    clicks = sum(e["click"] for e in examples)
    purchases = sum(e["purchase"] for e in examples)
    watch = sum(e["watch_seconds"] for e in examples)
    return {
        "requests": len(lists), "impressions": n, "clicks": clicks, "purchases": purchases,
        "users": len({e["user_id"] for e in examples}),
        "ctr": clicks / n if n else None,
        "conversion": purchases / n if n else None,
        "watch_seconds_per_impression": (watch / n if n else None) if with_watch else None,
        "coverage": len({e["item_id"] for e in examples}) / catalogue_size if catalogue_size else None,
        "diversity": float(np.mean(ild)) if ild else None,
        "popularity_share": sum(e["item_id"] in pop.top for e in examples) / n if n and pop.catalogue else None,
        "novelty": float(np.mean([pop.novelty(e["item_id"]) for e in examples])) if n and pop.catalogue else None,
    }


def bootstrap_ctr_difference(baseline: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]],
                             n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Dict[str, Any]:
    """CTR(candidate) - CTR(baseline), with a percentile bootstrap interval resampling users within each arm."""
    def per_user(examples):
        clicks, imps = collections.Counter(), collections.Counter()
        for e in examples:
            clicks[e["user_id"]] += e["click"]
            imps[e["user_id"]] += 1
        users = sorted(imps)
        return np.array([clicks[u] for u in users], float), np.array([imps[u] for u in users], float)

    rng = np.random.default_rng(seed)
    (ca, ia), (cb, ib) = per_user(baseline), per_user(candidate)
    if not len(ia) or not len(ib):
        raise ValueError("bootstrap needs impressions in both versions")
    diff = cb.sum() / ib.sum() - ca.sum() / ia.sum()
    ra = rng.integers(0, len(ia), size=(n_boot, len(ia)))
    rb = rng.integers(0, len(ib), size=(n_boot, len(ib)))
    boots = cb[rb].sum(1) / ib[rb].sum(1) - ca[ra].sum(1) / ia[ra].sum(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {"ctr_difference": float(diff), "interval": [float(lo), float(hi)], "level": level, "n_boot": n_boot,
            "users": [len(ia), len(ib)], "significant": bool(lo > 0 or hi < 0)}


def build_report(examples: Sequence[Mapping[str, Any]], items: Mapping[str, Mapping[str, Any]],
                 popularity_counts: Optional[Mapping[str, float]] = None, *, organic_events: int = 0,
                 baseline: Optional[str] = None, candidate: Optional[str] = None, n_boot: int = 2000,
                 seed: int = 0) -> Dict[str, Any]:
    """The report as a JSON-able dict, from joined examples (preprocessing/feedback.join) and the items table."""
    genres = genre_sets(items)
    pop = Popularity(popularity_counts or {}, items)
    with_watch = any(e["watch_seconds"] for e in examples)
    by_version: Dict[str, List[Mapping[str, Any]]] = collections.defaultdict(list)
    by_day: Dict[Tuple[str, str], List[Mapping[str, Any]]] = collections.defaultdict(list)
    for e in examples:
        by_version[version_label(e)].append(e)
        by_day[(version_label(e), utc_day(e["served_ts"]))].append(e)
    versions = sorted(by_version, key=lambda v: (v.rsplit("/v", 1)[0], int(v.rsplit("/v", 1)[1])))
    rows = []
    for v in versions:
        for day in sorted(d for (vv, d) in by_day if vv == v):
            rows.append(dict(version=v, day=day, **_metrics(by_day[(v, day)], genres, len(items), pop, with_watch)))
        rows.append(dict(version=v, day=ALL_DAYS, **_metrics(by_version[v], genres, len(items), pop, with_watch)))
    ctr_by_position = {v: _ctr_by_position(by_version[v]) for v in versions}
    report: Dict[str, Any] = {"rows": rows, "versions": versions, "catalogue_size": len(items),
                              "organic_events": organic_events, "ctr_by_position": ctr_by_position,
                              "popularity_source": "given" if popularity_counts is not None else "none"}
    if baseline or candidate or len(versions) == 2:
        baseline = baseline or versions[0]
        candidate = candidate or next(v for v in versions if v != baseline)
        for v in (baseline, candidate):
            if v not in by_version:
                raise DataError(f"version {v!r} is not in the logs; have {versions}")
        report["ab"] = dict(baseline=baseline, candidate=candidate,
                            **bootstrap_ctr_difference(by_version[baseline], by_version[candidate], n_boot, seed))
    return report


def _ctr_by_position(examples: Sequence[Mapping[str, Any]]) -> Dict[int, float]:
    n, c = collections.Counter(), collections.Counter()
    for e in examples:
        n[e["position"]] += 1
        c[e["position"]] += e["click"]
    return {k: c[k] / n[k] for k in sorted(n)}


# ---------------------------------------------------------------- output
COLUMNS = (Column("version", align="<"), Column("day", align="<"), Column("requests", fmt=",d"),
           Column("impressions", fmt=",d"), Column("ctr", fmt=".4f"), Column("conversion", fmt=".4f"),
           Column("watch_seconds_per_impression", "watch_s/imp", ".1f"), Column("coverage", fmt=".3f"),
           Column("diversity", fmt=".3f"), Column("popularity_share", "pop_share", ".3f"), Column("novelty", fmt=".2f"))


def format_table(report: Mapping[str, Any]) -> str:
    out = [text_table.format_table(report["rows"], COLUMNS),
           f"catalogue: {report['catalogue_size']} items; organic events (no served list): "
           f"{report['organic_events']}"]
    if report.get("ab"):
        out.append(format_ab(report["ab"]))
    return "\n".join(out)


def format_ab(ab: Mapping[str, Any]) -> str:
    """One line: the CTR difference of two versions with its bootstrap interval."""
    lo, hi = ab["interval"]
    return (f"A/B: CTR {ab['candidate']} - {ab['baseline']} = {ab['ctr_difference']:+.4f}, "
            f"{ab['level']:.0%} bootstrap interval over users [{lo:+.4f}, {hi:+.4f}] "
            f"({ab['users'][0]} vs {ab['users'][1]} users, {ab['n_boot']} resamples)"
            + (" - significant" if ab["significant"] else " - not significant"))


def plot_ctr_by_day(report: Mapping[str, Any], path: str) -> str:
    from matplotlib.figure import Figure   # not pyplot: no backend switch in the caller's process (a notebook)

    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    for v in report["versions"]:
        days = [r for r in report["rows"] if r["version"] == v and r["day"] != ALL_DAYS]
        ax.plot([r["day"] for r in days], [r["ctr"] for r in days], marker="o", label=v)
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel("CTR")
    ax.set_title("CTR per day and version")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _save(fig, path)


def plot_ctr_by_position(report: Mapping[str, Any], path: str) -> str:
    from matplotlib.figure import Figure   # not pyplot: no backend switch in the caller's process (a notebook)

    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    for v, ctr in report["ctr_by_position"].items():
        ax.plot([int(k) for k in ctr], list(ctr.values()), marker=".", label=v)
    ax.set_xlabel("position shown (1 = first)")
    ax.set_ylabel("CTR")
    ax.set_title("CTR by position (position bias)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    return fileio.write_png(fig, path, dpi=100)


def render_html(report: Mapping[str, Any], pngs: Mapping[str, str]) -> str:
    """One self-contained page: the table, the A/B line and the plots (base64 data URIs)."""
    esc = html.escape
    head = "".join(f"<th>{esc(c.header or c.key)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(text_table.format_cell(r[c.key], c.fmt))}</td>" for c in COLUMNS)
                   + "</tr>"
                   for r in report["rows"])
    summary = esc(format_table(report).splitlines()[-1]) if report.get("ab") else ""
    images = "".join(
        f'<h2>{esc(title)}</h2><img alt="{esc(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(fileio.read_bytes(path)).decode()}">' for title, path in pngs.items())
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>recsys report</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>"
            f"<h1>Online metrics</h1><p>catalogue: {report['catalogue_size']} items; organic events "
            f"(no served list): {report['organic_events']}</p><table><tr>{head}</tr>{body}</table>"
            f"<p>{summary}</p>{images}</body></html>")


def write_report(report: Mapping[str, Any], out_dir: str) -> Dict[str, str]:
    """report.json, the PNGs and report.html under ``out_dir`` (any filesystem); returns their paths."""
    import json

    fileio.makedirs(out_dir)
    paths = {"json": fileio.join(out_dir, "report.json")}
    with fileio.open_write(paths["json"]) as f:
        f.write(json.dumps(report, indent=2, sort_keys=True).encode())
    pngs = {"CTR per day and version": plot_ctr_by_day(report, fileio.join(out_dir, "ctr_by_day.png")),
            "CTR by position": plot_ctr_by_position(report, fileio.join(out_dir, "ctr_by_position.png"))}
    paths["ctr_by_day_png"], paths["ctr_by_position_png"] = pngs.values()
    paths["html"] = fileio.join(out_dir, "report.html")
    with fileio.open_write(paths["html"]) as f:
        f.write(render_html(report, pngs).encode())
    return paths


def interaction_counts(path: str) -> Dict[str, float]:
    """Events per item in a raw interactions table (preprocessing/sources/tables.py layout)."""
    from preprocessing.sources import tables

    return dict(collections.Counter(r["item_id"] for r in tables.read_interactions(path)))


def run_report(logs: Sequence[str], events: Sequence[str], items_path: str, out_dir: str, *,
               interactions_path: Optional[str] = None, baseline: Optional[str] = None,
               candidate: Optional[str] = None, estimate_bias: bool = False, n_boot: int = 2000,
               max_bad_fraction: Optional[float] = None) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Reads logs, events and the items table; writes the report (+ the events' dead letters) to ``out_dir``.

    Popularity comes from ``interactions_path`` when given, else from every valid event (organic too).
    """
    from preprocessing.sources import tables

    if not fileio.exists(items_path):
        raise DataError(f"items table not found: {items_path}")
    ev = feedback.read_events(list(events), max_bad_fraction=max_bad_fraction)
    joined = feedback.join_logs(list(logs), ev.rows, estimate_bias=estimate_bias)
    if not joined.examples:
        raise DataError(f"no served lists in the request logs {list(logs)}")
    items = tables.read_table(items_path)
    counts = (interaction_counts(interactions_path) if interactions_path
              else dict(collections.Counter(e["item_id"] for e in ev.rows)))
    report = build_report(joined.examples, items, counts, organic_events=len(joined.organic),
                          baseline=baseline, candidate=candidate, n_boot=n_boot)
    report["popularity_source"] = "interactions" if interactions_path else "events"
    report["join"] = joined.counts
    report["dead_letters"] = len(ev.dead_letters)
    paths = write_report(report, out_dir)
    if ev.dead_letters:
        paths["dead_letters"] = feedback.write_jsonl(ev.dead_letters, fileio.join(out_dir, "dead_letter",
                                                                                 "events.jsonl"))
    return report, paths
