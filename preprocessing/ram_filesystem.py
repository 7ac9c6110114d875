"""Beam can read and write TensorFlow's in-memory ``ram://`` filesystem: preprocessing runs off the local disk.

Why: the pipeline must work on any filesystem (gs://, s3://, hdfs:// on Dataflow); ``ram://`` is one
that is not the local disk and needs no cloud, so tests run the real pipeline on it. Beam finds
``FileSystem`` subclasses when they are defined, so importing this module registers the scheme;
``preprocessing.pipeline`` imports it only for ``ram://`` paths, and Beam must then run in this
process (ram:// lives in its memory). Every call goes through ``recsys.fileio`` (tf.io.gfile).

TensorFlow 2.16's own ram:// falls short of an object store in ways that break TF-Transform on it:
``tf.io.gfile.rename`` of a directory moves the directory entry but none of its files (TFT's
``WriteTransformFn`` renames directories; gs://, s3:// and local disks move the whole tree), and
``listdir``/``rmtree`` see phantom entries from path-prefix matching (see ``recsys.fileio``). Importing
this module therefore also routes those tf.io.gfile calls, for ram:// paths only, to ``recsys.fileio``'s
exact-name versions; every other path reaches TensorFlow unchanged.
"""
from __future__ import annotations

import posixpath
from typing import BinaryIO, Iterator, List, Tuple

from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem

from recsys import fileio

SCHEME = "ram"
PREFIX = SCHEME + "://"


def _is_ram(path) -> bool:
    return isinstance(path, (str, bytes)) and (path.decode() if isinstance(path, bytes) else path).startswith(PREFIX)


def _route_ram_directory_calls() -> None:
    """tf.io.gfile.{rename, rmtree, listdir, walk} on ram:// paths -> whole-tree, exact-name versions."""
    import tensorflow as tf

    g = tf.io.gfile
    if getattr(g, "_recsys_ram_routed", False):
        return
    original = {name: getattr(g, name) for name in ("rename", "rmtree", "listdir", "walk")}

    def rename(src, dst, overwrite=False):
        if _is_ram(src) and fileio.isdir(src):
            if fileio.exists(dst):
                if not overwrite:
                    raise tf.errors.AlreadyExistsError(None, None, f"{dst} exists")
                fileio.rmtree(dst)
            fileio.copy_tree(src, dst)
            fileio.rmtree(src)
            return
        original["rename"](src, dst, overwrite)

    def rmtree(path):
        return fileio.rmtree(path, missing_ok=False) if _is_ram(path) else original["rmtree"](path)

    def listdir(path):
        return fileio.listdir(path) if _is_ram(path) else original["listdir"](path)

    def walk(top, topdown=True, onerror=None):
        if not _is_ram(top):
            return original["walk"](top, topdown, onerror)
        return iter(fileio.walk(top) if topdown else reversed(list(fileio.walk(top))))

    g.rename, g.rmtree, g.listdir, g.walk = rename, rmtree, listdir, walk
    g._recsys_ram_routed = True


_route_ram_directory_calls()


def _each(op: str, pairs, fn) -> None:
    """Runs ``fn`` on every item; raises one BeamIOError naming each failure, as Beam's filesystems do."""
    errors = {}
    for item in pairs:
        try:
            fn(*item) if isinstance(item, tuple) else fn(item)
        except Exception as e:  # noqa: BLE001  (reported per path below)
            errors[item] = e
    if errors:
        raise BeamIOError(f"{op} operation failed", errors)


class RamFileSystem(FileSystem):
    """``ram://`` for Beam, delegating to tf.io.gfile (through ``recsys.fileio``)."""

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def join(self, basepath: str, *paths: str) -> str:
        return posixpath.join(basepath, *paths)

    def split(self, path: str) -> Tuple[str, str]:
        path = path.strip()
        if not path.startswith(PREFIX):
            raise ValueError(f"path {path!r} must begin with {PREFIX}")
        head, _, tail = path[len(PREFIX):].rpartition("/")
        return (PREFIX + head, tail) if head else (path, "")

    def mkdirs(self, path: str) -> None:
        if fileio.exists(path):
            raise IOError(f"{path} already exists")
        fileio.makedirs(path)

    def has_dirs(self) -> bool:
        return True

    def _list(self, dir_or_prefix: str) -> Iterator[FileMetadata]:
        if not fileio.exists(dir_or_prefix):
            return
        try:
            for root, _, files in fileio.walk(dir_or_prefix):
                for name in files:
                    yield self.metadata(self.join(root, name))
        except Exception as e:  # noqa: BLE001
            raise BeamIOError("List operation failed", {dir_or_prefix: e})

    def create(self, path: str, mime_type: str = "application/octet-stream",
               compression_type: str = CompressionTypes.AUTO) -> BinaryIO:
        return self._wrap(fileio.open_write(path), path, compression_type)

    def open(self, path: str, mime_type: str = "application/octet-stream",
             compression_type: str = CompressionTypes.AUTO) -> BinaryIO:
        return self._wrap(fileio.open_read(path), path, compression_type)

    @staticmethod
    def _wrap(raw, path: str, compression_type: str):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        return raw if compression_type == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression_type)

    def copy(self, source_file_names: List[str], destination_file_names: List[str]) -> None:
        assert len(source_file_names) == len(destination_file_names)

        def one(src: str, dst: str) -> None:
            if fileio.isdir(src):
                fileio.rmtree(dst)
                fileio.copy_tree(src, dst)
            else:
                fileio.makedirs(posixpath.dirname(dst))
                fileio.copy(src, dst)

        _each("Copy", list(zip(source_file_names, destination_file_names)), one)

    def rename(self, source_file_names: List[str], destination_file_names: List[str]) -> None:
        assert len(source_file_names) == len(destination_file_names)

        def one(src: str, dst: str) -> None:
            if fileio.isdir(src):   # tf's ram:// moves only the directory entry, not its files: copy + delete
                fileio.rename_or_copy(src, dst)
            else:
                fileio.makedirs(posixpath.dirname(dst))
                fileio.copy(src, dst)
                fileio.remove(src)

        _each("Rename", list(zip(source_file_names, destination_file_names)), one)

    def exists(self, path: str) -> bool:
        return fileio.exists(path)

    def size(self, path: str) -> int:
        try:
            return fileio.size(path)
        except Exception as e:  # noqa: BLE001
            raise BeamIOError("Size operation failed", {path: e})

    def last_updated(self, path: str) -> float:
        if not fileio.exists(path):
            raise BeamIOError(f"Path does not exist: {path}")
        return fileio.mtime(path)

    def checksum(self, path: str) -> str:
        return str(self.size(path))

    def metadata(self, path: str) -> FileMetadata:
        if not fileio.exists(path):
            raise BeamIOError(f"Path does not exist: {path}")
        return FileMetadata(path, fileio.size(path), fileio.mtime(path))

    def delete(self, paths: List[str]) -> None:
        errors = {}
        for match in self.match(paths):
            if not match.metadata_list:
                errors[match.pattern] = IOError(f"No files found to delete under: {match.pattern}")
            for meta in match.metadata_list:
                try:
                    fileio.rmtree(meta.path, missing_ok=False)
                except Exception as e:  # noqa: BLE001
                    errors[meta.path] = e
        if errors:
            raise BeamIOError("Delete operation failed", errors)
