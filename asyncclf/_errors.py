"""The exceptions asyncclf raises of its own.

::

    AsyncClfError                  base of every failure asyncclf reports itself
    |- NotFittedError              also sklearn.exceptions.NotFittedError
    |- InvalidInputError           also TypeError and ValueError: bad texts or labels
    |- InvalidParameterError       also ValueError and TypeError: a bad setting or argument
    |- UnsupportedEstimatorError   also TypeError
    |- OverloadedError             a bounded queue refused work
    '- PersistenceError            unreadable, untrusted, tampered or incompatible model file

Exceptions raised by the wrapped estimator pass through unchanged; when the estimator
fails on one text of a batch, only the caller that sent that text receives it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = [
    "AsyncClfError",
    "InvalidInputError",
    "InvalidParameterError",
    "NotFittedError",
    "OverloadedError",
    "PersistenceError",
    "UnsupportedEstimatorError",
    "describe",
    "faithful_copy",
    "own_copy",
    "rebuild",
    "same_exception",
]


class AsyncClfError(Exception):
    """Base class of the errors asyncclf raises itself."""


class NotFittedError(AsyncClfError, _SklearnNotFittedError):  # type: ignore[misc]
    """The classifier was asked to predict before any successful fit."""


class InvalidInputError(AsyncClfError, TypeError, ValueError):
    """Input texts or labels are malformed; the message names the item to blame.

    It is both a ``TypeError`` and a ``ValueError``, so code written for
    scikit-learn's conventions catches it either way.
    """


class InvalidParameterError(AsyncClfError, ValueError, TypeError):
    """A constructor or ``set_params`` value, or a call's argument, is not allowed.

    The message names the parameter and what it accepts. Like scikit-learn's own
    ``InvalidParameterError``, it is both a ``ValueError`` and a ``TypeError``.
    """


class UnsupportedEstimatorError(AsyncClfError, TypeError):
    """The wrapped estimator lacks a capability the call needs (e.g. scores for rank)."""


class OverloadedError(AsyncClfError):
    """The batching queue is full and the classifier was told not to wait."""


class PersistenceError(AsyncClfError):
    """A model file could not be saved or loaded: unreadable, untrusted or tampered."""


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


E = TypeVar("E", bound=BaseException)


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
