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
import re
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from contracts import completion
from recsys import fileio
from serving.batching import Batcher
from serving.config_validation import validate_config
from serving.errors import INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, ServingError, as_serving_error
from serving.request_logging import RequestLogger, RequestLogOptions
from serving.servable import Servable

log = logging.getLogger("serving")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
MAX_STATUS_ENTRIES = 16  # per model; oldest finished versions drop off
SETTLE_SECONDS = 10.0    # an unmarked version whose files are all older than this counts as stable
STARTUP_WAIT_SECONDS = 10.0  # start() waits this long at most for versions still being written


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


class _Changed(Exception):
    """A version's files changed between the start of its load and the end of its warmup."""


class _Model:
    def __init__(self, config: model_server_config_pb2.ModelConfig):
        self.config = config
        self.snapshot = _Snapshot({}, None)
        self.status: Dict[int, VersionStatus] = {}
        self.failed: Dict[int, tuple] = {}  # version -> fingerprint of the files that failed
        self.warned_missing = False
        self.loaded_fp: Dict[int, tuple] = {}  # version -> fingerprint its servable was loaded from
        self.seen_fp: Dict[int, tuple] = {}    # version not loaded yet -> fingerprint at the last poll
        self.waiting: Dict[int, str] = {}      # versions wanted but not complete/stable yet -> why
        self.base_path_problem = ""            # why the base path could not be listed ("" = fine)

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


_VERSION_NAME = re.compile(r"[0-9]{1,19}")  # ASCII decimal only: "²" and Arabic-Indic digits are not versions
MAX_VERSION = (1 << 63) - 1                 # int64, as TF Serving (and the protos) require


def parse_version(name: str) -> Optional[int]:
    """The version number a directory name stands for, or None (TF Serving ignores such names too)."""
    if not _VERSION_NAME.fullmatch(name):
        return None
    v = int(name)
    return v if v <= MAX_VERSION else None


def list_versions(base_path: str) -> Dict[int, str]:
    """Version-named subdirectories of a model's base path (``.tmp-*`` and other names are ignored).

    A version with a ``.publishing-<version>`` sibling is skipped: on object stores the publisher
    copies it into place file by file and deletes that file when the copy is whole.
    Raises when the path can't be listed: a listing hiccup must not look like "all versions gone".
    One odd entry never stops the listing.
    """
    names = fileio.listdir(base_path)
    publishing = {parse_version(n[len(completion.PUBLISHING):]) for n in names if n.startswith(completion.PUBLISHING)}
    out = {}
    for name in names:
        v = parse_version(name)
        if v is None or v in out or v in publishing:
            continue  # "007" and "7" are one version: the first name (sorted) wins
        path = fileio.join(base_path, name)
        try:
            if fileio.isdir(path):
                out[v] = path
        except Exception as e:  # noqa: BLE001
            log.warning("ignoring %s: %s", path, e)
    return out


def change_times(path: str, entries: tuple) -> Tuple[Optional[float], float]:
    """(change time of the version dir itself or None, latest change of anything inside it).

    Local files report inode change times, which copies (``cp -a``, ``copytree``) cannot back-date
    and which a rename updates on the renamed directory: a directory at least as new as everything
    in it was renamed into place complete. Other file systems report objects' modification times.
    """
    if "://" in path:
        return None, max((e[2] / 1e9 for e in entries if len(e) == 3), default=0.0)
    newest = 0.0
    for root, dirs, files in os.walk(path):
        for f in files + dirs:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                return None, time.time()
            newest = max(newest, st.st_ctime, st.st_mtime)
    try:
        own = os.lstat(path).st_ctime
    except OSError:
        return None, time.time()
    return own, newest


def fingerprint(path: str) -> tuple:
    """(file, size, mtime) of every file under a version dir: a failed load is retried when this changes."""
    entries = []
    try:
        for root, _, files in fileio.walk(path):
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
                 batching: Optional[BatchingOptions] = None, metrics=None,
                 request_logging: Optional[RequestLogOptions] = None):
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
        # the models' logging_config (TF Serving's ServerRequestLogger); a bad one fails here, at startup
        self.request_logger = RequestLogger(self.tags, request_logging, metrics)
        self.request_logger.update(config)
        self._apply_config(config)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "ModelManager":
        """Loads what the config asks for (blocking, like TF Serving's startup), then polls in the background.

        Versions still being written (see ``_ready``) are waited for up to STARTUP_WAIT_SECONDS.
        """
        self.poll()
        deadline = time.monotonic() + STARTUP_WAIT_SECONDS
        while any(m.waiting for m in self._models.values()) and time.monotonic() < deadline:
            time.sleep(min(0.5, self.poll_seconds) if self.poll_seconds > 0 else 0.5)
            self.poll()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="model-poller", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.request_logger.close()  # writes what is still queued

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
            self.request_logger.update(config)  # validates logging_config; refused = nothing changes
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
        try:
            exists = fileio.isdir(cfg.base_path)
            disk = list_versions(cfg.base_path) if exists else None
        except Exception as e:  # noqa: BLE001  (unreadable: keep serving what is loaded, and say so)
            exists, disk = True, None
            problem = f"base path {cfg.base_path} cannot be listed: {type(e).__name__}: {e}"
        else:
            problem = "" if exists else f"base path {cfg.base_path} does not exist"
        self._base_path(model, problem)
        if disk is None:
            return
        policy = cfg.model_version_policy.WhichOneof("policy_choice") or "latest"
        limit = float("inf")
        if policy == "latest":
            limit = max(1, cfg.model_version_policy.latest.num_versions or 1)
            candidates = sorted(disk, reverse=True)
        elif policy == "all":
            candidates = sorted(disk, reverse=True)
        else:
            candidates = sorted((v for v in cfg.model_version_policy.specific.versions if v in disk), reverse=True)
        for table in (model.failed, model.seen_fp, model.waiting):
            for v in [v for v in table if v not in disk]:
                del table[v]
        want: List[int] = []
        for v in candidates:
            if len(want) >= limit:
                break
            path = disk[v]
            current = model.snapshot.versions.get(v)
            fp = fingerprint(path)
            if current is not None and current.path == path:
                want.append(v)
                if fp == model.loaded_fp.get(v) or model.failed.get(v) == fp:
                    continue
                # its files changed after it loaded (a writer that paused longer than a poll): reload
                if self._ready(model, v, path, fp):
                    log.warning("files of servable %s version %d changed on disk; reloading", cfg.name, v)
                    self._load(model, v, path, fp, reload=True)
                continue
            if v in model.failed and model.failed[v] == fp:
                continue  # failed before and unchanged since: don't thrash
            if not self._ready(model, v, path, fp):
                continue
            if self._load(model, v, path, fp):
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

    def _base_path(self, model: _Model, problem: str) -> None:
        """Records (and logs once) whether the base path could be listed; status reports it."""
        if problem and problem != model.base_path_problem:
            if model.snapshot.versions:
                log.error("%s; still serving model %s versions %s", problem, model.config.name,
                          sorted(model.snapshot.versions))
            else:
                log.warning("No versions of servable %s found: %s", model.config.name, problem)
        elif not problem and model.base_path_problem:
            log.info("base path %s of model %s is readable again", model.config.base_path, model.config.name)
        model.base_path_problem = problem
        model.warned_missing = bool(problem)
        if self.metrics is not None:
            self.metrics.base_path_readable(model.config.name, not problem)

    def _ready(self, model: _Model, version: int, path: str, fp: tuple) -> bool:
        """Whether a version's files are complete: its completion marker matches, or (no marker) they
        are the same as at the previous poll or older than SETTLE_SECONDS. Otherwise it waits."""
        previous = model.seen_fp.get(version)
        model.seen_fp[version] = fp
        why = ""
        sizes = {e[0].replace(os.sep, "/"): e[1] for e in fp if len(e) == 3}
        if fp == ("<unreadable>",):
            why = "its files cannot be listed yet"
        elif "saved_model.pb" not in sizes and "saved_model.pbtxt" not in sizes:
            why = "no saved_model.pb yet"
        else:
            state, detail = completion.check(path, sizes)
            if state == "incomplete":
                why = detail
            elif state == "unmarked" and fp != previous:
                own, newest = change_times(path, fp)
                renamed = own is not None and own >= newest
                if not renamed and time.time() - newest < SETTLE_SECONDS:
                    why = (f"files still changing (no {completion.MARKER}); loading once they are unchanged "
                           f"for a poll")
        if not why:
            model.waiting.pop(version, None)
            return True
        if model.waiting.get(version) != why:
            log.info("Waiting for servable %s version %d: %s", model.config.name, version, why)
        model.waiting[version] = why  # reported by /readyz and the log; status lists it once it loads
        return False

    def _load(self, model: _Model, version: int, path: str, fp: tuple, reload: bool = False) -> bool:
        name = model.config.name
        if not reload:
            self._set_status(model, VersionStatus(version, LOADING))
        log.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        t0 = time.perf_counter()
        servable = None
        try:
            servable = Servable(name, version, path, self.tags)
            self._attach_batchers(servable)
            if self.warmup:
                servable.warmup(self.warmup_iterations)
            if fingerprint(path) != fp:  # re-validated before it may serve
                raise _Changed()
        except _Changed:
            servable.retire()
            model.seen_fp[version] = ()
            why = "files changed while loading; retrying once they are stable"
            log.warning("servable %s version %d: %s", name, version, why)
            model.waiting[version] = why
            if not reload:
                with self._status_lock:
                    model.status.pop(version, None)
            return False
        except Exception as e:  # noqa: BLE001  (a bad version must never take the server down)
            err = as_serving_error(e) if getattr(e, "error_code", None) is not None else None
            code = err.code_name if err else "UNKNOWN"
            message = f"Failed to load servable {name} version {version} from {path}: {type(e).__name__}: {e}"
            log.error(message)
            if servable is not None:
                servable.retire()
            model.failed[version] = fp
            if reload:  # the copy loaded before keeps serving
                message = f"{message[:1500]}; still serving the files loaded before they changed"
                self._set_status(model, VersionStatus(version, AVAILABLE, code, message[:2000]))
            else:
                self._set_status(model, VersionStatus(version, END, code, message[:2000]))
            if self.metrics is not None:
                self.metrics.model_loaded(name, version, False, time.perf_counter() - t0, 0)
            return False
        model.failed.pop(version, None)
        model.seen_fp.pop(version, None)
        model.loaded_fp[version] = fp
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
        model.loaded_fp.pop(version, None)
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
        problem = model.base_path_problem if model is not None else ""
        if not statuses:
            raise ServingError(NOT_FOUND, f"Could not find any versions of model {name}"
                                          + (f" ({problem})" if problem else ""))
        if problem:  # still serving, but nothing new can arrive: say so on every available version
            statuses = {v: (dataclasses.replace(st, error_code="NOT_FOUND" if "does not exist" in problem
                                                 else "UNAVAILABLE", error_message=f"{problem}; serving the "
                                                 "versions loaded before") if st.state == AVAILABLE else st)
                        for v, st in statuses.items()}
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

    def problems(self) -> Dict[str, str]:
        """Models whose base path can't be listed, and versions waiting for their files (for /readyz)."""
        out = {}
        for n, m in self._models.items():
            notes = ([m.base_path_problem] if m.base_path_problem else []) + \
                    [f"version {v} waiting: {why}" for v, why in sorted(m.waiting.items())]
            if notes:
                out[n] = "; ".join(notes)
        return out
