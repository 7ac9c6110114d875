"""Data sources: each returns ``RawTables`` on the project schema."""
from __future__ import annotations

from preprocessing.sources.tables import DataError, RawTables, write_raw  # noqa: F401
from recsys import fileio


def load_source(data_cfg, dead_letter_path: str = "") -> RawTables:
    """Builds the raw tables the config asks for (synthetic generator or MovieLens files)."""
    if data_cfg.source == "synthetic":
        from preprocessing.sources import synthetic

        tables = synthetic.generate(n_users=data_cfg.n_users, n_items=data_cfg.n_items,
                                    events_per_user=data_cfg.events_per_user, seed=data_cfg.seed)
        if getattr(data_cfg, "unicode_text", False):
            from preprocessing.sources import unicode_text

            tables = unicode_text.apply(tables)
        return tables
    if data_cfg.source == "movielens":
        from preprocessing.sources import movielens

        if not data_cfg.path or not fileio.isdir(data_cfg.path):
            raise DataError(f"data.path={data_cfg.path!r} is not a directory of MovieLens files; "
                            f"give one with --path DIR (recsys data movielens), --data DIR (recsys demo) "
                            f"or --set data.path=DIR")
        return movielens.load(data_cfg.path, max_bad_fraction=data_cfg.max_bad_fraction,
                              dead_letter_path=dead_letter_path or None)
    raise DataError(f"unknown data.source {data_cfg.source!r}; use 'synthetic' or 'movielens'")
