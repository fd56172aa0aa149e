"""The DANN's input, in one place: any uploaded image -> one 28x28 RGB uint8 digit.

The API decodes each upload with ``digit_from_image`` as it arrives and keeps only
the small result; the worker reads the job's digits back with ``digits_from_bytes`` and
only scales them to [0, 1] (``models.pipelines.digits_from_uint8``). So the API
and the worker cannot disagree on size, filter or colour handling, and no
full-size image outlives its own decode. The module is torch-free: the API imports it.

How each image becomes a digit, in this order:

1. JPEG (and MPO, a JPEG with more frames: its first, primary frame) is decoded
   at 1/2, 1/4 or 1/8 scale by libjpeg (``Image.draft``) when the result stays at
   least ``DRAFT_FACTOR`` x 28 pixels on each side; on real SVHN and USPS digits
   this changes the 28x28 result by at most one level in 255 (a unit test checks it).
   PNG has no such shortcut and is decoded whole, one image at a time.
2. Pixels become 8-bit: 16-bit grey (Pillow's ``I;16``, ``I;16B``, ``I``) is scaled
   by its bit depth (65535 -> 255, rounded, after the resize), not clipped; an
   ``sBIT`` chunk is not read, since PNG writers must scale samples to the full
   depth; palette images are looked
   up; 1-bit black and white becomes 0 / 255; CMYK goes through Pillow's
   conversion. 32-bit float images (``F``) are refused: no PNG or JPEG holds them.
3. Pillow's antialiased BILINEAR resize to 28x28, the filter the training data
   was built with (``training.data.build``). Images with an alpha channel or a
   transparent colour are resized with premultiplied alpha and then composited
   onto ``BACKGROUND`` (white: a dark digit drawn on a transparent canvas stays
   visible, as on a page).
4. The EXIF orientation is applied last, to the 28x28 digit: the same picture as
   rotating first (within one level, the rounding between the resize's two passes),
   without a full-size copy.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image

from .digits import DIGIT_SIZE

RESAMPLE = Image.Resampling.BILINEAR
DRAFT_FACTOR = 8
BACKGROUND = (255, 255, 255)

_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class UnsupportedPixels(ValueError):
    """An image whose pixel format cannot become an 8-bit digit; the message says what to send instead."""


def digit_from_image(image: Image.Image) -> np.ndarray:
    """An opened image (before ``load()``, so a JPEG can be drafted) -> uint8 (28, 28, 3).

    Raises ``UnsupportedPixels`` for pixel formats it refuses, and whatever Pillow
    raises for a truncated or corrupt file (``OSError`` and friends).
    """
    size = (DIGIT_SIZE, DIGIT_SIZE)
    box = None
    if image.format in ("JPEG", "MPO"):
        want = DIGIT_SIZE * DRAFT_FACTOR
        drafted = image.draft(image.mode, (want, want))
        if drafted is not None:
            box = drafted[1]  # the drafted pixels that cover the original picture
    image.load()
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if image.mode in _SIXTEEN_BIT and "transparency" not in image.info:
        # Resized at full precision, scaled to 8 bits after.
        small = Image.fromarray(_scale16(np.asarray(_resized(_checked16(image), size, box))))
    else:
        small = _resized(_eight_bit(image), size, box)
    if small.mode in ("LA", "RGBA"):
        small = Image.alpha_composite(Image.new("RGBA", size, (*BACKGROUND, 255)), small.convert("RGBA"))
    digit = small.convert("RGB")
    if orientation in _ORIENTATION:
        digit = digit.transpose(_ORIENTATION[orientation])
    return np.array(digit, dtype=np.uint8)


def _resized(image: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float] | None) -> Image.Image:
    if image.size == size and box is None:
        return image
    return image.resize(size, RESAMPLE, box=box, reducing_gap=None)


def _checked16(image: Image.Image) -> Image.Image:
    """A 16-bit grey image in a mode Pillow resizes correctly: ``I;16`` or ``I``."""
    if image.mode == "I":  # 32 bits of room: Pillow's older mode for 16-bit PNGs
        low, high = image.getextrema()
        if low < 0 or high > 65535:  # type: ignore[operator]
            raise UnsupportedPixels("it has 32-bit integer pixels outside 0..65535: send an 8- or 16-bit PNG")
        return image
    # Pillow resizes big-endian I;16B as if it were little-endian (scrambled values); I is safe.
    return image if image.mode == "I;16" else image.convert("I")


def _scale16(values: np.ndarray) -> np.ndarray:
    # 0..65535 -> 0..255, rounded: the 8-bit image a 16-bit export of it came from, within one level.
    wide = values.astype(np.int64)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _eight_bit(image: Image.Image) -> Image.Image:
    """The image as L, RGB, LA or RGBA: modes that resize correctly (16-bit grey without transparency never comes here)."""
    mode = image.mode
    transparent = "transparency" in image.info
    if mode in _SIXTEEN_BIT:  # with a transparent grey level: rare enough to convert at full size
        values = np.asarray(_checked16(image))
        grey = Image.fromarray(_scale16(values))
        alpha = Image.fromarray(np.where(values == image.info["transparency"], 0, 255).astype(np.uint8))
        return Image.merge("LA", (grey, alpha))
    if mode == "F":
        raise UnsupportedPixels("it has 32-bit floating-point pixels: send an 8- or 16-bit PNG, or a JPEG")
    if mode in ("L", "RGB"):  # a transparent colour becomes an alpha channel
        return image.convert("LA" if mode == "L" else "RGBA") if transparent else image
    if mode in ("LA", "RGBA"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):
        return image.convert("RGBA" if transparent or mode == "PA" else "RGB")
    if mode in ("La", "RGBa"):
        return image.convert("RGBA")
    try:  # CMYK, YCbCr, and whatever else Pillow can turn into RGB
        return image.convert("RGB")
    except ValueError as err:
        raise UnsupportedPixels(f"its pixel format {mode} cannot be read as a colour image: send RGB or grey") from err


def digits_to_bytes(digits: np.ndarray) -> bytes:
    """A job's digits as the ``.npy`` bytes its worker reads back (``digits_from_bytes``)."""
    _check(digits)
    out = io.BytesIO()
    np.save(out, digits, allow_pickle=False)
    return out.getvalue()


def digits_from_bytes(data: bytes, count: int) -> np.ndarray:
    """The ``count`` digits the API stored: uint8 (count, 28, 28, 3)."""
    digits = np.load(io.BytesIO(data), allow_pickle=False)
    _check(digits)
    if digits.shape[0] != count:
        raise ValueError(f"the stored inputs hold {digits.shape[0]} digits, the job names {count}")
    return digits


def _check(digits: np.ndarray) -> None:
    if digits.dtype != np.uint8 or digits.ndim != 4 or digits.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE, 3):
        raise ValueError(
            f"digits must be uint8 (N, {DIGIT_SIZE}, {DIGIT_SIZE}, 3), got {digits.dtype} {digits.shape}"
        )
