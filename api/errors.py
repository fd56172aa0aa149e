"""Domain errors and their HTTP mapping, in one place.

Every error body is ``{"detail": "<what went wrong and what to change>"}``.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error the client can act on; ``detail`` says how."""

    status_code = 500

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class InvalidParameter(ServiceError):
    status_code = 422


class InvalidImage(ServiceError):
    """Not decodable, truncated, or corrupt."""

    status_code = 422


class UnsupportedImage(ServiceError):
    """Not a PNG or JPEG."""

    status_code = 415


class TooLarge(ServiceError):
    """Too many bytes, files or pixels."""

    status_code = 413


class JobNotFound(ServiceError):
    status_code = 404


class FileNotFound(ServiceError):
    status_code = 404


class JobNotFinished(ServiceError):
    status_code = 409


class JobFailed(ServiceError):
    status_code = 500


class QueueFull(ServiceError):
    """Backpressure: the job's queue is at its bound; nothing was created, so a retry is safe."""

    status_code = 429


class ModelUnavailable(ServiceError):
    status_code = 503


class BackendUnavailable(ServiceError):
    status_code = 503


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


_LOCATION_NAMES = {"query": "query parameter", "path": "path parameter", "body": "form field", "header": "header"}


def describe_validation_error(error: dict[str, Any]) -> str:
    """One pydantic error -> "query parameter 'n': Input should be ... (got 100)"."""
    loc = [str(part) for part in error.get("loc", ())]
    where = _LOCATION_NAMES.get(loc[0], loc[0]) if loc else "request"
    field = ".".join(loc[1:]) or "body"
    message = error.get("msg", "is invalid")
    if error.get("type") == "extra_forbidden":
        message = "is not a parameter of this endpoint (check its spelling against /docs)"
    elif error.get("type") == "missing":
        message = "is required"
    got = error.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, (dict, list, bytes)) else ""
    return f"{where} {field!r}: {message}{shown}"


async def _validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(describe_validation_error(err) for err in exc.errors())
    return _error(422, f"invalid request: {problems}. Fix these and retry; /docs lists every parameter and its range.")


async def _service_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return _error(exc.status_code, exc.detail, exc.headers)


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no endpoint at {request.url.path}: see /docs for the list of endpoints"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}: see /docs for the methods it takes"
    elif exc.status_code == 400 and "parsing the body" in detail:
        detail = "the request body could not be parsed: send images as multipart/form-data fields named 'files'"
    return _error(exc.status_code, detail, getattr(exc, "headers", None))


async def _redis_down_handler(_: Request, exc: Exception) -> JSONResponse:
    log.warning("broker/backend unreachable: %s", exc)
    return _error(503, "Redis is unreachable: start it, or check REDIS_URL, then retry", {"Retry-After": "5"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down_handler)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down_handler)
    app.add_exception_handler(OperationalError, _redis_down_handler)
