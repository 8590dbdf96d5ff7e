"""A bad environment variable stops `openft` with one line naming it, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OPENFT_TRAINING_PRECISION", "fp8", "OPENFT_TRAINING_PRECISION must be one of auto, bf16, fp32; got 'fp8'"),
        ("OPENFT_MAX_UPLOAD_BYTES", "lots", "OPENFT_MAX_UPLOAD_BYTES must be an integer, got 'lots'"),
        ("OPENFT_WORKER_STALE_SECONDS", "soon", "OPENFT_WORKER_STALE_SECONDS must be a number of seconds"),
        ("OPENFT_SERVING_MAX_PREFILL_TOKENS", "many", "OPENFT_SERVING_MAX_PREFILL_TOKENS must be an integer"),
        ("OPENFT_SERVING_MAX_ADAPTERS", "-3", "OPENFT_SERVING_MAX_ADAPTERS must be >= 0, got -3"),
    ],
)
def test_bad_setting_is_named_on_one_line_with_exit_code_2(tmp_path, variable, value, says):
    env = {**os.environ, "OPENFT_HOME": str(tmp_path), variable: value}
    result = subprocess.run(
        [sys.executable, "-c", "from openft.cli import main; main()", "serve", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0], result.stderr
    assert not (tmp_path / "openft.db").exists()  # refused before anything was stored
