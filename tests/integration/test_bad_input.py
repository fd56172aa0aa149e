"""The bad-input catalogue: each gets a 4xx saying what to fix, and the service keeps serving."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from .helpers import bomb_png, files_field, png_bytes
from .stack import PLUMBING_LIMITS, Stack

pytestmark = pytest.mark.integration

GOOD = png_bytes(np.full((28, 28, 3), 128, dtype=np.uint8))
CLASSIFY = "/classify/target-domain?target=svhn"


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("L", (28, 28)).save(out, format="GIF")
    return out.getvalue()


def _noise_png(side: int) -> bytes:
    return png_bytes(np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8))


UPLOAD_CASES = {
    "not an image": ([("notes.txt", b"digits: 3, 1, 4", "image/png")], 415, ["notes.txt", "PNG or JPEG"]),
    "a GIF": ([("anim.gif", _gif(), "image/gif")], 415, ["GIF", "PNG or JPEG"]),
    "an empty file": ([("empty.png", b"", "image/png")], 422, ["empty"]),
    "a truncated PNG": ([("cut.png", _noise_png(64)[:600], "image/png")], 422, ["cut.png", "truncated or corrupt"]),
    "a truncated JPEG": (
        [
            (
                "cut.jpg",
                png_bytes(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG")[:900],
                "image/jpeg",
            )
        ],
        422,
        ["cut.jpg", "truncated or corrupt"],
    ),
    "an image bomb": (
        [("bomb.png", bomb_png(50_000, 50_000), "image/png")],
        413,
        ["bomb.png", "MAX_IMAGE_PIXELS", "downscale"],
    ),
    "an image over the pixel limit": (
        [("wide.png", bomb_png(5_000, 5_000), "image/png")],
        413,
        ["5000x5000", "MAX_IMAGE_PIXELS"],
    ),
    "too many files": (
        [(f"{i}.png", GOOD, "image/png") for i in range(PLUMBING_LIMITS["max_files"] + 1)],
        413,
        ["MAX_FILES", "split"],
    ),  # type: ignore[operator]
    "a file over the size limit": ([("big.png", _noise_png(300), "image/png")], 413, ["big.png", "MAX_FILE_BYTES"]),
    "one bad file among good ones": (
        [("ok.png", GOOD, "image/png"), ("bad.png", b"\x89PNG\r\n\x1a\nnope", "image/png")],
        422,
        ["bad.png"],
    ),
}


@pytest.mark.parametrize("files, status, words", UPLOAD_CASES.values(), ids=UPLOAD_CASES.keys())
def test_bad_uploads(service: Stack, files: list, status: int, words: list[str]) -> None:
    response = service.client.post(CLASSIFY, files=files_field(files))
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail


def test_no_files_at_all(service: Stack) -> None:
    response = service.client.post(CLASSIFY)
    assert response.status_code == 422
    assert "'files'" in response.json()["detail"] and "required" in response.json()["detail"]


PARAMETER_CASES = {
    "label above 9": ("/generate/digits", {"label": 10}, ["'label'", "less than or equal to 9"]),
    "label not a number": ("/generate/digits", {"label": "three"}, ["'label'", "integer"]),
    "n of zero": ("/generate/faces", {"n": 0}, ["'n'", "greater than or equal to 1"]),
    "n above 64 faces": ("/generate/faces", {"n": 65}, ["'n'", "less than or equal to 64"]),
    "unknown face model": ("/generate/faces", {"model": "C"}, ["'model'", "'A' or 'B'"]),
    "negative seed": ("/generate/faces", {"seed": -1}, ["'seed'"]),
    "misspelt parameter": ("/generate/digits", {"lable": 3}, ["'lable'", "not a parameter"]),
    "too many digits": ("/generate/digits", {"n": 11}, ["110 images", "MAX_DIGIT_IMAGES"]),
    "steps with ddpm": ("/generate/digits", {"sampler": "ddpm", "steps": 10}, ["steps", "ddim"]),
    "unknown sampler": ("/generate/digits", {"sampler": "euler"}, ["'sampler'", "'ddim'", "'unipc'"]),
    "half a guidance interval": ("/generate/digits", {"guidance_from": 50}, ["guidance_from", "guidance_to"]),
    "empty guidance interval": (
        "/generate/digits",
        {"guidance_from": 300, "guidance_to": 100},
        ["guidance_from=300", "empty"],
    ),
    "more steps than the model has": (
        "/generate/digits",
        {"label": 1, "steps": 100},
        ["steps=100", "40 diffusion timesteps"],
    ),
    "guidance out of range": ("/generate/digits", {"guidance": 50}, ["'guidance'"]),
    "wait above the limit": ("/generate/faces", {"wait": 1000}, ["wait=1000", "MAX_WAIT_S"]),
    "negative wait": ("/generate/faces", {"wait": -1}, ["'wait'"]),
    "unknown target": (CLASSIFY.split("?")[0], {"target": "mnist"}, ["'target'", "'svhn' or 'usps'"]),
    "missing target": (CLASSIFY.split("?")[0], {}, ["'target'", "required"]),
}


@pytest.mark.parametrize("path, params, words", PARAMETER_CASES.values(), ids=PARAMETER_CASES.keys())
def test_bad_parameters(service: Stack, path: str, params: dict, words: list[str]) -> None:
    files = files_field([("ok.png", GOOD, "image/png")]) if path.startswith("/classify") else None
    response = service.client.post(path, params=params, files=files)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


def test_unknown_routes_and_methods(service: Stack) -> None:
    missing = service.client.get("/generate/cats")
    assert missing.status_code == 404 and "/docs" in missing.json()["detail"]
    wrong_method = service.client.get("/generate/faces")
    assert wrong_method.status_code == 405 and "GET is not allowed" in wrong_method.json()["detail"]


def test_the_service_keeps_serving_after_all_that(service: Stack) -> None:
    assert service.client.get("/healthz").status_code == 200
    assert service.client.get("/readyz").status_code == 200
    response = service.client.post(CLASSIFY, files=files_field([("ok.png", GOOD, "image/png")]))
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert all(worker.poll() is None for worker in service.workers.values())
