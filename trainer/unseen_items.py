"""Which catalogue items the retrieval index holds: items the log never shows, kept or left out.

A products file often lists far more items than the interaction log ever touches (a shop's whole range
beside a few months of sales; Amazon's metadata beside a 5-core review sample). Items without a train event
share the one untrained OOV id row; with their content they get full-strength L2-normalised vectors, and
when they outnumber the sold ones they fill the top-k (a generated shop log with 20,000 unsold products:
recall@50 0.29 -> 0.06, below popularity). On MovieLens, though, items unseen in training are 15% of the
eval targets (new releases, and old films rated for the first time), and the content features find them.

So the log decides, on its own history: at the time that leaves the latest ``LATE_FRACTION`` of train
events (the cut), which items available then had no event yet, and how many of the later events did they
get, per item, against the items that had? That ratio (+1 event of smoothing) is about 0.5 on
ml-latest-small, 1.0 on the synthetic data and 2e-5 on the shop log. Below ``DROP_BELOW`` (policy
``auto``) items without train events are left out of the index and of the model's evaluation ranking; their
eval events still count, as misses. Items released at or after the cut (a known release time) are new: the
log has had no time to judge them, so they are never counted in the ratio nor left out by it.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

POLICIES = ("auto", "keep", "drop")
LATE_FRACTION = 0.1
DROP_BELOW = 0.05


def cut_time(items: np.ndarray, times: np.ndarray, late_fraction: float = LATE_FRACTION) -> Optional[float]:
    """The time that leaves the latest ``late_fraction`` of the (catalogue) train events; None without any."""
    ok = np.asarray(items) >= 0
    return float(np.quantile(np.asarray(times)[ok], 1.0 - late_fraction)) if ok.any() else None


def pickup_ratio(items: np.ndarray, times: np.ndarray, n_items: int, late_fraction: float = LATE_FRACTION,
                 release_ts: Optional[np.ndarray] = None, cut: Optional[float] = None) -> Optional[float]:
    """Per-item events after the cut (``cut_time``, unless given): items available before it without an earlier
    event over items with one (+1 event of smoothing for the former); items released at or after the cut are
    left out of both. None when the log cannot say (no late events, or every available item already had one)."""
    items, times = np.asarray(items, np.int64), np.asarray(times)
    cut = cut_time(items, times, late_fraction) if cut is None else cut
    if cut is None:
        return None
    ok = items >= 0
    early = np.bincount(items[ok & (times < cut)], minlength=n_items)
    late = np.bincount(items[ok & (times >= cut)], minlength=n_items)
    warm = early > 0
    cold = ~warm & ~released_since(release_ts, cut, n_items)
    if not warm.any() or not cold.any() or late[warm].sum() == 0:
        return None
    warm_rate = late[warm].sum() / warm.sum()
    cold_rate = (late[cold].sum() + 1.0) / cold.sum()
    return float(cold_rate / warm_rate)


def released_since(release_ts: Optional[np.ndarray], t: float, n_items: int) -> np.ndarray:
    """Items with a known release time (> 0) at or after ``t``."""
    if release_ts is None:
        return np.zeros(n_items, bool)
    r = np.asarray(release_ts, np.int64)
    return (r > 0) & (r >= t)


def servable_items(item_counts: np.ndarray, items: np.ndarray, times: np.ndarray, policy: str = "auto",
                   release_ts: Optional[np.ndarray] = None) -> Tuple[Optional[np.ndarray], Dict]:
    """(bool mask over the catalogue of the items the index holds, or None for all; what was decided and why).

    ``item_counts``: train events per catalogue item; ``items``/``times``: every train event's catalogue
    index and time (the same split); ``release_ts``: per catalogue item, 0 = unknown."""
    if policy not in POLICIES:
        raise ValueError(f"retrieval.unseen_items must be one of {POLICIES}, got {policy!r}")
    unseen = np.asarray(item_counts) == 0
    info: Dict = {"policy": policy, "unseen": int(unseen.sum())}
    if policy == "keep" or not unseen.any():
        return None, dict(info, left_out=0)
    if policy == "auto":
        cut = cut_time(items, times)
        ratio = pickup_ratio(items, times, len(unseen), release_ts=release_ts, cut=cut)
        info["pickup_ratio"] = None if ratio is None else round(ratio, 6)
        if ratio is None or ratio >= DROP_BELOW:
            return None, dict(info, left_out=0)
        new = released_since(release_ts, cut, len(unseen)) & unseen
        info["new_kept"] = int(new.sum())
        unseen &= ~new
    if unseen.all() or not unseen.any():  # nothing would be left to recommend, or nothing to leave out
        return None, dict(info, left_out=0)
    return ~unseen, dict(info, left_out=int(unseen.sum()))


def describe(info: Dict) -> str:
    """One line for the training log, or '' when nothing was left out."""
    if not info.get("left_out"):
        return ""
    why = (f"in the log's latest {LATE_FRACTION:.0%} such items got {info['pickup_ratio']:.2g}x the events of "
           f"the others (below {DROP_BELOW})" if "pickup_ratio" in info else "retrieval.unseen_items=drop")
    new = f" ({info['new_kept']:,} released since are kept)" if info.get("new_kept") else ""
    return (f"{info['left_out']:,} catalogue items have no train event and are left out of the retrieval index: "
            f"{why}{new}; retrieval.unseen_items=keep keeps them")
