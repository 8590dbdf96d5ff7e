"""Settles file records and blobs both ways, at server/worker start and then periodically in the server.

- expired files (``expires_after``) and deletes a crash interrupted: bytes, then record, removed;
- records whose bytes are gone: removed (unless the whole folder looks unmounted: then nothing is touched);
- blobs and partial uploads with no record: removed once older than OPENFT_REAPER_GRACE_SECONDS, since a
  younger one may belong to an upload still in progress in another process.
Every step survives a disk that refuses (read-only, full): what cannot be settled now is logged and
retried on the next pass.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from openft.config import Settings, get_settings
from openft.store import files as file_store
from openft.store.blobs import PARTIAL_PREFIX, BlobStore, StorageFault, is_blob_key
from openft.store.db import session_scope
from openft.store.tables import File

log = logging.getLogger(__name__)


@dataclass
class ReapReport:
    expired_files: int = 0
    finished_deletes: int = 0
    records_without_bytes: int = 0
    orphan_blobs: int = 0
    partial_files: int = 0
    problems: list[str] = field(default_factory=list)

    def changed(self) -> bool:
        return any((self.expired_files, self.finished_deletes, self.records_without_bytes, self.orphan_blobs,
                    self.partial_files))


def reap_storage(settings: Settings | None = None, now: float | None = None) -> ReapReport:
    settings = settings or get_settings()
    now = time.time() if now is None else now
    blobs = BlobStore(settings.files_dir)
    report = ReapReport()
    with session_scope() as session:
        rows = session.execute(select(File.id, File.storage_key, File.expires_at, File.deleted_at)).all()
    on_disk = _blob_names(blobs)
    known_keys = {row.storage_key for row in rows}

    # Expired files and interrupted deletes, in two transactions whatever their number: mark them all, remove
    # the bytes, remove the records whose bytes are gone (a refused blob keeps its marked, hidden record).
    expired = [row for row in rows if row.deleted_at is None and row.expires_at is not None and row.expires_at <= now]
    doomed = expired + [row for row in rows if row.deleted_at is not None]
    if expired:
        with session_scope() as session:
            for row in expired:
                file_store.mark_deleted(session, row.id)
    removed = []
    for row in doomed:
        try:
            blobs.delete(row.storage_key)
        except StorageFault as fault:
            report.problems.append(f"{row.id}: {fault}")
            continue
        removed.append(row)
        on_disk.discard(row.storage_key)
    if removed:
        with session_scope() as session:
            for row in removed:
                file_store.remove_record(session, row.id)
    report.expired_files = sum(1 for row in removed if row.deleted_at is None)
    report.finished_deletes = len(removed) - report.expired_files

    live = [row for row in rows if row.deleted_at is None and (row.expires_at is None or row.expires_at > now)]
    missing = [row for row in live if row.storage_key not in on_disk]
    if missing and len(missing) == len(live) and not on_disk:
        # Not one blob left while records exist: more likely an unmounted or wrong folder than real loss.
        report.problems.append(f"no blobs under {blobs.root} for {len(live)} file records; records left alone")
    else:
        with session_scope() as session:
            for row in missing:
                log.warning("file %s has no bytes under %s; removing its record", row.id, blobs.root)
                file_store.remove_record(session, row.id)
        report.records_without_bytes = len(missing)

    cutoff = now - settings.reaper_grace_seconds
    for name in sorted(on_disk - known_keys):
        report.orphan_blobs += _remove_if_older(blobs.root / name, cutoff, report)
    if blobs.root.is_dir():
        for path in blobs.root.glob(f"{PARTIAL_PREFIX}*"):
            report.partial_files += _remove_if_older(path, cutoff, report)

    for problem in report.problems:
        log.warning("storage reaper: %s", problem)
    if report.changed():
        log.info("storage reaper: %s", report)
    return report


def _blob_names(blobs: BlobStore) -> set[str]:
    if not blobs.root.is_dir():
        return set()
    return {path.name for path in blobs.root.iterdir() if is_blob_key(path.name) and path.is_file()}


def _remove_if_older(path, cutoff: float, report: ReapReport) -> int:
    try:
        if path.stat().st_mtime > cutoff:
            return 0
        path.unlink()
        return 1
    except FileNotFoundError:
        return 0
    except OSError as exc:
        report.problems.append(f"cannot remove {path.name}: {exc.strerror or exc}")
        return 0


def reap_safely(settings: Settings | None = None) -> ReapReport | None:
    """A pass that never stops the caller (a server must start even when its disk is read-only)."""
    try:
        return reap_storage(settings)
    except Exception:
        log.exception("storage reaper failed; it runs again on the next pass")
        return None


def start_periodic_reaper(interval_s: float | None = None) -> threading.Event:
    """A daemon thread reaping every ``interval_s``; set the returned event to stop it. 0 starts nothing."""
    interval_s = get_settings().reaper_interval_seconds if interval_s is None else interval_s
    stop = threading.Event()
    if interval_s > 0:
        def loop() -> None:
            while not stop.wait(interval_s):
                reap_safely()

        threading.Thread(target=loop, name="openft-reaper", daemon=True).start()
    return stop
