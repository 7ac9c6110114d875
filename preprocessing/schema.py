"""THE feature schema: every raw column once, with its dtype, shape and role.

Preprocessing (Beam/TFT), training (tf.data), export (serving signatures) and the
serving client all read this module, so a feature is added or renamed in one place.

Raw features are what a caller of a served model sends: ids as strings, times as
unix seconds, history as fixed-length padded lists (``""`` / ``0`` pad, most recent
last). Transformed features (TRANSFORMED_FEATURES) and the rankers' fields (RANKER_FIELDS) are
declared here too: every list of feature names elsewhere (tower inputs, ranker inputs, field
docs, GBDT columns, the ``T`` names) is derived from these declarations.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

# Defaults for fixed-length list features. Changing them changes the serving
# contract, so they live here and are written into every artifact's config.
# The history length is a setting (``preprocess.history_length``): preprocessing writes
# histories of that length, and training and export read it back from the transformed data
# (``history_length_of``); HISTORY_LENGTH is its default.
HISTORY_LENGTH = 20
TITLE_TOKENS = 8
MAX_GENRES = 4

USER = "user"
ITEM = "item"
CONTEXT = "context"
HISTORY = "history"
LABEL = "label"
META = "meta"
RETRIEVAL = "retrieval"   # produced at request time by the retrieval stage, never by logs


@dataclasses.dataclass(frozen=True)
class Column:
    """One raw column: name, dtype ('string' | 'int64' | 'float32'), fixed length (0 = scalar), role."""

    name: str
    dtype: str
    role: str
    length: int = 0
    doc: str = ""
    default: object = None

    @property
    def shape(self) -> List[int]:
        return [self.length] if self.length else []

    def tf_dtype(self):
        import tensorflow as tf

        return {"string": tf.string, "int64": tf.int64, "float32": tf.float32}[self.dtype]

    def pad_value(self):
        return {"string": "", "int64": 0, "float32": 0.0}[self.dtype]


RAW_COLUMNS: Sequence[Column] = (
    # who
    Column("user_id", "string", USER, doc="user identifier"),
    Column("user_age_bucket", "string", USER, doc="age bucket, e.g. '25-34' or 'unknown'", default="unknown"),
    Column("user_country", "string", USER, doc="ISO country code or 'unknown'", default="unknown"),
    Column("user_signup_ts", "int64", USER, doc="signup time (unix s); 0 = unknown", default=0),
    # what
    Column("item_id", "string", ITEM, doc="item identifier"),
    Column("item_title", "string", ITEM, doc="free-text title", default=""),
    Column("item_genres", "string", ITEM, doc="'|'-separated genres", default=""),
    Column("item_price", "float32", ITEM, doc="price in currency units; 0 = free/unknown", default=0.0),
    Column("item_release_ts", "int64", ITEM, doc="release time (unix s); 0 = unknown", default=0),
    # when / where
    Column("timestamp", "int64", CONTEXT, doc="event time (unix s)"),
    Column("device", "string", CONTEXT, doc="surface the event happened on", default="unknown"),
    # the user's recent past, strictly before `timestamp` (most recent last, left-padded)
    Column("history_item_ids", "string", HISTORY, length=HISTORY_LENGTH, doc="last N item ids before the event"),
    Column("history_ts", "int64", HISTORY, length=HISTORY_LENGTH, doc="their event times (0 = pad)"),
    Column("history_ratings", "float32", HISTORY, length=HISTORY_LENGTH,
           doc="the user's rating of each history item (0 = not rated, or pad)"),
    # labels
    Column("rating", "float32", LABEL, doc="explicit rating (1-5); 0 = none"),
    Column("click", "float32", LABEL, doc="engagement label (1 = engaged)"),
)

# Candidate-source features: the retrieval stage attaches them to every candidate it hands to
# the ranker (inside the `recommend` SavedModel they come from the ScaNN stage). They are not in
# the logs, so they are not in RAW_COLUMNS (the raw spec the Beam pipeline writes and TFT reads):
# the ranking model takes them as raw inputs beside the TFT features.
RETRIEVAL_COLUMNS: Sequence[Column] = (
    Column("candidate_source", "string", RETRIEVAL, doc="which retriever proposed the candidate "
           "(one of CANDIDATE_SOURCES; anything else = unknown)", default="scann"),
    Column("retrieval_rank", "int64", RETRIEVAL, doc="1-based rank in that retriever's list; 0 = unknown",
           default=0),
    Column("retrieval_score", "float32", RETRIEVAL, doc="that retriever's score (two-tower: cosine)",
           default=0.0),
)
CANDIDATE_SOURCES = ("scann", "brute_force", "popularity", "logged")
RETRIEVAL_FEATURES = [c.name for c in RETRIEVAL_COLUMNS]

COLUMNS: Dict[str, Column] = {c.name: c for c in (*RAW_COLUMNS, *RETRIEVAL_COLUMNS)}

# Raw record fields that the data sources produce per interaction (before the
# Beam pipeline joins user/item tables and computes history).
INTERACTION_FIELDS = ("user_id", "item_id", "timestamp", "rating", "click", "device")
USER_FIELDS = tuple(c.name for c in RAW_COLUMNS if c.role == USER)
ITEM_FIELDS = tuple(c.name for c in RAW_COLUMNS if c.role == ITEM)


def names(*roles: str) -> List[str]:
    return [c.name for c in RAW_COLUMNS if c.role in roles]


QUERY_FEATURES = names(USER, CONTEXT, HISTORY)  # what a retrieval request carries
CANDIDATE_FEATURES = names(ITEM)                # what the item catalogue carries
LABEL_FEATURES = names(LABEL)


def raw_columns(history_length: Optional[int] = None) -> Sequence[Column]:
    """RAW_COLUMNS with the history columns ``history_length`` long (None = HISTORY_LENGTH)."""
    if history_length is None or int(history_length) == HISTORY_LENGTH:
        return RAW_COLUMNS
    if int(history_length) < 1:
        raise ValueError(f"history length must be >= 1, got {history_length}")
    return tuple(dataclasses.replace(c, length=int(history_length)) if c.role == HISTORY else c for c in RAW_COLUMNS)


def history_length_of(transformed_feature_spec) -> int:
    """The history length a preprocessing output was written with (from its transformed feature spec)."""
    return int(transformed_feature_spec[T.HISTORY_IDX].shape[0])


def raw_feature_spec(roles: Sequence[str] = (USER, ITEM, CONTEXT, HISTORY, LABEL),
                     history_length: Optional[int] = None):
    """tf.io feature spec of raw tf.Examples (TFT trap: we write the raw schema ourselves)."""
    import tensorflow as tf

    return {c.name: tf.io.FixedLenFeature(c.shape, c.tf_dtype())
            for c in (*raw_columns(history_length), *RETRIEVAL_COLUMNS) if c.role in roles}


def raw_schema(history_length: Optional[int] = None):
    """tensorflow_metadata Schema proto for the raw feature spec (for TFXIO)."""
    from tensorflow_transform.tf_metadata import schema_utils

    return schema_utils.schema_from_feature_spec(raw_feature_spec(history_length=history_length))


def serving_signature(roles: Sequence[str], history_length: Optional[int] = None):
    """TensorSpecs (batch-first) for a serving signature taking raw features of ``roles``."""
    import tensorflow as tf

    return {c.name: tf.TensorSpec([None] + c.shape, c.tf_dtype(), name=c.name)
            for c in (*raw_columns(history_length), *RETRIEVAL_COLUMNS) if c.role in roles}


RANKING_ROLES = (USER, ITEM, CONTEXT, HISTORY, RETRIEVAL)  # what a ranking request carries per candidate


# ----------------------------------------------------------------------------- transformed features
# Every output of ``preprocessing.transform.preprocessing_fn`` is declared once below, with the raw
# columns it is computed from and the model stages that read it. The lists the trainer, the GBDT
# baseline, the exports and the benchmarks use (tower inputs, ranker inputs, field docs, GBDT
# columns, the ``T`` names) are views of these declarations, so a feature is added in one place
# here (plus the code that computes it in transform.py, and, for the ranker, its field's encoding).

# Stages that read transformed features directly. The ranker reads them through RANKER_FIELDS.
QUERY_TOWER = "query_tower"          # retrieval query tower (trainer/models/retrieval.py, sequence.py)
CANDIDATE_TOWER = "candidate_tower"  # retrieval candidate tower
TARGETS = "targets"                  # training labels
KEYS = "keys"                        # raw values kept for evaluation, exclusions and rebuilding raw requests
STAGES = (QUERY_TOWER, CANDIDATE_TOWER, TARGETS, KEYS)

PER_HISTORY_ITEM = -1  # Feature.length: one value per history position (``preprocess.history_length`` long)


@dataclasses.dataclass(frozen=True)
class Feature:
    """One transformed feature: name, dtype, raw sources, reading stages, fixed length (0 = scalar), doc.

    ``sources`` are the raw columns of the same row it is computed from (full-pass statistics such as
    the item vocabulary aside); tests check them against the traced preprocessing graph.
    Index features are int64 with -1 for padding and ``vocab_size`` (one OOV bucket) for
    unknown values; models add 1 and reserve index 0 for padding.
    """

    name: str
    dtype: str
    sources: Tuple[str, ...]
    uses: Tuple[str, ...] = ()
    length: int = 0
    doc: str = ""

    def shape(self, history_length: Optional[int] = None) -> List[int]:
        if self.length == PER_HISTORY_ITEM:
            return [int(history_length or HISTORY_LENGTH)]
        return [self.length] if self.length else []

    def tf_dtype(self):
        import tensorflow as tf

        return {"string": tf.string, "int64": tf.int64, "float32": tf.float32}[self.dtype]


def _passthrough(name: str, uses: Tuple[str, ...], doc: str) -> Feature:
    """A raw column copied unchanged into the transformed data."""
    col = COLUMNS[name]
    return Feature(name, col.dtype, (name,), uses, PER_HISTORY_ITEM if col.role == HISTORY else col.length, doc)


_HISTORY = ("history_item_ids", "history_ts", "timestamp")
_COMPUTED: Sequence[Feature] = (  # in the order preprocessing_fn computes them
    Feature("user_idx", "int64", ("user_id",), (QUERY_TOWER,), doc="user id (vocabulary index)"),
    Feature("user_age_idx", "int64", ("user_age_bucket",), (QUERY_TOWER,), doc="age bucket index"),
    Feature("user_country_idx", "int64", ("user_country",), (QUERY_TOWER,), doc="country index"),
    Feature("device_idx", "int64", ("device",), (QUERY_TOWER,), doc="device index"),
    Feature("user_tenure_z", "float32", ("user_signup_ts", "timestamp"), (QUERY_TOWER,),
            doc="log days since signup, z-scored"),
    Feature("item_idx", "int64", ("item_id",), (CANDIDATE_TOWER,),
            doc="item id (vocabulary index, shared with history)"),
    Feature("history_idx", "int64", ("history_item_ids",), (QUERY_TOWER,), length=PER_HISTORY_ITEM,
            doc="history item indices, most recent last, -1 = pad"),
    Feature("genre_idx", "int64", ("item_genres",), (CANDIDATE_TOWER,), length=MAX_GENRES, doc="genre indices"),
    Feature("title_idx", "int64", ("item_title",), (CANDIDATE_TOWER,), length=TITLE_TOKENS, doc="title token indices"),
    Feature("price_z", "float32", ("item_price",), (CANDIDATE_TOWER,), doc="log price, z-scored"),
    Feature("price_bucket", "int64", ("item_price",), (CANDIDATE_TOWER,), doc="price quantile bucket"),
    Feature("item_age_z", "float32", ("item_release_ts", "timestamp"),
            doc="log days since release at event time, z-scored"),
    Feature("item_age_bucket", "int64", ("item_release_ts", "timestamp"), doc="item age quantile bucket"),
    Feature("item_release_z", "float32", ("item_release_ts",), (CANDIDATE_TOWER,),
            doc="release time (years), z-scored; unknown -> mean"),
    Feature("time_z", "float32", ("timestamp",), (QUERY_TOWER,), doc="event time (years), z-scored"),
    Feature("hour", "int64", ("timestamp",), (QUERY_TOWER,), doc="hour of day 0..23 (UTC)"),
    Feature("weekday", "int64", ("timestamp",), (QUERY_TOWER,), doc="day of week 0..6, Monday = 0"),
    Feature("history_len", "int64", ("history_item_ids",), (QUERY_TOWER,), doc="number of real history items"),
    Feature("history_gaps", "float32", _HISTORY, (QUERY_TOWER,), length=PER_HISTORY_ITEM,
            doc="log1p hours between each history event and now (0 = pad)"),
    Feature("history_gap_z", "float32", _HISTORY, (QUERY_TOWER,), doc="log hours since the last event, z-scored"),
    Feature("country_x_genre", "int64", ("user_country", "item_genres"),
            doc="hashed cross of user country and primary genre"),
)
# Raw values the transformed data keeps: labels, keys for time-aware evaluation and exclusions, and every
# raw query column, so a raw request can be rebuilt from a transformed row (the ranking stage re-runs
# the TFT graph on query x candidate pairs).
_PASSTHROUGH: Sequence[Feature] = (
    _passthrough("rating", (TARGETS,), "explicit rating (0 = none)"),
    _passthrough("click", (TARGETS,), "engagement label"),
    _passthrough("timestamp", (KEYS,), "event time (unix s), for time-aware evaluation"),
    _passthrough("user_id", (KEYS,), "raw user id"),
    _passthrough("item_id", (KEYS,), "raw item id"),
    _passthrough("history_item_ids", (KEYS,), "raw history item ids (exclusions)"),
)
TRANSFORMED_FEATURES: Sequence[Feature] = (
    *_COMPUTED, *_PASSTHROUGH,
    *(_passthrough(n, (KEYS,), "raw query column") for n in QUERY_FEATURES
      if n not in {f.name for f in _PASSTHROUGH}),
)


def _unique(names) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def transformed_names(features: Sequence[Feature] = TRANSFORMED_FEATURES) -> Tuple[str, ...]:
    """Every preprocessing_fn output, in declaration order."""
    return tuple(f.name for f in features)


def passthrough_names(features: Sequence[Feature] = TRANSFORMED_FEATURES) -> Tuple[str, ...]:
    """Outputs that are a raw column copied unchanged (preprocessing_fn copies these from its inputs)."""
    return tuple(f.name for f in features if f.sources == (f.name,) and f.name in COLUMNS)


def stage_inputs(stage: str, features: Sequence[Feature] = TRANSFORMED_FEATURES) -> Tuple[str, ...]:
    """Transformed features a stage (QUERY_TOWER, CANDIDATE_TOWER, TARGETS, KEYS) reads, in declaration order."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    return tuple(f.name for f in features if stage in f.uses)


def raw_sources(names: Sequence[str], features: Sequence[Feature] = TRANSFORMED_FEATURES) -> Tuple[str, ...]:
    """Raw columns the transformed features ``names`` are computed from (RAW_COLUMNS order)."""
    by_name = {f.name: f for f in features}
    wanted = {s for n in names for s in by_name[n].sources}
    return tuple(c.name for c in RAW_COLUMNS if c.name in wanted)


def transformed_feature_spec(history_length: Optional[int] = None,
                             features: Sequence[Feature] = TRANSFORMED_FEATURES):
    """tf.io feature spec the transformed tf.Examples are written with (as declared here)."""
    import tensorflow as tf

    return {f.name: tf.io.FixedLenFeature(f.shape(history_length), f.tf_dtype()) for f in features}


def names_class(features: Sequence[Feature] = TRANSFORMED_FEATURES) -> type:
    """A namespace class with one UPPER_CASE constant per transformed feature (``T.USER_IDX == "user_idx"``)."""
    doc = "Transformed feature names (``preprocessing_fn`` outputs), derived from schema.TRANSFORMED_FEATURES."
    return type("T", (), {"__doc__": doc, **{f.name.upper(): f.name for f in features}})


T = names_class()
QUERY_TOWER_INPUTS = stage_inputs(QUERY_TOWER)
CANDIDATE_TOWER_INPUTS = stage_inputs(CANDIDATE_TOWER)

# ----------------------------------------------------------------------------- ranker fields
# The rankers (trainer/models/ranking.py) turn transformed features and the raw retrieval columns into
# named field tensors; explanations attribute scores to these fields. The GBDT baseline sees the same
# fields as scalar columns (trees cannot use embeddings), so each field also names its GBDT column.
EMBEDDING = "embedding"   # a [B, d] embedding (ids, id lists, crosses)
NUMERIC = "numeric"       # a number scaled by a learned vector

GBDT_NUMERIC = "numeric"          # a number as it is
GBDT_CATEGORICAL = "categorical"  # small vocabulary, categorical splits
GBDT_ID = "id"                    # high-cardinality id as a plain integer (categorical splits were ~14x slower)


@dataclasses.dataclass(frozen=True)
class GBDTColumn:
    name: str
    kind: str


@dataclasses.dataclass(frozen=True)
class RankerField:
    """One ranker field: name, the inputs it is computed from, its encoding, doc, and its GBDT column (if any)."""

    name: str
    inputs: Tuple[str, ...]
    encoding: str
    doc: str
    gbdt: Optional[GBDTColumn] = None


def _field(name, inputs, encoding, doc, gbdt: str = "", kind: str = GBDT_NUMERIC) -> RankerField:
    return RankerField(name, tuple(inputs), encoding, doc, GBDTColumn(gbdt, kind) if gbdt else None)


_E, _N = EMBEDDING, NUMERIC
_HIST_TITLE, _HIST_ITEM = ("history_idx", "title_idx"), ("history_idx", "item_idx")
# Order = the concatenation order of the fields (and the order the rankers read their inputs).
RANKER_FIELDS: Sequence[RankerField] = (
    _field("user_id", ["user_idx"], _E, "user id embedding", "user_idx", GBDT_ID),
    _field("user_age", ["user_age_idx"], _E, "user age bucket", "user_age_idx", GBDT_CATEGORICAL),
    _field("user_country", ["user_country_idx"], _E, "user country", "user_country_idx", GBDT_CATEGORICAL),
    _field("user_tenure", ["user_tenure_z"], _N, "days since signup (log, z)", "user_tenure_z"),
    _field("device", ["device_idx"], _E, "device / surface", "device_idx", GBDT_CATEGORICAL),
    _field("hour", ["hour"], _E, "hour of day", "hour"),
    _field("weekday", ["weekday"], _E, "day of week", "weekday"),
    _field("time", ["time_z"], _N, "event time (z)", "time_z"),
    _field("item_id", ["item_idx"], _E, "candidate item id embedding", "item_idx", GBDT_ID),
    _field("item_genres", ["genre_idx"], _E, "candidate genres", "primary_genre", GBDT_CATEGORICAL),
    _field("item_title", ["title_idx"], _E, "candidate title tokens"),
    _field("price", ["price_z"], _N, "price (log, z)", "price_z"),
    _field("price_bucket", ["price_bucket"], _E, "price bucket", "price_bucket", GBDT_CATEGORICAL),
    _field("freshness", ["item_age_z"], _N, "item age at event time (log days, z)", "item_age_z"),
    _field("freshness_bucket", ["item_age_bucket"], _E, "item age bucket", "item_age_bucket", GBDT_CATEGORICAL),
    _field("release", ["item_release_z"], _N, "release date (z)", "item_release_z"),
    _field("history_items", ["history_idx"], _E, "mean of the user's recent items"),
    _field("last_item", ["history_idx"], _E, "the user's last item", "last_item_idx", GBDT_ID),
    _field("recent_items", ["history_idx"], _E, "the user's last 3 items"),
    _field("history_len", ["history_len"], _N, "number of history items (log)", "history_len"),
    _field("history_gap", ["history_gap_z"], _N, "time since the user's last event (z)", "history_gap_z"),
    _field("history_rating", ["history_ratings"], _N, "how the user rated their recent items (shrunk mean - 3)",
           "history_rating"),
    _field("title_match_last", _HIST_TITLE, _N, "title words shared with the user's last item", "title_match_last"),
    _field("title_match_history", _HIST_TITLE, _N, "most title words shared with any history item",
           "title_match_history"),
    _field("genre_match_history", ("history_idx", "genre_idx"), _N,
           "share of history items with the candidate's primary genre", "genre_match_history"),
    _field("covisit_history", _HIST_ITEM, _N, "co-visitation: summed similarity of the candidate to the history items"),
    _field("covisit_last", _HIST_ITEM, _N, "co-visitation: similarity of the candidate to the user's last item"),
    _field("country_x_genre", ["country_x_genre"], _E, "cross: user country x primary genre", "country_x_genre",
           GBDT_ID),
    _field("last_item_x_item", _HIST_ITEM, _E, "cross: the user's last item x candidate (hashed)"),
    _field("candidate_source", ["candidate_source"], _E, "which retriever proposed the candidate",
           "candidate_source_idx", GBDT_CATEGORICAL),
    _field("retrieval_rank", ["retrieval_rank"], _N, "candidate's rank in the retriever's list (log)",
           "retrieval_rank"),
    _field("retrieval_score", ["retrieval_score"], _N, "candidate's retrieval score", "retrieval_score"),
)


def check_ranker_fields(fields: Sequence[RankerField] = RANKER_FIELDS,
                        features: Sequence[Feature] = TRANSFORMED_FEATURES) -> None:
    """ValueError naming the first field that reads an undeclared input or has an unknown encoding."""
    known = set(transformed_names(features)) | set(RETRIEVAL_FEATURES)
    for f in fields:
        if f.encoding not in (EMBEDDING, NUMERIC):
            raise ValueError(f"ranker field {f.name!r}: encoding must be {EMBEDDING!r} or {NUMERIC!r}")
        missing = [i for i in f.inputs if i not in known]
        if missing:
            raise ValueError(f"ranker field {f.name!r} reads {missing}, which are neither transformed features "
                             f"(TRANSFORMED_FEATURES) nor retrieval columns (RETRIEVAL_COLUMNS)")
        if f.gbdt is not None and f.gbdt.kind not in (GBDT_NUMERIC, GBDT_CATEGORICAL, GBDT_ID):
            raise ValueError(f"ranker field {f.name!r}: unknown GBDT column kind {f.gbdt.kind!r}")


def ranker_transformed_inputs(fields: Sequence[RankerField] = RANKER_FIELDS,
                              features: Sequence[Feature] = TRANSFORMED_FEATURES) -> Tuple[str, ...]:
    """Transformed features the rankers read, in field order."""
    declared = set(transformed_names(features))
    return _unique(i for f in fields for i in f.inputs if i in declared)


def ranker_inputs(fields: Sequence[RankerField] = RANKER_FIELDS,
                  features: Sequence[Feature] = TRANSFORMED_FEATURES) -> Tuple[str, ...]:
    """Everything a ranker reads: its transformed features, then the raw retrieval columns."""
    retrieval = _unique(i for f in fields for i in f.inputs if i in RETRIEVAL_FEATURES)
    return ranker_transformed_inputs(fields, features) + retrieval


def field_docs(fields: Sequence[RankerField] = RANKER_FIELDS) -> "collections.OrderedDict[str, str]":
    """Field name -> what it is (reported by ``recsys explain``), in concatenation order."""
    return collections.OrderedDict((f.name, f.doc) for f in fields)


def field_names(encoding: Optional[str] = None, fields: Sequence[RankerField] = RANKER_FIELDS) -> Tuple[str, ...]:
    """Field names (all, or those of one encoding), in concatenation order."""
    return tuple(f.name for f in fields if encoding in (None, f.encoding))


def gbdt_columns(kind: str, fields: Sequence[RankerField] = RANKER_FIELDS) -> Tuple[str, ...]:
    """The GBDT baseline's columns of one kind (GBDT_NUMERIC | GBDT_CATEGORICAL | GBDT_ID), in field order."""
    return tuple(f.gbdt.name for f in fields if f.gbdt is not None and f.gbdt.kind == kind)


def gbdt_field_columns(fields: Sequence[RankerField] = RANKER_FIELDS) -> Dict[str, Tuple[str, ...]]:
    """Ranker field -> the GBDT columns that carry it (left out with the field by ``ranking.features_off``)."""
    return {f.name: (f.gbdt.name,) for f in fields if f.gbdt is not None}


check_ranker_fields()
RANKER_TRANSFORMED_INPUTS = ranker_transformed_inputs()
RANKER_INPUTS = ranker_inputs()
FIELD_DOCS = field_docs()
FIELDS = field_names()


# Vocabulary file names written by TF-Transform (transform_fn/assets/<name>).
VOCAB_USER = "user_id"
VOCAB_ITEM = "item_id"
VOCAB_GENRE = "genre"
VOCAB_TITLE = "title_token"
VOCAB_AGE = "user_age_bucket"
VOCAB_COUNTRY = "user_country"
VOCAB_DEVICE = "device"
CROSS_BUCKETS = 1000
