"""`uplodr convert` with web-ready output against a real `uplodr serve`: `--html` prints each
image's `<picture>` markup (the answer's own), `--alt` with `{stem}`, `--preset` checked once
before any upload, `--original`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import html5lib
import pytest

from tests.cli.test_convert import machines_created, uplodr
from tests.support.gateway import Gateway
from tests.support.made import of_json
from tests.support.paths import corpus_file

NS = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small images named for what they show, and a text file."""
    folder = tmp_path_factory.mktemp("named")
    shutil.copy(corpus_file("sample-16bit.png"), folder / "red-bicycle_harbour.png")
    shutil.copy(corpus_file("iss634.gif"), folder / "space station.gif")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def test_html_prints_each_answers_markup_with_the_alt_of_its_stem(
    gateway: Gateway, named: Path
) -> None:
    args = [str(named), "--folder", "cli-web", "--alt", "Photo: {stem}"]
    as_json = uplodr(gateway, *args, "--json")
    assert as_json.returncode == 0, as_json.stderr
    answers = {
        Path(r["path"]).name: r["conversion"]
        for r in map(json.loads, as_json.stdout.splitlines())
        if r["status"] != "skipped"
    }
    as_html = uplodr(gateway, *args, "--html")  # answered from storage this time
    assert as_html.returncode == 0, as_html.stderr
    printed = [block + "</picture>" for block in as_html.stdout.split("</picture>\n") if block]
    # Markup only on stdout (the per-file lines go to stderr), each the answer's own html.
    assert sorted(printed) == sorted(a["html"] for a in answers.values())
    alts = {}
    for markup in printed:
        parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=True)
        (picture,) = list(parser.parseFragment(markup))
        img = picture.find(f"{NS}img")
        alts[img.get("src")] = img.get("alt")
    by_name = {  # the <img> is the JPEG, always made (the last fallback)
        name: next(v["url"] for v in a["variants"] if (v["format"], v["role"]) == ("jpeg", "full"))
        for name, a in answers.items()
    }
    assert alts[by_name["red-bicycle_harbour.png"]] == "Photo: red bicycle harbour"
    assert alts[by_name["space station.gif"]] == "Photo: space station"
    assert "2 images: 0 converted, 2 deduplicated, 0 failed" in as_html.stderr


def test_original_and_preset_reach_the_gateway(gateway: Gateway, named: Path) -> None:
    done = uplodr(
        gateway,
        str(named / "red-bicycle_harbour.png"),
        "--folder",
        "cli-orig",
        "--preset",
        "default",
        "--original",
        "keep",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    (record,) = map(json.loads, done.stdout.splitlines())
    variants = record["conversion"]["variants"]
    made = of_json(record["conversion"])  # the formats that won (format_margin), JPEG always
    assert [v["role"] for v in variants] == ["full"] * len(made) + ["thumbnail", "original"]


def test_an_unknown_preset_is_one_line_before_any_upload(gateway: Gateway, named: Path) -> None:
    created = machines_created(gateway)
    done = uplodr(gateway, str(named), "--preset", "responsive")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        "uplodr convert: the gateway has no preset 'responsive'; its presets: default"
    )
    assert machines_created(gateway) == created


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--html", "--original", "only"], "--original only stores no variant, so there is no"),
        (["--original", "yes"], "Invalid value for '--original': 'yes' is not one of"),
    ],
)
def test_options_that_cannot_work_are_usage_errors(
    gateway: Gateway, named: Path, args: list[str], says: str
) -> None:
    done = uplodr(gateway, str(named), *args)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("uplodr convert: ") and says in line, line
