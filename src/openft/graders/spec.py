"""Grader JSON, checked the way OpenAI's types define it. Every mistake is a GraderSpecError naming the field
(`grader.operation`, `testing_criteria[1].range`, ...), which the API turns into a 400."""

from __future__ import annotations

import ast
from typing import Any

from openft.graders import formula
from openft.graders.templates import variables

GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "label_model", "multi")
OPERATIONS = ("eq", "ne", "like", "ilike")
METRICS = ("cosine", "fuzzy_match", "bleu", "gleu", "meteor",
           "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")  # fmt: skip
ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")
SAMPLING_KEYS = ("max_completions_tokens", "reasoning_effort", "seed", "temperature", "top_p")
FIELDS = {
    "string_check": ({"name", "type", "input", "reference", "operation"}, set()),
    "text_similarity": ({"name", "type", "input", "reference", "evaluation_metric"}, set()),
    "python": ({"name", "type", "source"}, {"image_tag"}),
    "score_model": ({"name", "type", "input", "model"}, {"range", "sampling_params"}),
    "label_model": ({"name", "type", "input", "model", "labels", "passing_labels"}, set()),
    "multi": ({"name", "type", "graders", "calculate_output"}, set()),
}
MAX_SOURCE_CHARS = 256_000


class GraderSpecError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message, self.param = message, param


def _string(spec: dict[str, Any], key: str, where: str, *, empty: bool = True) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise GraderSpecError(f"'{where}.{key}' must be a {'non-empty ' if not empty else ''}string.", f"{where}.{key}")
    return value


def _template(text: str, param: str) -> None:
    for name in variables(text):
        if name.split(".")[0] not in ("item", "sample"):
            raise GraderSpecError(f"Template variable '{{{{{name}}}}}' in '{param}' must start with "
                                  "'item.' or 'sample.'.", param)


def check_content(content: Any, param: str) -> None:
    """Message content: a string, a text part, or a list of them (images and audio are refused)."""
    parts = content if isinstance(content, list) else [content]
    for index, part in enumerate(parts):
        where = f"{param}[{index}]" if isinstance(content, list) else param
        if isinstance(part, str):
            _template(part, where)
            continue
        if not isinstance(part, dict):
            raise GraderSpecError(f"'{where}' must be a string or a content part.", where)
        kind = part.get("type")
        if kind in ("input_image", "input_audio"):
            raise GraderSpecError(f"'{where}': {kind} content is not supported; openft's judges read text only.",
                                  f"{where}.type")
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise GraderSpecError(f"'{where}' must be {{type: input_text|output_text, text: string}}.", where)
        _template(part["text"], f"{where}.text")


def _messages(spec: dict[str, Any], where: str) -> None:
    messages = spec.get("input")
    if not isinstance(messages, list) or not messages:
        raise GraderSpecError(f"'{where}.input' must be a non-empty list of messages.", f"{where}.input")
    for index, message in enumerate(messages):
        param = f"{where}.input[{index}]"
        if not isinstance(message, dict):
            raise GraderSpecError(f"'{param}' must be a message object.", param)
        if message.get("role") not in ROLES:
            raise GraderSpecError(f"'{param}.role' must be one of {', '.join(ROLES)}.", f"{param}.role")
        if message.get("type", "message") != "message":
            raise GraderSpecError(f"'{param}.type' must be 'message'.", f"{param}.type")
        if "content" not in message:
            raise GraderSpecError(f"Missing required parameter: '{param}.content'.", f"{param}.content")
        check_content(message["content"], f"{param}.content")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sampling(spec: dict[str, Any], where: str) -> None:
    params = spec.get("sampling_params")
    if params is None:
        return
    if not isinstance(params, dict):
        raise GraderSpecError(f"'{where}.sampling_params' must be an object.", f"{where}.sampling_params")
    for key, value in params.items():
        param = f"{where}.sampling_params.{key}"
        if key not in SAMPLING_KEYS:
            raise GraderSpecError(f"Unrecognized parameter '{param}'.", param)
        if value is None:
            continue
        if key == "reasoning_effort":
            if value not in ("none", "minimal"):
                raise GraderSpecError(f"'{param}': openft's judge models do not reason; only 'none' is accepted.",
                                      param)
        elif key in ("max_completions_tokens", "seed"):
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key != "seed" else 0):
                raise GraderSpecError(f"'{param}' must be a positive integer.", param)
        elif not _number(value) or value < 0 or (key == "top_p" and value > 1) or value > 2:
            raise GraderSpecError(f"'{param}' must be a number in range ({'0..1' if key == 'top_p' else '0..2'}).",
                                  param)


def _python_source(source: str, where: str) -> None:
    if len(source) > MAX_SOURCE_CHARS:
        raise GraderSpecError(f"'{where}.source' is longer than {MAX_SOURCE_CHARS} characters.", f"{where}.source")
    try:
        tree = ast.parse(source)  # parsing only: nothing of the user's code runs in the server
    except SyntaxError as exc:
        raise GraderSpecError(f"'{where}.source' is not valid Python: {exc.msg} (line {exc.lineno}).",
                              f"{where}.source") from None
    if not any(isinstance(node, ast.FunctionDef) and node.name == "grade" for node in tree.body):
        raise GraderSpecError(f"'{where}.source' must define a top-level function grade(sample, item).",
                              f"{where}.source")


def check_grader(spec: Any, where: str = "grader", *, extra: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The grader as given (a plain dict), or GraderSpecError. `extra`: keys a caller adds (pass_threshold)."""
    if not isinstance(spec, dict):
        raise GraderSpecError(f"'{where}' must be a grader object.", where)
    kind = spec.get("type")
    if kind not in GRADER_TYPES:
        raise GraderSpecError(f"'{where}.type' must be one of {', '.join(GRADER_TYPES)}, got {kind!r}.",
                              f"{where}.type")
    required, optional = FIELDS[kind]
    for key in sorted(required):
        if key not in spec:
            raise GraderSpecError(f"Missing required parameter: '{where}.{key}'.", f"{where}.{key}")
    unknown = sorted(set(spec) - required - optional - extra)
    if unknown:
        raise GraderSpecError(f"Unrecognized parameter '{where}.{unknown[0]}' for a {kind} grader.",
                              f"{where}.{unknown[0]}")
    _string(spec, "name", where, empty=False)
    if kind in ("string_check", "text_similarity"):
        for key in ("input", "reference"):
            _template(_string(spec, key, where), f"{where}.{key}")
        if kind == "string_check" and spec["operation"] not in OPERATIONS:
            raise GraderSpecError(f"'{where}.operation' must be one of {', '.join(OPERATIONS)}.",
                                  f"{where}.operation")
        if kind == "text_similarity" and spec["evaluation_metric"] not in METRICS:
            raise GraderSpecError(f"'{where}.evaluation_metric' must be one of {', '.join(METRICS)}.",
                                  f"{where}.evaluation_metric")
    elif kind == "python":
        _python_source(_string(spec, "source", where, empty=False), where)
        if spec.get("image_tag") is not None:
            _string(spec, "image_tag", where)
    elif kind in ("score_model", "label_model"):
        _string(spec, "model", where, empty=False)
        _messages(spec, where)
        if kind == "score_model":
            _sampling(spec, where)
            bounds = spec.get("range")
            if bounds is not None and not (
                isinstance(bounds, list) and len(bounds) == 2 and all(map(_number, bounds)) and bounds[0] < bounds[1]
            ):
                raise GraderSpecError(f"'{where}.range' must be two numbers [low, high] with low < high.",
                                      f"{where}.range")
        else:
            labels = spec["labels"]
            if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
                raise GraderSpecError(f"'{where}.labels' must be a non-empty list of strings.", f"{where}.labels")
            passing = spec["passing_labels"]
            if not isinstance(passing, list) or not passing or not all(x in labels for x in passing):
                raise GraderSpecError(f"'{where}.passing_labels' must be a non-empty subset of labels.",
                                      f"{where}.passing_labels")
    else:
        sub = sub_graders(spec)
        if sub is None:
            raise GraderSpecError(f"'{where}.graders' must map names to graders.", f"{where}.graders")
        for name, grader in sub.items():
            if isinstance(grader, dict) and grader.get("type") == "multi":
                raise GraderSpecError(f"'{where}.graders.{name}': multi graders cannot be nested.",
                                      f"{where}.graders.{name}.type")
            check_grader(grader, f"{where}.graders.{name}")
        try:
            formula.parse(spec["calculate_output"], sub)
        except formula.FormulaError as exc:
            raise GraderSpecError(str(exc), f"{where}.calculate_output") from None
    return spec


def sub_graders(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A multi grader's graders by name: OpenAI's map `{name: grader}`, or the SDK's single grader (its name)."""
    graders = spec.get("graders")
    if isinstance(graders, dict) and "type" in graders and isinstance(graders.get("type"), str):
        return {graders.get("name") or "grader": graders}
    if isinstance(graders, dict) and graders and all(isinstance(k, str) and k.isidentifier() for k in graders):
        return graders
    return None
