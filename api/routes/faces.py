"""POST /generate/faces: DCGAN faces."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.deps import (
    CallerDep,
    IdempotencyKeyDep,
    JobsDep,
    RepresentationDep,
    SettingsDep,
    WorkersDep,
    wait_seconds,
)
from api.parsing.params import json_body_doc, parameters
from api.parsing.query_rules import strict_query
from api.routes.common import draw_seed, error_responses, job_responses
from api.schemas import FacesQuery
from api.service.idempotency import Idempotency
from contract.jobs import FACES_DONE_EXAMPLE, JobKind, JobPublic
from contract.queues import TASK_FACES
from contract.roles import FACE_ROLES

router = APIRouter(prefix="/generate", tags=["generate"], dependencies=[Depends(strict_query)])


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
        **error_responses(409, 415, 422, 429, 500, 503),
    },
    openapi_extra={"requestBody": json_body_doc(FacesQuery)},
)
async def generate_faces(
    query: Annotated[FacesQuery, Depends(parameters(FacesQuery))],
    jobs: JobsDep,
    workers: WorkersDep,
    settings: SettingsDep,
    representation: RepresentationDep,
    idempotency_key: IdempotencyKeyDep,
    caller: CallerDep,
) -> Response:
    wait = wait_seconds(query.wait, settings)
    await workers.require(FACE_ROLES[query.model])
    params = {"n": query.n, "model": query.model, "seed": draw_seed() if query.seed is None else query.seed}
    # The request as sent (a drawn seed is not part of it): what a retry must repeat.
    idempotency = Idempotency.of(idempotency_key, "POST /generate/faces", query.model_dump(exclude={"wait"}))
    record = await jobs.submit(
        JobKind.faces,
        TASK_FACES,
        kwargs=params,
        params=params,
        owner=caller,
        idempotency=idempotency,
        webhook=query.webhook,
    )
    state = await jobs.wait_after_submit(record.id, wait)
    return await jobs.response(record, state, representation=representation)
