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


#: How deep a value the schema leaves open (`media`'s extra fields) may nest.
OPEN_VALUE_DEPTH = 8
_Problem = "tuple[list[str], str] | None"


#: The Python types json.loads gives for each JSON type (a bool is no integer: its type is bool).
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "boolean": (bool,), "integer": (int,), "number": (int, float), "string": (str,), "null": (type(None),),
    "array": (list,), "object": (dict,)}


def _python_types(names: list[str]) -> frozenset[type]:
    return frozenset(kind for name in names for kind in _PYTHON_TYPES.get(name, ()))


def _type_test(names: list[str]) -> Any:
    """A test of a value's JSON type (json.loads gives exactly these Python types)."""
    types = _python_types(names)
    return lambda value: type(value) in types


def _kind(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "null", "array", "object"):
        if _type_test([name])(value):
            return name
    return type(value).__name__


def _same(value: Any, wanted: Any) -> bool:
    """JSON equality: true is not 1, though Python says it is."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return isinstance(value, bool) and isinstance(wanted, bool) and value is wanted
    if value is None or wanted is None:
        return value is wanted
    is_number = lambda v: type(v) in (int, float)  # noqa: E731
    return value == wanted and is_number(value) == is_number(wanted)


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if type(item) is dict:
            stack.extend((child, depth + 1) for child in item.values())
        elif type(item) is list:
            stack.extend((child, depth + 1) for child in item)
    return False


def _quiet(value: Any) -> str:
    """The message of a problem nobody reads (an if/then's condition only says whether it holds)."""
    return ""


def _compile(schema: dict[str, Any] | bool, quiet: bool = False) -> Any:
    """A check(value) -> None, or (path parts innermost first, message), for the keywords the record
    schema uses: type, const, enum, minimum, maximum, exclusiveMinimum, required, properties,
    additionalProperties (false), items, allOf, if/then, and the schemas true and false (a field that
    only some schema versions allow is `false` in the others). `quiet`: problems without their message
    (an if's condition, checked for every record and failing for most, is only asked whether it holds)."""
    if schema is True:
        return lambda value: None
    if schema is False:
        return lambda value: ([], "not allowed in this schema_version")
    checks: list[Any] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        types = _python_types(names)
        text = " or ".join(names)
        expected = _quiet if quiet else (lambda v: f"expected {text}, got {_kind(v)}")
        checks.append(lambda v: None if type(v) in types else ([], expected(v)))
    if "const" in schema:
        const = schema["const"]
        must = f"must be {json.dumps(const)}"
        checks.append(lambda v: None if _same(v, const) else ([], must))
    if "enum" in schema:
        enum = schema["enum"]
        shown = ", ".join(json.dumps(e) for e in enum)
        not_one = _quiet if quiet else (lambda v: f"{json.dumps(v)[:40]} is not one of {shown}")
        if all(type(e) is str for e in enum):  # the usual case: a set lookup (JSON equality is str equality)
            names = frozenset(enum)
            checks.append(lambda v: None if type(v) is str and v in names else ([], not_one(v)))
        else:
            checks.append(lambda v: None if any(_same(v, e) for e in enum) else ([], not_one(v)))
    bounds = [(name, schema[name]) for name in ("minimum", "maximum", "exclusiveMinimum") if name in schema]
    if bounds:
        def check_bounds(v: Any) -> Any:
            if type(v) not in (int, float):
                return None
            for name, bound in bounds:
                if (name == "minimum" and v < bound) or (name == "maximum" and v > bound) \
                        or (name == "exclusiveMinimum" and v <= bound):
                    return [], f"{name} {bound} not met ({v})"
            return None
        checks.append(check_bounds)
    required = tuple(schema.get("required", ()))
    properties = {name: _compile(sub, quiet) for name, sub in schema.get("properties", {}).items()}
    closed = schema.get("additionalProperties") is False
    # extra fields of a typed, open object (`media`) are bounded in depth; an if/then's partial schema
    # names a few fields and says nothing of the rest
    bounds_extras = not closed and "type" in schema
    if required or properties or "additionalProperties" in schema:
        def check_object(v: Any) -> Any:
            if type(v) is not dict:
                return None
            for name in required:
                if name not in v:
                    return [], f"no {name!r}"
            for name, item in v.items():
                check = properties.get(name)
                if check is not None:
                    problem = check(item)
                    if problem is not None:
                        problem[0].append(f".{name}")
                        return problem
                elif closed:
                    return [], f"unexpected field {name!r}"
                elif bounds_extras and type(item) in (dict, list) and _too_deep(item, OPEN_VALUE_DEPTH):
                    return [f".{name}"], "nested too deep"
            return None

        if closed or bounds_extras:
            checks.append(check_object)
        else:  # a partial schema (an if/then's): look up the few fields it names, not every field of the record
            def check_named(v: Any) -> Any:
                if type(v) is not dict:
                    return None
                for name in required:
                    if name not in v:
                        return [], f"no {name!r}"
                for name, check in properties.items():
                    if name in v and check(v[name]) is not None:
                        return check_object(v)  # the problem the record's own field order finds first
                return None
            checks.append(check_named)
    if "items" in schema:
        item_check = _compile(schema["items"], quiet)

        def check_items(v: Any) -> Any:
            if type(v) is not list:
                return None
            for number, item in enumerate(v):
                problem = item_check(item)
                if problem is not None:
                    problem[0].append(f"[{number}]")
                    return problem
            return None
        checks.append(check_items)
    checks.extend(_compile(sub, quiet) for sub in schema.get("allOf", ()))
    if "if" in schema and "then" in schema:
        condition, then = _compile(schema["if"], quiet=True), _compile(schema["then"], quiet)
        checks.append(lambda v: then(v) if condition(v) is None else None)

    if len(checks) == 1:  # most sub-schemas hold one keyword: no wrapper call per value
        return checks[0]
    if not checks:
        return lambda value: None
    if len(checks) == 2:  # a problem is a non-empty tuple: `or` goes on to the next check only on None
        first, second = checks
        return lambda value: first(value) or second(value)

    def check(value: Any) -> Any:
        for each in checks:
            problem = each(value)
            if problem is not None:
                return problem
        return None

    return check


@cache
def _record_check() -> Any:
    return _compile(load_schema())


def record_problem(value: Any) -> str | None:
    """Why `value` (a parsed JSONL line) is not a vl2 output record, or None when it is one.

    Checks the keywords record.schema.json uses (compiled once) without a JSON Schema library at run
    time; the tests compare its verdicts with jsonschema's. Values the schema leaves open (`media`'s
    extra fields) may nest at most OPEN_VALUE_DEPTH deep.
    """
    problem = _record_check()(value)
    if problem is None:
        return None
    parts, message = problem
    return f"record{''.join(reversed(parts))}: {message}"
