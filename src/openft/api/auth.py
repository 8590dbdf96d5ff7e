"""Bearer-key authentication: every /v1 request acts for exactly one organization."""

from __future__ import annotations

from fastapi import Request

from openft.api.errors import OpenAIError
from openft.store.accounts import authenticate
from openft.store.db import session_scope
from openft.store.tables import Organization


def _unauthorized(message: str) -> OpenAIError:
    return OpenAIError(401, message, code="invalid_api_key")


def current_org(request: Request) -> Organization:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise _unauthorized(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with `openft keys create`."
        )
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("The Authorization header must be 'Bearer YOUR_KEY'.")
    with session_scope() as session:
        org = authenticate(session, key.strip())
    if org is None:
        shown = key.strip()[:12] + "..." if len(key.strip()) > 12 else "***"
        raise _unauthorized(f"Incorrect API key provided: {shown}. Create one with `openft keys create`.")
    return org
