"""Check user input once, at the edge, and turn problems into ``InvalidInputError``."""

from __future__ import annotations

import math
import operator
from collections.abc import Hashable, Iterable
from typing import Any, Literal, overload

import anyio
import numpy as np

from ._errors import InvalidInputError, InvalidParameterError
from ._executors.base import Executor

__all__ = [
    "check_k",
    "check_labels",
    "check_params",
    "check_text",
    "check_texts",
    "check_training_set",
    "label_kind",
]


def _describe(item: object) -> str:
    if isinstance(item, (float, np.floating)) and math.isnan(item):
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


_KINDS = {"U": "str", "b": "bool", "i": "int", "u": "int"}


def label_kind(label: object) -> str | None:
    """The kind of a class label, ``"str"``, ``"int"`` or ``"bool"``; else None.

    numpy scalars count as their Python kind (not ``timedelta64``, which numpy makes
    an integer). ``bool`` is its own kind, although Python makes it an ``int``:
    ``True`` and ``1`` would otherwise be one class. Floats are no class labels:
    scikit-learn's classifiers refuse ``0.5`` as a "continuous" target.
    """
    if isinstance(label, str):
        return "str"
    if isinstance(label, (bool, np.bool_)):
        return "bool"
    if isinstance(label, (int, np.integer)) and not isinstance(label, np.timedelta64):
        return "int"
    return None


def check_labels(labels: Iterable[Any], n_texts: int | None, *, name: str = "y") -> list[Hashable]:
    """Return ``labels`` as a list (matching ``n_texts`` texts, if given), or raise.

    Labels are ``str``, ``int`` or ``bool`` (numpy's too), all of one kind:
    scikit-learn would merge ``1`` and ``"1"`` (or ``True`` and ``1``) into one class.
    """
    if isinstance(labels, (str, bytes)):
        msg = f"{name} must be a sequence of labels, not a single string."
        raise InvalidInputError(msg)
    if isinstance(labels, np.ndarray) and labels.dtype.kind in _KINDS and labels.ndim == 1:
        items: list[Any] = list(labels)  # a typed array has one kind throughout
    else:
        try:
            items = list(labels)
        except TypeError:
            msg = f"{name} must be an iterable of labels, not {type(labels).__name__}."
            raise InvalidInputError(msg) from None
        first: tuple[int, str] | None = None
        for index, label in enumerate(items):
            kind = label_kind(label)
            if kind is None:
                described = _describe(label)
                if described in ("None", "NaN"):
                    msg = f"Label at index {index} is {described}; every text needs a label."
                else:
                    msg = (
                        f"Label at index {index} is {described}; class labels must be "
                        f"str, int or bool (a float label suggests a regression target)."
                    )
                raise InvalidInputError(msg)
            if first is None:
                first = (index, kind)
            elif kind != first[1]:
                msg = (
                    f"{name} mixes label kinds: index {first[0]} is {first[1]}, index {index} is "
                    f"{kind} ({label!r}). Give every label the same type: scikit-learn "
                    f"would merge, say, 1 and '1' into one class."
                )
                raise InvalidInputError(msg)
    if n_texts is not None and len(items) != n_texts:
        msg = f"X has {n_texts} texts but y has {len(items)} labels; give one label per text."
        raise InvalidInputError(msg)
    return items


@overload
def check_k(k: object, *, optional: Literal[False]) -> int: ...
@overload
def check_k(k: object, *, optional: bool = True) -> int | None: ...
def check_k(k: object, *, optional: bool = True) -> int | None:
    """Return ``k`` as an ``int`` >= 0 (or None, if ``optional``), or raise."""
    if k is None and optional:
        return None
    if not isinstance(k, (bool, np.bool_)):
        try:
            value = operator.index(k)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            if value >= 0:
                return value
    expected = "None or an int >= 0" if optional else "an int >= 0"
    msg = f"k must be {expected}, not {k!r}."
    raise InvalidParameterError(msg)


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


def check_params(params: dict[str, Any]) -> None:
    """Check constructor arguments; raise ``InvalidParameterError`` naming a bad one."""
    for name in ("max_batch_size", "max_queue"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = f"{name} must be an int >= 1, not {value!r}."
            raise InvalidParameterError(msg)
    if params["max_queue"] < params["max_batch_size"]:
        msg = (
            f"max_queue ({params['max_queue']}) must be at least max_batch_size "
            f"({params['max_batch_size']})."
        )
        raise InvalidParameterError(msg)
    latency = params["max_latency"]
    if isinstance(latency, bool) or not isinstance(latency, (int, float)):
        msg = f"max_latency must be a number of seconds, not {latency!r}."
        raise InvalidParameterError(msg)
    if not (latency >= 0 and math.isfinite(latency)):
        msg = f"max_latency must be >= 0 and finite, not {latency!r}."
        raise InvalidParameterError(msg)
    if params["overload"] not in ("wait", "raise"):
        msg = f"overload must be 'wait' or 'raise', not {params['overload']!r}."
        raise InvalidParameterError(msg)
    limiter = params["limiter"]
    if limiter is not None and not isinstance(limiter, anyio.CapacityLimiter):
        msg = f"limiter must be an anyio.CapacityLimiter or None, not {limiter!r}."
        raise InvalidParameterError(msg)
    executor = params["executor"]
    if executor not in ("threads", "processes") and not isinstance(executor, Executor):
        msg = (
            f"executor must be 'threads', 'processes' or an executor object (such as "
            f"asyncclf.ProcessExecutor(max_workers=4)), not {executor!r}."
        )
        raise InvalidParameterError(msg)
    if limiter is not None and isinstance(executor, Executor):
        msg = (
            f"limiter applies to executor='threads' or 'processes'; an executor object "
            f"has its own: pass the limiter to it ({type(executor).__name__}(..., "
            f"limiter=limiter)), which classifiers sharing it then share."
        )
        raise InvalidParameterError(msg)
    estimator = params["estimator"]
    if estimator is not None and not hasattr(estimator, "fit"):
        msg = f"estimator must be a scikit-learn estimator (with fit), not {estimator!r}."
        raise InvalidParameterError(msg)
