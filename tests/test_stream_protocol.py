"""Property tests of the Stream state machine (uplodr.worker.stream_protocol).

Whatever messages arrive, feeding them either gives a well-formed sequence of events —
FileStarted, Chunk..., FileEnded per file — whose chunks reassemble each file exactly, or raises
the specific InvalidRequest / TooLarge that names the broken rule; never another exception, and
no file ever yields more bytes than the limit."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from uplodr.errors import InvalidRequest, TooLarge, UplodrError
from uplodr.proto.uplodr_pb2 import ORIGINAL_DROP, ORIGINAL_KEEP, ORIGINAL_ONLY, Original, UploadReq
from uplodr.worker.stream_protocol import Chunk, Event, FileEnded, FileStarted, StreamProtocol

LIMIT = 64


@dataclass(frozen=True)
class File:
    name: str
    folder: str
    data: bytes


# --- what a stream should give, and why it must fail -----------------------------------------


@dataclass(frozen=True)
class Refusal:
    error: type[UplodrError]
    words: str
    files: tuple[File, ...] = ()  # the files that ended before the broken rule


def expected(messages: Sequence[UploadReq], limit: int) -> list[File] | Refusal:
    """The rules, written as plainly as possible: the files a stream carries, or the first rule
    it breaks."""
    files: list[File] = []
    current: tuple[str, str] | None = None
    data = b""
    for message in messages:
        if current is None:
            if not message.file_name:
                words = "after 'done'" if files else "must carry file_name"
                return Refusal(InvalidRequest, words, tuple(files))
            current, data = (message.file_name, message.folder), b""
        elif message.file_name not in ("", current[0]) or message.folder not in ("", current[1]):
            return Refusal(InvalidRequest, "changed before 'done'", tuple(files))
        if not message.data and not message.done:
            return Refusal(InvalidRequest, "empty chunk", tuple(files))
        data += message.data
        if len(data) > limit:
            return Refusal(TooLarge, f"limit of {limit} bytes", tuple(files))
        if message.done:
            if not data:
                return Refusal(InvalidRequest, "is empty", tuple(files))
            files.append(File(current[0], current[1], data))
            current = None
    if current is not None:
        return Refusal(InvalidRequest, "ended before 'done'", tuple(files))
    if not files:
        return Refusal(InvalidRequest, "carried no file", tuple(files))
    return files


def run(
    messages: Sequence[UploadReq], limit: int = LIMIT
) -> tuple[list[Event], UplodrError | None]:
    """Feed every message and end the stream; the events so far and the error, if any. Any
    exception other than InvalidRequest or TooLarge fails the test."""
    protocol = StreamProtocol(limit)
    events: list[Event] = []
    try:
        for message in messages:
            events.extend(protocol.feed(message))
        protocol.end()
    except (InvalidRequest, TooLarge) as error:
        return events, error
    return events, None


def reassemble(events: Sequence[Event], limit: int) -> tuple[list[File], File | None]:
    """Check the events' grammar and the byte limit; the finished files and any open one."""
    files: list[File] = []
    current: FileStarted | None = None
    data = b""
    for event in events:
        if isinstance(event, FileStarted):
            assert current is None, "FileStarted inside a file"
            assert event.file_name, "a file without a name"
            current, data = event, b""
        elif isinstance(event, Chunk):
            assert current is not None, "Chunk outside a file"
            assert event.data, "an empty Chunk event"
            data += event.data
            assert len(data) <= limit, "more bytes than the limit were passed on"
        else:
            assert isinstance(event, FileEnded)
            assert current is not None, "FileEnded outside a file"
            assert event.size == len(data) > 0
            files.append(File(current.file_name, current.folder, data))
            current = None
    open_file = None if current is None else File(current.file_name, current.folder, data)
    return files, open_file


# --- strategies ------------------------------------------------------------------------------

names = st.sampled_from(["a.png", "b.jpg", "ü/../x.gif", "\x00", "n" * 300])
folders = st.sampled_from(["", "f", "g/h"])

any_message = st.builds(
    UploadReq,
    file_name=st.one_of(st.just(""), names),
    folder=folders,
    data=st.binary(max_size=LIMIT // 2),
    done=st.booleans(),
)


@st.composite
def well_formed_file(draw: st.DrawFn) -> tuple[File, list[UploadReq]]:
    """A file within the limit, cut into random chunks; name and folder on the first message,
    repeated (as a sender may) on some later ones; `done` on the last or on an empty message."""
    file = File(draw(names), draw(folders), draw(st.binary(min_size=1, max_size=LIMIT)))
    cuts = sorted(draw(st.lists(st.integers(0, len(file.data)), max_size=6)))
    bounds = [0, *cuts, len(file.data)]
    pieces = [file.data[a:b] for a, b in itertools.pairwise(bounds)]
    pieces = [p for p in pieces if p]
    messages = [UploadReq(data=piece) for piece in pieces]
    if draw(st.booleans()):
        messages.append(UploadReq(done=True))
    else:
        messages[-1].done = True
    messages[0].file_name, messages[0].folder = file.name, file.folder
    for message in messages[1:]:
        if draw(st.booleans()):
            message.file_name, message.folder = file.name, file.folder
    return file, messages


well_formed_stream = st.lists(well_formed_file(), min_size=1, max_size=4)


# --- properties ------------------------------------------------------------------------------


@given(well_formed_stream)
def test_well_formed_streams_reassemble_every_file_exactly(
    stream: list[tuple[File, list[UploadReq]]],
) -> None:
    messages = [m for _, file_messages in stream for m in file_messages]
    events, error = run(messages)
    assert error is None
    files, open_file = reassemble(events, LIMIT)
    assert open_file is None
    assert files == [file for file, _ in stream]


@given(st.lists(any_message, max_size=12), st.integers(1, LIMIT))
def test_any_stream_gives_its_files_or_the_specific_error(
    messages: list[UploadReq], limit: int
) -> None:
    events, error = run(messages, limit)
    files, _ = reassemble(events, limit)  # holds for the events before an error too
    want = expected(messages, limit)
    if isinstance(want, Refusal):
        assert type(error) is want.error, (error, want)
        assert want.words in str(error)
        # Files that ended before the broken rule were passed on whole.
        assert files == list(want.files)
    else:
        assert error is None, error
        assert files == want


@given(well_formed_stream, st.data())
def test_breaking_one_rule_gives_that_rules_error(
    stream: list[tuple[File, list[UploadReq]]], data: st.DataObject
) -> None:
    messages = [m for _, file_messages in stream for m in file_messages]
    rule = data.draw(
        st.sampled_from(
            ["missing done", "data after done", "empty chunk", "name changes", "too large"]
        )
    )
    last_file = stream[-1][1]
    if rule == "missing done":
        last = messages[-1]
        if last.data:
            tail = UploadReq()
            tail.CopyFrom(last)
            tail.done = False
            broken = [*messages[:-1], tail]
        else:
            broken = messages[:-1]  # the empty message that only said done
        want = Refusal(InvalidRequest, "ended before 'done'")
    elif rule == "data after done":
        broken = [*messages, UploadReq(data=b"stray")]
        want = Refusal(InvalidRequest, "after 'done'")
    elif rule == "empty chunk":
        assume(len(last_file) > 1)
        at = len(messages) - len(last_file) + data.draw(st.integers(1, len(last_file) - 1))
        broken = [*messages[:at], UploadReq(), *messages[at:]]
        want = Refusal(InvalidRequest, "empty chunk")
    elif rule == "name changes":
        broken = [*messages[:-1], UploadReq(file_name="other.png", data=b"x"), messages[-1]]
        want = Refusal(InvalidRequest, "changed before 'done'")
    else:
        over = UploadReq(data=b"\x00" * (LIMIT + 1), done=True)
        broken = [*messages, UploadReq(file_name="big.png", data=b"\x00"), over]
        want = Refusal(TooLarge, "limit")
    events, error = run(broken)
    assert type(error) is want.error, (rule, error)
    assert want.words in str(error)
    reassemble(events, LIMIT)


@pytest.mark.parametrize(
    ("messages", "error", "words"),
    [
        ([], InvalidRequest, "carried no file"),
        ([UploadReq(data=b"x", done=True)], InvalidRequest, "must carry file_name"),
        ([UploadReq(file_name="a.png", done=True)], InvalidRequest, "'a.png' is empty"),
        ([UploadReq(file_name="a.png", data=b"x")], InvalidRequest, "ended before 'done'"),
        ([UploadReq(file_name="a.png")], InvalidRequest, "empty chunk"),
        (
            [UploadReq(file_name="a.png", data=b"x"), UploadReq(folder="elsewhere", data=b"y")],
            InvalidRequest,
            "changed before 'done'",
        ),
        ([UploadReq(file_name="a.png", data=bytes(LIMIT + 1))], TooLarge, f"{LIMIT} bytes"),
    ],
)
def test_each_rule_has_its_message(
    messages: list[UploadReq], error: type[UplodrError], words: str
) -> None:
    _, raised = run(messages)
    assert type(raised) is error
    assert words in str(raised)


def test_the_limit_is_per_file() -> None:
    half = bytes(LIMIT)
    messages = [
        UploadReq(file_name="a.png", data=half, done=True),
        UploadReq(file_name="b.png", data=half, done=True),
    ]
    events, error = run(messages)
    assert error is None
    assert [e.size for e in events if isinstance(e, FileEnded)] == [LIMIT, LIMIT]


@given(st.text(min_size=1, max_size=6000), st.sampled_from([b"", b"x"]))
# Found by hypothesis: escapes make sixty raw characters quote far longer than sixty.
@example("0" * 18 + "\x1f" * 7 + "\x08" * 4 + "\U00011af9" * 40, b"x")
def test_messages_quote_names_short_and_escaped(name: str, data: bytes) -> None:
    # An empty file or a file left open: both messages quote the (not yet validated) name.
    messages = [UploadReq(file_name=name, data=data, done=not data)]
    _, error = run(messages)
    assert isinstance(error, InvalidRequest)
    message = str(error)
    assert len(message) < 150
    assert "\n" not in message and "\x00" not in message


def test_per_file_options_come_from_the_first_message_and_may_not_change() -> None:
    protocol = StreamProtocol(LIMIT)
    (started, _) = protocol.feed(
        UploadReq(file_name="a.png", data=b"x", preset='{"widths":[480]}', original=ORIGINAL_KEEP)
    )
    assert started == FileStarted("a.png", "", '{"widths":[480]}', "keep")
    # repeating them is fine, leaving them out too
    protocol.feed(UploadReq(data=b"y", preset='{"widths":[480]}', original=ORIGINAL_KEEP))
    (_, ended) = protocol.feed(UploadReq(data=b"z", done=True))
    assert ended == FileEnded(3)
    (plain, *_) = protocol.feed(UploadReq(file_name="b.png", data=b"x", done=True))
    assert plain == FileStarted("b.png", "", "", "preset")  # the next file has its own
    for change in (UploadReq(data=b"y", preset="{}"), UploadReq(data=b"y", original=ORIGINAL_ONLY)):
        protocol = StreamProtocol(LIMIT)
        protocol.feed(UploadReq(file_name="a.png", data=b"x", original=ORIGINAL_DROP))
        with pytest.raises(InvalidRequest, match="preset or original changed before 'done'"):
            protocol.feed(change)


def test_an_original_mode_the_contract_does_not_define_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"original must be one of 0\.\.3 .* got 7"):
        StreamProtocol(LIMIT).feed(
            UploadReq(file_name="a.png", data=b"x", original=Original.ValueType(7))
        )
