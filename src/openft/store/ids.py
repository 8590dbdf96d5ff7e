"""OpenAI-looking identifiers (``file-…``, ``ftjob-…``, ``ftckpt_…``, ``chatcmpl-…``)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """``prefix`` includes its separator, e.g. ``"file-"`` or ``"ftckpt_"``."""
    return prefix + random_token(length)
