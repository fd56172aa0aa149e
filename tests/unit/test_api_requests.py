"""The API in process, without Redis or workers: validation, limits, negotiation, degraded backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.config import Settings
from api.deps import preferred_representation
from api.main import create_app
from contract import queues

# Nothing listens on port 1: every Redis call fails fast with "connection refused".
DOWN = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(_env_file=None, redis_url=DOWN, max_body_bytes=10_000, max_file_bytes=5_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_task_names_are_the_ones_the_workers_register() -> None:
    from workers.celery_app import app

    app.loader.import_default_modules()
    for name in (queues.TASK_FACES, queues.TASK_DIGITS, queues.TASK_CLASSIFY):
        assert name in app.tasks


def test_worker_celery_settings_are_the_safe_ones() -> None:
    from workers.celery_app import app

    conf = app.conf
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.result_expires > 0 and conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.worker_proc_alive_timeout > 4


@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, "json"),
        ("*/*", "json"),
        ("image/png", "png"),
        ("text/csv", "csv"),
        ("application/json, image/png", "json"),
        ("image/png, application/json", "png"),
        ("application/json;q=0.5, image/png", "png"),
        ("image/png;q=0", "json"),
        ("image/webp", "json"),
    ],
)
def test_accept_header_negotiation(accept: str | None, expected: str) -> None:
    assert preferred_representation(accept) == expected


@pytest.mark.parametrize(
    "path, params, words",
    [
        ("/generate/digits", {"label": 10}, ["query parameter 'label'", "less than or equal to 9", "/docs"]),
        ("/generate/faces", {"n": 100}, ["'n'", "64"]),
        ("/generate/faces", {"colour": "red"}, ["'colour'", "not a parameter"]),
        ("/generate/faces", {"wait": 10_000}, ["MAX_WAIT_S"]),
        ("/generate/digits", {"guidance_from": 300, "guidance_to": 100}, ["query parameters:", "guidance_from=300"]),
    ],
)
def test_bad_parameters_are_422_before_anything_is_queued(
    client: TestClient, path: str, params: dict, words: list[str]
) -> None:
    response = client.post(path, params=params)
    assert response.status_code == 422
    for word in words:
        assert word in response.json()["detail"]


def test_redis_down_is_503_saying_so(client: TestClient) -> None:
    response = client.post("/generate/faces", params={"n": 1})
    assert response.status_code == 503
    assert "REDIS_URL" in response.json()["detail"] and response.headers["retry-after"]


def test_readiness_reports_redis_down_while_liveness_stays_ok(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    checks = {check["name"]: check for check in ready.json()["checks"]}
    assert not checks["redis"]["ok"] and "REDIS_URL" in checks["redis"]["detail"]
    assert not checks["worker"]["ok"] and not checks["models"]["ok"]


def test_malformed_job_ids_are_404_without_a_lookup(client: TestClient) -> None:
    response = client.get("/jobs/..%2F..%2Fetc")
    assert response.status_code == 404
    assert client.get("/jobs/XYZ").json()["detail"].startswith("no job 'XYZ'")


def test_body_over_the_limit_is_413_from_content_length(client: TestClient) -> None:
    response = client.post(
        "/classify/target-domain?target=svhn",
        content=b"x" * 20_000,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["detail"]


def test_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
        for _ in range(10):
            yield b"\0" * 4_000

    response = client.post(
        "/classify/target-domain?target=svhn",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["detail"]


def test_unknown_routes_get_a_json_hint(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and "/docs" in response.json()["detail"]


def test_docs_and_schema_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"default_wait_s": 30, "max_wait_s": 10}, "DEFAULT_WAIT_S"),
        ({"max_file_bytes": 10, "max_body_bytes": 5}, "MAX_FILE_BYTES"),
    ],
)
def test_inconsistent_api_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **kwargs)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("MAX_FILES", "3")
    monkeypatch.setenv("RESULTS_DIR", "/srv/results")
    settings = Settings(_env_file=None)
    assert (settings.redis_url, settings.max_files, str(settings.results_dir)) == (
        "redis://example:6380/2",
        3,
        "/srv/results",
    )


def test_worker_settings_refuse_a_hard_limit_below_the_soft_one() -> None:
    from workers.config import WorkerSettings

    with pytest.raises(ValidationError, match="TASK_TIME_LIMIT"):
        WorkerSettings(_env_file=None, task_soft_time_limit=100, task_time_limit=50)
