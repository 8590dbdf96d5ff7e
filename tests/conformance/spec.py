"""OpenAI's OpenAPI spec (vendored in fixtures/) as validators for captured responses.

OpenAPI 3.1 schemas are JSON Schema 2020-12, so `jsonschema`'s Draft 2020-12 validator checks them, with the
spec document registered under one URI so that every `#/components/...` reference resolves.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "fixtures" / "openai-openapi.yaml"
SPEC_URI = "urn:openai-openapi"
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")


@functools.cache
def spec() -> dict[str, Any]:
    return yaml.load(SPEC_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _openapi30_compat(node: Any) -> Any:
    """This 3.1 document still uses OpenAPI 3.0 forms in places; read them as 3.0 defines them: `nullable: true`
    (stream chunks' `finish_reason`, `logprobs`, `usage`) also allows null, and a boolean `exclusiveMinimum`
    (`learning_rate_multiplier`) makes `minimum` exclusive. `oneOf` is read as `anyOf`: some alternatives
    overlap (a template message `{role, content}` is both an `EasyInputMessage` and an `EvalItem`), so exclusive
    matching would reject the spec's own examples; a value must still match at least one alternative."""
    if isinstance(node, list):
        return [_openapi30_compat(value) for value in node]
    if not isinstance(node, dict):
        return node
    out = {("anyOf" if key == "oneOf" else key): _openapi30_compat(value)
           for key, value in node.items() if key != "nullable"}
    for bound in ("Minimum", "Maximum"):
        if isinstance(out.get(f"exclusive{bound}"), bool):
            limit = out.pop(bound.lower(), None)
            if out.pop(f"exclusive{bound}") and limit is not None:
                out[f"exclusive{bound}"] = limit
            elif limit is not None:
                out[bound.lower()] = limit
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _registry() -> Registry:
    document = _openapi30_compat(spec())
    return Registry().with_resource(SPEC_URI, Resource.from_contents(document, default_specification=DRAFT202012))


def _absolute(node: Any) -> Any:
    """Each local `#/...` reference made absolute, so that it resolves inside the registered spec document."""
    if isinstance(node, list):
        return [_absolute(value) for value in node]
    if not isinstance(node, dict):
        return node
    return {key: (SPEC_URI + value if key == "$ref" and isinstance(value, str) and value.startswith("#/")
                  else _absolute(value)) for key, value in node.items()}


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema taken from the spec (its `$ref`s point into the spec document)."""
    return Draft202012Validator(_absolute(_openapi30_compat(schema)), registry=_registry())


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    found = []
    for error in validator(schema).iter_errors(instance):
        if error.context:  # anyOf / oneOf: name the closest alternative's complaint, not the whole value
            error = best_match(error.context)
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"{where}: {error.message[:300]}")
    return found


@functools.cache
def _templates() -> list[tuple[re.Pattern, str]]:
    out = []
    for template in spec()["paths"]:
        pattern = re.escape(template)
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
        out.append((re.compile(f"^{pattern}$"), template))
    return out


def operation_of(method: str, path: str) -> tuple[str, str] | None:
    """`("post", "/fine_tuning/jobs/{fine_tuning_job_id}/cancel")` for `POST /v1/fine_tuning/jobs/ftjob-1/cancel`."""
    bare = path.split("?")[0].removeprefix("/v1")
    for pattern, template in _templates():
        if pattern.match(bare) and method.lower() in spec()["paths"][template]:
            return method.lower(), template
    return None


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec()
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


@dataclass
class Exchange:
    """One captured request and its response (``chunks``: the parsed `data:` events of a stream)."""

    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: Any = None
    chunks: list[Any] | None = None
    done_marker: bool = False
    note: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path} -> {self.status}" + (f" ({self.note})" if self.note else "")


def check(exchange: Exchange) -> list[str]:
    """Everything about one exchange that does not match OpenAI's spec (empty when it conforms)."""
    problems = []
    request_id = exchange.headers.get("x-request-id", "")
    if not REQUEST_ID.match(request_id):
        problems.append(f"x-request-id header missing or malformed: {request_id!r}")
    if exchange.status >= 400:
        # OpenAI answers every error with its envelope (the SDK parses it); a few operations' spec entries name
        # the bare `Error` object instead, which the API does not actually send.
        problems += schema_errors(component("ErrorResponse"), exchange.body)
        return problems
    operation = operation_of(exchange.method, exchange.path)
    if operation is None:
        return problems + ["no operation in OpenAI's spec for this method and path"]
    method, template = operation
    responses = spec()["paths"][template][method]["responses"]
    if str(exchange.status) not in responses:
        ok = [code for code in responses if code.startswith("2")]
        return problems + [f"status {exchange.status} is not in the spec (it lists {ok})"]
    content = _resolve(responses[str(exchange.status)]).get("content") or {}
    content_type = exchange.headers.get("content-type", "").split(";")[0]
    if exchange.chunks is not None:
        schema = (content.get("text/event-stream") or content.get("application/json") or {}).get("schema")
        if not exchange.done_marker:
            problems.append("the stream did not end with `data: [DONE]`")
        for index, chunk in enumerate(exchange.chunks):
            problems += [f"chunk {index}: {p}" for p in schema_errors(schema, chunk)]
        return problems
    if content_type != "application/json":
        return problems  # file content: raw bytes, as OpenAI sends them
    schema = (content.get("application/json") or {}).get("schema")
    if schema is None:
        return problems + ["the spec gives no JSON schema for this response"]
    return problems + schema_errors(schema, exchange.body)


def parse_sse(lines: list[str]) -> tuple[list[Any], bool]:
    chunks, done = [], False
    for line in lines:
        if not line.startswith("data: "):
            continue
        payload = line.removeprefix("data: ")
        if payload == "[DONE]":
            done = True
            continue
        chunks.append(json.loads(payload))
    return chunks, done
