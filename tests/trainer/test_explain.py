"""Explanations: integrated gradients (completeness), "because of X in your history", the DCN plot, the CLI."""
import subprocess
import sys

import numpy as np

from trainer import explain, train_ranking


def test_integrated_gradients_add_up(ranking_data_fixture, dcn_ranker):
    x = train_ranking.sample_batch(ranking_data_fixture["valid"], 1)
    attr, fx, fb = explain.integrated_gradients(dcn_ranker.model, x, steps=128)
    assert set(attr) == set(explain.ranking_models.FIELDS)
    assert abs(sum(attr.values()) - (fx - fb)) < 0.02 * max(1.0, abs(fx - fb))
    top = explain.top_features(attr, 3)
    assert len(top) == 3 and abs(top[0]["attribution"]) >= abs(top[-1]["attribution"])


def test_explain_a_recommendation(ranking_cfg, preprocessed, trained, dcn_ranker, tmp_path):
    from recsys import steps

    tr = trained["trained"]
    request = steps.sample_request(ranking_cfg, preprocessed)
    result = steps.explain(ranking_cfg, tr, trained["item_vectors"], dcn_ranker.model, request,
                           out_dir=str(tmp_path))
    history = {h for h in request["history_item_ids"][0].astype(str) if h}
    assert result["item_id"] == result["recommendations"][0] and result["item_id"] not in history
    assert result["because_you_watched"]["item_id"] in history
    assert len(result["top_features"]) >= 5 and abs(result["ig_error"]) < 0.05
    png = result["cross_importance_png"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    imp = explain.cross_importance(dcn_ranker.model)
    n = len(explain.ranking_models.FIELDS)
    assert imp.shape == (ranking_cfg.ranking.cross_layers, n, n) and np.isfinite(imp).all()
    text = explain.format_explanation(result)
    assert "in your history" in text and "integrated gradients" in text
    # a chosen item (not necessarily retrieved) can be explained too
    other = str(tr.catalogue.item_ids[-1])
    if other not in history:
        assert steps.explain(ranking_cfg, tr, trained["item_vectors"], dcn_ranker.model, request,
                             item_id=other, out_dir=None)["item_id"] == other


def test_cli_lists_ranking_commands_and_explain_needs_a_ranker(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "recsys.cli", *a], capture_output=True, text=True,  # noqa
                                    timeout=300)
    out = run("--help")
    assert "train-ranking" in out.stdout and "explain" in out.stdout
    out = run("--workdir", str(tmp_path), "explain")  # nothing run yet: one line naming the missing step
    assert out.returncode == 4 and "first" in out.stderr and len(out.stderr.strip().splitlines()) == 1
