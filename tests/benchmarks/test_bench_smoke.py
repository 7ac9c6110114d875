"""Smoke tests for the preprocessing, training, quality and scale benchmarks (--quick, tiny data).

One Beam pipeline run serves all of them: the preprocessing benchmark keeps its output, the
training benchmark trains on it (--data) and the quality benchmark evaluates on it
(--prepared). Only the JSON/PNG structure and basic sanity are checked, never timings.
"""
import json
import os

import pytest

from benchmarks import common


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    from benchmarks import preprocessing

    out = tmp_path_factory.mktemp("preprocessing")
    rc = preprocessing.main(["--quick", "--modes", "in_memory:1", "--keep-outputs", "--out", str(out)])
    data = _load(os.path.join(out, "preprocessing.json"))
    return rc, out, data


@pytest.fixture(scope="module")
def version_dir(prep):
    _, _, data = prep
    return data["results"][0]["version_dir"]


@pytest.fixture(scope="module")
def training(tmp_path_factory, version_dir):
    from benchmarks import training

    out = tmp_path_factory.mktemp("training")
    rc = training.main(["--quick", "--data", version_dir, "--rankers", "dcn", "--batches", "64",
                        "--item-sweep", "none", "--user-sweep", "none", "--out", str(out)])
    return rc, out, _load(os.path.join(out, "training.json"))


@pytest.fixture(scope="module")
def quality(tmp_path_factory, version_dir):
    from benchmarks import quality

    out = tmp_path_factory.mktemp("quality")
    rc = quality.main(["--quick", "--prepared", f"synthetic={version_dir}", "--movielens",
                       str(out / "no-such-movielens"), "--epochs", "1", "--ranker-max-train-events", "500",
                       "--ranker-protocols", "time_split_full", "--out", str(out)])
    return rc, out, _load(os.path.join(out, "quality.json"))


def test_preprocessing_json(prep):
    rc, out, data = prep
    assert rc == 0
    assert data["benchmark"] == "preprocessing" and data["partial"] is False
    assert data["machine"]["logical_cores"] >= 1 and data["machine"]["packages"]["apache-beam"]
    (run,) = data["results"]
    assert run["mode"] == "in_memory" and run["workers"] == 1
    assert run["rows"] > 1000 and run["rows_processed"] == run["rows"]
    assert run["wall_s"] > 0 and run["rows_per_s"] > 0 and run["cpu_s"] > 0
    assert run["peak_rss_tree_mb"] >= run["peak_rss_main_mb"] > 100  # TensorFlow alone is more than that
    assert run["train"] > run["eval"] > 0
    assert os.path.isdir(run["version_dir"])
    assert data["skipped"] == [] and "table" in data
    assert os.path.getsize(os.path.join(out, "preprocessing.png")) > 1000


def test_preprocessing_planning_helpers():
    from benchmarks import preprocessing

    shape = preprocessing.synthetic_shape(1_000_000)
    assert shape == {"n_users": 40000, "n_items": 20000}
    runs = [{"rows": 100, "mode": "a", "wall_s": 10.0, "process_s": 15.0},
            {"rows": 100, "mode": "b", "wall_s": 20.0, "process_s": 25.0},
            {"rows": 1000, "mode": "a", "wall_s": 40.0, "process_s": 45.0}]
    assert preprocessing.estimate_seconds(1000, "b", runs) == pytest.approx(20.0 * 4 + 5.0)  # a grew 4x
    assert preprocessing.estimate_seconds(1000, "c", runs) is None
    fit = preprocessing.linear_fits(runs)["a"]
    assert fit["fixed_s"] == pytest.approx(20.0 / 3) and fit["per_row_s"] == pytest.approx(1.0 / 30)


def test_training_json(training):
    rc, out, data = training
    assert rc == 0
    assert data["benchmark"] == "training"
    retrieval = data["retrieval"]
    assert [r["batch"] for r in retrieval] == [64]
    for r in data["results"]:
        for key in ("model", "batch", "steps", "step_s_median", "examples_per_s", "params", "peak_rss_mb"):
            assert key in r, key
        assert r["examples_per_s"] > 0 and r["steps"] >= 2
    if data["ranking_status"]["available"]:
        assert {r["model"] for r in data["ranking"]} == {"dcn"}
        assert all("examples_per_s" in r or "error" in r for r in data["ranking"])
    else:
        assert "pending" in data["ranking_status"]["reason"] or "import" in data["ranking_status"]["reason"]
    assert data["vocab_sweep"] == []  # skipped here (--item-sweep none): tracing is most of its cost
    assert os.path.getsize(os.path.join(out, "training.png")) > 1000


def test_training_vocab_remap():
    import numpy as np

    from benchmarks import training
    from preprocessing.schema import T

    rng = np.random.default_rng(0)
    base = {T.ITEM_IDX: np.array([[0, 5, 9]]), T.HISTORY_IDX: np.array([[[-1, 3, 4]] * 3]),
            T.USER_IDX: np.array([[1, 2, 3]]), T.HOUR: np.array([[1, 2, 3]])}
    counts = np.ones(11)
    same, c = training.remap_ids("items", base, 11, 11, counts, rng)
    assert c is counts and all(np.array_equal(same[k], base[k]) for k in base)
    big, c = training.remap_ids("items", base, 1_000_000, 11, counts, rng)
    assert len(c) == 1_000_000 and big[T.ITEM_IDX].max() < 1_000_000 - 1 and big[T.ITEM_IDX].max() > 11
    assert (big[T.HISTORY_IDX][..., 0] == -1).all() and (big[T.HISTORY_IDX][..., 1:] >= 0).all()
    assert np.array_equal(big[T.USER_IDX], base[T.USER_IDX]) and np.array_equal(big[T.HOUR], base[T.HOUR])
    users, _ = training.remap_ids("users", base, 500_000, 4, counts, rng)
    assert users[T.USER_IDX].max() < 500_000 - 1 and np.array_equal(users[T.ITEM_IDX], base[T.ITEM_IDX])


def test_quality_json(quality):
    from benchmarks import quality as quality_mod

    rc, out, data = quality
    assert rc == 0
    assert data["benchmark"] == "quality" and data["partial"] is False
    by_name = {d["name"]: d for d in data["datasets"]}
    assert "not found" in by_name["movielens"]["skipped"] and by_name["movielens"]["rows"] == []
    syn = by_name["synthetic"]
    assert syn["splits"]["loo_source"] == "time_split"
    loo = syn["splits"]["leave_one_out"]
    assert loo["eval"] > 0 and loo["train"] > loo["eval"]
    rows = syn["rows"]
    protocols = ("time_split_full", "leave_one_out_full", "sampled_1_99", "tfrs_random_80_20")
    assert {r["protocol"] for r in rows} == set(protocols)
    for protocol in protocols:  # the classic baselines stand in every table, on the same queries
        models = {r["model"] for r in rows if r["protocol"] == protocol}
        assert {"popularity", "two_tower", "ease", "item_knn", "als"} <= models, protocol
        assert len({r["n_queries"] for r in rows if r["protocol"] == protocol}) == 1, protocol
    leads = {lead["protocol"] for lead in syn["leads"]}
    assert leads == set(protocols) and all(lead["low"] <= lead["lead"] <= lead["high"] for lead in syn["leads"])
    per_user = [lead for lead in syn["leads"] if lead["per_user"]]   # the time split's, every user counted once
    assert {(lead["protocol"], lead["metric"]) for lead in per_user} == {("time_split_full", "recall@50"),
                                                                         ("time_split_full", "ndcg@10")}
    assert all(lead["n_queries"] == lead["n_users"] for lead in per_user)
    for r in rows:
        for key in ("recall@10", "recall@50", "recall@100", "ndcg@10", "mrr", "mrr@10", "coverage@10",
                    "novelty@10", "popularity_bias@10", "n_queries"):
            assert key in r, (r["model"], key)
        assert 0.0 <= r["recall@10"] <= r["recall@50"] <= r["recall@100"] <= 1.0
        assert r["n_queries"] > 0
    sampled = [r for r in rows if r["protocol"] == "sampled_1_99"]
    assert all(r["recall@100"] == 1.0 for r in sampled)  # 1 + 99 candidates: the target is always in the list
    n_loo = {r["n_queries"] for r in rows if r["protocol"] in ("leave_one_out_full", "sampled_1_99")}
    assert n_loo == {loo["eval"]}  # one query per user, same queries for every model and both LOO protocols
    assert syn["rankers"]["leave_one_out_full"]["status"] == "not run"
    ranking_ready = quality_mod.rankers_available() is None
    for protocol, st in syn["rankers"].items():
        if ranking_ready and protocol == "time_split_full":
            assert st["status"] == "measured", st  # the hook into trainer.train_ranking works
        if st["status"] == "measured":
            rr = [r for r in rows if r["protocol"] == protocol and r["model"] == "two_tower+dcn"]
            tt = [r for r in rows if r["protocol"] == protocol and r["model"] == "two_tower"]
            assert rr and rr[0]["recall@100"] == pytest.approx(tt[0]["recall@100"])  # re-ranks the same top-100
    refs = data["references"]
    assert refs and all(ref["source"] and ref["metrics"] for ref in refs)
    assert os.path.getsize(os.path.join(out, "quality.png")) > 1000
    assert not os.path.exists(os.path.join(out, "work"))


def test_leave_one_out_split_is_per_user_latest(tmp_path, version_dir):
    import numpy as np
    import tensorflow as tf

    from benchmarks import quality
    from trainer import data

    loo = quality.derive_leave_one_out(version_dir, str(tmp_path / "loo"))
    spec = {"user_id": tf.io.FixedLenFeature([], tf.string), "timestamp": tf.io.FixedLenFeature([], tf.int64)}

    def read(split):
        out = {"user_id": [], "timestamp": []}
        for b in tf.data.TFRecordDataset(data.files(loo, split), compression_type="GZIP").batch(4096):
            p = tf.io.parse_example(b, spec)
            out["user_id"].append(p["user_id"].numpy())
            out["timestamp"].append(p["timestamp"].numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    train, test = read("train"), read("eval")
    assert len(set(test["user_id"].tolist())) == len(test["user_id"])  # one test event per user
    last_train = {}
    for u, t in zip(train["user_id"], train["timestamp"]):
        last_train[u] = max(last_train.get(u, t), t)
    for u, t in zip(test["user_id"], test["timestamp"]):
        assert t >= last_train.get(u, t)
    assert os.path.isdir(os.path.join(loo, "transform_fn"))


def test_scale_reads_outputs(tmp_path, prep, training):
    from benchmarks import scale

    _, prep_out, _ = prep
    _, train_out, _ = training
    ann = {"benchmark": "ann", "partial": False, "settings": {"batch_size": 1000, "threads": 2},
           "data": {"dim": 64},
           "sizes": [{"n_items": n, "data_mb": n * 64 * 4 / common.MiB,
                      "brute_force": [{"method": "numpy brute force", "qps": 2e8 / n}],
                      "best": {"qps": 4e6 / n ** 0.5, "build_s": n / 1e5, "index_mb": n / 4e3, "config": "x"}}
                     for n in (100_000, 1_000_000)]}
    ann_path = tmp_path / "ann.json"
    common.write_json(str(ann_path), ann)
    out = tmp_path / "scale"
    rc = scale.main(["--out", str(out), "--ann", str(ann_path),
                     "--preprocessing", str(prep_out / "preprocessing.json"),
                     "--training", str(train_out / "training.json")])
    assert rc == 0
    data = _load(out / "scale.json")
    assert all(v["found"] for v in data["inputs"].values())
    by_name = {s["name"]: s for s in data["series"]}
    bf = by_name["numpy brute force (exact)"]
    assert bf["fit"]["b"] == pytest.approx(1.0) and bf["extrapolated"]["x"] == 1e8
    assert by_name["ScaNN, fastest config with recall@10 >= target"]["fit"]["b"] == pytest.approx(0.5)
    assert any(s["axis"] == "rows" for s in data["series"])
    assert any(s["panel"] == "batch" for s in data["series"])
    text = (out / "README_section.md").read_text()
    assert "100M" in text and "not a measurement" in text
    assert os.path.getsize(out / "scale.png") > 1000


def test_scale_without_inputs(tmp_path):
    from benchmarks import scale

    out = tmp_path / "scale"
    assert scale.main(["--out", str(out), "--results", str(tmp_path / "nothing")]) == 0
    data = _load(out / "scale.json")
    assert data["series"] == [] and not any(v["found"] for v in data["inputs"].values())


def test_fit_power_law():
    fit = common.fit_power_law([10, 100, 1000], [3, 30, 300])
    assert fit["b"] == pytest.approx(1.0) and fit["a"] == pytest.approx(0.3) and fit["r2"] == pytest.approx(1.0)
    assert common.fit_power_law([10], [1]) is None
    assert common.fit_power_law([10, 10], [1, 2]) is None
    assert common.power_law_at(fit, 1e4) == pytest.approx(3000)


def test_seeds_json(tmp_path, version_dir):
    """Every (variant, seed) trains once on the same split; the settings and seeds reach training."""
    from benchmarks import seeds

    rc = seeds.main(["--quick", "--prepared", f"synthetic={version_dir}", "--datasets", "synthetic", "--epochs", "1",
                     "--seeds", "1,2", "--variants", "default;train.weight_average=0", "--no-plot",
                     "--out", str(tmp_path)])
    assert rc == 0
    data = _load(os.path.join(tmp_path, "seeds.json"))
    (ds,) = data["datasets"]
    assert set(ds["baselines"]) == {"popularity", "ease"}
    assert [v["name"] for v in ds["variants"]] == ["default", "train.weight_average=0"]
    by = {}
    for v in ds["variants"]:
        assert [r["seed"] for r in v["runs"]] == [1, 2]
        for r in v["runs"]:
            assert all(0.0 <= r["metrics"][m] <= 1.0 for m in seeds.METRICS)
            assert r["lead"]["versus"] in ("popularity", "ease")
            by[v["name"], r["seed"]] = r["metrics"]["recall@50"], r["metrics"]["ndcg@10"]
        mean = sum(r["metrics"]["recall@50"] for r in v["runs"]) / 2
        assert abs(v["summary"]["recall@50"]["mean"] - mean) < 1e-9 and v["summary"]["recall@50"]["sd"] >= 0
    assert by["default", 1] != by["default", 2]                  # the seed reaches training
    assert by["default", 1] != by["train.weight_average=0", 1]   # so does the variant's override
    assert "mean +- sd" in data["table"]
    (avg,) = ds["seed_averaged"]   # the second variant vs the first, on seed-averaged per-query metrics
    assert avg["variant"] == "train.weight_average=0" and avg["versus"] == "default" and avg["seeds"] == 2
    for m in seeds.METRICS:
        means = [sum(r["metrics"][m] for r in v["runs"]) / 2 for v in ds["variants"]]
        assert avg[m]["lead"] == pytest.approx(means[1] / means[0] - 1, rel=1e-6), "the lead of the seeds' means"
        assert avg[m]["low"] <= avg[m]["lead"] <= avg[m]["high"]
    assert "averaged over the seeds" in data["table"]


def test_seed_averaged_leads_resolve_what_one_seed_cannot():
    """A planted lead (10% more hits, same users) is resolved; identical variants lead by exactly zero; one
    variant alone has nothing to compare."""
    import numpy as np

    from benchmarks import seeds

    rng = np.random.default_rng(0)
    users = np.arange(600)
    base = (rng.random(600) < 0.3).astype(float)
    better = np.maximum(base, (rng.random(600) < 0.1).astype(float))
    run = (lambda v: {m: v for m in seeds.METRICS})
    out = seeds.seed_averaged_leads(["a", "b", "c"], [[run(base), run(base)], [run(better), run(better)],
                                                      [run(base), run(base)]], users)
    assert [r["variant"] for r in out] == ["b", "c"] and all(r["versus"] == "a" for r in out)
    assert out[0]["recall@10"]["low"] > 0, "a planted lead is resolved"
    assert out[1]["recall@10"]["lead"] == 0.0
    assert seeds.seed_averaged_leads(["a"], [[run(base)]], users) == [], "nothing to compare"


def test_seeds_leave_one_out_refuses_a_time_split(tmp_path, version_dir):
    """Leave-one-out cut from a time split's vocabularies cannot rank items first seen after the cutoff (on
    ml-latest-small that cost the two-tower a third of its recall@50), so seeds refuses it unless asked."""
    from benchmarks import seeds

    with pytest.raises(SystemExit, match="is a time split"):
        seeds.main(["--quick", "--prepared", f"synthetic={version_dir}", "--datasets", "synthetic",
                    "--protocol", "leave_one_out_full", "--no-plot", "--out", str(tmp_path)])
