"""instructor, unchanged, on the `openai` SDK pointed at a live server: its default (tool-call) mode and the
Structured Outputs modes."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from tests.conformance.conftest import MODEL

instructor = pytest.importorskip(
    "instructor", reason="instructor is not installed (its pins conflict with openai>=3.57: install it with "
    "pip install --no-deps instructor docstring_parser)")
openai = pytest.importorskip("openai")

ASK = [{"role": "user", "content": "Is the sky blue?"}]


class Verdict(BaseModel):
    # No extra keys: the schema then says additionalProperties false, so a grammar-constrained answer closes
    # quickly even from the tiny random model (with extra keys allowed it may wander until max_tokens).
    model_config = ConfigDict(extra="forbid")

    answer: Literal["yes", "no"]
    confident: bool


def _client(base_url: str, api_key: str, mode=None, *, asynchronous: bool = False):
    cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    raw = cls(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
    return instructor.from_openai(raw) if mode is None else instructor.from_openai(raw, mode=mode)


def test_default_mode_returns_the_model(base_url, api_key):
    client = _client(base_url, api_key)
    verdict = client.chat.completions.create(model=MODEL, messages=ASK, response_model=Verdict, max_tokens=48,
                                             max_retries=0)
    assert isinstance(verdict, Verdict)


@pytest.mark.parametrize("mode_name", ["TOOLS_STRICT", "JSON_SCHEMA"])
def test_structured_output_modes_return_the_model(base_url, api_key, mode_name):
    mode = getattr(instructor.Mode, mode_name, None)
    if mode is None:
        pytest.skip(f"this instructor version has no Mode.{mode_name}")
    client = _client(base_url, api_key, mode)
    verdict = client.chat.completions.create(model=MODEL, messages=ASK, response_model=Verdict, max_tokens=48,
                                             max_retries=0)
    assert isinstance(verdict, Verdict)


def test_async_client(base_url, api_key):
    client = _client(base_url, api_key, asynchronous=True)
    verdict = asyncio.run(client.chat.completions.create(model=MODEL, messages=ASK, response_model=Verdict,
                                                         max_tokens=48, max_retries=0))
    assert isinstance(verdict, Verdict)
