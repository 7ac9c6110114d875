"""Typed, immutable descriptions of what each stage produces (TFX's standard artifacts, smaller).

An artifact is a URI plus a few properties, recorded in ``<uri>/artifact.json``. That file is
written last, so its presence means the artifact is complete; a reader never sees half a stage.
Each record also holds its lineage (the URIs and fingerprints of the artifacts it was made from)
and its fingerprint: a hash of the producing stage, the config sections that stage reads, the
project's code and the inputs' fingerprints. Equal fingerprints mean equal content, which is
what makes a cached re-run safe (``recsys.stages``).

All I/O goes through ``tf.io.gfile``, so a URI may be a local path or any scheme TensorFlow
has a filesystem for (``gs://``, ``s3://``, ``hdfs://``, ``ram://`` in tests).

    TFX                       here
    Examples+TransformGraph   Preprocessed      (tfrecords + transform_fn, raw tables)
    HyperParameters           HyperParameters   (the Tuner's best settings, its trials)
    Model                     RetrievalModel, Ranker
    ModelEvaluation           Evaluation
    Model (SavedModels)       ExportedModels    (staged, not yet served)
    ModelBlessing             Blessing
    PushedModel               PushedModel
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from recsys import fileio

ARTIFACT_FILE = "artifact.json"
A = TypeVar("A", bound="Artifact")


class ArtifactError(RuntimeError):
    """An artifact that is missing, incomplete or of another type than the stage needs."""


join, read_json = fileio.join, fileio.read_json


def write_json(uri: str, payload: Any) -> None:
    fileio.write_json(uri, payload, indent=2, sort_keys=True, default=float)


@dataclasses.dataclass(frozen=True)
class Artifact:
    """Base: ``uri`` + ``properties`` + lineage (``inputs``: name -> uri) + ``fingerprint``."""

    uri: str
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fingerprint: str = ""
    producer: str = ""

    TYPE: ClassVar[str] = "Artifact"
    KFP_TYPE: ClassVar[str] = "system.Artifact"   # the KFP/Vertex artifact class the pipeline declares

    def path(self, *parts: str) -> str:
        return join(self.uri, *parts)

    def get(self, key: str, default: Any = None) -> Any:
        return self.properties.get(key, default)

    def to_dict(self) -> Dict[str, Any]:
        return {"type": self.TYPE, "uri": self.uri, "properties": dict(self.properties),
                "inputs": dict(self.inputs), "fingerprint": self.fingerprint, "producer": self.producer,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def commit(self: A) -> A:
        """Writes ``artifact.json`` (the completion marker) and returns self; call after the content."""
        write_json(self.path(ARTIFACT_FILE), self.to_dict())
        return self

    @classmethod
    def exists(cls, uri: str) -> bool:
        return bool(uri) and fileio.exists(join(uri, ARTIFACT_FILE))

    @classmethod
    def read(cls: Type[A], uri: str) -> A:
        """The artifact at ``uri``; one clear error if it is absent, incomplete or another type."""
        marker = join(uri, ARTIFACT_FILE)
        if not uri or not fileio.exists(marker):
            raise ArtifactError(f"no complete {cls.TYPE} at {uri or '<empty uri>'} ({ARTIFACT_FILE} missing): "
                                f"run the stage that produces it first")
        try:
            rec = read_json(marker)
        except (ValueError, OSError) as e:
            raise ArtifactError(f"{marker} is unreadable: {e}") from None
        kind = TYPES.get(rec.get("type"))
        if kind is None or not issubclass(kind, cls):
            raise ArtifactError(f"{uri} holds a {rec.get('type')!r} artifact, not a {cls.TYPE}")
        # the record travels with the content: a copied/moved artifact keeps working at its new URI
        return kind(uri=uri, properties=rec.get("properties", {}), inputs=rec.get("inputs", {}),
                    fingerprint=rec.get("fingerprint", ""), producer=rec.get("producer", ""))

    def kfp_metadata(self) -> Dict[str, Any]:
        """What the pipeline attaches to its KFP artifact (shown in the run's lineage view)."""
        return {"recsys_type": self.TYPE, "fingerprint": self.fingerprint, "producer": self.producer,
                "inputs": dict(self.inputs), **{k: v for k, v in self.properties.items()
                                                 if isinstance(v, (str, int, float, bool))}}


@dataclasses.dataclass(frozen=True)
class RawData(Artifact):
    """Raw tables (users, items, interactions as JSON lines) + dead letters; ``properties.source``."""

    TYPE: ClassVar[str] = "RawData"
    KFP_TYPE: ClassVar[str] = "system.Dataset"


@dataclasses.dataclass(frozen=True)
class Preprocessed(Artifact):
    """Beam/TF-Transform output: train/eval tfrecords, the transform graph, catalogue tables, stats."""

    TYPE: ClassVar[str] = "Preprocessed"
    KFP_TYPE: ClassVar[str] = "system.Dataset"


@dataclasses.dataclass(frozen=True)
class HyperParameters(Artifact):
    """The Tuner's result: ``tuning.json`` (every trial), ``best.yaml``, ``tuning.png``; the best trial's
    ``overrides`` (config key -> value) in properties, so a reader needs nothing else to apply them."""

    TYPE: ClassVar[str] = "HyperParameters"
    KFP_TYPE: ClassVar[str] = "system.Artifact"

    @property
    def overrides(self) -> Dict[str, str]:
        return dict(self.properties.get("overrides", {}))


@dataclasses.dataclass(frozen=True)
class RetrievalModel(Artifact):
    """The two-tower's best checkpoint (``checkpoints/best.weights``), history and feature sizes."""

    TYPE: ClassVar[str] = "RetrievalModel"
    KFP_TYPE: ClassVar[str] = "system.Model"

    @property
    def checkpoint(self) -> str:
        return self.path("checkpoints", "best.weights")


@dataclasses.dataclass(frozen=True)
class Ranker(Artifact):
    """Trained second-stage ranker(s): ``<uri>/<name>/`` each (weights + meta.json); ``properties.model``."""

    TYPE: ClassVar[str] = "Ranker"
    KFP_TYPE: ClassVar[str] = "system.Model"

    def model_dir(self, name: Optional[str] = None) -> str:
        return self.path(name or self.properties["model"])


@dataclasses.dataclass(frozen=True)
class Evaluation(Artifact):
    """An evaluation report: ``metrics.json`` (results per model, protocol, rule); flat figures in properties."""

    TYPE: ClassVar[str] = "Evaluation"
    KFP_TYPE: ClassVar[str] = "system.Metrics"

    def metrics(self) -> Dict[str, Any]:
        return read_json(self.path("metrics.json"))


@dataclasses.dataclass(frozen=True)
class ExportedModels(Artifact):
    """SavedModels staged for serving, ``<uri>/<model name>/1/`` each; not visible to any server yet."""

    TYPE: ClassVar[str] = "ExportedModels"
    KFP_TYPE: ClassVar[str] = "system.Model"

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self.properties.get("models", ()))

    def model_dir(self, name: str) -> str:
        return self.path(name, "1")


@dataclasses.dataclass(frozen=True)
class Blessing(Artifact):
    """The gate's decision on a candidate (``properties.blessed``), its reasons and every figure compared."""

    TYPE: ClassVar[str] = "Blessing"
    KFP_TYPE: ClassVar[str] = "system.Artifact"

    @property
    def blessed(self) -> bool:
        return bool(self.properties.get("blessed"))


@dataclasses.dataclass(frozen=True)
class PushedModel(Artifact):
    """What a push did: ``properties.pushed``, the serving base path, the version and each model's directory."""

    TYPE: ClassVar[str] = "PushedModel"
    KFP_TYPE: ClassVar[str] = "system.Model"


TYPES: Dict[str, Type[Artifact]] = {c.TYPE: c for c in (
    Artifact, RawData, Preprocessed, HyperParameters, RetrievalModel, Ranker, Evaluation, ExportedModels, Blessing,
    PushedModel)}


# ---------------------------------------------------------------- fingerprints
_CODE_HASH: Optional[str] = None
CODE_PACKAGES = ("preprocessing", "trainer", "recsys", "serving")
NOT_STAGE_CODE = {"recsys/cli.py", "recsys/steps.py", "recsys/layout.py"}  # compositions, not what stages run


def code_version() -> str:
    """Hash of the project's Python sources: changed code invalidates every cached stage."""
    global _CODE_HASH
    if _CODE_HASH is None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        h = hashlib.sha256()
        for pkg in CODE_PACKAGES:
            for dirpath, dirnames, filenames in sorted(os.walk(os.path.join(root, pkg))):
                dirnames.sort()
                for name in sorted(filenames):
                    p = os.path.join(dirpath, name)
                    if name.endswith(".py") and os.path.relpath(p, root) not in NOT_STAGE_CODE:
                        h.update(os.path.relpath(p, root).encode())
                        with open(p, "rb") as f:
                            h.update(f.read())
        _CODE_HASH = h.hexdigest()[:16]
    return _CODE_HASH


def fingerprint(stage: str, params: Mapping[str, Any], inputs: Sequence[Artifact] = ()) -> str:
    """Stage name + its parameters + code + the inputs' fingerprints (their content, not their URIs)."""
    payload = {"stage": stage, "params": params, "code": code_version(),
               "inputs": sorted(a.fingerprint or a.uri for a in inputs)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]
