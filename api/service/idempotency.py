"""``Idempotency-Key``: a client that retries a POST (after a timeout, a 503 or a 429) gets the job it
already created instead of a second one.

The key is the client's; the service binds it, per route, to the job the first
request created and to a fingerprint of that request's parameters (``SET NX``
in Redis, with the jobs' TTL). A retry with the same key and parameters gets
that job back; the same key with other parameters is a client bug and a 409
(the IETF httpapi draft "The Idempotency-Key HTTP Header Field" behaves alike).

With API keys, a binding belongs to the API key that made it (``owner``, a key id):
the same Idempotency-Key sent with another API key is another client's and makes
a job of its own, never hands out the first client's job (nor, by a 409, says it exists).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from contract.keys import IDEMPOTENCY_KEY_PREFIX

# What a key may be: visible ASCII (a UUID, a ULID, a hash, a client's own ids), at most 255 characters.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Idempotency:
    key: str
    scope: str  # the route, e.g. "POST /generate/faces": one key may serve different routes independently
    fingerprint: str  # of the request's parameters: what makes a retry "the same request"
    owner: str | None = None  # the API key's id (JobRecord.owner); None without API keys

    @classmethod
    def of(cls, key: str | None, scope: str, request: dict[str, Any]) -> Idempotency | None:
        """None without a key; ``request`` is what the job depends on (not ``wait`` or ``Accept``)."""
        if key is None:
            return None
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        return cls(key, scope, digest(canonical.encode()))

    @property
    def redis_key(self) -> str:
        # Hashed, so any client key makes a short, plain Redis key.
        owner = f"{self.owner}:" if self.owner is not None else ""
        return f"{IDEMPOTENCY_KEY_PREFIX}{owner}{self.scope}:{digest(self.key.encode())}"

    def entry(self, job_id: str) -> str:
        return json.dumps({"job": job_id, "fingerprint": self.fingerprint})
