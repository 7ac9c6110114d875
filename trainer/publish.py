"""Publishing exported versions: complete before visible, and the models of one export as one set.

Every model version is saved under ``<base>/<name>/.tmp-<version>-<pid>`` (servers ignore names
that are not integers), completed with ``serving.completion``'s marker (written last), and renamed
to ``<base>/<name>/<version>``. Inside ``export_set(base)`` the renames wait until every model of
the export is staged, and then run in the order the models were saved, after a journal
``<base>/.publish-<pid>.json`` listing them is written. A kill during the long part (saving)
publishes nothing; a kill between two renames (microseconds apart) leaves the journal, and the
next export or ``recover(base)`` finishes the remaining renames first (roll forward), so the set
ends up complete on the new version. ``recover`` also deletes ``.tmp-*`` directories whose
process is gone. Local paths only (``os.rename`` is atomic there).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

from serving import completion

log = logging.getLogger("trainer.publish")

_TMP = re.compile(r"^\.tmp-(?P<version>[0-9]+)-(?P<pid>[0-9]+)$")
_local = threading.local()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExportSet:
    """Staged versions of one export, published together by ``publish``."""

    def __init__(self, base: str):
        self.base = os.path.abspath(base)
        self.staged: List[Tuple[str, str]] = []  # (tmp, final) in save order

    def add(self, tmp: str, final: str) -> None:
        self.staged.append((tmp, final))

    @property
    def journal(self) -> str:
        return os.path.join(self.base, f".publish-{os.getpid()}.json")

    def publish(self) -> None:
        if not self.staged:
            return
        for _, final in self.staged:
            if os.path.exists(final):
                raise FileExistsError(f"{final} already exists; versions are immutable")
        tmp_journal = self.journal + ".tmp"
        with open(tmp_journal, "w") as f:
            json.dump({"renames": self.staged}, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp_journal, self.journal)
        for tmp, final in self.staged:
            os.rename(tmp, final)
        os.remove(self.journal)

    def abort(self) -> None:
        for tmp, _ in self.staged:
            shutil.rmtree(tmp, ignore_errors=True)


def _active(base: str) -> Optional[ExportSet]:
    for s in reversed(getattr(_local, "sets", [])):
        if s.base == os.path.abspath(base):
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
    else:
        recover(base)
        if os.path.exists(final):
            raise FileExistsError(f"{final} already exists; versions are immutable")
        os.rename(tmp, final)
    return final


def recover(base: str) -> List[str]:
    """Finishes publishes interrupted between renames, then removes temporaries of dead processes.

    Returns the versions it published. Journals and temporaries of live processes are left alone.
    """
    base = os.path.abspath(base)
    done = []
    for journal in sorted(glob.glob(os.path.join(base, ".publish-*.json"))):
        m = re.search(r"\.publish-([0-9]+)\.json$", journal)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            with open(journal) as f:
                renames = json.load(f)["renames"]
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable publish journal %s: %s", journal, e)
            continue
        for tmp, final in renames:
            if os.path.isdir(tmp) and not os.path.exists(final):
                state, detail = completion.check(tmp, completion.file_sizes(tmp))
                if state != "complete":
                    log.warning("not publishing %s from interrupted export: %s", final, detail or state)
                    continue
                os.rename(tmp, final)
                done.append(final)
                log.warning("published %s left behind by an interrupted export", final)
        os.remove(journal)
    for model_dir in glob.glob(os.path.join(base, "*")):
        if not os.path.isdir(model_dir):
            continue
        for entry in os.listdir(model_dir):
            m = _TMP.match(entry)
            if m and not _alive(int(m.group("pid"))):
                log.info("removing stale temporary %s", os.path.join(model_dir, entry))
                shutil.rmtree(os.path.join(model_dir, entry), ignore_errors=True)
    return done
