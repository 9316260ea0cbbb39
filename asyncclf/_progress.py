"""Progress reports for long calls: a callback, or tqdm's notebook-aware bar."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from ._errors import InvalidParameterError
from ._types import Progress

__all__ = ["Progress", "Reporter"]


class Reporter:
    """Report ``done`` out of ``total`` to a callback or a tqdm bar."""

    def __init__(
        self, progress: Progress, description: str, total: int | None, unit: str = " texts"
    ) -> None:
        self.total = total
        self._callback: Callable[[int, int | None], object] | None = None
        self._bar: Any = None
        self._done = 0
        if progress is True:
            if importlib.util.find_spec("tqdm") is None:
                msg = (
                    "progress=True needs tqdm; install it ('pip install tqdm') or pass a callback."
                )
                raise ModuleNotFoundError(msg)
            from tqdm.auto import tqdm

            self._bar = tqdm(desc=description, total=total, unit=unit)
        elif callable(progress):
            self._callback = progress
        elif progress not in (None, False):
            msg = f"progress must be None, a bool or a callable, not {progress!r}."
            raise InvalidParameterError(msg)

    @property
    def active(self) -> bool:
        return self._bar is not None or self._callback is not None

    def update(self, done: int) -> None:
        """Report that ``done`` items are finished (never decreasing)."""
        if self._bar is not None:
            self._bar.update(done - self._done)
        elif self._callback is not None:
            self._callback(done, self.total)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
