"""The Stream call's rules, as a small state machine with no I/O and no gRPC.

A stream carries files one after another. A file is: a first message that names it
(`file_name`, and optionally `folder` and the per-file options `preset` and `original`), any
number of data chunks, and a message with `done = true` (which may carry the last chunk). What
breaks the rules is refused with an InvalidRequest (or TooLarge for the byte limit) saying
exactly what was wrong:
- a file's first message without `file_name`; a name, folder or option that changes within a
  file; an `original` value the contract does not define;
- an empty chunk that does not end the file (a sender bug that would otherwise spin forever);
- a file that ends with no bytes at all;
- more bytes than the limit;
- the stream ending in the middle of a file.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

from uplodr.errors import InvalidRequest, TooLarge
from uplodr.preset import ORIGINAL_MODES, OriginalMode


class Message(Protocol):
    file_name: str
    folder: str
    data: bytes
    done: bool
    preset: str

    @property
    def original(self) -> int:  # the contract's Original enum: an index of ORIGINAL_MODES
        ...


@dataclass(frozen=True)
class FileStarted:
    file_name: str
    folder: str
    preset: str = ""  # JSON of every setting; "" = the worker's own preset
    original: OriginalMode = "preset"


@dataclass(frozen=True)
class Chunk:
    data: bytes


@dataclass(frozen=True)
class FileEnded:
    size: int


Event = FileStarted | Chunk | FileEnded

# Characters of a quoted name in a message, escapes included.
SHOWN_NAME_CHARS = 64


def _shown(name: str) -> str:
    """A client's file name as error messages quote it: escaped, and cut short (the name is not
    validated yet; a 5000-character name must not come back as a 5000-character message).

    The cut is measured on the escaped text: one astral or control character escapes to up to
    ten characters, so sixty raw characters could quote as six hundred."""
    shown = repr(name)
    if len(shown) <= SHOWN_NAME_CHARS:
        return shown
    # the longest prefix whose quoted form fits (its length grows with the prefix)
    keep = bisect.bisect_right(
        range(len(name) + 1), SHOWN_NAME_CHARS, key=lambda n: len(repr(name[:n]))
    )
    return repr(name[: max(keep - 1, 0)]) + "..."


def _original(value: int) -> OriginalMode:
    if not 0 <= value < len(ORIGINAL_MODES):
        raise InvalidRequest(
            f"original must be one of 0..{len(ORIGINAL_MODES) - 1} "
            f"({', '.join(ORIGINAL_MODES)}), got {value}"
        )
    return ORIGINAL_MODES[value]


class StreamProtocol:
    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self._current: FileStarted | None = None
        self._size = 0
        self.files_done = 0

    @property
    def in_file(self) -> bool:
        return self._current is not None

    def feed(self, message: Message) -> list[Event]:
        """The events one message produces, in order. Raises on a broken rule."""
        events: list[Event] = []
        if self._current is None:
            if not message.file_name:
                if self.files_done:
                    raise InvalidRequest(
                        "data after 'done': a new file must start with a message naming it"
                    )
                raise InvalidRequest("the first message of a file must carry file_name")
            self._current = FileStarted(
                message.file_name, message.folder, message.preset, _original(message.original)
            )
            self._size = 0
            events.append(self._current)
        elif (
            (message.file_name and message.file_name != self._current.file_name)
            or (message.folder and message.folder != self._current.folder)
            or (message.preset and message.preset != self._current.preset)
            or (message.original and _original(message.original) != self._current.original)
        ):
            raise InvalidRequest(
                "file_name, folder, preset or original changed before 'done' ended the file "
                f"{_shown(self._current.file_name)}"
            )
        if message.data:
            self._size += len(message.data)
            if self._size > self.max_file_bytes:
                raise TooLarge(f"file is larger than the limit of {self.max_file_bytes} bytes")
            events.append(Chunk(message.data))
        elif not message.done:
            raise InvalidRequest("empty chunk: a message without data must set done")
        if message.done:
            if self._size == 0:
                raise InvalidRequest(f"file {_shown(self._current.file_name)} is empty")
            events.append(FileEnded(self._size))
            self._current = None
            self.files_done += 1
        return events

    def end(self) -> None:
        """The client closed its side of the stream."""
        if self._current is not None:
            raise InvalidRequest(
                f"stream ended before 'done' for file {_shown(self._current.file_name)}"
            )
        if self.files_done == 0:
            raise InvalidRequest("stream carried no file")
