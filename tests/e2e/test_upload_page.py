"""The upload page in a real browser (Debian's Chromium driven by Playwright): pick a file,
see its four variants with their previews loaded from the gateway."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.support.gateway import Gateway
from tests.support.paths import corpus_file

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: the test command installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


def test_upload_page_converts_a_picked_file(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    page = browser.new_page()
    page.goto(gateway.url + "/")
    expect(page.get_by_role("heading")).to_contain_text("uplodr")
    page.fill("#folder", "page")
    page.set_input_files("#files", str(corpus_file("Landscape_6.jpg")))
    page.get_by_role("button", name="Convert").click()
    rows = page.locator("#results table tr")
    expect(rows).to_have_count(5, timeout=60_000)  # header + four variants
    expect(page.locator("#results")).to_contain_text("image/avif")
    expect(page.locator("#results")).to_contain_text("1800×1200")
    # Every preview really loaded (naturalWidth is 0 for a broken image).
    previews = page.locator("#results img.preview")
    expect(previews).to_have_count(4)
    page.wait_for_function(
        "[...document.querySelectorAll('#results img.preview')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(tmp_path / "upload-page.png"), full_page=True)

    page.set_input_files("#files", str(corpus_file("SOURCES.md")))
    page.get_by_role("button", name="Convert").click()
    expect(page.locator("#results .error")).to_contain_text("not an allowed image format")
    page.close()
