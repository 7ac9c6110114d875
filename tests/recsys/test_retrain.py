"""Continuous training (steps.retrain) on ram://, continuing from the ram:// pipeline's served model.

Request logs and events come from the feedback simulator on the synthetic generator's planted tastes;
one retrain round must turn the engaged impressions into new interactions, warm-start from the served
model row by row, bless the candidate against the served version and publish it as the next version.
"""
import copy
import uuid

import pytest

from recsys import artifacts as af
from recsys import fileio, steps
from recsys.layout import RunLayout

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def feedback(ram_pipeline):
    """A served list per eval-period user (the served retrieval model's answers are not needed to test the
    plumbing: the catalogue's first items in the user's order) and the simulated users' events."""
    from preprocessing import feedback as fb
    from preprocessing import feedback_sim
    from preprocessing.sources import load_source, tables

    cfg = ram_pipeline["cfg"]
    raw = af.RawData.read(ram_pipeline["first"]["ingest"]["raw"].uri)
    items = sorted(tables.read_table(raw.path(tables.ITEMS_FILE)))
    rows = list(tables.read_interactions(raw.path(tables.INTERACTIONS_FILE)))
    end = max(r["timestamp"] for r in rows)
    users = sorted({r["user_id"] for r in rows})[:120]
    served = [{"request_id": f"req-{u}", "user_id": u, "timestamp": end + 3600,
               "item_ids": [items[(i * 7 + j) % len(items)] for j in range(10)]} for i, u in enumerate(users)]
    root = f"{ram_pipeline['root']}/feedback-{uuid.uuid4().hex[:6]}"
    log = feedback_sim.write_served_log(f"{root}/served.tfrecord", served, "retrieval", 1)
    events = feedback_sim.simulate_events(
        ({"request_id": s["request_id"], "user_id": s["user_id"], "timestamp": s["timestamp"],
          "items": list(enumerate(s["item_ids"], 1))} for s in served), load_source(cfg.data).truth, seed=3)
    events.append({"request_id": "", "user_id": users[0], "item_id": items[0], "event": "rating", "value": 4.0,
                   "timestamp": end + 7200})  # organic: no request id
    return {"log": log, "events": fb.write_jsonl(events, f"{root}/events.jsonl"), "n_events": len(events)}


@pytest.fixture(scope="module")
def retrained(ram_pipeline, feedback):
    cfg = copy.deepcopy(ram_pipeline["cfg"])
    cfg.workdir = f"{ram_pipeline['root']}/cli"
    cfg.export.model_base_path = ram_pipeline["base"]
    cfg.eval.baselines, cfg.eval.bootstrap = (), 100  # the gate compares with popularity and the served model
    previous = af.RetrievalModel.read(ram_pipeline["first"]["train-retrieval"]["model"].uri)
    served_before = sorted(fileio.listdir(f"{ram_pipeline['base']}/retrieval"))
    out = steps.retrain(cfg, [feedback["log"]], [feedback["events"]], previous=previous)
    return {"out": out, "cfg": cfg, "previous": previous, "served_before": served_before}


def test_feedback_becomes_new_interactions_beside_the_old_ones(retrained, feedback, ram_pipeline):
    from preprocessing.sources import tables

    out = retrained["out"]
    raw = af.RawData.read(fileio.join(out["round_dir"], "raw"))
    old = af.RawData.read(ram_pipeline["first"]["ingest"]["raw"].uri)
    n_old = len(list(tables.read_interactions(old.path(tables.INTERACTIONS_FILE))))
    n_new = len(list(tables.read_interactions(raw.path(tables.INTERACTIONS_FILE))))
    assert raw.get("organic") == 1 and raw.get("from_served") > 0
    assert n_new == n_old + raw.get("feedback_interactions") == n_old + raw.get("from_served") + 1
    assert raw.inputs == {"raw": old.uri}
    shown = [line for line in fileio.read_text(raw.path("feedback", "examples.jsonl")).splitlines() if line]
    assert len(shown) == 120 * 10  # every shown item kept, clicked or not, with its position
    stats = fileio.read_json(raw.path("feedback", "statistics.json"))   # the slice's profile, checked against old
    assert stats["events"] == raw.get("feedback_interactions") and stats["unknown_item_share"] == 0.0
    assert stats["appended_to_last_ts"] == max(r["timestamp"] for r in tables.read_interactions(
        old.path(tables.INTERACTIONS_FILE))) and stats["problems"] == raw.get("data_problems")


def test_candidate_warm_starts_from_the_served_model_and_is_pushed_after_the_blessing(retrained, ram_pipeline):
    out, previous = retrained["out"], retrained["previous"]
    model = af.RetrievalModel.read(fileio.join(out["round_dir"], "training", "retrieval"))
    assert model.inputs["warm_start"] == previous.uri
    copied = fileio.read_json(model.path("warm_start.json"))
    assert copied["item_id_rows_copied"] > 0 and copied["user_id_rows_copied"] > 0 and copied["dense_copied"] > 0
    blessing = af.Blessing.read(out["blessing"])
    decision = fileio.read_json(blessing.path("blessing.json"))
    assert blessing.blessed and blessing.get("served_version") > 0 and decision["checks"]["vs_served"]["retrieval"]
    assert out["pushed"] and int(out["version"]) > max(int(v.strip("/")) for v in retrained["served_before"])
    assert str(out["version"]) in [v.strip("/") for v in fileio.listdir(f"{ram_pipeline['base']}/retrieval")]
    assert fileio.read_text(RunLayout(retrained["cfg"]).latest_round_file).strip() == str(out["round"])


def test_missing_logs_or_events_are_one_clear_error(ram_pipeline, feedback, tmp_path):
    cfg = copy.deepcopy(ram_pipeline["cfg"])
    cfg.workdir = f"{ram_pipeline['root']}/cli-errors"
    previous = af.RetrievalModel.read(ram_pipeline["first"]["train-retrieval"]["model"].uri)
    with pytest.raises(FileNotFoundError, match="no request log files"):
        steps.retrain(cfg, [str(tmp_path / "nothing")], [feedback["events"]], previous=previous)
    with pytest.raises(FileNotFoundError, match="events file not found"):
        steps.retrain(cfg, [feedback["log"]], [str(tmp_path / "none.jsonl")], previous=previous)


def test_retrain_ran_the_retrain_pipelines_tasks_into_the_round_layout(retrained):
    """steps.retrain is the recsys-retrain pipeline run in process: every task of its DAG ran, each output at
    the round's layout path; the served round had no ranker, so the ranker task was skipped and the export
    holds the retrieval models only."""
    from pipelines.retrain_pipeline import RETRAIN_TASKS

    out, layout = retrained["out"], RunLayout(retrained["cfg"]).round(retrained["out"]["round"])
    assert set(out["tasks"]) == {t for t, *_ in RETRAIN_TASKS}
    assert out["tasks"]["add-feedback"]["with_feedback"] == layout.raw
    assert out["tasks"]["train-retrieval-warm"]["model"] == layout.retrieval
    assert out["tasks"]["importer-2"]["artifact"] == retrained["previous"].uri
    assert out["tasks"]["bless"]["blessing"] == out["blessing"]
    assert not af.Ranker.exists(layout.ranker)
    exported = af.ExportedModels.read(out["tasks"]["export"]["exported"])
    assert list(exported.names) == ["retrieval", "retrieval_brute_force"] and "ranker" not in exported.inputs
