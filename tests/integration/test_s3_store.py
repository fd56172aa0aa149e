"""The S3 results store against a real S3-protocol server on 127.0.0.1 (moto's server mode): the client code,
the protocol and the retention rules, as the API and the workers use them on many machines."""

from __future__ import annotations

import time

import httpx
import pytest

from api.operations.retention import ResultsJanitor, prune_expired, trim_to_quota
from contract.settings import ServiceSettings
from contract.store import ResultNotFound, S3Store, make_store
from tests.conftest import S3_CREDENTIALS

pytestmark = pytest.mark.integration

JOB_A, JOB_B, JOB_C = "a" * 32, "b" * 32, "c" * 32


def _store(endpoint: str, bucket: str, **overrides: str) -> S3Store:
    settings = ServiceSettings(
        _env_file=None,
        results_store="s3",
        s3_endpoint_url=endpoint,
        s3_bucket=bucket,
        **{key.lower(): value for key, value in S3_CREDENTIALS.items()},
        **overrides,
    )
    store = make_store(settings)
    assert isinstance(store, S3Store)
    return store


def test_files_round_trip_and_a_missing_one_is_not_found(s3_endpoint: str, s3_bucket: str) -> None:
    store = _store(s3_endpoint, s3_bucket)
    store.check()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 600  # more than one 64 KiB piece
    store.put(JOB_A, "grid.png", png)
    store.put(JOB_A, "inputs/digits.npy", b"npy", "application/x-npy")
    assert store.get(JOB_A, "grid.png") == png
    assert len(list(store.chunks(JOB_A, "grid.png"))) > 1
    assert store.exists(JOB_A, "inputs/digits.npy") and not store.exists(JOB_A, "other.png")
    with pytest.raises(ResultNotFound):
        store.chunks(JOB_A, "other.png")
    with pytest.raises(ValueError):
        store.put("../etc", "grid.png", png)
    with pytest.raises(ValueError):
        store.put(JOB_A, "../../grid.png", png)
    # A presigned URL serves the object to a client that has no credentials.
    url = store.presigned_url(JOB_A, "grid.png", 60)
    assert url is not None and httpx.get(url).content == png


def test_jobs_are_listed_and_deleted_whole_leaving_other_objects(s3_endpoint: str, s3_bucket: str) -> None:
    store = _store(s3_endpoint, s3_bucket, s3_prefix="genserve")
    store.put(JOB_A, "grid.png", b"x" * 100)
    store.put(JOB_A, "face_000.png", b"x" * 50)
    store.put(JOB_B, "grid.png", b"y" * 10)
    store.put(JOB_C, "inputs/digits.npy", b"i" * 5)  # a queued classification job: inputs, no results yet
    store.client.put_object(Bucket=s3_bucket, Key="genserve/not-a-job/keep.bin", Body=b"z" * 1000)
    store.client.put_object(Bucket=s3_bucket, Key="elsewhere.bin", Body=b"z")
    listed = {(job.job_id, job.bytes, job.results) for job in store.jobs()}
    assert listed == {(JOB_A, 150, True), (JOB_B, 10, True), (JOB_C, 5, False)}
    assert store.delete_job(JOB_A) and store.delete_job(JOB_C)
    assert [job.job_id for job in store.jobs()] == [JOB_B]
    keys = {item["Key"] for item in store.client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {f"genserve/{JOB_B}/grid.png", "genserve/not-a-job/keep.bin", "elsewhere.bin"}


def test_retention_expires_and_trims_on_the_bucket(s3_endpoint: str, s3_bucket: str) -> None:
    store = _store(s3_endpoint, s3_bucket)
    store.put(JOB_A, "grid.png", b"x" * 800)
    time.sleep(1.1)  # S3 keeps LastModified to the second: A is the oldest
    store.put(JOB_B, "grid.png", b"x" * 800)
    store.put(JOB_C, "grid.png", b"x" * 10)
    assert prune_expired(store, older_than_s=3600) == 0  # all just written
    assert trim_to_quota(store, 2000).removed == 0  # under the quota
    trimmed = trim_to_quota(store, 900)  # the oldest go first, whole, until under the quota
    assert (trimmed.removed, trimmed.freed, trimmed.total, trimmed.over) == (1, 800, 810, False)
    assert {job.job_id for job in store.jobs()} == {JOB_B, JOB_C}
    sweep = ResultsJanitor(store, ttl_s=-1, max_bytes=10**9, every_s=60).sweep()  # everything has expired
    assert sweep.expired == 2 and store.jobs() == []


def test_a_missing_bucket_or_wrong_key_says_what_to_fix(s3_endpoint: str) -> None:
    with pytest.raises(RuntimeError, match="Create the bucket"):
        _store(s3_endpoint, "no-such-bucket").check()
