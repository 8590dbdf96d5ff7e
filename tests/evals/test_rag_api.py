"""RAG documents and tool examples through the evaluations API of a real `openft serve` (tiny model): bad
documents are refused naming the field, and one run on the worker has RAG and function-calling rows."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest

TOOL = {"type": "function", "function": {"name": "set_mode", "strict": True, "parameters": {
    "type": "object", "properties": {"mode": {"enum": ["eco", "boost"]}}, "required": ["mode"],
    "additionalProperties": False}}}  # fmt: skip
HANDBOOK = b"""# Heater manual

Eco mode keeps the room at 18 degrees and halves the power draw.

Boost mode heats at full power for twenty minutes, then returns to the previous mode.
"""


def tool_line(question: str, mode: str) -> dict:
    expected = {"id": "call_1", "type": "function", "function": {"name": "set_mode", "arguments": json.dumps(
        {"mode": mode})}}  # fmt: skip
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "tool_calls": [expected]}],
            "tools": [TOOL]}  # fmt: skip


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.create_key("rag-org")


@pytest.fixture(scope="module")
def api(live_server, key):
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def files(live_server, key):
    client = live_server.client(key)

    def upload(name: str, content: bytes, purpose: str) -> str:
        return client.files.create(file=(name, io.BytesIO(content)), purpose=purpose).id

    tools = jsonl([tool_line("Save power please", "eco"), tool_line("Heat the room fast", "boost")])
    plain = jsonl([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    return {
        "tools": upload("tools.jsonl", tools, "evals"),
        "plain": upload("plain.jsonl", plain, "evals"),
        "manual": upload("manual.md", HANDBOOK, "user_data"),
        "faq": upload("faq.jsonl", jsonl([{"title": "Noise", "text": "Boost mode is louder."}]), "assistants"),
        "pdf": upload("manual.pdf", b"%PDF-1.7\x00\x01binary", "user_data"),
        "binary_txt": upload("notes.txt", b"\x00\x01\x02", "assistants"),
        "wrong_purpose": upload("notes.md", HANDBOOK, "evals"),
    }


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        ({"documents": ["file-nope"]}, "documents[0]", "not found"),
        ({"documents": ["manual", "wrong_purpose"]}, "documents[1]", "purpose 'evals'"),
        ({"documents": ["manual", "pdf"]}, "documents[1]", "not a text document"),
        ({"documents": ["binary_txt"]}, "documents[0]", "binary data"),
        ({"documents": "manual"}, "documents", "list of file ids"),
        ({"documents": []}, "documents", "between 1 and"),
        ({"strategies": ["rag"]}, "documents", "need 'documents'"),
        ({"strategies": ["rag-fine-tuned"], "documents": ["manual"]}, "fine_tuned_models", "rag-fine-tuned"),
        ({"eval_file": "plain", "strategies": ["zero-shot", "function-calling"]}, "strategies[1]", "'tools'"),
        ({"tool_choice": "sometimes"}, "tool_choice", "auto, required"),
        ({"documents": ["manual"], "rag_k": 0}, "rag_k", "between 1 and 32"),
    ],
)
def test_bad_rag_and_tool_fields_are_refused_naming_the_field(api, files, change, param, message):
    body = {"eval_file": files["tools"], "model": "tiny-llama", **change}
    for field in ("eval_file",):
        body[field] = files.get(body[field], body[field])
    if isinstance(body.get("documents"), list):
        body["documents"] = [files.get(d, d) for d in body["documents"]]
    response = api.post("/evaluations", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and message in error["message"], error


def test_a_run_with_documents_and_tool_examples_has_rag_and_function_calling_rows(api, files):
    body = {"eval_file": files["tools"], "model": "tiny-llama", "documents": [files["manual"], files["faq"]],
            "rag_k": 2, "tool_choice": "required", "max_tokens": 48}  # fmt: skip
    created = api.post("/evaluations", json=body)
    assert created.status_code == 200, created.text
    run = created.json()
    assert run["strategies"] == ["zero-shot", "rag", "function-calling"]  # defaults for the inputs given
    assert run["documents"] == [files["manual"], files["faq"]] and run["rag_k"] == 2
    deadline = time.monotonic() + 180
    while (run := api.get(f"/evaluations/{run['id']}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, run
        time.sleep(0.5)
    assert run["status"] == "succeeded", run["error"]
    summary = {s["name"]: s for s in run["summary"]["strategies"]}
    assert run["summary"]["metric"] == "tool_call_exact"
    assert summary["rag"]["mean_prompt_tokens"] > summary["zero-shot"]["mean_prompt_tokens"] + 20
    report = api.get(f"/evaluations/{run['id']}/report").json()
    results = report["results"]
    assert results["rag"]["n_documents"] == 2 and results["rag"]["n_passages"] == 2
    function_calling = next(s for s in results["strategies"] if s["name"] == "function-calling")
    # constrained decoding (tool_choice required, strict schema): every call parses, even from a random model
    assert function_calling["quality"]["tool_args_valid"]["mean"] == 1.0
    assert all(p["predictions"]["function-calling"]["tool_calls"] for p in results["samples"])
    assert any(s["strategy"] == "rag" for s in report["advice"]["costs"])
    md = api.get(f"/evaluations/{run['id']}/report", params={"format": "md"}).text
    assert "RAG: the top 2 of 2 passages from 2 document(s)" in md and "Function calling: 2 of 2" in md
