"""Where the repository and the shared test material live: ../shared beside the repository
(the corpus of real images, see its SOURCES.md, and the providers' published specs). Defined
here once; tests and benchmarks import these names.

CI always has ../shared; a checkout without it cannot run the suite, so `tests/conftest.py`
stops the run at collection with one line naming the missing path (never silent skips)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
SPECS = SHARED / "specs"


def missing_shared() -> str | None:
    """One line naming what of ../shared is missing, or None when everything is there."""
    for folder in (CORPUS, SPECS):
        if not folder.is_dir():
            return f"{folder} not found: the tests need ../shared beside the repository"
    return None


def corpus_file(name: str) -> Path:
    """A corpus image by name; a name the corpus lacks fails the test that asked (one line)."""
    path = CORPUS / name
    if not path.is_file():
        pytest.fail(f"test corpus file {path} is absent (see {CORPUS}/SOURCES.md)", pytrace=False)
    return path
