"""The one plain-text table formatter: evaluation reports, benchmark tables and `recsys report`.

Logs and terminals are where people read these, so columns are aligned, numbers are
right-aligned and missing values show as ``-``. A column is a :class:`Column` (key, header,
format spec, alignment), a ``(key, header[, fmt])`` tuple or a plain key; without a format
spec, floats get ``float_fmt`` (metrics want ``.4f``) or, when it is None, a precision that
suits their magnitude. TensorFlow-free, so the CLI can print tables without loading it.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, List, Mapping, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Column:
    key: str
    header: Optional[str] = None
    fmt: Optional[str] = None          # format spec for the value, e.g. ".3f" or ",.0f"
    align: Optional[str] = None        # "<" or ">"; default: right for number columns, left otherwise


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


def format_cell(value: Any, fmt: Optional[str] = None, float_fmt: Optional[str] = None) -> str:
    """One value as text: ``-`` for None, ``fmt`` if given, else a default by type."""
    if value is None:
        return "-"
    if fmt:
        try:
            return format(value, fmt)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if float_fmt:
            return format(value, float_fmt)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[Any]]) -> List[Column]:
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    out = []
    for c in columns:
        if isinstance(c, Column):
            out.append(c)
        elif isinstance(c, (tuple, list)):
            out.append(Column(*c))
        else:
            out.append(Column(str(c)))
    return out


def format_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[Any]] = None,
                 title: Optional[str] = None, float_fmt: Optional[str] = None) -> str:
    """Dict rows as an aligned table; ``columns`` defaults to every key, in first-seen order."""
    cols = _columns(rows, columns)
    headers = [c.header if c.header is not None else c.key for c in cols]
    cells = [[format_cell(r.get(c.key), c.fmt, float_fmt) for c in cols] for r in rows]
    aligns = []
    for c in cols:
        values = [r.get(c.key) for r in rows]
        numeric = any(_is_number(v) for v in values) and all(v is None or _is_number(v) for v in values)
        aligns.append(c.align or (">" if numeric else "<"))
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(format(v, f"{a}{w}") for v, a, w in zip(values, aligns, widths)).rstrip()

    out = [title] if title else []
    out.append(line(headers))
    out.append("  ".join(("-" if h else " ") * w for h, w in zip(headers, widths)).rstrip())
    out.extend(line(row) for row in cells)
    return "\n".join(out)
