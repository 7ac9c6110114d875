"""REST request JSON -> numpy tensors in bounded memory (a small constant multiple of the body).

``json.loads`` would build a Python object per scalar (and the old conversion copied that tree
several times: 41-95x the body). This parser walks the UTF-8 bytes once and writes values straight
into arrays of the signature's dtype: runs of plain numbers / strings / booleans are matched by one
regex call and converted in bulk (``np.fromstring``, fixed-width ``S`` arrays), only unusual
elements (escapes, ``{"b64": ...}``, ``NaN``) take a per-value path. It also

- checks shapes as it goes (rectangular, leaves at one depth) and stops at the first ragged list;
- stops a batch-first input as soon as it holds more rows than the inputs parsed before it, so a
  mismatched batch never reaches TensorFlow (``check_batch_sizes`` is the same rule for gRPC);
- limits nesting (``MAX_DEPTH``; deeper JSON is INVALID_ARGUMENT, never a RecursionError) and the
  number of values per request (RESOURCE_EXHAUSTED).

Number policy (as TF Serving's rapidjson with ``kParseNanAndInfFlag``): ``NaN``, ``Infinity`` and
``-Infinity`` are accepted for float inputs and written back with the same spelling; integer and
string inputs reject them. gRPC carries them unchanged, so both transports agree.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
from tensorflow.core.framework import types_pb2

from serving.errors import INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ServingError

MAX_DEPTH = 64                    # JSON nesting accepted anywhere in a request
DEFAULT_MAX_VALUES = 1 << 24      # scalars per request (16.7M); more is RESOURCE_EXHAUSTED
_RUN = 4096                       # values matched per regex call
_FLUSH = 1 << 16                  # values held as Python objects / text before conversion to an array

_WS = re.compile(rb"[ \t\n\r]*")
_WS_CODES = frozenset(b" \t\n\r")
_NUM = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_SEP = rb"[ \t\n\r]*,[ \t\n\r]*"
_NUM_RUN = re.compile(_NUM + rb"(?:" + _SEP + _NUM + rb"){0,%d}" % (_RUN - 1))
_PLAIN_STR = rb'"[^"\\\x00-\x1f]*"'
_STR_RUN = re.compile(_PLAIN_STR + rb"(?:" + _SEP + _PLAIN_STR + rb"){0,%d}" % (_RUN - 1))
_STR_ITEM = re.compile(rb'"([^"\\\x00-\x1f]*)"')
_ANY_STR = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\.)*"')
_BOOL_RUN = re.compile(rb"(?:true|false)(?:" + _SEP + rb"(?:true|false)){0,%d}" % (_RUN - 1))
_LITERAL = re.compile(rb"-?[0-9][0-9.eE+-]*|true|false|null|NaN|-?Infinity")
_SPECIAL_FLOAT = {b"NaN": np.nan, b"Infinity": np.inf, b"-Infinity": -np.inf}
_FLAT_ITEMS = rb'(?:[^\[\]{}"]++|"(?:[^"\\]++|\\.)*+")*+'   # scalars, commas, colons: no nesting
_FLAT_LIST = rb"\[" + _FLAT_ITEMS + rb"\]"
_FLAT_OBJECT = rb'\{(?:[^\[\]{}"]++|"(?:[^"\\]++|\\.)*+"|' + _FLAT_LIST + rb")*+\}"
_CHUNK = 1024  # rows parsed per json.loads call on the fast path
_OBJECTS_RUN = re.compile(_FLAT_OBJECT + rb"(?:" + _SEP + _FLAT_OBJECT + rb"){0,%d}" % (_CHUNK - 1))
_LISTS_RUN = re.compile(_FLAT_LIST + rb"(?:" + _SEP + _FLAT_LIST + rb"){0,%d}" % (_CHUNK - 1))
_B64_START = re.compile(rb'\{[ \t\n\r]*"b64"[ \t\n\r]*:[ \t\n\r]*"')
_LONG_INT = re.compile(rb"[0-9]{19}")
_SKIP_RUN = re.compile(rb'(?:"(?:[^"\\\x00-\x1f]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null)'
                       rb'(?:' + _SEP + rb'(?:"(?:[^"\\\x00-\x1f]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null))'
                       rb'{0,%d}' % (_RUN - 1))

_FLOATS = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_HALF: np.float16}
_INTS = {types_pb2.DT_INT64: np.int64, types_pb2.DT_INT32: np.int32, types_pb2.DT_INT16: np.int16,
         types_pb2.DT_INT8: np.int8, types_pb2.DT_UINT8: np.uint8, types_pb2.DT_UINT16: np.uint16,
         types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64}

SignatureInputs = Mapping[str, Tuple[int, Optional[Tuple[int, ...]]]]  # name -> (dtype enum, shape or None)


def _bad(message: str) -> ServingError:
    return ServingError(INVALID_ARGUMENT, message)


def _dtype_name(dtype_enum: int) -> str:
    return types_pb2.DataType.Name(dtype_enum)[3:].lower()


def check_utf8(body: bytes, chunk: int = 1 << 20) -> None:
    """Rejects a body that is not UTF-8 without building a str of it (1 MiB at a time)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    try:
        for i in range(0, len(body), chunk):
            dec.decode(body[i:i + chunk])
        dec.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise _bad(f"JSON Parse error: the body is not valid UTF-8 ({e.reason})") from None


# ---------------------------------------------------------------- one tensor being filled
class _Tensor:
    """Values of one input in its final dtype, plus the shape seen so far (checked rectangular)."""

    def __init__(self, name: str, dtype_enum: int):
        dtype_enum = dtype_enum - 100 if dtype_enum > 100 else dtype_enum  # *_REF dtypes of TF1 graphs
        self.name, self.dtype_enum = name, dtype_enum
        if dtype_enum == types_pb2.DT_STRING:
            self.kind = "str"
        elif dtype_enum == types_pb2.DT_BOOL:
            self.kind = "bool"
        elif dtype_enum in _FLOATS:
            self.kind, self.np_dtype = "float", np.dtype(_FLOATS[dtype_enum])
        elif dtype_enum in _INTS:
            self.kind, self.np_dtype = "int", np.dtype(_INTS[dtype_enum])
        else:
            raise _bad(f"input '{name}': dtype {_dtype_name(dtype_enum)} is not supported over REST")
        self.dims: List[Optional[int]] = []
        self.leaf: Optional[int] = None
        self.chunks: List[np.ndarray] = []
        self.pending: list = []      # Python values (strings; numbers from the per-element path), in order
        self.spans: List[bytes] = []  # runs of plain numbers as text, converted in bulk
        self.nul_end = False          # a pending string ends with NUL: 'S' arrays would drop it
        self.span_n = 0
        self.count = 0
        self.max_rows: Optional[int] = None  # batch size already fixed by another input

    def type_error(self, token: bytes) -> ServingError:
        return _bad(f"input '{self.name}': JSON Value: {token[:40].decode('utf-8', 'replace')} is not of expected "
                    f"type: {_dtype_name(self.dtype_enum)}")

    def leaf_at(self, depth: int) -> None:
        if self.leaf is None:
            if depth < len(self.dims) and self.dims[depth] is not None:  # a list was closed at this level
                raise _bad(f"input '{self.name}': JSON Value found at incorrect level {depth + 1}; "
                           f"expected at level {len(self.dims)}")
            self.leaf = depth
        elif self.leaf != depth:
            raise _bad(f"input '{self.name}': JSON Value found at incorrect level {depth + 1}; "
                       f"expected at level {self.leaf + 1} (tensors must be rectangular)")

    def list_at(self, depth: int) -> None:
        if self.leaf is not None and depth >= self.leaf:
            raise _bad(f"input '{self.name}': encountered a list at level {depth + 1}, deeper than its "
                       f"values at level {self.leaf + 1} (tensors must be rectangular)")

    def close_list(self, depth: int, count: int) -> None:
        while len(self.dims) <= depth:
            self.dims.append(None)
        if self.dims[depth] is None:
            self.dims[depth] = count
        elif self.dims[depth] != count:
            raise _bad(f"input '{self.name}' is a ragged list: {count} elements at level {depth + 1} where an "
                       f"earlier list had {self.dims[depth]}; tensors must be rectangular")

    # values -------------------------------------------------------------
    def _flush(self) -> None:
        if self.spans:
            self._flush_spans()
        if not self.pending:
            return
        if self.kind == "str":
            if self.nul_end:  # 'S' arrays would drop trailing NULs
                self.nul_end = False
                arr = np.empty(len(self.pending), dtype=object)
                arr[:] = self.pending
            else:
                width = max(map(len, self.pending))
                if width * len(self.pending) > 2 * sum(map(len, self.pending)) + 16 * len(self.pending):
                    arr = np.empty(len(self.pending), dtype=object)  # one long string: no fixed width
                    arr[:] = self.pending
                else:
                    arr = np.array(self.pending, dtype="S") if width else np.zeros(len(self.pending), "S1")
        elif self.kind == "bool":
            arr = np.array(self.pending, dtype=np.bool_)
        else:
            arr = self._cast(np.array(self.pending, dtype=np.float64 if self.kind == "float" else object))
        self.chunks.append(arr)
        self.pending = []

    def _flush_spans(self) -> None:
        data, n = b",".join(self.spans), self.span_n
        self.spans, self.span_n = [], 0
        if self.kind == "int":
            if b"." in data or b"e" in data or b"E" in data:
                raise self.type_error(next(x for x in data.split(b",") if re.search(rb"[.eE]", x)).strip())
            if _LONG_INT.search(data):
                arr = np.array([int(x) for x in data.split(b",")], dtype=object)
            else:
                arr = np.fromstring(data, dtype=np.int64, sep=",")
        else:
            arr = np.fromstring(data, dtype=np.float64, sep=",")
        if len(arr) != n:
            raise _bad(f"input '{self.name}': invalid number")
        self.chunks.append(self._cast(arr))

    def add_span(self, span: bytes, n: int) -> None:
        if self.pending:
            self._flush()
        self.spans.append(span)
        self.span_n += n
        self.count += n
        if self.span_n >= _FLUSH:
            self._flush_spans()

    def add_many(self, values: list) -> None:
        if self.spans:
            self._flush_spans()
        self.pending.extend(values)
        self.count += len(values)
        if len(self.pending) >= _FLUSH:
            self._flush()

    def add_one(self, value) -> None:
        if self.spans:
            self._flush_spans()
        if isinstance(value, bytes) and value.endswith(b"\x00"):
            self.nul_end = True
        self.pending.append(value)
        self.count += 1
        if len(self.pending) >= _FLUSH:
            self._flush()

    def add_rows(self, col: list, depth: int, nul: bool) -> None:
        """Values parsed by ``json.loads`` for a chunk of rows (each a scalar or a flat list) at ``depth``."""
        if all(type(r) is list for r in col):
            self.list_at(depth)
            width = len(col[0])
            if any(len(r) != width for r in col):
                raise _bad(f"input '{self.name}' is a ragged list: rows of {width} and "
                           f"{next(len(r) for r in col if len(r) != width)} elements; tensors must be rectangular")
            self.close_list(depth, width)
            if width:
                self.leaf_at(depth + 1)
            flat = [x for r in col for x in r]
        elif any(type(r) is list for r in col):
            raise _bad(f"input '{self.name}': JSON values found at different levels (tensors must be rectangular)")
        else:
            self.leaf_at(depth)
            flat = col
        types = set(map(type, flat))
        if self.kind == "str":
            if types - {str}:
                raise self.type_error(json.dumps(next(x for x in flat if type(x) is not str)).encode())
            values = [x.encode("utf-8", "surrogatepass") for x in flat]
            if nul and any(v.endswith(b"\x00") for v in values):
                self.nul_end = True
            self.add_many(values)
            return
        allowed = {"bool": {bool}, "int": {int}, "float": {int, float}}[self.kind]
        if types - allowed:
            raise self.type_error(json.dumps(next(x for x in flat if type(x) not in allowed)).encode())
        if self.kind == "bool":
            self.add_many(flat)
            return
        try:
            arr = np.array(flat, dtype=np.int64 if self.kind == "int" else np.float64)
        except OverflowError:
            if self.kind != "int":
                raise _bad(f"input '{self.name}': a value is out of range for {_dtype_name(self.dtype_enum)}") from None
            arr = np.array(flat, dtype=object)
        self.add_chunk(self._cast(arr))

    def add_chunk(self, arr: np.ndarray) -> None:
        self._flush()
        self.chunks.append(arr)
        self.count += len(arr)

    def _cast(self, arr: np.ndarray) -> np.ndarray:
        """float64 / int64 / Python-int values -> the target dtype, rejecting what does not fit."""
        target = self.np_dtype
        if self.kind == "int":
            if arr.size and (arr.dtype == object or arr.dtype != target):
                info = np.iinfo(target)
                lo, hi = (min(arr), max(arr)) if arr.dtype == object else (arr.min(), arr.max())
                if lo < info.min or hi > info.max:
                    bad = next(v for v in arr.tolist() if v < info.min or v > info.max)
                    raise _bad(f"input '{self.name}': value {bad} is out of range for {_dtype_name(self.dtype_enum)}")
                return arr.astype(target)
            return arr
        if target == np.float64:
            return arr
        with np.errstate(over="ignore"):
            out = arr.astype(target)
        overflow = np.isinf(out) & np.isfinite(arr)
        if overflow.any():
            raise _bad(f"input '{self.name}': value {arr[overflow][0]!r} is out of range for "
                       f"{_dtype_name(self.dtype_enum)}")
        return out

    def finish(self) -> np.ndarray:
        self._flush()
        shape = [d or 0 for d in (self.dims[:self.leaf] if self.leaf is not None else self.dims)]
        size = int(np.prod(shape)) if shape else 1
        if size != self.count:
            raise _bad(f"input '{self.name}': {self.count} values do not fill shape {shape}")
        if self.kind != "str":
            empty = np.zeros(0, np.bool_ if self.kind == "bool" else self.np_dtype)
            flat = np.concatenate(self.chunks) if len(self.chunks) > 1 else (self.chunks[0] if self.chunks else empty)
            self.chunks = []
            return flat.reshape(shape)
        return self._finish_strings(shape)

    def _finish_strings(self, shape: List[int]) -> np.ndarray:
        chunks, self.chunks = self.chunks, []
        if not chunks:
            return np.zeros(shape, dtype=object)
        if all(c.dtype.kind == "S" for c in chunks):
            width = max(c.dtype.itemsize for c in chunks)
            actual = sum(c.nbytes for c in chunks)
            if width * self.count <= 2 * actual + 16 * self.count:  # fixed width stays compact
                flat = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
                return flat.reshape(shape)
        out = np.empty(self.count, dtype=object)
        i = 0
        for c in chunks:  # one chunk at a time: never two full copies of the strings
            out[i:i + len(c)] = c.tolist() if c.dtype.kind == "S" else c
            i += len(c)
        return out.reshape(shape)


# ---------------------------------------------------------------- the parser
class _Parser:
    def __init__(self, body: bytes, max_values: int):
        self.s, self.n, self.pos = body, len(body), 0
        self.max_values = max_values
        self.values = 0

    def error(self, what: str) -> ServingError:
        near = self.s[self.pos:self.pos + 20].decode("utf-8", "replace")
        return _bad(f"JSON Parse error: {what} at offset {self.pos} (near {near!r})")

    def peek(self) -> bytes:
        pos = self.pos
        if pos < self.n and self.s[pos] in _WS_CODES:
            self.pos = pos = _WS.match(self.s, pos).end()
        return self.s[pos:pos + 1]

    def expect(self, ch: bytes) -> None:
        if self.peek() != ch:
            raise self.error(f"expected '{ch.decode()}'")
        self.pos += 1

    def counted(self, k: int) -> None:
        self.values += k
        if self.values > self.max_values:
            raise ServingError(RESOURCE_EXHAUSTED, f"request has more than {self.max_values} values; split it "
                                                   f"into smaller requests")

    def string(self) -> bytes:
        """A JSON string at pos as UTF-8 bytes (escapes decoded)."""
        if self.peek() != b'"':
            raise self.error("expected a string")
        m = _STR_ITEM.match(self.s, self.pos)
        if m:
            self.pos = m.end()
            return m.group(1)
        m = _ANY_STR.match(self.s, self.pos)
        if not m:
            raise self.error("invalid string")
        self.pos = m.end()
        try:
            return json.loads(m.group(0)).encode("utf-8", "surrogatepass")
        except ValueError as e:
            raise self.error(f"invalid string ({e})") from None

    def end(self) -> None:
        if self.peek():
            raise self.error("extra data after the JSON object")

    # skipping (values nobody reads) ------------------------------------
    def skip_value(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _bad(f"JSON Parse error: nesting deeper than {MAX_DEPTH} levels")
        c = self.peek()
        if c in (b"[", b"{"):
            close = b"]" if c == b"[" else b"}"
            self.pos += 1
            if self.peek() == close:
                self.pos += 1
                return
            while True:
                if c == b"{":
                    self.string()
                    self.expect(b":")
                    self.skip_value(depth + 1)
                else:
                    nc = self.peek()
                    m = _SKIP_RUN.match(self.s, self.pos) if nc not in (b"[", b"{") else None
                    if m:
                        self.pos = m.end()
                    else:
                        self.skip_value(depth + 1)
                nc = self.peek()
                if nc == b",":
                    self.pos += 1
                elif nc == close:
                    self.pos += 1
                    return
                else:
                    raise self.error(f"expected ',' or '{close.decode()}'")
        elif c == b'"':
            self.string()
        else:
            m = _LITERAL.match(self.s, self.pos)
            if not m:
                raise self.error("expected a JSON value")
            self.pos = m.end()

    def members(self) -> Iterator[bytes]:
        """Keys of the JSON object at ``pos`` ('{' consumed here); the caller consumes each value.

        When the loop ends, ``pos`` is past the closing '}'.
        """
        self.expect(b"{")
        if self.peek() == b"}":
            self.pos += 1
            return
        while True:
            key = self.string()
            self.expect(b":")
            yield key
            c = self.peek()
            if c == b",":
                self.pos += 1
            elif c == b"}":
                self.pos += 1
                return
            else:
                raise self.error("expected ',' or '}'")

    def top_level_string(self, key: bytes) -> Optional[str]:
        """Value of a top-level string key, found without building anything else."""
        self.pos = 0
        if self.peek() != b"{":
            return None
        for k in self.members():
            if k == key:
                if self.peek() != b'"':
                    raise _bad(f"'{key.decode()}' must be a string value")
                return self.string().decode("utf-8", "replace")
            self.skip_value(1)
        return None

    # tensors ------------------------------------------------------------
    def tensor(self, t: _Tensor, depth: int) -> None:
        """Parses the value at pos into ``t``; ``depth`` is its level inside the tensor."""
        if depth > MAX_DEPTH:
            raise _bad(f"JSON Parse error: nesting deeper than {MAX_DEPTH} levels")
        if self.peek() != b"[":
            self.scalars(t, depth, single=True)
            return
        t.list_at(depth)
        self.pos += 1
        count = 0
        if self.peek() == b"]":
            self.pos += 1
        else:
            while True:
                rows = self.fast_rows(_LISTS_RUN) if depth == 0 and self.peek() == b"[" else None
                if rows:
                    self.counted(sum(len(r) for r in rows))
                    t.add_rows(rows, 1, self.nul)
                    count += len(rows)
                elif self.peek() == b"[":
                    self.tensor(t, depth + 1)
                    count += 1
                else:
                    count += self.scalars(t, depth + 1)
                if depth == 0 and t.max_rows is not None and count > t.max_rows:
                    raise _bad(f"input '{t.name}' has more than {t.max_rows} rows; every batch-first input must "
                               f"have the same batch size")
                c = self.peek()
                if c == b",":
                    self.pos += 1
                elif c == b"]":
                    self.pos += 1
                    break
                else:
                    raise self.error("expected ',' or ']'")
        t.close_list(depth, count)

    def scalars(self, t: _Tensor, depth: int, single: bool = False) -> int:
        """Consumes one value or a run of plain values at pos; returns how many."""
        t.leaf_at(depth)
        s, pos = self.s, self.pos
        c = s[pos:pos + 1]
        if t.kind == "str":
            m = None if single else _STR_RUN.match(s, pos)
            if m:
                items = _STR_ITEM.findall(s, pos, m.end())
                self.pos = m.end()
                self.counted(len(items))
                t.add_many(items)
                return len(items)
            if c == b'"':
                t.add_one(self.string())
            elif c == b"{":
                t.add_one(self.b64())
            else:
                raise t.type_error(self._token())
        elif t.kind in ("int", "float"):
            m = None if single else _NUM_RUN.match(s, pos)
            if m and s[m.end():m.end() + 1] not in (b".", b"e", b"E"):
                span = s[pos:m.end()]
                n = span.count(b",") + 1
                self.counted(n)
                self.pos = m.end()
                t.add_span(span, n)
                return n
            tok = self._token()
            if t.kind == "float" and tok in _SPECIAL_FLOAT:
                t.add_one(_SPECIAL_FLOAT[tok])
            elif re.fullmatch(_NUM, tok):
                if t.kind == "int" and re.search(rb"[.eE]", tok):
                    raise t.type_error(tok)
                t.add_one(int(tok) if t.kind == "int" else float(tok))
            else:
                raise t.type_error(tok)
            self.pos += len(tok)
        else:  # bool
            m = None if single else _BOOL_RUN.match(s, pos)
            if m:
                vals = [x.strip() == b"true" for x in s[pos:m.end()].split(b",")]
                self.pos = m.end()
                self.counted(len(vals))
                t.add_many(vals)
                return len(vals)
            tok = self._token()
            if tok not in (b"true", b"false"):
                raise t.type_error(tok)
            t.add_one(tok == b"true")
            self.pos += len(tok)
        self.counted(1)
        return 1

    def fast_rows(self, run: "re.Pattern") -> Optional[list]:
        """Up to _CHUNK flat rows (objects or lists) at pos, parsed by json.loads; None when none match."""
        m = run.match(self.s, self.pos)
        if not m:
            return None
        span = self.s[self.pos:m.end()]
        try:
            rows = json.loads(b"[" + span + b"]")
        except ValueError:
            return None  # let the per-value path report the error with its offset
        self.pos = m.end()
        self.nul = b"\\u0000" in span
        return rows

    def _token(self) -> bytes:
        m = _LITERAL.match(self.s, self.pos) or _ANY_STR.match(self.s, self.pos)
        if m:
            return m.group(0)
        return self.s[self.pos:self.pos + 20] or b"<end of body>"

    def b64(self) -> bytes:
        """``{"b64": "..."}`` -> the decoded bytes."""
        self.expect(b"{")
        if self.string() != b"b64":
            raise _bad('JSON object value of a string input must be {"b64": "<base64>"}')
        self.expect(b":")
        data = self.string()
        self.expect(b"}")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise _bad(f"invalid base64 value: {e}") from None

    def is_b64_object(self) -> bool:
        """True when the object at pos is exactly ``{"b64": "<string>"}`` (a value, not named inputs)."""
        start = self.pos
        if not _B64_START.match(self.s, start):
            return False
        try:
            self.b64()
            return True
        except ServingError:
            return False
        finally:
            self.pos = start


# ---------------------------------------------------------------- requests
def _batch_first(sig_inputs: SignatureInputs) -> bool:
    return bool(sig_inputs) and all(shape is not None and len(shape) >= 1 and shape[0] == -1
                                    for _, shape in sig_inputs.values())


def check_batch_sizes(sig_inputs: SignatureInputs, arrays: Mapping[str, np.ndarray]) -> None:
    """Every input of an all-batch-first signature must have the same batch size, or one row (INVALID_ARGUMENT).

    TensorFlow would otherwise broadcast or slice some graphs silently (``recommend`` with a ``k``
    batch that differs from the request's returned outputs of the wrong shape). One row is left to
    the graph, as TF Serving leaves every shape: this project's graphs broadcast it on purpose (a
    ranker's query features once for all candidates, one ``k`` for all users) and others fail in
    TensorFlow, which is INVALID_ARGUMENT too. Signatures with any input whose leading dimension is
    fixed or unknown-rank are left alone.
    """
    if not _batch_first(sig_inputs):
        return
    sizes = {k: a.shape[0] for k, a in arrays.items() if k in sig_inputs and getattr(a, "ndim", 0) >= 1}
    if len(set(sizes.values()) - {1}) > 1:
        desc = ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items()))
        raise _bad(f"inputs have different batch sizes ({desc}); every input's first dimension must be the "
                   f"same batch size (or 1: one row for every row)")


def parse_predict(body: bytes, signature_inputs: Callable[[str], SignatureInputs],
                  max_values: int = DEFAULT_MAX_VALUES) -> Tuple[str, str, Dict[str, np.ndarray]]:
    """Predict body -> (format "row" | "columnar", signature_name, {input: array}).

    ``signature_inputs(name)`` returns the signature's inputs (and raises when it does not exist).
    Inputs the signature does not have come back as empty placeholders so the signature check
    reports them with TF Serving's message.
    """
    if not body.strip():
        raise _bad("JSON Parse error: The document is empty")
    check_utf8(body)
    p = _Parser(body, max_values)
    signature_name = ""
    if b'"signature_name"' in body:
        signature_name = p.top_level_string(b"signature_name") or ""
    sig = signature_inputs(signature_name)
    p.pos = 0
    if p.peek() != b"{":
        raise _bad("request body must be a JSON object")
    fmt, inputs = None, None
    for key in p.members():
        if key in (b"instances", b"inputs"):
            if fmt is not None:
                raise _bad("Only one of 'instances' or 'inputs' may be given")
            fmt = "row" if key == b"instances" else "columnar"
            inputs = _rows(p, sig) if fmt == "row" else _columns(p, sig)
        else:
            p.skip_value(1)
    p.end()
    if fmt is None:
        raise _bad("Missing 'inputs' or 'instances' key")
    check_batch_sizes(sig, inputs)
    return fmt, signature_name, inputs


def _row_chunk(p: _Parser, rows: list, sig: SignatureInputs, tensors: Dict[str, Optional[_Tensor]],
               keys: Optional[set], count: int) -> set:
    """A chunk of row objects from ``json.loads`` into the tensors (same checks as the per-value path)."""
    for i, r in enumerate(rows):
        if keys is None:
            keys = set(r)
            for name in r:
                tensors.setdefault(name, _tensor(sig, name))
        elif r.keys() != keys:
            raise _bad(f"instance {count + i} has keys {sorted(r)}; expected the same keys as instance 0: "
                       f"{sorted(keys)}")
    p.counted(sum(len(v) if type(v) is list else 1 for r in rows for v in r.values()))
    for name in keys:
        t = tensors[name]
        if t is not None:
            t.add_rows([r[name] for r in rows], 1, p.nul)
    return keys


def _tensor(sig: SignatureInputs, name: str) -> Optional[_Tensor]:
    return _Tensor(name, sig[name][0]) if name in sig else None


def _columns(p: _Parser, sig: SignatureInputs) -> Dict[str, np.ndarray]:
    """``"inputs": {name: tensor, ...}`` or a bare tensor for a one-input signature."""
    if p.peek() != b"{" or p.is_b64_object():
        if len(sig) != 1:
            raise _bad("'inputs' is a bare value, but the signature takes "
                       f"{sorted(sig)}; send an object keyed by input name")
        name = next(iter(sig))
        t = _Tensor(name, sig[name][0])
        p.tensor(t, 0)
        return {name: t.finish()}
    out: Dict[str, np.ndarray] = {}
    rows: Optional[int] = None
    batch_first = _batch_first(sig)
    for key in p.members():
        name = key.decode("utf-8", "replace")
        if name in out:
            raise _bad(f"input '{name}' is given twice")
        t = _tensor(sig, name)
        if t is None:
            p.skip_value(2)
            out[name] = np.zeros(0)
        else:
            t.max_rows = rows if batch_first else None
            p.tensor(t, 0)
            out[name] = t.finish()
            # the batch size is fixed by the first input with more than one row (one row is for every row)
            if batch_first and rows is None and out[name].ndim >= 1 and out[name].shape[0] != 1:
                rows = out[name].shape[0]
    return out


def _rows(p: _Parser, sig: SignatureInputs) -> Dict[str, np.ndarray]:
    """``"instances": [{name: value, ...}, ...]`` or ``[value, ...]`` for a one-input signature."""
    if p.peek() != b"[":
        raise _bad("'instances' must be a non-empty JSON list")
    p.pos += 1
    if p.peek() == b"]":
        raise _bad("'instances' must be a non-empty JSON list")
    named = p.peek() == b"{" and not p.is_b64_object()
    tensors: Dict[str, Optional[_Tensor]] = {}
    if not named:
        if len(sig) != 1:
            raise _bad("instances is a plain list, but expecting list of objects as multiple input tensors "
                       f"required as per signature: {sorted(sig)}")
        name = next(iter(sig))
        tensors[name] = _Tensor(name, sig[name][0])
    keys: Optional[set] = None
    count = 0
    while True:
        rows = p.fast_rows(_OBJECTS_RUN) if named and p.peek() == b"{" else None
        is_object = rows is not None or (p.peek() == b"{" and not p.is_b64_object())
        if is_object != named:
            raise _bad(f"'instances' mixes objects and plain values (item {count})")
        if rows:
            keys = _row_chunk(p, rows, sig, tensors, keys, count)
            count += len(rows) - 1
        elif named:
            seen = set()
            for key in p.members():
                name = key.decode("utf-8", "replace")
                if name in seen:
                    raise _bad(f"instance {count} gives '{name}' twice")
                seen.add(name)
                if keys is None:
                    tensors.setdefault(name, _tensor(sig, name))
                elif name not in keys:
                    raise _bad(f"instance {count} has keys {sorted(seen | {name})}; expected the same keys as "
                               f"instance 0: {sorted(keys)}")
                t = tensors[name]
                if t is None:
                    p.skip_value(3)
                else:
                    p.tensor(t, 1)
            if keys is None:
                keys = seen
            elif seen != keys:
                raise _bad(f"instance {count} has keys {sorted(seen)}; expected the same keys as instance 0: "
                           f"{sorted(keys)}")
        else:
            t = next(iter(tensors.values()))
            if p.peek() == b"[":
                p.tensor(t, 1)
            else:
                p.scalars(t, 1, single=True)
        count += 1
        c = p.peek()
        if c == b",":
            p.pos += 1
        elif c == b"]":
            p.pos += 1
            break
        else:
            raise p.error("expected ',' or ']'")
    out = {}
    for name, t in tensors.items():
        if t is None:
            out[name] = np.zeros(0)
            continue
        t.close_list(0, count)
        out[name] = t.finish()
    return out


# ---------------------------------------------------------------- Classify / Regress bodies
def parse_examples(body: bytes, max_values: int = DEFAULT_MAX_VALUES):
    """``{"signature_name"?, "context"?, "examples": [...]}`` -> (signature_name, context, chunks).

    ``chunks`` yields lists of example objects (up to _CHUNK at a time, parsed by ``json.loads``), so
    a caller that serializes each chunk holds one chunk of Python objects at a time, not the body's.
    """
    if not body.strip():
        raise _bad("JSON Parse error: The document is empty")
    check_utf8(body)
    p = _Parser(body, max_values)
    spans: Dict[bytes, Tuple[int, int]] = {}
    p.pos = 0
    if p.peek() != b"{":
        raise _bad("request body must be a JSON object")
    for key in p.members():
        start = p.pos = _WS.match(p.s, p.pos).end()
        p.skip_value(1)  # nesting beyond MAX_DEPTH is refused here, before any json.loads
        spans[key] = (start, p.pos)
    p.end()
    signature_name = ""
    if b"signature_name" in spans:
        value = json.loads(body[slice(*spans[b"signature_name"])])
        if not isinstance(value, str):
            raise _bad("'signature_name' must be a string value")
        signature_name = value
    context = json.loads(body[slice(*spans[b"context"])]) if b"context" in spans else None
    if context is not None and not isinstance(context, dict):
        raise _bad("'context' must be a JSON object")
    start, end = spans.get(b"examples", (0, 0))
    if body[start:start + 1] != b"[" or b"examples" not in spans:
        raise _bad("'examples' must be a list of JSON objects")
    p.pos = start + 1
    if p.peek() == b"]":
        return signature_name, context, iter(())  # the signature reports "Input is empty."
    return signature_name, context, _example_chunks(p, end)


def _example_chunks(p: _Parser, end: int):
    while True:
        rows = p.fast_rows(_OBJECTS_RUN) if p.peek() == b"{" else None
        if rows is None:  # one example the fast path could not take (b64 values, nesting): on its own
            start = p.pos
            p.skip_value(2)
            rows = [json.loads(p.s[start:p.pos])]
        if not all(isinstance(r, dict) for r in rows):
            raise _bad("'examples' must be a list of JSON objects")
        p.counted(sum(len(v) if type(v) is list else 1 for r in rows for v in r.values()))
        yield rows
        c = p.peek()
        if c == b",":
            p.pos += 1
        elif c == b"]" and p.pos + 1 == end:
            return
        else:
            raise p.error("expected ',' or ']'")
