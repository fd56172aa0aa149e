"""API settings, from environment variables (or a ``.env`` file in the working directory)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Broker and result backend. Unset, `python -m api.launcher` starts a local redis-server.",
    )
    results_dir: Path = Field(REPO / "var" / "results", description="Result images, shared with the workers.")
    checkpoint_dir: Path = Field(REPO / "checkpoints", description="Model cards and weights (read by the workers).")
    host: str = Field("127.0.0.1", description="Where the launcher's uvicorn listens.")
    port: int = Field(8000, ge=1, le=65535, description="The launcher's HTTP port.")
    job_ttl_seconds: int = Field(86_400, ge=60, description="How long jobs, results and their files are kept.")
    default_wait_s: float = Field(20.0, ge=0, description="How long a request waits for its job by default.")
    max_wait_s: float = Field(120.0, ge=0, description="The largest `wait` a request may ask for.")
    max_files: int = Field(256, ge=1, description="Images per classification request.")
    max_file_bytes: int = Field(8 * 2**20, ge=1, description="Bytes per uploaded image.")
    max_body_bytes: int = Field(32 * 2**20, ge=1, description="Bytes per request body.")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="Width x height per uploaded image.")
    max_digit_images: int = Field(100, ge=1, description="Digits per generation request (labels x n).")
    max_queued_small: int = Field(
        1000, ge=1, description="Face and classify jobs waiting in their queue; past it a POST is refused with 429."
    )
    max_queued_diffusion: int = Field(
        100, ge=1, description="Digit jobs waiting in their queue; past it a POST is refused with 429."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_wait_s > self.max_wait_s:
            raise ValueError("DEFAULT_WAIT_S must not exceed MAX_WAIT_S")
        if self.max_file_bytes > self.max_body_bytes:
            raise ValueError("MAX_FILE_BYTES must not exceed MAX_BODY_BYTES")
        return self
