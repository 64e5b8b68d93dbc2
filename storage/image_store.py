"""Where the image store keeps its files: a local (or shared, e.g. NFS) directory, or any fsspec URL.

``storage.images.ImageStore`` names each picture by a key, ``ab/<sha256>.<ext>``, and reads and writes
through one of these backends, so every arena process, the judge, ``forget`` and export see the same
pictures wherever they are kept:

- ``LocalBackend``: files under a directory, written to a temporary file, fsync'ed and published with a
  hard link, so a reader never sees half a file and of several writers of one picture exactly one
  reports that it created it. A directory shared between machines (NFS, CephFS) is the default way to
  run several arena processes.
- ``FsspecBackend``: any filesystem fsspec knows by URL (``s3://bucket/prefix``, ``gs://…``,
  ``memory://…``), through the optional ``fsspec`` extra (plus the protocol's own package, e.g.
  ``s3fs``; credentials come from that package's usual environment). A write creates the object only
  if it is absent where the filesystem can say so (``pipe_file(mode="create")``, fsspec 2024.12 on);
  elsewhere two processes may both write the same bytes, which is harmless for content-addressed
  files. Object stores make a put visible whole or not at all.

``open_backend`` picks one from a location: a path, or ``file://…``, is a local directory; any other
URL goes to fsspec.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


class StoreBackend(Protocol):
    """Bytes by key (``ab/<sha256>.<ext>``): the operations the image store needs of a place to keep files."""

    #: where the store is, as an operator wrote it (a directory or a URL), for messages
    location: str

    def exists(self, key: str) -> bool:
        """Whether a file is stored under ``key``."""
        ...

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless something is there already; true when this call created it."""
        ...

    def read(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None when nothing is stored there."""
        ...

    def remove(self, key: str) -> bool:
        """Delete what is under ``key``; true when something was deleted."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The local file that holds (or would hold) ``key``; None for a store that is not on this disk."""
        ...


class LocalBackend:
    """Files under a directory of this machine (or a shared filesystem mounted on it)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def local_path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def create(self, key: str, data: bytes) -> bool:
        path = self.root / key
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return _publish(Path(tmp), path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, key: str) -> bool:
        try:
            (self.root / key).unlink()
        except FileNotFoundError:
            return False
        return True


def _publish(tmp: Path, path: Path) -> bool:
    """Move a finished temporary file to its final name; true when this call created ``path``.

    A hard link fails when the file already exists, so of several writers of the same picture exactly
    one reports that it created it; filesystems without hard links fall back to an atomic replace.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:
        os.replace(tmp, path)
    return True


class FsspecBackend:
    """Objects under a prefix of an fsspec filesystem (``s3://bucket/images``, ``memory://arena``, …)."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:  # the optional extra is missing
            raise RuntimeError(
                f"image store {url!r} needs fsspec: pip install 'vlm-arena[fsspec]' "
                "(and the protocol's package, e.g. s3fs for s3://)"
            ) from exc
        self.location = url
        fs, root = url_to_fs(url, **storage_options)
        self.fs: AbstractFileSystem = fs
        self.root = str(root).rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def local_path(self, key: str) -> None:
        return None

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if self.fs.exists(path):
            return False
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except NotImplementedError:  # no exclusive create here: the same bytes may be written twice
            self.fs.pipe_file(path, data)
        return True

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None

    def remove(self, key: str) -> bool:
        path = self._path(key)
        if not self.fs.exists(path):  # object stores delete a missing key without complaint
            return False
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        self.fs.invalidate_cache(path)
        return True


def open_backend(location: Path | str, **storage_options: Any) -> LocalBackend | FsspecBackend:
    """The backend for a store location: a directory path (or ``file://`` URL), else an fsspec URL."""
    if isinstance(location, Path):
        return LocalBackend(location)
    if location.startswith("file://"):
        return LocalBackend(Path(location.removeprefix("file://")))
    if "://" in location:
        return FsspecBackend(location, **storage_options)
    return LocalBackend(Path(location).expanduser())


__all__ = ["FsspecBackend", "LocalBackend", "StoreBackend", "open_backend"]
