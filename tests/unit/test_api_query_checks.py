"""The strict query string, the settings' limits in the OpenAPI schema, and Idempotency-Key fingerprints.

In process, with Redis down: a request that passes every check reaches the
backend and is a 503, so "not a 422" is told apart from "refused".
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.config import Settings
from api.errors import describe_validation_error
from api.main import create_app
from api.parsing.query_rules import query_problems
from api.service.idempotency import Idempotency
from contract.digits import DISTILLED, DISTILLED_STEPS
from contract.keys import IDEMPOTENCY_KEY_PREFIX

DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1
JOB = "9f1c2e4b7a6d4c0e8b3a5d2f1e0c9b8a"


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (16, 16), 128).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None, redis_url=DOWN, max_wait_s=45, max_files=7, max_digit_images=60, api_keys=[], rate_limit="off",
        rate_limit_reads="off",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _send(client: TestClient, method: str, path: str, query: str):
    url = f"{path}?{query}"
    if path.startswith("/classify"):
        return client.post(url, files=[("files", ("a.png", _png(), "image/png"))])
    return client.request(method, url)


ROUTES = [
    ("POST", "/generate/faces"),
    ("POST", "/generate/digits"),
    ("POST", "/classify/target-domain?target=usps"),
    ("GET", f"/jobs/{JOB}"),
]


def _join(path: str, query: str) -> tuple[str, str]:
    base, _, fixed = path.partition("?")
    return base, "&".join(part for part in (fixed, query) if part)


@pytest.mark.parametrize("method, path", ROUTES)
def test_a_repeated_parameter_is_422_naming_it_and_both_values(client: TestClient, method: str, path: str) -> None:
    base, query = _join(path, "wait=3&wait=5")
    response = _send(client, method, base, query)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "query parameter 'wait'" in detail and "2 times (wait=3, wait=5)" in detail and "give it once" in detail


@pytest.mark.parametrize("method, path", ROUTES)
def test_an_unknown_parameter_is_422(client: TestClient, method: str, path: str) -> None:
    base, query = _join(path, "colour=red")
    response = _send(client, method, base, query)
    assert response.status_code == 422
    assert "query parameter 'colour'" in response.json()["detail"]
    assert "not a parameter" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [f"/jobs/{JOB}/images/grid.png?size=big", f"/jobs/{JOB}/predictions.csv?x=1"],
)
def test_routes_without_query_parameters_refuse_any(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422 and "not a parameter" in response.json()["detail"]


@pytest.mark.parametrize(
    "path, query, name, advice",
    [
        ("/generate/faces", "n=1_0", "n", "plain decimal digits"),
        ("/generate/faces", "n=%2B3", "n", "plain decimal digits"),  # n=+3
        ("/generate/faces", "n=%203", "n", "plain decimal digits"),  # n= 3
        ("/generate/faces", "n=3.0", "n", "plain decimal digits"),
        ("/generate/faces", "n=03", "n", "no leading zeros"),
        ("/generate/faces", "n=", "n", "plain decimal digits"),
        ("/generate/faces", "seed=0x10", "seed", "e.g. seed=3"),
        ("/generate/faces", "wait=inf", "wait", "plain decimal number"),
        ("/generate/faces", "wait=nan", "wait", "plain decimal number"),
        ("/generate/faces", "wait=1_0", "wait", "plain decimal number"),
        ("/generate/faces", "wait=.5", "wait", "plain decimal number"),
        ("/generate/digits", "label=%2B3", "label", "plain decimal digits"),
        ("/generate/digits", "frames=yes", "frames", "true or false"),
        ("/generate/digits", "frames=1", "frames", "true or false"),
        ("/generate/digits", "guidance=3%2C5", "guidance", "plain decimal number"),
        ("/classify/target-domain?target=usps", "wait=0x1", "wait", "plain decimal number"),
        (f"/jobs/{JOB}", "wait=1_0", "wait", "plain decimal number"),
    ],
)
def test_loosely_written_numbers_are_422_saying_what_to_send(
    client: TestClient, path: str, query: str, name: str, advice: str
) -> None:
    method = "GET" if path.startswith("/jobs") else "POST"
    base, query = _join(path, query)
    response = _send(client, method, base, query)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"query parameter {name!r}" in detail and advice in detail


@pytest.mark.parametrize(
    "path, query",
    [
        ("/generate/faces", "n=3&seed=0&wait=0"),
        ("/generate/faces", "n=10&wait=2.5"),
        ("/generate/faces", "wait=1e1&model=A"),
        ("/generate/digits", "label=3&n=2&frames=true&guidance=3&guidance_from=0&guidance_to=400"),
        ("/generate/digits", "n=5&frames=FALSE&wait=0.0"),
        ("/classify/target-domain?target=svhn", "wait=0"),
        (f"/jobs/{JOB}", "wait=0"),
    ],
)
def test_plainly_written_parameters_pass_to_the_backend(client: TestClient, path: str, query: str) -> None:
    method = "GET" if path.startswith("/jobs") else "POST"
    base, query = _join(path, query)
    response = _send(client, method, base, query)
    assert response.status_code == 503, response.text  # Redis is down: past every parameter check


def test_every_problem_is_named_at_once(client: TestClient) -> None:
    detail = client.post("/generate/faces?n=1_0&n=2&seed=0x1&colour=red").json()["detail"]
    assert "'n'" in detail and "'seed'" in detail and "'colour'" in detail


def test_query_problems_reads_the_declared_types() -> None:
    declared = {"n": {"integer"}, "wait": {"number", "null"}, "target": {"string"}, "frames": {"boolean"}}
    assert query_problems([("n", "3"), ("wait", "0.25"), ("target", "+3"), ("frames", "true")], declared) == []
    kinds = [p["type"] for p in query_problems([("n", "3"), ("n", "3"), ("x", "1"), ("wait", "1e")], declared)]
    assert kinds == ["duplicate_parameter", "extra_forbidden", "number_format"]


def test_a_rule_across_parameters_reads_as_one() -> None:
    error = {"type": "value_error", "loc": ("query",), "msg": "Value error, give both a and b", "input": {}}
    assert describe_validation_error(error) == "query parameters: give both a and b"


# -- the settings' limits in the schema -------------------------------------------------------------------------


def _query_param(schema: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    params = schema["paths"][path][method]["parameters"]
    return next(p for p in params if p["name"] == name and p["in"] == "query")


def _bound(param: dict[str, Any]) -> float:
    return next(option["maximum"] for option in param["schema"].get("anyOf", [param["schema"]]) if "maximum" in option)


def test_the_schema_carries_the_servers_limits(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path, method in [
        ("/generate/faces", "post"),
        ("/generate/digits", "post"),
        ("/classify/target-domain", "post"),
        ("/jobs/{job_id}", "get"),
    ]:
        assert _bound(_query_param(schema, path, method, "wait")) == 45
    assert _bound(_query_param(schema, "/generate/digits", "post", "n")) == 60
    body = schema["paths"]["/classify/target-domain"]["post"]["requestBody"]["content"]["multipart/form-data"]
    ref = body["schema"]["$ref"].rsplit("/", 1)[1]
    files = schema["components"]["schemas"][ref]["properties"]["files"]
    assert (files["minItems"], files["maxItems"]) == (1, 7)


def test_a_model_bound_tighter_than_the_setting_stays() -> None:
    app = create_app(Settings(_env_file=None, redis_url=DOWN, max_digit_images=500))
    assert _bound(_query_param(app.openapi(), "/generate/digits", "post", "n")) == 100


def test_the_schema_limit_is_the_enforced_one(client: TestClient) -> None:
    assert client.post("/generate/faces?wait=46").status_code == 422
    assert client.post("/generate/faces?wait=45").status_code == 503


def test_job_creating_posts_document_the_idempotency_key(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/generate/faces", "/generate/digits", "/classify/target-domain"):
        operation = schema["paths"][path]["post"]
        header = next(p for p in operation["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key")
        assert header["required"] is False and "409" in operation["responses"]


def test_a_malformed_idempotency_key_is_422(client: TestClient) -> None:
    response = client.post("/generate/faces", headers={"Idempotency-Key": "has a space"})
    assert response.status_code == 422 and "Idempotency-Key" in response.json()["detail"]


# -- fingerprints -------------------------------------------------------------------------------------------------


def test_a_fingerprint_depends_on_the_parameters_only() -> None:
    first = Idempotency.of("k", "POST /generate/faces", {"n": 3, "model": "B", "seed": None})
    again = Idempotency.of("k", "POST /generate/faces", {"seed": None, "model": "B", "n": 3})
    other = Idempotency.of("k", "POST /generate/faces", {"n": 4, "model": "B", "seed": None})
    assert first is not None and again is not None and other is not None
    assert first.fingerprint == again.fingerprint != other.fingerprint
    assert first.redis_key == other.redis_key and first.redis_key.startswith(IDEMPOTENCY_KEY_PREFIX)
    elsewhere = Idempotency.of("k", "POST /generate/digits", {"n": 3, "model": "B", "seed": None})
    assert elsewhere is not None and elsewhere.redis_key != first.redis_key
    assert Idempotency.of(None, "POST /generate/faces", {"n": 3}) is None


@pytest.mark.parametrize(
    ("query", "names"),
    [("steps=10", ("steps=10", f"{DISTILLED_STEPS} steps")), ("guidance=3", ("guidance",)),
     ("guidance_from=50&guidance_to=300", ("guidance_from",))],
)
def test_the_distilled_sampler_refuses_steps_and_guidance_it_cannot_apply(
    client: TestClient, query: str, names: tuple[str, ...]
) -> None:
    response = client.post(f"/generate/digits?label=3&sampler={DISTILLED}&{query}")
    assert response.status_code == 422, response.text
    assert all(name in response.json()["detail"] for name in names), response.text


def test_the_distilled_sampler_alone_or_with_its_own_steps_passes(client: TestClient) -> None:
    for query in ("", f"&steps={DISTILLED_STEPS}"):
        assert client.post(f"/generate/digits?label=3&sampler={DISTILLED}{query}").status_code == 503
