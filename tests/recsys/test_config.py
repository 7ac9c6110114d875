import json

import pytest

from recsys.config import Config, ConfigError, from_dict, load_config


def test_overrides_are_typed(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "retrieval.hidden=256,128", "retrieval.batch_norm=true",
                             "retrieval.temperature=0.2", "preprocess.beam_args=--a,--b"])
    assert cfg.train.epochs == 3 and cfg.retrieval.hidden == (256, 128) and cfg.retrieval.batch_norm is True
    assert cfg.retrieval.temperature == 0.2 and cfg.preprocess.beam_args == ["--a", "--b"]


def test_file_then_overrides_and_roundtrip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  n_users: 77\ntrain:\n  epochs: 2\n")
    cfg = load_config(str(path), ["train.epochs=5"])
    assert cfg.data.n_users == 77 and cfg.train.epochs == 5
    cfg.save(str(tmp_path / "out" / "config.json"))
    again = from_dict(json.load(open(tmp_path / "out" / "config.json")))
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("bad,match", [("train.nope=1", "unknown config key"), ("nope.x=1", "unknown config section"),
                                       ("train.epochs", "must look like"), ("retrieval.batch_norm=maybe", "boolean")])
def test_bad_overrides_say_what_is_wrong(bad, match):
    with pytest.raises((KeyError, ValueError), match=match):
        load_config(None, [bad])


def test_run_paths():
    cfg = Config(workdir="/w")
    assert cfg.run_dir == "/w/synthetic-u2000-i1500-s42"
    assert cfg.model_base_path == "/w/synthetic-u2000-i1500-s42/models"


@pytest.mark.parametrize("bad,match", [
    ("data.n_users=0", "at least 1"), ("data.events_per_user=-1", "greater than 0"),
    ("data.n_items=-3", "at least 1"), ("data.max_bad_fraction=1.5", "fraction"),
    ("preprocess.eval_fraction=0", "fraction"), ("train.learning_rate=inf", "finite"),
    ("retrieval.hidden=128,0", "at least 1"), ("eval.ks=10,-1", "at least 1"),
    ("serving.rest_port=99999", "port"), ("preprocess.direct_running_mode=fast", "not one of"),
    ("train.seed=-1", "must not be negative"), ("data.n_users=1e3", "not a valid int"),
    ("train.early_stopping_metric=recall", "loss or top_K"), ("train.early_stopping_metric=top_0", "loss or top_K"),
])
def test_values_are_validated_when_parsed(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [bad])


def test_files_and_saved_configs_are_validated_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  n_users: 0\n")
    with pytest.raises(ConfigError, match="data.n_users=0 must be at least 1"):
        load_config(str(path))
    path.write_text("train:\n  epochs: '3'\n  learning_rate: 1\n")   # strings and ints are coerced
    cfg = load_config(str(path))
    assert cfg.train.epochs == 3 and cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    saved = Config().to_dict()
    saved["train"]["batch_size"] = 0
    with pytest.raises(ConfigError, match="train.batch_size=0"):
        from_dict(saved)
    with pytest.raises(ConfigError, match="has type bool, expected int"):
        from_dict({"data": {"n_users": True}})
