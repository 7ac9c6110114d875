"""The feature declarations in preprocessing/schema.py are the one source of every feature list.

(1) the modules use the schema's views (the same objects, and the models read exactly those inputs);
(2) preprocessing_fn emits exactly the declared transformed features, with the declared dtype, shape
    and raw sources (read off the traced graph);
(3) a feature or field added to a copy of the declarations shows up in every derived view.
No training, no Beam: tiny models called eagerly and one graph trace.
"""
import dataclasses

import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from preprocessing import schema, transform
from preprocessing.schema import T
from recsys.config import Config
from trainer import gbdt, ranking_data
from trainer.features import FeatureSizes
from trainer.models import ranking, retrieval

SIZES = FeatureSizes(users=7, items=9, genres=4, title_tokens=11, ages=3, countries=3, devices=2, price_buckets=4,
                     item_age_buckets=4)
H = 5  # history length of the fake rows


def fake_inputs(n: int = 3):
    """Every transformed feature plus the retrieval columns, as small in-range tensors."""
    rng = np.random.default_rng(0)
    out = {}
    for f in schema.TRANSFORMED_FEATURES:
        shape = [n] + f.shape(H)
        if f.dtype == "string":
            out[f.name] = tf.constant(np.full(shape, b"x", dtype=object))
        elif f.dtype == "float32":
            out[f.name] = tf.constant(rng.normal(size=shape).astype(np.float32))
        else:
            out[f.name] = tf.constant(rng.integers(0, 2, shape).astype(np.int64))
    out["candidate_source"] = tf.constant([b"scann"] * n)
    out["retrieval_rank"] = tf.constant(np.arange(1, n + 1, dtype=np.int64))
    out["retrieval_score"] = tf.constant(np.zeros(n, np.float32))
    return out


# ----------------------------------------------------------------------------- (1) modules use the views

def test_modules_hold_the_schemas_views_not_copies():
    assert ranking.TRANSFORMED_INPUTS is schema.RANKER_TRANSFORMED_INPUTS
    assert ranking.MODEL_INPUTS is schema.RANKER_INPUTS
    assert ranking.FIELD_DOCS is schema.FIELD_DOCS and ranking.FIELDS is schema.FIELDS
    assert ranking_data.TRANSFORMED_INPUTS is schema.RANKER_TRANSFORMED_INPUTS
    assert ranking_data.MODEL_INPUTS is schema.RANKER_INPUTS
    assert set(ranking.NUMERIC_FIELDS) == set(schema.field_names(schema.NUMERIC))
    assert gbdt.NUMERIC == schema.gbdt_columns(schema.GBDT_NUMERIC)
    assert gbdt.CATEGORICAL == schema.gbdt_columns(schema.GBDT_CATEGORICAL)
    assert gbdt.IDS == schema.gbdt_columns(schema.GBDT_ID)
    assert gbdt.FIELD_COLUMNS == schema.gbdt_field_columns()
    assert {k: v for k, v in vars(T).items() if k.isupper()} == {n.upper(): n for n in schema.transformed_names()}
    # the ranker reads its transformed features, then the retrieval columns; every field has a doc
    assert schema.RANKER_INPUTS == schema.RANKER_TRANSFORMED_INPUTS + tuple(schema.RETRIEVAL_FEATURES)
    assert all(doc for doc in schema.FIELD_DOCS.values())


def test_export_signatures_carry_exactly_the_raw_columns_the_models_read():
    # one query request for retrieval and recommend: what the query tower or the ranker's query side reads
    query_raw = schema.raw_sources(schema.QUERY_TOWER_INPUTS)
    ranker_query_raw = set(schema.raw_sources(schema.RANKER_TRANSFORMED_INPUTS)) & set(schema.QUERY_FEATURES)
    assert set(query_raw) | ranker_query_raw == set(schema.QUERY_FEATURES)
    assert set(schema.QUERY_FEATURES) - set(query_raw) == {"history_ratings"}  # the rating head's, not the tower's
    assert tuple(schema.serving_signature([schema.USER, schema.CONTEXT, schema.HISTORY])) == tuple(schema.QUERY_FEATURES)
    assert schema.raw_sources(schema.CANDIDATE_TOWER_INPUTS) == tuple(schema.CANDIDATE_FEATURES)
    ranking_raw = set(schema.raw_sources(schema.RANKER_TRANSFORMED_INPUTS)) | set(schema.RETRIEVAL_FEATURES)
    assert set(schema.serving_signature(schema.RANKING_ROLES)) == ranking_raw


def _needs_each(call, inputs, names):
    """``call`` works on exactly ``names`` and fails (KeyError) without any one of them."""
    call({k: inputs[k] for k in names})
    for name in names:
        with pytest.raises(KeyError):
            call({k: inputs[k] for k in names if k != name})


def test_retrieval_towers_read_exactly_their_declared_inputs():
    cfg = dataclasses.replace(Config().retrieval, hidden=(8,), embedding_dim=4, id_dim=4, feature_dim=2, seq_dim=4,
                              history_encoder="gru", use_user_id=True, use_history=True, use_item_features=True)
    model = retrieval.TwoTowerModel(SIZES, cfg)
    x = fake_inputs()
    _needs_each(model.query_tower, x, schema.QUERY_TOWER_INPUTS)
    _needs_each(model.candidate_tower, x, schema.CANDIDATE_TOWER_INPUTS)
    # an undeclared feature is invisible to the tower, whatever the caller passes
    assert np.allclose(model.query_tower(x), model.query_tower({k: x[k] for k in schema.QUERY_TOWER_INPUTS}))


def test_ranker_reads_exactly_its_model_inputs_and_computes_every_declared_field():
    rcfg = dataclasses.replace(Config().ranking, embedding_dim=2, hidden=(4,), cross_layers=1, covisit_neighbours=2,
                               features_off=())
    model = ranking.build(SIZES, rcfg, "dcn")
    x = fake_inputs()
    _needs_each(model, x, ranking.MODEL_INPUTS)
    assert list(model.features(x)) == list(schema.FIELDS)


def test_ranker_names_a_declared_field_it_does_not_compute(monkeypatch):
    rcfg = dataclasses.replace(Config().ranking, embedding_dim=2, hidden=(4,), cross_layers=1, covisit_neighbours=2)
    model = ranking.build(SIZES, rcfg, "dcn")
    monkeypatch.setattr(ranking, "FIELDS", ranking.FIELDS + ("user_mood",))
    with pytest.raises(ValueError, match="user_mood"):
        model.features(fake_inputs())


def test_gbdt_columns_are_the_declared_ones():
    n = 4
    feats = {k: v.numpy() for k, v in fake_inputs(n).items() if k in schema.RANKER_INPUTS}
    z = np.zeros(n)
    pairs = ranking_data.Pairs(feats, z, z, z, z, z, np.arange(n), z)
    tables = ranking.item_tables(SIZES.items, np.arange(3), np.zeros((3, schema.TITLE_TOKENS)),
                                 np.zeros((3, schema.MAX_GENRES)))
    cols = gbdt.tabular(pairs, tables)
    assert set(cols) == set(gbdt.NUMERIC + gbdt.CATEGORICAL + gbdt.IDS)
    assert all(len(v) == n for v in cols.values())


# ----------------------------------------------------------------------------- (2) preprocessing_fn

def _sources_in_graph(tensor, placeholders):
    seen, stack, found = set(), [tensor.op], set()
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.name in placeholders:
            found.add(placeholders[op.name])
        stack.extend(i.op for i in op.inputs)
    return found


@pytest.mark.parametrize("history_length", [schema.HISTORY_LENGTH, 6])
def test_preprocessing_fn_emits_exactly_the_declared_features(history_length):
    from tensorflow_transform import impl_helper

    _, inputs, outputs = impl_helper.trace_preprocessing_function(
        transform.preprocessing_fn, schema.raw_feature_spec(history_length=history_length), use_tf_compat_v1=True)
    assert tuple(outputs) == schema.transformed_names()
    spec = schema.transformed_feature_spec(history_length)
    for name, t in outputs.items():
        assert t.dtype == spec[name].dtype, name
        assert t.shape.as_list() == [None] + list(spec[name].shape), name
    # declared raw sources = the raw inputs each output is computed from (per row; analyzers aside)
    placeholders = {t.op.name: name for name, t in inputs.items()}
    declared = {f.name: set(f.sources) for f in schema.TRANSFORMED_FEATURES}
    assert {k: _sources_in_graph(t, placeholders) for k, t in outputs.items()} == declared


def test_preprocessing_fn_refuses_outputs_the_schema_does_not_declare():
    declared = {name: None for name in schema.transformed_names()}
    transform.check_outputs(declared)
    with pytest.raises(ValueError, match="undeclared \\['user_mood'\\]"):
        transform.check_outputs(dict(declared, user_mood=None))
    with pytest.raises(ValueError, match="declared but not computed \\['price_z'\\]"):
        transform.check_outputs({k: v for k, v in declared.items() if k != "price_z"})


# ----------------------------------------------------------------------------- (3) the views are derived

def test_a_feature_added_to_the_declarations_reaches_every_view():
    feature = schema.Feature("user_mood_z", "float32", ("user_id", "timestamp"), (schema.QUERY_TOWER,),
                             length=schema.PER_HISTORY_ITEM, doc="mood, z-scored")
    field = schema.RankerField("user_mood", ("user_mood_z", "retrieval_score"), schema.NUMERIC, "the user's mood",
                               schema.GBDTColumn("user_mood_z", schema.GBDT_NUMERIC))
    features = (*schema.TRANSFORMED_FEATURES, feature)
    fields = (*schema.RANKER_FIELDS, field)

    assert schema.transformed_names(features)[-1] == "user_mood_z"
    assert schema.stage_inputs(schema.QUERY_TOWER, features)[-1] == "user_mood_z"
    assert "user_mood_z" not in schema.stage_inputs(schema.CANDIDATE_TOWER, features)
    assert schema.transformed_feature_spec(7, features)["user_mood_z"] == tf.io.FixedLenFeature([7], tf.float32)
    assert schema.names_class(features).USER_MOOD_Z == "user_mood_z"
    assert schema.raw_sources(["user_mood_z"], features) == ("user_id", "timestamp")
    assert "user_mood_z" not in schema.passthrough_names(features)

    schema.check_ranker_fields(fields, features)
    assert schema.ranker_transformed_inputs(fields, features) == schema.RANKER_TRANSFORMED_INPUTS + ("user_mood_z",)
    assert schema.ranker_inputs(fields, features) == (schema.RANKER_TRANSFORMED_INPUTS + ("user_mood_z",)
                                                      + tuple(schema.RETRIEVAL_FEATURES))
    assert list(schema.field_docs(fields).items())[-1] == ("user_mood", "the user's mood")
    assert schema.field_names(None, fields)[-1] == schema.field_names(schema.NUMERIC, fields)[-1] == "user_mood"
    assert schema.gbdt_columns(schema.GBDT_NUMERIC, fields)[-1] == "user_mood_z"
    assert schema.gbdt_field_columns(fields)["user_mood"] == ("user_mood_z",)


def test_a_field_reading_an_undeclared_feature_is_refused():
    field = schema.RankerField("user_mood", ("user_mood_z",), schema.NUMERIC, "the user's mood")
    with pytest.raises(ValueError, match="'user_mood' reads \\['user_mood_z'\\]"):
        schema.check_ranker_fields((*schema.RANKER_FIELDS, field))
    with pytest.raises(ValueError, match="encoding"):
        schema.check_ranker_fields((dataclasses.replace(schema.RANKER_FIELDS[0], encoding="one-hot"),))
