"""What users did with what they were shown: the events table, position bias, and the
join of events with the request log into training examples (the feedback loop's raw layer).

Events are JSON Lines (``.jsonl`` or ``.jsonl.gz``), one event a line::

    {"request_id": "9f2c...", "user_id": "u7", "item_id": "i42", "event": "watch",
     "value": 312.0, "timestamp": 1700000000}

``event`` is one of click | watch | rating | purchase; ``value`` is 1 for a click (may be
omitted), watch seconds for a watch, the rating (0.5..5) for a rating, the amount (>= 0, may be
omitted) for a purchase. ``request_id`` is the ``x-request-id`` of the request whose response
showed the item; events without one (search, browsing) are *organic*. Bad rows become dead
letters ``{"reason": ..., "text": ...}`` with a one-line reason, as for the other raw tables
(preprocessing/sources/tables.py, whose parsing and limits this module reuses).

Why here (preprocessing) and not in trainer: like the interactions table, events are raw input
that is validated, dead-lettered and turned into training rows before any model sees them; the
join reads the request log through contracts/prediction_log.py's reader (a data dependency on the log
format, not on the server), and nothing here imports the CLI.

The join keys an event to the served list by (request id, item id) -- and the user when the
request was a batch -- so the example keeps the served model's name (the candidate source, e.g.
retrieval vs recommend), its version and the position shown (rank, 1 = first). Every shown item
becomes one example (unclicked impressions are the negatives), weighted by the inverse of its
position's click propensity (``PositionBias``), clipped.

Two propensities, two meanings: ``propensity`` is the position's examination propensity (position
bias, for the IPS weight ``ipw``); ``policy_propensity`` is P(this item at this position) under the
policy that chose the list, read from the logged response when the model returned one (the recommend
model's ``explore`` signature returns ``propensities`` and ``greedy_item_ids``), else None. With the
greedy item at each position (``greedy_item_id``), off-policy evaluation (recsys/off_policy.py)
estimates the greedy policy's CTR from exploring logs.
"""
from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from preprocessing.sources import tables
from recsys import fileio

EVENT_TYPES = ("click", "watch", "rating", "purchase")
MAX_REQUEST_ID_CHARS = 128        # as serving/request_logging.py accepts in x-request-id
MAX_WATCH_SECONDS = 86400.0       # one event watching for more than a day is a broken player, not a user
EVENT_FIELDS = ("request_id", "user_id", "item_id", "event", "value", "timestamp")


# ---------------------------------------------------------------- the events table
def validate_event(row: Any, max_timestamp: Optional[int] = None) -> Optional[str]:
    """Why ``row`` (a parsed JSON value) is not a usable event, in one line; None when it is."""
    if not isinstance(row, dict):
        return "not a JSON object"
    for name in ("user_id", "item_id", "event"):
        value = row.get(name)
        if value is None:
            return f"missing field {name!r}"
        if not isinstance(value, str):
            return f"field {name!r} has type {type(value).__name__}, expected string"
        if not value:
            return f"empty {name}"
    if row["event"] not in EVENT_TYPES:
        return f"field 'event' = {row['event'][:40]!r} is not one of {'|'.join(EVENT_TYPES)}"
    rid = row.get("request_id")
    if rid is not None:
        if not isinstance(rid, str):
            return f"field 'request_id' has type {type(rid).__name__}, expected string or null"
        if len(rid) > MAX_REQUEST_ID_CHARS or not all("!" <= c <= "~" for c in rid):
            return f"field 'request_id' must be 1-{MAX_REQUEST_ID_CHARS} printable ASCII characters without spaces"
    ts = row.get("timestamp")
    if ts is None:
        return "missing field 'timestamp'"
    if isinstance(ts, bool) or not isinstance(ts, int):
        return f"field 'timestamp' has type {type(ts).__name__}, expected int64"
    limit = tables.latest_valid_timestamp() if max_timestamp is None else max_timestamp
    if ts < 1:
        return f"field 'timestamp' = {ts} is not a positive unix time"
    if ts > limit:
        return f"timestamp {ts} is in the future (after {limit})"
    value = row.get("value")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"field 'value' has type {type(value).__name__}, expected a number"
        if not math.isfinite(value):
            return f"field 'value' is {value} (not a finite number)"
    kind = row["event"]
    if kind == "click" and value is not None and value != 1:
        return f"click value must be 1 or omitted, got {value}"
    if kind == "watch":
        if value is None:
            return "watch event without 'value' (watch seconds)"
        if not 0 <= value <= MAX_WATCH_SECONDS:
            return f"watch seconds {value} outside [0, {MAX_WATCH_SECONDS:.0f}]"
    if kind == "rating":
        if value is None:
            return "rating event without 'value'"
        if not tables.MIN_RATING <= value <= tables.MAX_RATING:
            return f"rating {value} outside [{tables.MIN_RATING}, {tables.MAX_RATING}]"
    if kind == "purchase" and value is not None and value < 0:
        return f"purchase amount {value} is negative"
    return None


def normalize_event(row: Dict[str, Any]) -> Dict[str, Any]:
    """A valid row with every field present: empty request_id -> None, click/purchase value defaults."""
    value = row.get("value")
    if value is None:
        value = 1.0 if row["event"] == "click" else 0.0
    return {"request_id": row.get("request_id") or None, "user_id": row["user_id"], "item_id": row["item_id"],
            "event": row["event"], "value": float(value), "timestamp": int(row["timestamp"])}


@dataclasses.dataclass
class Events:
    rows: List[Dict[str, Any]]
    dead_letters: List[Dict[str, str]]

    @property
    def bad_fraction(self) -> float:
        total = len(self.rows) + len(self.dead_letters)
        return len(self.dead_letters) / total if total else 0.0


def _lines(path: str) -> Iterable[bytes]:
    with fileio.open_read(path) as raw:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield from f
        else:
            yield from raw


def parse_events(lines: Iterable[Union[bytes, str]], max_timestamp: Optional[int] = None) -> Events:
    """Valid, normalized events and dead letters ({"reason", "text"}) for bad lines; blank lines are skipped."""
    limit = tables.latest_valid_timestamp() if max_timestamp is None else max_timestamp
    rows, dead = [], []
    for line in lines:
        if not (line.strip() if isinstance(line, (bytes, str)) else line):
            continue
        row, why = tables.parse_json_line(line)
        if why is None:
            why = validate_event(row, limit)
        if why is None:
            rows.append(normalize_event(row))
        else:
            dead.append({"reason": why, "text": tables.printable(line.rstrip(b"\n" if isinstance(line, bytes) else "\n"))})
    return Events(rows, dead)


def read_events(paths: Union[str, Sequence[str]], max_timestamp: Optional[int] = None,
                max_bad_fraction: Optional[float] = None) -> Events:
    """Events of one or more files (any filesystem; ``.gz`` is gunzipped).

    With ``max_bad_fraction``, more bad rows than that raises DataError (as preprocessing does),
    naming the first reason, instead of training on a mostly broken table.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    for p in paths:
        if not fileio.exists(p):
            raise tables.DataError(f"events file not found: {p}")
    events = parse_events((line for p in paths for line in _lines(p)), max_timestamp)
    if max_bad_fraction is not None and events.bad_fraction > max_bad_fraction:
        raise tables.DataError(f"{len(events.dead_letters)} of {len(events.rows) + len(events.dead_letters)} event "
                               f"rows are malformed (more than {max_bad_fraction:.1%}); first: "
                               f"{events.dead_letters[0]['reason']}")
    return events


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str) -> str:
    with fileio.open_write(path) as f:
        for row in rows:
            f.write((json.dumps(row, sort_keys=True) + "\n").encode())
    return path


# ---------------------------------------------------------------- position bias
@dataclasses.dataclass
class PositionBias:
    """Click propensity per position (rank 1 = 1.0), and the clipped inverse-propensity weight.

    ``propensity[k-1]`` is P(examined | shown at rank k) relative to rank 1. ``source`` says where
    each value came from: "swaps" (estimated from items shown at several positions) or "prior"
    (the power law ``(1/k) ** eta`` -- Joachims et al. 2017 measured eta ~= 1 on search results).
    """

    propensity: List[float]
    source: List[str]
    max_weight: float = 10.0   # clipping: no example counts more than this many (bounds IPS variance)
    eta: float = 1.0

    def of(self, rank: int) -> float:
        if rank <= len(self.propensity):
            return self.propensity[rank - 1]
        return power_law(rank, self.eta)

    def weight(self, rank: int) -> float:
        return min(1.0 / max(self.of(rank), 1e-12), self.max_weight)

    def to_json(self) -> Dict[str, Any]:
        return {"propensity": self.propensity, "source": self.source, "max_weight": self.max_weight, "eta": self.eta}


def power_law(rank: int, eta: float = 1.0) -> float:
    return float(rank) ** -eta


def prior_bias(max_rank: int, eta: float = 1.0, max_weight: float = 10.0) -> PositionBias:
    return PositionBias([power_law(k, eta) for k in range(1, max_rank + 1)], ["prior"] * max_rank, max_weight, eta)


def estimate_position_bias(impressions: Iterable[Mapping[str, Any]], max_rank: int, *, eta: float = 1.0,
                           max_weight: float = 10.0, min_clicks: int = 20) -> PositionBias:
    """Propensities from items shown at rank 1 and at rank k (intervention harvesting).

    ``impressions``: rows with ``item_id``, ``rank`` and ``click`` (0/1). For each rank k, items seen
    both at rank 1 and at rank k give  p_k / p_1 = sum_i c_k(i) n_1(i)/(n_1(i)+n_k(i)) /
    sum_i c_1(i) n_k(i)/(n_1(i)+n_k(i))  (each item's CTRs at the two ranks, weighted by the
    harmonic mean of its impression counts). Unbiased when the position an item lands at is
    random, as in randomised top-k swaps; with items moved by different models/users it is only
    as good as those groups are comparable -- pass the swapped lists only when you have them.
    A rank with fewer than ``min_clicks`` clicks in either sum keeps the power-law prior.
    Estimates are clipped to [1/max_weight, 1].
    """
    n = collections.defaultdict(lambda: collections.Counter())   # item -> rank -> impressions
    c = collections.defaultdict(lambda: collections.Counter())   # item -> rank -> clicks
    for row in impressions:
        k = int(row["rank"])
        if 1 <= k <= max_rank:
            n[row["item_id"]][k] += 1
            c[row["item_id"]][k] += float(row["click"])
    bias = prior_bias(max_rank, eta, max_weight)
    for k in range(2, max_rank + 1):
        num = den = 0.0
        clicks_k = clicks_1 = 0.0
        for item, counts in n.items():
            n1, nk = counts.get(1, 0), counts.get(k, 0)
            if not n1 or not nk:
                continue
            num += c[item][k] * n1 / (n1 + nk)
            den += c[item][1] * nk / (n1 + nk)
            clicks_k += c[item][k]
            clicks_1 += c[item][1]
        if den > 0 and min(clicks_k, clicks_1) >= min_clicks:
            bias.propensity[k - 1] = min(1.0, max(num / den, 1.0 / max_weight))
            bias.source[k - 1] = "swaps"
    return bias


# ---------------------------------------------------------------- the join
LABELS = ("click", "watch_seconds", "rating", "purchase")


@dataclasses.dataclass
class Joined:
    examples: List[Dict[str, Any]]   # one per shown item, with labels and the IPS weight
    organic: List[Dict[str, Any]]    # events that match no served list, each with its reason
    counts: Dict[str, int]

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.counts.items())


def _empty_labels() -> Dict[str, Any]:
    return {"click": 0, "watch_seconds": 0.0, "rating": 0.0, "purchase": 0, "purchase_value": 0.0,
            "events": 0, "first_event_ts": 0}


def _apply(labels: Dict[str, Any], event: Mapping[str, Any]) -> None:
    kind, value = event["event"], event["value"]
    if kind == "click":
        labels["click"] = 1
    elif kind == "watch":
        labels["watch_seconds"] += value
    elif kind == "rating":
        if event["timestamp"] >= labels.get("_rating_ts", -1):  # the latest rating wins
            labels["rating"], labels["_rating_ts"] = value, event["timestamp"]
    elif kind == "purchase":
        labels["purchase"] = 1
        labels["purchase_value"] += value
    labels["events"] += 1
    ts = event["timestamp"]
    labels["first_event_ts"] = ts if not labels["first_event_ts"] else min(ts, labels["first_event_ts"])


def join(served_rows: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]],
         bias: Optional[PositionBias] = None) -> Joined:
    """Training examples from served items (contracts/prediction_log.served_item_rows) and events.

    An event joins the shown item with the same request id and item id (and the same user,
    when the logged request had one). Events with no request id, whose request is not in the
    log (not sampled, or in logs not read), or whose item was not in that response, are
    returned as ``organic`` with the reason, and counted -- never dropped.
    """
    examples: List[Dict[str, Any]] = []
    index: Dict[Tuple[str, str], List[Dict[str, Any]]] = collections.defaultdict(list)
    requests = set()
    for row in served_rows:
        ex = {"request_id": row["request_id"], "example": row.get("example", 0), "user_id": row.get("user_id"),
              "item_id": row["item_id"], "model_name": row["model_name"], "model_version": int(row["version"]),
              "position": int(row["rank"]), "served_ts": float(row["timestamp"]), "score": row.get("score"),
              "policy_propensity": row.get("policy_propensity"), "greedy_item_id": row.get("greedy_item_id")}
        ex.update(_empty_labels())
        examples.append(ex)
        if row["request_id"]:
            index[(row["request_id"], row["item_id"])].append(ex)
            requests.add(row["request_id"])
    organic: List[Dict[str, Any]] = []
    reasons: collections.Counter = collections.Counter()
    matched = 0
    for event in events:
        rid = event.get("request_id")
        why = None
        if not rid:
            why = "no request_id"
        elif rid not in requests:
            why = "request not in the request log (not sampled, or its log was not read)"
        else:
            hits = [e for e in index.get((rid, event["item_id"]), ()) if e["user_id"] in (None, event["user_id"])]
            if not hits:
                why = "item not in that request's served list for this user"
            else:
                _apply(hits[0], event)
                matched += 1
        if why:
            reasons[why] += 1
            organic.append(dict(event, reason=why))
    max_rank = max((e["position"] for e in examples), default=0)
    bias = bias or prior_bias(max_rank)
    for ex in examples:
        ex.pop("_rating_ts", None)
        ex["propensity"] = bias.of(ex["position"])
        ex["ipw"] = bias.weight(ex["position"])
    counts = {"impressions": len(examples), "requests": len({(e["request_id"], e["example"]) for e in examples}),
              "events_joined": matched, "organic_events": len(organic),
              "clicked_impressions": sum(e["click"] for e in examples),
              "with_policy_propensity": sum(e["policy_propensity"] is not None for e in examples)}
    for why, n in sorted(reasons.items()):
        counts["organic: " + why] = n
    return Joined(examples, organic, counts)


def join_logs(log_prefixes: Union[str, Sequence[str]], events: Iterable[Mapping[str, Any]],
              bias: Optional[PositionBias] = None, estimate_bias: bool = False, **reader_kwargs) -> Joined:
    """``join`` over request-log files (each a TF Serving ``filename_prefix`` or a .tfrecord path).

    With ``estimate_bias``, propensities come from ``estimate_position_bias`` on the joined clicks
    (ranks lacking evidence keep the prior); otherwise the given ``bias`` or the power-law prior.
    """
    from contracts import prediction_log  # TensorFlow + TF Serving protos: only when logs are read

    prefixes = [log_prefixes] if isinstance(log_prefixes, str) else list(log_prefixes)
    rows = [with_policy(r) for p in prefixes
            for r in prediction_log.served_item_rows(p, extra_outputs=POLICY_OUTPUTS, **reader_kwargs)]
    events = list(events)
    joined = join(rows, events, bias)
    if estimate_bias:
        max_rank = max((e["position"] for e in joined.examples), default=0)
        joined = join(rows, events, estimate_position_bias(joined.examples, max_rank))
    return joined


POLICY_OUTPUTS = ("propensities", "greedy_item_ids")  # the explore signature's outputs the join keeps


def with_policy(row: Dict[str, Any]) -> Dict[str, Any]:
    """A served row with the logged policy's ``policy_propensity`` and ``greedy_item_id`` (None when the
    response had none) in place of the raw ``POLICY_OUTPUTS`` columns."""
    row = dict(row)
    prop, greedy = row.pop("propensities", None), row.pop("greedy_item_ids", None)
    return dict(row, policy_propensity=None if prop is None else float(prop),
                greedy_item_id=None if greedy is None else str(greedy))


# ---------------------------------------------------------------- feedback -> new raw interactions
def as_interactions(joined: Joined) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """New rows for the raw interactions table: every shown item the user engaged with (click, watch,
    rating or purchase), at the time of the first event, and every organic event (a user's action too).

    Unclicked impressions are not interactions (they stay in the joined examples, with their position and
    propensity, for position-aware training); a shown item whose logged request had no user id cannot
    be attributed and is counted, not guessed.
    """
    rows: List[Dict[str, Any]] = []
    counts = {"from_served": 0, "organic": 0, "unattributed": 0}
    for ex in joined.examples:
        if not (ex["click"] or ex["watch_seconds"] > 0 or ex["rating"] > 0 or ex["purchase"]):
            continue
        if not ex.get("user_id"):
            counts["unattributed"] += 1
            continue
        rows.append({"user_id": ex["user_id"], "item_id": ex["item_id"], "timestamp": int(ex["first_event_ts"]),
                     "rating": float(ex["rating"]), "click": 1.0})
        counts["from_served"] += 1
    for ev in joined.organic:
        rows.append({"user_id": ev["user_id"], "item_id": ev["item_id"], "timestamp": int(ev["timestamp"]),
                     "rating": float(ev["value"]) if ev["event"] == "rating" else 0.0, "click": 1.0})
        counts["organic"] += 1
    return rows, counts
