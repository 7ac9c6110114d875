"""Publishing exported versions: complete before visible, and the models of one export as one set.

Every model version is saved under ``<base>/<name>/.tmp-<version>-<pid>`` (servers ignore names
that are not integers; on object stores the name also carries the host, ``-<host>``), completed
with ``contracts.completion``'s marker (written last), and then moved to ``<base>/<name>/<version>``:

- local disks (and HDFS): one ``rename``, atomic.
- object stores (gs://, s3://, ..., and TensorFlow's ram://), where a directory "rename" is a copy
  of every object: ``<base>/<name>/.publishing-<version>`` is written first (readers that honour it,
  ``serving.models.list_versions``, do not list the version while it exists), then every file is
  copied with ``saved_model.pb`` second to last (a partial copy is not a SavedModel, so real TF
  Serving cannot load one either) and the completion marker last, then the ``.publishing-`` file
  is deleted (the version appears), then the temporary.

Inside ``export_set(base)`` the moves wait until every model of the export is staged, and then run
in the order the models were saved, after a journal ``<base>/.publish-<pid>.json`` listing them is
written (with the host). A kill during the long part (saving) publishes nothing; a kill during the
moves leaves the journal, and the next export or ``recover(base)`` finishes them first (roll
forward; a partial copy is redone from its complete temporary), so the set ends up complete on the
new version. ``recover`` also deletes ``.tmp-*`` directories whose process is gone. A journal or
temporary written on another host is left alone: this process cannot tell whether it is alive.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

from contracts import completion
from recsys import fileio

log = logging.getLogger("trainer.publish")

_TMP = re.compile(r"^\.tmp-(?P<version>[0-9]+)-(?P<pid>[0-9]+)(?:-(?P<host>[A-Za-z0-9.-]+))?$")
_JOURNAL = re.compile(r"\.publish-([0-9]+)\.json$")
_local = threading.local()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"


def _alive(pid: int, host: Optional[str] = None) -> bool:
    if host is not None and host != _host():
        return True   # another machine's process: unknowable from here, so never treated as dead
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _norm(base: str) -> str:
    return os.path.abspath(base) if fileio.is_local(base) else base.rstrip("/")


def tmp_name(version: int, base: str) -> str:
    """The staging directory name of ``version`` (not an integer: servers ignore it)."""
    suffix = "" if fileio.is_local(base) else f"-{_host()}"
    return f".tmp-{version}-{os.getpid()}{suffix}"


def publishing_path(final: str) -> str:
    """``<model_dir>/.publishing-<version>`` for version directory ``final``."""
    final = final.rstrip("/")
    model_dir, version = os.path.split(final) if fileio.is_local(final) else final.rsplit("/", 1)
    return fileio.join(model_dir, completion.PUBLISHING + version)


def _copy_order(rel: str):
    """Everything else first, then saved_model.pb (the file that makes it a SavedModel), the marker last."""
    return rel == completion.MARKER, rel in ("saved_model.pb", "saved_model.pbtxt"), rel


def _copy_version(tmp: str, final: str) -> None:
    """Object stores: copy a complete staged version into ``final`` (its ``.publishing-`` file already written)."""
    fileio.copy_tree(tmp, final, order=_copy_order)


def _finish_copy(tmp: str, final: str) -> None:
    fileio.rmtree(publishing_path(final))   # the version becomes visible to readers that honour it
    fileio.rmtree(tmp)


class ExportSet:
    """Staged versions of one export, published together by ``publish``."""

    def __init__(self, base: str):
        self.base = _norm(base)
        self.staged: List[Tuple[str, str]] = []  # (tmp, final) in save order

    def add(self, tmp: str, final: str) -> None:
        self.staged.append((tmp, final))

    @property
    def journal(self) -> str:
        return fileio.join(self.base, f".publish-{os.getpid()}.json")

    def publish(self) -> None:
        if not self.staged:
            return
        for _, final in self.staged:
            if fileio.exists(final):
                raise FileExistsError(f"{final} already exists; versions are immutable")
        fileio.write_json(self.journal, {"renames": self.staged, "host": _host()}, atomic=True)
        if fileio.renames_atomically(self.base):
            for tmp, final in self.staged:
                fileio.rename(tmp, final)
        else:
            for _, final in self.staged:   # every version hidden first, so the set appears together
                fileio.write_text(publishing_path(final), "")
            for tmp, final in self.staged:
                _copy_version(tmp, final)
            for tmp, final in self.staged:
                _finish_copy(tmp, final)
        fileio.remove(self.journal)

    def abort(self) -> None:
        for tmp, _ in self.staged:
            fileio.rmtree(tmp)


def _active(base: str) -> Optional[ExportSet]:
    for s in reversed(getattr(_local, "sets", [])):
        if s.base == _norm(base):
            return s
    return None


@contextmanager
def export_set(base: str) -> Iterator[ExportSet]:
    """Collects every ``publish_version`` under ``base`` and publishes them together on exit.

    Nested sets on the same base join the outer one. On an exception nothing is published and
    the staged temporaries are removed.
    """
    outer = _active(base)
    if outer is not None:
        yield outer
        return
    recover(base)
    s = ExportSet(base)
    _local.sets = getattr(_local, "sets", []) + [s]
    try:
        yield s
    except BaseException:
        s.abort()
        raise
    else:
        s.publish()
    finally:
        _local.sets = [x for x in _local.sets if x is not s]


def publish_version(base: str, tmp: str, final: str) -> str:
    """Completes a staged version (marker last) and publishes it, now or with its export set."""
    completion.write_marker(tmp)
    s = _active(base)
    if s is not None:
        s.add(tmp, final)
        return final
    recover(base)
    if fileio.exists(final):
        raise FileExistsError(f"{final} already exists; versions are immutable")
    if fileio.renames_atomically(base):
        fileio.rename(tmp, final)
    else:   # a copy can be interrupted: journal it like a set of one, so recover() can finish it
        one = ExportSet(base)
        one.add(tmp, final)
        one.publish()
    return final


def is_complete(path: str) -> bool:
    """A version directory whose completion marker matches its files."""
    return fileio.isdir(path) and completion.check(path, completion.file_sizes(path))[0] == "complete"


def _roll_forward(tmp: str, final: str, atomic: bool) -> bool:
    """Finishes one interrupted move; True when ``final`` was published by it."""
    if atomic:
        if fileio.isdir(tmp) and not fileio.exists(final):
            if not is_complete(tmp):
                log.warning("not publishing %s from interrupted export: %s", final,
                            completion.check(tmp, completion.file_sizes(tmp))[1] or "unmarked")
                return False
            fileio.rename(tmp, final)
            return True
        return False
    pending = fileio.exists(publishing_path(final))
    if not pending:
        return False   # its copy had finished and it was made visible before the interruption
    if not is_complete(final):
        if not is_complete(tmp):   # neither copy is whole: nothing can be published, and nothing half is left
            log.warning("not publishing %s from interrupted export: its staged copy is incomplete", final)
            fileio.rmtree(final)
            fileio.rmtree(publishing_path(final))
            fileio.rmtree(tmp)
            return False
        fileio.rmtree(final)
        _copy_version(tmp, final)
    _finish_copy(tmp, final)
    return True


def recover(base: str) -> List[str]:
    """Finishes publishes interrupted between moves, then removes temporaries of dead processes.

    Returns the versions it published. Journals and temporaries of live processes (or of other
    hosts) are left alone.
    """
    base = _norm(base)
    if not fileio.isdir(base):
        return []
    atomic = fileio.renames_atomically(base)
    done = []
    for journal in fileio.glob(fileio.join(base, ".publish-*.json")):
        m = _JOURNAL.search(journal)
        if m is None:
            continue
        try:
            record = fileio.read_json(journal)
            renames = record["renames"]
        except Exception as e:  # noqa: BLE001  (bad JSON, or tf.errors.* from a bucket: left for the next try)
            log.warning("ignoring unreadable publish journal %s: %s", journal, e)
            continue
        if _alive(int(m.group(1)), record.get("host")):
            continue
        for tmp, final in renames:
            if _roll_forward(tmp, final, atomic):
                done.append(final)
                log.warning("published %s left behind by an interrupted export", final)
        fileio.remove(journal)
    for name in fileio.listdir(base):
        model_dir = fileio.join(base, name)
        if not fileio.isdir(model_dir):
            continue
        for entry in fileio.listdir(model_dir):
            m = _TMP.match(entry)
            if m and not _alive(int(m.group("pid")), m.group("host")):
                log.info("removing stale temporary %s", fileio.join(model_dir, entry))
                fileio.rmtree(fileio.join(model_dir, entry))
    return done
