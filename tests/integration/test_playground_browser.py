"""The playground page at / in a real browser (Debian's chromium driven by Playwright), against the
real workers: faces, digits drawn live from the event stream (and cancelled from the page), classification
of uploads and of a drawing, the API's own error messages, and nothing fetched from outside the service.

``make screenshots`` runs the last test with ``SCREENSHOT_DIR`` set, on the shipped models, for the README.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import png_bytes
from .stack import Stack

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: `apt-get install chromium` (CI installs it) or set CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser, base_url: str):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.outside = []  # type: ignore[attr-defined]
    page.on("request", lambda r: None if r.url.startswith((base_url, "data:", "blob:")) else page.outside.append(r.url))
    page.goto(f"{base_url}/", wait_until="networkidle")
    return page


def loaded(page, selector: str) -> bool:  # type: ignore[no-untyped-def]
    return page.eval_on_selector(selector, "img => !img.hidden && img.complete && img.naturalWidth > 0")


def test_faces_panel_draws_the_grid(service: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    page = open_page(browser, service.base_url)
    page.fill("#faces input[name=n]", "4")
    page.fill("#faces input[name=seed]", "3")
    page.click("#faces button[type=submit]")
    page.wait_for_function("() => { const i = document.querySelector('#faces .grid'); return !i.hidden && i.naturalWidth > 0 }")
    assert "4 faces of model B, seed 3" in page.inner_text("#faces .meta")
    assert page.is_hidden("#faces .error")
    assert not page.outside, page.outside  # type: ignore[attr-defined]
    page.close()


def test_digits_frames_arrive_live_before_the_job_ends(service: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    page = open_page(browser, service.base_url)
    page.wait_for_function("() => document.querySelectorAll('#digits select[name=sampler] option').length > 1")
    page.select_option("#digits select[name=sampler]", "ddpm")
    page.fill("#digits input[name=n]", "50")
    page.click("#digits button[type=submit]")
    page.wait_for_selector("#digits .strip img")
    assert page.is_hidden("#digits .grid"), "the first frame came only with the finished job"
    first_delay_ms = page.evaluate("() => window.playgroundStats.frameDelaysMs[0]")
    page.wait_for_function(
        "() => { const i = document.querySelector('#digits .grid'); return !i.hidden && i.naturalWidth > 0 }",
        timeout=240_000,
    )
    assert page.eval_on_selector_all("#digits .strip img", "imgs => imgs.map(i => i.dataset.t)") == [
        "400", "320", "240", "160", "80", "0"
    ]
    page.wait_for_function("() => document.querySelector('#digits .animation').naturalWidth > 0")
    assert loaded(page, "#digits .animation"), "the animated reverse process is shown"
    delays = sorted(page.evaluate("() => window.playgroundStats.frameDelaysMs"))
    assert len(delays) == 6 and delays[0] >= -50, delays  # one clock: the worker and the browser share the machine
    print(f"\nframe drawn in the worker -> shown in the browser: first {first_delay_ms:.0f} ms, "
          f"median {delays[len(delays) // 2]:.0f} ms, max {delays[-1]:.0f} ms ({len(delays)} frames)")
    assert page.eval_on_selector("#digits progress", "p => p.value === p.max && p.max > 1")
    assert "network evaluations per image" in page.inner_text("#digits .meta")
    assert not page.outside, page.outside  # type: ignore[attr-defined]
    page.close()


def test_a_running_digits_job_is_cancelled_from_the_page(service: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    page = open_page(browser, service.base_url)
    page.wait_for_function("() => document.querySelectorAll('#digits select[name=sampler] option').length > 1")
    page.select_option("#digits select[name=sampler]", "ddpm")
    page.fill("#digits input[name=n]", "100")
    page.click("#digits button[type=submit]")
    page.wait_for_function("() => document.querySelector('#digits progress').value >= 1")
    page.click("#digits .cancel")
    page.wait_for_function("() => document.querySelector('#digits .meta').textContent.includes('was canceled')")
    job_id = page.inner_text("#digits .meta").split()[1]
    assert service.client.get(f"/jobs/{job_id}").json()["status"] == "canceled"
    assert page.is_hidden("#digits .grid")
    page.close()


def test_classify_panel_labels_uploads_and_a_drawing_and_shows_api_errors(
    service: Stack, browser, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    page = open_page(browser, service.base_url)
    files = []
    for k in range(3):
        path = tmp_path / f"digit_{k}.png"
        path.write_bytes(png_bytes(np.full((16, 16), 40 * k, dtype=np.uint8)))
        files.append(str(path))
    page.set_input_files("#classify input[type=file]", files)
    page.wait_for_selector("#classify .predictions li:nth-child(3)")
    assert page.eval_on_selector_all("#classify .predictions .name", "e => e.map(x => x.textContent)") == [
        "digit_0.png", "digit_1.png", "digit_2.png"
    ]
    assert page.eval_on_selector_all("#classify .predictions li:first-child .bars span", "e => e.length") == 10

    box = page.locator("#classify canvas").bounding_box()
    page.mouse.move(box["x"] + 70, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 70, box["y"] + 120, steps=10)
    page.mouse.up()
    page.click("#classify .classify-drawing")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#classify .predictions .name')].map(e => e.textContent).join() === 'drawing.png'"
    )

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#classify input[type=file]", [str(bad)])
    page.wait_for_selector("#classify .error:not([hidden])")
    assert "not an image" in page.inner_text("#classify .error") or "PNG or JPEG" in page.inner_text("#classify .error")
    assert not page.outside, page.outside  # type: ignore[attr-defined]
    page.close()


def test_screenshot_of_the_playground_on_the_shipped_models(
    trained_service: Stack, browser, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = os.environ.get("SCREENSHOT_DIR")
    if not out:
        pytest.skip("`make screenshots` sets SCREENSHOT_DIR to write docs/playground.png")
    page = open_page(browser, trained_service.base_url)
    page.fill("#faces input[name=n]", "16")
    page.fill("#faces input[name=seed]", "0")
    page.click("#faces button[type=submit]")
    page.wait_for_function("() => document.querySelector('#faces .grid').naturalWidth > 0")
    page.fill("#digits input[name=seed]", "0")
    page.click("#digits button[type=submit]")
    page.wait_for_function("() => document.querySelector('#digits .grid').naturalWidth > 0", timeout=300_000)
    usps = Path(os.environ.get("DATA_SOURCE", "")) / "usps" / "usps.h5"
    if usps.is_file():
        import h5py
        import numpy as np

        with h5py.File(usps, "r") as data:
            rows = data["test"]["data"][:4]
        paths = []
        for k, row in enumerate(rows):
            path = tmp_path / f"usps_{k:04d}.png"
            path.write_bytes(png_bytes(np.round(row.reshape(16, 16) * 255).astype(np.uint8)))
            paths.append(str(path))
        page.set_input_files("#classify input[type=file]", paths)
        page.wait_for_selector("#classify .predictions li:nth-child(4)")
    page.screenshot(path=str(Path(out) / "playground.png"), full_page=True)
    page.close()
