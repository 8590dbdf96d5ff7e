"""Blob storage for uploaded files and artifacts on the local disk (or a shared mount).

Keys are generated ids; user-supplied names never become part of a path.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from openft.store.ids import random_token

_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class BlobTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"file exceeds the {limit}-byte limit")
        self.limit = limit


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    async def write_stream(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """Write chunks to ``key`` atomically; stop and delete as soon as ``limit`` bytes are exceeded."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        partial = self.root / f".partial-{key}-{random_token(8)}"
        size = 0
        try:
            with open(partial, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise BlobTooLarge(limit)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        return size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
