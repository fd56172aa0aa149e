"""Dependencies, as ``Annotated`` aliases so route signatures read as declarations."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Header, Request
from redis.asyncio import Redis

from api.config import Settings
from api.errors import InvalidParameter
from api.operations.live_workers import LiveWorkers
from api.service.idempotency import KEY_PATTERN
from api.service.job_service import JobService
from api.service.live_events import JobEventStreams

Representation = Literal["json", "png", "csv"]
_MEDIA_TYPES: dict[str, Representation] = {
    "application/json": "json",
    "image/png": "png",
    "text/csv": "csv",
    "image/*": "png",
    "text/*": "csv",
}


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


def get_workers(request: Request) -> LiveWorkers:
    return request.app.state.workers


def get_redis(request: Request) -> Redis:
    return request.app.state.redis


def get_event_streams(request: Request) -> JobEventStreams:
    return request.app.state.events


def caller(request: Request) -> str | None:
    """Whose jobs the request may create and see: its API key's id, which ``require_api_key`` (a route
    guard, so it has run) sets; None when the server asks for no keys."""
    key_id: str | None = getattr(request.state, "api_key_id", None)
    if key_id is None and request.app.state.settings.api_keys:
        # Fail closed: a route mounted without the key check must not see every key's jobs.
        raise RuntimeError(f"{request.url.path} reads jobs without the key check (api.access.keys.route_guards)")
    return key_id


def preferred_representation(accept: Annotated[str | None, Header(include_in_schema=False)] = None) -> Representation:
    """The client's preferred form of a finished job, from ``Accept`` (JSON unless it asks otherwise)."""
    best: tuple[float, int, Representation] = (0.0, 0, "json")
    for position, part in enumerate((accept or "").split(",")):
        media, *options = [piece.strip() for piece in part.split(";")]
        if media.lower() not in _MEDIA_TYPES:
            continue
        quality = 1.0
        for option in options:
            if option.startswith("q="):
                try:
                    quality = float(option[2:])
                except ValueError:
                    quality = 0.0
        # Higher quality wins; on a tie, the type listed first.
        if quality > best[0] or (quality == best[0] and -position > best[1]):
            best = (quality, -position, _MEDIA_TYPES[media.lower()])
    return best[2]


def wait_seconds(requested: float | None, settings: Settings) -> float:
    if requested is None:
        return settings.default_wait_s
    if requested > settings.max_wait_s:
        raise InvalidParameter(
            f"wait={requested:g} s is above this server's limit of {settings.max_wait_s:g} s (MAX_WAIT_S): "
            "ask for less and poll GET /jobs/{id} for the rest"
        )
    return requested


def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=KEY_PATTERN,
            description=(
                "Makes a retry safe: a client-chosen unique value (a UUID, say; visible ASCII, at most 255 "
                "characters). A later request to the same endpoint with the same key and the same parameters gets "
                "the job the first one created (and waits for it like the first), never a second job; the same key "
                "with other parameters is a `409`. Keys are kept as long as jobs (`JOB_TTL_SECONDS`)."
            ),
            examples=["5f0c6a1e-8d7b-4c3e-9a21-0b6f4d2e7c90"],
        ),
    ] = None,
) -> str | None:
    return key


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
WorkersDep = Annotated[LiveWorkers, Depends(get_workers)]
RedisDep = Annotated[Redis, Depends(get_redis)]
EventStreamsDep = Annotated[JobEventStreams, Depends(get_event_streams)]
CallerDep = Annotated[str | None, Depends(caller)]
RepresentationDep = Annotated[Representation, Depends(preferred_representation)]
IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key)]
