"""GET /: the playground page, plain HTML, CSS and JavaScript from ``api/static`` (no CDN, no build step).

It calls the public API like any client (with the API key a user enters, when the
service asks for one), so the page itself is open, as the docs are.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
STATIC_PREFIX = "/playground"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def playground() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def static_files() -> StaticFiles:
    """The page's script and style sheet, mounted at ``STATIC_PREFIX``."""
    return StaticFiles(directory=STATIC_DIR)
