"""The public view of a job: what ``GET /jobs/{id}`` answers and a webhook delivers.

The pydantic models (they are the OpenAPI docs of a job) and how a job's record
and its Celery state become one. Both the API and the webhook worker
(``workers.webhooks``) build the job from here, so the two cannot drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .digits import FRAME_TIMESTEPS, NUM_TRAIN_TIMESTEPS, SAMPLERS
from .files import FRAMES_STRIP_NAME, GRID_NAME, frame_name
from .roles import DANN_CHECKPOINTS, DIGIT_CHECKPOINT, FACE_CHECKPOINTS, FaceModel, Target

Sampler = Literal[SAMPLERS]  # type: ignore[valid-type]

# The exception type a canceled job ends with (the API reports its status as canceled).
CANCELED_ERROR = "JobCanceled"
_JOB_ID = "9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a"  # the examples' job


def _link(name: str) -> dict[str, str]:
    return {"name": name, "url": f"/jobs/{_JOB_ID}/images/{name}"}


CANCELED_MESSAGE = "the job was canceled (POST /jobs/{id}/cancel) before it finished"


class JobKind(StrEnum):
    faces = "faces"
    digits = "digits"
    classify = "classify"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"
    expired = "expired"  # it succeeded, but its files have been removed from the results store since


class Progress(BaseModel):
    step: int = Field(description="Sampling steps done.", examples=[120])
    total: int = Field(description="Sampling steps in all.", examples=[NUM_TRAIN_TIMESTEPS])


class ImageLink(BaseModel):
    name: str = Field(examples=[GRID_NAME])
    url: str = Field(description="GET it for the PNG.", examples=[f"/jobs/{_JOB_ID}/images/{GRID_NAME}"])


class FrameLink(ImageLink):
    t: int = Field(
        description=f"Diffusion timestep: {NUM_TRAIN_TIMESTEPS} is pure noise, 0 the finished digit.",
        examples=[NUM_TRAIN_TIMESTEPS],
    )


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
    engine: str | None = Field(
        None, description="What ran the network: `torch`, `openvino` or `onnxruntime`.", examples=["openvino"]
    )
    precision: str | None = Field(
        None, description="Its arithmetic: `fp32`, or `bf16` where measured to give the same digits.", examples=["fp32"]
    )
    compute_s: float
    grid: ImageLink
    images: list[ImageLink] = Field(description="One PNG per digit, named `<label>_<index>.png` as in the course.")
    frames: list[FrameLink] = Field(description="Reverse-process frames of the first image (when asked for).")
    frames_strip: ImageLink | None = Field(
        None, description=f"The frames side by side, t = {NUM_TRAIN_TIMESTEPS} on the left."
    )
    animation: ImageLink | None = Field(
        None, description="The animated PNG of the first image's reverse process (when asked for)."
    )


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
        "checkpoint": FACE_CHECKPOINTS["B"],
        "n": 2,
        "seed": 42,
        "device": "cpu",
        "compute_s": 0.05,
        "grid": _link(GRID_NAME),
        "images": [
            _link("face_000.png"),
            _link("face_001.png"),
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
    "progress": {"step": 120, "total": NUM_TRAIN_TIMESTEPS},
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
        "checkpoint": DIGIT_CHECKPOINT,
        "labels": [3],
        "n": 2,
        "seed": 7,
        "sampler": "unipc",
        "steps": 5,
        "guidance": 5.0,
        "guidance_interval": [55, 370],
        "nfe": 9,
        "device": "cpu",
        "engine": "openvino",
        "precision": "fp32",
        "compute_s": 1.9,
        "grid": _link(GRID_NAME),
        "images": [
            _link("3_001.png"),
            _link("3_002.png"),
        ],
        "frames": [
            {"t": t, **_link(frame_name(t))}
            for t in FRAME_TIMESTEPS
        ],
        "frames_strip": _link(FRAMES_STRIP_NAME),
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
        "checkpoint": DANN_CHECKPOINTS["svhn"],
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
    status: JobStatus = Field(description="queued -> running -> succeeded | failed | canceled.")
    url: str = Field(description="Poll it: `GET /jobs/{id}`.")
    created_at: datetime
    params: dict[str, Any] = Field(description="The parameters the job runs with (the seed filled in).")
    progress: Progress | None = Field(None, description="Sampling progress of a running diffusion job.")
    result: JobResult | None = Field(None, description="Present once `status` is `succeeded`.")
    error: str | None = Field(None, description="Why the job failed, when `status` is `failed`.")


def job_url(job_id: str, base_url: str = "") -> str:
    """The job's URL: a path, or absolute under ``base_url`` (``PUBLIC_BASE_URL``)."""
    return f"{base_url}/jobs/{job_id}"


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: JobKind
    task: str
    params: dict[str, Any]
    created_at: datetime
    # Where the finished job is POSTed (workers.webhooks); not in ``params`` (the task's arguments),
    # and not shown by GET /jobs/{id}: a receiver's URL may carry its token.
    webhook: str | None = None
    # The id (``api.access.rate_limits.key_id``, not the key) of the API key that created the job; only
    # that key may read or cancel it. None when the server asks for no keys.
    owner: str | None = None

    def to_json(self) -> str:
        data = {
            "kind": self.kind.value,
            "task": self.task,
            "params": self.params,
            "created_at": self.created_at.isoformat(),
        }
        if self.webhook is not None:
            data["webhook"] = self.webhook
        if self.owner is not None:
            data["owner"] = self.owner
        return json.dumps(data)

    @classmethod
    def from_json(cls, job_id: str, raw: bytes | str) -> JobRecord:
        data = json.loads(raw)
        return cls(
            job_id,
            JobKind(data["kind"]),
            data["task"],
            data["params"],
            datetime.fromisoformat(data["created_at"]),
            data.get("webhook"),
            data.get("owner"),
        )


@dataclass(frozen=True)
class JobState:
    status: JobStatus
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.expired)


def describe_failure(exc: Any) -> tuple[str, str]:
    """A worker-side exception -> (type name, a message that says what to do)."""
    name = type(exc).__name__ if isinstance(exc, BaseException) else "Error"
    if name in ("SoftTimeLimitExceeded", "TimeLimitExceeded"):
        return (
            name,
            "the job ran past the worker's time limit: ask for fewer images or fewer steps "
            "(or raise TASK_SOFT_TIME_LIMIT)",
        )
    if name == "WorkerLostError":
        return name, "the worker process died while running the job (out of memory?): retry with fewer images"
    return name, f"{name}: {exc}"


def state_from_meta(meta: dict[str, Any]) -> JobState:
    status, info = meta.get("status"), meta.get("result")
    if status == "SUCCESS":
        return JobState(JobStatus.succeeded, result=info)
    if status == "PROGRESS" and isinstance(info, dict):
        return JobState(JobStatus.running, progress=Progress(step=int(info["step"]), total=int(info["total"])))
    if status == "STARTED":
        return JobState(JobStatus.running)
    if status == "FAILURE":
        kind, message = describe_failure(info)
        if kind == CANCELED_ERROR:
            return JobState(JobStatus.canceled, error=CANCELED_MESSAGE, error_type=kind)
        return JobState(JobStatus.failed, error=message, error_type=kind)
    if status == "REVOKED":
        return JobState(JobStatus.canceled, error=CANCELED_MESSAGE, error_type="Revoked")
    return JobState(JobStatus.queued)  # PENDING, RECEIVED, RETRY


def public_result(
    job_id: str, kind: JobKind, raw: dict[str, Any], base_url: str = ""
) -> FacesResult | DigitsResult | ClassifyResult:
    """The worker's result (file names) -> the public result (with URLs, absolute under ``base_url`` when given)."""
    url = job_url(job_id, base_url)

    def link(name: str) -> ImageLink:
        return ImageLink(name=name, url=f"{url}/images/{name}")

    if kind is JobKind.faces:
        return FacesResult(
            **{k: raw[k] for k in ("model", "checkpoint", "n", "seed", "device", "compute_s")},
            grid=link(raw["grid"]),
            images=[link(name) for name in raw["images"]],
        )
    if kind is JobKind.digits:
        return DigitsResult(
            **{
                k: raw[k]
                for k in ("checkpoint", "labels", "n", "seed", "sampler", "steps", "guidance", "device", "compute_s")
            },
            guidance_interval=raw.get("guidance_interval"),
            nfe=raw.get("nfe"),
            engine=raw.get("engine"),
            precision=raw.get("precision"),
            grid=link(raw["grid"]),
            images=[link(name) for name in raw["images"]],
            frames=[FrameLink(t=int(t), **link(name).model_dump()) for t, name in raw["frames"].items()],
            frames_strip=link(raw["frames_strip"]) if raw.get("frames_strip") else None,
            animation=link(raw["animation"]) if raw.get("animation") else None,
        )
    return ClassifyResult(
        **{k: raw[k] for k in ("target", "checkpoint", "device", "compute_s", "predictions")},
        csv_url=f"{url}/predictions.csv",
    )


def to_public(record: JobRecord, state: JobState, base_url: str = "") -> JobPublic:
    """The job as clients see it (GET /jobs/{id}, webhooks); URLs are absolute under ``base_url`` when given."""
    return JobPublic(
        id=record.id,
        kind=record.kind,
        status=state.status,
        url=job_url(record.id, base_url),
        created_at=record.created_at,
        params=record.params,
        progress=state.progress,
        result=public_result(record.id, record.kind, state.result, base_url) if state.result is not None else None,
        error=state.error,
    )
