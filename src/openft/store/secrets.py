"""Third-party secrets at rest (API keys of evaluation endpoints), encrypted with the server's secret.

The secret is ``OPENFT_SECRET_KEY`` (one or more comma-separated Fernet keys: the first encrypts, all
decrypt, so keys can be rotated) or, when unset, ``$OPENFT_HOME/secret.key``, created 0600 on first use.
Servers and workers that share a database must share the secret. Sealed values carry a prefix, so a
value stored before encryption existed still reads (migration 0005_hardening seals those).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from openft.config import Settings, get_settings
from openft.store.blobs import DIR_MODE, open_private
from openft.store.ids import random_token

SEALED_PREFIX = "fernet:"
_cache: dict[tuple, MultiFernet] = {}
_lock = threading.Lock()


class SecretError(RuntimeError):
    """The server secret is unusable, or a sealed value was sealed with another secret."""


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def seal(plain: str, settings: Settings | None = None) -> str:
    token = _fernet(settings or get_settings()).encrypt(plain.encode("utf-8"))
    return SEALED_PREFIX + token.decode("ascii")


def unseal(value: str, settings: Settings | None = None) -> str:
    if not is_sealed(value):
        return value
    try:
        return _fernet(settings or get_settings()).decrypt(value[len(SEALED_PREFIX):].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise SecretError(
            "A stored API key cannot be decrypted with this process's secret: every server and worker sharing "
            "the database needs the same OPENFT_SECRET_KEY (or the same $OPENFT_HOME/secret.key)."
        ) from None


def _fernet(settings: Settings) -> MultiFernet:
    cache_key = (settings.secret_key, str(settings.secret_key_path))
    with _lock:
        fernet = _cache.get(cache_key)
        if fernet is None:
            if settings.secret_key:
                keys = _configured_keys(settings.secret_key)
            else:
                keys = [_key_file(settings.secret_key_path)]
            fernet = _cache[cache_key] = MultiFernet([Fernet(key) for key in keys])
        return fernet


def _configured_keys(raw: str) -> list[bytes]:
    keys = [part.strip().encode("ascii") for part in raw.split(",") if part.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise SecretError(
                "OPENFT_SECRET_KEY must hold Fernet keys (32 url-safe base64-encoded bytes), comma-separated; make "
                "one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None
    return keys


def _key_file(path: Path) -> bytes:
    """Read the secret file, creating it (0600, atomically: concurrent first starts agree on one key)."""
    if not path.exists():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}-{random_token(8)}")
        with os.fdopen(open_private(temporary), "wb") as out:
            out.write(Fernet.generate_key())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)  # fails if another process won the race; then its key is used
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except ValueError:
        raise SecretError(
            f"{path} does not hold a Fernet key; restore it from a backup or set OPENFT_SECRET_KEY."
        ) from None
    return key


def forget_secrets() -> None:
    """Drop cached keys (tests switch OPENFT_HOME between cases)."""
    with _lock:
        _cache.clear()
