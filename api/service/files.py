"""A job's files as HTTP responses, from whichever results store the service runs on (``contract.store``).

A file is opened when the request is answered and streamed from the open file in
64 KiB pieces, from a local folder or an S3 object alike: a job that retention
removes meanwhile still sends whole (``FileResponse`` opened its file only once the
response started, and answered 500 for one removed in between). With
``RESULTS_PRESIGN`` the client is redirected to a presigned S3 URL instead and
fetches it from the store itself (the store's endpoint must then be reachable by
the client).
"""

from __future__ import annotations

import numpy as np
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from contract.digits import DIGIT_SIZE
from contract.digits_io import digits_to_bytes
from contract.files import INPUTS_DIR, INPUTS_FILE
from contract.store import ResultNotFound, ResultStore

# Files are written once, under a fresh job id: caches may keep them.
IMMUTABLE = {"Cache-Control": "public, max-age=3600, immutable"}


class ResultFiles:
    def __init__(self, store: ResultStore, *, presign: bool = False, url_ttl_s: int = 300) -> None:
        self.store = store
        self.presign = presign
        self.url_ttl_s = url_ttl_s

    async def response(
        self, job_id: str, name: str, *, media_type: str = "image/png", headers: dict[str, str] | None = None
    ) -> Response | None:
        """The file as a response, or None when the job has no such file (any more)."""
        headers = {**IMMUTABLE, **(headers or {})}
        if self.presign:
            if not await run_in_threadpool(self.store.exists, job_id, name):
                return None
            url = await run_in_threadpool(self.store.presigned_url, job_id, name, self.url_ttl_s)
            # The presigned URL expires: the redirect itself must not be cached for longer.
            headers["Cache-Control"] = f"private, max-age={max(self.url_ttl_s - 30, 0)}"
            return RedirectResponse(url, status_code=307, headers=headers)
        try:
            chunks = await run_in_threadpool(self.store.chunks, job_id, name)
        except ResultNotFound:
            return None
        return StreamingResponse(chunks, media_type=media_type, headers=headers)

    async def exists(self, job_id: str, name: str) -> bool:
        return await run_in_threadpool(self.store.exists, job_id, name)

    async def store_inputs(self, job_id: str, digits: list[np.ndarray]) -> str:
        """Store a classify job's checked digits where its worker reads them; returns the name for the task."""
        stacked = np.stack(digits) if digits else np.empty((0, DIGIT_SIZE, DIGIT_SIZE, 3), np.uint8)
        data = digits_to_bytes(stacked)
        await run_in_threadpool(self.store.put, job_id, f"{INPUTS_DIR}/{INPUTS_FILE}", data, "application/x-npy")
        return INPUTS_FILE
