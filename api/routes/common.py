"""OpenAPI response documentation shared by the routers."""

from __future__ import annotations

import secrets
from typing import Any

from api.schemas import ErrorBody
from contract.jobs import JOB_QUEUED_EXAMPLE, JobPublic

_ERRORS: dict[int, tuple[str, str]] = {
    401: (
        "No API key, or a wrong one (the server sets `API_KEYS`): send one as `X-API-Key: <key>` or "
        "`Authorization: Bearer <key>`.",
        "missing API key: this server requires one for every endpoint but /healthz; send it in the X-API-Key "
        "header (or as Authorization: Bearer <key>). In /docs, enter it with the Authorize button.",
    ),
    403: (
        "Sent by a web page of another origin that `CORS_ALLOW_ORIGINS` does not list: nothing was created.",
        "cross-origin POST from http://evil.example refused: this service takes requests that create or change "
        "jobs only from its own pages and the origins in CORS_ALLOW_ORIGINS; nothing was created. ...",
    ),
    404: (
        "No such job (never created here, expired, or another API key's: the same answer), or no such file in it.",
        "no job 'abc': it was never created here or has expired",
    ),
    409: (
        "A job's file before the job has finished (poll `GET /jobs/{id}`); or, on a POST, an `Idempotency-Key` "
        "first sent with other parameters (nothing was created).",
        "job 9f1c... is still running: poll GET /jobs/9f1c... until it has succeeded",
    ),
    413: (
        "Too large: the body, a file, the number of files or an image's pixel count is over its limit.",
        "'big.png' is 50000x50000 = 2,500,000,000 pixels, above the limit of 16,777,216 (MAX_IMAGE_PIXELS): "
        "downscale it",
    ),
    415: (
        "A file is not a PNG or JPEG image; or a body that is not the endpoint's media type (the /generate "
        "endpoints take their parameters as a JSON object, `Content-Type: application/json`).",
        "'notes.txt' is not an image Pillow can read: send PNG or JPEG",
    ),
    422: (
        "A parameter is missing, unknown or out of range, or an image is truncated; `detail` names it and the "
        "allowed values.",
        "invalid request: query parameter 'n': Input should be less than or equal to 64 (got 100)",
    ),
    429: (
        "Too many requests: this client's rate limit (`RATE_LIMIT` for POSTs, `RATE_LIMIT_READS` for GETs) is "
        "used up, its address has sent too many wrong API keys, or the job's queue is full (`MAX_QUEUED_SMALL` / "
        "`MAX_QUEUED_DIFFUSION`). Nothing was created; retry after `Retry-After` seconds.",
        "the 'diffusion' queue already holds 100 waiting jobs, its limit (MAX_QUEUED_DIFFUSION=100): nothing was "
        "created; retry after 10 s",
    ),
    500: (
        "The job failed in the worker; `detail` says why.",
        "job 9f1c... failed: the job ran past the worker's time limit",
    ),
    503: (
        "Redis is unreachable, or no worker has the needed model loaded; see `Retry-After`.",
        "no worker has the model for 'faces:A' loaded (dcgan-A: CheckpointError: model card not found)",
    ),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "model": ErrorBody,
            "description": _ERRORS[code][0],
            "content": {"application/json": {"example": {"detail": _ERRORS[code][1]}}},
        }
        for code in codes
    }


def job_responses(
    done_example: dict[str, Any], *, extra_media: dict[str, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """200 (finished: JSON, or another media type the client asked for) and 202 (still running)."""
    content: dict[str, Any] = {"application/json": {"example": done_example}}
    for media, description in (extra_media or {}).items():
        schema = {"type": "string", "format": "binary"} if media.startswith("image/") else {"type": "string"}
        content[media] = {"schema": schema, "example": description}
    return {
        200: {"description": "The job finished within `wait`: its result.", "content": content},
        202: {
            "model": JobPublic,
            "description": "Not finished within `wait`: the job as it stands. Poll the URL in `Location` "
            "(`GET /jobs/{id}`).",
            "content": {"application/json": {"example": JOB_QUEUED_EXAMPLE}},
        },
    }


def draw_seed() -> int:
    """Seeds are drawn here, not in the worker, so a redelivered task redraws the same images."""
    return secrets.randbelow(2**32)
