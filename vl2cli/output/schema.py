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
