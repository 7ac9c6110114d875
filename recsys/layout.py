"""Where the CLI (and the k8s Jobs, which run the CLI) keep one run's artifacts.

This is the only module that knows the run directory's shape; stages take URIs, and the KFP
pipeline lets KFP choose its own. ``<run>`` is ``<workdir>/<run id>`` (any gfile scheme).

    <run>/raw/                        RawData
    <run>/preprocessed/v<N>/          Preprocessed (LATEST names the newest complete one)
    <run>/training/retrieval/         RetrievalModel
    <run>/training/ranking/           Ranker (one sub-directory per ranker)
    <run>/evaluation/retrieval/       Evaluation (metrics.json)
    <run>/evaluation/ranking/         Evaluation (metrics.json)
    <run>/exported/<version>/         ExportedModels (staged, not served)
    <run>/blessing/<version>/         Blessing
    <run>/pushed/<version>/           PushedModel
    <run>/retrain/<round>/...         continuous training (`recsys retrain`): each round the same shape
    <run>/retrain/LATEST              the round whose models were pushed last (the next warm start)
    <model base path>/<name>/<version>/   what TF Serving (or `recsys serve`) loads
"""
from __future__ import annotations

from typing import Optional

from recsys.artifacts import join
from recsys.config import Config


class RunLayout:
    def __init__(self, cfg: Config, run_dir: Optional[str] = None):
        self.cfg = cfg
        self.run_dir = run_dir or cfg.run_dir
        self.model_base_path = cfg.model_base_path

    def round(self, n: int) -> "RunLayout":
        """Round ``n`` of continuous training: the same layout under ``<run>/retrain/<n>``."""
        return RunLayout(self.cfg, join(self.cfg.run_dir, "retrain", str(n)))

    @property
    def latest_round_file(self) -> str:
        return join(self.cfg.run_dir, "retrain", "LATEST")

    def path(self, *parts: str) -> str:
        return join(self.run_dir, *parts)

    @property
    def raw(self) -> str:
        return self.path("raw")

    @property
    def preprocessed(self) -> str:
        """The parent of the versioned preprocessing outputs."""
        return self.path("preprocessed")

    @property
    def retrieval(self) -> str:
        return self.path("training", "retrieval")

    @property
    def ranker(self) -> str:
        return self.path("training", "ranking")

    @property
    def retrieval_evaluation(self) -> str:
        return self.path("evaluation", "retrieval")

    @property
    def ranking_evaluation(self) -> str:
        return self.path("evaluation", "ranking")

    def exported(self, version: int) -> str:
        return self.path("exported", str(version))

    def blessing(self, version: int) -> str:
        return self.path("blessing", str(version))

    def pushed(self, version: int) -> str:
        return self.path("pushed", str(version))
