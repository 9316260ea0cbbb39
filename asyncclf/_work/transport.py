"""Results and exceptions crossing back from a worker process whole, and exception copies.

An exception raised in another process arrives as a faithful copy (or, if none can
cross, an :class:`~asyncclf.AsyncClfError` naming it), its traceback there as its cause;
an exception raised once for many callers is copied for each.
"""

from __future__ import annotations

import copy
import pickle
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from .._errors import AsyncClfError

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def call_portable(call: Callable[[], T]) -> T | Raised:
    """``call()`` in another process, whose exceptions cross back whole (see
    :func:`portable`): those in the result (a batch's failed texts), and the one it
    raised, returned as :class:`Raised` for :func:`returned` to raise in the parent."""
    try:
        result = call()
    except Exception as exc:
        return Raised(exc)
    except BaseException as exc:
        # SystemExit or KeyboardInterrupt from estimator code: it fails this call, as
        # in a worker thread, and neither ends the worker nor reaches the parent's loop.
        msg = f"The worker was interrupted by {exc!r}."
        return Raised(AsyncClfError(msg))
    crossing: T = portable(result)
    return crossing


class Raised:
    """The exception a worker call raised, on its way back to the parent as a value."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return Raised, (_Crossing(self.error),)


def returned(result: T | Raised) -> T:
    """What :func:`call_portable` returned, in the parent: raise what it raised."""
    if isinstance(result, Raised):
        raise result.error
    return result


def portable(result: Any) -> Any:
    """``result`` with each exception in it, inside tuples and lists, made to cross a
    process boundary whole.

    Unpickling an exception calls ``__init__`` again with its ``args``, which garbles the
    message of one whose ``__init__`` builds it from other arguments; and an exception
    holding something unpicklable (a lock, a socket) would fail the whole batch's
    reply. Each arrives instead as :func:`~asyncclf._errors.rebuild` makes it, or, if it
    cannot cross, as an :class:`AsyncClfError` naming its type and message.
    """
    if isinstance(result, BaseException):
        return _Crossing(result)
    if type(result) is tuple or type(result) is list:
        return type(result)(portable(item) for item in result)
    return result


class _Crossing:
    """An exception on its way back from a worker process (see :func:`portable`).

    Pickled, it becomes the bytes of a faithful copy that was checked to unpickle here
    (see :func:`~asyncclf._errors.faithful_copy`), to be given its traceback in the
    worker as its cause in the parent; or, when no copy crosses, what
    :func:`_stranded` says instead. Nothing about the exception can fail the rest of
    the reply.
    """

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        error = self.error
        kind = type(error)
        name = f"{kind.__module__}.{kind.__qualname__}"
        try:
            trace = "".join(traceback.format_exception(error))
        except Exception as exc:
            trace = f"(its traceback could not be formatted: {exc!r})"
        # Pickled as it is, if that gives it back whole (built-in exceptions keep what
        # they hold outside args); else its type, args and attributes, rebuilt without
        # __init__ (see own_copy). Either is tried here, so that it surely unpickles.
        why = "no copy of it survives pickling"
        try:
            content = pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
            if same_exception(pickle.loads(content), error):
                return _arrived, (content, trace)
        except Exception as exc:
            why = repr(exc)
        try:
            parts = (kind, error.args, getattr(error, "__dict__", {}))
            content = pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)
            if same_exception(rebuild(*pickle.loads(content)), error):
                return _rebuilt_here, (content, trace)
        except Exception as exc:
            why = repr(exc)
        return _stranded, (name, describe(error), why, trace)


class WorkerTraceback(Exception):
    """The cause of an exception raised in a worker process: its traceback there, as
    text (as ``concurrent.futures`` does for its process pools)."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}" if self.args else ""


def _arrived(content: bytes, trace: str) -> BaseException:
    """An estimator's exception, unpickled in the parent, its cause the traceback it
    had in the worker."""
    error: BaseException = pickle.loads(content)
    error.__cause__ = WorkerTraceback(trace)
    return error


def _rebuilt_here(content: bytes, trace: str) -> BaseException:
    """An estimator's exception, rebuilt in the parent without its ``__init__``."""
    error: BaseException = rebuild(*pickle.loads(content))
    error.__cause__ = WorkerTraceback(trace)
    return error


def _stranded(kind: str, message: str, why: str, trace: str) -> AsyncClfError:
    """What a caller gets for an estimator exception that could not cross back."""
    error = AsyncClfError(
        f"The estimator raised {kind}: {message} (the exception itself could not be sent "
        f"back from the worker: {why})"
    )
    error.__cause__ = WorkerTraceback(trace)
    return error


def own_copy(error: Exception) -> Exception:
    """A copy of ``error`` for one caller, chained to the original.

    Raising one exception object in many tasks would pile every task's traceback onto
    it; each caller raises its own copy instead, whose ``__cause__`` is the original
    with the worker's traceback. An exception that cannot be copied is shared as is.
    """
    clone = faithful_copy(error, copy.copy)
    if clone is None:
        return error
    clone.__cause__ = error
    clone.__suppress_context__ = True
    return clone


def faithful_copy(error: E, reproduce: Callable[[E], Any]) -> E | None:
    """A copy of ``error`` with its type, message and attributes, or ``None``.

    ``reproduce(error)`` (``copy.copy``, or a pickle round trip) is tried first: it
    keeps what built-in exceptions hold outside ``args`` (``OSError.filename``,
    ``ImportError.name``), but calls ``__init__`` again with ``args``, which garbles
    the message of an exception whose ``__init__`` builds it from other arguments.
    Then :func:`rebuild`, which does not call ``__init__``. A copy counts only if its
    type and message are the original's.
    """
    for make in (reproduce, _rebuilt):
        try:
            clone = make(error)
        except Exception:  # then try the next way, or share the original
            continue
        if same_exception(clone, error):
            copied: E = clone
            return copied
    return None


def same_exception(clone: object, error: BaseException) -> bool:
    """Whether ``clone`` has the type and the message of ``error``."""
    return type(clone) is type(error) and describe(clone) == describe(error)


def _rebuilt(error: E) -> E:
    return rebuild(type(error), error.args, getattr(error, "__dict__", {}))


def rebuild(kind: type[E], args: tuple[Any, ...], state: dict[str, Any]) -> E:
    """An exception of type ``kind`` with these ``args`` and attributes, made without
    calling ``__init__``.

    Not ``copy.copy`` nor unpickling: those call ``__init__`` again with ``args``, and an
    ``__init__`` that builds its message from other arguments would garble it.
    """
    error = kind.__new__(kind, *args)
    error.args = args
    if state:
        error.__dict__.update(state)
    return error


def describe(error: BaseException) -> str:
    """``str(error)``, or a stand-in when its ``__str__`` itself raises."""
    try:
        return str(error)
    except Exception as exc:
        return f"<{type(error).__qualname__}, whose str() raised {exc!r}>"
