"""Write the command's results: strict JSON lines and text on stdout, notes and a bar on stderr.

Output is JSON that never holds NaN, written so that a refused write is one line too.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import IO, Any

from .errors import CommandError, failure
from .reading import Reading


def note(reading: Reading, name: str) -> None:
    """Print the line about the blank lines skipped in ``name``, if any, on stderr."""
    line = reading.note(name)
    if line is not None:
        print(f"asyncclf: note: {line}", file=sys.stderr)


def progress_bar(
    description: str, total: int | None = None, unit: str = " texts"
) -> AbstractContextManager[Any]:
    """A tqdm bar on stderr when it is a terminal and tqdm is installed; else nothing."""
    if not sys.stderr.isatty() or importlib.util.find_spec("tqdm") is None:
        return nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(desc=description, total=total, unit=unit, file=sys.stderr)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """Turn a numpy scalar into the Python scalar ``json`` can write."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    msg = f"{type(value).__name__} is not JSON serializable"
    raise TypeError(msg)


class Output:
    """Standard output: JSON records and lines of text, with write errors as one line."""

    def __init__(self, file: IO[str]) -> None:
        self.file = file

    def line(self, text: str) -> None:
        """Write ``text`` and a newline; escape what the output's encoding cannot hold."""
        try:
            self._write(text + "\n")
        except UnicodeEncodeError:
            encoding = getattr(self.file, "encoding", None) or "utf-8"
            self._write(text.encode(encoding, "backslashreplace").decode(encoding) + "\n")

    def record(self, record: dict[str, Any], where: str) -> None:
        """Write ``record`` as one line of strict JSON (no NaN), about the input ``where``."""
        try:
            line = json.dumps(record, ensure_ascii=False, allow_nan=False, default=_plain)
        except (TypeError, ValueError) as exc:
            msg = f"{where}: cannot write the result as JSON ({exc})"
            raise CommandError(msg) from None
        try:
            self._write(line + "\n")
        except UnicodeEncodeError:  # e.g. a lone surrogate in a text: escape it
            self._write(json.dumps(record, allow_nan=False, default=_plain) + "\n")

    def flush(self) -> None:
        """Flush, so that a write error is reported here rather than at exit."""
        self._write(None)

    def _write(self, text: str | None) -> None:
        try:
            if text is None:
                self.file.flush()
            else:
                self.file.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            msg = f"<stdout>: cannot write: {exc.strerror or exc}"
            raise CommandError(msg) from None


def check_score(score: float, where: str) -> None:
    if not math.isfinite(score):
        msg = f"{where}: the model gave the score {score}, not a finite number"
        raise CommandError(msg)


def answer(result: Any, where: str) -> tuple[Any, float]:
    """Return the label and score of a stream's result, or fail naming ``where``."""
    error = getattr(result, "error", None)
    if not result.ok or error is not None:
        msg = f"{where}: the model failed on this text: {failure(error)}"
        raise CommandError(msg)
    check_score(result.score, where)
    return result.label, result.score
