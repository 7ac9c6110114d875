"""Data sources: each returns ``RawTables`` on the project schema."""
from __future__ import annotations

from preprocessing.sources.tables import DataError, RawTables, write_raw  # noqa: F401
from recsys import fileio


def load_source(data_cfg, dead_letter_path: str = "") -> RawTables:
    """Builds the raw tables the config asks for (synthetic generator, MovieLens files or an interaction log)."""
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
    if data_cfg.source == "csv":
        from preprocessing.sources import interaction_log

        if not data_cfg.path:
            raise DataError("data.source=csv needs data.path: an interactions file or a directory with "
                            "interactions.csv (--path, --data or --set data.path=...)")
        return interaction_log.load(data_cfg.path, columns=data_cfg.columns, header=data_cfg.header,
                                    rating_max=data_cfg.rating_max, event_types=data_cfg.event_types,
                                    time_format=data_cfg.time_format,
                                    max_bad_fraction=data_cfg.max_bad_fraction,
                                    dead_letter_path=dead_letter_path or None)
    raise DataError(f"unknown data.source {data_cfg.source!r}; use 'synthetic', 'movielens' or 'csv'")


def detect(path: str) -> str:
    """Which file source reads ``path``: ``movielens`` for a directory in one of its layouts (a ratings
    file and its movies file), else ``csv`` (an interaction log); a one-line error when neither fits."""
    from preprocessing.sources import interaction_log, movielens

    if movielens.is_movielens(path):
        return "movielens"
    try:
        interaction_log.find_interactions(path)
    except DataError as e:
        raise DataError(f"{e}; or a MovieLens directory (u.data, ratings.dat or ratings.csv with its movies file)") \
            from None
    return "csv"
