"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import io
import struct
import time
import zlib
from typing import Any

import httpx
import numpy as np
from PIL import Image


def png_bytes(image: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def open_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def fetch_png(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return open_png(response.content)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def bomb_png(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    body = zlib.compress(b"\x00" * 1024)  # far too little data, which never gets decoded
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def poll(client: httpx.Client, url: str, timeout: float = 120.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GET ``url`` until the job has finished; returns it and every progress seen on the way."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if job.get("progress"):
            seen.append(job["progress"])
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job, seen
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not finish within {timeout} s")


def files_field(items: list[tuple[str, bytes, str]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, media)) for name, data, media in items]
