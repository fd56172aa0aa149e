"""The settings the API and the workers share, read from the same environment variables.

Each side subclasses ``ServiceSettings`` and adds only its own fields
(``api.config.Settings``, ``workers.config.WorkerSettings``), so a shared
setting has one name, one default and one description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .webhooks import check_allowed_host

# The checkout the code runs from, the default home of checkpoints/ and var/; installed as a package
# (an image, `pip install '.[api]'`), the working directory, never site-packages.
_CHECKOUT = Path(__file__).resolve().parents[1]
REPO = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()


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
    results_store: Literal["local", "s3"] = Field(
        "local",
        description="Where job files go: `local`, the folder RESULTS_DIR, which the API and every worker must share "
        "(one machine); `s3`, a bucket on an S3-compatible server (S3_*), which any machine can reach.",
    )
    results_dir: Path = Field(
        REPO / "var" / "results",
        description="The results folder when RESULTS_STORE=local (shared by the API and the workers).",
    )
    results_max_bytes: int = Field(
        2 * 2**30,
        ge=1,
        description="Bytes the jobs in the results store may hold together. Each worker, as it writes a job, removes "
        "the oldest jobs that have results past it; the API's sweep (RESULTS_SWEEP_SECONDS) is the backstop.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="The S3-compatible server (`http://minio:9000`); unset: AWS S3 of S3_REGION."
    )
    s3_bucket: str = Field("genserve-results", description="The bucket that holds job files (RESULTS_STORE=s3).")
    s3_region: str = Field("us-east-1", description="The bucket's region.")
    s3_prefix: str = Field("", description="A key prefix for this service's objects (`genserve/`), to share a bucket.")
    s3_access_key_id: str | None = Field(None, description="Unset: boto3's own credential chain (environment, role).")
    s3_secret_access_key: SecretStr | None = Field(None, description="The secret of S3_ACCESS_KEY_ID.")
    public_base_url: str = Field(
        "",
        description="The service's address as clients reach it (`https://genserve.example`): job JSON and webhook "
        "payloads then carry absolute URLs. Empty: URLs are paths (`/jobs/...`).",
    )
    checkpoint_dir: Path = Field(
        REPO / "checkpoints", description="Model cards and safetensors weights (read by the workers)."
    )
    job_ttl_seconds: int = Field(86_400, ge=60, description="How long jobs, results and their files are kept.")
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts (names or IP addresses, without a port: any port) a job's `webhook` may "
        "call. Empty: "
        "webhooks are off and a request with one is refused with 422. A receiver on a private or loopback address "
        "is called only when that address is listed as an IP (see docs/service.md).",
    )

    _shared_lists = field_validator("webhook_allowed_hosts", mode="before")(comma_list)

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        return [check_allowed_host(host) for host in hosts]

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"PUBLIC_BASE_URL={value!r}: write scheme://host[:port][/path], e.g. https://genserve.example"
            )
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value.strip("/") + "/" if value.strip("/") else ""
