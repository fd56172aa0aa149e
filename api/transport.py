"""A header-read timeout for uvicorn, which has none: ``uvicorn ... --http api.transport:HeaderTimeoutProtocol``.

Uvicorn bounds the size of a request's line and headers (h11's 16 KiB
``h11_max_incomplete_event_size``) and how long an idle keep-alive connection stays
(``timeout_keep_alive``), but not how long a client may take to send them: a client
that connects and sends half a request held its connection (a socket and this
process's state for it) for as long as it liked, and fifty such clients stayed 30 s
and more. An ASGI middleware cannot help, since the app is called only once the
headers are in; hence this protocol, uvicorn's own h11 protocol plus one timer.

The timer starts when a connection opens and when the first bytes of a request
arrive, and stops once that request's headers are complete. When it fires, a client
that sent part of a request gets a ``408`` (JSON, as every error here) and the
connection is closed; one that sent nothing is closed, as uvicorn closes an idle
keep-alive connection. ``HEADER_TIMEOUT_S`` sets it (10 s).

What this does not bound: a body sent slowly (the app reads it as it comes), and the
number of connections. A reverse proxy in front (nginx's ``client_header_timeout``,
``client_body_timeout`` and ``limit_conn``) is the place for those, and for this
timeout too when one is there; uvicorn's ``--limit-concurrency`` answers 503 past a
number of open connections and tasks.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.config import Settings


@functools.cache
def _configured_timeout_s() -> float:
    # Read once per process, when its first connection opens: uvicorn builds the protocol from the import
    # string, with no way to hand it the app's settings.
    return Settings().header_timeout_s


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request line and headers take longer than
    ``header_timeout_s`` to arrive."""

    header_timeout_s: float | None = None  # None: HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm()  # (part of) a request line or headers: they must all arrive in time
        else:
            self._disarm()  # the headers are complete (or refused): the app has it from here

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            timeout_s = self.header_timeout_s if self.header_timeout_s is not None else _configured_timeout_s()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow, timeout_s)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self, timeout_s: float) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial, _ = self.conn.trailing_data
        if partial:
            body = json.dumps(
                {
                    "detail": f"the request line and headers did not arrive within {timeout_s:g} s "
                    "(HEADER_TIMEOUT_S): send the whole request at once"
                }
            ).encode()
            head = (
                "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            # Written as bytes, not through h11: it has seen no request, so it has no response to send.
            self.transport.write(head.encode("ascii") + body)
        self.transport.close()
