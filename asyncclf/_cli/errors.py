"""The command's expected failures, each printed as one line: CommandError and its wording."""

from __future__ import annotations


class CommandError(Exception):
    """An error to print as one line and exit with status 1."""


def about(name: str, exc: BaseException) -> CommandError:
    """Return a CommandError for ``exc`` about the file ``name``, without repeating it."""
    message = str(exc) or type(exc).__name__
    if message.startswith(name + " "):
        message = message[len(name) + 1 :]
    return CommandError(f"{name}: {message}")


def failure(exc: BaseException | None) -> str:
    """Describe an exception raised by the estimator (or anything unexpected)."""
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def one_line(message: str) -> str:
    """Join the lines of ``message`` into one, for stderr."""
    return " ".join(part for part in message.splitlines() if part) or "failed"
