"""Check user input and settings once, at the edge: a bad text or label raises
``InvalidInputError``, a bad setting ``InvalidParameterError`` (through the rules at
the end, one vocabulary for every setting)."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Generic, Literal, TypeVar, cast, overload

import numpy as np

from ._errors import InvalidInputError, InvalidParameterError

__all__ = [
    "NONE",
    "AnyOf",
    "HasMethods",
    "Instance",
    "Integer",
    "Number",
    "Options",
    "Rule",
    "check_k",
    "check_labels",
    "check_param",
    "check_params",
    "check_text",
    "check_texts",
    "check_training_set",
    "label_kind",
    "or_none",
]

T = TypeVar("T")


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
    if optional:
        return check_param("k", k, _K_OR_NONE)
    return check_param("k", k, _K)


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


# -- parameter rules ----------------------------------------------------------------
# A setting's rule is data: one of the objects below, which says what it accepts (for
# the message) and returns the value to use; check_param raises one kind of error with
# one message style. One rule for integers everywhere: whatever ``operator.index``
# takes (numpy's integers, as a grid search hands them) except ``bool``, returned as a
# Python int, so nothing past the check sees np.int64.


class _Refused(Exception):
    """A rule refused a value (caught by :func:`check_param`, never seen outside)."""


class Rule(Generic[T]):
    """What a parameter accepts: ``description`` for messages, ``convert`` for values."""

    def __init__(self, *alternatives: str) -> None:
        self.alternatives = alternatives

    @property
    def description(self) -> str:
        """The accepted values, as a message says them: "an int >= 1 or None"."""
        *rest, last = self.alternatives
        return f"{', '.join(rest)} or {last}" if rest else last

    def convert(self, value: object) -> T:
        """Return the value to use for ``value``, or raise ``_Refused``."""
        raise NotImplementedError


class Integer(Rule[int]):
    """An int from ``low`` (to ``high``), numpy's too; never a bool. Returns an int."""

    def __init__(self, low: int, high: int | None = None, *, unit: str = "") -> None:
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        super().__init__(f"an int {bounds}" + (f" ({unit})" if unit else ""))
        self.low, self.high = low, high

    def convert(self, value: object) -> int:
        if isinstance(value, (bool, np.bool_)):
            raise _Refused
        try:
            number = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise _Refused from None
        if number < self.low or (self.high is not None and number > self.high):
            raise _Refused
        return number


class Number(Rule[float]):
    """A finite real number >= ``low`` (an int or numpy's too; never a bool), as a float."""

    def __init__(self, low: float, *, unit: str = "") -> None:
        super().__init__(f"a finite number >= {low}" + (f" ({unit})" if unit else ""))
        self.low = low

    def convert(self, value: object) -> float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise _Refused
        number = float(value)
        if not (number >= self.low and math.isfinite(number)):
            raise _Refused
        return number


class Options(Rule[T]):
    """One of ``options`` (a ``str`` subclass's value counts); returns the option itself."""

    def __init__(self, *options: T) -> None:
        super().__init__(*(repr(option) for option in options))
        self.options = options

    def convert(self, value: object) -> T:
        for option in self.options:
            if isinstance(value, type(option)) and value == option:
                return option
        raise _Refused


class Instance(Rule[T]):
    """An instance of ``kind``, described as ``description``; returned as given."""

    def __init__(self, kind: type[T], description: str) -> None:
        super().__init__(description)
        self.kind = kind

    def convert(self, value: object) -> T:
        if isinstance(value, self.kind):
            return value
        raise _Refused


class HasMethods(Rule[Any]):
    """An object with each method of ``names``, described as ``description``."""

    def __init__(self, *names: str, description: str) -> None:
        super().__init__(description)
        self.names = names

    def convert(self, value: object) -> Any:
        if all(hasattr(value, name) for name in self.names):
            return value
        raise _Refused


class AnyOf(Rule[T]):
    """The first of ``rules`` that accepts the value."""

    def __init__(self, *rules: Rule[Any]) -> None:
        super().__init__(*(part for rule in rules for part in rule.alternatives))
        self.rules = rules

    def convert(self, value: object) -> T:
        for rule in self.rules:
            try:
                return cast(T, rule.convert(value))
            except _Refused:
                pass
        raise _Refused


class _NoneRule(Rule[None]):
    def convert(self, value: object) -> None:
        if value is not None:
            raise _Refused


NONE: Rule[None] = _NoneRule("None")
"""``None``, to combine with another rule: :func:`or_none`, or :class:`AnyOf`."""


def or_none(rule: Rule[T]) -> Rule[T | None]:
    """``rule``, or None: "an int >= 1 or None"."""
    return AnyOf(rule, NONE)


def check_param(name: str, value: object, rule: Rule[T]) -> T:
    """Return ``value`` as ``rule`` converts it; if it refuses, raise
    :class:`InvalidParameterError`: "max_batch_size must be an int >= 1, not 0."."""
    try:
        return rule.convert(value)
    except _Refused:
        msg = f"{name} must be {rule.description}, not {value!r}."
        raise InvalidParameterError(msg) from None


def check_params(values: Mapping[str, object], rules: Mapping[str, Rule[Any]]) -> dict[str, Any]:
    """Check every one of ``values`` against its rule, in order; return them converted."""
    return {name: check_param(name, value, rules[name]) for name, value in values.items()}


_K = Integer(0)
_K_OR_NONE = or_none(_K)
