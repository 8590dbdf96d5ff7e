"""Confidentiality at rest (issue 14): OPENFT_HOME is private to the server's user, and third-party API keys
are never readable in the database file."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import httpx
import pytest

from openft.config import get_settings, reset_settings
from tests.fixtures.server import register_model, start_server, stop_server

EXTERNAL_KEY = "sk-thirdparty-EXTERNAL-4f1d9c0a7b"
JUDGE_KEY = "sk-thirdparty-JUDGE-8e2b6d3c1f"
ENV_KEY = "sk-thirdparty-FROMENV-77aa55"
EXAMPLES = b"".join(
    json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}).encode()
    + b"\n"
    for i in range(4)
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("openft-private") / "home"
    home.mkdir(mode=0o755)  # as an operator might have made it; the server closes it
    register_model(home, "tiny-llama", tiny_model_dir)
    live = start_server(home, {
        "OPENFT_DATABASE_URL": f"sqlite:///{home / 'openft.db'}",  # the test reads the database file itself
        "OPENFT_EMBEDDED_WORKER": "0",  # the runs stay queued: only what is stored matters here
        "OPENFT_OUTBOUND_ALLOW": "api.example.test",
        "OPENFT_OUTBOUND_KEY_TEAM": ENV_KEY,
    })
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def api(server):
    key = server.create_key("private-org")
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def eval_file(api):
    answer = api.post("/files", files={"file": ("held_out.jsonl", EXAMPLES)}, data={"purpose": "evals"})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def stored_configs(home: Path) -> list[dict]:
    with sqlite3.connect(home / "openft.db") as db:
        return [json.loads(row[0]) for row in db.execute("SELECT config FROM eval_runs")]


def test_a_fresh_home_and_everything_in_it_is_private(server, api, eval_file):
    home = server.home
    assert mode(home) == 0o700
    for name in ("openft.db", "openft.db-wal", "openft.db-shm"):
        if (home / name).exists():
            assert mode(home / name) == 0o600, name
    files = home / "files"
    assert mode(files) == 0o700 and mode(home / "artifacts") == 0o700
    blobs = [p for p in files.iterdir()]
    assert blobs and all(mode(p) == 0o600 for p in blobs)
    # Whatever the server and its training children write later is private too.
    umask = next(line for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
                 if line.startswith("Umask:"))
    assert umask.split()[1] == "0077"


def test_third_party_keys_are_encrypted_at_rest_and_never_shown(server, api, eval_file, monkeypatch):
    body = {
        "eval_file": eval_file, "model": "tiny-llama", "strategies": ["zero-shot", "external"],
        "external": {"base_url": "https://api.example.test/v1", "api_key": EXTERNAL_KEY, "model": "gpt-4o-mini"},
        "judge": {"base_url": "https://api.example.test/v1", "api_key": JUDGE_KEY, "model": "gpt-4o"},
    }
    answer = api.post("/evaluations", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["external"]["api_key"] == "***" and answer.json()["judge"]["api_key"] == "***"
    assert EXTERNAL_KEY not in api.get(f"/evaluations/{answer.json()['id']}").text

    raw = b"".join(p.read_bytes() for p in server.home.iterdir() if p.name.startswith("openft.db"))
    for secret in (EXTERNAL_KEY, JUDGE_KEY):
        assert secret.encode() not in raw
        assert secret[-10:].encode() not in raw
    assert mode(server.home / "secret.key") == 0o600

    # The worker, holding the same secret, gets the keys back.
    from openft.evals.requests import reveal_api_keys
    from openft.store.secrets import forget_secrets

    monkeypatch.setenv("OPENFT_HOME", str(server.home))
    monkeypatch.delenv("OPENFT_SECRET_KEY", raising=False)
    reset_settings()
    forget_secrets()
    try:
        config = reveal_api_keys(stored_configs(server.home)[-1])
        assert (config["external"]["api_key"], config["judge"]["api_key"]) == (EXTERNAL_KEY, JUDGE_KEY)
    finally:
        reset_settings()
        forget_secrets()


def test_a_key_named_by_a_server_variable_is_not_stored_at_all(server, api, eval_file):
    external = {"base_url": "https://api.example.test/v1", "api_key_env": "OPENFT_OUTBOUND_KEY_TEAM", "model": "m"}
    answer = api.post("/evaluations", json={"eval_file": eval_file, "model": "tiny-llama", "external": external})
    assert answer.status_code == 200, answer.text
    stored = stored_configs(server.home)[-1]["external"]
    assert stored.get("api_key") is None and stored["api_key_env"] == "OPENFT_OUTBOUND_KEY_TEAM"
    raw = b"".join(p.read_bytes() for p in server.home.iterdir() if p.name.startswith("openft.db"))
    assert ENV_KEY.encode() not in raw

    for name, why in (("OPENFT_OUTBOUND_KEY_MISSING", "not set"), ("OPENFT_SECRET_KEY", "OPENFT_OUTBOUND_KEY_")):
        refused = api.post("/evaluations", json={"eval_file": eval_file, "model": "tiny-llama",
                                                 "external": {**external, "api_key_env": name}})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "external.api_key_env" and why in refused.json()["error"]["message"]


def test_keys_stored_before_encryption_are_sealed_by_the_upgrade(openft_home):
    from alembic import command
    from sqlalchemy import text

    from openft.store.db import alembic_config, dispose_engines, get_engine, upgrade_database
    from openft.store.secrets import forget_secrets, is_sealed, unseal

    forget_secrets()
    engine = get_engine()
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0003_evals")
    legacy = {"external": {"base_url": "https://x.test", "api_key": EXTERNAL_KEY, "model": "m"}, "judge": None}
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO organizations (id, name, created_at) VALUES ('org-1', 'old', 0)"))
        connection.execute(
            text("INSERT INTO eval_runs (id, seq, organization_id, status, config, created_at) "
                 "VALUES ('eval-1', 1, 'org-1', 'succeeded', :config, 0)"),
            {"config": json.dumps(legacy)},
        )
    upgrade_database()
    on_sqlite = openft_home.database_url.startswith("sqlite")
    with engine.begin() as connection:
        if on_sqlite:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        stored = connection.exec_driver_sql("SELECT config FROM eval_runs").scalar()
    dispose_engines()
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert is_sealed(stored["external"]["api_key"]) and unseal(stored["external"]["api_key"]) == EXTERNAL_KEY
    if on_sqlite:
        assert EXTERNAL_KEY.encode() not in (openft_home.home / "openft.db").read_bytes()
        assert mode(openft_home.home / "openft.db") == 0o600


def test_a_home_that_does_not_exist_yet_is_created_private(tmp_path, monkeypatch):
    from openft.store.home import secure_home

    monkeypatch.setenv("OPENFT_HOME", str(tmp_path / "new" / "home"))
    reset_settings()
    previous = os.umask(0o022)
    try:
        secure_home()
        settings = get_settings()
        assert [mode(p) for p in (settings.home, settings.files_dir, settings.artifacts_dir)] == [0o700] * 3
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(previous)
        reset_settings()
