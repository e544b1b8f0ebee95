"""Bytes from a pipe into safe log lines: split on newlines, capped in length, invalid UTF-8 replaced.

A task may print a gigabyte without a newline, or binary junk; neither may grow the agent's memory
or break a report, so an overlong line is cut at the cap and the rest of it is skipped.
"""

from __future__ import annotations

CUT_MARK = " …[cut]"


class LineSplitter:
    """Feed chunks, get whole lines (without the newline); `flush` at EOF returns an unfinished last line."""

    def __init__(self, max_bytes: int = 4000) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> list[str]:
        """The lines completed by this chunk."""
        lines: list[str] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            self._take(chunk[start:end], lines, complete=True)
            start = end + 1
        self._take(chunk[start:], lines, complete=False)
        return lines

    def _take(self, piece: bytes, lines: list[str], complete: bool) -> None:
        if not self._skipping:
            self._buffer += piece
            if len(self._buffer) > self.max_bytes:
                lines.append(decode(bytes(self._buffer[:self.max_bytes])) + CUT_MARK)
                self._buffer.clear()
                self._skipping = True
            elif complete:
                lines.append(decode(bytes(self._buffer)))
                self._buffer.clear()
        if complete:
            self._skipping = False

    def flush(self) -> list[str]:
        """The last line when the stream ended without a newline."""
        rest = [decode(bytes(self._buffer))] if self._buffer else []
        self._buffer.clear()
        self._skipping = False
        return rest


def decode(raw: bytes) -> str:
    """Text of a line: UTF-8 with replacement characters, no trailing CR, no NUL (PostgreSQL refuses it)."""
    return raw.decode("utf-8", errors="replace").rstrip("\r").replace("\x00", "\ufffd")
