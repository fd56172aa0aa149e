"""Checking uploaded images before a job is queued.

The content type and file extension are not trusted: each file is decoded with
Pillow. The pixel count is checked from the header before any pixel is decoded
(an image bomb is a few KB that would decode to gigabytes), then the file is
verified and decoded, so truncated files fail here with a 4xx and not in a worker.

Each upload is decoded on its own, straight down to the 28x28 RGB digit the
model reads (``contract.digits_io``), and only that digit is kept: a request of
many large images holds one full-size image at a time, and the whole process at
most ``DECODE_SLOTS`` (one per core: decoding is CPU-bound, so more at once would
only add memory; Pillow holds RGB at 4 bytes a pixel, 64 MiB at 4096 x 4096).
A job's digits are stored as one small array under its ``inputs/`` folder; the
task message carries its name.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import warnings
import weakref

import numpy as np
from PIL import Image, UnidentifiedImageError

from api.errors import InvalidImage, TooLarge, UnsupportedImage
from contract.digits_io import UnsupportedPixels, digit_from_image

log = logging.getLogger(__name__)

DECODE_SLOTS = os.cpu_count() or 1
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

# MPO is how cameras store stereo or multi-picture JPEGs: a JPEG whose first frame is the picture.
ACCEPTED_FORMATS = {"PNG", "JPEG", "MPO"}
_MAGIC = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}
_UNSAFE = re.compile(r"[^\w.\- ()+,@]")
MAX_NAME_CHARS = 200  # longer names are cut, keeping their extension
_MAX_EXTENSION_CHARS = 16


def clean_name(raw: str | None, index: int) -> str:
    """The name an upload gets in results and the CSV: its base name, odd characters as ``_``, at most 200 characters."""
    # Browsers on Windows may send the full path; keep the base name only.
    base = _UNSAFE.sub("_", (raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip())
    if len(base) > MAX_NAME_CHARS:
        stem, dot, extension = base.rpartition(".")
        if dot and stem and len(extension) < _MAX_EXTENSION_CHARS:
            base = stem[: MAX_NAME_CHARS - len(extension) - 1] + dot + extension
        else:
            base = base[:MAX_NAME_CHARS]
    return base or f"image_{index:04d}.png"


def decode_slot() -> asyncio.Semaphore:
    """Hold one while decoding an upload: bounds the full-size images the process decodes at once."""
    loop = asyncio.get_running_loop()  # one semaphore per event loop (tests run several apps in one process)
    if loop not in _slots:
        _slots[loop] = asyncio.Semaphore(DECODE_SLOTS)
    return _slots[loop]


def check_image(name: str, data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode one upload to the model's uint8 (28, 28, 3) digit, or raise the 4xx that says what is wrong with it."""
    if not data:
        raise InvalidImage(f"{name!r} is empty: attach the image file itself")
    with warnings.catch_warnings():
        # Our own pixel limit below is stricter than Pillow's bomb warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt, (width, height) = probe.format, probe.size
                if fmt not in ACCEPTED_FORMATS:
                    raise UnsupportedImage(f"{name!r} is a {fmt} image: send PNG or JPEG")
                if width * height > max_pixels:
                    raise TooLarge(
                        f"{name!r} is {width}x{height} = {width * height:,} pixels, above the limit of "
                        f"{max_pixels:,} (MAX_IMAGE_PIXELS): downscale it; digits are classified at 28x28 anyway"
                    )
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                digit = digit_from_image(image)
        except UnsupportedPixels as err:
            raise UnsupportedImage(f"{name!r}: {err}") from err
        except UnidentifiedImageError as err:
            claimed = next((fmt for fmt, magic in _MAGIC.items() if data.startswith(magic)), None)
            if claimed:
                raise InvalidImage(
                    f"{name!r} starts like a {claimed} but is corrupt: re-export or re-send the file"
                ) from err
            raise UnsupportedImage(f"{name!r} is not an image Pillow can read: send PNG or JPEG") from err
        except Image.DecompressionBombError as err:
            # Pillow's own guard fires in open() for sizes far above ours.
            raise TooLarge(
                f"{name!r} has more pixels than the limit of {max_pixels:,} (MAX_IMAGE_PIXELS) ({err}): downscale it"
            ) from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            # Pillow's own message may quote bytes of the file (a chunk name, a marker): it goes to the log only.
            log.info("upload %r rejected: %s: %s", name, type(err).__name__, err)
            raise InvalidImage(f"{name!r} is truncated or corrupt: re-export or re-send the file") from err
    return digit
