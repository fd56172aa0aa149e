"""Who may call the service: API keys, the origins of web pages, and (with ``api.access.rate_limits``) how often.

- **API keys** (``API_KEYS``): with keys set, every route but ``/healthz`` needs
  one, as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (what
  Prometheus and most HTTP clients send for a token). Job images need it too, so
  a job's pictures are no more public than the job. ``/docs``, ``/redoc``,
  ``/openapi.json`` and their assets (and the playground page) stay open: they
  hold no data, and the docs page is where a person learns which header to send
  and enters the key (its Authorize button). Without keys nothing is asked and
  the schema declares no security, so ``/docs`` shows no locks that mean nothing.
- **Not covered**: DNS rebinding. A page of a name that resolves to 127.0.0.1
  is, to the browser, of the same origin as this service there; only keys stop
  it (or a reverse proxy that checks ``Host``).
- **Origins**: browsers send a "simple" cross-origin POST without asking first
  (CORS only hides the answer from the page), so any web page could make a
  visitor's browser create jobs here. ``OriginGuard`` refuses a state-changing
  request whose ``Origin`` is neither this service's own nor listed in
  ``CORS_ALLOW_ORIGINS``, before its body is read. Requests without ``Origin``
  (curl, SDKs, servers) are not browsers' and pass. ``CORS_ALLOW_ORIGINS`` also
  turns on Starlette's ``CORSMiddleware`` for the listed origins; empty, no CORS
  headers are sent (same-origin only).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from api.access.rate_limits import WRITE_METHODS, RateLimiter, key_id, rate_limit
from api.config import Settings
from api.errors import ForeignOrigin, Unauthenticated, service_error_response

API_KEY_HEADER = "X-API-Key"
HOW_TO_SEND = f"send it in the {API_KEY_HEADER} header (or as Authorization: Bearer <key>)"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="APIKey",
    description="One of the server's `API_KEYS`, as `X-API-Key: <key>`.",
    auto_error=False,
)
bearer = HTTPBearer(
    scheme_name="Bearer",
    description="The same key as `Authorization: Bearer <key>` (e.g. for Prometheus).",
    auto_error=False,
)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_matches(supplied: str, keys: list[str]) -> bool:
    """Constant time: comparing equal-length digests hides how much of a key, and its length, was right."""
    digest = _digest(supplied)
    matched = False
    for key in keys:  # no early exit: the time does not tell which key matched
        matched |= hmac.compare_digest(digest, _digest(key))
    return matched


async def require_api_key(
    request: Request,
    header_key: Annotated[str | None, Security(api_key_header)],
    bearer_key: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> None:
    """Refuses a request without one of ``API_KEYS``; marks who it is for the rate limiter and its jobs' owner.
    A wrong key counts against its address's rate limit (``RateLimiter.count_wrong_key``)."""
    settings: Settings = request.app.state.settings
    supplied = header_key or (bearer_key.credentials if bearer_key else None)
    challenge = {"WWW-Authenticate": 'Bearer realm="api"'}
    if not supplied:
        raise Unauthenticated(
            f"missing API key: this server requires one for every endpoint but /healthz; {HOW_TO_SEND}. "
            "In /docs, enter it with the Authorize button.",
            headers=challenge,
        )
    limiter: RateLimiter | None = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        await limiter.refuse_key_guesser(request)
    if not key_matches(supplied, [key.get_secret_value() for key in settings.api_keys]):
        if limiter is not None:
            await limiter.count_wrong_key(request)
        raise Unauthenticated(
            f"wrong API key: the key sent is not one of this server's API_KEYS; {HOW_TO_SEND} with a valid key",
            headers=challenge,
        )
    request.state.api_key_id = key_id(supplied)


def route_guards(settings: Settings) -> list[Any]:
    """The dependencies of every route but ``/healthz``: the key check (with keys set), then the rate limit
    (which counts per key, so it needs the key checked first; wrong keys the key check counts itself)."""
    guards: list[Any] = [Security(require_api_key)] if settings.api_keys else []
    if settings.rate_limit or settings.rate_limit_reads:
        guards.append(Depends(rate_limit))
    return guards


def guard_error_codes(settings: Settings) -> tuple[int, ...]:
    """The error responses ``route_guards`` adds to every guarded route, for its docs."""
    return (
        *((401,) if settings.api_keys else ()),
        *((429,) if settings.rate_limit or settings.rate_limit_reads else ()),
    )


class OriginGuard:
    """403 for a POST/PUT/PATCH/DELETE from a web page of a foreign origin; nothing of it is read or run."""

    def __init__(self, app: ASGIApp, allow_origins: list[str]) -> None:
        self.app = app
        self.allow_all = "*" in allow_origins
        self.allow_origins = frozenset(allow_origins)

    def allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.lower().rstrip("/")
        if self.allow_all or origin in self.allow_origins:
            return True
        # Its own pages (/docs) post with Origin = this server. The host is compared,
        # not the scheme: behind a TLS proxy the app may see http while the page is https.
        return host is not None and urlsplit(origin).netloc == host.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self.allowed(origin, headers.get("host")):
                refusal = ForeignOrigin(
                    f"cross-origin {scope['method']} from {origin[:200]} refused: this service takes requests that "
                    "create or change jobs only from its own pages and the origins in CORS_ALLOW_ORIGINS; "
                    "nothing was created. Ask its operator to add the origin there if that site should use it "
                    "(clients that send no Origin header, such as curl and SDKs, are not affected)."
                )
                await service_error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI, settings: Settings) -> None:
    """The origin guard, and CORS for ``CORS_ALLOW_ORIGINS`` (outermost, so preflights are answered first)."""
    app.add_middleware(OriginGuard, allow_origins=settings.cors_allow_origins)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[API_KEY_HEADER, "Authorization", "Content-Type", "Accept", "Idempotency-Key"],
            # A page reads where its job is (202 Location) and when to retry (429/503).
            expose_headers=["Location", "Retry-After", "X-Job-Id"],
            max_age=600,
        )
