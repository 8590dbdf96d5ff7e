"""Storage faults lose nothing and leave nothing behind (issue 14).

A live `openft serve` whose files folder is a real 1 MiB tmpfs (when this machine lets the test mount one;
else the server runs under a 1 MiB file-size limit, which fails writes the same way, and read-only folders
come from chmod where the test is not root). Afterwards: a clear error in OpenAI's envelope that the SDK
does not retry, no record without its bytes, no bytes without a record, and reads keep working.
"""

from __future__ import annotations

import errno
import io
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from openft.store.blobs import PARTIAL_PREFIX, BlobStore, StorageFault
from tests.fixtures.server import start_server, stop_server

MiB = 1024 * 1024


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder], capture_output=True)
        if made.returncode != 0:
            return False
        subprocess.run(["umount", folder], check=True)
        return True


CAN_MOUNT = not os.environ.get("OPENFT_TEST_NO_MOUNT") and _can_mount()  # set it to try the fallbacks


def sqlite(home: Path) -> dict[str, str]:
    """These tests read the database file itself, so their servers use SQLite even in a PostgreSQL run."""
    return {"OPENFT_DATABASE_URL": f"sqlite:///{home / 'openft.db'}"}


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _limit_file_size(limit: int):
    """preexec_fn: writes past ``limit`` bytes fail with EFBIG (CPython ignores SIGXFSZ), like a full disk."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


class FaultyStorage:
    """A live server plus switches that make its files folder read-only or writable again."""

    def __init__(self, home: Path) -> None:
        self.home, self.files = home, home / "files"
        self.server = None

    def start(self) -> None:
        self.files.mkdir(mode=0o700, exist_ok=True)
        if not CAN_MOUNT:
            self.server = start_server(self.home, sqlite(self.home), preexec_fn=_limit_file_size(1 * MiB))
            return
        _mount("-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(self.files))
        try:
            self.server = start_server(self.home, sqlite(self.home))
        except BaseException:
            subprocess.run(["umount", "-l", str(self.files)], capture_output=True)
            raise

    def read_only(self, on: bool) -> None:
        if CAN_MOUNT:
            _mount("-o", f"remount,{'ro' if on else 'rw'}", str(self.files))
        elif os.geteuid() != 0:
            self.files.chmod(0o500 if on else 0o700)
        else:
            pytest.skip("a read-only folder needs mount (root without mount rights cannot make one)")

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)
        if CAN_MOUNT:
            subprocess.run(["umount", "-l", str(self.files)], capture_output=True)
        elif os.geteuid() != 0:
            self.files.chmod(0o700)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    faulty = FaultyStorage(tmp_path_factory.mktemp("openft-faults"))
    faulty.start()
    yield faulty
    faulty.stop()


@pytest.fixture(scope="module")
def key(storage):
    return storage.server.create_key("faults-org")


class CountingClient:
    """The SDK with its default retries (2), counting the requests it really sends."""

    def __init__(self, server, key: str) -> None:
        self.sent = 0

        def count(_request) -> None:
            self.sent += 1

        self.sdk = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=2,
                                 http_client=httpx.Client(event_hooks={"request": [count]}, timeout=60))


def _records(home: Path) -> dict[str, str]:
    """file id -> storage key of every record in the database (deleted-marked ones included)."""
    with sqlite3.connect(home / "openft.db") as db:
        return dict(db.execute("SELECT id, storage_key FROM files").fetchall())


def assert_settled(home: Path) -> None:
    """No record without its blob, no blob without its record, no partial upload left."""
    names = {p.name for p in (home / "files").iterdir()}
    assert not [n for n in names if n.startswith(PARTIAL_PREFIX)], names
    keys = set(_records(home).values())
    assert keys == names, {"records without bytes": keys - names, "bytes without a record": names - keys}


def assert_error(exc: openai.APIStatusError, status: int, code: str, *words: str) -> None:
    assert exc.status_code == status
    assert exc.response.headers.get("x-should-retry") == "false"
    body = exc.response.json()["error"]
    assert body["code"] == code and body["type"] == "server_error"
    for word in words:
        assert word in body["message"], body["message"]


def test_a_full_disk_answers_507_once_and_stores_nothing(storage, key):
    client = CountingClient(storage.server, key)
    kept = client.sdk.files.create(file=("kept.txt", io.BytesIO(b"kept bytes")), purpose="batch")

    client.sent = 0
    with pytest.raises(openai.APIStatusError) as caught:
        client.sdk.files.create(file=("big.txt", io.BytesIO(b"x" * (2 * MiB))), purpose="batch")
    assert_error(caught.value, 507, "insufficient_storage", "full", "Nothing was stored")
    assert client.sent == 1  # x-should-retry: false stopped the SDK's two retries

    assert_settled(storage.home)
    # Reads go on, and once there is room again, so do uploads.
    assert [f.id for f in client.sdk.files.list()] == [kept.id]
    assert client.sdk.files.content(kept.id).read() == b"kept bytes"
    assert httpx.get(storage.server.base_url.removesuffix("/v1") + "/health").status_code == 200
    again = client.sdk.files.create(file=("small.txt", io.BytesIO(b"small")), purpose="batch")
    assert client.sdk.files.content(again.id).read() == b"small"
    assert_settled(storage.home)


def test_a_read_only_folder_refuses_uploads_and_deletes_and_keeps_every_file(storage, key):
    client = CountingClient(storage.server, key)
    kept = client.sdk.files.create(file=("keep.txt", io.BytesIO(b"precious")), purpose="batch")
    storage.read_only(True)
    try:
        with pytest.raises(openai.APIStatusError) as upload:
            client.sdk.files.create(file=("new.txt", io.BytesIO(b"new")), purpose="batch")
        assert_error(upload.value, 503, "storage_read_only", "read-only", "Nothing was stored")

        client.sent = 0
        with pytest.raises(openai.APIStatusError) as delete:
            client.sdk.files.delete(kept.id)
        assert_error(delete.value, 503, "storage_read_only", "delete", "kept")
        assert client.sent == 1

        # The file is whole and visible: the delete changed nothing.
        assert client.sdk.files.retrieve(kept.id).filename == "keep.txt"
        assert kept.id in [f.id for f in client.sdk.files.list()]
        assert client.sdk.files.content(kept.id).read() == b"precious"
        assert_settled(storage.home)
    finally:
        storage.read_only(False)

    assert client.sdk.files.delete(kept.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.sdk.files.retrieve(kept.id)
    assert_settled(storage.home)


# --- restart: the reaper settles what a crash left -------------------------------------------------------

def _slow_body(started: threading.Event):
    boundary = b"openft-boundary"
    yield (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--' + boundary
           + b'\r\nContent-Disposition: form-data; name="file"; filename="killed.txt"\r\n\r\n')
    for _ in range(200):
        yield b"y" * 64 * 1024
        started.set()
        time.sleep(0.05)


def _upload_until_killed(server, key: str) -> threading.Thread:
    started = threading.Event()

    def send() -> None:
        try:
            httpx.post(f"{server.base_url}/files", content=_slow_body(started), timeout=60,
                       headers={"Authorization": f"Bearer {key}",
                                "Content-Type": "multipart/form-data; boundary=openft-boundary"})
        except httpx.HTTPError:
            pass  # the server was killed mid-upload

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    assert started.wait(30)
    return thread


def test_a_restart_removes_partial_uploads_orphans_missing_and_expired_files(tmp_path):
    server = start_server(tmp_path, sqlite(tmp_path))
    key = server.create_key("reaper-org")
    sdk = server.client(key)
    kept = sdk.files.create(file=("kept.txt", io.BytesIO(b"kept")), purpose="batch")
    lost = sdk.files.create(file=("lost.txt", io.BytesIO(b"lost")), purpose="batch")
    expired = sdk.files.create(file=("old.txt", io.BytesIO(b"old")), purpose="batch",
                               expires_after={"anchor": "created_at", "seconds": 3600})
    files = tmp_path / "files"
    records = _records(tmp_path)

    thread = _upload_until_killed(server, key)
    deadline = time.monotonic() + 20
    while not list(files.glob(f"{PARTIAL_PREFIX}*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    thread.join(30)
    # The killed upload left only a partial file, never a blob that looks complete.
    assert len(list(files.glob(f"{PARTIAL_PREFIX}*"))) == 1
    assert set(_records(tmp_path).values()) == {p.name for p in files.iterdir() if not p.name.startswith(".")}

    (files / records[lost.id]).unlink()  # bytes lost behind openft's back
    (files / "blob_orphan").write_bytes(b"no record")  # bytes whose record never committed
    with sqlite3.connect(tmp_path / "openft.db") as db:
        db.execute("UPDATE files SET expires_at = 1 WHERE id = ?", (expired.id,))

    server = start_server(tmp_path, {**sqlite(tmp_path), "OPENFT_REAPER_GRACE_SECONDS": "0"})
    try:
        assert _records(tmp_path) == {kept.id: records[kept.id]}
        assert_settled(tmp_path)
        sdk = server.client(key)
        assert [f.id for f in sdk.files.list()] == [kept.id]
        assert sdk.files.content(kept.id).read() == b"kept"
    finally:
        stop_server(server)


# --- the same rules without a server ---------------------------------------------------------------------

@pytest.fixture
def store(openft_home):
    from openft.store.accounts import get_or_create_organization
    from openft.store.db import dispose_engines, session_scope, upgrade_database
    from openft.store.files import add_file

    upgrade_database()
    blobs = BlobStore(openft_home.files_dir)
    blobs.write_bytes("blob_a", b"a")
    with session_scope() as session:
        org = get_or_create_organization(session, "unit-org")
        add_file(session, file_id="file-a", organization_id=org.id, filename="a.txt", purpose="batch", size=1,
                 storage_key="blob_a", status="processed")
    yield blobs, org.id
    dispose_engines()


class _RefusingPath(type(Path())):
    def unlink(self, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system")


def test_a_refused_blob_delete_keeps_the_record_visible(store, monkeypatch):
    from openft.store import files as file_store
    from openft.store.db import session_scope

    blobs, org_id = store
    monkeypatch.setattr(BlobStore, "path", lambda self, key: _RefusingPath(self.root / key))
    with pytest.raises(StorageFault) as caught:
        file_store.delete_file_and_blob("file-a", "blob_a", blobs)
    assert caught.value.kind == "read_only" and "kept" in str(caught.value)
    with session_scope() as session:
        assert file_store.get_file(session, org_id, "file-a") is not None
    assert (blobs.root / "blob_a").read_bytes() == b"a"


def test_the_reaper_finishes_an_interrupted_delete_and_spares_young_orphans(store, openft_home):
    from openft.store import files as file_store
    from openft.store.db import session_scope
    from openft.store.reaper import reap_storage

    blobs, org_id = store
    with session_scope() as session:
        file_store.mark_deleted(session, "file-a")  # the process died right after this step
    (blobs.root / "blob_young").write_bytes(b"an upload committing in another process")
    report = reap_storage(openft_home)
    assert report.finished_deletes == 1 and report.orphan_blobs == 0
    assert sorted(p.name for p in blobs.root.iterdir()) == ["blob_young"]
    with session_scope() as session:
        assert file_store.get_file(session, org_id, "file-a") is None


def test_the_reaper_leaves_records_alone_when_the_folder_looks_unmounted(store, openft_home):
    from openft.store.reaper import reap_storage

    blobs, _ = store
    (blobs.root / "blob_a").unlink()  # every blob gone: an unmounted share, not a real loss
    report = reap_storage(openft_home)
    assert report.records_without_bytes == 0 and report.problems
    from openft.store import files as file_store
    from openft.store.db import session_scope

    with session_scope() as session:
        assert file_store.get_file(session, store[1], "file-a") is not None


def test_an_artifact_write_on_a_full_disk_fails_clearly_and_leaves_nothing(openft_home):
    blobs = BlobStore(openft_home.files_dir)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(StorageFault) as caught:
            blobs.write_bytes("blob_metrics", b"m" * 256 * 1024, "store the job's metrics file")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert caught.value.kind == "full"
    assert "store the job's metrics file" in str(caught.value)
    assert list(blobs.root.iterdir()) == []


def test_sqlite_disk_errors_are_storage_faults(tmp_path):
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from openft.api.storage_errors import database_fault

    path = tmp_path / "ro.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(OperationalError) as caught, engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
    fault = database_fault(caught.value)
    assert fault is not None and fault.kind == "read_only"
    engine.dispose()
