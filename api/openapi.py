"""The OpenAPI schema as this server serves it: FastAPI's, plus what only the running settings or the
middleware know (the limits of this server's settings, the origin guard's 403, the JSON body limit's 413).
One wrapper, here."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.access.keys import WRITE_METHODS
from api.config import Settings
from api.routes.common import error_responses


def install(app: FastAPI, settings: Settings) -> None:
    """Wrap ``app.openapi`` (FastAPI's documented way to change the generated schema) once, with every
    adjustment: this server's limits, and the origin guard's 403."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            document_settings(schema, settings)
            document_origin_refusals(schema)
            document_json_limits(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_settings(schema: dict[str, Any], settings: Settings) -> None:
    """Put the limits this server enforces from its settings into its schema.

    The query models are declared once, at import; the limits are the running
    server's (``MAX_WAIT_S``, ``MAX_FILES``, ``MAX_DIGIT_IMAGES``).
    """
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                _drop_null(param["schema"])
                if param.get("in") == "query":
                    _set_limits(path, param["name"], param["schema"], settings)
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:  # the same parameters as a JSON body (api.parsing.params): the same limits
                for name, property_schema in body.get("properties", {}).items():
                    _set_limits(path, name, property_schema, settings)
            _document_uploads(schema, operation, settings)


def _set_limits(path: str, name: str, schema: dict[str, Any], settings: Settings) -> None:
    if name == "wait":
        _set_maximum(schema, settings.max_wait_s)
    elif name == "webhook":
        _set_webhook_example(schema, settings)
    elif name == "n" and path == "/generate/digits":
        _set_maximum(schema, settings.max_digit_images)


def _document_uploads(schema: dict[str, Any], operation: dict[str, Any], settings: Settings) -> None:
    files = _upload_field(schema, operation)
    if files is None:
        return
    files["minItems"], files["maxItems"] = 1, settings.max_files
    # Not empty, at most MAX_FILE_BYTES, and a PNG or JPEG (else 422, 413, 415).
    files["items"].update(minLength=1, maxLength=settings.max_file_bytes)
    multipart = operation["requestBody"]["content"]["multipart/form-data"]
    multipart["encoding"] = {"files": {"contentType": "image/png, image/jpeg"}}
    # Only the files: any other form field is refused (api.parsing.params.only_files).
    _multipart_body(schema, operation)["additionalProperties"] = False


def document_origin_refusals(schema: dict[str, Any]) -> None:
    """The origin guard's 403 on every state-changing operation: the guard is middleware and knows no
    routes, so by method the docs stay right for any POST a router adds later."""
    doc = error_responses(403)[403]
    response = {
        "description": doc["description"],
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorBody"},
                "example": doc["content"]["application/json"]["example"],
            }
        },
    }
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if method.upper() in WRITE_METHODS:
                operation.setdefault("responses", {}).setdefault("403", response)


def document_json_limits(schema: dict[str, Any], settings: Settings) -> None:
    """The JSON body limit's 413 (``api.middleware.JsonBodyLimit``) on every operation that takes a JSON body: it is
    middleware, which the routes do not declare. (Its depth limit is a 422, which they all document.)"""
    detail = (
        f"the JSON body is larger than {settings.max_json_bytes:,} bytes (MAX_JSON_BYTES): send only the "
        'parameters, e.g. {"n": 8, "seed": 7}'
    )
    response = {
        "description": f"The JSON body is over this server's `MAX_JSON_BYTES` ({settings.max_json_bytes:,} bytes); "
        "it was not read.",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}, "example": {"detail": detail}}
        },
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                operation.setdefault("responses", {}).setdefault("413", response)


def _drop_null(schema: dict[str, Any]) -> None:
    """``int | None`` -> ``integer``: a parameter is absent or has a value; a query string has no null."""
    options = schema.get("anyOf")
    if not options or {"type": "null"} not in options:
        return
    rest = [option for option in options if option != {"type": "null"}]
    if len(rest) == 1:
        del schema["anyOf"]
        schema.update(rest[0])
    else:
        schema["anyOf"] = rest


def _multipart_body(schema: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    """The schema of an operation's multipart body (``{}`` when it has none)."""
    body = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data", {}).get("schema", {})
    ref = body.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        body = schema.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
    return body


def _upload_field(schema: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of an operation's multipart ``files`` field (a list of binary files), if it has one."""
    files = _multipart_body(schema, operation).get("properties", {}).get("files")
    return files if files is not None and files.get("type") == "array" else None


def _set_webhook_example(schema: dict[str, Any], settings: Settings) -> None:
    """A webhook URL this server would call (one of WEBHOOK_ALLOWED_HOSTS), so /docs's example works."""
    if not settings.webhook_allowed_hosts:
        return
    host = sorted(settings.webhook_allowed_hosts)[0]
    schema["examples"] = [f"https://{f'[{host}]' if ':' in host else host}/genserve"]


def _set_maximum(schema: dict[str, Any], maximum: float) -> None:
    for option in schema.get("anyOf", [schema]):
        if option.get("type") in ("integer", "number"):
            value = int(maximum) if option["type"] == "integer" else maximum
            # The model's own bound stays when it is the tighter one.
            option["maximum"] = min(option.get("maximum", value), value)
