"""pipelines/: the compiled IR, the quality gate, and (opt-in) a full local run.

A local run of the whole pipeline on tiny data takes ~3-4 minutes on 2 cores, so it runs only
with RECSYS_PIPELINE_LOCAL_RUN=1 (or `python -m pipelines.pipeline run-local --workdir DIR`).
"""
import json
import os

import pytest
import yaml

from pipelines import gate
from pipelines import pipeline as pl
from pipelines import runtime


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    assert pl.main(["compile", "--out", out]) == 0
    with open(out) as f:
        return yaml.safe_load(f)


def _tasks(ir):
    return ir["root"]["dag"]["tasks"]


def _upstream(tasks, name, seen=None):
    """Every task ``name`` transitively depends on."""
    seen = set() if seen is None else seen
    for dep in tasks[name].get("dependentTasks", []):
        if dep not in seen:
            seen.add(dep)
            _upstream(tasks, dep, seen)
    return seen


def test_compiles_to_kfp_v2_ir(ir):
    assert ir["schemaVersion"].startswith("2.")
    assert ir["sdkVersion"] == "kfp-2.13.0"
    assert ir["pipelineInfo"]["name"] == pl.PIPELINE_NAME
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert params["workdir"]["parameterType"] == "STRING" and not params["workdir"].get("isOptional")
    assert params["min_lift"]["defaultValue"] == 1.1
    assert params["overrides"]["parameterType"] == "LIST"


def test_components_in_order_with_gate_before_push(ir):
    tasks = _tasks(ir)
    assert set(tasks) == set(pl.STEPS)
    for i, name in enumerate(pl.STEPS):  # each step depends on every earlier one (a chain)
        assert _upstream(tasks, name) == set(pl.STEPS[:i]), name
    assert "quality-gate" in tasks["push"]["dependentTasks"]
    assert "quality-gate" in tasks["train-ranking"]["dependentTasks"]
    gate_in = tasks["quality-gate"]["inputs"]["artifacts"]["metrics_json"]["taskOutputArtifact"]
    assert gate_in == {"outputArtifactKey": "metrics_json", "producerTask": "train-evaluate"}
    assert tasks["push"]["inputs"]["parameters"]["gate_report"]["taskOutputParameter"]["producerTask"] == \
        "quality-gate"
    for name in tasks:  # side effects on shared directories: never served from cache
        assert tasks[name]["cachingOptions"].get("enableCache", False) is False


def test_components_call_the_project_without_installing_anything(ir):
    executors = ir["deploymentSpec"]["executors"]
    assert len(executors) == len(pl.STEPS)
    for name, ex in executors.items():
        c = ex["container"]
        script = " ".join(c["command"])
        assert "pip install" not in script, f"{name}: install_kfp_package=False (the image has kfp)"
        assert "from pipelines import" in script, name
        assert c["image"].endswith("/recsys/recsys:0.1.0") or "RECSYS_IMAGE" in os.environ


def _metrics(model, pop, k=50):
    return {"protocol": "time_split_full",
            "results": {"two_tower": {f"recall@{k}": model, "recall@10": 0.1},
                        "popularity": {f"recall@{k}": pop, "recall@10": 0.05}}}


@pytest.mark.parametrize("model,pop,min_lift,passed", [
    (0.18, 0.13, 1.1, True),    # 1.38x
    (0.14, 0.13, 1.1, False),   # 1.08x
    (0.13, 0.13, 1.0, False),   # a tie does not beat the baseline
    (0.131, 0.13, 1.0, True),
    (0.0, 0.0, 1.0, False),     # zero recall never passes
    (0.01, 0.0, 5.0, True),     # any recall beats a zero baseline
    (0.30, 0.13, 2.5, False),   # 2.31x < 2.5x
])
def test_gate_decision(model, pop, min_lift, passed):
    r = gate.check(_metrics(model, pop), min_lift=min_lift)
    assert r.passed is passed
    assert ("PASS" if passed else "FAIL") in r.message
    assert (r.model_recall, r.baseline_recall, r.k) == (model, pop, 50)


def test_gate_reads_metrics_json_and_blocks(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_metrics(0.2, 0.1)))
    bad.write_text(json.dumps(_metrics(0.1, 0.1)))
    assert gate.enforce(str(good), min_lift=1.5).lift == pytest.approx(2.0)
    with pytest.raises(gate.QualityGateError, match="FAIL"):
        gate.enforce(str(bad), min_lift=1.1)
    k10 = gate.check_file(str(good), min_lift=1.5, k=10)
    assert k10.k == 10 and k10.passed  # 0.1 vs 0.05


@pytest.mark.parametrize("payload,match", [
    ({}, "no 'results'"),
    ({"results": {"two_tower": {"recall@50": 0.2}}}, "popularity"),
    ({"results": {"two_tower": {"recall@10": 0.2}, "popularity": {"recall@50": 0.1}}}, "recall@50"),
    ({"results": {"two_tower": {"recall@50": "n/a"}, "popularity": {"recall@50": 0.1}}}, "not a number"),
    ({"results": {"two_tower": {"recall@50": float("nan")}, "popularity": {"recall@50": 0.1}}}, "not a valid"),
])
def test_gate_fails_closed_on_bad_metrics(payload, match):
    with pytest.raises(gate.QualityGateError, match=match):
        gate.check(payload)


def test_gate_rejects_bad_factor_and_bad_json(tmp_path):
    with pytest.raises(ValueError):
        gate.check(_metrics(0.2, 0.1), min_lift=0)
    p = tmp_path / "m.json"
    p.write_text("{not json")
    with pytest.raises(gate.QualityGateError, match="not valid JSON"):
        gate.check_file(str(p))


def test_gate_on_the_real_metrics_layout():
    """The keys the gate reads are the ones trainer/evaluate_retrieval.write_metrics writes."""
    from trainer import evaluate_retrieval as er

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "training", "retrieval", "metrics.json")
        er.write_metrics({"two_tower": {"recall@50": 0.3}, "popularity": {"recall@50": 0.2}}, path,
                         {"eval_seconds": 1.0})
        assert gate.check_file(path, min_lift=1.4).passed
        assert not gate.check_file(path, min_lift=1.6).passed


def test_runtime_config_and_metric_names():
    cfg = runtime.config("/w", list(runtime.TINY_OVERRIDES) + ["train.epochs=2"], "", "/models")
    assert (cfg.workdir, cfg.data.n_users, cfg.data.n_items, cfg.train.epochs) == ("/w", 200, 150, 2)
    assert cfg.model_base_path == "/models"
    assert runtime.flat_metrics({"two_tower": {"recall@50": 0.2, "n_queries": 3, "name": "x"}}) == \
        {"two_tower_recall_at_50": 0.2, "two_tower_n_queries": 3.0}


@pytest.mark.skipif(os.environ.get("RECSYS_PIPELINE_LOCAL_RUN") != "1",
                    reason="full local pipeline run takes minutes; set RECSYS_PIPELINE_LOCAL_RUN=1")
def test_run_local_end_to_end(tmp_path):
    info = pl.run_local(str(tmp_path), list(runtime.TINY_OVERRIDES), min_lift=1.0)
    models = tmp_path / "synthetic-u200-i150-s42" / "models"
    for name in ("retrieval", "retrieval_brute_force", "ranking", "recommend"):
        versions = [d for d in os.listdir(models / name) if d.isdigit()]
        assert len(versions) == 1, name
    assert info["wall_seconds"] > 0
