"""Runs a Python grader's `grade(sample, item)` in a separate, locked-down process (see python_sandbox.py).

Limits come from the environment of the server or worker: OPENFT_PYTHON_GRADERS=0 turns Python graders off;
OPENFT_PYTHON_GRADER_CPU_S (default 10), OPENFT_PYTHON_GRADER_WALL_S (20), OPENFT_PYTHON_GRADER_MEMORY_MB (1024)
and OPENFT_PYTHON_GRADER_OUTPUT_KB (1024) bound each call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

SANDBOX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_sandbox.py")  # run by path: no openft


@dataclass(frozen=True)
class PythonLimits:
    cpu_s: int = 10
    wall_s: float = 20.0
    memory_bytes: int = 1024 * 2**20
    output_bytes: int = 2**20


class PythonGraderFailure(Exception):
    """The grader's code failed (runtime) or the sandbox could not run it (server)."""

    def __init__(self, kind: str, details: str) -> None:  # kind: runtime | server
        super().__init__(details)
        self.kind, self.details = kind, details


def python_graders_enabled() -> bool:
    return os.environ.get("OPENFT_PYTHON_GRADERS", "1").strip().lower() not in ("0", "false", "no", "off")


def limits_from_env() -> PythonLimits:
    env = os.environ
    return PythonLimits(
        cpu_s=int(env.get("OPENFT_PYTHON_GRADER_CPU_S", 10)),
        wall_s=float(env.get("OPENFT_PYTHON_GRADER_WALL_S", 20)),
        memory_bytes=int(env.get("OPENFT_PYTHON_GRADER_MEMORY_MB", 1024)) * 2**20,
        output_bytes=int(env.get("OPENFT_PYTHON_GRADER_OUTPUT_KB", 1024)) * 1024,
    )


def run_python_grader(source: str, sample: dict[str, Any], item: Any, limits: PythonLimits | None = None) -> float:
    """The score `grade(sample, item)` returned, or PythonGraderFailure."""
    limits = limits or limits_from_env()
    request = json.dumps({
        "source": source, "sample": sample, "item": item,
        "limits": {"cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes, "output_bytes": limits.output_bytes},
    })  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="openft-grader-") as workdir:
        out_path, err_path = os.path.join(workdir, ".result"), os.path.join(workdir, ".stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-I", SANDBOX],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir, env={},
                start_new_session=True, close_fds=True,
            )  # fmt: skip
            try:
                process.communicate(request.encode(), timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                _kill(process)
                raise PythonGraderFailure("runtime", f"The grader ran longer than {limits.wall_s:g} s and was "
                                                     "stopped.") from None
            finally:
                _kill(process)
        code = process.returncode
        with open(out_path, "rb") as out:
            raw = out.read(limits.output_bytes + 1)
        with open(err_path, "rb") as err:
            printed = err.read(4000).decode(errors="replace")
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and not raw:
        raise PythonGraderFailure("runtime", f"The grader used more than {limits.cpu_s} s of CPU time and was stopped.")
    if code == -signal.SIGXFSZ:
        raise PythonGraderFailure("runtime", f"The grader wrote more than {limits.output_bytes} bytes and was stopped.")
    try:
        answer = json.loads(raw)
    except ValueError:
        raise PythonGraderFailure("server", f"The grader process exited with code {code} without a result. "
                                            f"{printed[-1000:]}".strip()) from None
    if "error" in answer:
        raise PythonGraderFailure("runtime", answer["error"])
    return float(answer["score"])


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
