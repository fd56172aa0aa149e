"""Request and response models. With their descriptions and examples they are the OpenAPI docs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.protocol import SAMPLERS

FaceModel = Literal["A", "B"]
Sampler = Literal[SAMPLERS]  # type: ignore[valid-type]
Target = Literal["svhn", "usps"]

MAX_SEED = 2**32 - 1
T_STEPS = 400  # the served diffusion model's number of training timesteps

_WAIT_DESCRIPTION = (
    "Seconds to wait for the result before answering `202 Accepted` with the job's URL. "
    "Absent: the server's default (`DEFAULT_WAIT_S`, 20 s); at most `MAX_WAIT_S` (120 s). `0` never waits."
)
_SEED_DESCRIPTION = (
    "Random seed. The same seed with the same parameters on the same device gives the same images. "
    "Absent: one is drawn and returned in the result, so any job can be reproduced."
)


class _Query(BaseModel):
    # Unknown query parameters are an error, so a typo (`?lable=3`) is not silently ignored.
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


class DigitsQuery(_Query):
    label: int | None = Field(
        None, ge=0, le=9, description="The digit to draw. Absent: every digit 0-9, one grid row each.", examples=[3]
    )
    n: int = Field(
        10, ge=1, le=100, description="Images per label (labels x n is at most `MAX_DIGIT_IMAGES`, 100).", examples=[10]
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description=_SEED_DESCRIPTION, examples=[7])
    frames: bool = Field(
        False,
        description="Also return the reverse-process frames of the first image at t = 400, 320, 240, 160, 80, 0.",
        examples=[True],
    )
    sampler: Sampler | None = Field(
        None,
        description=(
            "Absent: the model's recommended few-step configuration (sampler, steps, guidance and its interval, "
            "chosen by measured accuracy and diversity; `GET /models` shows it), at most 10 network evaluations "
            "per image. `unipc` (UniPC) and `dpmpp-2m` (DPM-Solver++ 2M) are multistep solvers that need few steps "
            "(default 10); `dpmpp-2m-sde` is DPM-Solver++'s stochastic variant; `ddim` is the deterministic sampler "
            "of Song et al. (default 25 steps). `ddpm` is the report's full 400-step ancestral sampler: 40 times "
            "the network evaluations of the default, so on a CPU worker expect a `202` and poll."
        ),
        examples=["unipc"],
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=T_STEPS,
        description=(
            "Sampling steps for every sampler but `ddpm` (which always runs all 400). Absent: the recommended "
            "configuration's steps for its sampler, else 10 (25 for `ddim`)."
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
        le=T_STEPS,
        description=(
            "Apply guidance only at timesteps t with `guidance_from <= t <= guidance_to` (400 is pure noise, 0 the "
            "finished digit), the limited interval of Kynkaanniemi et al. (2024): steps outside it cost one network "
            "evaluation instead of two. Give both or neither; absent: the recommended configuration's interval. "
            "`guidance_from=0&guidance_to=400` guides every step."
        ),
        examples=[55],
    )
    guidance_to: int | None = Field(
        None, ge=0, le=T_STEPS, description="The end of the guidance interval: see `guidance_from`.", examples=[370]
    )
    wait: float | None = Field(None, ge=0, description=_WAIT_DESCRIPTION, examples=[20])

    @model_validator(mode="after")
    def _consistent(self) -> DigitsQuery:
        if self.sampler == "ddpm" and self.steps is not None:
            raise ValueError(
                "`steps` does not apply to sampler=ddpm, which always runs all 400 steps: drop `steps`, "
                "or pick a few-step sampler (unipc, dpmpp-2m, dpmpp-2m-sde, ddim)"
            )
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


class JobWaitQuery(_Query):
    wait: float = Field(
        0, ge=0, description="Seconds to wait for the job to finish before answering (long polling).", examples=[0]
    )


class JobKind(StrEnum):
    faces = "faces"
    digits = "digits"
    classify = "classify"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class Progress(BaseModel):
    step: int = Field(description="Sampling steps done.", examples=[120])
    total: int = Field(description="Sampling steps in all.", examples=[400])


class ImageLink(BaseModel):
    name: str = Field(examples=["grid.png"])
    url: str = Field(
        description="GET it for the PNG.", examples=["/jobs/9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a/images/grid.png"]
    )


class FrameLink(ImageLink):
    t: int = Field(description="Diffusion timestep: 400 is pure noise, 0 the finished digit.", examples=[400])


class FacesResult(BaseModel):
    kind: Literal["faces"] = "faces"
    model: FaceModel
    checkpoint: str = Field(description="The checkpoint that drew them.")
    n: int
    seed: int = Field(description="The seed used (drawn when the request gave none).")
    device: str
    compute_s: float = Field(description="Seconds the worker spent in the model.")
    grid: ImageLink = Field(description="All faces, 8 per row.")
    images: list[ImageLink]


class DigitsResult(BaseModel):
    kind: Literal["digits"] = "digits"
    checkpoint: str
    labels: list[int] = Field(description="The labels drawn, one grid row each.")
    n: int = Field(description="Images per label.")
    seed: int
    sampler: Sampler
    steps: int
    guidance: float
    guidance_interval: list[int] | None = Field(
        None, description="The timesteps [from, to] where guidance applied (null: every step)."
    )
    nfe: int | None = Field(None, description="Network evaluations per image: a guided step costs two.")
    device: str
    compute_s: float
    grid: ImageLink
    images: list[ImageLink] = Field(description="One PNG per digit, named `<label>_<index>.png` as in the course.")
    frames: list[FrameLink] = Field(description="Reverse-process frames of the first image (when asked for).")
    frames_strip: ImageLink | None = Field(None, description="The frames side by side, t = 400 on the left.")


class Prediction(BaseModel):
    image_name: str = Field(description="The uploaded file's name.", examples=["00001.png"])
    label: int = Field(ge=0, le=9, examples=[3])
    probabilities: list[float] = Field(min_length=10, max_length=10, description="P(digit = 0..9).")


class ClassifyResult(BaseModel):
    kind: Literal["classify"] = "classify"
    target: Target
    checkpoint: str
    device: str
    compute_s: float
    predictions: list[Prediction] = Field(description="In upload order.")
    csv_url: str = Field(description="The predictions as the course's CSV (`image_name,label`).")


JobResult = Annotated[FacesResult | DigitsResult | ClassifyResult, Field(discriminator="kind")]

_JOB_ID = "9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a"
FACES_DONE_EXAMPLE = {
    "id": _JOB_ID,
    "kind": "faces",
    "status": "succeeded",
    "url": f"/jobs/{_JOB_ID}",
    "created_at": "2024-05-01T12:00:00Z",
    "params": {"n": 2, "model": "B", "seed": 42},
    "progress": None,
    "result": {
        "kind": "faces",
        "model": "B",
        "checkpoint": "dcgan-B",
        "n": 2,
        "seed": 42,
        "device": "cpu",
        "compute_s": 0.05,
        "grid": {"name": "grid.png", "url": f"/jobs/{_JOB_ID}/images/grid.png"},
        "images": [
            {"name": "face_000.png", "url": f"/jobs/{_JOB_ID}/images/face_000.png"},
            {"name": "face_001.png", "url": f"/jobs/{_JOB_ID}/images/face_001.png"},
        ],
    },
    "error": None,
}
JOB_RUNNING_EXAMPLE = {
    "id": _JOB_ID,
    "kind": "digits",
    "status": "running",
    "url": f"/jobs/{_JOB_ID}",
    "created_at": "2024-05-01T12:00:00Z",
    "params": {
        "labels": [3], "n": 10, "seed": 7, "sampler": "ddpm", "steps": None, "guidance": None,
        "guidance_interval": None, "frames": True,
    },
    "progress": {"step": 120, "total": 400},
    "result": None,
    "error": None,
}
DIGITS_DONE_EXAMPLE = {
    **JOB_RUNNING_EXAMPLE,
    "status": "succeeded",
    "progress": None,
    "params": {
        "labels": [3], "n": 2, "seed": 7, "sampler": None, "steps": None, "guidance": None,
        "guidance_interval": None, "frames": True,
    },
    "result": {
        "kind": "digits",
        "checkpoint": "ddpm-digits",
        "labels": [3],
        "n": 2,
        "seed": 7,
        "sampler": "unipc",
        "steps": 5,
        "guidance": 5.0,
        "guidance_interval": [55, 370],
        "nfe": 9,
        "device": "cpu",
        "compute_s": 1.9,
        "grid": {"name": "grid.png", "url": f"/jobs/{_JOB_ID}/images/grid.png"},
        "images": [
            {"name": "3_001.png", "url": f"/jobs/{_JOB_ID}/images/3_001.png"},
            {"name": "3_002.png", "url": f"/jobs/{_JOB_ID}/images/3_002.png"},
        ],
        "frames": [
            {"t": t, "name": f"frame_t{t}.png", "url": f"/jobs/{_JOB_ID}/images/frame_t{t}.png"}
            for t in (400, 320, 240, 160, 80, 0)
        ],
        "frames_strip": {"name": "frames.png", "url": f"/jobs/{_JOB_ID}/images/frames.png"},
    },
}
CLASSIFY_DONE_EXAMPLE = {
    "id": _JOB_ID,
    "kind": "classify",
    "status": "succeeded",
    "url": f"/jobs/{_JOB_ID}",
    "created_at": "2024-05-01T12:00:00Z",
    "params": {"target": "svhn", "files": 1},
    "progress": None,
    "result": {
        "kind": "classify",
        "target": "svhn",
        "checkpoint": "dann-svhn",
        "device": "cpu",
        "compute_s": 0.004,
        "predictions": [
            {
                "image_name": "00001.png",
                "label": 3,
                "probabilities": [0.001, 0.002, 0.01, 0.95, 0.003, 0.02, 0.004, 0.005, 0.003, 0.002],
            }
        ],
        "csv_url": f"/jobs/{_JOB_ID}/predictions.csv",
    },
    "error": None,
}
JOB_QUEUED_EXAMPLE = {**JOB_RUNNING_EXAMPLE, "status": "queued", "progress": None}
JOB_FAILED_EXAMPLE = {
    **JOB_QUEUED_EXAMPLE,
    "status": "failed",
    "error": "the job ran past the worker's time limit: ask for fewer images or fewer steps",
}


class JobPublic(BaseModel):
    """A job: its parameters, where it stands, and its result once done."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [FACES_DONE_EXAMPLE, JOB_RUNNING_EXAMPLE, DIGITS_DONE_EXAMPLE, CLASSIFY_DONE_EXAMPLE]
        }
    )

    id: str = Field(description="32 hex digits.")
    kind: JobKind
    status: JobStatus = Field(description="queued -> running -> succeeded | failed.")
    url: str = Field(description="Poll it: `GET /jobs/{id}`.")
    created_at: datetime
    params: dict[str, Any] = Field(description="The parameters the job runs with (the seed filled in).")
    progress: Progress | None = Field(None, description="Sampling progress of a running diffusion job.")
    result: JobResult | None = Field(None, description="Present once `status` is `succeeded`.")
    error: str | None = Field(None, description="Why the job failed, when `status` is `failed`.")


class ErrorBody(BaseModel):
    """What went wrong and what to change."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"detail": "query parameter 'n': Input should be less than or equal to 64 (got 100)"}]
        }
    )

    detail: str


class ModelInfo(BaseModel):
    role: str = Field(
        description="What the model serves: `faces:A`, `faces:B`, `digits`, `classify:svhn`, `classify:usps`."
    )
    name: str = Field(description="The checkpoint's name.")
    kind: str | None = Field(None, description="The model card's kind.")
    parameters: int | None = None
    dtype: str = Field(description="The dtype it runs in.")
    stored_dtype: str | None = Field(None, description="The dtype its weights are stored in.")
    device: str
    metrics: dict[str, Any] = Field(default_factory=dict, description="From the model card.")
    hardware: Any = Field(None, description="What it was trained on, from the model card.")
    num_train_timesteps: int | None = None
    guidance_scale: float | None = Field(None, description="Default classifier-free guidance (diffusion only).")
    sampling: dict[str, Any] | None = Field(
        None,
        description="The recommended sampling configuration that a digits request gets by default (diffusion only).",
        examples=[{"sampler": "unipc", "steps": 5, "guidance_scale": 5.0, "guidance_interval": [55, 370]}],
    )


class MissingModel(BaseModel):
    role: str
    name: str = Field(description="The checkpoint's name.")
    reason: str = Field(description="Why it is not loaded.")


class WorkerPublic(BaseModel):
    worker: str = Field(description="hostname:pid of the worker process.")
    device: str | None
    checkpoint_dir: str
    queues: list[str] = Field(
        default_factory=list, description="The job queues it consumes: `small` (faces, classify), `diffusion` (digits)."
    )
    started_at: datetime
    heartbeat_at: datetime
    models: list[ModelInfo]
    missing: list[MissingModel] = Field(description="Checkpoints this worker could not load, and why.")


class ModelsPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "workers": [
                        {
                            "worker": "gpu-box:4242",
                            "device": "cuda",
                            "checkpoint_dir": "/app/checkpoints",
                            "queues": ["small", "diffusion"],
                            "started_at": "2024-05-01T12:00:00Z",
                            "heartbeat_at": "2024-05-01T12:05:00Z",
                            "models": [
                                {
                                    "role": "faces:B",
                                    "name": "dcgan-B",
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

    workers: list[WorkerPublic] = Field(description="Every worker process that reported in the last few seconds.")


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class ReadyCheck(BaseModel):
    name: Literal["redis", "worker", "models"]
    ok: bool
    detail: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "checks": [
                        {"name": "redis", "ok": True, "detail": "PING answered"},
                        {"name": "worker", "ok": True, "detail": "1 worker process reporting"},
                        {"name": "models", "ok": True, "detail": "all 5 served models loaded"},
                    ],
                }
            ]
        }
    )

    ready: bool
    checks: list[ReadyCheck]
