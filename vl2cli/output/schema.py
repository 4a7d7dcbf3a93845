"""The JSON Schema of output records, shipped inside the package so users can validate files."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "record.schema.json"


@cache
def load_schema() -> dict[str, Any]:
    """The record schema (JSON Schema draft 2020-12) as a dict."""
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def _is_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"record schema: unknown type {name!r}")


def _same(value: Any, wanted: Any) -> bool:
    """JSON equality: true is not 1, though Python says it is."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return isinstance(value, bool) and isinstance(wanted, bool) and value is wanted
    if value is None or wanted is None:
        return value is wanted
    return value == wanted and _is_type(value, "number") == _is_type(wanted, "number")


def _kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__


def _problem(value: Any, schema: dict[str, Any], where: str) -> str | None:
    """The first way `value` breaks `schema` (the keywords the record schema uses), or None."""
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, name) for name in types):
            return f"{where}: expected {' or '.join(types)}, got {_kind(value)}"
    if "const" in schema and not _same(value, schema["const"]):
        return f"{where}: must be {json.dumps(schema['const'])}"
    if "enum" in schema and not any(_same(value, wanted) for wanted in schema["enum"]):
        return f"{where}: {json.dumps(value)[:40]} is not one of {', '.join(json.dumps(e) for e in schema['enum'])}"
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where}: below {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where}: above {schema['maximum']}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return f"{where}: not above {schema['exclusiveMinimum']}"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return f"{where}: no {name!r}"
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            if name in value and (problem := _problem(value[name], sub, f"{where}.{name}")) is not None:
                return problem
        if schema.get("additionalProperties") is False:
            extra = [name for name in value if name not in properties]
            if extra:
                return f"{where}: unexpected field {extra[0]!r}"
    if isinstance(value, list) and "items" in schema:
        for number, item in enumerate(value):
            if (problem := _problem(item, schema["items"], f"{where}[{number}]")) is not None:
                return problem
    for sub in schema.get("allOf", ()):
        if (problem := _problem(value, sub, where)) is not None:
            return problem
    if "if" in schema and _problem(value, schema["if"], where) is None and "then" in schema:
        return _problem(value, schema["then"], where)
    return None


def record_problem(value: Any) -> str | None:
    """Why `value` (a parsed JSONL line) is not a vl2 output record, or None when it is one.

    Checks the keywords record.schema.json uses (type, enum, const, bounds, properties, required,
    additionalProperties, items, allOf, if/then) without a JSON Schema library at run time; the tests
    compare its verdicts with jsonschema's.
    """
    return _problem(value, load_schema(), "record")
