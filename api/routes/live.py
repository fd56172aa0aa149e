"""GET /jobs/{id}/events (live progress and frames, as Server-Sent Events) and POST /jobs/{id}/cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import EventStreamsDep, JobsDep
from api.parsing.query_rules import strict_query
from api.routes.common import error_responses
from api.routes.jobs import JobDep
from contract.jobs import JOB_RUNNING_EXAMPLE, JobPublic

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(strict_query)])

CANCEL_WAIT_S = 5.0  # a running diffusion job stops at its next step: seconds even for DDPM on a CPU

EVENTS_EXAMPLE = (
    'event: status\ndata: {"id": "9f1c...", "status": "running", "progress": {"step": 1, "total": 5}, ...}\n\n'
    'event: frame\nid: 1\ndata: {"t": 400, "image": "data:image/png;base64,iVBORw0KGgo..."}\n\n'
    'event: progress\ndata: {"step": 2, "total": 5}\n\n'
    'event: done\ndata: {"id": "9f1c...", "status": "succeeded", "result": {...}}\n\n'
)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    summary="Follow a job live (Server-Sent Events)",
    description=(
        "A `text/event-stream` of the job's life, ending when the job does:\n\n"
        "- `status`: the job as `GET /jobs/{id}` shows it; first, then at every change of status;\n"
        "- `frame`: `{\"t\", \"drawn_at\", \"image\"}` for a digits job with `frames=true`: each reverse-process "
        "frame (a PNG data URL of the first digit at paper timestep `t`), as soon as the worker has drawn it "
        "(at `drawn_at`, unix seconds). "
        "Connected late, a client is first sent the frames so far;\n"
        "- `progress`: `{\"step\", \"total\"}` after every sampling step of a digits job;\n"
        "- `done`: the finished job (`succeeded`, `failed` or `canceled`, with its result); then the stream ends.\n\n"
        "Comments (`: ping`) keep an idle connection open. Browsers can read it with `EventSource`; with an "
        "API key, read it with `fetch` (EventSource cannot send headers).\n\n"
        "```\ncurl -N localhost:8000/jobs/9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a/events\n```"
    ),
    responses={
        200: {
            # The stream read as the list of its events (OpenAPI 3.2 will say it per event, with `itemSchema`).
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "event": {"type": "string", "enum": ["status", "frame", "progress", "done"]},
                                "data": {"type": "string", "description": "The event's JSON."},
                            },
                            "required": ["event", "data"],
                        },
                    },
                    "example": EVENTS_EXAMPLE,
                }
            },
            "description": "The event stream.",
        },
        **error_responses(404, 422, 503),
    },
)
async def job_events(
    record: JobDep,
    streams: EventStreamsDep,
) -> AsyncIterator[ServerSentEvent]:
    async for event in streams.stream(record):
        yield event


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a job",
    description=(
        "A queued job never runs; a running digits job stops at its next sampling step (its worker checks between "
        "steps, so nothing is killed) and writes no result. The answer is the job: `200` once it is `canceled`, "
        "`202` if it is still stopping after a few seconds (follow `Location`). A job that has already finished "
        "cannot be canceled: `409`.\n\n"
        "```\ncurl -X POST localhost:8000/jobs/9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a/cancel\n```"
    ),
    responses={
        202: {
            "model": JobPublic,
            "description": "Asked to stop, still running: poll the URL in `Location`.",
            "content": {"application/json": {"example": JOB_RUNNING_EXAMPLE}},
        },
        **error_responses(404, 409, 422, 503),
    },
)
async def cancel_job(record: JobDep, jobs: JobsDep) -> JSONResponse:
    await jobs.cancel(record, await jobs.state(record.id))
    state = await jobs.wait(record.id, CANCEL_WAIT_S)
    public = jobs.public(record, state)
    if state.finished:
        return JSONResponse(public.model_dump(mode="json"))
    return JSONResponse(public.model_dump(mode="json"), status_code=202, headers={"Location": public.url})
