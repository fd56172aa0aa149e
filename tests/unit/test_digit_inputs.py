"""Uploads -> the DANN's 28x28 digits: every pixel format, the JPEG shortcut, and what is stored for the worker.

"Before" is the path this module replaced: decode the whole file, apply the
EXIF orientation, convert to RGB, resize to 28x28 with Pillow's bilinear filter.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from contract.digits import DIGIT_SIZE
from contract.digits_io import UnsupportedPixels, digit_from_image, digits_from_bytes, digits_to_bytes

SIZE = (40, 48)  # not square, so an orientation mix-up shows


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    return digit_from_image(Image.open(io.BytesIO(data))).astype(int)


def before(image: Image.Image) -> np.ndarray:
    """The replaced path, on a whole decoded image."""
    rgb = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(rgb.resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BILINEAR, reducing_gap=None)).astype(int)


def gray(digit: np.ndarray) -> np.ndarray:
    """A uint8 grey digit as the replaced path made it: replicated to RGB."""
    return before(Image.fromarray(digit.astype(np.uint8)))


@pytest.fixture(scope="module")
def usps(data_source: Path) -> np.ndarray:
    """Real USPS test digits, uint8 (20, 16, 16): white digit on black."""
    import h5py

    with h5py.File(data_source / "usps" / "usps.h5", "r") as data:
        return np.round(data["test"]["data"][:20].reshape(-1, 16, 16) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def svhn(data_source: Path) -> np.ndarray:
    """Real SVHN test digits, uint8 (20, 32, 32, 3)."""
    return np.load(data_source / "svhn" / "svhn_test_0000-7999_32x32.npz")["X"][:20]


@pytest.fixture(scope="module")
def ink(usps: np.ndarray) -> list[np.ndarray]:
    """USPS digits enlarged to ``SIZE``: how much ink each pixel holds."""
    return [np.asarray(Image.fromarray(u).resize(SIZE, Image.Resampling.BICUBIC)) for u in usps[:8]]


# -- ordinary images: the same model input as before ------------------------------------------------------------


def test_real_digits_as_png_or_small_jpeg_give_exactly_the_input_of_before(usps: np.ndarray, svhn: np.ndarray) -> None:
    for digit in [*usps, *svhn]:
        image = Image.fromarray(digit)
        for data in (encode(image), encode(image, "JPEG", quality=90)):
            assert np.array_equal(decode(data), before(Image.open(io.BytesIO(data))))


@pytest.mark.parametrize("side", [1024, 3000])
def test_large_jpegs_are_decoded_at_a_fraction_within_one_level(
    usps: np.ndarray, svhn: np.ndarray, side: int
) -> None:
    """libjpeg's 1/2..1/8 decode (Image.draft) of large photos of real digits moves no input value by more than 1/255."""
    worst = 0
    for digit in [*usps[:5], *svhn[:5]]:
        data = encode(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), "JPEG", quality=95)
        opened = Image.open(io.BytesIO(data))
        fast = digit_from_image(opened).astype(int)
        assert opened.size[0] < side  # it was decoded at a fraction of its size
        worst = max(worst, int(np.abs(fast - before(Image.open(io.BytesIO(data)))).max()))
    assert worst <= 1


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_applied_to_the_small_digit_is_the_same_picture(ink: list[np.ndarray], orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    for digit in ink[:3]:
        data = encode(Image.fromarray(digit), exif=exif)
        assert np.abs(decode(data) - before(Image.open(io.BytesIO(data)))).max() <= 1


def test_jpeg_orientation_turns_a_portrait_photo_upright() -> None:
    # A white bar across the top of the picture as seen, stored rotated: the sensor's rows are its columns.
    upright = np.zeros((280, 140), np.uint8)
    upright[:40] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    digit = decode(encode(stored, "JPEG", exif=exif, quality=95))
    assert digit[:3].min() > 200 and digit[-10:].max() < 30


# -- every Pillow mode becomes the right 8-bit digit, or is refused ----------------------------------------------


def test_grey_and_rgb_are_unchanged(ink: list[np.ndarray]) -> None:
    digit = ink[0]
    assert np.array_equal(decode(encode(Image.fromarray(digit))), gray(digit))
    rgb = np.dstack([digit, 255 - digit, digit // 2])
    assert np.array_equal(decode(encode(Image.fromarray(rgb))), before(Image.fromarray(rgb)))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_grey_is_scaled_by_its_bit_depth_not_clipped(ink: list[np.ndarray], mode: str) -> None:
    for digit in ink:
        # The 16-bit export of the 8-bit digit, with sub-level detail the 8-bit one rounds away.
        detail = np.random.default_rng(0).integers(-128, 128, digit.shape)
        values = np.clip(digit.astype(np.int64) * 257 + detail, 0, 65535)
        if mode == "I;16":  # through a real 16-bit PNG file
            decoded = decode(encode(Image.fromarray(values.astype(np.uint16))))
            assert Image.open(io.BytesIO(encode(Image.fromarray(values.astype(np.uint16))))).mode == "I;16"
        elif mode == "I;16B":
            decoded = digit_from_image(Image.frombytes(mode, SIZE, values.astype(">u2").tobytes())).astype(int)
        else:
            decoded = digit_from_image(Image.fromarray(values.astype(np.int32))).astype(int)
        assert np.abs(decoded - gray(digit)).max() <= 1
        assert decoded.min() < 50  # the bug this replaced: Pillow's conversion clipped every pixel to white


def test_thirty_two_bit_values_beyond_sixteen_bits_are_refused() -> None:
    with pytest.raises(UnsupportedPixels, match="16-bit PNG"):
        digit_from_image(Image.fromarray(np.full(SIZE[::-1], 70_000, np.int32)))


def test_float_images_are_refused_saying_what_to_send() -> None:
    with pytest.raises(UnsupportedPixels, match="floating-point.*PNG"):
        digit_from_image(Image.fromarray(np.zeros(SIZE[::-1], np.float32)))


def _ink_on_white(digit: np.ndarray) -> np.ndarray:
    """The digit drawn in black on white: what a transparent canvas composited onto white must give."""
    return gray(255 - digit)


def test_alpha_is_composited_onto_white(ink: list[np.ndarray]) -> None:
    for digit in ink:
        black = np.zeros_like(digit)
        # Whatever colour hides under fully transparent pixels must not show.
        hidden = np.random.default_rng(1).integers(0, 256, digit.shape).astype(np.uint8) * (digit == 0)
        rgba = Image.fromarray(np.dstack([hidden, hidden, black, digit]), "RGBA")
        la = Image.fromarray(np.dstack([hidden, digit]), "LA")
        for image in (rgba, la):
            assert np.abs(decode(encode(image)) - _ink_on_white(digit)).max() <= 1


def test_transparent_colours_are_composited_onto_white(ink: list[np.ndarray]) -> None:
    for digit in ink:
        mask = digit > 127
        expected = gray(np.where(mask, 0, 255))
        palette = Image.fromarray(mask.astype(np.uint8), "P")
        palette.putpalette([200, 0, 0, 0, 0, 0])  # index 0: red, but transparent
        grey_key = Image.fromarray(np.where(mask, 0, 7).astype(np.uint8))
        rgb_key = Image.fromarray(np.dstack([np.where(mask, 0, 7).astype(np.uint8)] * 3))
        grey16_key = Image.fromarray(np.where(mask, 0, 7).astype(np.uint16))
        for data in (
            encode(palette, transparency=0),
            encode(grey_key, transparency=7),
            encode(rgb_key, transparency=(7, 7, 7)),
            encode(grey16_key, transparency=7),
        ):
            assert np.abs(decode(data) - expected).max() <= 1


def test_palette_one_bit_and_cmyk(ink: list[np.ndarray]) -> None:
    digit = ink[1]
    rgb = np.dstack([digit, digit // 2, 255 - digit])
    palette = Image.fromarray(rgb).quantize(64)
    assert np.array_equal(decode(encode(palette)), before(palette))
    bits = Image.fromarray(digit > 127).convert("1")
    assert np.array_equal(decode(encode(bits)), gray(np.where(digit > 127, 255, 0)))
    cmyk = encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"
    assert np.array_equal(decode(cmyk), before(Image.open(io.BytesIO(cmyk))))
    assert np.abs(decode(cmyk) - before(Image.fromarray(rgb))).max() < 16  # the colours survive the round trip


def test_an_mpo_uses_its_first_picture(ink: list[np.ndarray]) -> None:
    first = Image.fromarray(np.dstack([ink[2]] * 3))
    data = encode(first, "MPO", save_all=True, append_images=[Image.new("RGB", SIZE, (255, 0, 0))], quality=95)
    opened = Image.open(io.BytesIO(data))
    assert opened.format == "MPO" and opened.n_frames == 2
    assert np.array_equal(decode(data), before(Image.open(io.BytesIO(data))))
    assert np.abs(decode(data) - gray(ink[2])).max() < 16  # the digit, not the red second picture


# -- what the API stores and the worker reads -----------------------------------------------------------------


def test_digits_round_trip_through_the_inputs_bytes() -> None:
    digits = np.random.default_rng(0).integers(0, 256, (3, DIGIT_SIZE, DIGIT_SIZE, 3), dtype=np.uint8)
    data = digits_to_bytes(digits)
    assert np.array_equal(digits_from_bytes(data, 3), digits)
    with pytest.raises(ValueError, match="hold 3 digits"):
        digits_from_bytes(data, 4)
    with pytest.raises(ValueError, match="uint8"):
        digits_to_bytes(digits.astype(np.float32))
    wrong = io.BytesIO()
    np.save(wrong, digits[:, :14])
    with pytest.raises(ValueError, match="28, 28, 3"):
        digits_from_bytes(wrong.getvalue(), 3)


def test_the_digit_size_is_the_models_input_size() -> None:
    from models.dann import DANNConfig

    assert DANNConfig().image_size == DIGIT_SIZE
