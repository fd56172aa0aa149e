"""A person's first look: /docs in a real browser (Debian's chromium driven by Playwright).

The page must render from the service alone (no CDN), list every endpoint, and
let a user try one: "Try it out" on /healthz executes and shows the response.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .stack import Stack

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: `apt-get install chromium` (CI installs it) or set CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        yield page
        browser.close()


def test_docs_render_offline_and_try_it_out(service: Stack, page, tmp_path: Path) -> None:
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(service.base_url) else outside.append(r.url))
    page.goto(f"{service.base_url}/docs", wait_until="networkidle")
    page.wait_for_selector(".opblock", timeout=20_000)
    text = page.inner_text("body")
    for path in ("/generate/faces", "/generate/digits", "/classify/target-domain", "/jobs/{job_id}", "/healthz", "/readyz", "/models"):
        assert path in text, f"{path} missing from /docs"
    assert not outside, f"/docs fetched from outside the service: {outside}"

    block = page.locator(".opblock", has_text="/healthz").first
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    page.wait_for_selector(".live-responses-table tbody .response-col_status", timeout=20_000)
    assert "200" in block.locator(".live-responses-table tbody .response-col_status").first.inner_text()
    page.screenshot(path=str(Path(os.environ.get("DOCS_SCREENSHOT", tmp_path / "docs.png"))))
