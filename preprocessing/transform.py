"""``preprocessing_fn``: raw features -> model features, TF-Transform ops only.

The same graph runs in the Beam pipeline (full-pass analyzers: vocabularies,
means/variances, quantiles) and inside every exported SavedModel, so training and
serving can never disagree on a vocabulary or a scaling constant.

Index outputs use -1 for padding; unknown values map to the one OOV bucket
(``vocab_size``). Models shift by +1 so that embedding row 0 is padding.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import analyzers as tft_analyzers

from preprocessing import schema
from preprocessing.schema import T

HOUR = 3600
DAY = 86400
YEAR = 365.25 * DAY
EPOCH_2000 = 946_684_800
# Quantile sketch error: exact (so re-runs give identical buckets) up to ~100K rows per split.
QUANTILE_EPS = 1e-5
DEFAULT_OPTIONS = {"title_vocab_size": 5000, "num_price_buckets": 10, "num_age_buckets": 8}


def counted_vocabulary(x, vocab_filename, top_k=None):
    """``tft.vocabulary(x)`` (most frequent first), with every occurrence given weight 1.

    The same vocabulary file: a token's summed weight is its count (whole numbers, exact in float64 up
    to 2**53 occurrences), ordered and tie-broken the same way. The difference is where counting happens:
    unweighted, TF-Transform sends every token occurrence through Beam as its own element (no per-batch
    reduction; ~10 elements a row here, the largest Beam overhead at 1M rows); weighted, the graph
    reduces each batch to its unique tokens and their sums first.
    """
    return tft.vocabulary(x, vocab_filename=vocab_filename, top_k=top_k, weights=tf.ones(tf.shape(x), tf.float32))


def _vocab_ids(x, vocab_filename, top_k=None):
    """Vocabulary over non-empty values of ``x`` (any shape) and lookup with one OOV bucket; '' -> -1."""
    vocab = counted_vocabulary(x, vocab_filename, top_k=top_k)
    ids = tft.apply_vocabulary(x, vocab, num_oov_buckets=1)
    return tf.where(tf.equal(x, ""), tf.constant(-1, tf.int64), ids)


def _fixed_tokens(strings, sep, length):
    """Splits strings and pads/truncates to ``length`` tokens ('' pad)."""
    tokens = tf.strings.split(strings, sep=sep)
    return tokens.to_tensor(default_value="", shape=[None, length])


def title_tokens(titles):
    text = tf.strings.lower(titles)
    text = tf.strings.regex_replace(text, r"[^a-z0-9]+", " ")
    text = tf.strings.strip(text)
    return _fixed_tokens(text, None, schema.TITLE_TOKENS)


def _days(later, earlier):
    """Days (fractional) from ``earlier`` to ``later``; 0 when ``earlier`` is unknown (0)."""
    days = tf.cast(tf.maximum(later - earlier, 0), tf.float32) / DAY
    return tf.where(earlier > 0, days, tf.zeros_like(days))


def _log_days(later, earlier):
    """log1p of ``_days``."""
    return tf.math.log1p(_days(later, earlier))


def history_gaps(ts, hist_ts, real):
    """[B, L] log1p(hours from each history event to the event time ``ts``); 0 at padded positions."""
    gaps = tf.math.log1p(tf.cast(tf.maximum(tf.expand_dims(ts, 1) - hist_ts, 0), tf.float32) / HOUR)
    return tf.where(real, gaps, tf.zeros_like(gaps))


# How far (in standard deviations) a z-score may go past the edge of the analysed range: enough for the
# weeks after a log ends (an eval period, a model served soon after training, this week's new releases),
# bounded for what lies far beyond it.
Z_MARGIN = 1.0


def _z(x, mean, var):
    """``tft.scale_to_z_score``'s own arithmetic on given statistics (0 std: centred only)."""
    numerator = x - mean
    denominator = tf.sqrt(var)
    return tf.where(tf.not_equal(denominator, 0), tf.divide(numerator, denominator), numerator)


def _held(x, lo, hi, var):
    """``x`` held within ``Z_MARGIN`` standard deviations of [lo, hi]."""
    margin = Z_MARGIN * tf.sqrt(var)
    return tf.clip_by_value(x, lo - margin, hi + margin)


def z_in_range(x):
    """``tft.scale_to_z_score(x)``, held within ``Z_MARGIN`` of the analysed range.

    A z-score is linear, so a value far beyond anything the training data reached extrapolates the
    towers without bound: served "now", years after a log ends, a movie log of 2000-2003 puts the
    event-time feature at z ~ 50, and a 60-hour sample log at z ~ 3,000 (its ranker then predicted
    ratings of -2e6). Inside the range, and up to one standard deviation past it (the eval period and
    the weeks after training: there a little extrapolation of "newer" is what the models use), the
    output equals ``tft.scale_to_z_score``; beyond that it is held. Min and max are analysers over the
    same raw values, so this stays in one analysis phase.
    """
    mean, var = tft_analyzers._mean_and_var(x)  # noqa: SLF001 (scale_to_z_score's own)
    return _z(_held(x, tft.min(x), tft.max(x), var), mean, var)


def release_z(years, known):
    """z-score of release times with unknown releases imputed to the mean of the known ones, in ONE
    analyzer phase, held within ``Z_MARGIN`` of the known ones' range (as ``z_in_range``).

    Imputing first (``scale_to_z_score(where(known, years, mean(known)))``) makes the z-score's
    analyzer depend on another analyzer: a second analysis phase, one more pass over the training
    data and one more trace of ``preprocessing_fn`` (~5-10 s per run, and TF-Transform's "cache key
    varies on repeated tracing" warnings). The same numbers follow from statistics of the known values
    alone: imputed values sit at the mean, so the imputed column's mean is the known mean and its
    variance is the known variance times the known fraction. This is the arithmetic of
    ``tft.scale_to_z_score`` (same analyzer, same ops), so when every release is known (the synthetic
    data) the output is bit-identical to imputing first; with unknown releases it agrees up to float
    rounding, and unknown releases map to exactly 0.
    """
    known_years = tf.boolean_mask(years, known)
    mean, var = tft_analyzers._mean_and_var(known_years)  # noqa: SLF001 (scale_to_z_score's own)
    known_fraction = tft.mean(tf.cast(known, tf.float32))
    held = _held(years, tft.min(known_years), tft.max(known_years), var)
    z = _z(held, mean, var * known_fraction)
    return tf.where(known, z, tf.zeros_like(z))


def preprocessing_fn(inputs, custom_config=None):
    """TFX-style entry point: dict of raw dense tensors -> dict of transformed tensors."""
    opts = dict(DEFAULT_OPTIONS, **(custom_config or {}))
    out = {}
    ts = inputs["timestamp"]

    # ids and categorical user/context features
    out[T.USER_IDX] = _vocab_ids(inputs["user_id"], schema.VOCAB_USER)
    out[T.USER_AGE_IDX] = _vocab_ids(inputs["user_age_bucket"], schema.VOCAB_AGE)
    out[T.USER_COUNTRY_IDX] = _vocab_ids(inputs["user_country"], schema.VOCAB_COUNTRY)
    out[T.DEVICE_IDX] = _vocab_ids(inputs["device"], schema.VOCAB_DEVICE)
    out[T.USER_TENURE_Z] = z_in_range(_log_days(ts, inputs["user_signup_ts"]))

    # item: the history shares the item vocabulary, so one embedding table serves both
    item_vocab = counted_vocabulary(inputs["item_id"], schema.VOCAB_ITEM)
    out[T.ITEM_IDX] = tft.apply_vocabulary(inputs["item_id"], item_vocab, num_oov_buckets=1)
    history = inputs["history_item_ids"]
    history_idx = tft.apply_vocabulary(history, item_vocab, num_oov_buckets=1)
    out[T.HISTORY_IDX] = tf.where(tf.equal(history, ""), tf.constant(-1, tf.int64), history_idx)

    genres = _fixed_tokens(inputs["item_genres"], "|", schema.MAX_GENRES)
    out[T.GENRE_IDX] = _vocab_ids(genres, schema.VOCAB_GENRE)
    out[T.TITLE_IDX] = _vocab_ids(title_tokens(inputs["item_title"]), schema.VOCAB_TITLE,
                                  top_k=int(opts["title_vocab_size"]))
    # Quantile buckets are cut on the values before log1p (the same buckets: log1p is monotone). TensorFlow's
    # vectorised log1p can round a value 1 ulp apart from its scalar path, so a value on a boundary would land in
    # a bucket that depends on its position in the batch (a request's candidate vs the same item in training).
    price = tf.maximum(inputs["item_price"], 0.0)
    out[T.PRICE_Z] = z_in_range(tf.math.log1p(price))
    out[T.PRICE_BUCKET] = tft.bucketize(price, num_buckets=int(opts["num_price_buckets"]), epsilon=QUANTILE_EPS)

    # freshness: item age at event time (never negative; unknown release -> 0)
    age_days = _days(ts, inputs["item_release_ts"])
    out[T.ITEM_AGE_Z] = z_in_range(tf.math.log1p(age_days))
    out[T.ITEM_AGE_BUCKET] = tft.bucketize(age_days, num_buckets=int(opts["num_age_buckets"]), epsilon=QUANTILE_EPS)

    # absolute times (years): release in the candidate tower, "now" in the query tower, so the
    # dot product can learn that recent releases are preferred at any point in time
    release = inputs["item_release_ts"]
    years = tf.cast(release - EPOCH_2000, tf.float32) / YEAR  # offset keeps float32 precision
    out[T.ITEM_RELEASE_Z] = release_z(years, release > 0)
    out[T.TIME_Z] = z_in_range(tf.cast(ts - EPOCH_2000, tf.float32) / YEAR)

    # time of day / week (UTC); 1970-01-01 was a Thursday, so Monday = 0
    out[T.HOUR] = tf.math.floormod(ts // HOUR, 24)
    out[T.WEEKDAY] = tf.math.floormod(ts // DAY + 3, 7)

    # history shape: length, time since the last event and per-position gaps (hours, log1p)
    hist_ts = inputs["history_ts"]
    real = tf.not_equal(history, "")
    out[T.HISTORY_LEN] = tf.reduce_sum(tf.cast(real, tf.int64), axis=1)
    gaps = history_gaps(ts, hist_ts, real)
    out[T.HISTORY_GAPS] = gaps
    last_gap = tf.where(out[T.HISTORY_LEN] > 0, gaps[:, -1], tf.fill(tf.shape(ts), 12.0))  # none: ~18 years
    out[T.HISTORY_GAP_Z] = z_in_range(last_gap)

    # explicit cross: user country x primary genre, hashed (stable across runs)
    cross = tf.strings.join([inputs["user_country"], genres[:, 0]], separator="_x_")
    out[T.COUNTRY_X_GENRE] = tf.strings.to_hash_bucket_fast(cross, schema.CROSS_BUCKETS)

    # labels, keys (evaluation needs raw ids and times) and every raw query column (so a raw request
    # can be rebuilt from a transformed row) pass through unchanged, as schema.TRANSFORMED_FEATURES declares
    for name in schema.passthrough_names():
        out[name] = inputs[name]
    check_outputs(out)
    return out


def check_outputs(out) -> None:
    """ValueError unless the outputs are exactly the features declared in schema.TRANSFORMED_FEATURES."""
    declared = schema.transformed_names()
    undeclared = [k for k in out if k not in declared]
    missing = [k for k in declared if k not in out]
    if undeclared or missing:
        raise ValueError(f"preprocessing_fn outputs disagree with schema.TRANSFORMED_FEATURES: "
                         f"undeclared {undeclared}, declared but not computed {missing}")
