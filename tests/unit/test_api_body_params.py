"""Parameters from the query string, a JSON body or both (api.parsing.params), in process: no Redis, no worker.

A request that passes every check reaches the job service, which answers 503 here (nothing listens on
Redis's port): a 503 means "accepted as parameters", a 4xx names what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from api.config import Settings
from api.errors import describe_validation_error
from api.main import create_app
from api.parsing.params import merge, query_view
from api.schemas import ClassifyQuery, DigitsQuery, FacesQuery

DOWN = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(_env_file=None, redis_url=DOWN, webhook_allowed_hosts="hooks.example")
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _detail(error: RequestValidationError) -> str:
    return "; ".join(describe_validation_error(e) for e in error.errors())


def test_query_body_and_mix_merge_to_the_same_model() -> None:
    params = {"label": 3, "n": 2, "seed": 5, "sampler": "ddim", "steps": 4, "frames": True, "guidance_from": 10, "guidance_to": 300}
    from_query = merge(DigitsQuery, params, {})
    from_body = merge(DigitsQuery, {}, params)
    mixed = merge(DigitsQuery, {"label": 3, "guidance_from": 10, "seed": 5}, {"guidance_to": 300, "n": 2, "sampler": "ddim", "steps": 4, "frames": True})
    both = merge(DigitsQuery, params, params)
    assert from_query == from_body == mixed == both == DigitsQuery(**params)


def test_a_conflict_names_both_values() -> None:
    with pytest.raises(RequestValidationError) as caught:
        merge(FacesQuery, {"n": 8}, {"n": 9})
    assert _detail(caught.value) == (
        "JSON body field 'n': is 9 in the JSON body but 8 in the query string: give it once, or the same value in both"
    )
    # A number equal as a number is the same value (a float field, an integer in JSON).
    assert merge(FacesQuery, {"wait": 5.0}, {"wait": 5}).wait == 5.0


def test_an_integral_json_number_is_an_integer_as_json_schema_says() -> None:
    assert merge(DigitsQuery, {"n": 5}, {"label": 5.0, "n": 5.0}).label == 5
    with pytest.raises(RequestValidationError, match="int"):
        merge(DigitsQuery, {}, {"label": 5.5})


@pytest.mark.parametrize(
    "body, words",
    [
        ({"n": "8"}, ["JSON body field 'n'", "valid integer"]),  # JSON types, not strings read as numbers
        ({"seed": True}, ["JSON body field 'seed'"]),
        ({"model": "C"}, ["JSON body field 'model'", "'A' or 'B'"]),
        ({"n": 8, "lable": 3}, ["JSON body field 'lable'", "not a parameter"]),
    ],
)
def test_body_values_are_checked_as_json_types(body: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(RequestValidationError) as caught:
        merge(FacesQuery, {}, body)
    detail = _detail(caught.value)
    assert all(word in detail for word in words), detail


def test_a_rule_across_parameters_says_parameters_not_query_parameters() -> None:
    with pytest.raises(RequestValidationError) as caught:
        merge(DigitsQuery, {"guidance_from": 300}, {"guidance_to": 100})
    assert _detail(caught.value).startswith("parameters: guidance_from=300 is above guidance_to=100")
    with pytest.raises(RequestValidationError) as caught:
        merge(DigitsQuery, {"guidance_from": 300, "guidance_to": 100}, {})
    assert _detail(caught.value).startswith("query parameters: ")


def test_the_query_view_keeps_the_fields_but_not_the_rules() -> None:
    view = query_view(ClassifyQuery)
    assert list(view.model_fields) == list(ClassifyQuery.model_fields)
    assert view().model_dump(exclude_unset=True) == {}  # `target` may come from elsewhere
    assert view.model_fields["wait"].metadata == ClassifyQuery.model_fields["wait"].metadata
    digits = query_view(DigitsQuery)
    assert digits(guidance_from=300).guidance_from == 300  # its other half may be in the body


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"json": {"n": 100000, "seed": 7}}, 422, ["JSON body field 'n'", "64"]),
        ({"json": {"n": 8, "colour": "red"}}, 422, ["'colour'", "not a parameter"]),
        ({"params": {"n": 8}, "json": {"n": 9}}, 422, ["9 in the JSON body but 8 in the query string"]),
        ({"json": [8]}, 422, ["JSON body: must be a JSON object"]),
        ({"json": "n=8"}, 422, ["JSON body: must be a JSON object"]),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 422, ["JSON body: is not valid JSON"]),
        ({"content": b'{"n": NaN}', "headers": {"content-type": "application/json"}}, 422, ["not valid JSON"]),
        ({"content": b'{"n":1,"n":2}', "headers": {"content-type": "application/json"}}, 422, ["given twice"]),
        ({"content": b"n=8", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415, ["application/json"]),
        ({"content": b'{"n": 8}', "headers": {"content-type": "text/plain"}}, 415, ["'text/plain'"]),
        ({"json": {"wait": 10_000}}, 422, ["MAX_WAIT_S"]),
        ({"json": {"webhook": "https://elsewhere.example/h"}}, 422, ["webhook:", "'elsewhere.example'"]),
        ({"params": {"webhook": "ftp://hooks.example/h"}}, 422, ["webhook:", "http:// or https://"]),
    ],
)
def test_bad_bodies_are_refused_before_anything_is_queued(
    client: TestClient, kwargs: dict[str, Any], status: int, words: list[str]
) -> None:
    response = client.post("/generate/faces", **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"n": 8, "seed": 7}},
        {"params": {"n": 8}, "json": {"seed": 7}},
        {"params": {"n": 8, "seed": 7}, "json": {"n": 8, "seed": 7}},
        {"json": {"seed": None, "webhook": "https://hooks.example/h?t=1"}},
        {"json": {}},
        {"content": b"", "headers": {"content-type": "application/json"}},  # no body: all in the query
        {"content": b"", "headers": {"content-type": "application/x-www-form-urlencoded"}},
    ],
)
def test_good_parameters_get_past_validation(client: TestClient, kwargs: dict[str, Any]) -> None:
    assert client.post("/generate/faces", **kwargs).status_code == 503


def test_the_documented_query_form_is_still_held_to_its_grammar(client: TestClient) -> None:
    response = client.post("/generate/digits?label=3&label=4")
    assert response.status_code == 422 and "given 2 times" in response.json()["detail"]
    assert client.post("/generate/digits?label=3").status_code == 503


def test_openapi_shows_the_query_parameters_and_an_optional_json_body() -> None:
    settings = Settings(_env_file=None, max_wait_s=90, max_digit_images=50)
    schema = create_app(settings).openapi()
    for path, model in (("/generate/faces", FacesQuery), ("/generate/digits", DigitsQuery)):
        operation = schema["paths"][path]["post"]
        query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert set(query) == set(model.model_fields)
        body = operation["requestBody"]
        assert body["required"] is False and list(body["content"]) == ["application/json"]
        media = body["content"]["application/json"]
        assert set(media["schema"]["properties"]) == set(model.model_fields)
        assert media["schema"]["additionalProperties"] is False
        # /docs's "Try it out" body: the query parameters' examples (no conflict if both are sent), and no
        # webhook (it would need this server's WEBHOOK_ALLOWED_HOSTS).
        assert media["example"] == {
            name: query[name]["schema"]["examples"][0] for name in query if name != "webhook"
        }
        # This server's limits, in both places.
        assert query["wait"]["schema"]["maximum"] == 90
        assert media["schema"]["properties"]["wait"]["anyOf"][0]["maximum"] == 90
    digits_body = schema["paths"]["/generate/digits"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert digits_body["properties"]["n"]["maximum"] == 50
    classify = schema["paths"]["/classify/target-domain"]["post"]
    assert list(classify["requestBody"]["content"]) == ["multipart/form-data"]
    upload = classify["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert schema["components"]["schemas"][upload]["additionalProperties"] is False  # only the files
    assert {p["name"] for p in classify["parameters"] if p["in"] == "query"} == {"target", "wait", "webhook"}
