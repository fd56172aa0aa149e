"""Request and response models. With their descriptions and examples they are the OpenAPI docs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.digits import ANIMATION_MAX_FRAMES, DISTILLED_STEPS, FRAME_TIMESTEPS, NUM_TRAIN_TIMESTEPS
from contract.jobs import Sampler
from contract.queues import QUEUES
from contract.registration import WorkerRegistration
from contract.roles import FACE_CHECKPOINTS, FACE_ROLES, FaceModel, Target

MAX_SEED = 2**32 - 1
_FRAMES = ", ".join(map(str, FRAME_TIMESTEPS))

_WAIT_DESCRIPTION = (
    "Seconds to wait for the result before answering `202 Accepted` with the job's URL. "
    "Absent: the server's default (`DEFAULT_WAIT_S`, 20 s); at most `MAX_WAIT_S` (120 s by default; this "
    "server's value is the schema's `maximum`). `0` never waits."
)
_SEED_DESCRIPTION = (
    "Random seed. The same seed with the same parameters on the same device gives the same images. "
    "Absent: one is drawn and returned in the result, so any job can be reproduced."
)


_WEBHOOK_DESCRIPTION = (
    "A URL to POST the finished job to (as `GET /jobs/{id}` shows it) when it succeeds, fails or is canceled, "
    "signed by the Standard Webhooks convention (`webhook-id`, `webhook-timestamp`, `webhook-signature`). "
    "`http` or `https`, with no spaces or control characters (percent-encode them), and its host must be one of "
    "the server's `WEBHOOK_ALLOWED_HOSTS` (none: webhooks are off and a request with one is refused). Failed "
    "deliveries are retried with exponential back-off."
)


Webhook = Annotated[
    str | None,
    Field(min_length=1, max_length=2048, description=_WEBHOOK_DESCRIPTION, examples=["https://hooks.example/genserve"]),
]


class _Query(BaseModel):
    # Unknown parameters are an error, so a typo (`?lable=3`, `{"lable": 3}`) is not silently ignored.
    model_config = ConfigDict(extra="forbid")


class FacesQuery(_Query):
    n: int = Field(32, ge=1, le=64, description="How many faces (the report's figure has 32).", examples=[32])
    model: FaceModel = Field(
        "B",
        description="`A`: DCGAN without BatchNorm, ReLU in the discriminator. `B`: the standard DCGAN.",
        examples=["B"],
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description=_SEED_DESCRIPTION, examples=[42])
    wait: float | None = Field(None, ge=0, description=_WAIT_DESCRIPTION, examples=[20])
    webhook: Webhook = None


class DigitsQuery(_Query):
    label: int | None = Field(
        None, ge=0, le=9, description="The digit to draw. Absent: every digit 0-9, one grid row each.", examples=[3]
    )
    n: int = Field(
        10,
        ge=1,
        le=100,
        description=(
            "Images per label. labels x n is at most `MAX_DIGIT_IMAGES` (100 by default; the schema's `maximum`): "
            "with a `label`, n up to that; without one (all ten labels), n up to a tenth of it."
        ),
        examples=[10],
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description=_SEED_DESCRIPTION, examples=[7])
    frames: bool = Field(
        False,
        description=(
            f"Also return the reverse-process frames of the first image at t = {_FRAMES}. "
            "`GET /jobs/{id}/events` streams each frame as soon as the worker has drawn it."
        ),
        examples=[True],
    )
    animation: bool = Field(
        False,
        description=(
            "Also return an animated PNG (APNG) of the first image's whole reverse process: every step the "
            f"sampler visits, noise first (at most {ANIMATION_MAX_FRAMES} frames, evenly spread), 4x enlarged."
        ),
        examples=[True],
    )
    sampler: Sampler | None = Field(
        None,
        description=(
            "Absent: the model's recommended few-step configuration (sampler, steps, guidance and its interval, "
            "chosen by measured accuracy and diversity; `GET /models` shows it), at most 10 network evaluations "
            "per image. `unipc` (UniPC) and `dpmpp-2m` (DPM-Solver++ 2M) are multistep solvers that need few steps "
            "(default 10); `dpmpp-2m-sde` is DPM-Solver++'s stochastic variant; `ddim` is the deterministic sampler "
            "of Song et al. (default 25 steps). `distilled` is a student network distilled from the guided "
            f"sampler: {DISTILLED_STEPS} steps, one network evaluation each, guidance folded in (send no `steps` "
            "or `guidance`). "
            f"`ddpm` is the report's full {NUM_TRAIN_TIMESTEPS}-step ancestral sampler: 40 times "
            "the network evaluations of the default, so on a CPU worker expect a `202` and poll."
        ),
        examples=["unipc"],
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=NUM_TRAIN_TIMESTEPS,
        description=(
            "Sampling steps, at most the served model's diffusion timesteps (`num_train_timesteps` in "
            f"`GET /models`: {NUM_TRAIN_TIMESTEPS} for the shipped model). `ddpm` always runs all of them, so with "
            "`ddpm` only that number is accepted. Absent: the recommended configuration's steps for its sampler, "
            "else 10 (25 for `ddim`)."
        ),
        examples=[10],
    )
    guidance: float | None = Field(
        None,
        ge=0,
        le=20,
        description=(
            "Classifier-free guidance scale: 1 is plain conditional sampling, larger follows the label more closely "
            "(and makes the digits more alike). Absent: the recommended configuration's."
        ),
        examples=[3.0],
    )
    guidance_from: int | None = Field(
        None,
        ge=0,
        le=NUM_TRAIN_TIMESTEPS,
        description=(
            "Apply guidance only at timesteps t with `guidance_from <= t <= guidance_to` "
            f"({NUM_TRAIN_TIMESTEPS} is pure noise, 0 the finished digit), the limited interval of Kynkaanniemi et "
            "al. (2024): steps outside it cost one network evaluation instead of two. Give both or neither; "
            "absent: the recommended configuration's interval. "
            f"`guidance_from=0&guidance_to={NUM_TRAIN_TIMESTEPS}` guides every step."
        ),
        examples=[55],
    )
    guidance_to: int | None = Field(
        None,
        ge=0,
        le=NUM_TRAIN_TIMESTEPS,
        description="The end of the guidance interval, at least `guidance_from`: see `guidance_from`.",
        examples=[370],
    )
    wait: float | None = Field(None, ge=0, description=_WAIT_DESCRIPTION, examples=[20])
    webhook: Webhook = None

    @model_validator(mode="after")
    def _consistent(self) -> DigitsQuery:
        if (self.guidance_from is None) != (self.guidance_to is None):
            raise ValueError("give both `guidance_from` and `guidance_to`, or neither")
        if self.guidance_from is not None and self.guidance_to is not None and self.guidance_from > self.guidance_to:
            raise ValueError(
                f"guidance_from={self.guidance_from} is above guidance_to={self.guidance_to}: the interval is empty"
            )
        return self

    @property
    def guidance_interval(self) -> list[int] | None:
        if self.guidance_from is None or self.guidance_to is None:
            return None
        return [self.guidance_from, self.guidance_to]


class ClassifyQuery(_Query):
    target: Target = Field(
        description="The domain the images come from, which picks the adapted model: `svhn` or `usps`.",
        examples=["svhn"],
    )
    wait: float | None = Field(None, ge=0, description=_WAIT_DESCRIPTION, examples=[20])
    webhook: Webhook = None


class JobWaitQuery(_Query):
    wait: float = Field(
        0, ge=0, description="Seconds to wait for the job to finish before answering (long polling).", examples=[0]
    )


class ErrorBody(BaseModel):
    """What went wrong and what to change."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"detail": "query parameter 'n': Input should be less than or equal to 64 (got 100)"}]
        }
    )

    detail: str


class ModelsPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "workers": [
                        {
                            "worker": "gpu-box:4242",
                            "device": "cuda",
                            "queues": list(QUEUES),
                            "started_at": "2024-05-01T12:00:00Z",
                            "heartbeat_at": "2024-05-01T12:05:00Z",
                            "models": [
                                {
                                    "role": FACE_ROLES["B"],
                                    "name": FACE_CHECKPOINTS["B"],
                                    "warm": True,
                                    "kind": "dcgan-generator",
                                    "parameters": 3576704,
                                    "dtype": "float32",
                                    "stored_dtype": "float16",
                                    "device": "cuda",
                                    "metrics": {"face_detection_rate": 0.91},
                                    "hardware": "1x H100",
                                }
                            ],
                            "missing": [],
                        }
                    ]
                }
            ]
        }
    )

    workers: list[WorkerRegistration] = Field(description="Every worker process that reported in the last few seconds.")


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class ReadyCheck(BaseModel):
    name: Literal["redis", "store", "worker", "models"]
    ok: bool
    detail: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "checks": [
                        {"name": "store", "ok": True, "detail": "the s3 bucket 'genserve-results' can be used"},
                        {"name": "redis", "ok": True, "detail": "PING answered"},
                        {"name": "worker", "ok": True, "detail": "1 worker process reporting"},
                        {"name": "models", "ok": True, "detail": "all 5 served models loaded and warmed up"},
                    ],
                }
            ]
        }
    )

    ready: bool
    checks: list[ReadyCheck]
