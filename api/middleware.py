"""Request-body limits that answer with a JSON message saying what to do, before any parser runs.

Uvicorn has no body limit and the Starlette versions we support either lack one
or answer in plain text, hence these small ASGI middlewares:

- ``BodySizeLimit``: a declared Content-Length over the limit is refused (413)
  before reading; a chunked body is counted as it streams and cut off at the limit;
- ``JsonBodyLimit``: a JSON body gets a much smaller size limit, and its nesting is
  counted on the raw bytes before ``json.loads`` or pydantic sees it, since both
  recurse per level (a body of 100,000 ``[`` raised ``RecursionError``, a 500).
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import InvalidParameter, ServiceError, TooLarge, service_error_response


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> bytes:
        detail = (
            f"request body is larger than {self.max_bytes:,} bytes (MAX_BODY_BYTES): "
            "send fewer or smaller images per request"
        )
        return json.dumps({"detail": detail}).encode()

    async def _reject(self, send: Send) -> None:
        body = self._message()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the app made of the cut-off body, the answer is 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)


# A JSON string (escapes included), so that brackets inside strings are not counted as nesting.
# Possessive quantifiers: no backtracking, so a long or unterminated string costs one linear pass.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether arrays and objects in ``body`` nest more than ``limit`` levels deep.

    A scan, not a parse: on malformed JSON it may answer either way, and the parser
    that runs after it refuses the body anyway.
    """
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class JsonBodyLimit:
    """Reads a JSON body whole (at most ``max_bytes``), checks its depth, then hands the app the same bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def _too_large(self) -> TooLarge:
        return TooLarge(
            f"the JSON body is larger than {self.max_bytes:,} bytes (MAX_JSON_BYTES): send only the parameters, "
            'e.g. {"n": 8, "seed": 7}',
            headers={"Connection": "close"},  # the rest of the body is never read
        )

    async def _answer(self, error: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
        await service_error_response(error)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.strip().isdigit() and int(value) > self.max_bytes:
                await self._answer(self._too_large(), scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._answer(self._too_large(), scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth_exceeds(body, self.max_depth):
            error = InvalidParameter(
                f"invalid request: JSON body: arrays and objects nest more than {self.max_depth} levels deep "
                '(MAX_JSON_DEPTH): send a flat JSON object of parameters, e.g. {"n": 8, "seed": 7}'
            )
            await self._answer(error, scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only the client's disconnect is left to hear

        await self.app(scope, replay, send)
