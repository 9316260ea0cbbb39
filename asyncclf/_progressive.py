"""The bookkeeping of progressive validation (test, then train), apart from the loop that
feeds it: the classes a session learns, each example checked, and the running and
windowed accuracy. No anyio: tested without an event loop."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable

import numpy as np

from ._errors import InvalidInputError
from ._validation import _describe as describe
from ._validation import check_text, label_kind

__all__ = ["Classes", "Score", "example"]


class Classes:
    """The classes a session learns, and the check of each example's label."""

    def __init__(self, labels: list[Hashable]) -> None:
        self.labels = labels
        self.kind = label_kind(labels[0])
        self._known = set(labels)

    def check(self, label: object, index: int) -> Hashable:
        kind = label_kind(label)
        if kind is None:
            msg = (
                f"Label at index {index} is {describe(label)}; class labels must be str, "
                f"int or bool."
            )
            raise InvalidInputError(msg)
        value: Hashable = label.item() if isinstance(label, np.generic) else label
        if kind != self.kind or value not in self._known:
            msg = (
                f"Label {value!r} at index {index} is not one of the classes learned, "
                f"{self.labels!r}. Declare every label the stream will hold when learning "
                f"starts, as learn(..., classes=[...]); a model already serving keeps its "
                f"classes (fit it anew to add one)."
            )
            raise InvalidInputError(msg)
        return value


def example(item: object, index: int, classes: Classes) -> tuple[str, Hashable]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        msg = f"Example at index {index} is {describe(item)}, not a (text, label) pair."
        raise InvalidInputError(msg)
    text, label = item
    return check_text(text, index), classes.check(label, index)


class Score:
    """Progressive accuracy, overall and over a sliding window, in O(window) memory."""

    def __init__(self, window: int) -> None:
        self.seen = 0
        self.hits = 0
        self._window: deque[bool] = deque(maxlen=window)
        self._window_hits = 0

    def add(self, hits: list[bool]) -> None:
        window = self._window
        for hit in hits:
            if len(window) == window.maxlen:
                self._window_hits -= window[0]
            window.append(hit)
            self._window_hits += hit
        self.seen += len(hits)
        self.hits += sum(hits)

    @property
    def accuracy(self) -> float:
        return self.hits / self.seen if self.seen else math.nan

    @property
    def window_accuracy(self) -> float:
        return self._window_hits / len(self._window) if self._window else math.nan
