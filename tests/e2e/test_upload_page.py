"""The upload page in a real browser (Debian's Chromium driven by Playwright): pick a file, or
drop several at once, and see each one's upload progress, conversion state, and then its card
of variants with previews loaded from the gateway and copy buttons — or the server's error; the
placeholder while a preview loads, the `<picture>` markup to copy, the preset picker of a
gateway with named presets and the alt text field.

The gateway here runs with a presets file (`responsive`: widths 480, 960, 1600); an upload that
picks none gets the default preset."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import html5lib
import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    expect,
    sync_playwright,
)

from tests.support.gateway import Gateway, running_gateway
from tests.support.made import of_json
from tests.support.paths import corpus_file

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PREVIEWS_LOADED = (
    "[...document.querySelectorAll('#results img.preview')]"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`uplodr serve --presets` with one named preset beside the default."""
    root = tmp_path_factory.mktemp("page-gateway")
    presets = root / "presets.json"
    presets.write_text(json.dumps({"responsive": {"widths": [480, 960, 1600]}}))
    with running_gateway(root / "gateway", "--presets", str(presets)) as running:
        yield running
        assert running.workers() == [] and running.machine_records() == []


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


def variant_count(gateway: Gateway, path: Path, folder: str) -> int:
    """How many variants the page's upload of `path` made: the formats that won (format_margin)
    and the thumbnail, read from the same answer again (a repeat: answered from storage)."""
    answer = httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": path.name, "folder": folder},
        content=path.read_bytes(),
        timeout=60,
    ).json()
    assert answer["deduplicated"], answer
    return len(of_json(answer)) + 1


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


RECORD_ANSWERS = """() => {
    window.recordedAnswers = [];
    const open = XMLHttpRequest.prototype.open;
    XMLHttpRequest.prototype.open = function (method, url, ...rest) {
        if (method === "POST" && url.startsWith("/v1/images")) {
            this.addEventListener("load", () => window.recordedAnswers.push(this.responseText));
        }
        return open.call(this, method, url, ...rest);
    };
}"""


def test_a_picked_file_converts_and_its_url_can_be_copied(
    gateway: Gateway, context: BrowserContext
) -> None:
    page = open_page(context, gateway)
    page.fill("#folder", "page")
    page.set_input_files("#files", str(corpus_file("Landscape_6.jpg")))
    card = page.locator(".card").first
    expect(card).to_have_attribute("data-state", "done", timeout=60_000)
    rows = card.locator("tr.variant")
    expect(rows).to_have_count(variant_count(gateway, corpus_file("Landscape_6.jpg"), "page"))
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
        made = variant_count(gateway, files[index], "dropped")
        expect(cards.nth(index).locator("tr.variant")).to_have_count(made)
        expect(cards.nth(index).locator(".state")).to_contain_text("converted")
    expect(cards.nth(1)).to_contain_text("290×442")  # the 16-bit PNG keeps its size
    expect(page.locator("#summary")).to_have_text("2 converted, 1 failed")
    page.wait_for_function(PREVIEWS_LOADED)
    screenshot = tmp_path / "upload-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    page.close()


def test_the_delete_button_deletes_the_card_s_image_with_its_delete_token(
    gateway: Gateway, context: BrowserContext
) -> None:
    photo = corpus_file("sample-16bit.png")
    page = open_page(context, gateway)
    page.fill("#folder", "page-delete")
    page.set_input_files("#files", str(photo))
    cards = page.locator(".card")
    expect(cards.first).to_have_attribute("data-state", "done", timeout=60_000)
    # The same bytes again: answered from storage, so its card holds no delete token.
    page.set_input_files("#files", str(photo))
    expect(cards.nth(1)).to_have_attribute("data-state", "done", timeout=60_000)
    expect(cards.nth(1).locator(".state")).to_contain_text("answered from storage")
    listed = httpx.get(f"{gateway.url}/v1/images", params={"folder": "page-delete"}).json()
    assert len(listed["images"]) == 1
    image_id = listed["images"][0]["id"]

    repeat = cards.nth(1).get_by_role("button", name="Delete")
    repeat.click()  # the first click only asks
    expect(cards.nth(1).get_by_role("button", name="Delete for good?")).to_be_visible()
    cards.nth(1).get_by_role("button", name="Delete for good?").click()
    expect(cards.nth(1).locator(".state")).to_contain_text("unauthenticated, HTTP 401")
    assert httpx.get(f"{gateway.url}/v1/images/{image_id}").status_code == 200

    cards.first.get_by_role("button", name="Delete").click()
    cards.first.get_by_role("button", name="Delete for good?").click()
    expect(cards.first).to_have_attribute("data-state", "deleted", timeout=30_000)
    expect(cards.first.locator(".state")).to_have_text("deleted from every store")
    expect(cards.first.locator("img.preview")).to_have_count(0)
    assert httpx.get(f"{gateway.url}/v1/images/{image_id}").status_code == 404
    folder = gateway.store / "page-delete"
    assert not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))
    page.close()


@pytest.fixture(scope="module")
def plain_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`uplodr serve` as a newcomer starts it: no presets file, so only the default preset."""
    with running_gateway(tmp_path_factory.mktemp("plain-gateway")) as running:
        yield running


def test_a_gateway_without_named_presets_shows_no_preset_picker_and_no_missing_icon(
    plain_gateway: Gateway, context: BrowserContext
) -> None:
    page = context.new_page()
    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((r.url, r.status)))
    with page.expect_response(lambda r: r.url.endswith("/v1/presets")):
        page.goto(plain_gateway.url + "/")
    # The field stays hidden: its computed style, not only its attribute (a `label` rule with
    # `display: flex` once showed an empty picker here).
    page.wait_for_load_state("networkidle")
    assert page.eval_on_selector("#preset-field", "e => getComputedStyle(e).display") == "none"
    expect(page.locator("#preset-field")).to_be_hidden()
    # The browser's own request for an icon is answered, not a 404 on every visit.
    icon = httpx.get(plain_gateway.url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/")
    assert not [a for a in answers if a[1] >= 400], answers
    page.close()


def test_the_docs_page_renders_the_openapi_document(
    gateway: Gateway, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(gateway.url + "/docs")
    expect(page.locator("#api")).to_contain_text("/v1/images")
    expect(page.locator("#api")).to_contain_text("Retry-After")
    expect(page.locator("#api")).to_contain_text("Conversion")
    # The descriptions' Markdown is rendered: code spans are <code>, no backtick or ** is left
    # in what a reader sees (the schemas' JSON, shown as JSON, aside).
    prose = page.locator("#api").evaluate(
        "e => { const c = e.cloneNode(true); c.querySelectorAll('pre').forEach(p => p.remove());"
        " return c.innerText; }"
    )
    assert "`" not in prose and "**" not in prose
    assert page.locator("#api td:not(:first-child) code, #api > p code").count() >= 5
    page.close()


def test_a_heic_and_a_jpeg_show_placeholder_markup_and_copy_it(
    gateway: Gateway, context: BrowserContext, tmp_path: Path
) -> None:
    files = [corpus_file("IMG_2682.heic"), corpus_file("Landscape_6.jpg")]
    page = open_page(context, gateway)
    # The gateway has named presets: the picker offers them, the default first.
    expect(page.locator("#preset-field")).to_be_visible()
    expect(page.locator("#preset option")).to_have_text(
        [
            "default — webp, avif, jpeg",
            "responsive — webp, avif, jpeg · 480/960/1600 px",
        ]
    )
    page.select_option("#preset", "responsive")
    page.fill("#alt", 'The harbour at dusk & "boats"')
    page.fill("#folder", "page-web")
    # The raw text of every answer the page receives, recorded beside the page's own code.
    page.evaluate(RECORD_ANSWERS)
    held: list[Route] = []  # the previews are held back: the placeholders show meanwhile
    page.route("**/*-thumb.png", lambda route: held.append(route))
    page.set_input_files("#files", [str(f) for f in files])
    cards = page.locator(".card")
    expect(cards).to_have_count(2)
    for index in (0, 1):
        expect(cards.nth(index)).to_have_attribute("data-state", "done", timeout=120_000)
    answers = {
        answer["file_name"]: answer
        for answer in map(json.loads, page.evaluate("window.recordedAnswers"))
    }
    assert sorted(answers) == ["IMG_2682.heic", "Landscape_6.jpg"]

    for index, path in enumerate(files):
        card, answer = cards.nth(index), answers[path.name]
        expect(card.locator(".dims")).to_have_text(f"{answer['width']}×{answer['height']}")
        preview = card.locator("img.preview")
        assert preview.get_attribute("data-loaded") is None  # not loaded yet...
        background = preview.evaluate("img => getComputedStyle(img).backgroundImage")
        assert answer["placeholder"]["data_url"] in background  # ...so the placeholder shows
        # The markup shown is the answer's own, byte for byte, with the alt text escaped.
        assert card.locator("pre.markup").text_content() == answer["html"]
        parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=True)
        (picture,) = list(parser.parseFragment(answer["html"]))
        img = picture.find("{http://www.w3.org/1999/xhtml}img")
        assert img.get("alt") == 'The harbour at dusk & "boats"'
        assert "480w" in answer["html"] and "1600w" in answer["html"]  # the chosen preset
        # Each variant's quality receipt: its score shown, the setting on hover; none for the
        # thumbnail. The answer says which formats were not stored and why; so does the card.
        looks = card.locator("td.look")
        expect(looks).to_have_count(len(answer["variants"]))
        for cell, variant in zip(looks.all(), answer["variants"], strict=True):
            receipt = variant["quality"]
            if receipt is None:
                assert cell.text_content() == ""
                continue
            assert cell.text_content() == f"{receipt['score']:.1f}"
            assert (cell.get_attribute("title") or "").startswith(
                f"SSIMULACRA2 {receipt['score']:.1f} ("
            )
        expect(card.locator("p.skipped")).to_have_count(len(answer["skipped"]))
    waiting = tmp_path / "upload-page-placeholders.png"
    page.screenshot(path=str(waiting), full_page=True)
    assert waiting.stat().st_size > 10_000

    for route in held:
        route.continue_()
    page.wait_for_function(PREVIEWS_LOADED)
    for index, path in enumerate(files):
        card = cards.nth(index)
        expect(card.locator("img.preview")).to_have_attribute("data-loaded", "true")
        card.get_by_role("button", name="Copy <picture>").click()
        expect(card.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == answers[path.name]["html"]
    expect(page.locator("#summary")).to_have_text("2 converted, 0 failed")
    loaded = tmp_path / "upload-page-web.png"
    page.screenshot(path=str(loaded), full_page=True)
    assert loaded.stat().st_size > waiting.stat().st_size  # the previews are in
    page.close()
