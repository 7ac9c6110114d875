import json

import pytest

from recsys.config import Config, from_dict, load_config


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
