"""Keep secrets that clients put in query strings (``?api_key=...``) out of the access log.

uvicorn logs every request line, query string included, through the ``uvicorn.access`` logger with the path
as one of the record's arguments. This filter rewrites that argument so the value of any parameter whose name
looks secret reads ``REDACTED``; everything else in the line is kept.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote, urlencode

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "REDACTED"
_SECRET_NAME = re.compile(r"key|token|secret|password|passwd|auth|signature|sig$|credential|session", re.I)


def redact_query(path: str) -> str:
    """`/v1/models?api_key=sk-1&limit=2` -> `/v1/models?api_key=REDACTED&limit=2`."""
    base, mark, query = path.partition("?")
    if not mark or not query:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs and query:
        return f"{base}?{REDACTED}"  # unparseable: drop it rather than risk logging a secret
    cleaned = [(name, REDACTED if _SECRET_NAME.search(name) else value) for name, value in pairs]
    return f"{base}?{urlencode(cleaned, quote_via=quote, safe='/:')}"


class RedactQueryFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) and "?" in a else a for a in args)
        return True


def install_access_log_filter() -> None:
    """Idempotent: attaches the filter to uvicorn's access logger (filters survive uvicorn's log setup)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
        logger.addFilter(RedactQueryFilter())
