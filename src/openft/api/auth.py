"""Bearer-key authentication: every /v1 request acts for exactly one organization.

`request_guard.RequestGuard` authenticates before the body is read and leaves the organization in the
request state; `current_org` (the routes' dependency) picks it up, or authenticates itself when the app runs
without the guard. Messages never echo any part of the key that was sent.
"""

from __future__ import annotations

import hashlib

from fastapi import Request

from openft.api.errors import OpenAIError
from openft.store.accounts import authenticate
from openft.store.db import session_scope
from openft.store.tables import Organization

ORG_STATE = "openft_organization"


def _unauthorized(message: str) -> OpenAIError:
    return OpenAIError(401, message, code="invalid_api_key")


def _bearer_key(header: str) -> str:
    scheme, _, key = header.partition(" ")
    if not header:
        raise _unauthorized(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with `openft keys create`."
        )
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("The Authorization header must be 'Bearer YOUR_KEY'.")
    return key.strip()


def key_fingerprint(header: str) -> str:
    """A stable, non-secret name for the key in a valid header (rate-limit buckets are kept per key)."""
    return hashlib.sha256(_bearer_key(header).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def authenticate_header(header: str) -> Organization:
    """The organization of the key in an `Authorization` header, or the 401. Blocking (database)."""
    key = _bearer_key(header)
    with session_scope() as session:
        org = authenticate(session, key)
    if org is None:
        raise _unauthorized("Incorrect API key provided. Check the key, or create one with `openft keys create`.")
    return org


def current_org(request: Request) -> Organization:
    org = request.scope.get("state", {}).get(ORG_STATE)
    if org is not None:
        return org
    return authenticate_header(request.headers.get("authorization", ""))
