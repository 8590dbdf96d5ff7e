"""JSON Schemas of the request bodies that the routes check by hand, for /openapi.json.

The routes take bodies as plain dicts and check every field themselves, so that a mistake is a 400 naming the
parameter in OpenAI's words (pydantic's 422s are not). FastAPI can then only describe those bodies as "an
object". This module describes them (the OpenAI fields openft honours, with their types and ranges), so the
docs show them and schema fuzzing (tests/api/test_fuzz_schema.py) sends meaningful requests.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_TOOL_CALL = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name", "arguments"],
                     "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}},
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}, {"type": "null"}]},
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": _TOOL_CALL},
        "tool_call_id": {"type": "string"},
        "refusal": {"type": ["string", "null"]},
    },
}
_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                                    "description": {"type": "string"}, "parameters": {"type": "object"},
                                    "strict": {"type": ["boolean", "null"]}}},
    },
}
_SAMPLING = {
    "model": {"type": "string", "description": "A base model, an `ft:` model or one of its checkpoints."},
    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
    "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1},
    "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 8},
    "seed": {"type": ["integer", "null"]},
    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                       {"type": "null"}]},
    "stream": {"type": ["boolean", "null"]},
    "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
    "frequency_penalty": {"type": ["number", "null"]},
    "presence_penalty": {"type": ["number", "null"]},
    "user": {"type": "string"},
}
CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        **_SAMPLING,
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "tools": {"type": "array", "items": _TOOL},
        "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]}, {"type": "object"}]},
        "parallel_tool_calls": {"type": "boolean"},
        "response_format": {"type": "object", "required": ["type"],
                            "properties": {"type": {"enum": ["text", "json_object", "json_schema"]},
                                           "json_schema": {"type": "object"}}},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "store": {"type": ["boolean", "null"]},
    },
}
COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        **_SAMPLING,
        "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
        "echo": {"type": ["boolean", "null"]},
        "suffix": {"type": ["string", "null"]},
        "best_of": {"type": ["integer", "null"], "minimum": 1},
    },
}
_AUTO_OR = {
    "integer": lambda low, high: {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": low, "maximum": high}]},
    "number": lambda: {"anyOf": [{"const": "auto"}, {"type": "number", "exclusiveMinimum": 0}]},
}
_HYPERPARAMETERS = {
    "type": "object",
    "properties": {
        "n_epochs": _AUTO_OR["integer"](1, 50),
        "batch_size": _AUTO_OR["integer"](1, 256),
        "learning_rate_multiplier": _AUTO_OR["number"](),
        "beta": _AUTO_OR["number"](),
        "lora_rank": {"type": "integer", "minimum": 0, "maximum": 256},
        "lora_alpha": {"type": "number"},
        "lora_dropout": {"type": "number", "minimum": 0, "maximum": 0.9},
        "max_seq_length": {"type": "integer", "minimum": 16},
        "packing": {"type": "boolean"},
    },
}
FINE_TUNING_JOB_REQUEST = {
    "type": "object",
    "required": ["model", "training_file"],
    "properties": {
        "model": {"type": "string"},
        "training_file": {"type": "string", "description": "A `file-...` id uploaded with purpose fine-tune."},
        "validation_file": {"type": ["string", "null"]},
        "suffix": {"type": ["string", "null"], "maxLength": 64},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2147483647},
        "metadata": {"type": ["object", "null"], "maxProperties": 16, "additionalProperties": {"type": "string"}},
        "hyperparameters": _HYPERPARAMETERS,
        "method": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["supervised", "dpo", "reinforcement"]},
                "supervised": {"type": "object", "properties": {"hyperparameters": _HYPERPARAMETERS}},
                "dpo": {"type": "object", "properties": {"hyperparameters": _HYPERPARAMETERS}},
            },
        },
        "integrations": {"type": ["array", "null"], "items": {"type": "object"}},
    },
}
FILE_UPLOAD_REQUEST = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"enum": ["fine-tune", "batch", "evals", "user_data", "assistants", "vision"]},
        "model": {"type": "string", "description": "openft: the base model to validate a fine-tune file against."},
        "expires_after[anchor]": {"const": "created_at"},
        "expires_after[seconds]": {"type": "integer"},
    },
}
ADVICE_REQUEST = {
    "type": ["object", "null"],
    "properties": {
        "requests_per_day": {"type": "number", "exclusiveMinimum": 0},
        "horizon_months": {"type": "number", "exclusiveMinimum": 0},
        "days_per_month": {"type": "number", "exclusiveMinimum": 0},
        "hosted_models": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "hosted_training_model": {"type": "string"},
        "device": {"enum": ["cpu", "gpu"]},
        "n_devices": {"type": "integer", "minimum": 1},
        "concurrency": {"type": "number", "exclusiveMinimum": 0},
        "price_per_device_hour": {"type": ["number", "null"], "minimum": 0},
    },
}
EVALUATION_REQUEST = {
    "type": "object",
    "required": ["eval_file", "model"],
    "properties": {
        "eval_file": {"type": "string"},
        "training_file": {"type": "string"},
        "model": {"type": "string"},
        "strategies": {"type": "array", "items": {"type": "string"}},
        "fine_tuned_models": {"type": "array", "items": {"type": "string"}},
        "metrics": {"type": "array", "items": {"type": "string"}},
        "k": {"type": "integer", "minimum": 0},
        "max_tokens": {"type": "integer", "minimum": 1},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
MODERATION_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "model": {"type": "string"},
    },
}

# (method, path) -> (media type, schema)
REQUEST_BODIES: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("post", "/v1/chat/completions"): ("application/json", CHAT_REQUEST),
    ("post", "/v1/completions"): ("application/json", COMPLETION_REQUEST),
    ("post", "/v1/fine_tuning/jobs"): ("application/json", FINE_TUNING_JOB_REQUEST),
    ("post", "/v1/files"): ("multipart/form-data", FILE_UPLOAD_REQUEST),
    ("post", "/v1/evaluations"): ("application/json", EVALUATION_REQUEST),
    ("post", "/v1/evaluations/{run_id}/advice"): ("application/json", ADVICE_REQUEST),
    ("post", "/v1/moderations"): ("application/json", MODERATION_REQUEST),
}


def describe_request_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """Put REQUEST_BODIES into a generated OpenAPI document (operations that do not exist are skipped)."""
    for (method, path), (media_type, body) in REQUEST_BODIES.items():
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        operation["requestBody"] = {"required": body.get("type") == "object",
                                    "content": {media_type: {"schema": copy.deepcopy(body)}}}
    return schema


def install_request_schemas(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description=app.description)
            app.openapi_schema = describe_request_bodies(schema)
        return app.openapi_schema

    app.openapi = openapi
