"""Queue settings: the lease length and the per-organization concurrency cap."""

from __future__ import annotations

import os
from dataclasses import dataclass

from openft.config import SettingsError, get_settings


@dataclass(frozen=True)
class QueueSettings:
    # A lease not renewed for this long is expired and another worker may take the task over.
    lease_seconds: float
    # At most this many tasks of one organization hold a lease at once (0: no cap).
    max_per_organization: int

    @property
    def heartbeat_seconds(self) -> float:
        return max(self.lease_seconds / 4, 0.1)

    @property
    def watch_seconds(self) -> float:
        """How often a runner's child checks that its lease still holds (it exits at once when not)."""
        return min(max(self.lease_seconds / 8, 0.1), 5.0)

    @property
    def takeover_grace_seconds(self) -> float:
        """An expired lease is taken over only this long after expiry, once its child has surely exited."""
        return 3 * self.watch_seconds


def queue_settings() -> QueueSettings:
    raw = os.environ.get("OPENFT_QUEUE_MAX_PER_ORG") or "0"
    try:
        cap = int(raw)
    except ValueError as exc:
        raise SettingsError(f"OPENFT_QUEUE_MAX_PER_ORG must be an integer, got {raw!r}") from exc
    # OPENFT_WORKER_STALE_SECONDS keeps its meaning: how long a silent worker keeps its work.
    return QueueSettings(lease_seconds=get_settings().worker_stale_seconds, max_per_organization=max(cap, 0))
