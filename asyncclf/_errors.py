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

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = [
    "AsyncClfError",
    "InvalidInputError",
    "InvalidParameterError",
    "NotFittedError",
    "OverloadedError",
    "PersistenceError",
    "UnsupportedEstimatorError",
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
