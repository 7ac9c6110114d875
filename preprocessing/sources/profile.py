"""A profile of the raw tables at ingest, and the problems in them that quietly spoil a recommender.

What TensorFlow Data Validation's statistics would show a team first about its log (size, sparsity, how
skewed activity and popularity are, the time span, ratings, how much content the catalogue has), computed
from the columnar tables in memory, written beside them as ``statistics.json`` (and ``statistics.png``), so
each raw artifact carries its own description. ``problems`` names, one line each, what trains or evaluates
wrongly without failing: double-logged events, one account with a large share of the log (a bot or a shared
login), a log whose events mostly share one timestamp (import time, not event time: the time split and the
sequence models read no order), most users with a single event, one rating value everywhere.
"""
from __future__ import annotations

import datetime
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from preprocessing.sources.tables import RawTables

STATISTICS_FILE, PLOT_FILE = "statistics.json", "statistics.png"
DAY = 86400
# what makes a problem worth a line (shares of the events or users)
DUPLICATE_SHARE = 0.01       # events repeating an earlier one exactly (user, item, time)
TOP_USER_SHARE = 0.10        # one user's share of all events, and 10x an average user's (heavy real users: 3-6%)
SAME_SECOND_SHARE = 0.2      # events whose timestamp is shared with 100+ others
SINGLE_EVENT_USERS = 0.5     # users with one event
UNKNOWN_ITEM_SHARE = 0.2     # new (feedback) events naming items the catalogue lacks
STALE_SHARE = 0.5            # new events older than the data they are appended to


def _codes(values: Sequence[Any]) -> np.ndarray:
    """Dense integer codes in order of first appearance (a dict pass: fast on interned id strings)."""
    index: Dict[Any, int] = {}
    return np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, len(values))


def _quantiles(x: np.ndarray) -> Dict[str, float]:
    q = np.percentile(x, [10, 50, 90, 99]) if x.size else [0.0] * 4
    return {"min": int(x.min()) if x.size else 0, "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]),
            "p99": float(q[3]), "max": int(x.max()) if x.size else 0, "mean": float(x.mean()) if x.size else 0.0}


def _gini(counts: np.ndarray) -> float:
    """0 = every item equally popular, 1 = one item has every event."""
    x = np.sort(counts.astype(np.float64))
    n = x.size
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum())) if n and x.sum() else 0.0


def profile(tables) -> Dict[str, Any]:
    """Statistics of ``tables`` (``RawTables``): counts, distributions and shares, JSON-ready."""
    inter = tables.interactions
    n = len(inter["user_id"])
    users, items = _codes(inter["user_id"]), _codes(inter["item_id"])
    ts = np.asarray(inter["timestamp"], np.int64)
    n_users, n_items = int(users.max(initial=-1) + 1), int(items.max(initial=-1) + 1)
    per_user, per_item = np.bincount(users, minlength=n_users), np.bincount(items, minlength=n_items)
    pair = users * max(n_items, 1) + items
    order = np.lexsort((ts, pair))
    same_pair = pair[order][1:] == pair[order][:-1]
    duplicates = int(np.count_nonzero(same_pair & (ts[order][1:] == ts[order][:-1])))
    unique_pairs = n - int(np.count_nonzero(same_pair))
    _, at_second = np.unique(ts, return_counts=True)
    top_items = np.sort(per_item)[::-1]
    top1 = max(1, n_items // 100)
    top_user = int(np.argmax(per_user)) if n_users else 0
    out: Dict[str, Any] = {
        "events": n, "users": n_users, "items_in_log": n_items,
        "density": unique_pairs / max(n_users * n_items, 1),
        "events_per_user": _quantiles(per_user), "events_per_item": _quantiles(per_item),
        "users_with_one_event": float(np.mean(per_user == 1)) if n_users else 0.0,
        "items_with_one_event": float(np.mean(per_item == 1)) if n_items else 0.0,
        "item_popularity_gini": _gini(per_item),
        "top_1pct_items_event_share": float(top_items[:top1].sum() / max(n, 1)),
        "top_user": {"user_id": str(inter["user_id"][int(np.flatnonzero(users == top_user)[0])]) if n else "",
                     "event_share": float(per_user[top_user] / max(n, 1)) if n_users else 0.0},
        "repeat_events": n - unique_pairs, "exact_duplicates": duplicates,
        "time": {"first": int(ts.min()) if n else 0, "last": int(ts.max()) if n else 0,
                 "span_days": float((ts.max() - ts.min()) / DAY) if n else 0.0,
                 "distinct_seconds": int(at_second.size),
                 "events_sharing_a_second_with_100_plus": float(at_second[at_second > 100].sum() / max(n, 1))},
    }
    rating = np.asarray(inter.get("rating", [0.0] * n), np.float64)
    rated = rating[rating > 0]
    values, counts = np.unique(rated, return_counts=True)
    out["ratings"] = {"rated_share": float(rated.size / max(n, 1)), "mean": float(rated.mean()) if rated.size else None,
                      "histogram": {f"{v:g}": int(c) for v, c in zip(values, counts)}}
    out["histograms"] = _histograms(per_user, per_item, ts)
    click = np.asarray(inter.get("click", [0.0] * n), np.float64)
    out["click_share"] = float(click.mean()) if n else 0.0
    it = tables.items
    n_cat = len(it["item_id"])
    has = lambda col, ok: float(np.mean([ok(v) for v in it.get(col, [])])) if n_cat and col in it else 0.0  # noqa: E731
    out["catalogue"] = {"items": n_cat, "never_in_log": max(n_cat - n_items, 0),
                        "with_title": has("item_title", bool), "with_genres": has("item_genres", bool),
                        "with_price": has("item_price", lambda v: v > 0),
                        "with_release": has("item_release_ts", lambda v: v > 0)}
    return out


def _histograms(per_user: np.ndarray, per_item: np.ndarray, ts: np.ndarray) -> Dict[str, Dict[str, list]]:
    """What the picture draws, kept in the statistics (as TFDV keeps histograms): users by activity in log-spaced
    bins, the popularity curve at up to 200 log-spaced ranks, events over time in up to 60 bins."""
    edges = np.unique(np.geomspace(1, max(per_user.max(initial=1), 2), 40).astype(np.int64))
    activity, _ = np.histogram(per_user, bins=edges)
    curve = np.sort(per_item)[::-1]
    ranks = np.unique(np.geomspace(1, max(curve.size, 1), 200).astype(np.int64))
    out = {"events_per_user": {"edges": edges.tolist(), "users": activity.tolist()},
           "popularity": {"rank": ranks.tolist(), "events": curve[ranks - 1].tolist() if curve.size else []},
           "events_over_time": {"edges": [], "events": []}}
    if ts.size:
        counts, t_edges = np.histogram(ts, bins=min(60, max(int((ts.max() - ts.min()) // DAY) + 1, 1)))
        out["events_over_time"] = {"edges": t_edges.tolist(), "events": counts.tolist()}
    return out


def problems(p: Dict[str, Any], whole_log: bool = True) -> List[str]:
    """One line per quiet problem in profile ``p``: what it is, what it does to the models, what to do.
    ``whole_log=False`` (a new slice, such as a round's feedback) leaves out what a short slice has by nature:
    users with one event, and a single rating value among a few ratings."""
    out = []
    n = max(p["events"], 1)
    if p["exact_duplicates"] / n > DUPLICATE_SHARE:
        out.append(f"{p['exact_duplicates']:,} events ({p['exact_duplicates'] / n:.1%}) repeat an earlier one exactly "
                   f"(same user, item and time): double logging? A copy in the same second is not in the first one's "
                   f"history, so it trains and counts again (popularity, co-visitation); dedupe upstream")
    top = p["top_user"]
    if p["users"] > 20 and top["event_share"] > max(TOP_USER_SHARE, 10.0 / p["users"]):
        out.append(f"user {top['user_id']!r} has {top['event_share']:.1%} of all events (a bot, a test account or a "
                   f"shared login?): one account this heavy steers the popularity baseline and the in-batch negatives")
    shared = p["time"]["events_sharing_a_second_with_100_plus"]
    if shared > SAME_SECOND_SHARE:
        out.append(f"{shared:.0%} of events share their second with 100+ others: times look like import or batch "
                   f"times, not when users acted; the time split and sequence models then see no order")
    if not whole_log:
        return out
    if p["users"] > 20 and p["users_with_one_event"] > SINGLE_EVENT_USERS:
        out.append(f"{p['users_with_one_event']:.0%} of users have one event: they have no history to learn from "
                   f"or to be evaluated on; their events still train the item side")
    hist = p["ratings"]["histogram"]
    if p["ratings"]["rated_share"] > 0 and len(hist) == 1:
        out.append(f"every rating is {next(iter(hist))}: a constant carries no preference; leave the rating column "
                   f"out (data.columns) to read the log as implicit")
    return out


def new_events(rows: Sequence[Mapping[str, Any]], catalogue: Collection[str],
               last_ts: Optional[int] = None) -> Tuple[Dict[str, Any], List[str]]:
    """The profile of events about to be appended to a raw table (a continuous-training round's feedback) and
    their problems: those of any log that a short slice can show, plus two that only a new slice has (as TFX's
    ExampleValidator compares a new span with the last): items the catalogue lacks (an id format changed between
    the request log or the events and the catalogue) and events older than ``last_ts``, the latest event already
    there (logs sent twice)."""
    cols = ("user_id", "item_id", "timestamp", "rating", "click")
    tables = RawTables(users={"user_id": []}, items={"item_id": []},
                       interactions={c: [r.get(c, 0.0) for r in rows] for c in cols})
    stats = profile(tables) if rows else {"events": 0}
    stats.pop("catalogue", None)   # the slice has no catalogue of its own: ``catalogue`` is the joined data's
    lines = problems(stats, whole_log=False) if rows else []
    unknown = [r["item_id"] for r in rows if r["item_id"] not in catalogue]
    if rows and len(unknown) / len(rows) > UNKNOWN_ITEM_SHARE:
        lines.append(f"{len(unknown) / len(rows):.0%} of the new events name items the catalogue does not have (e.g. "
                     f"{unknown[0]!r}): a changed id format between the request log or events and the catalogue?")
    if rows and last_ts is not None:
        stale = sum(int(r["timestamp"]) < last_ts for r in rows) / len(rows)
        if stale > STALE_SHARE:
            when = datetime.datetime.fromtimestamp(last_ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
            lines.append(f"{stale:.0%} of the new events are older than the latest event already there ({when} UTC): "
                         f"logs sent twice, or events from an earlier period?")
    stats["unknown_item_share"] = len(unknown) / len(rows) if rows else 0.0
    return stats, lines


def last_event_time(raw_dir: str) -> Optional[int]:
    """The latest event in a raw artifact, from its statistics (ingest's, or the newest feedback's); None when it
    has none (an artifact written before statistics were)."""
    from recsys import fileio

    times = []
    for name in (STATISTICS_FILE, f"feedback/{STATISTICS_FILE}"):
        path = fileio.join(raw_dir, name)
        if fileio.exists(path):
            stats = fileio.read_json(path)
            times += [stats.get("time", {}).get("last"), stats.get("appended_to_last_ts")]
    times = [t for t in times if t]
    return max(times) if times else None


def summary(p: Dict[str, Any]) -> str:
    """One line: the shape of the log."""
    day = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")  # noqa: E731
    r = p["ratings"]
    ratings = (f"ratings on {r['rated_share']:.0%} of events (mean {r['mean']:.2f})" if r["rated_share"]
               else "no ratings (implicit)")
    return (f"{p['users']:,} users x {p['items_in_log']:,} items, density {p['density']:.2%}; events per user median "
            f"{p['events_per_user']['median']:g} (p90 {p['events_per_user']['p90']:g}); top 1% of items have "
            f"{p['top_1pct_items_event_share']:.0%} of events; {day(p['time']['first'])} .. {day(p['time']['last'])}; "
            f"{ratings}")


def plot(p: Dict[str, Any], path: str) -> str:
    """statistics.png from the statistics ``p``: activity per user, the popularity curve, events over time, ratings
    (or engagement)."""
    from matplotlib.figure import Figure   # not pyplot: no backend switch, no global figure (a notebook keeps its own)

    from recsys import fileio

    h = p["histograms"]
    fig = Figure(figsize=(10, 7))
    ax = fig.subplots(2, 2)
    act = h["events_per_user"]
    ax[0, 0].stairs(act["users"], act["edges"], fill=True)
    ax[0, 0].set(xscale="log", yscale="log", xlabel="events per user", ylabel="users", title="Activity")
    pop = h["popularity"]
    ax[0, 1].loglog(pop["rank"], np.maximum(pop["events"], 1))
    ax[0, 1].set(xlabel="item rank", ylabel="events", title=f"Popularity (Gini {p['item_popularity_gini']:.2f})")
    over = h["events_over_time"]
    if over["events"]:
        edges = over["edges"]
        ax[1, 0].bar([datetime.datetime.fromtimestamp(e, datetime.timezone.utc) for e in edges[:-1]], over["events"],
                     width=(edges[1] - edges[0]) / DAY, align="edge")
        ax[1, 0].tick_params(axis="x", labelrotation=30)
    ax[1, 0].set(ylabel="events", title="Events over time (UTC)")
    hist = p["ratings"]["histogram"]
    if hist:
        ax[1, 1].bar(list(hist), list(hist.values()))
        ax[1, 1].set(xlabel="rating", ylabel="events", title=f"Ratings ({p['ratings']['rated_share']:.0%} rated)")
    else:
        ax[1, 1].bar(["engaged", "other"], [p["click_share"], 1 - p["click_share"]])
        ax[1, 1].set(ylabel="share of events", title="Engagement (no ratings)")
    fig.suptitle(f"{p['events']:,} events, {p['users']:,} users, {p['items_in_log']:,} items", fontsize=11)
    fig.tight_layout()
    return fileio.write_png(fig, path, dpi=90)
