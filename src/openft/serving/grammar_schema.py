"""The JSON Schema subset OpenAI documents for Structured Outputs, checked before a schema becomes a grammar.

A keyword outside the subset is refused with a message that names it, as OpenAI does, rather than silently
ignored (a constraint the grammar does not enforce would make "the output validates" untrue). With
``strict`` the structural rules of Structured Outputs apply too: the root is an object, every object sets
``additionalProperties: false`` and lists all its properties in ``required``.
"""

from __future__ import annotations

from typing import Any

# Keywords that describe or document and constrain nothing.
ANNOTATIONS = frozenset(
    {"title", "description", "$comment", "examples", "default", "deprecated", "readOnly", "writeOnly", "$schema",
     "$id"}
)
STRUCTURE = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const", "$ref", "$defs",
     "definitions"}
)
STRING_KEYWORDS = frozenset({"pattern", "format"})
NUMBER_KEYWORDS = frozenset({"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"})
ARRAY_KEYWORDS = frozenset({"minItems", "maxItems"})
SUPPORTED_KEYWORDS = ANNOTATIONS | STRUCTURE | STRING_KEYWORDS | NUMBER_KEYWORDS | ARRAY_KEYWORDS
STRING_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
MAX_NESTING = 10
MAX_PROPERTIES = 5000
MAX_ENUM_VALUES = 1000


class SchemaError(ValueError):
    """The schema is outside the supported subset; ``keyword`` names the offending keyword when there is one."""

    def __init__(self, message: str, keyword: str | None = None) -> None:
        super().__init__(message)
        self.keyword = keyword


class _Walk:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.properties = 0
        self.enum_values = 0

    def schema(self, node: Any, path: str, depth: int) -> None:
        if isinstance(node, bool):
            if self.strict:
                raise SchemaError(f"at {path}: boolean schemas are not supported with strict; use an object schema")
            return
        if not isinstance(node, dict):
            raise SchemaError(f"at {path}: a schema must be an object")
        if depth > MAX_NESTING:
            raise SchemaError(f"at {path}: schemas may nest at most {MAX_NESTING} levels")
        for keyword in node:
            if keyword not in SUPPORTED_KEYWORDS:
                raise SchemaError(
                    f"at {path}: keyword '{keyword}' is not supported (Structured Outputs support a subset of JSON "
                    "Schema; see docs/serving.md)",
                    keyword,
                )
        self._type(node, path)
        if "format" in node and node["format"] not in STRING_FORMATS:
            raise SchemaError(
                f"at {path}: format {node['format']!r} is not supported; use one of {sorted(STRING_FORMATS)}",
                "format",
            )
        if "$ref" in node and (not isinstance(node["$ref"], str) or not node["$ref"].startswith("#")):
            raise SchemaError(f"at {path}: only local references ('#...') are supported", "$ref")
        if "enum" in node:
            if not isinstance(node["enum"], list) or not node["enum"]:
                raise SchemaError(f"at {path}: 'enum' must be a non-empty list", "enum")
            self.enum_values += len(node["enum"])
            if self.enum_values > MAX_ENUM_VALUES:
                raise SchemaError(f"a schema may have at most {MAX_ENUM_VALUES} enum values in total", "enum")
        self._object(node, path, depth)
        if "items" in node:
            self.schema(node["items"], f"{path}.items", depth + 1)
        if "anyOf" in node:
            if not isinstance(node["anyOf"], list) or not node["anyOf"]:
                raise SchemaError(f"at {path}: 'anyOf' must be a non-empty list", "anyOf")
            for index, option in enumerate(node["anyOf"]):
                self.schema(option, f"{path}.anyOf[{index}]", depth + 1)
        for defs in ("$defs", "definitions"):
            if defs in node:
                if not isinstance(node[defs], dict):
                    raise SchemaError(f"at {path}: '{defs}' must be an object", defs)
                for name, definition in node[defs].items():
                    self.schema(definition, f"{path}.{defs}.{name}", depth + 1)

    def _type(self, node: dict, path: str) -> None:
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
        for item in kinds:
            if item not in TYPES:
                raise SchemaError(f"at {path}: unknown type {item!r}", "type")

    def _object(self, node: dict, path: str, depth: int) -> None:
        properties = node.get("properties", {})
        if not isinstance(properties, dict):
            raise SchemaError(f"at {path}: 'properties' must be an object", "properties")
        required = node.get("required", [])
        if not isinstance(required, list):
            raise SchemaError(f"at {path}: 'required' must be a list", "required")
        self.properties += len(properties)
        if self.properties > MAX_PROPERTIES:
            raise SchemaError(f"a schema may have at most {MAX_PROPERTIES} object properties in total", "properties")
        kind = node.get("type")
        is_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node
        if self.strict and is_object:
            if node.get("additionalProperties") is not False:
                raise SchemaError(
                    f"at {path}: 'additionalProperties' is required to be supplied and to be false with strict",
                    "additionalProperties",
                )
            missing = [name for name in properties if name not in required]
            if missing:
                raise SchemaError(
                    f"at {path}: with strict, 'required' must list every property; missing {missing[0]!r}",
                    "required",
                )
        for name, child in properties.items():
            self.schema(child, f"{path}.properties.{name}", depth + 1)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            self.schema(extra, f"{path}.additionalProperties", depth + 1)


def check_schema(schema: Any, *, strict: bool) -> None:
    """Raise ``SchemaError`` when ``schema`` is outside the Structured Outputs subset (and its strict rules)."""
    if strict:
        if not isinstance(schema, dict) or schema.get("type") != "object" or "anyOf" in schema:
            raise SchemaError("with strict, the root schema must be an object ('type': 'object'), not anyOf", "type")
    _Walk(strict=False).schema(schema, "(root)", 1)  # an unsupported keyword is named first, wherever it is
    if strict:
        _Walk(strict=True).schema(schema, "(root)", 1)
