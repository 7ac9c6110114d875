"""THE feature schema: every raw column once, with its dtype, shape and role.

Preprocessing (Beam/TFT), training (tf.data), export (serving signatures) and the
serving client all read this module, so a feature is added or renamed in one place.

Raw features are what a caller of a served model sends: ids as strings, times as
unix seconds, history as fixed-length padded lists (``""`` / ``0`` pad, most recent
last). Transformed feature names are listed here too because trainer models consume
them by name.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

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


class T:
    """Transformed feature names (outputs of ``preprocessing.transform.preprocessing_fn``).

    Index features are int64 with -1 for padding and ``vocab_size`` (one OOV bucket)
    for unknown values; models add 1 and reserve index 0 for padding.
    """

    USER_IDX = "user_idx"
    USER_AGE_IDX = "user_age_idx"
    USER_COUNTRY_IDX = "user_country_idx"
    USER_TENURE_Z = "user_tenure_z"            # log days since signup, z-scored
    ITEM_IDX = "item_idx"
    GENRE_IDX = "genre_idx"                    # [MAX_GENRES]
    TITLE_IDX = "title_idx"                    # [TITLE_TOKENS]
    PRICE_Z = "price_z"
    PRICE_BUCKET = "price_bucket"
    ITEM_AGE_Z = "item_age_z"                  # log days since release at event time, z-scored
    ITEM_AGE_BUCKET = "item_age_bucket"
    ITEM_RELEASE_Z = "item_release_z"          # release time (years), z-scored; unknown -> mean
    TIME_Z = "time_z"                          # event time (years), z-scored
    HOUR = "hour"                              # 0..23 (UTC)
    WEEKDAY = "weekday"                        # 0..6
    DEVICE_IDX = "device_idx"
    HISTORY_IDX = "history_idx"                # [HISTORY_LENGTH], -1 = pad
    HISTORY_LEN = "history_len"                # number of real history items
    HISTORY_GAP_Z = "history_gap_z"            # log hours since last event, z-scored
    HISTORY_GAPS = "history_gaps"              # [HISTORY_LENGTH] log1p hours between each history event and now
    COUNTRY_X_GENRE = "country_x_genre"        # hashed cross of user country and primary genre
    RATING = "rating"
    CLICK = "click"
    TIMESTAMP = "timestamp"                    # kept for time-aware evaluation


# Vocabulary file names written by TF-Transform (transform_fn/assets/<name>).
VOCAB_USER = "user_id"
VOCAB_ITEM = "item_id"
VOCAB_GENRE = "genre"
VOCAB_TITLE = "title_token"
VOCAB_AGE = "user_age_bucket"
VOCAB_COUNTRY = "user_country"
VOCAB_DEVICE = "device"
CROSS_BUCKETS = 1000
