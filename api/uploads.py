"""Checking uploaded images before a job is queued.

The content type and file extension are not trusted: each file is decoded with
Pillow. The pixel count is checked from the header before any pixel is decoded
(an image bomb is a few KB that would decode to gigabytes), then the whole file is
verified and decoded, so truncated files fail here with a 4xx and not in a worker.
Accepted images are stored as normalised RGB PNGs under the job's ``inputs/``
folder; the task message carries only their names.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from workers.protocol import INPUTS_DIR

from .errors import InvalidImage, TooLarge, UnsupportedImage

ACCEPTED_FORMATS = {"PNG", "JPEG"}
_MAGIC = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}
_UNSAFE = re.compile(r"[^\w.\- ()+,@]")


@dataclass(frozen=True)
class CheckedImage:
    name: str  # the client's file name, cleaned, as it will appear in results and the CSV
    image: Image.Image  # RGB


def clean_name(raw: str | None, index: int) -> str:
    # Browsers on Windows may send the full path; keep the base name only.
    base = (raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = _UNSAFE.sub("_", base)[:200]
    return base or f"image_{index:04d}.png"


def check_image(name: str, data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode one upload or raise the 4xx that says what is wrong with it."""
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
                image.load()
                rgb = ImageOps.exif_transpose(image).convert("RGB")
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
            raise InvalidImage(f"{name!r} is truncated or corrupt ({err}): re-export or re-send the file") from err
    return rgb


def store_inputs(results_dir: Path, job_id: str, images: list[CheckedImage]) -> list[str]:
    """Write the checked images where the worker reads them; returns their stored names."""
    folder = Path(results_dir) / job_id / INPUTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, checked in enumerate(images):
        stored = f"{index:04d}.png"
        checked.image.save(folder / stored, format="PNG", compress_level=1)
        names.append(stored)
    return names
