"""MovieLens loaders for the three published layouts, mapped onto the project schema.

- 100K: ``u.data`` (tab: user item rating ts), ``u.item`` (pipe, 19 genre flags), ``u.user``
- 1M:   ``ratings.dat``, ``movies.dat``, ``users.dat`` ('::'-separated, latin-1)
- latest (incl. ml-latest-small): ``ratings.csv``, ``movies.csv``. ``tags.csv`` is not read: users write
  tags after watching, at any later time, so they describe items that already have history (a leak
  across the time split into the content features, and a signal a new item never has) and they
  would turn displayed titles into "Shawshank Redemption, The prison stephen king ...".

Malformed lines are never dropped silently: each becomes a dead letter (file, line
number, reason, text). Above ``max_bad_fraction`` of the ratings the load fails with
a ``DataError`` that says how many and where they were written.
"""
from __future__ import annotations

import calendar
import csv
import functools
import io
import os
import re
import sys
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from preprocessing.sources.tables import MAX_RATING, MIN_RATING, DataError, RawTables, age_bucket, \
    latest_valid_timestamp, require_few_bad
from recsys import fileio

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
ML1M_AGES = {"1": "18-24", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-54", "50": "55+", "56": "55+"}
RATINGS_CSV_HEADER = ("userId", "movieId", "rating", "timestamp")
MOVIES_CSV_HEADER = ("movieId", "title", "genres")
# the "::" files: ML-1M's are Latin-1; a line that is valid UTF-8 is read as UTF-8 (a re-encoded or later export),
# any other as Latin-1, which never fails, so an accented title is never a dead letter nor mojibake either way
DAT_ENCODING = "utf-8|latin-1"
_YEAR = re.compile(r"\((\d{4})\)\s*$")


LAYOUTS = {"100k": ("u.data", "u.item"), "1m": ("ratings.dat", "movies.dat"), "latest": ("ratings.csv", "movies.csv")}


def detect_layout(path: str) -> str:
    for layout, (marker, _) in LAYOUTS.items():
        if fileio.exists(fileio.join(path, marker)):
            return layout
    raise DataError(f"{path!r} holds no MovieLens ratings file (expected u.data, ratings.dat or ratings.csv)")


def is_movielens(path: str) -> bool:
    """A directory in one of the layouts: its ratings file beside its movies file (a bare ``ratings.csv`` may be
    anyone's log)."""
    if not fileio.isdir(path):
        return False
    try:
        layout = detect_layout(path)
    except DataError:
        return False
    return fileio.exists(fileio.join(path, LAYOUTS[layout][1]))


def _year_ts(title: str) -> Tuple[str, int]:
    """Splits 'Toy Story (1995)' into ('Toy Story', unix time of 1995-01-01)."""
    m = _YEAR.search(title)
    if not m:
        return title.strip(), 0
    return title[: m.start()].strip(), calendar.timegm((int(m.group(1)), 1, 1, 0, 0, 0))


class _Reader:
    """Reads delimited lines, collecting dead letters instead of raising on a bad line."""

    def __init__(self):
        self.dead: List[Dict] = []
        self.total = 0

    def rows(self, path: str, split: Callable[[str], List[str]], n_fields: int, header: Sequence[str] = (),
             encoding: str = "utf-8", count: bool = False) -> Iterable[Tuple[int, List[str]]]:
        """(line number, fields) of each good line. ``header``: the layout's column names; line 1 is
        skipped only when its content is that header, so a file without one keeps its first row.
        Lines that are not valid ``encoding`` are dead letters (never replacement characters);
        ``utf-8|latin-1`` reads a line as UTF-8 when it is valid UTF-8 and as Latin-1 otherwise."""
        encodings = encoding.split("|")
        with fileio.open_read(path) as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = _decode(raw, encodings)
                except UnicodeDecodeError as e:
                    self.total += count
                    self.bad(path, lineno, f"invalid {encoding} at byte {e.start}: {raw[e.start:e.start + 4]!r}",
                             raw.decode(encodings[-1], "backslashreplace").rstrip("\r\n"))
                    continue
                text = line.rstrip("\r\n")
                if not text.strip():
                    continue
                if lineno == 1 and header and _is_header(text, split, header):
                    continue
                self.total += count
                fields = split(text)
                if len(fields) != n_fields:
                    self.bad(path, lineno, f"expected {n_fields} fields, got {len(fields)}", text)
                    continue
                yield lineno, fields

    def bad(self, path: str, lineno: int, reason: str, text: str) -> None:
        self.dead.append({"file": os.path.basename(path), "line": lineno, "reason": reason, "text": text[:500]})


@functools.lru_cache(maxsize=256)
def _float(text: str) -> float:
    return float(text)


def _decode(raw: bytes, encodings: Sequence[str]) -> str:
    for enc in encodings[:-1]:
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            pass
    return raw.decode(encodings[-1])


def _is_header(text: str, split: Callable[[str], List[str]], names: Sequence[str]) -> bool:
    fields = [f.strip().lower() for f in split(text.lstrip("\ufeff"))]
    return fields == [n.lower() for n in names]


def _csv_split(text: str) -> List[str]:
    return next(csv.reader(io.StringIO(text)))


def _put_item(items: Dict[str, Dict], reader: "_Reader", path: str, line: int, fields: List[str], item: Dict) -> None:
    """``items[id] = item``; a row without an id is a dead letter (it had become an item with the id '')."""
    item_id = sys.intern(fields[0].strip())   # stripped, as the ratings' item ids are
    if not item_id:
        reader.bad(path, line, "empty movie id", "\t".join(fields))
    else:
        items[item_id] = item


def load(path: str, max_bad_fraction: float = 0.01, dead_letter_path: Optional[str] = None) -> RawTables:
    """Loads a MovieLens directory of any layout into ``RawTables``."""
    layout = detect_layout(path)
    reader = _Reader()
    items: Dict[str, Dict] = {}
    users: Dict[str, Dict] = {}
    ratings: List[Tuple[str, str, float, int, int, str]] = []   # user, item, rating, ts, lineno, file
    j = lambda *p: fileio.join(path, *p)  # noqa: E731

    if layout == "100k":
        for line, f in reader.rows(j("u.item"), lambda s: s.split("|"), 24, encoding="latin-1"):
            title, ts = _year_ts(f[1])
            genres = [g for g, flag in zip(ML100K_GENRES, f[5:]) if flag == "1"]
            _put_item(items, reader, j("u.item"), line, f, {"item_title": title, "item_genres": "|".join(genres),
                                                             "item_release_ts": ts})
        if fileio.exists(j("u.user")):
            for _, f in reader.rows(j("u.user"), lambda s: s.split("|"), 5):
                age = int(f[1]) if f[1].isdigit() else 0
                users[f[0]] = {"user_age_bucket": age_bucket(age) if age else "unknown", "user_country": "US"}
        source = (j("u.data"), lambda s: s.split("\t"), 4, (), "utf-8")
    elif layout == "1m":  # also MovieLens 10M: the same "::" files, without users.dat
        for line, f in reader.rows(j("movies.dat"), lambda s: s.split("::"), 3, encoding=DAT_ENCODING):
            title, ts = _year_ts(f[1])
            _put_item(items, reader, j("movies.dat"), line, f, {"item_title": title, "item_genres": f[2],
                                                                 "item_release_ts": ts})
        if fileio.exists(j("users.dat")):
            for _, f in reader.rows(j("users.dat"), lambda s: s.split("::"), 5, encoding=DAT_ENCODING):
                users[f[0]] = {"user_age_bucket": ML1M_AGES.get(f[2], "unknown"), "user_country": "US"}
        source = (j("ratings.dat"), lambda s: s.split("::"), 4, (), DAT_ENCODING)
    else:
        for line, f in reader.rows(j("movies.csv"), _csv_split, 3, header=MOVIES_CSV_HEADER):
            title, ts = _year_ts(f[1])
            genres = "" if f[2] == "(no genres listed)" else f[2]
            _put_item(items, reader, j("movies.csv"), line, f, {"item_title": title, "item_genres": genres,
                                                                 "item_release_ts": ts})
        source = (j("ratings.csv"), _csv_split, 4, RATINGS_CSV_HEADER, "utf-8")

    rpath, split, n, header, enc = source
    max_ts = latest_valid_timestamp()   # also bounds timestamps to int64
    for lineno, f in reader.rows(rpath, split, n, header=header, encoding=enc, count=True):
        try:
            # ids interned and ratings shared: one object per distinct value, not per line (ML-25M: 25M lines)
            user, item, rating, ts = sys.intern(f[0].strip()), sys.intern(f[1].strip()), _float(f[2]), int(f[3])
        except ValueError as e:
            reader.bad(rpath, lineno, f"unparsable value: {e}", "\t".join(f))
            continue
        if not (MIN_RATING <= rating <= MAX_RATING) or ts <= 0 or not user or not item:
            reader.bad(rpath, lineno, f"out of range: rating={rating} (scale {MIN_RATING}..{MAX_RATING}) "
                                      f"timestamp={ts}", "\t".join(f))
        elif ts > max_ts:
            reader.bad(rpath, lineno, f"timestamp {ts} is in the future (after {max_ts})", "\t".join(f))
        elif item not in items:
            reader.bad(rpath, lineno, f"unknown item id {item!r} (not in the movies file)", "\t".join(f))
        else:
            ratings.append((user, item, rating, ts))

    bad_ratings = sum(1 for d in reader.dead if d["file"] == os.path.basename(rpath))
    require_few_bad(bad_ratings, reader.total, f"rating lines in {rpath}", reader.dead, max_bad_fraction,
                    dead_letter_path)
    if not ratings:
        raise DataError(f"no usable ratings in {rpath}")

    ratings.sort(key=lambda r: (r[3], r[0], r[1]))
    inter = {
        "user_id": [r[0] for r in ratings], "item_id": [r[1] for r in ratings],
        "timestamp": [r[3] for r in ratings], "rating": [r[2] for r in ratings],
        "click": [1.0 if r[2] >= 4.0 else 0.0 for r in ratings], "device": ["unknown"] * len(ratings),
    }
    item_ids = sorted(items, key=lambda s: (len(s), s))
    item_table = {
        "item_id": item_ids,
        "item_title": [items[i]["item_title"] for i in item_ids],
        "item_genres": [items[i]["item_genres"] for i in item_ids],
        "item_price": [0.0] * len(item_ids),
        "item_release_ts": [items[i]["item_release_ts"] for i in item_ids],
    }
    user_ids = sorted(set(inter["user_id"]), key=lambda s: (len(s), s))
    user_table = {
        "user_id": user_ids,
        "user_age_bucket": [users.get(u, {}).get("user_age_bucket", "unknown") for u in user_ids],
        "user_country": [users.get(u, {}).get("user_country", "unknown") for u in user_ids],
        "user_signup_ts": [0] * len(user_ids),
    }
    return RawTables(users=user_table, items=item_table, interactions=inter, dead_letters=reader.dead)

