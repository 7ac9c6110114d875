"""The demo's second interpreter: stages run there are the stages run here, and failures come back as errors."""
import numpy as np
import pytest

from recsys import artifacts as af
from recsys import stages, steps
from recsys.background import Worker


def test_models_staged_in_the_worker_answer_as_the_exported_ones_and_export_takes_them(run_cfg, exported, tmp_path):
    out = str(tmp_path / "exported")
    with Worker() as worker:
        worker.submit("export_models", run_cfg, retrieval=steps.retrieval_artifact(run_cfg).uri, out=out,
                      names=["retrieval_brute_force"])
        staged = worker.result()
    assert staged == {"retrieval_brute_force": af.join(out, "retrieval_brute_force", "1")}
    request = exported["request"]
    here = steps.in_process(exported["paths"]["brute_force"], request)   # exported from the in-memory model
    there = steps.in_process(staged["retrieval_brute_force"], request)   # restored from its checkpoint there
    assert there["item_ids"][0][:10].tolist() == here["item_ids"][0][:10].tolist()
    np.testing.assert_allclose(there["scores"][0][:10], here["scores"][0][:10], rtol=1e-5)
    # export checks what it is handed: only models of this export, complete, where it would put them
    model = steps.retrieval_artifact(run_cfg)
    with pytest.raises(af.ArtifactError, match="not a complete model of this export"):
        stages.export(model, None, run_cfg, out, staged={"retrieval": staged["retrieval_brute_force"]})
    with pytest.raises(af.ArtifactError, match="not a complete model of this export"):
        stages.export(model, None, run_cfg, out, staged={"ranking": af.join(out, "ranking", "1")})


def test_a_failed_task_is_one_error_and_the_worker_takes_the_next_in_order(run_cfg, tmp_path):
    with Worker() as worker:
        with pytest.raises(RuntimeError, match="unknown task 'train_everything'"):
            worker.submit("train_everything", run_cfg).result()
        worker.submit("export_models", run_cfg, retrieval=str(tmp_path / "nothing"), out=str(tmp_path / "out"),
                      names=["retrieval"])
        with pytest.raises(RuntimeError, match="background export_models failed: ArtifactError: no complete"):
            worker.result()
        worker.submit("first", run_cfg).submit("second", run_cfg)  # queued: run and answered in order
        for name in ("first", "second"):
            with pytest.raises(RuntimeError, match=f"unknown task '{name}'"):
                worker.result()
        with pytest.raises(RuntimeError, match="no background task is pending"):
            worker.result()
