"""One live `openft serve` (tiny model, access log on) shared by the conformance tests, and an API key for it."""

from __future__ import annotations

import io
import json
import os

import pytest

from tests.fixtures.server import register_model, start_server, stop_server

MODEL = "tiny-llama"
# litellm fetches its model price list from GitHub at import unless told to use the copy in its wheel.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def training_rows(count: int = 12) -> bytes:
    rows = [{"messages": [{"role": "user", "content": f"Code for item {i}?"},
                          {"role": "assistant", "content": f"ITEM-{i:03d}"}]} for i in range(count)]
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


@pytest.fixture(scope="package")
def conformance_server(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("openft-conformance")
    register_model(home, MODEL, tiny_model_dir)
    # info: the access-log lines carry the request ids. A loaded test machine can need more than the default
    # minute to start a server; wait up to four unless told otherwise.
    previous = os.environ.get("OPENFT_TEST_START_TIMEOUT")
    os.environ["OPENFT_TEST_START_TIMEOUT"] = previous or "240"
    try:
        server = start_server(home, {"OPENFT_VALIDATION_MODEL": MODEL}, log_level="info")
    finally:
        if previous is None:
            os.environ.pop("OPENFT_TEST_START_TIMEOUT", None)
    yield server
    stop_server(server)


@pytest.fixture(scope="package")
def api_key(conformance_server) -> str:
    return conformance_server.create_key("conformance")


@pytest.fixture(scope="package")
def base_url(conformance_server) -> str:
    return conformance_server.base_url


@pytest.fixture(scope="package")
def sdk(conformance_server, api_key):
    return conformance_server.client(api_key, timeout=120)


@pytest.fixture(scope="package")
def training_file_id(sdk) -> str:
    return sdk.files.create(file=("train.jsonl", io.BytesIO(training_rows())), purpose="fine-tune").id
