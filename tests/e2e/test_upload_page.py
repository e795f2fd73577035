"""The upload page in a real browser (Debian's Chromium driven by Playwright): pick a file, or
drop several at once, and see each one's upload progress, conversion state, and then its card
of variants with previews loaded from the gateway and copy buttons — or the server's error."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.support.gateway import Gateway
from tests.support.paths import corpus_file

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PREVIEWS_LOADED = (
    "[...document.querySelectorAll('#results img.preview')]"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


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


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(
        permissions=["clipboard-read", "clipboard-write"], viewport={"width": 1200, "height": 900}
    )
    yield context
    context.close()


def open_page(context: BrowserContext, gateway: Gateway) -> Page:
    page = context.new_page()
    page.goto(gateway.url + "/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("uplodr")
    return page


def drop_files(page: Page, files: list[Path]) -> None:
    """What a drag from the desktop delivers: a drop event whose DataTransfer holds the files."""
    data_transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name));
            }
            return dt;
        }""",
        [{"name": f.name, "data": base64.b64encode(f.read_bytes()).decode()} for f in files],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": data_transfer})


def test_a_picked_file_converts_and_its_url_can_be_copied(
    gateway: Gateway, context: BrowserContext
) -> None:
    page = open_page(context, gateway)
    page.fill("#folder", "page")
    page.set_input_files("#files", str(corpus_file("Landscape_6.jpg")))
    card = page.locator(".card").first
    expect(card).to_have_attribute("data-state", "done", timeout=60_000)
    rows = card.locator("tr.variant")
    expect(rows).to_have_count(4)
    expect(card).to_contain_text("avif")
    expect(card).to_contain_text("1800×1200")
    page.wait_for_function(PREVIEWS_LOADED)
    first_url = rows.first.locator("a").get_attribute("href")
    assert first_url and "/files/page/Landscape_6-" in first_url
    rows.first.get_by_role("button", name="Copy URL").click()
    expect(rows.first.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == first_url
    page.close()


def test_a_drop_of_three_files_shows_progress_results_and_the_error(
    gateway: Gateway, context: BrowserContext, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list: not an image\n" * 40)
    files = [corpus_file("Landscape_6.jpg"), corpus_file("sample-16bit.png"), notes]
    page = open_page(context, gateway)
    page.fill("#folder", "dropped")
    drop_files(page, files)
    cards = page.locator(".card")
    expect(cards).to_have_count(3)
    for index, path in enumerate(files):
        card = cards.nth(index)
        expect(card.locator(".name")).to_have_text(path.name)
        state = "done" if index < 2 else "error"
        expect(card).to_have_attribute("data-state", state, timeout=90_000)
        # Every byte was reported sent by the browser's upload progress events.
        assert card.get_attribute("data-sent") == str(path.stat().st_size)
    error = cards.nth(2).locator(".state")
    expect(error).to_contain_text("not an allowed image format")
    expect(error).to_contain_text("unsupported_image, HTTP 415")
    for index in (0, 1):
        expect(cards.nth(index).locator("tr.variant")).to_have_count(4)
        expect(cards.nth(index).locator(".state")).to_contain_text("converted")
    expect(cards.nth(1)).to_contain_text("290×442")  # the 16-bit PNG keeps its size
    expect(page.locator("#summary")).to_have_text("2 converted, 1 failed")
    page.wait_for_function(PREVIEWS_LOADED)
    screenshot = tmp_path / "upload-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    page.close()


def test_the_docs_page_renders_the_openapi_document(
    gateway: Gateway, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(gateway.url + "/docs")
    expect(page.locator("#api")).to_contain_text("/v1/images")
    expect(page.locator("#api")).to_contain_text("Retry-After")
    expect(page.locator("#api")).to_contain_text("Conversion")
    page.close()
