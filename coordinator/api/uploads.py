"""Request bodies with files, streamed to temporary files as they arrive, never held whole in memory.

A file part past the per-file limit stops the request at once with 413; nothing of it reaches the store.
Temporary files live in the system's temporary directory ($TMPDIR) and are removed when closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from coordinator.api.http import HttpError
from coordinator.storage.base import CHUNK, FileTooLarge, StorageUnavailable
from coordinator.storage.names import check_name

MAX_FILES = 1000
"""Most files in one multipart submission."""


@dataclass
class SpooledFile:
    """One received file: its name and where its bytes wait (a temporary file, rewound)."""

    name: str
    part: str
    """The form field it came in, as errors name it (`files[i]`, or `body` for a raw upload)."""
    file: BinaryIO
    size: int = 0
    _buffer: bytearray = field(default_factory=bytearray)

    async def write(self, data: bytes, limit: int) -> None:
        """Add bytes, flushing to disk a CHUNK at a time off the event loop; FileTooLarge past `limit`."""
        self.size += len(data)
        if self.size > limit:
            raise FileTooLarge(f"file {self.name!r}", limit, field=self.part)
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered."""
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            with _spool_errors():
                await asyncio.to_thread(self.file.write, data)

    async def finish(self) -> None:
        """Flush and rewind, ready to be read into the store."""
        await self.flush()
        await asyncio.to_thread(self.file.seek, 0)


@contextlib.contextmanager
def _spool_errors() -> Iterator[None]:
    """A full or unwritable temporary directory is a 503 that says so (not a database outage)."""
    try:
        yield
    except OSError as exc:
        raise StorageUnavailable(f"cannot spool the upload to {tempfile.gettempdir()}: {exc.strerror or exc}") \
            from None


def _spool(name: str, field_name: str) -> SpooledFile:
    with _spool_errors():
        return SpooledFile(name, field_name, tempfile.TemporaryFile())


@dataclass
class Received:
    """The fields and files of one request; `close()` removes the temporary files."""

    fields: dict[str, bytes] = field(default_factory=dict)
    files: list[SpooledFile] = field(default_factory=list)

    def close(self) -> None:
        for spooled in self.files:
            spooled.file.close()


async def receive_body(request: Request, name: str, limit: int) -> SpooledFile:
    """A raw request body (an agent's PUT) as a spooled file; 413 past `limit` (checked while streaming)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FileTooLarge(f"file {name!r} ({declared} bytes)", limit, field="body")
    spooled = _spool(name, "body")
    try:
        async for chunk in request.stream():
            await spooled.write(chunk, limit)
        await spooled.finish()
    except BaseException:
        spooled.file.close()
        raise
    return spooled


class _Events:
    """python-multipart's parser callbacks, queued so the async side can write file data off the event loop."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, object]] = []
        self.headers: dict[bytes, bytes] = {}
        self._name = self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self.headers.clear, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": lambda: self.queue.append(("part", dict(self.headers))),
                "on_part_data": lambda data, start, end: self.queue.append(("data", data[start:end])),
                "on_part_end": lambda: self.queue.append(("end", None))}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.headers[self._name.lower()] = self._value
        self._name = self._value = b""


def _decode(raw: bytes, what: str, field_name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeError:
        raise HttpError(422, f"{field_name}: {what} is not UTF-8", field=field_name) from None


async def receive_form(request: Request, text_fields: dict[str, int], file_limit: int) -> Received:
    """A multipart/form-data body: the named text fields (each with its own byte cap) and any number of files.

    Every part with a filename is a file, named by its filename (a relative path, checked as it arrives:
    422 naming `files[i]`). A file past `file_limit` stops the request with 413.
    """
    _, params = parse_options_header(request.headers.get("content-type", ""))
    if b"boundary" not in params:
        raise HttpError(400, "multipart body without a boundary")
    events = _Events()
    parser = MultipartParser(params[b"boundary"], events.callbacks())  # type: ignore[arg-type]
    received = Received()
    text: tuple[str, bytearray] | None = None
    current: SpooledFile | None = None
    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise HttpError(400, f"malformed multipart body: {exc}") from None
            for kind, value in events.queue:
                if kind == "part":
                    assert isinstance(value, dict)
                    text, current = _start_part(value, text_fields, received)
                elif kind == "data":
                    assert isinstance(value, bytes)
                    if current is not None:
                        await current.write(value, file_limit)
                    elif text is not None:
                        text[1].extend(value)
                        if len(text[1]) > text_fields[text[0]]:
                            raise HttpError(413, f"field {text[0]!r} is over the limit of {text_fields[text[0]]} "
                                                 "bytes", field=text[0])
                elif current is not None:
                    await current.finish()
                elif text is not None:
                    received.fields[text[0]] = bytes(text[1])
            events.queue.clear()
        parser.finalize()
    except BaseException:
        received.close()
        raise
    return received


def _start_part(headers: dict[bytes, bytes], text_fields: dict[str, int],
                received: Received) -> tuple[tuple[str, bytearray] | None, SpooledFile | None]:
    """Begin a part: a text field we expect, or a file (its name checked before any byte is kept)."""
    _, options = parse_options_header(headers.get(b"content-disposition", b""))
    if b"name" not in options:
        raise HttpError(400, "a multipart part has no name in its Content-Disposition")
    name = _decode(options[b"name"], "the field name", "body")
    if name in text_fields:
        if name in received.fields:
            raise HttpError(422, f"{name}: given twice", field=name)
        return (name, bytearray()), None
    if b"filename" not in options:
        raise HttpError(422, f"{name}: unknown field (expected {', '.join(text_fields)} and files)", field=name)
    index = len(received.files)
    field_name = f"files[{index}]"
    if index >= MAX_FILES:
        raise HttpError(413, f"more than {MAX_FILES} files in one request", field=field_name)
    filename = check_name(_decode(options[b"filename"], "the file name", field_name), field_name)
    if any(f.name == filename for f in received.files):
        raise HttpError(422, f"{field_name}: file name {filename!r} given twice", field=field_name)
    spooled = _spool(filename, field_name)
    received.files.append(spooled)
    return None, spooled
