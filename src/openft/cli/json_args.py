"""JSON arguments for CLI commands: a path to a .json file, or the JSON itself inline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openft.cli.client import fail


def load_json_arg(value: str, what: str) -> Any:
    text = value
    if not value.lstrip().startswith(("{", "[")):  # inline JSON is never taken for a file name
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"{what}: cannot read {value!r}: {exc.strerror}", 2) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise fail(f"{what} is neither a JSON file nor inline JSON: {exc}", 2) from None
