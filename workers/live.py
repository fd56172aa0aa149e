"""What a running job tells the world while it runs: progress, reverse-process frames, and
whether someone has asked it to stop.

Events go out on the job's Redis channel (``protocol.events_channel``), which the API
turns into Server-Sent Events (``GET /jobs/{id}/events``). Frames are also appended to
a list with the job's TTL, so a client that connects mid-job is first sent the frames
so far; each carries a sequence number, so the API drops the ones it has sent twice.
Progress is not logged: only the newest matters, and the job's Celery state holds it.

Cancelling is a flag in Redis (``protocol.cancel_key``) that the task checks before it
starts (``tasks.JobTask``, in the round trip that counts the run) and at every sampling
step, as Celery's docs advise instead of terminating a running task: the job ends with
``JobCanceled`` and writes nothing more.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import TYPE_CHECKING, Any

import redis

from contract.keys import cancel_key, events_channel, events_log_key

if TYPE_CHECKING:  # imported by the tasks module, which a Celery parent process imports: torch stays in pool children
    import torch


class JobCanceled(RuntimeError):
    """The job was canceled by ``POST /jobs/{id}/cancel`` (the API knows it by ``protocol.CANCELED_ERROR``)."""


CANCELED_BEFORE_START = "the job was canceled (POST /jobs/{id}/cancel) before it started"


def raise_if_canceled(client: redis.Redis, job_id: str) -> None:
    if client.exists(cancel_key(job_id)):
        raise JobCanceled("the job was canceled (POST /jobs/{id}/cancel) before it finished")


def png_data_url(image: torch.Tensor) -> str:
    """(3, H, W) in [0, 1] -> ``data:image/png;base64,...`` (a 28x28 digit is about 1-2 KB)."""
    from .storage import to_pil

    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class JobEvents:
    """The live events of one run of one job."""

    def __init__(self, client: redis.Redis, job_id: str, ttl_s: int) -> None:
        self.client = client
        self.job_id = job_id
        self.ttl_s = ttl_s
        self.channel = events_channel(job_id)
        self.log_key = events_log_key(job_id)
        self.seq = 0
        # A rerun (after its worker died) starts a new story: its frames replace the old ones.
        client.delete(self.log_key)

    def _publish(self, payload: dict[str, Any], *, log: bool) -> None:
        message = json.dumps(payload)
        pipe = self.client.pipeline(transaction=False)
        if log:
            pipe.rpush(self.log_key, message).expire(self.log_key, self.ttl_s)
        pipe.publish(self.channel, message)
        pipe.execute()

    def progress(self, step: int, total: int) -> None:
        """One sampling step done; raises ``JobCanceled`` if the job was canceled meanwhile."""
        raise_if_canceled(self.client, self.job_id)
        self._publish({"event": "progress", "step": step, "total": total}, log=False)

    def frame(self, t: int, image: torch.Tensor) -> None:
        self.seq += 1
        self._publish(
            # drawn_at (unix seconds) lets a client see how long a frame took to reach it
            {
                "event": "frame",
                "seq": self.seq,
                "t": int(t),
                "drawn_at": round(time.time(), 4),
                "image": png_data_url(image),
            },
            log=True,
        )
