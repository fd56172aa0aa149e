"""Bounded request parsing, in process (no Redis, no worker): a JSON body's size and depth are checked before
any parser sees it (api.middleware.JsonBodyLimit), and a 422 echoes at most a few hundred characters of what
the client sent (api.errors).

As in test_api_body_params, a request that passes every check reaches the job service, which answers 503
here (nothing listens on Redis's port).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.config import Settings
from api.errors import ECHO_CHARS
from api.main import create_app
from api.middleware import json_depth_exceeds

DOWN = "redis://127.0.0.1:1/0"
FACES = "/generate/faces"
JSON_TYPE = {"content-type": "application/json"}


def _client(**overrides: object) -> TestClient:
    settings = Settings(_env_file=None, redis_url=DOWN, rate_limit="off", rate_limit_reads="off", **overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with _client() as test_client:
        yield test_client


@pytest.fixture(scope="module")
def roomy() -> Iterator[TestClient]:
    """Bodies of up to 8 MiB: what is refused there is refused for its depth or its echo, not its size."""
    with _client(max_json_bytes=8 * 2**20) as test_client:
        yield test_client


def _nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# -- depth ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [_nested_arrays(100_000), _nested_objects(50_000)], ids=["arrays", "objects"])
def test_a_deeply_nested_body_is_a_422_that_says_what_to_fix_and_the_service_goes_on(
    roomy: TestClient, body: bytes
) -> None:
    response = roomy.post(FACES, content=body, headers=JSON_TYPE)
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    assert "32 levels" in detail and "MAX_JSON_DEPTH" in detail and "flat JSON object" in detail
    assert roomy.post(FACES, json={"n": 1}).status_code == 503  # still serving: past validation, Redis is down


def test_the_default_size_limit_refuses_the_same_bodies_unread(client: TestClient) -> None:
    for body in (_nested_arrays(100_000), _nested_objects(50_000)):
        response = client.post(FACES, content=body, headers=JSON_TYPE)
        assert response.status_code == 413 and "MAX_JSON_BYTES" in response.json()["detail"]


def test_the_depth_limit_is_a_setting_and_counts_arrays_and_objects_together() -> None:
    with _client(max_json_depth=3) as api:
        within = api.post(FACES, content=b'{"n": [[1]]}', headers=JSON_TYPE)
        beyond = api.post(FACES, content=b'{"n": [[{"a": 1}]]}', headers=JSON_TYPE)
    assert within.status_code == 422 and "JSON body field 'n'" in within.json()["detail"]  # parsed, then refused
    assert beyond.status_code == 422 and "3 levels" in beyond.json()["detail"]


@pytest.mark.parametrize(
    "body, limit, exceeds",
    [
        (b'{"n": 8}', 1, False),
        (b'{"n": [8]}', 1, True),
        (b'{"webhook": "https://h.example/[[[[{{{{"}', 1, False),  # brackets in a string are not nesting
        (b'{"a": "\\"[[[[", "b": "\\\\"}', 1, False),  # nor after an escaped quote, nor after an escaped backslash
        (b"[[], [], [], []]", 2, False),  # siblings, not depth
        (_nested_arrays(33), 32, True),
        (_nested_arrays(32), 32, False),
        (b'{"unterminated": "[[[[[', 2, True),  # malformed either way: json.loads refuses what passes
    ],
)
def test_depth_is_counted_on_the_raw_bytes(body: bytes, limit: int, exceeds: bool) -> None:
    assert json_depth_exceeds(body, limit) is exceeds


# -- size -----------------------------------------------------------------------------------------------------


def test_a_large_json_body_is_a_413_whether_declared_or_streamed() -> None:
    body = json.dumps({"model": "A" * 5_000}).encode()
    with _client(max_json_bytes=4096) as api:
        declared = api.post(FACES, content=body, headers=JSON_TYPE)
        streamed = api.post(FACES, content=iter([body[:3000], body[3000:]]), headers=JSON_TYPE)  # chunked
        small = api.post(FACES, content=json.dumps({"n": 2, "seed": 1}).encode(), headers=JSON_TYPE)
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert "4,096 bytes (MAX_JSON_BYTES)" in response.json()["detail"]
    assert small.status_code == 503  # read whole by the limit, then handed to the route unchanged


def test_the_json_limit_is_in_the_openapi_schema_of_every_json_body() -> None:
    schema = create_app(Settings(_env_file=None, max_json_bytes=4096)).openapi()
    for path in ("/generate/faces", "/generate/digits"):
        too_large = schema["paths"][path]["post"]["responses"]["413"]
        assert "4,096 bytes" in too_large["description"]
        assert "MAX_JSON_BYTES" in too_large["content"]["application/json"]["example"]["detail"]


def test_other_media_types_keep_their_own_limits(client: TestClient) -> None:
    response = client.post(FACES, content=b"x" * 100_000, headers={"content-type": "text/plain"})
    assert response.status_code == 415, response.text  # the route's answer, not the JSON limit's 413


# -- echoes ---------------------------------------------------------------------------------------------------


def test_a_422_echoes_at_most_a_few_hundred_characters_of_a_value(roomy: TestClient) -> None:
    response = roomy.post(FACES, json={"model": "x" * 3_000_000})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(response.content) < 2 * ECHO_CHARS + 300, len(response.content)
    assert "JSON body field 'model'" in detail and "'A' or 'B'" in detail and "(2,999,802 more characters)" in detail


@pytest.mark.parametrize(
    "request_kwargs, words, most",
    [
        ({"json": {"k" * 1_000_000: 1}}, ["not a parameter"], 1_000),  # a key is echoed as the field's name
        ({"params": {"n": 8}, "json": {"n": "9" * 1_000_000}}, ["JSON body field 'n'"], 1_000),
        ({"params": {"model": "x" * 6000}}, ["query parameter 'model'"], 1_000),
        ({"json": {f"k{i}": 1 for i in range(2000)}}, ["'k0'", "'k19'", "and 1980 more"], 4_000),
    ],
)
def test_no_422_grows_with_the_input(
    roomy: TestClient, request_kwargs: dict[str, object], words: list[str], most: int
) -> None:
    response = roomy.post(FACES, **request_kwargs)  # type: ignore[arg-type]
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail[:500]
    assert len(response.content) < most, len(response.content)


def test_an_unknown_path_is_echoed_cut_too(client: TestClient) -> None:
    response = client.get("/" + "p" * 10_000)
    assert response.status_code == 404 and len(response.content) < 600
