"""`openft files ...` against a live server: what a user sees when uploading good and bad training data."""

from __future__ import annotations

import json

from tests.cli.conftest import Cli


def write_examples(path, n: int, *, broken_line: int | None = None):
    rows = []
    for i in range(n):
        row = {
            "messages": [
                {"role": "user", "content": f"Code for item {i}?"},
                {"role": "assistant", "content": f"ITEM-{i:03d}"},
            ]
        }
        if i + 1 == broken_line:
            row = {"messages": [{"role": "user", "content": "no answer here"}]}
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_uploading_a_valid_file_prints_its_id_and_status(cli: Cli, tmp_path):
    path = write_examples(tmp_path / "train.jsonl", 12)
    result = cli("files", "upload", str(path))
    assert result.exit_code == 0, result.output
    file_id, status = result.stdout.split()[:2]
    assert file_id.startswith("file-") and status == "processed"

    shown = cli.json("files", "show", file_id)
    assert shown["status"] == "processed" and shown["validation"]["ok"] is True
    assert shown["validation"]["stats"]["n_valid"] == 12
    assert file_id in [f["id"] for f in cli.json("files", "list")]
    assert file_id in cli("files", "list").stdout


def test_a_file_with_errors_exits_1_and_shows_the_line_by_line_report(cli: Cli, tmp_path):
    path = write_examples(tmp_path / "bad.jsonl", 12, broken_line=3)
    result = cli("files", "upload", str(path))
    assert result.exit_code == 1
    assert " error " in result.stdout.splitlines()[0]
    assert "Errors (1)" in result.stdout and "INVALID" in result.stdout
    error_row = next(line for line in result.stdout.splitlines() if "│ 3 " in line or "│    3 " in line)
    assert "assistant" in error_row.lower()

    as_json = cli("files", "upload", str(path), "--json")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert body["status"] == "error"
    assert [e["line"] for e in body["validation"]["errors"]] == [3]


def test_removing_a_file_and_asking_for_an_unknown_one(cli: Cli, tmp_path):
    file_id = cli.json("files", "upload", str(write_examples(tmp_path / "x.jsonl", 10)))["id"]
    removed = cli("files", "rm", file_id)
    assert removed.exit_code == 0 and file_id in removed.stdout

    missing = cli("files", "show", file_id)
    assert missing.exit_code == 1
    assert f"No such File object: {file_id}" in missing.stderr
    assert "param: id" in missing.stderr


def test_a_server_that_is_not_running_is_named_with_exit_code_2(tmp_path):
    from tests.fixtures.server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    result = Cli(url, "sk-anything")("files", "list")
    assert result.exit_code == 2
    assert f"not reachable at {url}" in result.stderr and "openft serve" in result.stderr


def test_a_wrong_key_is_refused_with_the_servers_message(cli: Cli):
    result = Cli(cli.base_url, "sk-openft-wrong")("files", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error 401")
