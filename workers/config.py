"""Worker settings: the shared ones (``contract.settings``) and what only a worker reads."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from contract.queues import QUEUES, parse_queues
from contract.settings import REPO, ServiceSettings
from contract.webhooks import secret_key


class WorkerSettings(ServiceSettings):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per worker process.")
    digit_engine: Literal["auto", "torch", "openvino", "onnxruntime"] = Field(
        "auto",
        description="What runs the diffusion UNet on a CPU worker: auto = the fastest of those installed, timed at "
        "start; a runtime that fails to load falls back to torch. A GPU worker always runs torch.",
    )
    digit_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="The UNet's arithmetic on a CPU worker. bf16 only where the CPU has bf16 instructions and the "
        "model card records an accepted bf16 measurement (python -m training.evaluate digits-engines); else fp32.",
    )
    engine_cache_dir: Path = Field(
        REPO / "var" / "cache" / "onnx", description="Where the UNet's ONNX export is kept between worker starts."
    )
    task_soft_time_limit: int = Field(900, ge=1, description="Seconds before a job is asked to stop.")
    task_time_limit: int = Field(960, ge=1, description="Seconds before a job's process is killed.")
    max_deliveries: int = Field(
        3, ge=1, description="Runs of a job before a job whose worker process keeps dying is failed for good."
    )
    heartbeat_seconds: float = Field(10.0, gt=0, description="How often a worker re-registers its models.")
    shutdown_grace_s: float = Field(
        15.0,
        ge=0,
        description=(
            "On SIGTERM the diffusion worker lets its running job finish for up to this long, then puts it back "
            "on its queue at once (Celery's soft shutdown); 0 puts it back without waiting."
        ),
    )
    exit_with_parent: bool = Field(
        False,
        description="Exit SHUTDOWN_GRACE_S + 5 s after the process that started the worker is gone, whatever the "
        "shutdown is waiting for (a dead Redis); `make run` sets it, a worker under a service manager needs not.",
    )
    worker_queues: str = Field(
        ",".join(QUEUES),
        description="Comma-separated queues a worker consumes when started without -Q; it loads only their models.",
    )
    micro_batch: bool = Field(True, description="Let concurrent face / classify jobs share one forward pass.")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="Longest a job waits for others to join its batch.")
    batch_wait_always: bool = Field(
        False, description="Wait BATCH_WAIT_MS even when no other job is on its way: larger batches, slower when idle."
    )
    batch_max_faces: int = Field(64, ge=1, description="Faces per batched forward pass of a DCGAN.")
    batch_max_classify: int = Field(256, ge=1, description="Images per batched forward pass of a DANN.")
    webhook_secret: SecretStr | None = Field(
        None,
        description="The Standard Webhooks signing secret, `whsec_` and base64 of 24-64 random bytes. Unset: "
        "deliveries fail (and say so in the webhook worker's log) rather than go out unsigned.",
    )
    webhook_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Seconds one webhook delivery attempt may take in all (connect, send, the receiver's status "
        "line and headers); a receiver still answering then is cut off and the attempt retried.",
    )
    webhook_max_attempts: int = Field(
        6, ge=1, description="Deliveries of one webhook before it is given up (retried with exponential back-off)."
    )
    webhook_backoff_s: int = Field(
        2, ge=1, description="First retry delay of a webhook; it doubles per attempt (with jitter), up to 10 minutes."
    )

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_key(value.get_secret_value())  # raises with what to write
        return value

    @model_validator(mode="after")
    def _hard_after_soft(self) -> WorkerSettings:
        if self.task_time_limit <= self.task_soft_time_limit:
            raise ValueError("TASK_TIME_LIMIT must be larger than TASK_SOFT_TIME_LIMIT, so cleanup can run")
        parse_queues(self.worker_queues)
        return self

    @property
    def queues(self) -> tuple[str, ...]:
        return parse_queues(self.worker_queues)


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
