"""Run `openft` commands in-process (typer's CliRunner) against a server, as a user's shell would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from openft.cli import app


@dataclass
class Cli:
    base_url: str
    api_key: str

    def __call__(self, *args: str, input: str | None = None):
        env = {"OPENFT_BASE_URL": self.base_url, "OPENFT_API_KEY": self.api_key, "COLUMNS": "200"}
        return CliRunner().invoke(app, list(args), env=env, input=input)

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cli(live_server) -> Cli:
    """`openft` pointed at the module's live server with a key for organization 'acme'."""
    return Cli(live_server.base_url, live_server.create_key("acme"))
