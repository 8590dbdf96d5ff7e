"""Blob storage for uploaded files and artifacts on the local disk (or a shared mount).

Keys are generated ids; user-supplied names never become part of a path. Bytes always go to a
``.partial-*`` name first and are renamed into place only when complete, so a blob under its final
name is never a torn write; the reaper (store/reaper.py) removes partials a killed process left.
Every disk error leaves as a StorageFault that says what failed (disk full, read-only, ...).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from openft.store.ids import random_token

_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
PARTIAL_PREFIX = ".partial-"
FILE_MODE = 0o600  # uploads and artifacts are readable by the server's user only
DIR_MODE = 0o700

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


class BlobTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"file exceeds the {limit}-byte limit")
        self.limit = limit


class StorageFault(Exception):
    """The disk refused an operation. ``kind``: "full", "read_only", "missing" or "io_error"."""

    def __init__(self, kind: str, action: str, detail: str, outcome: str | None = None) -> None:
        self.kind, self.action, self.detail, self.outcome = kind, action, detail, outcome
        super().__init__(self.describe())

    def describe(self) -> str:
        what = {
            "full": "the storage under OPENFT_HOME is full",
            "read_only": "the storage under OPENFT_HOME is read-only or not writable by the server",
            "missing": "the file's bytes are missing from storage",
        }.get(self.kind, "the storage under OPENFT_HOME failed")
        message = f"Could not {self.action}: {what} ({self.detail})."
        return f"{message} {self.outcome}" if self.outcome else message


def classify(exc: OSError) -> str:
    if exc.errno in FULL_ERRNOS:
        return "full"
    if exc.errno in READ_ONLY_ERRNOS:
        return "read_only"
    if exc.errno == errno.ENOENT:
        return "missing"
    return "io_error"


@contextmanager
def storage_errors(action: str, outcome: str | None = None) -> Iterator[None]:
    """Turn an OSError raised inside into a StorageFault naming ``action`` ("store the uploaded file")
    and, when given, what the user is left with ("Nothing was stored.")."""
    try:
        yield
    except StorageFault as fault:
        if outcome and not fault.outcome:
            raise StorageFault(fault.kind, fault.action, fault.detail, outcome) from fault
        raise
    except OSError as exc:
        raise StorageFault(classify(exc), action, exc.strerror or str(exc), outcome) from exc


def is_blob_key(name: str) -> bool:
    return bool(_KEY.match(name))


def open_private(path: Path) -> int:
    """A new file only the owner can read, whatever the umask (O_EXCL: never follows or reuses a name)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    def ensure_root(self) -> None:
        with storage_errors("prepare the files folder"):
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def partial_path(self, key: str) -> Path:
        """A fresh temporary name beside ``key``'s final one (same filesystem, so the rename is atomic)."""
        self.path(key)  # validates the key
        return self.root / f"{PARTIAL_PREFIX}{key}-{random_token(8)}"

    def commit(self, partial: Path, key: str) -> Path:
        """Move a complete partial file into place under ``key``."""
        final = self.path(key)
        with storage_errors("store the file"):
            os.replace(partial, final)
            _fsync_dir(self.root)
        return final

    async def write_stream(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """Write chunks to ``key`` atomically; stop and delete as soon as ``limit`` bytes are exceeded."""
        self.ensure_root()
        partial = self.partial_path(key)
        size = 0
        try:
            with storage_errors("store the file"):
                with os.fdopen(open_private(partial), "wb") as out:
                    async for chunk in chunks:
                        size += len(chunk)
                        if size > limit:
                            raise BlobTooLarge(limit)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            self.commit(partial, key)
        finally:
            partial.unlink(missing_ok=True)
        return size

    def write_bytes(self, key: str, payload: bytes, action: str = "store the file") -> Path:
        """Write a small blob (an artifact such as a results CSV) atomically; nothing is left on failure."""
        self.ensure_root()
        partial = self.partial_path(key)
        try:
            with storage_errors(action):
                with os.fdopen(open_private(partial), "wb") as out:
                    out.write(payload)
                    out.flush()
                    os.fsync(out.fileno())
            return self.commit(partial, key)
        finally:
            partial.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        """Remove a blob; already gone is fine, a disk that refuses raises StorageFault."""
        with storage_errors("delete the file's bytes", "The file was kept as it was."):
            self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); platforms that cannot open folders skip it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
