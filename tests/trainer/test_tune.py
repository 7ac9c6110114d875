"""`recsys tune` (trainer/tune.py): the search space, the trials and where they are scored."""
import json
import os

import numpy as np
import pytest

from recsys.config import Config, ConfigError, load_config
from trainer import tune


def test_space_entries_split_at_commas_are_joined_back_and_bad_ones_are_refused():
    space = tune.parse_space(["retrieval.temperature=0.05", "0.1", "train.learning_rate=0.01,0.003"])
    assert space == {"retrieval.temperature": ["0.05", "0.1"], "train.learning_rate": ["0.01", "0.003"]}
    for bad, match in ((["retrieval.nope=1,2"], "unknown config key"), (["retrieval.temperature=0.1,-1"], "temperature"),
                       (["data.n_users=10,20"], "cannot change between trials"), (["0.1"], "section.key="),
                       (["train.epochs=1", "train.epochs=2"], "twice"), (["train.epochs="], "no values"), ([], "empty")):
        with pytest.raises(ConfigError, match=match):
            tune.parse_space(bad)


def test_trials_start_with_the_config_as_given_and_never_repeat_it():
    base = Config()
    space = {"retrieval.temperature": ["0.05", "0.1", "0.2"], "train.batch_size": ["512", "1024"]}
    trials = tune.draw(space, base, 10, seed=3)
    assert trials[0] == {}
    assert len(trials) == 6, "the 3 x 2 grid less the one combination that is the config as given"
    assert {"retrieval.temperature": "0.05", "train.batch_size": "512"} not in trials
    assert len({tuple(sorted(t.items())) for t in trials}) == len(trials)
    assert tune.draw(space, base, 3, seed=3) == trials[:3] and tune.draw(space, base, 3, seed=4) != trials[:3]
    same = tune.draw({"retrieval.temperature": ["0.1", "0.10", "0.05"]}, base, 5)
    assert same == [{}, same[1]] and same[1]["retrieval.temperature"] in ("0.1", "0.10"), "one trial per setting"
    big = {f"retrieval.{k}": [str(v) for v in range(1, 30)] for k in ("embedding_dim", "id_dim", "feature_dim",
                                                                       "seq_dim", "seq_layers", "seq_heads")}
    assert len(tune.draw(big, base, 8)) == 8, "29^6 combinations are drawn from, not listed"
    with pytest.raises(ConfigError, match="recall@K or ndcg@K"):
        tune.check_metric("mrr@10", (10, 50))
    with pytest.raises(ConfigError, match="at most"):
        tune.check_metric("recall@100", (10, 50))
    assert tune.holdout_cut(np.arange(100), 0.1) == 89
    with pytest.raises(ConfigError, match="between 0 and 1"):
        tune.holdout_cut(np.arange(100), 0.0)


def test_tune_scores_trials_on_the_latest_train_events_and_never_reads_the_eval_split(
        run_cfg, preprocessed, tmp_path, monkeypatch, capsys):
    from recsys import cli
    from trainer import data
    from trainer import train as train_mod

    read, cuts = [], []
    files = data.files
    monkeypatch.setattr(data, "files", lambda version_dir, split: read.append(split) or files(version_dir, split))
    train_retrieval = train_mod.train_retrieval
    monkeypatch.setattr(train_mod, "train_retrieval",
                        lambda *a, **k: cuts.append(k["before_ts"]) or train_retrieval(*a, **k))
    out = str(tmp_path / "tuning")
    argv = ["--workdir", run_cfg.workdir, "--set", "data.unicode_text=true", "--set", "retrieval.item_init=random",
            "--set", "tune.epochs=1", "--set", "eval.baselines=ease",
            "tune", "--trials", "2", "--space", "retrieval.temperature=0.05,0.5", "--out", out]
    assert cli.main(argv) == 0
    assert read and set(read) == {"train"}, "trials are scored on the train split's latest events, not the eval split"
    with open(os.path.join(out, "tuning.json"), encoding="utf-8") as f:
        result = json.load(f)
    assert cuts == [result["holdout"]["cut_ts"]] * 2, "every trial trains only on events before the held-out ones"
    first, second = result["trials"]
    assert first["overrides"] == {} and second["overrides"] == {"retrieval.temperature": "0.5"}
    assert result["holdout"]["n_queries"] >= tune.MIN_QUERIES and result["eval_split_read"] is False
    scores = [t["recall@50"] for t in result["trials"]]
    assert all(0.0 <= s <= 1.0 for s in scores) and result["best"]["recall@50"] == max(scores)
    assert set(result["yardsticks"]) == {"popularity", "ease"}
    assert max(scores) > result["yardsticks"]["popularity"], "a trained two-tower beats popularity on planted structure"
    best = load_config(os.path.join(out, "best.yaml"))
    want = 0.5 if result["best"]["trial"] == 2 else Config().retrieval.temperature
    assert best.retrieval.temperature == pytest.approx(want)
    assert os.path.getsize(os.path.join(out, "tuning.png")) > 1000
    for n in ("1", "2"):
        trial = os.path.join(out, "trials", n)
        assert os.path.exists(os.path.join(trial, "history.json")), "each trial's history is kept"
        assert not os.path.exists(os.path.join(trial, "checkpoints")), "its weights are not (tune.keep_checkpoints)"
    printed = capsys.readouterr().out
    assert "(as given)" in printed and "popularity" in printed and "best.yaml" in printed


def test_holdout_by_user_scores_each_users_latest_event_and_trains_on_the_rest(run_cfg, preprocessed, tmp_path,
                                                                            monkeypatch):
    from recsys import cli
    from trainer import data
    from trainer import train as train_mod

    cuts = []
    train_retrieval = train_mod.train_retrieval
    monkeypatch.setattr(train_mod, "train_retrieval",
                        lambda *a, **k: cuts.append(k["before_ts"]) or train_retrieval(*a, **k))
    out = str(tmp_path / "tuning")
    argv = ["--workdir", run_cfg.workdir, "--set", "data.unicode_text=true", "--set", "retrieval.item_init=random",
            "--set", "tune.epochs=1", "--set", "eval.baselines=ease", "tune", "--trials", "1", "--holdout-by", "user",
            "--out", out]
    assert cli.main(argv) == 0
    with open(os.path.join(out, "tuning.json"), encoding="utf-8") as f:
        result = json.load(f)
    h = result["holdout"]
    (cut,) = cuts
    assert isinstance(cut, data.UserCut) and h["by"] == "user" and h["users_held_out"] == len(cut)
    assert h["cut_digest"] == cut.digest and "fraction" not in h
    n_users = len(data.train_stats(preprocessed, data.load_catalogue(preprocessed), 1).seen)
    assert h["n_users"] > 0.5 * n_users, "the score spreads over most users (a time cut reaches only the recent ones)"
    assert h["n_queries"] <= 2 * h["n_users"], "about one held-out event per user"
    assert result["trials"][0]["recall@50"] > result["yardsticks"]["popularity"]
    with open(os.path.join(out, "best.yaml"), encoding="utf-8") as f:
        assert "each user's latest train event" in f.readline()
