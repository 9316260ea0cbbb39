"""Check user input once, at the edge, and turn problems into ``InvalidInputError``."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

from ._errors import InvalidInputError

__all__ = ["check_labels", "check_text", "check_texts", "check_training_set"]


def _describe(item: object) -> str:
    if isinstance(item, float) and math.isnan(item):
        return "NaN"
    if item is None:
        return "None"
    return type(item).__name__


def check_text(item: object, index: int) -> str:
    """Return ``item`` if it is a ``str``; otherwise raise an error naming ``index``."""
    if isinstance(item, str):
        return item
    hint = " (decode it to str first)" if isinstance(item, (bytes, bytearray)) else ""
    msg = f"Text at index {index} is {_describe(item)}, not str{hint}."
    raise InvalidInputError(msg)


def check_texts(texts: Iterable[str], *, name: str = "X") -> list[str]:
    """Return ``texts`` as a list of ``str``, or raise an error naming the bad item."""
    if isinstance(texts, (str, bytes)):
        msg = (
            f"{name} must be a sequence of texts, not a single {type(texts).__name__}; "
            f"wrap one text in a list: [{name}]."
        )
        raise InvalidInputError(msg)
    try:
        items = list(texts)
    except TypeError:
        msg = f"{name} must be an iterable of str, not {type(texts).__name__}."
        raise InvalidInputError(msg) from None
    for index, item in enumerate(items):
        if type(item) is not str:
            check_text(item, index)
    return items


def check_labels(labels: Iterable[Any], n_texts: int) -> list[Hashable]:
    """Return ``labels`` as a list matching ``n_texts`` texts, or raise."""
    if isinstance(labels, (str, bytes)):
        msg = "y must be a sequence of labels, one per text, not a single string."
        raise InvalidInputError(msg)
    try:
        items = list(labels)
    except TypeError:
        msg = f"y must be an iterable of labels, not {type(labels).__name__}."
        raise InvalidInputError(msg) from None
    if len(items) != n_texts:
        msg = f"X has {n_texts} texts but y has {len(items)} labels; give one label per text."
        raise InvalidInputError(msg)
    for index, label in enumerate(items):
        if label is None or (isinstance(label, float) and math.isnan(label)):
            msg = f"Label at index {index} is {_describe(label)}; every text needs a label."
            raise InvalidInputError(msg)
        if not isinstance(label, Hashable):
            msg = f"Label at index {index} is {type(label).__name__}, which is not hashable."
            raise InvalidInputError(msg)
    return items


def check_training_set(
    texts: Iterable[str], labels: Iterable[Any], *, min_classes: int = 2
) -> tuple[list[str], list[Hashable]]:
    """Validate a training set: texts, one label each, not empty, enough classes."""
    x = check_texts(texts)
    y = check_labels(labels, len(x))
    if not x:
        msg = "The training set is empty; fit needs at least one text per class."
        raise InvalidInputError(msg)
    if min_classes > 1:
        classes = set(y)
        if len(classes) < min_classes:
            msg = (
                f"The training set has only {len(classes)} class ({next(iter(classes))!r}); "
                f"a classifier needs at least {min_classes}."
            )
            raise InvalidInputError(msg)
    return x, y
