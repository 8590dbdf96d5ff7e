"""The Python grader's isolation: no server environment or secrets, no files outside its directory, no network,
and a grader that loops or allocates without bound is stopped and reported as a grader error."""

from __future__ import annotations

import socket
import time

import pytest

from openft.graders import check_grader, grade


@pytest.fixture(autouse=True)
def tight_limits(monkeypatch):
    monkeypatch.setenv("OPENFT_PYTHON_GRADER_CPU_S", "2")
    monkeypatch.setenv("OPENFT_PYTHON_GRADER_WALL_S", "6")
    monkeypatch.setenv("OPENFT_PYTHON_GRADER_MEMORY_MB", "256")
    monkeypatch.setenv("OPENFT_PYTHON_GRADER_OUTPUT_KB", "64")


def run_source(body: str, item=None):
    source = "import os\n\ndef grade(sample, item):\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return grade(check_grader({"type": "python", "name": "sandboxed", "source": source}), "out", item or {})


def runtime_error(result) -> str:
    assert result.errors["python_grader_runtime_error"], result.reason
    assert result.reward == 0.0
    return result.errors["python_grader_runtime_error_details"]


def test_the_servers_environment_and_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("OPENFT_SECRET_TOKEN", "sk-very-secret")
    result = run_source("return 1.0 if any('sk-very-secret' in v for v in os.environ.values()) else 0.5")
    assert result.reward == 0.5 and not result.errored
    result = run_source("return float(len([k for k in os.environ if k.startswith(('OPENFT', 'HOME', 'PATH'))]))")
    assert result.reward == 0.0


def test_files_outside_its_directory_cannot_be_read_or_written(tmp_path):
    secret = tmp_path / "server-secret.txt"
    secret.write_text("top secret")
    assert "not allowed" in runtime_error(run_source(f"return len(open({str(secret)!r}).read())"))
    assert "not allowed" in runtime_error(run_source("return len(open('/proc/1/environ', 'rb').read())"))
    assert "not allowed" in runtime_error(run_source("return len(os.listdir('/'))"))
    assert "not allowed" in runtime_error(run_source(f"open({str(tmp_path / 'dropped')!r}, 'w').write('x')\n"
                                                     "return 1"))
    assert not (tmp_path / "dropped").exists()
    own = run_source("open('scratch.txt', 'w').write('ok')\nreturn float(open('scratch.txt').read() == 'ok')")
    assert own.reward == 1.0  # its own temporary directory is writable


def test_no_network_not_even_to_a_port_on_this_machine():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        details = runtime_error(run_source(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nreturn 1.0"
        ))  # fmt: skip
    assert "socket" in details
    assert "not allowed" in runtime_error(run_source("import subprocess\nsubprocess.run(['true'])\nreturn 1"))
    assert "not allowed" in runtime_error(run_source("import ctypes\nreturn 1"))


def test_an_infinite_loop_is_stopped_and_reported():
    start = time.monotonic()
    details = runtime_error(run_source("while True:\n    pass"))
    assert "CPU time" in details or "longer than" in details
    assert time.monotonic() - start < 10


def test_unbounded_allocation_is_stopped_and_reported():
    details = runtime_error(run_source("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))"))
    assert "MemoryError" in details


def test_flooding_output_is_stopped():
    details = runtime_error(run_source("print('x' * 10**6)\nreturn 1"))
    assert "File too large" in details or "wrote more than" in details


def test_a_wall_clock_limit_stops_a_sleeping_grader(monkeypatch):
    monkeypatch.setenv("OPENFT_PYTHON_GRADER_WALL_S", "1")
    assert "longer than 1 s" in runtime_error(run_source("import time\ntime.sleep(30)\nreturn 1"))
