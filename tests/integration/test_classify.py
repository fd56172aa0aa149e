"""POST /classify/target-domain end to end, on untrained networks (shapes, names, formats)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .helpers import files_field, png_bytes
from .stack import Stack

pytestmark = pytest.mark.integration

rng = np.random.default_rng(0)
UPLOADS = [
    ("rgb_32.png", png_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "image/png"),
    ("gray_16.png", png_bytes(rng.integers(0, 256, (16, 16), dtype=np.uint8)), "image/png"),
    ("photo.jpg", png_bytes(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8), "JPEG"), "image/jpeg"),
    # Content type and extension are not trusted: this PNG claims to be a JPEG.
    ("mislabelled.jpeg", png_bytes(Image.new("LA", (40, 28), (200, 128))), "image/jpeg"),
    ("palette.png", png_bytes(Image.new("P", (28, 28), 3)), "application/octet-stream"),
]


def test_each_image_gets_a_label_and_ten_probabilities(service: Stack) -> None:
    response = service.client.post("/classify/target-domain", params={"target": "usps"}, files=files_field(UPLOADS))
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["kind"] == "classify" and job["params"] == {"target": "usps", "files": len(UPLOADS)}
    result = job["result"]
    assert (result["target"], result["checkpoint"]) == ("usps", "dann-usps")
    assert [p["image_name"] for p in result["predictions"]] == [name for name, _, _ in UPLOADS]
    for prediction in result["predictions"]:
        probabilities = prediction["probabilities"]
        assert len(probabilities) == 10 and all(0 <= p <= 1 for p in probabilities)
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)
        assert prediction["label"] == int(np.argmax(probabilities))
    csv = service.client.get(result["csv_url"])
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    rows = csv.text.strip().splitlines()
    assert rows[0] == "image_name,label"
    assert rows[1:] == [f"{p['image_name']},{p['label']}" for p in result["predictions"]]


def test_accept_csv_returns_the_course_csv(service: Stack) -> None:
    response = service.client.post(
        "/classify/target-domain",
        params={"target": "svhn"},
        files=files_field(UPLOADS[:2]),
        headers={"Accept": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    header, *rows = response.text.strip().splitlines()
    assert header == "image_name,label"
    assert [row.split(",")[0] for row in rows] == ["rgb_32.png", "gray_16.png"]
    assert all(0 <= int(row.split(",")[1]) <= 9 for row in rows)


def test_file_names_are_reduced_to_their_base_name(service: Stack) -> None:
    files = [
        ("files", ("C:\\Users\\me\\digits\\00042.png", UPLOADS[0][1], "image/png")),
        ("files", ("../../etc/x.png", UPLOADS[0][1], "image/png")),
    ]
    response = service.client.post("/classify/target-domain", params={"target": "svhn"}, files=files)
    assert response.status_code == 200, response.text
    assert [p["image_name"] for p in response.json()["result"]["predictions"]] == ["00042.png", "x.png"]


def test_same_image_same_prediction(service: Stack) -> None:
    files = files_field([UPLOADS[0], ("again.png", UPLOADS[0][1], "image/png")])
    predictions = service.client.post("/classify/target-domain", params={"target": "svhn"}, files=files).json()[
        "result"
    ]["predictions"]
    assert predictions[0]["probabilities"] == predictions[1]["probabilities"]


def test_large_deep_and_transparent_uploads_become_the_same_digit(service: Stack) -> None:
    """Each upload is decoded to its 28x28 digit in the API; the worker gets one small array, not the images."""
    bar = np.full((56, 56), 255, np.uint8)
    bar[8:48, 22:34] = 0  # a dark "1" on white
    big = np.asarray(Image.fromarray(bar).resize((1000, 1000), Image.Resampling.NEAREST))  # the stack's MAX_IMAGE_PIXELS
    sixteen = Image.fromarray(bar.astype(np.uint16) * 257)  # a 16-bit grey PNG: white stays white, black black
    transparent = Image.fromarray(np.dstack([np.zeros_like(bar)] * 3 + [255 - bar]), "RGBA")  # ink on nothing
    uploads = [
        ("plain.png", png_bytes(bar), "image/png"),
        ("big.png", png_bytes(big), "image/png"),
        ("big.jpg", png_bytes(big, "JPEG"), "image/jpeg"),
        ("sixteen.png", png_bytes(sixteen), "image/png"),
        ("transparent.png", png_bytes(transparent), "image/png"),
        ("n" * 300 + ".png", png_bytes(bar), "image/png"),
    ]
    response = service.client.post("/classify/target-domain", params={"target": "usps"}, files=files_field(uploads))
    assert response.status_code == 200, response.text
    job = response.json()
    predictions = job["result"]["predictions"]
    assert predictions[-1]["image_name"] == "n" * 196 + ".png"  # cut to 200 characters, extension kept
    # The same picture at any size, depth or transparency is the same digit for the model (within 1/255 a pixel).
    reference = predictions[0]["probabilities"]
    for prediction in predictions[1:]:
        assert max(abs(p - q) for p, q in zip(prediction["probabilities"], reference)) < 0.05, prediction
    inputs = service.results_dir / job["id"] / "inputs"
    assert [path.name for path in inputs.iterdir()] == ["digits.npy"]
    stored = np.load(inputs / "digits.npy")
    assert stored.shape == (len(uploads), 28, 28, 3) and stored.dtype == np.uint8
    assert np.abs(stored.astype(int) - stored[0].astype(int)).max() <= 2
