"""Read the command's input: exact lines in, texts and labelled examples out.

Input is read in binary, in bounded chunks, in a worker thread, decompressed when it
starts with gzip's magic bytes, and split on ``\n`` only (a lone ``\r`` stays in its
text); a BOM is dropped; invalid UTF-8, bad JSON and bad fields become a
:class:`CommandError` naming the file and line. Blank lines are skipped and counted, and
JSON records are kept or left out by ``--where``, in a :class:`Reading`.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import sys
import zlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import IO, Any

import anyio
import anyio.to_thread

from .errors import CommandError, failure

_READ_CHUNK = 1 << 16
"""Most bytes of input read per worker-thread call."""

_INT64 = 1 << 63
"""Integer labels must lie in [-_INT64, _INT64), as numpy's int64 does."""

_GZIP_MAGIC = b"\x1f\x8b"
"""The first two bytes of every gzip file, whatever its name."""

_BLANK = " \t\r\n"
"""All a blank line holds: spaces and tabs (and its end). Other whitespace, such as a
no-break space or a form feed, is text, which the library classifies too."""


def display_name(path: str) -> str:
    """The name errors give the input ``path``: ``<stdin>`` for ``-``."""
    return "<stdin>" if path == "-" else path


class _Prefixed:
    """A binary file whose first bytes, read already to sniff its format, are put back."""

    def __init__(self, head: bytes, file: IO[bytes]) -> None:
        self._head = head
        self._file = file

    def read(self, size: int = -1, /) -> bytes:
        if not self._head:
            return self._file.read(size)
        if size < 0:
            head, self._head = self._head, b""
            return head + self._file.read()
        head, self._head = self._head[:size], self._head[size:]
        return head

    def seek(self, offset: int, /) -> int:
        """Refuse: the input is read once, from start to end (stdin cannot seek)."""
        msg = "the input is read once; it cannot seek"
        raise io.UnsupportedOperation(msg)


class _LineReader:
    """Split a file into lines on ``\\n`` alone and decode them as UTF-8 (worker side).

    A file starting with gzip's magic bytes is decompressed first, whatever its name.
    ``\\r\\n`` ends a line too; a lone ``\\r`` stays in the text. A UTF-8 byte order
    mark at the start of the file is dropped. Text-mode files (a replaced
    ``sys.stdin``) are split the same way, without decoding.
    """

    def __init__(self, file: IO[Any], name: str, opened: list[IO[bytes] | gzip.GzipFile]) -> None:
        self.name = name
        self.lineno = 0
        """Lines returned so far."""
        self._rest: list[Any] = []
        self._start = True
        read = getattr(file, "read1", file.read)
        try:
            head = read(2)
            if head == _GZIP_MAGIC[:1]:  # read1 may stop short of two bytes
                head += file.read(1)
        except OSError as exc:
            msg = f"{name}:1: cannot read: {exc.strerror or exc}"
            raise CommandError(msg) from exc
        if head == _GZIP_MAGIC:
            unzipped = gzip.GzipFile(fileobj=_Prefixed(head, file), mode="rb")
            opened.append(unzipped)  # closing it leaves the file open: closed after it
            self._read: Callable[[int], Any] = unzipped.read1
        else:
            if head:
                self._rest.append(head)
            self._read = read

    @classmethod
    def open(cls, path: str, opened: list[IO[bytes] | gzip.GzipFile]) -> _LineReader:
        """Open ``path`` (``-`` is stdin) in binary; append what it opens to ``opened``."""
        if path == "-":
            stdin: IO[Any] | None = sys.stdin
            if stdin is None:
                msg = "<stdin>: no standard input"
                raise CommandError(msg)
            return cls(getattr(stdin, "buffer", stdin), "<stdin>", opened)
        if os.path.isdir(path):
            msg = f"{path}: is a directory, not a file"
            raise CommandError(msg)
        try:
            file = open(path, "rb")  # noqa: SIM115 (closed by the caller)
        except OSError as exc:
            msg = f"{path}: cannot open: {exc.strerror or exc}"
            raise CommandError(msg) from exc
        opened.append(file)
        return cls(file, path, opened)

    def read(self) -> list[str]:
        """Return the next lines without their line ends; an empty list at the end."""
        while True:
            try:
                data = self._read(_READ_CHUNK)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                msg = f"{self.name}:{self.lineno + 1}: corrupt gzip data ({failure(exc)})"
                raise CommandError(msg) from exc
            except OSError as exc:
                msg = f"{self.name}:{self.lineno + 1}: cannot read: {exc.strerror or exc}"
                raise CommandError(msg) from exc
            newline = "\n" if isinstance(data, str) else b"\n"
            if not data:
                if not self._rest:
                    return []
                last = data[:0].join(self._rest)
                self._rest = []
                return self._decode(last)
            cut = data.rfind(newline)
            if cut < 0:
                self._rest.append(data)
                continue
            complete = data[:0].join([*self._rest, data[:cut]])
            self._rest = [data[cut + 1 :]] if cut + 1 < len(data) else []
            return self._decode(complete)

    def _decode(self, data: bytes | str) -> list[str]:
        if isinstance(data, bytes):
            if self._start:
                data = data.removeprefix(codecs.BOM_UTF8)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = self.lineno + 1 + data.count(b"\n", 0, exc.start)
                column = exc.start - data.rfind(b"\n", 0, exc.start)
                msg = (
                    f"{self.name}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} is "
                    f"byte {column} of the line); convert the file to UTF-8"
                )
                raise CommandError(msg) from None
        else:
            text = data.removeprefix("\ufeff") if self._start else data
        self._start = False
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        self.lineno += len(lines)
        return lines


async def _lines(path: str) -> AsyncGenerator[tuple[str, int, str], None]:
    """Yield ``(name, line number, line)``, reading and decoding in a worker thread."""
    limiter = anyio.CapacityLimiter(1)
    opened: list[IO[bytes] | gzip.GzipFile] = []
    try:
        reader = await anyio.to_thread.run_sync(_LineReader.open, path, opened, limiter=limiter)
        lineno = 0
        while lines := await anyio.to_thread.run_sync(reader.read, limiter=limiter):
            for line in lines:
                lineno += 1
                yield reader.name, lineno, line
    finally:
        for file in reversed(opened):  # a decompressor before the file it reads
            file.close()


_JSON_TYPES = {
    type(None): "null",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _field(record: dict[str, Any], field: str, name: str, lineno: int, kind: str) -> Any:
    if field not in record:
        msg = f"{name}:{lineno}: no {field!r} field (use --{kind}-field to name another)"
        raise CommandError(msg)
    value = record[field]
    if kind == "text" and not isinstance(value, str):
        msg = f"{name}:{lineno}: field {field!r} is {_json_type(value)}, not a string"
        raise CommandError(msg)
    if kind == "label":
        if not isinstance(value, (str, int)):
            msg = (
                f"{name}:{lineno}: field {field!r} is {_json_type(value)}; labels must be "
                f"strings, integers or booleans"
            )
            raise CommandError(msg)
        if type(value) is int and not -_INT64 <= value < _INT64:
            msg = f"{name}:{lineno}: label {value} is out of range (integers must fit 64 bits)"
            raise CommandError(msg)
    return value


def _record(line: str, name: str, lineno: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        msg = f"{name}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
        raise CommandError(msg) from None
    except (ValueError, RecursionError) as exc:  # a huge integer, too deep a nesting
        msg = f"{name}:{lineno}: invalid JSON ({exc})"
        raise CommandError(msg) from None
    if not isinstance(record, dict):
        msg = f"{name}:{lineno}: expected a JSON object, got {_json_type(record)}"
        raise CommandError(msg)
    return record


@dataclass
class Reading:
    """Which JSON records to keep (``--where``), and the lines left out, counted.

    Every command skips blank lines (empty, or only whitespace) in every input, plain
    text or JSON Lines, counts them, and says so in one :meth:`note` at the end.
    """

    where: Sequence[tuple[str, str]] = ()
    """``(field, value)`` pairs a JSON record must all match to be kept."""
    blank: int = 0
    """Blank lines skipped."""
    first_blank: int = 0
    """The line number of the first blank line skipped (0 if none)."""
    unmatched: int = 0
    """JSON records left out because they do not match ``where``."""

    def keeps(self, record: dict[str, Any]) -> bool:
        """Return whether ``record`` matches every condition; count it if not."""
        for name, value in self.where:
            if name not in record or _spelling(record[name]) != value:
                self.unmatched += 1
                return False
        return True

    def skip_blank(self, lineno: int) -> None:
        self.blank += 1
        self.first_blank = self.first_blank or lineno

    def conditions(self) -> str:
        """The ``--where`` conditions as the user wrote them, joined by ``and``."""
        return " and ".join(f"{name}={value}" for name, value in self.where)

    def left_out(self) -> str:
        """Say what was left out, for a file with no examples: `` (...)`` or nothing."""
        parts = []
        if self.blank:
            parts.append(f"{_lines_count(self.blank, 'blank line')} skipped")
        if self.where:
            parts.append(
                f"{_lines_count(self.unmatched, 'record')} not matching --where {self.conditions()}"
            )
        return f" ({'; '.join(parts)})" if parts else ""

    def note(self, name: str) -> str | None:
        """The line to print at the end about blank lines skipped in ``name``, if any."""
        if not self.blank:
            return None
        return (
            f"{name}: skipped {_lines_count(self.blank, 'blank line')} "
            f"(the first is line {self.first_blank})"
        )


def _lines_count(count: int, what: str) -> str:
    return f"{count} {what}" if count == 1 else f"{count} {what}s"


def _spelling(value: Any) -> str:
    """A JSON value as ``--where`` compares it: a string as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


async def read_texts(
    path: str,
    jsonl: bool,
    text_field: str,
    reading: Reading,
    linenos: deque[int] | None = None,
) -> AsyncGenerator[str, None]:
    """Yield the texts of ``path``; append the line number of each to ``linenos``.

    Blank lines are skipped and counted in ``reading``; with ``jsonl``, so are the
    records that do not match its ``where``.
    """
    async with aclosing(_lines(path)) as lines:
        async for name, lineno, line in lines:
            if not line.strip(_BLANK):
                reading.skip_blank(lineno)
                continue
            if jsonl:
                record = _record(line, name, lineno)
                if not reading.keeps(record):
                    continue
                line = _field(record, text_field, name, lineno, "text")
            if linenos is not None:
                linenos.append(lineno)
            yield line


_KINDS = {str: "string", int: "integer", bool: "boolean"}


def label_kind(label: Any) -> str | None:
    return _KINDS.get(type(label))


def _a(kind: str | None) -> str:
    return f"an {kind}" if kind == "integer" else f"a {kind}"


async def read_examples(
    path: str,
    text_field: str,
    label_field: str,
    reading: Reading,
    kind: str | None = None,
    skip: Callable[[CommandError], object] | None = None,
) -> AsyncGenerator[tuple[int, str, Any], None]:
    """Yield ``(line number, text, label)``; all labels of ``kind``, or of one kind.

    Blank lines, and records that do not match the ``where`` of ``reading``, are left
    out and counted there (before their fields are checked). A bad line (invalid JSON,
    a missing or mistyped field, a label of another kind) raises a
    :class:`CommandError`, or with ``skip`` is passed to ``skip`` and left out. A file
    that cannot be read or decoded always raises.
    """
    first = 0
    async with aclosing(_lines(path)) as lines:
        async for name, lineno, line in lines:
            if not line.strip(_BLANK):
                reading.skip_blank(lineno)
                continue
            try:
                record = _record(line, name, lineno)
                if not reading.keeps(record):
                    continue
                text = _field(record, text_field, name, lineno, "text")
                label = _field(record, label_field, name, lineno, "label")
                if kind is not None and label_kind(label) != kind:
                    why = f"the model's labels are {kind}s"
                    if first:
                        why = f"line {first} has {_a(kind)} label; all labels must be of one type"
                    msg = (
                        f"{name}:{lineno}: label {json.dumps(label)} is "
                        f"{_a(label_kind(label))}, but {why}"
                    )
                    raise CommandError(msg)
            except CommandError as exc:
                if skip is None:
                    raise
                skip(exc)
                continue
            if kind is None:
                first, kind = lineno, label_kind(label)
            yield lineno, text, label
