"""Model manager: which versions of which models serve, and swapping them without a restart.

Reads TF Serving's own ``--model_config_file`` format (ModelServerConfig text proto) so
one config works here and in the real server. A polling thread lists each model's
base path, loads versions its policy wants (latest N, specific, all), and swaps the
set of available versions by replacing one immutable snapshot: readers never lock,
and a replaced version is freed only after its last in-flight request (reference
count in ``Servable``). A version that fails to load is reported in status and is
retried only when its files change; whatever served before keeps serving.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.batching import Batcher
from serving.config_validation import validate_config
from serving.errors import INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, ServingError, as_serving_error
from serving.servable import Servable

log = logging.getLogger("serving")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
MAX_STATUS_ENTRIES = 16  # per model; oldest finished versions drop off


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclasses.dataclass
class BatchingOptions:
    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    num_batch_threads: int = 2
    max_enqueued_batches: int = 100


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    versions: Dict[int, Servable]
    latest: Optional[Servable]


class _Model:
    def __init__(self, config: model_server_config_pb2.ModelConfig):
        self.config = config
        self.snapshot = _Snapshot({}, None)
        self.status: Dict[int, VersionStatus] = {}
        self.failed: Dict[int, tuple] = {}  # version -> fingerprint of the files that failed
        self.warned_missing = False

    @property
    def labels(self) -> Dict[str, int]:
        return dict(self.config.version_labels)


# ---------------------------------------------------------------- config
def parse_model_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses TF Serving's model config text format and checks what this server supports."""
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError("only model_config_list configs are supported")
    names = [m.name for m in config.model_config_list.config]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"model names must be non-empty and unique, got {names}")
    for m in config.model_config_list.config:
        if m.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {m.name}: platform {m.model_platform!r} is not supported (only 'tensorflow')")
        if not m.base_path:
            raise ValueError(f"model {m.name}: base_path is required")
    return config


def read_model_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    with tf.io.gfile.GFile(path, "r") as f:
        return parse_model_config(f.read())


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config TF Serving builds from --model_name/--model_base_path (latest version only)."""
    config = model_server_config_pb2.ModelServerConfig()
    m = config.model_config_list.config.add()
    m.name, m.base_path, m.model_platform = name, base_path, "tensorflow"
    return config


def _abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def list_versions(base_path: str) -> Dict[int, str]:
    """Integer-named subdirectories of a model's base path (``.tmp-*`` and friends are ignored).

    Raises when the path can't be listed: a listing hiccup must not look like "all versions gone".
    """
    names = tf.io.gfile.listdir(base_path)
    out = {}
    for name in names:
        name = name.rstrip("/")
        if name.isdigit():
            path = os.path.join(base_path, name)
            if tf.io.gfile.isdir(path):
                out[int(name)] = path
    return out


def fingerprint(path: str) -> tuple:
    """(file, size, mtime) of every file under a version dir: a failed load is retried when this changes."""
    entries = []
    try:
        for root, _, files in tf.io.gfile.walk(path):
            for f in files:
                st = tf.io.gfile.stat(os.path.join(root, f))
                entries.append((os.path.relpath(os.path.join(root, f), path), st.length, st.mtime_nsec))
    except Exception:  # noqa: BLE001
        return ("<unreadable>",)
    return tuple(sorted(entries))


# ---------------------------------------------------------------- manager
class ModelManager:
    """Loads, serves and swaps model versions; thread safe; transports only call ``acquire`` and ``status``."""

    def __init__(self, config: model_server_config_pb2.ModelServerConfig, *, poll_seconds: float = 2.0,
                 config_path: Optional[str] = None, config_poll_seconds: float = 0.0,
                 tags: Sequence[str] = ("serve",), warmup: bool = True, warmup_iterations: int = 1,
                 batching: Optional[BatchingOptions] = None, metrics=None):
        self.poll_seconds = poll_seconds
        self.config_path, self.config_poll_seconds = config_path, config_poll_seconds
        self.tags, self.warmup, self.warmup_iterations = tuple(tags), warmup, warmup_iterations
        self.batching, self.metrics = batching, metrics
        self._models: Dict[str, _Model] = {}
        self._removed: Dict[str, _Model] = {}  # models dropped by a reload: status only
        self.allow_version_labels_for_unavailable_models = False  # TF Serving's flag of that name
        self._poll_lock = threading.RLock()
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._config_checked = time.monotonic()
        self._apply_config(config)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "ModelManager":
        """Loads what the config asks for (blocking, like TF Serving's startup), then polls in the background."""
        self.poll()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="model-poller", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self._maybe_reread_config()
                self.poll()
            except Exception:  # noqa: BLE001  (the poller must survive anything)
                log.exception("model poll failed")

    def _maybe_reread_config(self) -> None:
        if not self.config_path or self.config_poll_seconds <= 0:
            return
        if time.monotonic() - self._config_checked < self.config_poll_seconds:
            return
        self._config_checked = time.monotonic()
        try:
            config = read_model_config_file(self.config_path)
        except Exception as e:  # noqa: BLE001
            log.error("ignoring unreadable model config %s: %s", self.config_path, e)
            return
        if config.SerializeToString(deterministic=True) != self._config.SerializeToString(deterministic=True):
            log.info("model config %s changed; reloading", self.config_path)
            try:
                self.reload_config(config, from_file=True)
            except ServingError as e:  # TF Serving logs and keeps serving the old config
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", e.message)

    # ------------------------------------------------------------ config
    def _apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> List[_Model]:
        """Installs a new model table; returns the models it dropped, to unload after the next poll."""
        self._config = config
        models = dict(self._models)
        for m in config.model_config_list.config:
            cfg = model_server_config_pb2.ModelConfig()
            cfg.CopyFrom(m)
            cfg.base_path = _abs(m.base_path)
            if m.name in models:
                models[m.name].config = cfg  # a moved base path reloads version by version in poll
            else:
                models[m.name] = self._removed.pop(m.name, None) or _Model(cfg)
                models[m.name].config = cfg
        wanted = {m.name for m in config.model_config_list.config}
        dropped = [models.pop(n) for n in [n for n in models if n not in wanted]]
        for model in dropped:  # their versions keep reporting (UNLOADING, then END), as in TF Serving
            self._removed[model.config.name] = model
        self._models = models  # atomic swap of the model table
        return dropped

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig, *, from_file: bool = False) -> None:
        """ModelService.HandleReloadConfigRequest: validates (serving/config_validation.py; a refused
        config changes nothing), applies the new config and loads it before returning."""
        with self._poll_lock:
            validate_config(config, self._config, available=self.available_versions,
                            current_labels=lambda n: self._models[n].labels if n in self._models else {},
                            allow_unavailable_labels=self.allow_version_labels_for_unavailable_models,
                            from_file=from_file)
            dropped = self._apply_config(config)
            self.poll()
            for model in dropped:
                for v in list(model.snapshot.versions):
                    self._unload(model, v)

    @property
    def config(self) -> model_server_config_pb2.ModelServerConfig:
        return self._config

    # ------------------------------------------------------------ polling / loading
    def poll(self) -> None:
        """One pass over every model: load wanted versions, then retire the ones no longer wanted."""
        with self._poll_lock:
            for model in list(self._models.values()):
                try:
                    self._poll_model(model)
                except Exception:  # noqa: BLE001
                    log.exception("polling model %s failed", model.config.name)

    def _poll_model(self, model: _Model) -> None:
        cfg = model.config
        if not tf.io.gfile.isdir(cfg.base_path):
            if not model.warned_missing:
                log.warning("No versions of servable %s found under base path %s (it does not exist yet)",
                            cfg.name, cfg.base_path)
                model.warned_missing = True
            return
        model.warned_missing = False
        disk = list_versions(cfg.base_path)  # raises on I/O errors: keep serving what is loaded
        policy = cfg.model_version_policy.WhichOneof("policy_choice") or "latest"
        limit = float("inf")
        if policy == "latest":
            limit = max(1, cfg.model_version_policy.latest.num_versions or 1)
            candidates = sorted(disk, reverse=True)
        elif policy == "all":
            candidates = sorted(disk, reverse=True)
        else:
            candidates = sorted((v for v in cfg.model_version_policy.specific.versions if v in disk), reverse=True)
        for v in [v for v in model.failed if v not in disk]:
            del model.failed[v]
        want: List[int] = []
        for v in candidates:
            if len(want) >= limit:
                break
            current = model.snapshot.versions.get(v)
            if current is not None and current.path == disk[v]:
                want.append(v)
                continue
            if v in model.failed and model.failed[v] == fingerprint(disk[v]):
                continue  # failed before and unchanged since: don't thrash
            if self._load(model, v, disk[v]):
                want.append(v)
        for v in list(model.snapshot.versions):
            if v not in want:
                self._unload(model, v)
        if self.metrics is not None:
            self.metrics.versions_available(cfg.name, len(model.snapshot.versions))

    def _set_status(self, model: _Model, status: VersionStatus) -> None:
        with self._status_lock:
            model.status[status.version] = status
            if len(model.status) > MAX_STATUS_ENTRIES:
                finished = sorted(v for v, s in model.status.items() if s.state == END)
                for v in finished[: len(model.status) - MAX_STATUS_ENTRIES]:
                    del model.status[v]

    def _load(self, model: _Model, version: int, path: str) -> bool:
        name = model.config.name
        self._set_status(model, VersionStatus(version, LOADING))
        log.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        t0 = time.perf_counter()
        fp = fingerprint(path)
        servable = None
        try:
            servable = Servable(name, version, path, self.tags)
            self._attach_batchers(servable)
            if self.warmup:
                servable.warmup(self.warmup_iterations)
        except Exception as e:  # noqa: BLE001  (a bad version must never take the server down)
            err = as_serving_error(e) if getattr(e, "error_code", None) is not None else None
            code = err.code_name if err else "UNKNOWN"
            message = f"Failed to load servable {name} version {version} from {path}: {type(e).__name__}: {e}"
            log.error(message)
            if servable is not None:
                servable.retire()
            model.failed[version] = fp
            self._set_status(model, VersionStatus(version, END, code, message[:2000]))
            if self.metrics is not None:
                self.metrics.model_loaded(name, version, False, time.perf_counter() - t0, 0)
            return False
        model.failed.pop(version, None)
        versions = dict(model.snapshot.versions)
        previous = versions.get(version)  # same number from a moved base path
        versions[version] = servable
        model.snapshot = _Snapshot(versions, versions[max(versions)])  # the atomic swap
        if previous is not None:
            previous.retire()
        self._set_status(model, VersionStatus(version, AVAILABLE))
        seconds = time.perf_counter() - t0
        log.info("Successfully loaded servable version {name: %s version: %d} in %.2fs (%d warmup requests)",
                 name, version, seconds, servable.warmup_requests)
        if self.metrics is not None:
            self.metrics.model_loaded(name, version, True, seconds, servable.warmup_requests)
        return True

    def _attach_batchers(self, servable: Servable) -> None:
        if self.batching is None:
            return
        b = self.batching
        on_batch = (lambda rows, n=servable.name: self.metrics.batch(n, rows)) if self.metrics is not None else None
        for sig in servable.signatures.values():
            sig.batcher = Batcher(sig.run_unchecked, b.max_batch_size, b.batch_timeout_micros,
                                  b.num_batch_threads, b.max_enqueued_batches, on_batch)

    def _unload(self, model: _Model, version: int) -> None:
        versions = dict(model.snapshot.versions)
        servable = versions.pop(version, None)
        if servable is None:
            return
        model.snapshot = _Snapshot(versions, versions[max(versions)] if versions else None)
        self._set_status(model, VersionStatus(version, UNLOADING))
        log.info("Unloading servable version {name: %s version: %d}", model.config.name, version)

        def done(s: Servable, model=model) -> None:
            current = model.status.get(s.version)
            if current is not None and current.state == UNLOADING:
                self._set_status(model, VersionStatus(s.version, END))

        servable.retire(done)

    # ------------------------------------------------------------ request path
    @contextmanager
    def acquire(self, name: str, version: Optional[int] = None, label: str = "") -> Iterator[Servable]:
        """The servable a request should use, held (reference counted) for the duration of the block."""
        servable = self._resolve(name, version, label)
        try:
            yield servable
        finally:
            servable.release()

    def _resolve(self, name: str, version: Optional[int], label: str) -> Servable:
        if not name:
            raise ServingError(INVALID_ARGUMENT, "ModelSpec has no name specified.")
        for _ in range(100):  # a version can be retired between lookup and acquire: look again
            model = self._models.get(name)
            if label:
                if model is None or label not in model.labels:
                    raise ServingError(INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
                version = model.labels[label]
            snap = model.snapshot if model is not None else _Snapshot({}, None)
            servable = snap.latest if version is None else snap.versions.get(int(version))
            if servable is None:
                what = f"Latest({name})" if version is None else f"Specific({name}, {version})"
                raise ServingError(NOT_FOUND, f"Servable not found for request: {what}")
            if servable.try_acquire():
                return servable
        raise ServingError(UNAVAILABLE, f"model {name} is being swapped; retry")

    def status(self, name: str, version: Optional[int] = None, label: str = "") -> List[VersionStatus]:
        """GetModelStatus: every known version (newest first), or one version.

        As in TF Serving, a version label does not narrow the answer, and a model removed by a
        config reload keeps reporting its versions (END once unloaded).
        """
        model = self._models.get(name) or self._removed.get(name)
        with self._status_lock:
            statuses = dict(model.status) if model is not None else {}
        if not statuses:
            raise ServingError(NOT_FOUND, f"Could not find any versions of model {name}")
        if version is not None:
            if int(version) not in statuses:
                raise ServingError(NOT_FOUND, f"Could not find version {version} of model {name}")
            return [statuses[int(version)]]
        return [statuses[v] for v in sorted(statuses, reverse=True)]

    def model_names(self) -> List[str]:
        return list(self._models)

    def available_versions(self, name: str) -> List[int]:
        model = self._models.get(name)
        return sorted(model.snapshot.versions) if model is not None else []

    def ready(self) -> Tuple[bool, Dict[str, List[int]]]:
        """Every configured model has at least one available version (readiness probe)."""
        table = {n: self.available_versions(n) for n in self._models}
        return all(table.values()) and bool(table), table
