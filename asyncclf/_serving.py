"""The served model of one classifier, and who may change it.

A :class:`Slot` holds the :class:`~asyncclf._model.Model` that predictions read, its
version and identity, the lock that puts changes one after another, and the task that
holds a ``learn`` block open. Every path that serves a new model (``fit``,
``partial_fit``, ``swap``, ``load``, each publish of ``learn``) goes through
:meth:`Slot.serve`, inside :meth:`Slot.changing`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio

from ._errors import AsyncClfError, NotFittedError
from ._executors.base import PerRun
from ._model import Model

__all__ = ["Slot"]


class Slot:
    """One classifier's served model: swapped whole, one change at a time."""

    def __init__(self) -> None:
        self.model: Model | None = None
        """What predictions read now: replaced whole by :meth:`serve`, never mutated."""
        self._lock = PerRun(anyio.Lock)
        self._learning_in: int | None = None
        """The task holding a ``learn`` block open, whose changes would wait for itself."""
        self.closed = False
        self._last = (0, "")
        """The version and id served when the slot was closed."""

    @property
    def version(self) -> int:
        """0 before the first model; +1 on every model served since."""
        return self._last[0] if self.model is None else self.model.version

    @property
    def model_id(self) -> str:
        """The serving model's fingerprint, ``""`` before the first."""
        return self._last[1] if self.model is None else self.model.model_id

    def require_open(self) -> None:
        """Raise :class:`AsyncClfError` once the slot is closed."""
        if self.closed:
            msg = "This AsyncClassifier is closed (aclose() was called); make a new one."
            raise AsyncClfError(msg)

    def require(self) -> Model:
        """The serving model, or :class:`NotFittedError` when there is none yet (an
        :class:`AsyncClfError` once closed)."""
        self.require_open()
        if self.model is None:
            msg = (
                "This AsyncClassifier is not fitted yet; await fit(X, y) (or partial_fit) "
                "before predicting."
            )
            raise NotFittedError(msg)
        return self.model

    def check_not_learning(self, call: str) -> None:
        """Refuse ``call`` from the task holding a ``learn`` block open: it would wait
        for that block, which waits for the task."""
        if self._learning_in is not None and self._learning_in == anyio.get_current_task().id:
            msg = (
                f"{call}() waits until learning ends, so it cannot be awaited inside the "
                f"learn() block that holds it open; call it after the block, or from "
                f"another task."
            )
            raise AsyncClfError(msg)

    @asynccontextmanager
    async def changing(self, call: str) -> AsyncIterator[Model | None]:
        """Hold the right to change the model (waiting for a change under way), and
        yield the model serving then; ``call`` names the caller in errors."""
        self.require_open()
        self.check_not_learning(call)
        async with self._lock.get():
            self.require_open()
            yield self.model

    @contextmanager
    def learning(self) -> Iterator[None]:
        """Mark the current task as the one holding a ``learn`` block open."""
        self._learning_in = anyio.get_current_task().id
        try:
            yield
        finally:
            self._learning_in = None

    def serve(self, estimator: Any, model_id: str, version: int | None = None) -> Model:
        """Serve ``estimator`` from now on, as version ``version`` (default: the next).

        Call it inside :meth:`changing`. One attribute assignment on the event loop:
        a reader sees the old model or the new one, whole. Once the slot is closed it
        raises :class:`AsyncClfError` instead (a fit that ended after ``aclose``).
        """
        self.require_open()
        model = Model.of(estimator, self.version + 1 if version is None else version, model_id)
        self.model = model
        return model

    def close(self) -> None:
        """Serve nothing from now on: every later call fails with ``AsyncClfError``, and
        the model goes (with whatever an executor shipped for it) once the calls
        reading it are done. Idempotent."""
        if not self.closed:
            self._last = (self.version, self.model_id)
            self.closed = True
            self.model = None
