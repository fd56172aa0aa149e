"""Who may call the API: keys, origins (CORS and the foreign-Origin guard), rate limits, and no host paths in /models.

The API runs in process (TestClient) on a real ``redis-server`` of its own; no worker is needed:
with none registered, a job-creating POST with ``wait=0`` is queued and answered 202.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from limits.errors import StorageError
from pydantic import ValidationError

from api.access.keys import key_matches
from api.access.rate_limits import key_id
from api.config import Settings
from api.main import create_app
from contract.registration import without_paths
from stack.launcher import exposure_warning
from stack.processes import RedisServer
from stack.services import api_command

KEY = "k" * 20 + "-first"
OTHER_KEY = "o" * 20 + "-second"
DOWN = "redis://127.0.0.1:1/0"  # nothing listens: every Redis call fails fast
FACES = "/generate/faces"
QUICK = {"n": 1, "wait": 0}
ABSOLUTE_PATH = re.compile(r'(?:^|[\s"\'(=:])/(?:[^\s/"\']+/)+')


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    url = f"redis://127.0.0.1:{redis_server.port}/3"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _settings(redis_url: str, tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        results_dir=tmp_path,
        checkpoint_dir=tmp_path,
        **{"rate_limit": "off", "rate_limit_reads": "off", **overrides},
    )


def _app(redis_url: str, tmp_path: Path, **overrides: object) -> TestClient:
    return TestClient(create_app(_settings(redis_url, tmp_path, **overrides)), raise_server_exceptions=False)


def _jobs(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return len(client.keys("genserve:job:*"))
    finally:
        client.close()


# -- API keys ------------------------------------------------------------------------------------------------


def test_without_keys_every_route_is_open(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path) as api:
        assert api.post(FACES, params=QUICK).status_code == 202
        assert api.get("/jobs/" + "0" * 32).status_code == 404  # no such job, but no key asked for
        assert api.get("/models").status_code == 200
        schema = api.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})


@pytest.mark.parametrize(
    "path, method",
    [
        (FACES, "post"),
        ("/generate/digits", "post"),
        ("/classify/target-domain", "post"),
        ("/jobs/" + "0" * 32, "get"),
        ("/jobs/" + "0" * 32 + "/images/grid.png", "get"),
        ("/jobs/" + "0" * 32 + "/predictions.csv", "get"),
        ("/models", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ],
)
def test_with_keys_every_route_but_healthz_wants_one(redis_url: str, tmp_path: Path, path: str, method: str) -> None:
    with _app(redis_url, tmp_path, api_keys=KEY) as api:
        response = api.request(method, path, params={"wait": 0} if method == "post" else None)
    assert response.status_code == 401, response.text
    detail = response.json()["detail"]
    assert detail.startswith("missing API key") and "X-API-Key" in detail and "Authorization: Bearer" in detail
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_healthz_and_the_docs_stay_open(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, api_keys=KEY) as api:
        assert api.get("/healthz").json() == {"status": "ok"}
        assert api.get("/docs").status_code == 200 and api.get("/redoc").status_code == 200
        assert api.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
        schema = api.get("/openapi.json").json()
    # Swagger UI's Authorize button offers both ways of sending the key, and each guarded operation asks for one.
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKey"] == {**schemes["APIKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if path == "/healthz":
                assert "security" not in op
            else:
                assert op["security"] == [{"APIKey": []}, {"Bearer": []}], (method, path)
                assert "401" in op["responses"], (method, path)
            # The origin guard's refusal is documented on every state-changing operation, and only there.
            assert ("403" in op["responses"]) == (method in ("post", "put", "patch", "delete")), (method, path)


def test_a_right_key_passes_in_either_header_and_a_wrong_one_is_told_so(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, api_keys=f"{KEY},{OTHER_KEY}") as api:
        by_header = api.post(FACES, params=QUICK, headers={"X-API-Key": KEY})
        by_bearer = api.post(FACES, params=QUICK, headers={"Authorization": f"Bearer {OTHER_KEY}"})
        image = api.get(by_header.json()["url"] + "/images/grid.png", headers={"X-API-Key": KEY})
        image_without_key = api.get(by_header.json()["url"] + "/images/grid.png")
        wrong = api.post(FACES, params=QUICK, headers={"X-API-Key": KEY[:-1]})
        not_ascii = api.get("/models", headers={"X-API-Key": "clé-".encode("latin-1") + b"x" * 20})
        basic = api.get("/models", headers={"Authorization": "Basic " + KEY})
    assert by_header.status_code == by_bearer.status_code == 202
    assert image.status_code == 409  # past the key check: the job has not run (no worker here)
    assert image_without_key.status_code == 401
    assert wrong.status_code == 401 and wrong.json()["detail"].startswith("wrong API key")
    assert KEY[:-1] not in wrong.text  # the key sent is not echoed
    assert not_ascii.status_code == 401 and basic.status_code == 401
    assert _jobs(redis_url) == 2  # the refused POST created nothing


def test_keys_are_compared_whole() -> None:
    assert key_matches(KEY, [OTHER_KEY, KEY])
    assert not key_matches(KEY + "x", [KEY]) and not key_matches(KEY[:-1], [KEY]) and not key_matches("", [KEY])
    assert not key_matches(KEY, [])


def test_keys_must_be_long_enough_and_are_not_shown() -> None:
    with pytest.raises(ValidationError, match="16 or more"):
        Settings(_env_file=None, api_keys="short")
    settings = Settings(_env_file=None, api_keys=f" {KEY} , {OTHER_KEY},")
    assert [k.get_secret_value() for k in settings.api_keys] == [KEY, OTHER_KEY]
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


# -- isolation between keys ----------------------------------------------------------------------------------


def _routes_of(job: str) -> list[tuple[str, str]]:
    """Every route that takes a job id (``api.routes.jobs`` and ``api.routes.live``)."""
    return [
        ("get", f"/jobs/{job}"),
        ("get", f"/jobs/{job}/images/grid.png"),
        ("get", f"/jobs/{job}/predictions.csv"),
        ("get", f"/jobs/{job}/events"),
        ("post", f"/jobs/{job}/cancel"),
    ]


def test_a_job_is_the_key_that_created_it_and_another_key_gets_404_as_for_no_job(
    redis_url: str, tmp_path: Path
) -> None:
    first, other = {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}
    unknown = "f" * 32
    with _app(redis_url, tmp_path, api_keys=f"{KEY},{OTHER_KEY}") as api:
        job = api.post(FACES, params=QUICK, headers=first).json()["id"]
        foreign = [api.request(method, path, headers=other) for method, path in _routes_of(job)]
        absent = [api.request(method, path, headers=other) for method, path in _routes_of(unknown)]
        own = api.get(f"/jobs/{job}", headers=first)
        canceled = api.post(f"/jobs/{job}/cancel", headers=first)
    # Not 403: the answer must not tell that the job exists, so it is the unknown id's, word for word.
    for refused, missing in zip(foreign, absent):
        assert refused.status_code == missing.status_code == 404, refused.request.url
        assert refused.json()["detail"] == missing.json()["detail"].replace(unknown, job)
    assert own.status_code == 200 and own.json()["status"] == "queued"
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"  # the other key's cancel did not


def test_the_owner_is_stored_as_the_key_id_and_without_keys_there_is_none(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, api_keys=KEY) as api:
        keyed = api.post(FACES, params=QUICK, headers={"X-API-Key": KEY}).json()["id"]
    with _app(redis_url, tmp_path) as api:
        open_job = api.post(FACES, params=QUICK).json()["id"]
        assert api.get(f"/jobs/{keyed}").status_code == 200  # without keys nothing is hidden
    client = redis.Redis.from_url(redis_url)
    try:
        records = {job: json.loads(client.get(f"genserve:job:{job}")) for job in (keyed, open_job)}
    finally:
        client.close()
    assert records[keyed]["owner"] == key_id(KEY) and KEY not in json.dumps(records[keyed])
    assert "owner" not in records[open_job]


def test_an_idempotency_key_is_per_api_key(redis_url: str, tmp_path: Path) -> None:
    same = {"Idempotency-Key": "one-key-for-both"}
    first, other = {**same, "X-API-Key": KEY}, {**same, "X-API-Key": OTHER_KEY}
    with _app(redis_url, tmp_path, api_keys=f"{KEY},{OTHER_KEY}") as api:
        mine = api.post(FACES, params=QUICK, headers=first).json()["id"]
        theirs = api.post(FACES, params=QUICK, headers=other).json()["id"]
        other_params = api.post(FACES, params={**QUICK, "n": 2}, headers=other)
        again = api.post(FACES, params=QUICK, headers=first).json()["id"]
    assert theirs != mine and again == mine
    # The other key's own binding answers, never the first key's job (not even by naming it in a 409).
    assert other_params.status_code == 409 and theirs in other_params.json()["detail"]
    assert mine not in other_params.text
    assert _jobs(redis_url) == 2


# -- origins: CORS and the foreign-Origin guard --------------------------------------------------------------


def _preflight(api: TestClient, origin: str) -> object:
    return api.options(
        FACES,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )


def test_cors_preflight_is_answered_for_listed_origins_only(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, cors_allow_origins="https://app.example") as api:
        allowed = _preflight(api, "https://app.example")
        refused = _preflight(api, "http://evil.example")
        read = api.get("/models", headers={"Origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    assert read.headers["access-control-allow-origin"] == "https://app.example"
    assert "Location" in read.headers["access-control-expose-headers"]


def test_without_an_allow_list_no_cors_headers_are_sent(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path) as api:
        preflight = _preflight(api, "https://app.example")
        read = api.get("/models", headers={"Origin": "https://app.example"})
    assert preflight.status_code == 405
    assert not [h for h in (*preflight.headers, *read.headers) if h.lower().startswith("access-control-")]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://testserver.evil.example"])
def test_a_post_from_a_foreign_page_is_refused_and_creates_nothing(redis_url: str, tmp_path: Path, origin: str) -> None:
    with _app(redis_url, tmp_path, cors_allow_origins="https://app.example") as api:
        response = api.post(FACES, params=QUICK, headers={"Origin": origin})
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert f"from {origin} refused" in detail and "CORS_ALLOW_ORIGINS" in detail and "nothing was created" in detail
    assert _jobs(redis_url) == 0


def test_a_foreign_post_is_refused_before_the_key_check_and_even_with_a_key(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, api_keys=KEY) as api:
        response = api.post(FACES, params=QUICK, headers={"Origin": "http://evil.example", "X-API-Key": KEY})
    assert response.status_code == 403 and _jobs(redis_url) == 0


def test_posts_from_its_own_pages_listed_origins_and_non_browsers_pass(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, cors_allow_origins="https://app.example") as api:
        statuses = [
            api.post(FACES, params=QUICK, headers=headers).status_code
            for headers in (
                {"Origin": "http://testserver"},  # /docs on this server (TestClient's host)
                {"Origin": "https://testserver"},  # the same page behind a TLS proxy
                {"Origin": "https://app.example"},
                {},  # curl, SDKs
            )
        ]
        foreign_get = api.get("/models", headers={"Origin": "http://evil.example"})
    assert statuses == [202] * 4 and _jobs(redis_url) == 4
    assert foreign_get.status_code == 200  # reads change nothing, and without CORS headers the page cannot read them


def test_a_star_allows_every_origin(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, cors_allow_origins="*") as api:
        response = api.post(FACES, params=QUICK, headers={"Origin": "http://anywhere.example"})
    assert response.status_code == 202 and response.headers["access-control-allow-origin"] == "*"


def test_origins_must_be_origins() -> None:
    for bad in ("evil.example", "https://app.example/path", "ftp://app.example"):
        with pytest.raises(ValidationError, match="is not an origin"):
            Settings(_env_file=None, cors_allow_origins=bad)
    assert Settings(_env_file=None, cors_allow_origins="HTTPS://App.example/").cors_allow_origins == [
        "https://app.example"
    ]


# -- rate limits ---------------------------------------------------------------------------------------------


def test_posts_past_the_limit_get_429_with_retry_after(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, rate_limit="2/minute", rate_limit_reads="3/minute") as api:
        posts = [api.post(FACES, params=QUICK) for _ in range(3)]
        reads = [api.get("/jobs/" + "0" * 32) for _ in range(4)]
    assert [r.status_code for r in posts] == [202, 202, 429]
    assert [r.status_code for r in reads] == [404, 404, 404, 429]  # a budget of its own: the POSTs did not count
    for refused, setting in ((posts[2], "RATE_LIMIT"), (reads[3], "RATE_LIMIT_READS")):
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 60
        detail = refused.json()["detail"]
        assert f"retry in {retry} s" in detail and f"({setting})" in detail
    assert "may send 2 per 1 minute POSTs" in posts[2].json()["detail"]
    assert _jobs(redis_url) == 2


def test_the_limit_resets_after_retry_after(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, rate_limit="1/second") as api:
        first, refused = (api.post(FACES, params=QUICK) for _ in range(2))
        assert refused.status_code == 429
        time.sleep(int(refused.headers["retry-after"]) + 0.1)
        again = api.post(FACES, params=QUICK)
    assert first.status_code == again.status_code == 202


def test_the_budget_is_per_key_and_shared_by_api_processes(redis_url: str, tmp_path: Path) -> None:
    """Two apps on one Redis stand for two API processes: they count together."""
    limits = {"api_keys": f"{KEY},{OTHER_KEY}", "rate_limit": "2/minute"}
    with _app(redis_url, tmp_path, **limits) as one, _app(redis_url, tmp_path, **limits) as two:
        first = one.post(FACES, params=QUICK, headers={"X-API-Key": KEY})
        second = two.post(FACES, params=QUICK, headers={"Authorization": f"Bearer {KEY}"})
        third = one.post(FACES, params=QUICK, headers={"X-API-Key": KEY})
        other = two.post(FACES, params=QUICK, headers={"X-API-Key": OTHER_KEY})
        unauthenticated = [one.post(FACES, params=QUICK).status_code for _ in range(3)]
    assert [first.status_code, second.status_code, third.status_code, other.status_code] == [202, 202, 429, 202]
    assert unauthenticated == [401] * 3  # refused before counting: no key spends nobody's budget
    client = redis.Redis.from_url(redis_url)
    try:
        stored = b" ".join(client.keys("genserve:ratelimit*"))
    finally:
        client.close()
    assert stored and KEY.encode() not in stored and OTHER_KEY.encode() not in stored  # keys are hashed


def test_without_keys_the_budget_is_per_address(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, redis_url=redis_url, results_dir=tmp_path, checkpoint_dir=tmp_path, rate_limit="1/minute"
    )
    # One app per address (a TestClient runs the app's lifespan in a loop of its own); they share Redis.
    with (
        TestClient(create_app(settings), client=("10.0.0.1", 1000)) as one,
        TestClient(create_app(settings), client=("10.0.0.2", 1000)) as two,
    ):
        statuses = [client.post(FACES, params=QUICK).status_code for client in (one, one, two)]
    assert statuses == [202, 429, 202]


def test_wrong_keys_spend_the_address_budget_then_every_key_from_it_gets_429(redis_url: str, tmp_path: Path) -> None:
    limits = {"api_keys": KEY, "rate_limit": "3/minute"}
    right, wrong = {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}
    with (
        TestClient(create_app(_settings(redis_url, tmp_path, **limits)), client=("10.0.0.1", 1000)) as guesser,
        TestClient(create_app(_settings(redis_url, tmp_path, **limits)), client=("10.0.0.2", 1000)) as neighbour,
    ):
        guesses = [guesser.post(FACES, params=QUICK, headers=wrong) for _ in range(3)]
        by_get = guesser.get("/models", headers=wrong)
        with_the_right_key = guesser.post(FACES, params=QUICK, headers=right)
        without_a_key = guesser.get("/models")
        elsewhere = neighbour.post(FACES, params=QUICK, headers=right)
    assert [r.status_code for r in guesses] == [401] * 3
    # A guess by GET counts too, and past the budget a right key is not told apart from a wrong one.
    for refused in (by_get, with_the_right_key):
        assert refused.status_code == 429, refused.text
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 60 and f"retry in {retry} s" in refused.json()["detail"]
        assert "wrong API key" in refused.json()["detail"] and "(RATE_LIMIT)" in refused.json()["detail"]
    assert without_a_key.status_code == 401  # a missing key guesses nothing
    assert elsewhere.status_code == 202  # the budget is the address's, not the key's


def test_a_flood_of_wrong_keys_is_stopped_at_the_write_budget(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, api_keys=KEY, rate_limit="60/minute") as api:
        statuses = [api.post(FACES, params=QUICK, headers={"X-API-Key": OTHER_KEY}).status_code for _ in range(100)]
    assert statuses == [401] * 60 + [429] * 40
    assert _jobs(redis_url) == 0


def test_uvicorn_believes_forwarded_headers_only_from_the_configured_proxies() -> None:
    bare = api_command("127.0.0.1", 8000)
    assert "--no-proxy-headers" in bare and "--forwarded-allow-ips" not in bare
    proxied = api_command("127.0.0.1", 8000, forwarded_allow_ips="10.0.0.5,172.16.0.0/12")
    assert proxied[proxied.index("--forwarded-allow-ips") + 1] == "10.0.0.5,172.16.0.0/12"
    assert Settings(_env_file=None).forwarded_allow_ips == ""
    assert Settings(_env_file=None, forwarded_allow_ips=" 10.0.0.5 , ::1,").forwarded_allow_ips == "10.0.0.5,::1"
    with pytest.raises(ValidationError, match="FORWARDED_ALLOW_IPS: 'proxy.internal' is not an IP"):
        Settings(_env_file=None, forwarded_allow_ips="proxy.internal")


def test_limits_off_means_no_limit(redis_url: str, tmp_path: Path) -> None:
    with _app(redis_url, tmp_path, rate_limit="off", rate_limit_reads="OFF") as api:
        assert api.app.state.limiter is None  # type: ignore[attr-defined]
        assert {api.get("/jobs/" + "0" * 32).status_code for _ in range(30)} == {404}


def test_a_write_the_limiter_cannot_count_creates_nothing_but_bad_parameters_still_get_their_422(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis up for the routes, but the limiter's own calls failing (a full pool): writes fail closed where a job
    would be created (a crowd once got 143 jobs past a budget of 60), reads go through, and a bad request is
    still told what to fix."""
    with (
        caplog.at_level(logging.WARNING, logger="api.access.rate_limits"),
        _app(redis_url, tmp_path, rate_limit="100/minute", rate_limit_reads="100/minute") as api,
    ):
        limiter = api.app.state.limiter  # type: ignore[attr-defined]

        async def storage_fails(*_: object) -> bool:
            raise StorageError(ConnectionError("no connection available"))

        limiter.strategy.hit = storage_fails
        writes = [api.post(FACES, params=QUICK) for _ in range(3)]
        bad = api.post(FACES, params={"n": 0, "wait": 0})
        read = api.get("/jobs/" + "0" * 32)
        del limiter.strategy.hit  # the storage is back: the next write is counted and goes through
        after = api.post(FACES, params=QUICK)
    assert {r.status_code for r in writes} == {503}
    assert all("could not be counted against its rate limit" in r.json()["detail"] for r in writes)
    assert all(r.headers["retry-after"] == "5" for r in writes)
    assert bad.status_code == 422 and read.status_code == 404 and after.status_code == 202
    assert _jobs(redis_url) == 1
    warnings = [r for r in caplog.records if "rate limits not counted" in r.getMessage()]
    assert len(warnings) == 1  # one line per OUTAGE_RETRY_S, not one per request


def test_rate_limits_are_checked_when_settings_load() -> None:
    with pytest.raises(ValidationError, match="RATE_LIMIT='sixty' is not a rate limit"):
        Settings(_env_file=None, rate_limit="sixty")
    assert Settings(_env_file=None, rate_limit="10/second;500/hour").rate_limit == "10/second;500/hour"
    assert Settings(_env_file=None).rate_limit == "60/minute"


# -- make run's warning --------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_no_warning_on_localhost(host: str) -> None:
    assert exposure_warning(Settings(_env_file=None, host=host)) is None


def test_warning_when_listening_beyond_localhost_without_keys() -> None:
    warning = exposure_warning(Settings(_env_file=None, host="0.0.0.0"))
    assert warning and "HOST=0.0.0.0" in warning and "API_KEYS" in warning and "HOST=127.0.0.1" in warning
    assert exposure_warning(Settings(_env_file=None, host="0.0.0.0", api_keys=KEY)) is None


# -- no host paths in /models --------------------------------------------------------------------------------


def test_models_shows_no_path_of_the_workers_machine(redis_url: str, tmp_path: Path) -> None:
    """A real worker registry over an empty checkpoint folder (every model missing) registers as a worker does."""
    from workers.config import WorkerSettings
    from workers.heartbeat import Heartbeat
    from workers.registry import Registry

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    settings = WorkerSettings(_env_file=None, checkpoint_dir=checkpoints, device="cpu", redis_url=redis_url)
    registry = Registry(settings)
    registry.load()
    assert registry.missing and str(checkpoints) not in json.dumps(registry.describe())
    heartbeat = Heartbeat(registry, settings)
    try:
        heartbeat.beat()
        with _app(redis_url, tmp_path) as api:
            body = api.get("/models").text
            ready = api.get("/readyz").text
            refused = api.post(FACES, params=QUICK)
    finally:
        heartbeat.stop()
    (worker,) = json.loads(body)["workers"]
    assert "checkpoint_dir" not in worker
    assert {m["reason"] for m in worker["missing"]} and all(".json" in m["reason"] for m in worker["missing"])
    for text in (body, ready, refused.text):
        assert str(tmp_path) not in text and not ABSOLUTE_PATH.search(text), text
    assert refused.status_code == 503 and "dcgan" in refused.json()["detail"]


@pytest.mark.parametrize(
    "text, shown",
    [
        ("model card /srv/app/checkpoints/dcgan-A.json not found", "model card dcgan-A.json not found"),
        (
            "no weights in /srv/app/checkpoints: expected x.safetensors",
            "no weights in checkpoints: expected x.safetensors",
        ),
        ("[Errno 2] No such file: '/a/b/c.bin'", "[Errno 2] No such file: 'c.bin'"),
        (r"C:\Users\me\checkpoints\a.json missing", "a.json missing"),
        ("Redis at redis://127.0.0.1:6379/0; see GET /models", "Redis at redis://127.0.0.1:6379/0; see GET /models"),
        ("relative checkpoints/a.json", "relative checkpoints/a.json"),
    ],
)
def test_paths_are_cut_to_their_last_part(text: str, shown: str) -> None:
    assert without_paths(text) == shown
