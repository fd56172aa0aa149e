"""GET /jobs/{id} and the files a finished job made."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse, Response

from api.deps import CallerDep, JobsDep, SettingsDep, wait_seconds
from api.errors import FileNotFound, JobNotFinished
from api.parsing.query_rules import strict_query
from api.routes.common import error_responses
from api.schemas import JobWaitQuery
from api.service.job_service import predictions_csv
from contract.files import IMAGE_NAME_RE
from contract.jobs import JobKind, JobPublic, JobRecord, JobState, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(strict_query)])

JobId = Annotated[
    str,
    Path(description="The id a POST returned (32 hex digits).", examples=["9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a"]),
]


async def owned_job(job_id: JobId, jobs: JobsDep, caller: CallerDep) -> JobRecord:
    """The job of every route that takes a job id (here and in ``api.routes.live``): a dependency, so an
    unknown job, or another API key's, is a 404 before anything of the route runs (an event stream's 200)."""
    return await jobs.get(job_id, caller=caller)


JobDep = Annotated[JobRecord, Depends(owned_job)]


def _require_success(record: JobRecord, state: JobState, what: str) -> dict:
    if state.status is JobStatus.failed:
        raise FileNotFound(f"job {record.id} failed ({state.error}), so it has no {what}")
    if state.status is not JobStatus.succeeded:
        raise JobNotFinished(
            f"job {record.id} is still {state.status.value}: poll GET /jobs/{record.id} until it has succeeded",
            headers={"Retry-After": "1"},
        )
    assert state.result is not None
    return state.result


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="A job's status, progress and result",
    description=(
        "`status` goes queued -> running -> succeeded | failed | canceled; a succeeded job whose files retention "
        "has removed since reads `expired` (its `error` says so, and it lists no URLs). A running diffusion job "
        "reports `progress` (step of total); a finished one carries its `result` with the URLs of its images. "
        "`wait` long-polls: the answer comes when the job finishes or after `wait` seconds.\n\n"
        "```\ncurl localhost:8000/jobs/9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a?wait=10\n```"
    ),
    responses=error_responses(404, 422, 503),
)
async def get_job(
    record: JobDep, query: Annotated[JobWaitQuery, Query()], jobs: JobsDep, settings: SettingsDep
) -> JobPublic:
    wait = wait_seconds(query.wait, settings)
    state = await jobs.wait(record.id, wait) if wait > 0 else await jobs.state(record.id)
    return jobs.public(record, await jobs.checked(record, state))


@router.get(
    "/{job_id}/images/{name}",
    response_class=FileResponse,
    summary="One image of a finished job",
    description=(
        "A PNG the job made: `grid.png`, each image (`face_000.png`, `3_001.png`, ...), and for digits with "
        "frames `frame_t400.png` ... `frame_t0.png` and `frames.png`. The job's `result` lists them.\n\n"
        "```\ncurl -o grid.png localhost:8000/jobs/9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a/images/grid.png\n```"
    ),
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}, "example": "(PNG bytes)"}},
            "description": "The PNG.",
        },
        **error_responses(404, 409, 422, 503),
    },
)
async def get_image(
    record: JobDep,
    name: Annotated[str, Path(description="A file name from the job's result.", examples=["grid.png"])],
    jobs: JobsDep,
) -> Response:
    if IMAGE_NAME_RE.match(name) and (image := await jobs.files.response(record.id, name)) is not None:
        return image
    _require_success(record, await jobs.state(record.id), f"image {name!r}")
    raise FileNotFound(f"job {record.id} has no image {name!r}: GET /jobs/{record.id} lists its images")


@router.get(
    "/{job_id}/predictions.csv",
    summary="A classification job's predictions as the course's CSV",
    description=(
        "`image_name,label`, one row per uploaded image, in upload order.\n\n"
        "```\ncurl localhost:8000/jobs/9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a/predictions.csv\n```"
    ),
    response_class=Response,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}, "example": "image_name,label\n00001.png,3\n"}},
            "description": "The CSV.",
        },
        **error_responses(404, 409, 422, 503),
    },
)
async def get_predictions_csv(record: JobDep, jobs: JobsDep) -> Response:
    if record.kind is not JobKind.classify:
        raise FileNotFound(f"job {record.id} is a {record.kind.value} job: only classification jobs have predictions")
    result = _require_success(record, await jobs.state(record.id), "predictions")
    return Response(predictions_csv(result), media_type="text/csv")
