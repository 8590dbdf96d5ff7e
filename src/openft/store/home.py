"""OPENFT_HOME closed to other users of the machine: the folder 0700, everything created in it 0600.

Called when a server or worker starts. The umask covers what other code writes (the SQLite database
and its WAL, checkpoints and adapters written by the trainer child, which inherits it); the folders
made here get 0700 explicitly, and an existing installation's home folder is tightened once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from openft.config import Settings, get_settings
from openft.store.blobs import DIR_MODE

log = logging.getLogger(__name__)
PRIVATE_UMASK = 0o077


def secure_home(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    os.umask(PRIVATE_UMASK)
    for folder in (settings.home, settings.files_dir, settings.artifacts_dir):
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _tighten(folder)
    database = _sqlite_path(settings.database_url)
    if database is not None:
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")):
            if path.exists():
                _tighten(path, 0o600)


def _tighten(path: Path, mode: int = DIR_MODE) -> None:
    """chmod what we own; what we cannot change (another owner, a read-only mount) is left, with a warning."""
    try:
        if path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
    except OSError as exc:  # not ours, or a read-only mount: the server still starts (reads keep working)
        log.warning("cannot restrict %s to mode %o (%s); other users may be able to read it", path, mode,
                    exc.strerror or exc)


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" else None


def create_private_file(path: Path) -> None:
    """Create an empty 0600 file unless it exists (the SQLite database, before SQLite creates it 0644)."""
    if path.exists():
        return
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
