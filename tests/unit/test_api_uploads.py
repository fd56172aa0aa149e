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
from api.parsing.uploads import MAX_NAME_CHARS, check_image, clean_name
from contract.digits import DIGIT_SIZE
from contract.digits_io import digit_from_image
from contract.files import INPUTS_FILE

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
        (NOISE.convert("LA"), "PNG"),
        (NOISE.convert("P"), "PNG"),
        (NOISE.convert("1"), "PNG"),
        (NOISE.convert("I;16"), "PNG"),
        (NOISE.convert("CMYK"), "JPEG"),
        (NOISE, "MPO"),
    ],
)
def test_png_and_jpeg_of_any_mode_become_the_models_digit(image: Image.Image, fmt: str) -> None:
    data = encode(image, fmt)
    decoded = check_image("x", data, max_pixels=LIMIT)
    assert decoded.dtype == np.uint8 and decoded.shape == (DIGIT_SIZE, DIGIT_SIZE, 3)
    # The API decodes with the one shared preprocessing, nothing of its own.
    assert np.array_equal(decoded, digit_from_image(Image.open(io.BytesIO(data))))


def test_a_large_upload_is_decoded_straight_to_the_digit() -> None:
    flat = Image.new("L", (4096, 4096), 255)
    flat.paste(0, (1500, 1000, 2600, 3000))  # a dark bar, like a "1"
    for fmt in ("PNG", "JPEG"):
        digit = check_image("big", encode(flat, fmt), max_pixels=4096 * 4096)
        assert digit[:, 14].min() < 10 and digit[:, 2].min() > 245


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


def _with_chunk(png: bytes, kind: bytes, data: bytes, crc: int) -> bytes:
    header_end = 8 + 25  # signature, then IHDR (length, type, 13 bytes, CRC)
    return png[:header_end] + struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc) + png[header_end:]


def test_errors_never_quote_the_file() -> None:
    # Pillow's own message names the broken chunk ("... in b'sEcR'"): the client gets only what to do.
    data = _with_chunk(encode(NOISE), b"sEcR", b"payload", crc=0)
    with pytest.raises(InvalidImage) as caught:
        check_image("f.png", data, max_pixels=LIMIT)
    assert "sEcR" not in caught.value.detail and "payload" not in caught.value.detail
    assert "re-export" in caught.value.detail


def test_pixels_that_cannot_be_a_digit_are_a_415_saying_what_to_send(monkeypatch: pytest.MonkeyPatch) -> None:
    # No PNG or JPEG decodes to float pixels with today's Pillow: stand in a decoder that does.
    import api.parsing.uploads

    def float_decoder(image: Image.Image) -> np.ndarray:
        image.load()
        return digit_from_image(image.convert("F"))

    monkeypatch.setattr(api.parsing.uploads, "digit_from_image", float_decoder)
    with pytest.raises(UnsupportedImage) as caught:
        check_image("f.png", encode(NOISE.convert("L")), max_pixels=LIMIT)
    assert caught.value.detail.startswith("'f.png': ") and "floating-point" in caught.value.detail
    assert "send an 8- or 16-bit PNG" in caught.value.detail


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("00001.png", "00001.png"),
        ("C:\\Users\\me\\3.png", "3.png"),
        ("../../etc/passwd", "passwd"),
        ("a b;rm -rf.png", "a b_rm -rf.png"),
        ("", "image_0007.png"),
        (None, "image_0007.png"),
        ("x" * 300 + ".png", "x" * (MAX_NAME_CHARS - 4) + ".png"),  # cut, keeping the extension
        ("y" * 300, "y" * MAX_NAME_CHARS),
        ("a." + "b" * 300, ("a." + "b" * 300)[:MAX_NAME_CHARS]),  # no extension worth keeping
        ("é" * 250 + ".jpeg", "é" * (MAX_NAME_CHARS - 5) + ".jpeg"),
    ],
)
def test_clean_name(raw: str | None, expected: str) -> None:
    assert clean_name(raw, 7) == expected


def test_inputs_are_stored_as_one_small_array(tmp_path: Path) -> None:
    import asyncio

    from api.service.files import ResultFiles
    from contract.store import LocalStore

    digits = [
        check_image("a.jpg", encode(NOISE, "JPEG"), max_pixels=LIMIT),
        check_image("b.png", encode(NOISE.convert("L")), max_pixels=LIMIT),
    ]
    assert asyncio.run(ResultFiles(LocalStore(tmp_path)).store_inputs("f" * 32, digits)) == INPUTS_FILE
    stored = np.load(tmp_path / ("f" * 32) / "inputs" / INPUTS_FILE, allow_pickle=False)
    assert stored.dtype == np.uint8 and stored.shape == (2, DIGIT_SIZE, DIGIT_SIZE, 3)
    assert np.array_equal(stored[1], digits[1])


def test_the_process_decodes_at_most_one_upload_per_core_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import api.parsing.uploads

    monkeypatch.setattr(api.parsing.uploads, "DECODE_SLOTS", 2)
    running, most = 0, 0

    async def decode() -> None:
        nonlocal running, most
        async with api.parsing.uploads.decode_slot():
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1

    async def many() -> None:
        await asyncio.gather(*(decode() for _ in range(8)))

    asyncio.run(many())
    assert most == 2
    asyncio.run(many())  # a second event loop gets its own slots
    assert most == 2


def test_a_truncated_jpeg_is_refused_when_decoded_at_a_fraction_too() -> None:
    large = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1000, 1000, 3), dtype=np.uint8))
    data = encode(large, "JPEG")
    assert check_image("ok.jpg", data, max_pixels=LIMIT).shape == (DIGIT_SIZE, DIGIT_SIZE, 3)
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        check_image("cut.jpg", data[: len(data) // 2], max_pixels=LIMIT)
