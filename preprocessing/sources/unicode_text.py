"""Non-ASCII and non-Latin ids and titles on any raw tables: the text-handling stress the real world brings.

MovieLens titles carry accents ("Misérables, Les"); real catalogues carry CJK, Cyrillic and
emoji, and some systems use such ids. ``data.unicode_text=true`` rewrites the synthetic data's
ids and titles with them (one-to-one, deterministic, structure untouched), so the whole path --
preprocess, train, every export, serving, queries -- is exercised on UTF-8 beyond ASCII.
"""
from __future__ import annotations

from typing import Dict, List

from preprocessing.sources.tables import RawTables

USER_MARKS = ("usuário", "пользователь", "用户", "ユーザー")
ITEM_MARKS = ("película", "фильм", "電影", "映画", "film🎬")
TITLE_MARKS = ("Les Misérables", "Амели", "千と千尋", "Crème brûlée", "Ωmega", "Ünïcødé ✓")


def _map(ids: List[str], marks) -> Dict[str, str]:
    return {i: f"{marks[n % len(marks)]}-{i}" for n, i in enumerate(sorted(set(ids)))}


def apply(tables: RawTables) -> RawTables:
    """Same tables with every user id, item id and title rewritten to non-ASCII text (bijective)."""
    users = _map(list(tables.users["user_id"]) + list(tables.interactions["user_id"]), USER_MARKS)
    items = _map(list(tables.items["item_id"]) + list(tables.interactions["item_id"]), ITEM_MARKS)
    tables.users["user_id"] = [users[u] for u in tables.users["user_id"]]
    tables.items["item_id"] = [items[i] for i in tables.items["item_id"]]
    tables.items["item_title"] = [f"{t} · {TITLE_MARKS[n % len(TITLE_MARKS)]}"
                                  for n, t in enumerate(tables.items["item_title"])]
    tables.interactions["user_id"] = [users[u] for u in tables.interactions["user_id"]]
    tables.interactions["item_id"] = [items[i] for i in tables.interactions["item_id"]]
    return tables
