"""Secrets an arena keeps in its data folder when the operator sets none (admin password, IP-hash salt,
battle-token key): made once, readable only by their owner, and the same for every process sharing the
folder.

Processes that start together may race to create one: each writes its candidate beside the file and
hard-links it into place, so the file appears complete or not at all and every process reads the
winner's value.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def create_secret_file(path: Path, make: Callable[[], str]) -> bool:
    """Write ``make()`` to ``path`` (mode 0600) unless it exists; True if this call wrote it."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(make() + "\n")
        try:
            os.link(staging, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(staging)


def read_secret_file(path: Path) -> str:
    """The secret in ``path``, stripped; its mode is tightened to 0600 if others could read it.

    Raises ValueError when the file is empty (delete it to have a new one made).
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); set to 0600", path, mode)
        path.chmod(0o600)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"{path} is empty; delete it to generate a new one")
    return value


def kept_secret(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The secret kept in ``path``, made by ``make`` on first use; and whether this call made it."""
    created = create_secret_file(path, make)
    return read_secret_file(path), created
