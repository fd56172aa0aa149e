"""API settings: the shared ones (``contract.settings``) and what only the API reads, from environment
variables (or a ``.env`` file in the working directory)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from contract.settings import ServiceSettings, comma_list

# Shorter keys can be guessed online; secrets.token_urlsafe(32) makes 43 characters.
MIN_API_KEY_CHARS = 16


class Settings(ServiceSettings):
    host: str = Field("127.0.0.1", description="Where the launcher's uvicorn listens.")
    port: int = Field(8000, ge=1, le=65535, description="The launcher's HTTP port.")
    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes the launcher starts on PORT (uvicorn --workers): jobs, live events, cancels, "
        "idempotency and rate limits live in Redis, so any process serves any request.",
    )
    results_sweep_seconds: float = Field(
        60.0, gt=0, description="How often the API removes expired job folders and enforces RESULTS_MAX_BYTES."
    )
    redis_max_connections: int = Field(
        256,
        ge=4,
        description="Redis connections per API process; past them a request waits (REDIS_POOL_WAIT_S) for one.",
    )
    redis_pool_wait_s: float = Field(
        10.0,
        gt=0,
        description="How long a request waits for a free Redis connection before a 503 'busy' with Retry-After.",
    )
    default_wait_s: float = Field(20.0, ge=0, description="How long a request waits for its job by default.")
    max_wait_s: float = Field(120.0, ge=0, description="The largest `wait` a request may ask for.")
    max_files: int = Field(256, ge=1, description="Images per classification request.")
    max_file_bytes: int = Field(8 * 2**20, ge=1, description="Bytes per uploaded image.")
    max_body_bytes: int = Field(32 * 2**20, ge=1, description="Bytes per request body.")
    max_json_bytes: int = Field(
        64 * 2**10,
        ge=1024,
        description="Bytes per JSON request body (a job's parameters); a larger one is refused with 413 unread.",
    )
    max_json_depth: int = Field(
        32,
        ge=2,
        le=500,
        description="Nesting levels of arrays and objects in a JSON body; a deeper one is refused with 422 before "
        "it is parsed (no parameter nests at all).",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers once it starts one (or once it "
        "connects); past it the API answers 408 and closes the connection. Needs uvicorn's `--http "
        "api.transport:HeaderTimeoutProtocol`, which `make run` and the images pass.",
    )
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="Width x height per uploaded image.")
    max_digit_images: int = Field(100, ge=1, description="Digits per generation request (labels x n).")
    max_queued_small: int = Field(
        1000, ge=1, description="Face and classify jobs waiting in their queue; past it a POST is refused with 429."
    )
    max_queued_diffusion: int = Field(
        100, ge=1, description="Digit jobs waiting in their queue; past it a POST is refused with 429."
    )

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys, one of which every request but `/healthz` and the docs must send "
        "(`X-API-Key: <key>` or `Authorization: Bearer <key>`). Empty: no key is asked for, which is only safe "
        "on localhost.",
    )
    rate_limit: str = Field(
        "60/minute",
        description="Per client (its API key; its IP address without keys): how many POSTs (new jobs, cancels), in the "
        "`limits` notation (`60/minute`, `10/second;500/hour`); `off` for none. Counted in Redis.",
    )
    rate_limit_reads: str = Field(
        "1200/minute",
        description="The same for GETs (job polls, images, /models, /readyz, /metrics); `off` for none.",
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins (`https://app.example`) whose web pages may call the API, or `*`. "
        "Empty: same-origin only; a POST from any other page is refused with 403.",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Comma-separated addresses or networks (`10.0.0.5`, `172.16.0.0/12`) of the reverse proxies "
        "whose `X-Forwarded-For` and `X-Forwarded-Proto` the API believes, or `*`: a request from one of them counts "
        "(rate limits, logs) as from the client the proxy names. Empty (the default): no one's, not even "
        "127.0.0.1's, so a client cannot pick a new address per request to escape its rate limit. Passed to "
        "uvicorn by `make run` and the Docker files (uvicorn itself would trust 127.0.0.1).",
    )

    results_presign: bool = Field(
        False,
        description="With RESULTS_STORE=s3: answer an image GET with a redirect to a presigned URL of the store "
        "(the client fetches it from the store, whose endpoint it must reach), instead of streaming it through "
        "the API.",
    )
    results_url_ttl_s: int = Field(300, ge=1, le=7 * 86_400, description="How long a presigned image URL is valid.")

    _api_lists = field_validator("api_keys", "cors_allow_origins", mode="before")(comma_list)

    @field_validator("api_keys")
    @classmethod
    def _long_enough(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            if len(key.get_secret_value()) < MIN_API_KEY_CHARS:
                raise ValueError(
                    f"API_KEYS: a key of {len(key.get_secret_value())} characters is guessable; use "
                    f"{MIN_API_KEY_CHARS} or more, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return keys

    @field_validator("rate_limit", "rate_limit_reads")
    @classmethod
    def _rate(cls, value: str, info: Any) -> str:
        value = value.strip()
        if value.lower() in ("", "off", "none"):
            return ""
        try:
            parse_many(value)
        except ValueError as err:
            raise ValueError(
                f"{info.field_name.upper()}={value!r} is not a rate limit: write e.g. 60/minute or "
                f"10/second;500/hour, or off ({err})"
            ) from None
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            try:
                if entry != "*":
                    ipaddress.ip_network(entry, strict=False)
            except ValueError:
                # uvicorn would take it as a literal host name that never matches: a silent no-op.
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or network: write e.g. 10.0.0.5, "
                    "172.16.0.0/12 or *"
                ) from None
        return ",".join(entries)

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        cleaned = []
        for origin in origins:
            origin = origin.rstrip("/").lower()
            parts = urlsplit(origin)
            if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path):
                raise ValueError(
                    f"CORS_ALLOW_ORIGINS: {origin!r} is not an origin: write scheme://host[:port] "
                    "(e.g. https://app.example, no path), or *"
                )
            cleaned.append(origin)
        return cleaned

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_wait_s > self.max_wait_s:
            raise ValueError("DEFAULT_WAIT_S must not exceed MAX_WAIT_S")
        if self.max_file_bytes > self.max_body_bytes:
            raise ValueError("MAX_FILE_BYTES must not exceed MAX_BODY_BYTES")
        return self
