"""JSON Schema (draft 2020-12) generated from contracts.schema."""
from __future__ import annotations

from typing import Any

from .schema import DOUBLE, INT, INT_RANGE, LONG, RECORD_TYPES, SCHEMA_VERSION, STRING, TIMESTAMP, RecordType

_JSON_TYPES = {STRING: "string", TIMESTAMP: "string", INT: "integer", LONG: "integer", DOUBLE: "number"}


def json_schema(rt: RecordType) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in rt.fields:
        p: dict[str, Any] = {"description": f.description}
        base = _JSON_TYPES[f.type]
        p["type"] = [base, "null"] if f.nullable else base
        if f.type == TIMESTAMP:
            p["format"] = "date-time"
            p["pattern"] = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
        if f.pattern:
            p["pattern"] = f.pattern
        if f.max_length is not None:
            p["maxLength"] = f.max_length
        lo, hi = INT_RANGE.get(f.type, (None, None))
        if f.minimum is not None or lo is not None:
            p["minimum"] = f.minimum if f.minimum is not None else lo
        if f.maximum is not None or hi is not None:
            p["maximum"] = f.maximum if f.maximum is not None else hi
        if f.enum is not None:
            p["enum"] = list(f.enum) + ([None] if f.nullable else [])
        props[f.name] = p
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://smartcity.example/schemas/v{SCHEMA_VERSION}/{rt.name}.json",
        "title": rt.name,
        "description": rt.description,
        "type": "object",
        "properties": props,
        "required": [f.name for f in rt.fields if not f.nullable],
        "additionalProperties": False,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    return {rt.name: json_schema(rt) for rt in RECORD_TYPES}
