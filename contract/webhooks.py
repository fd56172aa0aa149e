"""Which webhook URLs may be called, and how a delivery is signed (Standard Webhooks).

Torch- and Celery-free: the API checks a URL when a job is created, the webhook
worker checks it again (with the addresses its host resolves to) when it delivers.

The rules:

- the scheme is ``http`` or ``https``, the URL has a host and no user:password, and
  no control character or space (Python's URL parser drops a raw CR, LF or tab
  without a word, and the HTTP client then refuses the URL at delivery);
- the host is one of ``WEBHOOK_ALLOWED_HOSTS`` (exact names or IP literals, compared
  case-insensitively; any port). Empty: webhooks are off, and a request that asks
  for one is refused, never silently ignored. An entry is a host alone: one with a
  port or a scheme is refused when the settings are read (``check_allowed_host``),
  as it would match no URL;
- at delivery, every address the host resolves to must be a public one, unless
  that address is itself listed as an IP literal: listing ``127.0.0.1`` or
  ``10.0.0.5`` is the operator saying "yes, call this internal address", while
  a listed name that resolves to one (``localhost``, DNS rebinding, a typo in
  DNS) is not let through to the internal network. The connection then goes to
  the address that was checked, so a second lookup cannot swap it.

Signing: the headers ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, with
the key that ``WEBHOOK_SECRET`` holds as ``whsec_<base64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

SECRET_PREFIX = "whsec_"
MAX_URL_CHARS = 2048
# C0 controls, space, DEL and C1 controls: none belongs in a URL unencoded.
_NOT_IN_URL = re.compile(r"[\x00-\x20\x7f-\x9f]")
# What separates a host from the rest of a URL, or has no place in a host name.
_NOT_IN_HOST = re.compile(r"[\x00-\x20\x7f-\x9f/\\?#@:\[\]]")
_HOST_PORT = re.compile(r"\[?([^\s/@\[\]]+?)\]?:(\d+)")


def check_allowed_host(entry: str) -> str:
    """One ``WEBHOOK_ALLOWED_HOSTS`` entry, stripped; ``ValueError`` saying how to write it when it is not a
    host name or IP address (``127.0.0.1:18950`` would match no URL: hosts are compared without ports)."""
    host = entry.strip()
    bare = host.lower().strip("[]").rstrip(".")
    try:
        ipaddress.ip_address(bare)
        return host
    except ValueError:
        pass
    if not _NOT_IN_HOST.search(bare):
        return host
    with_port = _HOST_PORT.fullmatch(host)
    if with_port:
        raise ValueError(
            f"WEBHOOK_ALLOWED_HOSTS: {entry!r} names a port; list the host alone ({with_port.group(1)}): a listed "
            "host is called on any port"
        )
    try:
        named = urlsplit(host if "://" in host else f"//{host}").hostname
    except ValueError:
        named = None
    hint = f"; list the host alone ({named})" if named and not _NOT_IN_HOST.search(named) else ""
    raise ValueError(f"WEBHOOK_ALLOWED_HOSTS: {entry!r} is not a host name or IP address{hint}")


def normalise_hosts(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(_canonical(host.strip().lower().strip("[]").rstrip(".")) for host in hosts if host.strip())


def check_webhook_url(url: str, allowed_hosts: Iterable[str]) -> str:
    """The URL's host when ``url`` may be called; else ``ValueError`` saying what to change."""
    allowed = normalise_hosts(allowed_hosts)
    if not allowed:
        raise ValueError(
            "webhooks are off on this server: its operator enables them by listing the receivers' hosts in "
            "WEBHOOK_ALLOWED_HOSTS (comma-separated); send the request without `webhook`, or poll GET /jobs/{id}"
        )
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"the URL is longer than {MAX_URL_CHARS} characters")
    bad = _NOT_IN_URL.search(url)
    if bad:
        raise ValueError(
            f"the URL has the character {bad.group()!r} at position {bad.start() + 1}: a URL has no spaces or control "
            f"characters (CR, LF, tab); percent-encode it ({quote(bad.group())}) if it belongs in the path or query"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"{url!r} is not a URL ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL carries a user name or password: put a token in its path or query instead")
    del port  # parsed only to refuse a malformed one
    host = _canonical(parts.hostname.lower().rstrip("."))
    if host not in allowed:
        raise ValueError(
            f"host {host!r} is not one this server calls: WEBHOOK_ALLOWED_HOSTS lists {', '.join(sorted(allowed))}"
        )
    return host


def is_public(address: str) -> bool:
    return ipaddress.ip_address(address).is_global


def resolve_for_delivery(url: str, allowed_hosts: Iterable[str]) -> tuple[str, str, int]:
    """(host, the address to connect to, port) for a delivery; ``ValueError`` when it must not be made."""
    host = check_webhook_url(url, allowed_hosts)
    allowed = normalise_hosts(allowed_hosts)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ValueError(f"host {host!r} does not resolve ({err})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [a for a in addresses if not is_public(a) and _canonical(a) not in allowed]
    if refused:
        raise ValueError(
            f"host {host!r} resolves to the non-public address(es) {', '.join(refused)}; list that address in "
            "WEBHOOK_ALLOWED_HOSTS to allow it"
        )
    return host, addresses[0], port


def _canonical(host: str) -> str:
    """An IP literal in one spelling (``::1`` for ``0:0::1``); a name as it is."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def secret_key(secret: str) -> bytes:
    """``whsec_<base64>`` -> the HMAC key; ``ValueError`` for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(
            f"WEBHOOK_SECRET must start with {SECRET_PREFIX!r} followed by base64 (the Standard Webhooks form)"
        )
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValueError(f"WEBHOOK_SECRET: the part after {SECRET_PREFIX!r} is not base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(
            f"WEBHOOK_SECRET holds a key of {len(key)} bytes; the Standard Webhooks spec asks for 24 to 64, e.g. "
            "python -c 'import base64, os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())'"
        )
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }
