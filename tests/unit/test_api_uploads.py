"""Upload checks: every kind of bad file gets the 4xx that says what to fix."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.errors import InvalidImage, TooLarge, UnsupportedImage
from api.uploads import CheckedImage, check_image, clean_name, store_inputs

LIMIT = 1_000_000


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "image, fmt",
    [
        (NOISE, "PNG"),
        (NOISE, "JPEG"),
        (NOISE.convert("L"), "PNG"),
        (NOISE.convert("L"), "JPEG"),
        (NOISE.convert("RGBA"), "PNG"),
        (NOISE.convert("P"), "PNG"),
        (NOISE.convert("I;16"), "PNG"),
        (NOISE.convert("CMYK"), "JPEG"),
    ],
)
def test_png_and_jpeg_of_any_mode_become_rgb(image: Image.Image, fmt: str) -> None:
    decoded = check_image("x", encode(image, fmt), max_pixels=LIMIT)
    assert decoded.mode == "RGB" and decoded.size == (40, 48)


def test_jpeg_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: a portrait photo stored sideways
    decoded = check_image("phone.jpg", encode(NOISE, "JPEG", exif=exif), max_pixels=LIMIT)
    assert decoded.size == (48, 40)


@pytest.mark.parametrize(
    "data, error, words",
    [
        (b"", InvalidImage, ["empty"]),
        (b"hello, world", UnsupportedImage, ["PNG or JPEG"]),
        (encode(NOISE, "GIF"), UnsupportedImage, ["GIF"]),
        (encode(NOISE, "BMP"), UnsupportedImage, ["BMP"]),
        (encode(NOISE, "PNG")[:300], InvalidImage, ["truncated or corrupt"]),
        (encode(NOISE, "JPEG")[:400], InvalidImage, ["truncated or corrupt"]),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, InvalidImage, ["starts like a PNG", "corrupt"]),
        (header_only_png(2_000, 2_000), TooLarge, ["2000x2000", "MAX_IMAGE_PIXELS"]),
        (header_only_png(100_000, 100_000), TooLarge, ["MAX_IMAGE_PIXELS", "downscale"]),
    ],
)
def test_bad_files(data: bytes, error: type[Exception], words: list[str]) -> None:
    with pytest.raises(error) as caught:
        check_image("f.png", data, max_pixels=LIMIT)
    for word in words:
        assert word in caught.value.detail  # type: ignore[attr-defined]
    assert "'f.png'" in caught.value.detail  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("00001.png", "00001.png"),
        ("C:\\Users\\me\\3.png", "3.png"),
        ("../../etc/passwd", "passwd"),
        ("a b;rm -rf.png", "a b_rm -rf.png"),
        ("", "image_0007.png"),
        (None, "image_0007.png"),
        ("x" * 300 + ".png", "x" * 200),
    ],
)
def test_clean_name(raw: str | None, expected: str) -> None:
    assert clean_name(raw, 7) == expected


def test_inputs_are_stored_as_numbered_pngs(tmp_path: Path) -> None:
    images = [CheckedImage("a.jpg", NOISE), CheckedImage("b.png", NOISE.convert("L").convert("RGB"))]
    names = store_inputs(tmp_path, "f" * 32, images)
    assert names == ["0000.png", "0001.png"]
    for name in names:
        with Image.open(tmp_path / ("f" * 32) / "inputs" / name) as stored:
            assert stored.format == "PNG" and stored.size == (40, 48)
