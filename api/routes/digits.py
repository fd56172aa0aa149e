"""POST /generate/digits: class-conditional diffusion digits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from workers.protocol import DIGIT_ROLE, TASK_DIGITS

from ..deps import JobsDep, RepresentationDep, SettingsDep, WorkersDep, wait_seconds
from ..errors import InvalidParameter
from ..jobs import job_response
from ..schemas import DIGITS_DONE_EXAMPLE, DigitsQuery, JobKind, JobPublic
from .common import draw_seed, error_responses, job_responses

router = APIRouter(prefix="/generate", tags=["generate"])


@router.post(
    "/digits",
    response_model=JobPublic,
    summary="Generate 28x28 digits of a label",
    description=(
        "Samples `n` MNIST-M-style digits of `label` (absent: `n` of every digit, a grid row per label, "
        "the report's 10x10 figure) from the class-conditional diffusion model. `frames=true` adds the "
        "reverse process of the first image at t = 400, 320, 240, 160, 80, 0 (for a few-step sampler, the nearest "
        "step it visits).\n\n"
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
        **error_responses(422, 429, 500, 503),
    },
)
async def generate_digits(
    query: Annotated[DigitsQuery, Query()],
    jobs: JobsDep,
    workers: WorkersDep,
    settings: SettingsDep,
    representation: RepresentationDep,
) -> Response:
    wait = wait_seconds(query.wait, settings)
    labels = [query.label] if query.label is not None else list(range(10))
    if len(labels) * query.n > settings.max_digit_images:
        raise InvalidParameter(
            f"n={query.n} per label x {len(labels)} labels = {len(labels) * query.n} images, above the limit of "
            f"{settings.max_digit_images} (MAX_DIGIT_IMAGES): lower n or pick one label"
        )
    model = await workers.require(DIGIT_ROLE)
    if model is not None and model.num_train_timesteps and (query.steps or 0) > model.num_train_timesteps:
        raise InvalidParameter(
            f"steps={query.steps} is more than the model's {model.num_train_timesteps} diffusion timesteps: "
            f"use at most {model.num_train_timesteps}"
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
    }
    record = await jobs.submit(JobKind.digits, TASK_DIGITS, kwargs=params, params=params)
    state = await jobs.wait(record.id, wait)
    return job_response(record, state, representation=representation, results_dir=settings.results_dir)
