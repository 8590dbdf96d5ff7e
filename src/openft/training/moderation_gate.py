"""Job creation under the organization's moderation policy (docs/moderation.md).

Called for each file a job names, after the file passed validation: `block` refuses the job with a 400 that
names the flagged lines and the reasons; `warn` and `off` let it through (the worker lists `warn` findings as
job events: openft.training.job_validation).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from openft.config import get_settings
from openft.data.moderation.policy import blocked_message, file_moderation
from openft.store.blobs import BlobStore
from openft.store.moderation_tables import get_policy
from openft.store.tables import File


def check_file_for_job(session: Session, organization_id: str, row: File, param: str) -> None:
    from openft.training.job_requests import JobRequestError

    if get_policy(session, organization_id) != "block":
        return
    moderation = file_moderation(row.validation, BlobStore(get_settings().files_dir).path(row.storage_key))
    if moderation["n_findings"]:
        raise JobRequestError(param, blocked_message(row.id, moderation), "moderation_blocked")


def moderation_outcome(organization_id: str, file_id: str, report: dict) -> tuple[str, str] | None:
    """For the worker's validating step: ("error", message) under `block` (the policy may have changed since
    the job was created), ("warn", message) under `warn` when there are findings, else None."""
    from openft.data.moderation.policy import warning_message
    from openft.store import files as file_store
    from openft.store.db import session_scope

    with session_scope() as session:
        policy = get_policy(session, organization_id)
        row = file_store.get_file(session, organization_id, file_id)
        path = BlobStore(get_settings().files_dir).path(row.storage_key) if row is not None else None
    if policy == "off" or path is None:
        return None
    moderation = report.get("moderation") or file_moderation(None, path)
    if not moderation["n_findings"]:
        return None
    if policy == "block":
        return "error", blocked_message(file_id, moderation)
    return "warn", warning_message(file_id, moderation)
