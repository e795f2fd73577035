"""Make client-supplied file names and folders safe to use in storage keys, or refuse them.

Nothing a client sends may climb out of the store prefix or smuggle in control characters.
Names are Unicode-normalised (NFC) first, so visually identical names give identical keys.
What can be made safe is (a display name keeps its spaces and accents; the key stem replaces
anything outside letters, digits, `-`, `_` and `.` with `-`); what cannot is refused with a
message saying why.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from uplodr.errors import InvalidRequest

MAX_NAME_CHARS = 255
MAX_STEM_CHARS = 100
MAX_FOLDER_CHARS = 200
MAX_FOLDER_DEPTH = 8

# \w is Unicode-aware: letters and digits of any script stay, everything else becomes "-".
_UNSAFE_STEM_CHARS = re.compile(r"[^\w.-]+")
_SEGMENT = re.compile(r"^\w[\w.-]*$")


@dataclass(frozen=True)
class SafeName:
    file_name: str  # normalised name as the client gave it, for display and answers
    stem: str  # the part used in storage keys


def _check_text(value: str, what: str, limit: int) -> str:
    value = unicodedata.normalize("NFC", value)
    if len(value) > limit:
        raise InvalidRequest(f"{what} is longer than {limit} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value):
        raise InvalidRequest(f"{what} contains control or invisible characters")
    return value


def safe_file_name(file_name: str) -> SafeName:
    """Validate a file name (no folders in it) and derive its key stem."""
    name = _check_text(file_name, "file name", MAX_NAME_CHARS).strip()
    if not name:
        raise InvalidRequest("file name is empty")
    if "/" in name or "\\" in name:
        raise InvalidRequest("file name must not contain '/' or '\\'; use the folder field")
    if name in (".", ".."):
        raise InvalidRequest("file name must not be '.' or '..'")
    base = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    stem = _UNSAFE_STEM_CHARS.sub("-", base).strip("-.")[:MAX_STEM_CHARS].strip("-.")
    return SafeName(file_name=name, stem=stem or "image")


def safe_folder(folder: str) -> str:
    """Validate a folder: relative, `/`-separated segments of letters, digits, `-`, `_`, `.`,
    no segment starting with a dot (so no `..`), at most MAX_FOLDER_DEPTH deep. Leading and
    trailing slashes are dropped; "" means the store root."""
    value = _check_text(folder, "folder", MAX_FOLDER_CHARS).strip()
    if "\\" in value:
        raise InvalidRequest("folder must use '/' as separator, not '\\'")
    if value.startswith("/"):
        raise InvalidRequest("folder must be relative, not start with '/'")
    value = value.rstrip("/")
    if not value:
        return ""
    segments = value.split("/")
    if len(segments) > MAX_FOLDER_DEPTH:
        raise InvalidRequest(f"folder is deeper than {MAX_FOLDER_DEPTH} levels")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidRequest("folder must not contain empty, '.' or '..' parts")
        if not _SEGMENT.match(segment):
            raise InvalidRequest(
                f"folder part {segment!r} may only hold letters, digits, '-', '_' and '.', "
                "and must start with a letter or digit"
            )
    return "/".join(segments)
