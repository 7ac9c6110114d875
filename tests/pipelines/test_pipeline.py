"""pipelines/: the compiled IR and its artifact types, the Vertex AI request, and two real local runs
(the second reuses every unchanged stage), compared with the CLI's artifacts for the same config."""
import json

import pytest
import yaml

from pipelines import pipeline as pl
from pipelines import runtime
from recsys import artifacts as af


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    assert pl.main(["compile", "--out", out]) == 0
    with open(out) as f:
        return yaml.safe_load(f)


def _tasks(ir):
    return ir["root"]["dag"]["tasks"]


def _upstream(tasks, name, seen=None):
    seen = set() if seen is None else seen
    for dep in tasks[name].get("dependentTasks", []):
        if dep not in seen:
            seen.add(dep)
            _upstream(tasks, dep, seen)
    return seen


def test_compiles_to_kfp_v2_ir_with_typed_artifacts(ir):
    assert ir["schemaVersion"].startswith("2.") and ir["sdkVersion"] == "kfp-2.13.0"
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert {"config", "serving_model_base_path", "artifact_root", "image"} <= set(params)
    comps = ir["components"]
    kinds = {}
    for name, comp in comps.items():
        for key, spec in comp.get("outputDefinitions", {}).get("artifacts", {}).items():
            kinds[(name, key)] = spec["artifactType"]["schemaTitle"]
    assert kinds[("comp-ingest", "raw")] == "system.Dataset"
    assert kinds[("comp-preprocess", "preprocessed")] == "system.Dataset"
    assert kinds[("comp-train-retrieval", "model")] == "system.Model"
    assert kinds[("comp-evaluate", "metrics")] == "system.Metrics"
    assert kinds[("comp-bless", "blessing")] == "system.Artifact"
    assert kinds[("comp-push", "pushed")] == "system.Model"
    # hand-offs are artifacts, not path strings
    assert comps["comp-preprocess"]["inputDefinitions"]["artifacts"]["raw"]["artifactType"]["schemaTitle"] == \
        "system.Dataset"
    for comp in comps.values():
        assert not {"workdir", "version_dir", "raw_dir"} & set(comp.get("inputDefinitions", {}).get("parameters", {}))


def test_dag_blessing_before_push_and_caching(ir):
    tasks = _tasks(ir)
    assert set(tasks) == set(pl.STEPS)
    assert _upstream(tasks, "push") == set(pl.STEPS) - {"push"}
    push_in = tasks["push"]["inputs"]["artifacts"]
    assert push_in["blessing"]["taskOutputArtifact"] == {"outputArtifactKey": "blessing", "producerTask": "bless"}
    bless_in = tasks["bless"]["inputs"]["artifacts"]
    assert bless_in["evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    assert bless_in["exported"]["taskOutputArtifact"]["producerTask"] == "export"
    for name, task in tasks.items():  # deterministic stages cache; bless/push read the live serving path
        assert task["cachingOptions"].get("enableCache", False) is (name not in ("bless", "push")), name


def test_image_is_a_parameter_and_nothing_is_installed(ir):
    for name, ex in ir["deploymentSpec"]["executors"].items():
        c = ex["container"]
        assert "pipelinechannel--image" in c["image"], name   # set per run, not baked in at compile time
        assert "pip install" not in " ".join(c["command"]), name
        assert "from pipelines import runtime" in " ".join(c["command"]), name


def test_vertex_submit_request_is_well_formed(tmp_path, capsys):
    from google.auth.credentials import AnonymousCredentials

    template = pl.compile_pipeline(str(tmp_path / "p.yaml"))
    cfg = runtime.resolve_config("", ["train.epochs=3"])
    job = pl.vertex_job(template, "my-proj", "europe-west4", "gs://bkt/root", "eu.gcr.io/p/recsys:abc",
                        runtime.config_json(cfg), "gs://bkt/models", "gs://bkt/artifacts",
                        credentials=AnonymousCredentials())
    req = pl.vertex_request(job, "trainer@my-proj.iam.gserviceaccount.com")
    assert req["parent"] == "projects/my-proj/locations/europe-west4"
    body = req["pipelineJob"]
    assert body["serviceAccount"] == "trainer@my-proj.iam.gserviceaccount.com"
    assert body["runtimeConfig"]["gcsOutputDirectory"] == "gs://bkt/root"
    values = body["runtimeConfig"]["parameterValues"]
    assert values["image"] == "eu.gcr.io/p/recsys:abc" and values["serving_model_base_path"] == "gs://bkt/models"
    assert runtime.parse_config(values["config"]).train.epochs == 3
    assert body["pipelineSpec"]["pipelineInfo"]["name"] == pl.PIPELINE_NAME
    assert all(t.get("cachingOptions", {}).get("enableCache") for n, t in
               body["pipelineSpec"]["root"]["dag"]["tasks"].items() if n not in ("bless", "push"))
    # the CLI prints the same request without sending anything
    assert pl.main(["submit", "--project", "my-proj", "--region", "europe-west4", "--pipeline-root", "gs://bkt/root",
                    "--image", "eu.gcr.io/p/recsys:abc", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pipelineJob"]["runtimeConfig"]["parameterValues"]["image"] == "eu.gcr.io/p/recsys:abc"


def test_config_round_trips_through_the_pipeline_parameter():
    cfg = runtime.resolve_config("", list(runtime.TINY_OVERRIDES) + ["eval.ks=[5,20]", "ranking.model=deepfm"])
    back = runtime.parse_config(runtime.config_json(cfg))
    assert back.to_dict() == dict(cfg.to_dict(), workdir=back.workdir)


# ---------------------------------------------------------------- the in-process task tables = the compiled DAGs
def _check_table(ir, table, imports=None):
    """pipelines/in_process.py runs ``table``: every task, its component, artifact wiring, output types and
    parameters must be the compiled pipeline's (parameters by the same name as the pipeline's own)."""
    from pipelines import components, in_process

    tasks, comps = _tasks(ir), ir["components"]
    assert sorted(t for t, *_ in table) == sorted(tasks)  # every task, none extra
    done = set()
    for task, comp, inputs, outs in table:
        spec = tasks[task]
        assert set(spec.get("dependentTasks", [])) <= done, task   # the table runs a task after its producers
        done.add(task)
        assert spec["componentRef"]["name"].startswith("comp-" + comp.replace("_", "-")), task
        wired = {name: (a["taskOutputArtifact"]["producerTask"], a["taskOutputArtifact"]["outputArtifactKey"])
                 for name, a in spec["inputs"].get("artifacts", {}).items()}
        wired.update({name: (p["taskOutputParameter"]["producerTask"], p["taskOutputParameter"]["outputParameterKey"])
                      for name, p in spec["inputs"].get("parameters", {}).items() if "taskOutputParameter" in p})
        assert wired == inputs, task
        declared = comps[spec["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
        assert {k: v["artifactType"]["schemaTitle"] for k, v in declared.items()} == \
            {k: "system." + v for k, v in outs.items()}, task
        params = {k: v["componentInputParameter"] for k, v in spec["inputs"].get("parameters", {}).items()
                  if "componentInputParameter" in v and not k.startswith("pipelinechannel--")}  # (the image)
        if comp == in_process.IMPORTER:
            assert params == {"uri": imports[task]}, task
            continue
        assert params == {k: k for k in params}, task   # the runner passes pipeline parameters by name
        fn = getattr(components, comp).python_func
        args = set(fn.__code__.co_varnames[:fn.__code__.co_argcount]) - set(inputs) - set(outs)
        assert set(params) <= args, task


def test_in_process_runner_follows_the_compiled_dag(ir):
    """The ram:// fixture runs pl.PIPELINE_TASKS in process; its wiring must be the compiled pipeline's."""
    assert [t for t, *_ in pl.PIPELINE_TASKS] == list(pl.STEPS)
    _check_table(ir, pl.PIPELINE_TASKS)


@pytest.fixture(scope="module")
def retrain_ir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("kfp") / "retrain.yaml")
    assert pl.main(["compile", "--retrain", "--out", out]) == 0
    with open(out) as f:
        return yaml.safe_load(f)


def test_retrain_pipeline_is_the_dag_recsys_retrain_runs(retrain_ir):
    """`recsys retrain` (steps.retrain) runs RETRAIN_TASKS in process: the compiled recsys-retrain DAG."""
    from pipelines import retrain_pipeline as rp

    assert retrain_ir["pipelineInfo"]["name"] == rp.RETRAIN_PIPELINE_NAME
    _check_table(retrain_ir, rp.RETRAIN_TASKS, rp.RETRAIN_IMPORTS)
    params = retrain_ir["root"]["inputDefinitions"]["parameters"]
    assert {k: params[k]["parameterType"] for k in ("raw_uri", "previous_model_uri", "request_logs", "events",
                                                    "warm_start", "with_ranker")} == \
        {"raw_uri": "STRING", "previous_model_uri": "STRING", "request_logs": "LIST", "events": "LIST",
         "warm_start": "BOOLEAN", "with_ranker": "BOOLEAN"}
    importers = {name: ex["importer"] for name, ex in retrain_ir["deploymentSpec"]["executors"].items()
                 if "importer" in ex}
    assert sorted(imp["typeSchema"]["schemaTitle"] for imp in importers.values()) == ["system.Dataset", "system.Model"]
    assert all(imp["artifactUri"] == {"runtimeParameter": "uri"} and not imp.get("reimport") for imp in
               importers.values())
    tasks = _tasks(retrain_ir)
    assert _upstream(tasks, "push") == set(tasks) - {"push"}   # nothing is published before every step ran
    for name, task in tasks.items():  # growing logs and the live serving path are never cached by KFP
        if name not in rp.RETRAIN_IMPORTS:
            assert task["cachingOptions"].get("enableCache", False) is (name not in rp.NOT_CACHED), name
    for name, ex in retrain_ir["deploymentSpec"]["executors"].items():
        if "container" in ex:
            assert "pipelinechannel--image" in ex["container"]["image"], name


def test_retrain_submit_request_carries_the_retrain_parameters(capsys, tmp_path):
    assert pl.main(["submit", "--retrain", "--project", "p", "--region", "europe-west4", "--pipeline-root",
                    "gs://b/root", "--image", "eu.gcr.io/p/recsys:abc", "--raw-uri", "gs://b/raw",
                    "--previous-model-uri", "gs://b/model", "--logs", "gs://b/logs/requests", "--events",
                    "gs://b/events.jsonl", "--no-ranker", "--dry-run"]) == 0
    body = json.loads(capsys.readouterr().out)["pipelineJob"]
    values = body["runtimeConfig"]["parameterValues"]
    assert body["pipelineSpec"]["pipelineInfo"]["name"] == "recsys-retrain"
    assert values["raw_uri"] == "gs://b/raw" and values["previous_model_uri"] == "gs://b/model"
    assert values["request_logs"] == ["gs://b/logs/requests"] and values["events"] == ["gs://b/events.jsonl"]
    assert values["with_ranker"] is False and values["warm_start"] is True
    with pytest.raises(SystemExit):  # a retrain without its inputs is a one-line usage error
        pl.main(["run-local", "--retrain", "--workdir", str(tmp_path), "--raw-uri", "r"])
    assert "--retrain needs --previous-model-uri, --logs, --events" in capsys.readouterr().err


def test_tune_trials_is_a_run_parameter_and_not_for_the_retrain_pipeline(ir, capsys, tmp_path):
    assert ir["root"]["inputDefinitions"]["parameters"]["tune_trials"]["defaultValue"] == 0   # off unless asked
    tasks = _tasks(ir)
    for name in set(pl.STEPS) - {"ingest", "preprocess", "tune", "push"}:   # (push reads no config)
        assert tasks[name]["inputs"]["parameters"]["config"] == {
            "taskOutputParameter": {"outputParameterKey": "config", "producerTask": "tune"}}, name
    submit = ["submit", "--project", "p", "--pipeline-root", "gs://b/root", "--image", "i", "--dry-run"]
    assert pl.main(submit + ["--region", "europe-west4", "--tune-trials", "6"]) == 0
    assert json.loads(capsys.readouterr().out)["pipelineJob"]["runtimeConfig"]["parameterValues"]["tune_trials"] == 6
    with pytest.raises(SystemExit):
        pl.main(submit + ["--region", "mars-north1"])
    err = capsys.readouterr().err
    assert "Unsupported region for Vertex AI" in err and "Traceback" not in err and len(err.splitlines()) <= 3
    for bad in (["--tune-trials", "-1"], ["--tune-trials", "2", "--retrain", "--raw-uri", "r"]):
        with pytest.raises(SystemExit):
            pl.main(["run-local", "--workdir", str(tmp_path)] + bad)
        assert "--tune-trials takes N >= 0, and not with --retrain" in capsys.readouterr().err


# ---------------------------------------------------------------- runs (tiny data, on ram://)


def _records(run, kind_by_output):
    from recsys import artifacts as af

    return {key: af.TYPES[kind].read(run[task][name].uri) for key, (task, name, kind) in kind_by_output.items()}


STAGE_OUTPUTS = {"raw": ("ingest", "raw", "RawData"), "pre": ("preprocess", "preprocessed", "Preprocessed"),
                 "model": ("train-retrieval", "model", "RetrievalModel"), "ev": ("evaluate", "evaluation", "Evaluation"),
                 "ranker": ("train-ranker", "ranker", "Ranker"), "exported": ("export", "exported", "ExportedModels")}


def test_second_run_reuses_every_unchanged_stage_and_blesses_against_the_first(ram_pipeline):
    first, second = ram_pipeline["first"], ram_pipeline["second"]
    for key, (task, name, _) in STAGE_OUTPUTS.items():
        assert first[task][name].metadata["reused"] is False, task
        assert second[task][name].metadata["reused"] is True, task            # skipped: nothing ran
        assert second[task][name].uri == first[task][name].uri, task          # the same content-addressed artifact
    b1, b2 = (r["bless"]["blessing"].metadata for r in (first, second))
    p1, p2 = (r["push"]["pushed"].metadata for r in (first, second))
    assert first["bless"]["blessed"] and second["bless"]["blessed"]
    assert b1["served_version"] == 0 and b2["served_version"] == p1["version"]   # judged against the first push
    assert p2["pushed"] and p2["version"] > p1["version"]
    assert second["evaluate"]["metrics"].metadata["two_tower_recall_at_50"] > 0   # figures on the KFP Metrics


def test_changed_config_invalidates_only_what_depends_on_it(ram_pipeline):
    from recsys import stages

    recs = _records(ram_pipeline["first"], STAGE_OUTPUTS)
    b = runtime.resolve_config("", list(runtime.TINY_OVERRIDES) + ["train.epochs=2"])
    assert stages.plan("ingest", b) == recs["raw"].fingerprint
    assert stages.plan("preprocess", b, recs["raw"]) == recs["pre"].fingerprint
    assert stages.plan("train_retrieval", b, recs["pre"]) != recs["model"].fingerprint
    c = runtime.resolve_config("", list(runtime.TINY_OVERRIDES) + ["preprocess.direct_num_workers=2"])
    assert stages.plan("preprocess", c, recs["raw"]) == recs["pre"].fingerprint   # runner settings only


def test_cli_and_pipeline_produce_the_same_artifacts(ram_pipeline):
    """The CLI's steps on the same config (on ram:// too) give the pipeline's artifacts: the same
    fingerprints, the same preprocessed records and vocabularies (so a rerun of preprocessing is
    deterministic), and the same plan for every later stage."""
    import tensorflow as tf

    from recsys import artifacts as af
    from recsys import fileio, stages, steps

    recs = _records(ram_pipeline["first"], STAGE_OUTPUTS)
    cfg = runtime.resolve_config("", list(runtime.TINY_OVERRIDES))
    cfg.workdir = f"{ram_pipeline['root']}/cli"
    steps.make_raw(cfg)
    mine = af.Preprocessed.read(steps.preprocess(cfg))
    assert af.RawData.read(mine.inputs["raw"]).fingerprint == recs["raw"].fingerprint
    assert mine.fingerprint == recs["pre"].fingerprint and dict(mine.properties) == dict(recs["pre"].properties)
    a = sorted(tf.io.gfile.glob(mine.path("transformed", "*")))
    b = sorted(tf.io.gfile.glob(recs["pre"].path("transformed", "*")))
    assert a and [p.rsplit("/", 1)[1] for p in a] == [p.rsplit("/", 1)[1] for p in b]
    for x, y in zip(a, b):  # Beam does not fix the order of rows within a file: compare them as sorted rows
        assert _rows(x) == _rows(y), x
    assets = ("transform_fn", "transform_fn", "assets")
    vocabularies = sorted(tf.io.gfile.listdir(mine.path(*assets)))
    assert vocabularies == sorted(tf.io.gfile.listdir(recs["pre"].path(*assets))) and vocabularies
    for name in vocabularies:
        assert fileio.read_bytes(mine.path(*assets, name)) == fileio.read_bytes(recs["pre"].path(*assets, name)), name
    assert mine.uri.rsplit("/", 1)[1] == "v1" and fileio.read_text(f"{cfg.run_dir}/preprocessed/LATEST").strip() == "v1"
    assert stages.plan("train_retrieval", cfg, mine) == recs["model"].fingerprint


def _rows(path):
    """Every tf.Example in a gzipped TFRecord file as a sorted list of {feature: values} (order-free)."""
    import tensorflow as tf

    rows = []
    for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
        feats = tf.train.Example.FromString(raw.numpy()).features.feature
        rows.append(tuple(sorted((k, tuple(getattr(v, v.WhichOneof("kind")).value)) for k, v in feats.items())))
    assert rows, path
    return sorted(rows)


def test_the_tuner_hands_its_best_settings_to_every_later_task(ram_pipeline):
    """TFX's Tuner -> Trainer: with ``tune_trials=0`` (the runs above) it passes the config through; with trials it
    writes a HyperParameters artifact (content-addressed, so a rerun reuses it) and returns the config with the
    best trial's settings, which the trainer then builds its model with."""
    from kfp import dsl

    from recsys import fileio, stages

    first = ram_pipeline["first"]
    assert first["tune"]["config"] == runtime.config_json(ram_pipeline["cfg"]), "no trials: the config as given"
    assert first["tune"]["hyperparameters"].metadata["skipped"] is True
    root, pre = ram_pipeline["root"], first["preprocess"]["preprocessed"]
    cfg = runtime.resolve_config("", list(runtime.TINY_OVERRIDES) + [
        "tune.epochs=1", "tune.space=[retrieval.temperature=0.05,0.5]", "eval.baselines=[ease]"])
    config = runtime.config_json(cfg)
    outs = [dsl.Artifact(name="hyperparameters", uri=f"{root}/kfp/tune{n}/hyperparameters", metadata={})
            for n in (1, 2)]
    tuned = [runtime.tune(config, f"{root}/artifacts", pre, out, tune_trials=2) for out in outs]
    assert [o.metadata["reused"] for o in outs] == [False, True] and outs[0].uri == outs[1].uri and tuned[0] == tuned[1]
    rec = af.HyperParameters.read(outs[0].uri)
    assert rec.inputs["preprocessed"] == pre.uri and rec.properties["trials"] == 2
    assert rec.properties["eval_split_read"] is False and fileio.exists(rec.path("tuning.json"))
    assert rec.overrides == ({} if rec.properties["best_trial"] == 1 else {"retrieval.temperature": "0.5"})
    got, given = json.loads(tuned[0]), json.loads(config)
    assert got["retrieval"]["temperature"] == (0.5 if rec.overrides else cfg.retrieval.temperature)
    assert dict(got, retrieval=None) == dict(given, retrieval=None), "only the tuned settings change"
    model = dsl.Model(name="model", uri=f"{root}/kfp/tuned/model", metadata={})
    runtime.train_retrieval(tuned[0], f"{root}/artifacts", pre, model)
    trained = stages.trained_config(af.RetrievalModel.read(model.uri), cfg)
    assert trained.retrieval.temperature == got["retrieval"]["temperature"], "the trainer ran with the tuned config"
