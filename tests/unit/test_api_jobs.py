"""Celery states -> public job states and results, without Celery or Redis."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api.service.job_service import predictions_csv
from contract.jobs import JobKind, JobRecord, JobStatus, describe_failure, state_from_meta, to_public

JOB = "a" * 32


class SoftTimeLimitExceeded(Exception):
    pass


class JobCanceled(Exception):  # the worker's exception arrives by name (contract.jobs.CANCELED_ERROR)
    pass


@pytest.mark.parametrize(
    "meta, status",
    [
        ({"status": "PENDING", "result": None}, JobStatus.queued),
        ({"status": "RETRY", "result": None}, JobStatus.queued),
        ({"status": "STARTED", "result": {"pid": 1}}, JobStatus.running),
        ({"status": "PROGRESS", "result": {"step": 3, "total": 25}}, JobStatus.running),
        ({"status": "SUCCESS", "result": {"kind": "faces"}}, JobStatus.succeeded),
        ({"status": "FAILURE", "result": ValueError("boom")}, JobStatus.failed),
        ({"status": "REVOKED", "result": None}, JobStatus.canceled),
        ({"status": "FAILURE", "result": JobCanceled("stop")}, JobStatus.canceled),
    ],
)
def test_celery_states_map_to_five_public_ones(meta: dict, status: JobStatus) -> None:
    assert state_from_meta(meta).status is status


def test_progress_is_carried() -> None:
    state = state_from_meta({"status": "PROGRESS", "result": {"step": 3, "total": 25}})
    assert state.progress is not None and (state.progress.step, state.progress.total) == (3, 25)


def test_failures_say_what_to_do() -> None:
    kind, message = describe_failure(SoftTimeLimitExceeded())
    assert kind == "SoftTimeLimitExceeded" and "fewer" in message
    assert describe_failure(ValueError("ddim needs 1 <= steps <= 40"))[1] == "ValueError: ddim needs 1 <= steps <= 40"


def test_worker_results_get_urls() -> None:
    record = JobRecord(JOB, JobKind.digits, "t", {"labels": [3]}, datetime(2024, 1, 1, tzinfo=UTC))
    raw = {
        "kind": "digits", "checkpoint": "ddpm-digits", "labels": [3], "n": 1, "seed": 1, "sampler": "ddim", "steps": 2,
        "guidance": 1.0, "device": "cpu", "compute_s": 0.1, "images": ["3_001.png"], "grid": "grid.png",
        "frames": {"400": "frame_t400.png", "0": "frame_t0.png"}, "frames_strip": "frames.png",
    }  # fmt: skip
    public = to_public(record, state_from_meta({"status": "SUCCESS", "result": raw}))
    assert public.url == f"/jobs/{JOB}"
    assert public.result is not None and public.result.kind == "digits"
    assert public.result.images[0].url == f"/jobs/{JOB}/images/3_001.png"
    assert [(f.t, f.url) for f in public.result.frames] == [
        (400, f"/jobs/{JOB}/images/frame_t400.png"),
        (0, f"/jobs/{JOB}/images/frame_t0.png"),
    ]


def test_predictions_csv_is_the_course_format() -> None:
    result = {"predictions": [{"image_name": "a.png", "label": 3}, {"image_name": "b,c.png", "label": 0}]}
    assert predictions_csv(result) == 'image_name,label\na.png,3\n"b,c.png",0\n'


def test_predictions_csv_never_hands_a_spreadsheet_a_formula() -> None:
    names = ["=HYPERLINK(1)", "+1.png", "-2.png", "@SUM(A1)", "\tx.png", "ok-=.png"]
    result = {"predictions": [{"image_name": name, "label": 1} for name in names]}
    rows = predictions_csv(result).splitlines()[1:]
    assert [row.rsplit(",", 1)[0].strip('"') for row in rows] == [
        "'=HYPERLINK(1)", "'+1.png", "'-2.png", "'@SUM(A1)", "'\tx.png", "ok-=.png"
    ]


def test_a_finished_job_whose_files_were_removed_reads_expired_and_its_image_is_a_410(tmp_path: Path) -> None:
    """An idempotent replay with ``Accept: image/png`` after retention removed the job's files (it was a 500)."""
    from redis.asyncio import Redis

    from api.errors import ResultsExpired
    from api.service.files import ResultFiles
    from api.service.job_service import JobService
    from contract.broker import api_celery
    from contract.store import LocalStore

    raw = {"model": "B", "checkpoint": "x", "n": 1, "seed": 1, "device": "cpu", "compute_s": 0.1,
           "grid": "grid.png", "images": ["grid.png"]}  # fmt: skip
    record = JobRecord(JOB, JobKind.faces, "task", {"n": 1}, datetime.now(UTC))
    state = state_from_meta({"status": "SUCCESS", "result": raw})
    store = LocalStore(tmp_path)
    down = "redis://127.0.0.1:1/0"  # the response side never reads Redis
    files = ResultFiles(store)
    jobs = JobService(api_celery(down, 60), Redis.from_url(down), 60, files=files, base_url="https://genserve.example")
    store.put(JOB, "grid.png", b"\x89PNG")
    found = asyncio.run(jobs.response(record, state, representation="png"))
    assert found.status_code == 200 and found.headers["content-location"].startswith("https://genserve.example/jobs/")
    streamed = asyncio.run(jobs.response(record, state, representation="png"))
    store.delete_job(JOB)  # removed once the answer has started: it is sent whole from the open file
    assert asyncio.run(_body(streamed)) == b"\x89PNG"
    with pytest.raises(ResultsExpired, match="removed from the results store") as refused:
        asyncio.run(jobs.response(record, state, representation="png"))
    assert refused.value.status_code == 410
    answer = asyncio.run(jobs.response(record, state))  # the JSON answers, saying so, with no dead URLs
    body = json.loads(answer.body)
    assert answer.status_code == 200 and body["status"] == "expired" and body["result"] is None
    assert "send the request again" in body["error"]


async def _body(response: Any) -> bytes:
    return b"".join([chunk async for chunk in response.body_iterator])


def test_a_redis_error_after_the_job_was_created_answers_it_as_queued(tmp_path: Path) -> None:
    """Past creation a 503 would tell the client its job was not made (a retry made a duplicate): a 202 instead."""
    from redis.asyncio import Redis

    from api.service.files import ResultFiles
    from api.service.job_service import JobService
    from contract.broker import api_celery
    from contract.store import LocalStore

    down = "redis://127.0.0.1:1/0"
    jobs = JobService(api_celery(down, 60), Redis.from_url(down), 60, files=ResultFiles(LocalStore(tmp_path)))
    record = JobRecord(JOB, JobKind.faces, "task", {"n": 1}, datetime.now(UTC))
    state = asyncio.run(asyncio.wait_for(jobs.wait_after_submit(JOB, 5), 30))
    assert state.status is JobStatus.queued
    answer = asyncio.run(jobs.response(record, state))
    assert answer.status_code == 202 and answer.headers["location"] == f"/jobs/{JOB}"
