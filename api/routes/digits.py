"""POST /generate/digits: class-conditional diffusion digits."""

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
from api.errors import InvalidParameter
from api.parsing.params import json_body_doc, parameters
from api.parsing.query_rules import strict_query
from api.routes.common import draw_seed, error_responses, job_responses
from api.schemas import DigitsQuery
from api.service.idempotency import Idempotency
from contract.digits import DISTILLED, DISTILLED_STEPS, NUM_TRAIN_TIMESTEPS
from contract.jobs import DIGITS_DONE_EXAMPLE, JobKind, JobPublic
from contract.queues import TASK_DIGITS
from contract.roles import DIGIT_ROLE

router = APIRouter(prefix="/generate", tags=["generate"], dependencies=[Depends(strict_query)])


@router.post(
    "/digits",
    response_model=JobPublic,
    summary="Generate 28x28 digits of a label",
    description=(
        "Samples `n` MNIST-M-style digits of `label` (absent: `n` of every digit, a grid row per label, "
        "the report's 10x10 figure) from the class-conditional diffusion model. `frames=true` adds the "
        "reverse process of the first image at t = 400, 320, 240, 160, 80, 0 (for a few-step sampler, the nearest "
        "step it visits; for `distilled`, where its DDIM path crosses t), and `GET /jobs/{id}/events` streams "
        "them live while the job runs; `animation=true` adds an "
        "animated PNG of the whole reverse process.\n\n"
        "By default the digits come from the model's recommended few-step configuration (`GET /models` shows it; "
        "`sampler`, `steps`, `guidance` and `guidance_from`/`guidance_to` override it).\n\n"
        "A diffusion job reports its progress: if it is not done within `wait`, the answer is `202` and "
        "`GET /jobs/{id}` shows `progress.step` of `progress.total`.\n\n"
        "```\ncurl -X POST 'localhost:8000/generate/digits?label=3&n=10&frames=true'\n"
        "curl -X POST 'localhost:8000/generate/digits?label=3&sampler=ddpm&wait=0'\n"
        "curl -X POST 'localhost:8000/generate/digits?seed=1' -H 'Accept: image/png' -o digits.png\n```"
    ),
    responses={
        **job_responses(DIGITS_DONE_EXAMPLE, extra_media={"image/png": "the grid PNG, when `Accept: image/png`"}),
        **error_responses(409, 415, 422, 429, 500, 503),
    },
    openapi_extra={"requestBody": json_body_doc(DigitsQuery)},
)
async def generate_digits(
    query: Annotated[DigitsQuery, Depends(parameters(DigitsQuery))],
    jobs: JobsDep,
    workers: WorkersDep,
    settings: SettingsDep,
    representation: RepresentationDep,
    idempotency_key: IdempotencyKeyDep,
    caller: CallerDep,
) -> Response:
    wait = wait_seconds(query.wait, settings)
    labels = [query.label] if query.label is not None else list(range(10))
    if len(labels) * query.n > settings.max_digit_images:
        raise InvalidParameter(
            f"n={query.n} per label x {len(labels)} labels = {len(labels) * query.n} images, above the limit of "
            f"{settings.max_digit_images} (MAX_DIGIT_IMAGES): lower n or pick one label"
        )
    _check_distilled(query)
    model = await workers.require(DIGIT_ROLE)
    # No worker live yet (the job may queue for one): the shipped model's timesteps, as the schema says.
    timesteps = (model.num_train_timesteps if model is not None else None) or NUM_TRAIN_TIMESTEPS
    if (query.steps or 0) > timesteps:
        raise InvalidParameter(
            f"steps={query.steps} is more than the model's {timesteps} diffusion timesteps: use at most {timesteps}"
        )
    if query.sampler == "ddpm" and query.steps is not None and query.steps != timesteps:
        raise InvalidParameter(
            f"sampler=ddpm always runs all {timesteps} of the model's diffusion timesteps, so steps={query.steps} "
            f"cannot apply: drop `steps` (or send steps={timesteps}), or pick a few-step sampler "
            "(unipc, dpmpp-2m, dpmpp-2m-sde, ddim)"
        )
    params = {
        "labels": labels,
        "n": query.n,
        "seed": draw_seed() if query.seed is None else query.seed,
        "sampler": query.sampler,
        "steps": query.steps,
        "guidance": query.guidance,
        "guidance_interval": query.guidance_interval,
        "frames": query.frames,
        "animation": query.animation,
    }
    idempotency = Idempotency.of(idempotency_key, "POST /generate/digits", query.model_dump(exclude={"wait"}))
    record = await jobs.submit(
        JobKind.digits,
        TASK_DIGITS,
        kwargs=params,
        params=params,
        owner=caller,
        idempotency=idempotency,
        webhook=query.webhook,
    )
    state = await jobs.wait_after_submit(record.id, wait)
    return await jobs.response(record, state, representation=representation)


def _check_distilled(query: DigitsQuery) -> None:
    """The distilled student runs the steps it was trained for, with guidance folded into its weights."""
    if query.sampler != DISTILLED:
        return
    if query.steps is not None and query.steps != DISTILLED_STEPS:
        raise InvalidParameter(
            f"sampler={DISTILLED} always runs the {DISTILLED_STEPS} steps its student was trained for, so "
            f"steps={query.steps} cannot apply: drop `steps`, or pick another sampler (unipc, dpmpp-2m, ddim)"
        )
    if query.guidance is not None or query.guidance_interval is not None:
        raise InvalidParameter(
            f"sampler={DISTILLED} has classifier-free guidance folded into its student: drop `guidance` "
            "(and `guidance_from`/`guidance_to`), or pick a guided sampler (unipc, dpmpp-2m, ddim)"
        )
