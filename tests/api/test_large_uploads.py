"""Uploads stream to disk: memory stays bounded and an over-cap file is refused without being stored."""

from __future__ import annotations

import io
import threading
import time

import openai
import pytest

from tests.fixtures.server import start_server, stop_server

MB = 1024 * 1024


class RepeatingReader(io.RawIOBase):
    """A file-like body of `size` bytes that is never held in memory."""

    def __init__(self, size: int, line: bytes = b'{"prompt": "p", "completion": "c"}\n') -> None:
        self.size, self.sent, self.line = size, 0, line

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.sent)
        chunk = (self.line * (n // len(self.line) + 1))[:n]
        buffer[:n] = chunk
        self.sent += n
        return n


@pytest.fixture
def capped_server(tmp_path):
    server = start_server(tmp_path, {"OPENFT_MAX_UPLOAD_BYTES": str(110 * MB)})
    yield server
    stop_server(server)


def test_100mb_upload_uses_bounded_memory(capped_server):
    client = capped_server.client(capped_server.create_key("big-org"), timeout=300)
    baseline = capped_server.rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], capped_server.rss_bytes())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        size = 100 * MB
        created = client.files.create(file=("big.jsonl", io.BufferedReader(RepeatingReader(size))), purpose="batch")
    finally:
        done.set()
        watcher.join()
    assert created.bytes == size
    growth = peak[0] - baseline
    assert growth < 30 * MB, f"server memory grew by {growth / MB:.0f} MB while receiving a 100 MB file"
    stored = [p for p in (capped_server.home / "files").iterdir() if not p.name.startswith(".")]
    assert [p.stat().st_size for p in stored] == [size]


def test_file_over_the_cap_is_refused_and_not_stored(capped_server):
    client = capped_server.client(capped_server.create_key("cap-org"), timeout=300)
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("huge.jsonl", io.BufferedReader(RepeatingReader(120 * MB))), purpose="batch")
    assert refused.value.body["code"] == "file_too_large"
    assert refused.value.body["param"] == "file"
    assert client.files.list().data == []
    assert [p for p in (capped_server.home / "files").glob("*")] == []
