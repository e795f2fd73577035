"""What `uplodr convert PATH…` uploads: files, folders (recursively) and globs, each file kept
only if its first bytes are an allowed image (`uplodr.sniff`, pure Python: no libvips on the
client), the rest counted as skipped with the reason. A path that does not exist, or a glob
that matches nothing, is a usage error before anything is sent."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from uplodr.sniff import read_head, sniff

GLOB_CHARS = frozenset("*?[")


class NoSuchInput(ValueError):
    """A path that is not there, or a glob that matches nothing."""


@dataclass
class Inputs:
    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.images)

    def skipped_by_reason(self) -> Counter[str]:
        return Counter(reason for _, reason in self.skipped)


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _expand(argument: str) -> list[Path]:
    path = Path(argument)
    if path.is_dir():
        return list(_walk(path))
    if path.exists():
        return [path]
    if GLOB_CHARS & set(argument):
        # glob.glob, not Path.glob: a pattern may be absolute (/photos/**/*.jpg).
        matches = sorted(glob.glob(argument, recursive=True))  # noqa: PTH207
        if matches:
            return [file for match in matches for file in _expand(match)]
        raise NoSuchInput(f"no file matches {argument}")
    raise NoSuchInput(f"no such file or folder: {argument}")


def find_images(arguments: Sequence[str]) -> Inputs:
    found = Inputs()
    seen: set[Path] = set()
    for argument in arguments:
        for path in _expand(argument):
            key = path.resolve()
            if key in seen:
                continue
            seen.add(key)
            if not path.is_file():  # a pipe or socket would block the read; a broken link
                found.skipped.append((path, "not a regular file"))
                continue
            try:
                head = read_head(path)
            except OSError as error:
                found.skipped.append((path, f"unreadable ({error.strerror or error})"))
                continue
            if sniff(head) is None:
                found.skipped.append((path, "not an image"))
            else:
                found.images.append(path)
    return found
