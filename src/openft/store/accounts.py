"""Organizations and API keys. Keys are shown once; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openft.store.ids import new_id
from openft.store.tables import ApiKey, Organization

DEFAULT_ORGANIZATION = "default"
KEY_PREFIX = "sk-openft-"


@dataclass(frozen=True)
class NewKey:
    key: str
    organization: str
    key_id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_organization(session: Session, name: str) -> Organization:
    org = session.scalar(select(Organization).where(Organization.name == name))
    if org is None:
        org = Organization(id=new_id("org-"), name=name, created_at=int(time.time()))
        session.add(org)
        session.flush()
    return org


def create_key(session: Session, organization: str, name: str | None = None) -> NewKey:
    org = get_or_create_organization(session, organization)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key_"),
        organization_id=org.id,
        key_hash=hash_key(key),
        prefix=key[: len(KEY_PREFIX) + 4],
        name=name,
        created_at=int(time.time()),
    )
    session.add(row)
    session.flush()
    return NewKey(key=key, organization=org.name, key_id=row.id)


def count_keys(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey)) or 0


def authenticate(session: Session, key: str) -> Organization | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)))
    if row is None:
        return None
    return session.get(Organization, row.organization_id)


def list_keys(session: Session) -> list[tuple[ApiKey, Organization]]:
    rows = session.execute(
        select(ApiKey, Organization).join(Organization, ApiKey.organization_id == Organization.id)
    )
    return [(key, org) for key, org in rows]


def revoke_key(session: Session, key_id: str) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = int(time.time())
    return True


def ensure_first_key(session: Session) -> NewKey | None:
    """On a fresh installation create a key for the default organization (printed once by the caller)."""
    if count_keys(session) > 0:
        return None
    return create_key(session, DEFAULT_ORGANIZATION, name="first key")
