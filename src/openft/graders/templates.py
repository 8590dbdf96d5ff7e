"""OpenAI's grader templates: `{{item.x}}`, `{{sample.output_text}}`, `{{sample.output_json.x}}`.

A reference to a missing variable is an error of the grader (`invalid_variable_error`), and a reference into
`sample.output_json` when the sample is not JSON is the sample's fault (`sample_parse_error`): OpenAI reports
both in `metadata.errors` rather than scoring an empty string.
"""

from __future__ import annotations

import json
import re
from typing import Any

VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
NAMESPACES = ("item", "sample")


class TemplateError(ValueError):
    def __init__(self, kind: str, message: str) -> None:  # kind: invalid_variable_error | sample_parse_error
        super().__init__(message)
        self.kind = kind


def sample_namespace(output_text: str) -> dict[str, Any]:
    """`sample.*` for one model output; `output_json` is absent (not null) when the output is not JSON."""
    namespace: dict[str, Any] = {"output_text": output_text}
    try:
        namespace["output_json"] = json.loads(output_text)
    except (TypeError, ValueError):
        pass
    return namespace


def lookup(path: str, namespaces: dict[str, Any]) -> Any:
    parts = path.split(".")
    if parts[0] not in NAMESPACES:
        raise TemplateError("invalid_variable_error", f"'{{{{{path}}}}}' must start with item. or sample.")
    if parts[:2] == ["sample", "output_json"] and "output_json" not in namespaces.get("sample", {}):
        raise TemplateError("sample_parse_error", "The sample is not valid JSON, so sample.output_json is undefined.")
    value: Any = namespaces
    for index, part in enumerate(parts):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            where = ".".join(parts[: index + 1])
            raise TemplateError("invalid_variable_error", f"'{{{{{path}}}}}' is undefined: no '{where}'.")
    return value


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render(template: str, namespaces: dict[str, Any]) -> str:
    return VARIABLE.sub(lambda m: as_text(lookup(m.group(1), namespaces)), template)


def variables(template: str) -> list[str]:
    return [m.group(1) for m in VARIABLE.finditer(template)]
