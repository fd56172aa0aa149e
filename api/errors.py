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


class Unauthenticated(ServiceError):
    """No API key, or not one of ``API_KEYS``."""

    status_code = 401


class ForeignOrigin(ServiceError):
    """A state-changing request from a web page whose origin ``CORS_ALLOW_ORIGINS`` does not list."""

    status_code = 403


class RateLimited(ServiceError):
    """This client's ``RATE_LIMIT`` / ``RATE_LIMIT_READS`` is used up; ``Retry-After`` says for how long."""

    status_code = 429


class InvalidImage(ServiceError):
    """Not decodable, truncated, or corrupt."""

    status_code = 422


class UnsupportedImage(ServiceError):
    """Not a PNG or JPEG."""

    status_code = 415


class UnsupportedMediaType(ServiceError):
    """A request body of a media type the endpoint does not take."""

    status_code = 415


class TooLarge(ServiceError):
    """Too many bytes, files or pixels."""

    status_code = 413


class JobNotFound(ServiceError):
    status_code = 404


class FileNotFound(ServiceError):
    status_code = 404


class ResultsExpired(ServiceError):
    """The job succeeded, but its files have been removed (JOB_TTL_SECONDS, RESULTS_MAX_BYTES) since."""

    status_code = 410


class JobNotFinished(ServiceError):
    status_code = 409


class JobAlreadyFinished(ServiceError):
    """A cancel for a job that has already succeeded, failed or been canceled."""

    status_code = 409


class JobFailed(ServiceError):
    status_code = 500


class QueueFull(ServiceError):
    """Backpressure: the job's queue is at its bound; nothing was created, so a retry is safe."""

    status_code = 429


class IdempotencyKeyReused(ServiceError):
    """An ``Idempotency-Key`` sent again with other parameters than its first request's."""

    status_code = 409


class ModelUnavailable(ServiceError):
    status_code = 503


class BackendUnavailable(ServiceError):
    status_code = 503


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


_LOCATION_NAMES = {
    "query": "query parameter",
    "path": "path parameter",
    "body": "form field",
    "json": "JSON body field",
    "header": "header",
}
# A rule across several parameters (a model validator), by where they came from.
_WHOLE_NAMES = {"query": "query parameters", "json": "parameters", "body": "form fields"}


# What an error shows of the client's own input: enough to recognise it, never all of a large one
# (a 30 MB string was once echoed back whole in a 422).
ECHO_CHARS = 200
# Problems listed in one 422; a body of thousands of unknown keys gets the first ones and a count.
MAX_PROBLEMS_SHOWN = 20


def shorten(text: str, limit: int = ECHO_CHARS) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def describe_validation_error(error: dict[str, Any]) -> str:
    """One pydantic error -> "query parameter 'n': Input should be ... (got 100)"."""
    loc = [str(part) for part in error.get("loc", ())]
    where = _LOCATION_NAMES.get(loc[0], loc[0]) if loc else "request"
    # pydantic's prefix for a ValueError raised in a validator says nothing to the client. A message may
    # quote a value too (a validator's own words): cut, but longer than a value, to keep what to change.
    message = shorten(error.get("msg", "is invalid").removeprefix("Value error, "), 5 * ECHO_CHARS)
    if len(loc) == 1 and loc[0] in ("query", "json") and error.get("type") not in ("json_invalid", "model_type"):
        return f"{_WHOLE_NAMES[loc[0]]}: {message}"  # a rule across several parameters (a model validator)
    if loc == ["json"]:
        return f"JSON body: {message}"
    field = shorten(".".join(loc[1:]) or "body")  # a JSON key is the client's input too
    if error.get("type") == "extra_forbidden":
        message = "is not a parameter of this endpoint (check its spelling against /docs)"
    elif error.get("type") == "missing":
        message = "is required"
    got = error.get("input")
    shown = f" (got {shorten(repr(got))})" if got is not None and not isinstance(got, (dict, list, bytes)) else ""
    return f"{where} {field!r}: {message}{shown}"


async def _validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = "; ".join(describe_validation_error(err) for err in errors[:MAX_PROBLEMS_SHOWN])
    if len(errors) > MAX_PROBLEMS_SHOWN:
        problems += f"; and {len(errors) - MAX_PROBLEMS_SHOWN} more"
    return _error(422, f"invalid request: {problems}. Fix these and retry; /docs lists every parameter and its range.")


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The response for ``exc``; also for ASGI middleware, which answers before the app's handlers."""
    return _error(exc.status_code, exc.detail, exc.headers)


async def _service_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return service_error_response(exc)


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no endpoint at {shorten(request.url.path)}: see /docs for the list of endpoints"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {shorten(request.url.path)}: see /docs for the methods it takes"
    elif exc.status_code == 400 and "parsing the body" in detail:
        detail = "the request body could not be parsed: send images as multipart/form-data fields named 'files'"
    return _error(exc.status_code, detail, getattr(exc, "headers", None))


async def _redis_down_handler(_: Request, exc: Exception) -> JSONResponse:
    log.warning("broker/backend unreachable: %s", exc)
    return _error(503, "Redis is unreachable: start it, or check REDIS_URL, then retry", {"Retry-After": "5"})


async def _redis_busy_handler(_: Request, exc: Exception) -> JSONResponse:
    # Redis is up, but this process's connections stayed busy (REDIS_MAX_CONNECTIONS): a crowd, not an outage.
    log.warning("Redis connection pool exhausted: %s", exc)
    return _error(
        503,
        "the service is busy: every Redis connection of this API process stayed in use "
        "(REDIS_MAX_CONNECTIONS, REDIS_POOL_WAIT_S); nothing was created, retry in a second",
        {"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(redis.exceptions.MaxConnectionsError, _redis_busy_handler)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down_handler)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down_handler)
    app.add_exception_handler(OperationalError, _redis_down_handler)
