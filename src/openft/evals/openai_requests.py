"""Checking OpenAI Evals API requests (evals and runs) before anything is stored or queued.

Every mistake is an OpenAIEvalRequestError naming the parameter OpenAI's SDK would send (`testing_criteria[0].range`,
`data_source.source.content[3].item`), which the API turns into a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openft.graders import GraderSpecError, check_grader
from openft.graders.spec import sub_graders
from openft.graders.templates import variables

CRITERION_TYPES = ("label_model", "string_check", "text_similarity", "python", "score_model")
RUN_SAMPLING_KEYS = ("max_completion_tokens", "seed", "temperature", "top_p", "response_format",
                     "reasoning_effort", "tools")  # fmt: skip
MAX_ITEMS = 10_000
MAX_COMPLETION_TOKENS = 4096
SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array"},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
    },
    "required": ["model", "output_text"],
}


class OpenAIEvalRequestError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _fail(message: str, param: str | None, code: str | None = None) -> OpenAIEvalRequestError:
    return OpenAIEvalRequestError(message, param, code)


def check_metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise _fail(f"'{param}' must be an object of at most 16 string pairs.", param)
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise _fail(f"'{param}' keys must be strings of at most 64 characters and values strings of at most "
                        "512 characters.", f"{param}.{key}")
    return value


def check_name(value: Any, param: str = "name") -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 512):
        raise _fail(f"'{param}' must be a string of at most 512 characters.", param)
    return value


def _unknown(body: dict[str, Any], allowed: tuple[str, ...], prefix: str = "") -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _fail(f"Unrecognized parameter '{prefix}{unknown[0]}'.", f"{prefix}{unknown[0]}")


def check_data_source_config(config: Any) -> dict[str, Any]:
    """The data source config as stored and returned (OpenAI's `schema` form)."""
    param = "data_source_config"
    if not isinstance(config, dict):
        raise _fail(f"'{param}' must be an object.", param)
    kind = config.get("type")
    if kind in ("logs", "stored_completions"):
        raise _fail(f"data_source_config type '{kind}' reads chat completions that OpenAI stored from your traffic; "
                    "openft does not log completions. Use type 'custom' with an item_schema and upload the items.",
                    f"{param}.type", "unsupported_data_source")
    if kind != "custom":
        raise _fail(f"'{param}.type' must be 'custom' (or OpenAI's 'logs'/'stored_completions', not supported).",
                    f"{param}.type")
    _unknown(config, ("type", "item_schema", "include_sample_schema"), f"{param}.")
    schema = config.get("item_schema")
    if not isinstance(schema, dict):
        raise _fail(f"Missing required parameter: '{param}.item_schema' (a JSON schema object).",
                    f"{param}.item_schema")
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        message = f"'{param}.item_schema' is not a valid JSON schema: {exc.message}"
        raise _fail(message, f"{param}.item_schema") from None
    include_sample = config.get("include_sample_schema", False)
    if not isinstance(include_sample, bool):
        raise _fail(f"'{param}.include_sample_schema' must be a boolean.", f"{param}.include_sample_schema")
    properties: dict[str, Any] = {"item": schema}
    if include_sample:
        properties["sample"] = SAMPLE_SCHEMA
    return {"type": "custom", "schema": {"type": "object", "properties": properties, "required": list(properties)}}


def _criterion_variables(spec: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    if spec["type"] in ("string_check", "text_similarity"):
        texts += [spec["input"], spec["reference"]]
    elif spec["type"] in ("score_model", "label_model"):
        for message in spec["input"]:
            parts = message["content"] if isinstance(message["content"], list) else [message["content"]]
            texts += [p if isinstance(p, str) else p["text"] for p in parts]
    elif spec["type"] == "multi":
        return [v for sub in (sub_graders(spec) or {}).values() for v in _criterion_variables(sub)]
    return [name for text in texts for name in variables(text)]


def check_testing_criteria(criteria: Any, data_source_config: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(criteria, list) or not criteria:
        raise _fail("'testing_criteria' must be a non-empty list of graders.", "testing_criteria")
    schema = data_source_config["schema"]["properties"]
    item_properties = schema["item"].get("properties") if isinstance(schema["item"], dict) else None
    names: set[str] = set()
    for index, criterion in enumerate(criteria):
        where = f"testing_criteria[{index}]"
        if isinstance(criterion, dict) and criterion.get("type") not in (*CRITERION_TYPES, None):
            raise _fail(f"'{where}.type' must be one of {', '.join(CRITERION_TYPES)} (a multi grader is for "
                        "fine-tuning; give its parts as separate criteria).", f"{where}.type")
        try:
            check_grader(criterion, where, extra=frozenset({"pass_threshold"}))
        except GraderSpecError as exc:
            raise _fail(exc.message, exc.param) from None
        threshold = criterion.get("pass_threshold")
        if criterion["type"] == "text_similarity" and threshold is None:
            raise _fail(f"Missing required parameter: '{where}.pass_threshold'.", f"{where}.pass_threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise _fail(f"'{where}.pass_threshold' must be a number.", f"{where}.pass_threshold")
        if criterion["type"] in ("string_check", "label_model") and "pass_threshold" in criterion:
            raise _fail(f"'{where}.pass_threshold' does not apply to a {criterion['type']} grader.",
                        f"{where}.pass_threshold")
        if criterion["name"] in names:
            raise _fail(f"Two testing criteria are named '{criterion['name']}'; names must be unique.",
                        f"{where}.name")
        names.add(criterion["name"])
        for name in _criterion_variables(criterion):
            parts = name.split(".")
            known = item_properties is None or len(parts) < 2 or parts[1] in item_properties
            if parts[0] == "item" and not known:
                raise _fail(f"'{{{{{name}}}}}' in {where} is not in data_source_config.item_schema.properties.",
                            where, "invalid_variable")
    return criteria


def default_threshold(criterion: dict[str, Any]) -> float:
    """Score at or above which an item passes: given, else 1 for pass/fail graders, else the range's midpoint."""
    if criterion.get("pass_threshold") is not None:
        return float(criterion["pass_threshold"])
    if criterion["type"] == "score_model":
        low, high = criterion.get("range") or [0, 1]
        return (low + high) / 2
    return 1.0 if criterion["type"] in ("string_check", "label_model") else 0.5


@dataclass
class RunItems:
    rows: list[dict[str, Any]]  # each {"item": {...}, "sample": {...} | None}


def parse_jsonl_rows(path: Path, param: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise _fail(f"Line {number} of the file is not JSON: {exc.msg}.", param, "invalid_file") from None
            if not isinstance(row, dict):
                raise _fail(f"Line {number} of the file must be a JSON object.", param, "invalid_file")
            rows.append(row if "item" in row and set(row) <= {"item", "sample"} else {"item": row})
            if len(rows) > MAX_ITEMS:
                raise _fail(f"The file has more than {MAX_ITEMS} items.", param, "invalid_file")
    if not rows:
        raise _fail("The file has no items.", param, "invalid_file")
    return rows


def check_rows(rows: list[dict[str, Any]], item_schema: dict[str, Any], param: str, *, needs_sample: bool) -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(item_schema)
    for index, row in enumerate(rows):
        where = f"{param}[{index}]"
        if not isinstance(row.get("item"), dict):
            raise _fail(f"'{where}.item' must be an object.", f"{where}.item")
        error = next(iter(validator.iter_errors(row["item"])), None)
        if error is not None:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise _fail(f"Item {index} does not match data_source_config.item_schema at 'item{path}': "
                        f"{error.message}", f"{where}.item")
        sample = row.get("sample")
        if sample is not None and not isinstance(sample, dict):
            raise _fail(f"'{where}.sample' must be an object.", f"{where}.sample")
        if needs_sample and not isinstance((sample or {}).get("output_text"), str):
            raise _fail(f"'{where}.sample.output_text' is required: a jsonl run grades samples it is given "
                        "(use a completions data source to have a model write them).", f"{where}.sample")


def check_sampling(params: Any, param: str = "data_source.sampling_params") -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _fail(f"'{param}' must be an object.", param)
    _unknown(params, RUN_SAMPLING_KEYS, f"{param}.")
    for key in ("temperature", "top_p"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0
                                  or value > (1 if key == "top_p" else 2)):  # fmt: skip
            raise _fail(f"'{param}.{key}' must be a number between 0 and {1 if key == 'top_p' else 2}.",
                        f"{param}.{key}")
    for key, low, high in (("max_completion_tokens", 1, MAX_COMPLETION_TOKENS), ("seed", 0, 2**31 - 1)):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise _fail(f"'{param}.{key}' must be an integer between {low} and {high}.", f"{param}.{key}")
    if params.get("reasoning_effort") not in (None, "none"):
        raise _fail(f"'{param}.reasoning_effort': openft's models do not reason; leave it out.",
                    f"{param}.reasoning_effort")
    if params.get("tools"):
        raise _fail(f"'{param}.tools': tool calls are not graded by openft's eval runs yet; leave tools out.",
                    f"{param}.tools")
    if params.get("response_format") is not None:
        from openft.serving.grammar_request import GrammarRequestError, chat_grammar

        try:  # the same checks a chat request gets: a schema outside OpenAI's subset is refused here
            chat_grammar({"response_format": params["response_format"]})
        except GrammarRequestError as error:
            raise _fail(str(error), f"{param}.{error.param}") from None
    return params
