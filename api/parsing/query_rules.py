"""The query string, read strictly against what the OpenAPI schema says each route takes.

Pydantic's lax mode (what FastAPI validates query models with) turns ``n=1_0``
into 10, ``n=+3`` and ``n= 3`` into 3, ``n=3.0`` into an int, ``frames=yes``
into True; and a repeated parameter (``?n=3&n=5``) silently keeps one value.
A client that sends any of these has made a mistake the service should name,
not guess at. Strict pydantic types would refuse the *strings* a query is made
of, so the check is a dependency that runs before the query models: it reads
``request.query_params.multi_items()`` and compares every name and value with
the route's query parameters as the app's own OpenAPI schema declares them.
The schema is the contract; checking against it keeps the two from drifting.

Failures are raised as ``RequestValidationError``, so they read like every
other parameter error (``api.errors`` maps them, in one place).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

# JSON's number grammar: no sign but minus, no leading zeros, no "_", no spaces, no hex, no inf/nan.
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_BOOLEAN = re.compile(r"true|false", re.IGNORECASE)

_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "integer": (
        _INTEGER,
        (
            "must be an integer in plain decimal digits (no sign but '-', no leading zeros, "
            "no '_', spaces, decimal point or hex), e.g. {name}=3"
        ),
    ),
    "number": (
        _NUMBER,
        (
            "must be a plain decimal number (digits, an optional '.' and fraction and exponent; "
            "no '+', '_', spaces, inf or nan), e.g. {name}=2.5"
        ),
    ),
    "boolean": (_BOOLEAN, "must be true or false, e.g. {name}=true"),
}

Declared = dict[str, set[str]]  # query parameter -> the JSON types its schema allows


def _types(schema: dict[str, Any]) -> set[str]:
    if "anyOf" in schema:
        return {t for option in schema["anyOf"] for t in _types(option)}
    kind = schema.get("type")
    if isinstance(kind, list):
        return set(kind)
    return {kind} if kind else set()


def _declared_query(app: FastAPI) -> dict[tuple[str, str], Declared]:
    """(METHOD, path template) -> its declared query parameters, from the app's OpenAPI schema (built once)."""
    table = getattr(app.state, "declared_query", None)
    if table is None:
        table = {}
        for path, operations in app.openapi().get("paths", {}).items():
            for method, operation in operations.items():
                params = {
                    p["name"]: _types(p.get("schema", {}))
                    for p in operation.get("parameters", [])
                    if p.get("in") == "query"
                }
                table[(method.upper(), path)] = params
        app.state.declared_query = table
    return table


def query_problems(items: list[tuple[str, str]], declared: Declared) -> list[dict[str, Any]]:
    """What is wrong with a query string's (name, value) pairs, as pydantic-style error dicts."""
    problems: list[dict[str, Any]] = []
    seen: dict[str, list[str]] = {}
    for name, value in items:
        seen.setdefault(name, []).append(value)
    for name, values in seen.items():
        loc = ("query", name)
        if name not in declared:
            problems.append({"type": "extra_forbidden", "loc": loc, "msg": "not a parameter", "input": values[0]})
            continue
        if len(values) > 1:
            shown = ", ".join(f"{name}={value}" for value in values)
            problems.append(
                {
                    "type": "duplicate_parameter",
                    "loc": loc,
                    "msg": f"is given {len(values)} times ({shown}): give it once, with the one value you mean",
                    "input": None,
                }
            )
            continue
        value = values[0]
        # Only a parameter that can be nothing but numbers (or booleans) is held to their grammar.
        kinds = declared[name] - {"null"}
        if len(kinds) == 1 and (kind := next(iter(kinds))) in _FORMATS:
            pattern, advice = _FORMATS[kind]
            if not pattern.fullmatch(value):
                problems.append({"type": f"{kind}_format", "loc": loc, "msg": advice.format(name=name), "input": value})
    return problems


async def strict_query(request: Request) -> None:
    """A dependency: refuses repeated, unknown and loosely written query parameters with a 422."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None)
    declared = _declared_query(request.app).get((request.method, path)) if path else None
    if declared is None:  # a route outside the schema: nothing to check against
        return
    problems = query_problems(request.query_params.multi_items(), declared)
    if problems:
        raise RequestValidationError(problems)
