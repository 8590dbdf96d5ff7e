"""Task children run with tcmalloc where it is installed (OPENFT_TASK_ALLOCATOR), forked or fresh."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from openft.jobs import allocator
from openft.jobs.allocator import running_allocator, starting_with, task_env, tcmalloc_library

needs_tcmalloc = pytest.mark.skipif(tcmalloc_library() is None, reason="tcmalloc is not installed here")


def test_auto_preloads_tcmalloc_ahead_of_what_is_preloaded_already(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: "libtcmalloc_minimal.so.4")
    env = task_env({"PATH": "/bin", "LD_PRELOAD": "/opt/libother.so"})
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 /opt/libother.so"
    assert env["PATH"] == "/bin" and int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
    assert task_env(env)["LD_PRELOAD"] == env["LD_PRELOAD"]  # applying it twice preloads it once
    kept = task_env({"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "5"})
    assert kept["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == "5"  # a user's own tcmalloc setting wins


def test_system_or_no_tcmalloc_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: "libtcmalloc_minimal.so.4")
    env = {"PATH": "/bin", "OPENFT_TASK_ALLOCATOR": "system"}
    assert task_env(env) == env
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: None)
    assert task_env({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_a_wrong_setting_names_itself_and_stops_the_worker(monkeypatch):
    from openft.jobs.worker import Worker

    with pytest.raises(ValueError, match="OPENFT_TASK_ALLOCATOR must be one of auto, system, got 'jemalloc'"):
        task_env({"OPENFT_TASK_ALLOCATOR": "jemalloc"})
    monkeypatch.setenv("OPENFT_TASK_ALLOCATOR", "jemalloc")
    with pytest.raises(ValueError, match="OPENFT_TASK_ALLOCATOR"):
        Worker()


def test_starting_with_sets_the_preload_only_while_starting():
    before = {key: os.environ.get(key) for key in allocator.PRELOAD_KEYS}
    with starting_with({"LD_PRELOAD": "libx.so"}):
        assert os.environ["LD_PRELOAD"] == "libx.so"
        assert "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD" not in os.environ
    assert {key: os.environ.get(key) for key in allocator.PRELOAD_KEYS} == before


# Starts a forkserver child as jobs/spawner.py does, in a fresh interpreter (the forkserver is per process).
_FORKED = """
import multiprocessing, os, sys
from openft.jobs.allocator import running_allocator, starting_with, task_env

def report():
    sys.exit(0 if running_allocator() == "tcmalloc" else 3)

if __name__ == "__main__":
    env = task_env(os.environ)
    process = multiprocessing.get_context("forkserver").Process(target=report)
    with starting_with(env):
        process.start()
    process.join()
    assert "LD_PRELOAD" not in os.environ and running_allocator() == "system"
    sys.exit(process.exitcode)
"""


@needs_tcmalloc
def test_children_forked_from_the_forkserver_and_fresh_ones_run_with_tcmalloc(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in allocator.PRELOAD_KEYS}
    env.pop("OPENFT_TASK_ALLOCATOR", None)
    script = tmp_path / "forked.py"
    script.write_text(_FORKED)
    assert subprocess.run([sys.executable, str(script)], env=env, timeout=120).returncode == 0
    check = "from openft.jobs.allocator import running_allocator; print(running_allocator())"
    fresh = subprocess.run([sys.executable, "-c", check], env=task_env(env), capture_output=True, text=True)
    assert fresh.stdout.strip() == "tcmalloc"
    if "libtcmalloc" not in os.environ.get("LD_PRELOAD", ""):
        assert running_allocator() == "system"  # the test process itself was started without it


def test_openft_worker_names_the_setting_when_it_is_wrong(monkeypatch, openft_home):
    from typer.testing import CliRunner

    from openft.cli import app

    monkeypatch.setenv("OPENFT_TASK_ALLOCATOR", "jemalloc")
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "OPENFT_TASK_ALLOCATOR" in result.output and "'jemalloc'" in result.output
    assert "--kind" not in result.output
