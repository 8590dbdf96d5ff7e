"""Per-organization moderation policy for training data (migration 0007_moderation; docs/moderation.md)."""

from __future__ import annotations

import time

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from openft.store.tables import Base

POLICIES = ("off", "warn", "block")
DEFAULT_POLICY = "warn"  # findings are listed and jobs run: nothing is refused until an admin chooses to


class ModerationPolicy(Base):
    __tablename__ = "moderation_policies"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    policy: Mapped[str] = mapped_column(String(16))  # off | warn | block
    updated_at: Mapped[int] = mapped_column(BigInteger)


def get_policy(session: Session, organization_id: str) -> str:
    row = session.get(ModerationPolicy, organization_id)
    return row.policy if row is not None else DEFAULT_POLICY


def set_policy(session: Session, organization_id: str, policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    row = session.get(ModerationPolicy, organization_id)
    if row is None:
        session.add(ModerationPolicy(organization_id=organization_id, policy=policy, updated_at=int(time.time())))
    else:
        row.policy, row.updated_at = policy, int(time.time())
    session.flush()
    return policy
