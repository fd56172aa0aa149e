"""The OpenAPI schema is the service's documentation: every route must be usable from /docs."""

from __future__ import annotations

from typing import Any

import pytest

from api.config import Settings
from api.main import create_app

# Liveness has no error response: a process that cannot answer sends nothing.
NO_ERROR_RESPONSES = {("get", "/healthz")}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app(Settings(_env_file=None)).openapi()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in schema["paths"].items() for method, op in item.items()]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def _has_example(schema: dict[str, Any], media: dict[str, Any]) -> bool:
    if "example" in media or "examples" in media:
        return True
    return "examples" in _resolve(schema, media.get("schema", {}))


def test_every_endpoint_of_the_users_path_is_there(schema: dict[str, Any]) -> None:
    expected = {
        ("post", "/generate/faces"),
        ("post", "/generate/digits"),
        ("post", "/classify/target-domain"),
        ("get", "/jobs/{job_id}"),
        ("get", "/jobs/{job_id}/images/{name}"),
        ("get", "/jobs/{job_id}/predictions.csv"),
        ("get", "/jobs/{job_id}/events"),
        ("post", "/jobs/{job_id}/cancel"),
        ("get", "/models"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    }
    assert {(method, path) for method, path, _ in _operations(schema)} == expected


def test_every_route_has_a_summary_a_description_and_a_tag(schema: dict[str, Any]) -> None:
    for method, path, op in _operations(schema):
        assert op.get("summary"), f"{method} {path} has no summary"
        assert len(op.get("description", "")) > 40, f"{method} {path} has no real description"
        assert op.get("tags"), f"{method} {path} has no tag"
        known = {tag["name"] for tag in schema["tags"]}
        assert set(op["tags"]) <= known, f"{method} {path} has an undeclared tag"


def test_every_route_has_a_success_example(schema: dict[str, Any]) -> None:
    for method, path, op in _operations(schema):
        success = op["responses"].get("200")
        assert success, f"{method} {path} documents no 200"
        assert success["content"], f"{method} {path}: 200 has no content"
        for media_type, media in success["content"].items():
            assert _has_example(schema, media), f"{method} {path}: 200 {media_type} has no example"


def test_every_parameter_is_described_with_an_example(schema: dict[str, Any]) -> None:
    for method, path, op in _operations(schema):
        for parameter in op.get("parameters", []):
            where = f"{method} {path} parameter {parameter['name']!r}"
            assert parameter.get("description"), f"{where} has no description"
            assert "examples" in parameter.get("schema", {}) or "example" in parameter, f"{where} has no example"


def test_every_route_documents_its_error_responses_with_examples(schema: dict[str, Any]) -> None:
    for method, path, op in _operations(schema):
        if (method, path) in NO_ERROR_RESPONSES or path == "/metrics":
            continue
        errors = {code: r for code, r in op["responses"].items() if code[0] in "45"}
        assert errors, f"{method} {path} documents no error response"
        for code, response in errors.items():
            assert response.get("description"), f"{method} {path} {code} has no description"
            media = response["content"]["application/json"]
            assert _has_example(schema, media), f"{method} {path} {code} has no example"


@pytest.mark.parametrize(
    "method, path, codes",
    [
        ("post", "/generate/faces", {"200", "202", "422", "503"}),
        ("post", "/generate/digits", {"200", "202", "422", "503"}),
        ("post", "/classify/target-domain", {"200", "202", "413", "415", "422", "503"}),
        ("get", "/jobs/{job_id}", {"200", "404"}),
        ("get", "/jobs/{job_id}/images/{name}", {"200", "404", "409"}),
        ("get", "/readyz", {"200", "503"}),
    ],
)
def test_the_responses_each_route_can_give(schema: dict[str, Any], method: str, path: str, codes: set[str]) -> None:
    assert codes <= set(schema["paths"][path][method]["responses"])


def test_generate_endpoints_offer_the_png_and_classify_the_csv(schema: dict[str, Any]) -> None:
    for path in ("/generate/faces", "/generate/digits"):
        assert "image/png" in schema["paths"][path]["post"]["responses"]["200"]["content"]
    assert "text/csv" in schema["paths"]["/classify/target-domain"]["post"]["responses"]["200"]["content"]


def test_uploads_are_a_multipart_list_of_binary_files(schema: dict[str, Any]) -> None:
    body = schema["paths"]["/classify/target-domain"]["post"]["requestBody"]
    form = _resolve(schema, body["content"]["multipart/form-data"]["schema"])
    files = form["properties"]["files"]
    assert files["type"] == "array" and files["description"]
    item = files["items"]
    assert item.get("format") == "binary" or item.get("contentMediaType") == "application/octet-stream"
    assert form["required"] == ["files"]
