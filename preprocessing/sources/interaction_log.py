"""A team's own interaction log (CSV, TSV or JSON lines, optionally gzipped, or Parquet) mapped onto the project schema.

``data.path`` is one interactions file, or a directory holding ``interactions.csv`` (or ``events``,
``ratings``, ``reviews``, ``transactions``; ``.tsv``, ``.jsonl``, ``.gz``, ``.parquet`` too) and optionally an items
file (``items.csv``, ``products``, ``articles``, ...: ``ITEMS_NAMES``) and a users file (``users``,
``customers``, ...: ``USERS_NAMES``). Columns are found by their header names (case-insensitive, with
the usual aliases: ``userId``, ``customer_id``, ``product_id``, ``event_time``...; see ``ALIASES``) or
named with ``data.columns`` ("user_id=customer,item_id=sku"); a file without a header line takes
``data.header``, or, when its first row reads as ``user, item, rating, time`` or ``user, item, time``
(Amazon's ratings-only files, MovieLens' u.data), those names, said in one line (``guess_header``).
The delimiter is whatever the header line is split by (comma, tab, semicolon or pipe).
JSON lines (one object a line, as Amazon, Yelp and Goodreads publish them) read like a CSV whose header
is the first object's keys; nested lists (Amazon's categories) are joined. A ``.json`` file holding one
array of objects (API and database exports) reads the same way, whole. Parquet (a file, or a directory
of part files as Spark and BigQuery exports write them) reads by column name the same way, its typed columns
turned into the text a CSV would hold: timestamps and dates as times, lists joined, nulls and NaN empty.

- Required: user id, item id and event time: unix seconds, milliseconds or microseconds, ISO 8601
  ("2024-03-01", "2024-03-01T12:30:00Z", "2024-03-01 12:30:00+02:00"; no zone means UTC; a trailing
  "UTC" as BigQuery exports write it), a compact date ("20240301"), RFC 2822, or one of the unambiguous
  ``TIME_FORMATS`` ("Mar 1, 2024"; day/month order is never guessed: ``data.time_format`` gives any other).
- Optional: rating (rescaled from ``data.rating_max`` to the schema's 0.5..5; 0 or empty = none; ``4,5`` = 4.5), click
  (0/1, true/false), device. Without a rating the log is implicit: every event is an engagement.
- Event type (``event``, ``event_type``, ``behavior_type``, ...: Retailrocket, REES46, Taobao, GA4 exports):
  impressions and removals (``NOT_INTERACTIONS``) are left out; purchases, carts and favourites
  (``STRONG_EVENTS``) get click = 1 and every other type (views) click = 0, so retrieval learns from all
  interactions and ``ranking.engagement_label=click`` from the strong ones. ``data.event_types`` keeps only
  the types it lists.
- Items (keyed by the item id column, or a bare ``id``): title, genres (separated by ``|``, ``,`` or
  ``;``), price, release (a year, unix time or date). Items the log names but the items file does not are
  kept with empty content, as production catalogues lag their logs. Users: age (years, or a bucket
  name), country.

Text is UTF-8 (a field that is not valid UTF-8 is read as Latin-1, so it is never mojibake of a
valid file, never a crash), or UTF-16 with a byte-order mark (Excel's "Unicode text"). Malformed rows
become dead letters (file, line, reason, text); above ``max_bad_fraction`` of the interactions the load
fails with a ``DataError`` that says where.
Repeated (user, item) events are kept: evaluation leaves re-consumption out on its own.
"""
from __future__ import annotations

import calendar
import csv
import datetime
import functools
import gzip
import io
import itertools
import json
import os
import re
import sys
import zlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from preprocessing.sources.tables import MAX_RATING, MIN_RATING, RELEASE_MIN_TS, DataError, RawTables, \
    age_bucket, latest_valid_timestamp, require_few_bad
from recsys import fileio

INTERACTIONS_NAMES = ("interactions", "events", "ratings", "reviews", "transactions", "log")
ITEMS_NAMES = ("items", "products", "articles", "catalog", "catalogue", "books", "movies", "meta")
USERS_NAMES = ("users", "customers", "members", "profiles")
JSON_EXTENSIONS = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_EXTENSIONS = (".parquet", ".pq")
EXTENSIONS = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt", ".txt.gz") + JSON_EXTENSIONS + PARQUET_EXTENSIONS
# schema field -> header names that mean it (compared lower-case, without "_", "-" and spaces)
ALIASES: Dict[str, Tuple[str, ...]] = {
    "user_id": ("user_id", "userid", "user", "customer_id", "customerid", "customer", "visitorid", "visitor_id",
                "member_id", "account_id", "client_id", "reviewerid", "uid", "user_pseudo_id"),
    "item_id": ("item_id", "itemid", "item", "movieid", "movie_id", "product_id", "productid", "product", "sku",
                "article_id", "content_id", "video_id", "track_id", "song_id", "book_id", "isbn", "parent_asin", "asin",
                "business_id", "recipe_id", "game_id", "app_id", "anime_id", "iid"),
    "timestamp": ("timestamp", "ts", "time", "event_time", "eventtime", "datetime", "date", "event_timestamp",
                  "created_at", "event_date", "t_dat", "unix_time", "unixreviewtime", "date_added", "played_at",
                  "order_date", "purchase_date", "review_date", "rated_at"),
    "rating": ("rating", "score", "stars", "overall", "review_score", "book_rating"),
    "click": ("click", "clicked", "label", "engaged", "is_click"),
    "device": ("device", "device_type", "platform"),
    "event_type": ("event", "event_type", "event_name", "behavior_type", "behaviour_type", "behavior", "behaviour",
                   "action", "action_type", "interaction_type"),
    "item_title": ("title", "item_title", "name", "product_name", "item_name", "book_title", "movie_title",
                   "track_name", "prod_name"),
    "item_genres": ("genres", "item_genres", "genre", "category", "categories", "tags", "product_type_name"),
    "item_price": ("price", "item_price"),
    "item_release_ts": ("release", "release_date", "item_release_ts", "released", "year", "release_year",
                        "published", "publication_year", "year_of_publication"),
    "user_age": ("age", "user_age", "age_bucket", "user_age_bucket"),
    "user_country": ("country", "user_country", "location", "region"),
}
REQUIRED = ("user_id", "item_id", "timestamp")
_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f", ""}
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?$")
_COMPACT_DATE = re.compile(r"(19|20|21)\d{6}")
_UTC_SUFFIX = re.compile(r"\s*\b(UTC|GMT)$", re.IGNORECASE)
_GENRE_SPLIT = re.compile(r"\s*[|,;]\s*")
try:
    import orjson   # pinned (a dependency of apache-beam); about 5x faster than json
except ImportError:  # pragma: no cover
    orjson = None


def _loads(text: str):
    """orjson, else ``json`` (which also takes what orjson refuses: NaN, a Latin-1 field's surrogate escapes)."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except ValueError:
            pass
    return json.loads(text)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.strip().lstrip("\ufeff").lower())


def parse_column_map(text: str) -> Dict[str, str]:
    """``"user_id=customer,item_id=sku"`` -> {"user_id": "customer", ...}; unknown fields are a one-line error."""
    out: Dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        field, sep, column = part.partition("=")
        field = field.strip()
        if not sep or not column.strip():
            raise DataError(f"data.columns entry {part!r} is not FIELD=COLUMN (e.g. user_id=customer)")
        if field not in ALIASES:
            raise DataError(f"data.columns names unknown field {field!r}; fields: {', '.join(ALIASES)}")
        out[field] = column.strip()
    return out


def find_interactions(path: str) -> str:
    """The interactions file: ``path`` itself (a file, or a directory of Parquet parts named ``*.parquet``), or the
    first ``INTERACTIONS_NAMES`` + ``EXTENSIONS`` file in it."""
    if not fileio.isdir(path) or _is_parquet(path):
        if fileio.exists(path):
            return path
        raise DataError(f"data.path={path!r} does not exist")
    found = _side_file(path, INTERACTIONS_NAMES)
    if found is None:
        raise DataError(f"{path!r} holds no interaction log: expected one of "
                        f"{', '.join(n + '.csv' for n in INTERACTIONS_NAMES)} (or .tsv, .jsonl, .gz, .parquet), or "
                        f"give the file itself")
    return found


def _side_file(path: str, names: Sequence[str]) -> Optional[str]:
    """The first ``names`` + ``EXTENSIONS`` file in the directory ``path`` (None for a file or no match)."""
    if not fileio.isdir(path):
        return None
    candidates = (fileio.join(path, name + ext) for name in names for ext in EXTENSIONS)
    return next((c for c in candidates if fileio.exists(c)), None)


def _json_text(value) -> str:
    """A JSON value as the text a CSV cell would hold: lists (Amazon's nested categories) joined by '|'."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "|".join(t for t in (_json_text(v) for v in value) if t)
    return json.dumps(value, ensure_ascii=False)


def _is_parquet(path: str) -> bool:
    return path.rstrip("/").lower().endswith(PARQUET_EXTENSIONS)


def _parquet_parts(path: str) -> List[str]:
    """A Parquet file, or a directory's part files in name order (Spark's ``part-*``, BigQuery's ``*-000000000000``;
    markers such as ``_SUCCESS``, ``.crc`` and hidden files are not parts)."""
    if not fileio.isdir(path):
        return [path]
    parts = sorted(n.rstrip("/") for n in fileio.listdir(path)
                   if not n.startswith(("_", ".")) and not n.endswith((".crc", "/")))
    if not parts:
        raise DataError(f"{path} is a directory with no Parquet part files in it")
    return [fileio.join(path, n) for n in parts]


def _parquet_names(part: str) -> List[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fileio.open_read(part) as f:
            names = pq.ParquetFile(f).schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{part} is not a readable Parquet file: {e}") from None
    if not names:
        raise DataError(f"{part} has no columns")
    return names


_TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _parquet_texts(column) -> List[str]:
    """One Parquet column as the texts a CSV would hold: timestamps as unix seconds (Arrow stores UTC instants;
    a zone-less one is read as UTC, as a CSV time without a zone is), dates in ISO form, NaN and null empty."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.dictionary_decode(), kind.value_type
    if pa.types.is_timestamp(kind):
        per_second = _TIME_UNITS[kind.unit]
        return ["" if v is None else str(v // per_second) for v in column.cast(pa.int64()).to_pylist()]
    return [_cell_text(v) for v in column.to_pylist()]


def _cell_text(value) -> str:
    if isinstance(value, float) and value != value:   # NaN: how a dataframe writes a missing number
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")   # _field() reads a non-UTF-8 one as Latin-1
    if isinstance(value, (datetime.date, datetime.time)):   # date32/date64 columns (datetimes are cast above)
        return value.isoformat()
    if isinstance(value, list):
        return "|".join(t for t in (_cell_text(v) for v in value) if t)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    if value is not None and not isinstance(value, (str, bool, int, float)):
        return str(value)   # Decimal, durations
    return _json_text(value)


def _json_object(line: str):
    try:
        obj = _loads(line)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON {type(obj).__name__}, not an object")
    return obj


def _text(raw: io.RawIOBase, path: str) -> io.TextIOWrapper:
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
    encoding = "utf-8-sig"
    if getattr(stream, "seekable", lambda: False)():   # Excel's "Unicode text" is UTF-16 with a byte-order mark
        head = stream.read(2)
        stream.seek(0)
        if head in (b"\xff\xfe", b"\xfe\xff"):
            encoding = "utf-16"
    # surrogateescape: bytes that are not UTF-8 survive to _field(), which re-reads that field as Latin-1
    return io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape", newline="")


def _field(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("latin-1")


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


class _Table:
    """Rows of one delimited, JSON-lines or Parquet file as {field: text}, with dead letters for rows that cannot
    be read."""

    def __init__(self, path: str, fields: Sequence[str], explicit: Dict[str, str], dead: List[Dict],
                 required: Sequence[str] = (), side: bool = False, names: Sequence[str] = ()):
        """``side``: an items or users file; ``data.columns`` names it only where it has that column (else the
        aliases, and a bare ``id`` as its key), since one mapping serves every file. ``names``: the columns of
        a file without a header line (``data.header``)."""
        self.path, self.dead, self.total = path, dead, 0
        self.file = os.path.basename(path.rstrip("/"))
        self._raw = None
        self.parquet = _is_parquet(path)
        self.json = path.endswith(JSON_EXTENSIONS)
        self._first: List[str] = []         # no header: the first line is a row, handed to the reader first
        self._array: Optional[list] = None   # a .json file holding one JSON array of objects, read whole
        self._line0 = 1                      # lines read before the csv reader starts
        self.delimiter = ","
        if self.parquet:                     # Parquet: the schema's column names; rows counted from 1
            self._parts, self._line0 = _parquet_parts(path), 0
            header = _parquet_names(self._parts[0])
        else:
            header = self._text_header(path, names)
        self.guessed: List[str] = []   # the column names read into a headerless file, if any
        if (not names and not side and not self.json and not self.parquet and not explicit
                and not {_key(h) for h in header} & {_key(a) for a in ALIASES[required[0]]}):
            guess = guess_header(header)
            if guess:   # a headerless log in the usual order: its first line is the first row
                header = self.guessed = guess
                self._first, self._line0 = [self._first_line], 0
        self.n_columns = len(header)
        by_key = {}
        for i, h in enumerate(header):
            by_key.setdefault(_key(h), i)
        self.columns: Dict[str, int] = {}
        for field in fields:
            if field in explicit and (not side or _key(explicit[field]) in by_key):
                if _key(explicit[field]) not in by_key:
                    self.close()
                    raise DataError(f"data.columns: {path} has no column {explicit[field]!r} for {field}; "
                                    f"its columns: {', '.join(header)}")
                self.columns[field] = by_key[_key(explicit[field])]
                continue
            for alias in ALIASES[field] + (("id",) if side and field == required[0] else ()):
                if _key(alias) in by_key:
                    self.columns[field] = by_key[_key(alias)]
                    break
        if self.json or self.parquet:   # read by name, not position
            self.columns = {f: header[i] for f, i in self.columns.items()}
        missing = [f for f in required if f not in self.columns]
        if missing:
            self.close()
            hint = (f"name it with --set data.columns={missing[0]}=COLUMN" if names or not _looks_like_data(header)
                    else "no header line? name the columns with --set data.header=user_id,item_id,...")
            raise DataError(f"{path}: no column for {', '.join(missing)} among {', '.join(header)}; {hint}")

    def _text_header(self, path: str, names: Sequence[str]) -> List[str]:
        """Opens a delimited or JSON-lines file and reads its column names from its first line (or ``names``)."""
        self._raw = fileio.open_read(path)
        self._f = _text(self._raw, path)
        first = self._f.readline()
        if not first.strip():
            self.close()
            raise DataError(f"{path} is empty")
        if self.json and first.lstrip().startswith("["):   # one JSON array of objects (an API or Mongo export)
            self._array, self._line0 = self._read_array(path, first + self._f.read()), 0
            self.close()
            return list(self._array[0])
        if self.json:                        # JSON lines: the first object's keys name the columns
            self._first, self._line0 = [first], 0
            try:
                return list(_json_object(first))
            except ValueError as e:
                self.close()
                raise DataError(f"{path}: line 1 is {e} (a .json/.jsonl log holds one JSON object a line)") from None
        self.delimiter = _delimiter(first)
        self._first_line = first
        if names:
            self._first, self._line0 = [first], 0
            return list(names)
        return [_field(h) for h in next(csv.reader([first], delimiter=self.delimiter))]

    def _read_array(self, path: str, text: str) -> list:
        """The elements of a file holding one JSON array (read whole: JSON lines stream, an array cannot)."""
        try:
            items = _loads(text)
        except ValueError as e:
            self.close()
            raise DataError(f"{path}: not a JSON array ({' '.join(str(e).split())[:200]}); a .json log holds "
                            f"one JSON object a line, or one array of objects") from None
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            self.close()
            raise DataError(f"{path}: a JSON array log must hold objects, one an interaction, the first one too")
        return items

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()

    def rows(self, count: bool = False) -> Iterator[Tuple[int, Dict[str, str]]]:
        if self.parquet:
            yield from self._parquet_rows(count)
            return
        try:
            yield from self._json_rows(count) if self.json else self._csv_rows(count)
        except (EOFError, OSError, zlib.error) as e:   # a truncated or corrupt .gz: one clear line, not a crash
            raise DataError(f"{self.path}: cannot read past line {self.total + self._line0}: {e}") from None

    def _csv_rows(self, count: bool) -> Iterator[Tuple[int, Dict[str, str]]]:
        reader = csv.reader(itertools.chain(self._first, self._f), delimiter=self.delimiter)
        line = 1
        try:
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:   # NUL bytes, an unterminated quote at the end: that row only
                    line = reader.line_num + self._line0
                    self.total += count
                    self.bad(line, f"unreadable row: {e}", "")
                    continue
                line = reader.line_num + self._line0
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                self.total += count
                if len(fields) != self.n_columns:
                    self.bad(line, f"expected {self.n_columns} fields, got {len(fields)}",
                             self.delimiter.join(fields))
                    continue
                yield line, {f: fields[i] for f, i in self.columns.items()}
        finally:
            self.close()

    def _json_rows(self, count: bool) -> Iterator[Tuple[int, Dict[str, str]]]:
        if self._array is not None:   # "line" = the element's number in the array, from 1
            for line, obj in enumerate(self._array, start=1):
                self.total += count
                if not isinstance(obj, dict):
                    self.bad(line, f"a JSON {type(obj).__name__}, not an object", _json_text(obj))
                    continue
                yield line, {f: _json_text(obj.get(k)) for f, k in self.columns.items()}
            return
        try:
            for line, text in enumerate(itertools.chain(self._first, self._f), start=1):
                if not text.strip():
                    continue
                self.total += count
                try:
                    obj = _json_object(text)
                except ValueError as e:
                    self.bad(line, str(e), text.rstrip("\r\n"))
                    continue
                yield line, {f: _json_text(obj.get(k)) for f, k in self.columns.items()}
        finally:
            self.close()

    def _parquet_rows(self, count: bool) -> Iterator[Tuple[int, Dict[str, str]]]:
        """Rows of every part in order, numbered from 1 across the parts; only the mapped columns are read."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = list(dict.fromkeys(self.columns.values()))
        line = 0
        for part in self._parts:
            with fileio.open_read(part) as f:
                try:
                    pf = pq.ParquetFile(f)
                    missing = [n for n in names if n not in pf.schema_arrow.names]
                    if missing:
                        raise DataError(f"{part}: no column {', '.join(missing)} (the first part has it; every part of "
                                        f"{self.path} needs the same columns)")
                    for batch in pf.iter_batches(batch_size=1 << 16, columns=names):
                        cells = {n: _parquet_texts(batch.column(n)) for n in names}
                        for i in range(batch.num_rows):
                            line += 1
                            self.total += count
                            yield line, {field: cells[n][i] for field, n in self.columns.items()}
                except (pa.ArrowException, OSError) as e:
                    raise DataError(f"{part}: cannot read Parquet past row {line}: {e}") from None

    def bad(self, line: int, reason: str, text: str) -> None:
        self.dead.append({"file": self.file, "line": line, "reason": reason, "text": _field(text)[:500]})


_EARLIEST_GUESSED_TIME = 631152000   # 1990-01-01 UTC: before any public interaction log


def guess_header(first: Sequence[str]) -> Optional[List[str]]:
    """Column names for a file with no header line whose first row reads as ``user, item, rating, time``
    (Amazon's ratings-only files, MovieLens' u.data) or ``user, item, time``: a number where the rating goes
    and an event time last. None for any other shape, which then needs ``data.header``."""
    fields = [f.strip() for f in first]
    if len(fields) not in (3, 4) or not all(fields[:2]):
        return None
    try:   # an event time after 1990, so a rating or a count in the last column is not read as one
        if not _EARLIEST_GUESSED_TIME <= parse_time(fields[-1]) <= latest_valid_timestamp():
            return None
    except (ValueError, OverflowError):
        return None
    if len(fields) == 3:
        return ["user_id", "item_id", "timestamp"]
    if not _NUMBER.match(fields[2]) or not 0 <= float(fields[2]) <= 100:
        return None
    return ["user_id", "item_id", "rating", "timestamp"]



def _looks_like_data(header: Sequence[str]) -> bool:
    """A first line with numbers or times in it (Last.fm's "2009-05-04T23:08:57Z") is more likely a row
    than a header."""
    for h in header:
        h = h.strip()
        if _NUMBER.match(h):
            return True
        if any(c.isdigit() for c in h):
            try:
                parse_time(h)
                return True
            except (ValueError, OverflowError):
                pass
    return False


def parse_time(text: str) -> int:
    """Unix seconds from unix seconds / ms / us / ns or an ISO 8601 date or datetime (no zone = UTC).

    Also a compact ``YYYYMMDD`` date (as unix seconds it would be a day in 1970-73, never a real event),
    a trailing ``UTC``/``GMT`` (BigQuery's CSV exports: "2024-03-01 12:30:00 UTC"), and ``TIME_FORMATS``.
    """
    t = text.strip()
    if t[-1:].isalpha():   # "2024-03-01 12:30:00 UTC": a time without a zone is UTC anyway
        t = _UTC_SUFFIX.sub("", t)
    if _COMPACT_DATE.fullmatch(t):
        try:
            return calendar.timegm(datetime.datetime.strptime(t, "%Y%m%d").timetuple())
        except ValueError:
            raise ValueError(f"time {text!r} is not a YYYYMMDD date (and as unix seconds it would be 1970-73)") \
                from None
    if _NUMBER.match(t):
        v = float(t)
        for scale in (1e18, 1e15, 1e12):   # ns, us, ms: seconds past 1e11 would be after the year 5000
            if abs(v) >= scale / 10:
                v /= scale / 1e9
                break
        return int(v)
    try:
        dt = datetime.datetime.fromisoformat(t)
    except ValueError:
        dt = _other_time_format(t)
        if dt is None:
            hint = (" (month/day or day/month: give its format, --set data.time_format=%m/%d/%Y)"
                    if _SLASH_DATE.match(t) else "; give its format with --set data.time_format=...")
            raise ValueError(f"time {text!r} is neither a unix time nor ISO 8601{hint}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp())


def time_parser(time_format: str = ""):
    """``parse_time``, or with ``time_format`` (a strptime format; no zone in it means UTC) that format only,
    so a US spreadsheet's "3/1/2024 1:30 PM" reads as March. A format strptime cannot use is a DataError."""
    if not time_format:
        return parse_time
    try:
        sample = datetime.datetime(2024, 3, 1, 13, 30, tzinfo=datetime.timezone.utc)   # %z and %Z write too
        datetime.datetime.strptime(sample.strftime(time_format), time_format)
    except ValueError as e:
        raise DataError(f"data.time_format {time_format!r} is not a strptime format that reads back what it "
                        f"writes ({e}); e.g. %m/%d/%Y %I:%M %p") from None

    def parse(text: str) -> int:
        try:
            dt = datetime.datetime.strptime(text.strip(), time_format)
        except ValueError:
            raise ValueError(f"time {text!r} does not match data.time_format {time_format!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        return int(dt.timestamp())

    return parse


# unambiguous formats seen in public logs, tried after ISO 8601 (day/month order is never guessed)
TIME_FORMATS = ("%a %b %d %H:%M:%S %z %Y",    # Goodreads, Twitter: "Fri Sep 08 10:44:24 -0700 2017"
                "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M", "%Y/%m/%d",   # spreadsheet exports
                "%d.%m.%Y %H:%M:%S", "%d.%m.%Y", "%d.%m.%Y %H:%M",
                "%m %d, %Y",                    # Amazon's reviewTime: "09 13, 2009"
                "%b %d, %Y", "%B %d, %Y", "%d %b %Y", "%d %B %Y")   # month names: "Mar 1, 2024", "1 March 2024"


def _other_time_format(t: str) -> Optional[datetime.datetime]:
    for fmt in TIME_FORMATS:
        try:
            return datetime.datetime.strptime(t, fmt)
        except ValueError:
            pass
    try:   # RFC 2822 (e-mail, HTTP, RSS): "Fri, 08 Sep 2017 10:44:24 +0000"
        from email.utils import parsedate_to_datetime

        return parsedate_to_datetime(t)
    except (TypeError, ValueError, IndexError):
        return None


def parse_release(text: str) -> int:
    """A year (1800-2200) is its January 1st; anything else is a time (``parse_time``)."""
    t = text.strip()
    if re.fullmatch(r"\d{4}", t) and 1800 <= int(t) <= 2200:
        return calendar.timegm((int(t), 1, 1, 0, 0, 0))
    return parse_time(t)


_PRICE_NUMBER = re.compile(r"\d[\d.,' ]*")


def parse_price(text: str) -> float:
    """A price as catalogues write it: ``12.5``, ``$12.99``, ``EUR 1,299.00``, ``1.299,00 €``, ``£7``, or the
    low end of a range (``$12.99 - $15.99``, as Amazon's meta has). Empty, ``None``/``nan``/``-`` are unknown
    (0). A comma is the decimal mark only when nothing else is (one comma, 1-2 digits after it)."""
    t = text.strip()
    if not t or t.lower() in ("none", "null", "nan", "n/a", "-", "free"):
        return 0.0
    try:
        return float(t)
    except ValueError:
        pass
    m = _PRICE_NUMBER.search(t)
    if not m or re.search(r"[a-z]{4,}", t.lower()):
        raise ValueError(f"price {text!r} is not a number")
    num = m.group(0).strip().replace("'", "").replace(" ", "")
    if "," in num and "." in num:        # the later one is the decimal mark: 1,299.00 / 1.299,00
        num = num.replace(",", "") if num.rfind(".") > num.rfind(",") else num.replace(".", "").replace(",", ".")
    elif "," in num:                     # 12,99 (decimal) / 1,299 (thousands)
        head, _, tail = num.rpartition(",")
        num = f"{head.replace(',', '')}.{tail}" if num.count(",") == 1 and len(tail) <= 2 else num.replace(",", "")
    return float(num)


_SLASH_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}\b")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


@functools.lru_cache(maxsize=1024)
def _rating(text: str, rating_max: float) -> float:
    """The schema's scale: 0 = none, else 0.5..5 (``rating_max`` maps to 5; small ones to 0.5). A decimal
    comma (``4,5``, as semicolon-separated European exports write it) is read as the decimal mark."""
    t = text.strip()
    if not t:
        return 0.0
    if _DECIMAL_COMMA.fullmatch(t):
        t = t.replace(",", ".")
    value = float(t)
    if not 0 <= value <= rating_max:
        raise ValueError(f"rating {value:g} is outside 0..{rating_max:g} (data.rating_max)")
    if value == 0:
        return 0.0
    return round(min(max(value * MAX_RATING / rating_max, MIN_RATING), MAX_RATING), 4)


# event types (compared lower-case without "_", "-" and spaces). Not interactions: shown but not engaged with,
# or undone; their rows are left out (counted, not dead letters). Strong: a purchase, cart or favourite, the
# engagement label ``click`` = 1; any other type (view, pv, play, ...) is an interaction with ``click`` = 0.
NOT_INTERACTIONS = frozenset({
    "impression", "impressions", "exposure", "show", "shown", "display", "displayed", "viewitemlist",
    "viewpromotion", "removefromcart", "removefrombasket", "removefromwishlist", "remove", "unlike", "dislike",
    "unfavorite", "unfavourite", "unfollow", "unsubscribe", "return", "refund", "hide", "skip", "skipped"})
STRONG_EVENTS = frozenset({
    "purchase", "purchased", "transaction", "buy", "bought", "order", "ordered", "checkout", "begincheckout",
    "cart", "addtocart", "addtobasket", "basket", "fav", "favorite", "favourite", "addtofavorites", "like", "liked",
    "wishlist", "addtowishlist", "save", "saved", "bookmark", "subscribe", "download", "conversion", "rate",
    "review", "share"})


def event_kind(text: str, keep_types=None) -> str:
    """``skip`` (not an interaction), ``strong`` (click = 1) or ``weak`` (click = 0) for an event type;
    ``keep_types`` (``_event_filter``): only those types are interactions, whatever their kind."""
    k = _key(text)
    kind = "skip" if k in NOT_INTERACTIONS else "strong" if k in STRONG_EVENTS else "weak"
    if keep_types is None:
        return kind
    return "skip" if k not in keep_types else ("weak" if kind == "skip" else kind)


def _event_filter(event_types: str):
    """``data.event_types`` ("transaction,addtocart") -> the set of normalised types to keep, or None for all."""
    keep = {_key(t) for t in event_types.split(",") if t.strip()}
    return keep or None


def describe_event_types(counts: Dict[str, int], keep_types=None) -> str:
    """One line: each event type's rows and what they became (most frequent first)."""
    def role(t: str) -> str:
        return {"skip": "left out", "strong": "click 1", "weak": "click 0"}[event_kind(t, keep_types)]

    parts = [f"{t or '(empty)'} {n:,} ({role(t)})" for t, n in sorted(counts.items(), key=lambda kv: -kv[1])[:12]]
    more = f", +{len(counts) - 12} more types" if len(counts) > 12 else ""
    return "event types: " + ", ".join(parts) + more


def _click(text: str) -> float:
    t = text.strip().lower()
    if t in _TRUE:
        return 1.0
    if t in _FALSE:
        return 0.0
    raise ValueError(f"click {text!r} is not 0/1 or true/false")


def _age_bucket(text: str) -> str:
    t = text.strip()
    if not t:
        return "unknown"
    if re.fullmatch(r"\d{1,3}(\.\d+)?", t):
        age = int(float(t))
        return age_bucket(age) if 0 < age < 120 else "unknown"
    return t


def load(path: str, columns: str = "", rating_max: float = 5.0, max_bad_fraction: float = 0.01,
         dead_letter_path: Optional[str] = None, header: str = "", event_types: str = "",
         time_format: str = "") -> RawTables:
    """Loads an interaction log (file or directory, see the module docstring) into ``RawTables``.
    ``header``: the interactions file's column names when it has no header line ("user_id,item_id,rating,ts").
    ``event_types``: with an event-type column, only these types are interactions ("transaction,addtocart").
    ``time_format``: the time column's strptime format ("%m/%d/%Y %H:%M"), for times no recognised format reads."""
    if not rating_max > 0:
        raise DataError(f"data.rating_max must be > 0, got {rating_max}")
    to_time = time_parser(time_format)
    explicit = parse_column_map(columns)
    names = [n.strip() for n in header.split(",")] if header.strip() else []
    ipath = find_interactions(path)
    dead: List[Dict] = []
    table = _Table(ipath, ("user_id", "item_id", "timestamp", "rating", "click", "device", "event_type"), explicit,
                   dead, REQUIRED, names=names)
    if table.guessed:
        print(f"[data] {os.path.basename(ipath)} has no header line; its columns read as "
              f"{', '.join(table.guessed)} (another order: --set data.header=...)", flush=True)
    has_rating, has_click = "rating" in table.columns, "click" in table.columns
    has_event = "event_type" in table.columns
    keep_types = _event_filter(event_types)
    if keep_types and not has_event:
        raise DataError(f"data.event_types={event_types!r}, but {ipath} has no event-type column (one of "
                        f"{', '.join(ALIASES['event_type'])}; or name it with data.columns=event_type=<column>)")
    type_counts: Dict[str, int] = {}
    kinds: Dict[str, str] = {}   # event type -> event_kind, worked out once per distinct type, not per row
    events: List[Tuple[str, str, float, int, float, str]] = []
    max_ts = latest_valid_timestamp()
    for line, row in table.rows(count=True):
        kind = "weak"
        if has_event:
            etype = _field(row["event_type"]).strip()
            type_counts[etype] = type_counts.get(etype, 0) + 1
            kind = kinds.get(etype)
            if kind is None:
                kind = kinds[etype] = event_kind(etype, keep_types)
            if kind == "skip":
                continue
        try:
            user, item = sys.intern(_field(row["user_id"]).strip()), sys.intern(_field(row["item_id"]).strip())
            ts = to_time(row["timestamp"])
            rating = _rating(row["rating"], rating_max) if has_rating else 0.0
            # implicit events (no rating) are engagements; explicit ones are when rated 4+ of 5, as MovieLens
            if has_click:
                click = _click(row["click"])
            elif has_event:  # a typed log: purchases, carts and favourites are the engagements
                click = 1.0 if kind == "strong" else 0.0
            else:
                click = 1.0 if rating == 0 or rating >= 4.0 else 0.0
            device = sys.intern(_field(row.get("device", "")).strip() or "unknown")
        except (ValueError, OverflowError) as e:
            table.bad(line, f"unparsable value: {e}", table.delimiter.join(row.values()))
            continue
        if not user or not item:
            table.bad(line, "empty user or item id", table.delimiter.join(row.values()))
        elif not 0 < ts <= max_ts:
            table.bad(line, f"timestamp {ts} is not after 1970 and before now ({max_ts})",
                      table.delimiter.join(row.values()))
        else:
            events.append((user, item, rating, ts, click, device))
    require_few_bad(len(dead), table.total, f"rows in {ipath}", dead, max_bad_fraction, dead_letter_path)
    if has_event:
        print(f"[data] {describe_event_types(type_counts, keep_types)}", flush=True)
    if not events:
        raise DataError(f"no usable interactions in {ipath}" + (
            f" (event types {', '.join(sorted(type_counts))}; data.event_types={event_types!r})" if has_event else ""))

    items_path, users_path = _side_file(path, ITEMS_NAMES), _side_file(path, USERS_NAMES)
    items = _items(items_path, explicit, dead)
    users = _users(users_path, explicit, dead)
    if items:
        events, items = _join_side(events, 1, items, items_path, "items", "title, genres, price")
    if users:
        events, users = _join_side(events, 0, users, users_path, "users", "age, country")
    events.sort(key=lambda e: (e[3], e[0], e[1]))
    inter = {"user_id": [e[0] for e in events], "item_id": [e[1] for e in events],
             "timestamp": [e[3] for e in events], "rating": [e[2] for e in events],
             "click": [e[4] for e in events], "device": [e[5] for e in events]}
    item_ids = sorted(set(items) | set(inter["item_id"]), key=lambda s: (len(s), s))
    empty = {"item_title": "", "item_genres": "", "item_price": 0.0, "item_release_ts": 0}
    item_table = {"item_id": item_ids, **{k: [items.get(i, empty)[k] for i in item_ids] for k in empty}}
    user_ids = sorted(set(inter["user_id"]), key=lambda s: (len(s), s))
    unknown = {"user_age_bucket": "unknown", "user_country": "unknown"}
    user_table = {"user_id": user_ids, **{k: [users.get(u, unknown)[k] for u in user_ids] for k in unknown},
                  "user_signup_ts": [0] * len(user_ids)}
    return RawTables(users=user_table, items=item_table, interactions=inter, dead_letters=dead)


_FLOAT_INT = re.compile(r"(\d+)\.0+")


def _int_id(value: str) -> str:
    """"123.0" -> "123": how a table tool writes an integer id column that had a missing value (as floats)."""
    m = _FLOAT_INT.fullmatch(value)
    return m.group(1) if m else value


def _join_side(events: List[tuple], column: int, rows: Dict[str, Dict], side_path: str, what: str,
               fields: str) -> Tuple[List[tuple], Dict[str, Dict]]:
    """The log's ids (``events[i][column]``: 1 items, 0 users) against a side file's: says how many logged
    ids have no row there (kept without those fields), and when one side wrote integer ids as floats
    ("123.0" vs "123") and the other did not, reads both as integers, if that joins more of them."""
    logged = {e[column] for e in events}
    missing = logged - rows.keys()
    if missing:
        fixed_rows = {_int_id(i): v for i, v in rows.items()}
        fixed_missing = {_int_id(i) for i in logged} - fixed_rows.keys()
        if len(fixed_missing) < len(missing) / 2:
            print(f"[data] {what} ids written as floats (\"123.0\") on one side only: read as integers "
                  f"({len(logged) - len(missing):,} -> {len(logged) - len(fixed_missing):,} of {len(logged):,} "
                  f"logged {what} found in {side_path})", flush=True)
            events = [e[:column] + (sys.intern(_int_id(e[column])),) + e[column + 1:] for e in events]
            rows, missing = fixed_rows, fixed_missing
    if missing:
        examples = ", ".join(repr(i) for i in sorted(missing, key=lambda s: (len(s), s))[:3])
        print(f"[data] {len(missing):,} of {len(logged):,} {what} in the log have no row in {side_path} "
              f"(kept without {fields}; e.g. {examples})", flush=True)
    return events, rows


def _items(path: Optional[str], explicit: Dict[str, str], dead: List[Dict]) -> Dict[str, Dict]:
    if not path:
        return {}
    table = _Table(path, ("item_id", "item_title", "item_genres", "item_price", "item_release_ts"),
                   explicit, dead, ("item_id",), side=True)
    items: Dict[str, Dict] = {}
    repeated = 0
    for line, row in table.rows():
        item_id = sys.intern(_field(row["item_id"]).strip())
        if not item_id:
            table.bad(line, "empty item id", table.delimiter.join(row.values()))
            continue
        repeated += item_id in items
        # an unreadable price or release empties that field only: the item keeps its title and genres
        price, release, problems = 0.0, 0, []
        try:
            price = parse_price(_field(row.get("item_price", "")))
            if not (price >= 0 and price != float("inf")):
                raise ValueError(f"price {price} is not a finite number >= 0")
        except (ValueError, OverflowError) as e:
            price = 0.0
            problems.append(str(e))
        try:
            release = parse_release(row["item_release_ts"]) if row.get("item_release_ts", "").strip() else 0
            if release and release < RELEASE_MIN_TS:
                raise ValueError(f"release {row['item_release_ts']!r} is before 1800")
        except (ValueError, OverflowError) as e:
            release = 0
            problems.append(str(e))
        if problems:
            table.bad(line, f"kept, without the unreadable field: {'; '.join(problems)}",
                      table.delimiter.join(row.values()))
        genres = [g for g in _GENRE_SPLIT.split(_field(row.get("item_genres", "")).strip()) if g]
        items[item_id] = {"item_title": _field(row.get("item_title", "")).strip(), "item_genres": "|".join(genres),
                          "item_price": price, "item_release_ts": release}
    if repeated:  # a catalogue appended to over time: its latest row is the item as it is now
        print(f"[data] {path}: {repeated:,} rows repeat an earlier item id; the last row of each is kept", flush=True)
    return items


def _users(path: Optional[str], explicit: Dict[str, str], dead: List[Dict]) -> Dict[str, Dict]:
    if not path:
        return {}
    table = _Table(path, ("user_id", "user_age", "user_country"),
                   explicit, dead, ("user_id",), side=True)
    return {sys.intern(_field(row["user_id"]).strip()): {
        "user_age_bucket": _age_bucket(_field(row.get("user_age", ""))),
        "user_country": _field(row.get("user_country", "")).strip() or "unknown"} for _, row in table.rows()}
