"""The settings the API and the workers share, read from the same environment variables.

Each side subclasses ``ServiceSettings`` and adds only its own fields
(``api.config.Settings``, ``workers.config.WorkerSettings``), so a shared
setting has one name, one default and one description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The checkout the code runs from: the default home of checkpoints/ and var/.
REPO = Path(__file__).resolve().parents[1]


def comma_list(value: Any) -> Any:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: how a list setting is written in an environment variable."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Broker and result backend. Unset, `make run` (`python -m stack`) starts a local redis-server.",
    )
    results_dir: Path = Field(REPO / "var" / "results", description="Result images, shared by the API and the workers.")
    checkpoint_dir: Path = Field(REPO / "checkpoints", description="Model cards and safetensors weights (read by the workers).")
    job_ttl_seconds: int = Field(86_400, ge=60, description="How long jobs, results and their files are kept.")
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts (names or IP addresses, any port) a job's `webhook` may call. Empty: "
        "webhooks are off and a request with one is refused with 422. A receiver on a private or loopback address "
        "is called only when that address is listed as an IP (see docs/service.md).",
    )

    _shared_lists = field_validator("webhook_allowed_hosts", mode="before")(comma_list)
