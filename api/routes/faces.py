"""POST /generate/faces: DCGAN faces."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from workers.protocol import FACE_ROLES, TASK_FACES

from ..deps import JobsDep, RepresentationDep, SettingsDep, WorkersDep, wait_seconds
from ..jobs import job_response
from ..schemas import FACES_DONE_EXAMPLE, FacesQuery, JobKind, JobPublic
from .common import draw_seed, error_responses, job_responses

router = APIRouter(prefix="/generate", tags=["generate"])


@router.post(
    "/faces",
    response_model=JobPublic,
    summary="Generate 64x64 faces",
    description=(
        "Draws `n` 64x64 faces from DCGAN `A` or `B`. Each face and a grid of all of them (8 per row) "
        "are PNGs under `/jobs/{id}/images/`.\n\n"
        "Send `Accept: image/png` to get the grid itself:\n\n"
        "```\ncurl -X POST 'localhost:8000/generate/faces?n=32&seed=1' -H 'Accept: image/png' -o faces.png\n```"
    ),
    responses={
        **job_responses(FACES_DONE_EXAMPLE, extra_media={"image/png": "the grid PNG, when `Accept: image/png`"}),
        **error_responses(422, 429, 500, 503),
    },
)
async def generate_faces(
    query: Annotated[FacesQuery, Query()],
    jobs: JobsDep,
    workers: WorkersDep,
    settings: SettingsDep,
    representation: RepresentationDep,
) -> Response:
    wait = wait_seconds(query.wait, settings)
    await workers.require(FACE_ROLES[query.model])
    params = {"n": query.n, "model": query.model, "seed": draw_seed() if query.seed is None else query.seed}
    record = await jobs.submit(JobKind.faces, TASK_FACES, kwargs=params, params=params)
    state = await jobs.wait(record.id, wait)
    return job_response(record, state, representation=representation, results_dir=settings.results_dir)
