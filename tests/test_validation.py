"""One rule for every integer setting: numpy's integers are accepted wherever an int
is (a grid search hands them), bools, floats, strings and values out of range are
refused with ``InvalidParameterError`` naming the setting; and the rule vocabulary
of ``asyncclf._validation`` itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from asyncclf import (
    AsyncClassifier,
    InvalidParameterError,
    ProcessExecutor,
    online_estimator,
)
from asyncclf._validation import (
    NONE,
    AnyOf,
    Instance,
    Integer,
    Number,
    Options,
    check_param,
    check_params,
    or_none,
)

from .fakes import DEADLINE, TRAIN_X, TRAIN_Y, KeywordClassifier

pytestmark = pytest.mark.anyio

TEXTS = ["spam spam", "ham", "eggs", "spam", "ham ham"]
PAIRS = [(f"text {i % 5}", ["ham", "spam"][i % 2]) for i in range(12)]

Use = Callable[[Any, Path], Awaitable[None]]
"""Apply a setting as a user does and run a call that uses it."""


async def _fitted(**params: Any) -> AsyncClassifier:
    clf = AsyncClassifier(KeywordClassifier(), **params)
    return await clf.fit(TRAIN_X, TRAIN_Y)


async def _serve(clf: AsyncClassifier) -> None:
    """Answer a few calls at once, and check every count the batcher reports is an int."""
    async with anyio.create_task_group() as tasks:
        for text in TEXTS:
            tasks.start_soon(clf.classify, text)
    assert [p.text for p in await clf.classify_many(TEXTS)] == TEXTS
    statistics = clf.statistics()
    for count in (statistics.batches, statistics.items, statistics.max_batch_size_seen):
        assert type(count) is int


def _constructor(name: str) -> Use:
    async def use(value: Any, tmp_path: Path) -> None:
        # max_queue must hold a batch: at least max_batch_size (256 by default).
        extra = {"max_batch_size": 1} if name == "max_queue" else {}
        clf = await _fitted(**{name: value}, **extra)
        assert getattr(clf, name) is value  # stored as given
        await _serve(clf)

    return use


def _set_params(name: str) -> Use:
    async def use(value: Any, tmp_path: Path) -> None:
        clf = await _fitted(max_batch_size=1)
        assert clf.set_params(**{name: value}) is clf
        assert clf.get_params()[name] is value
        await _serve(clf)

    return use


def _learn(name: str) -> Use:
    async def use(value: Any, tmp_path: Path) -> None:
        clf = AsyncClassifier(online_estimator())
        extra: dict[str, Any] = {}
        if name == "checkpoint_every":
            extra["checkpoint"] = tmp_path / "model.skops"
        with anyio.fail_after(DEADLINE):
            async with clf.learn(PAIRS, classes=["ham", "spam"], **{name: value}, **extra) as got:
                reports = [report async for report in got]
        assert reports[-1].seen == len(PAIRS)
        assert reports[-1].published
        assert all(type(report.batch_size) is int for report in reports)

    return use


async def _stream(value: Any, tmp_path: Path) -> None:
    clf = await _fitted()
    async with clf.stream(TEXTS, max_in_flight=value) as results:
        assert [p.text async for p in results] == TEXTS


async def _max_workers(value: Any, tmp_path: Path) -> None:
    executor = ProcessExecutor(max_workers=value)
    try:
        assert type(executor.max_workers) is int
        assert executor.max_workers == value
    finally:
        await executor.aclose()


async def _load(value: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    await (await _fitted()).save(path)
    trusted = ["tests.fakes.KeywordClassifier"]
    clf = await AsyncClassifier.load(path, trusted=trusted, max_size=value)
    assert clf.version == 1
    assert await clf.swap(path, trusted=trusted, max_size=value) is clf
    assert clf.version == 2


def _k(method: str) -> Use:
    async def use(value: Any, tmp_path: Path) -> None:
        clf = await _fitted()
        if method == "rank":
            got = await clf.rank(TEXTS, "spam", k=value)
        elif method == "top_k":
            got = await clf.top_k(TEXTS, "spam", k=value)
        else:
            got = [r for members in (await clf.group(TEXTS, k=value)).values() for r in members]
            # group keeps k per class: as many as there are, at most k each.
            assert len(got) <= value * len(clf.classes_)
            return
        assert len(got) == value

    return use


# (where, setting, lowest value, a valid value, use)
SETTINGS: list[tuple[str, str, int, int, Use]] = [
    ("AsyncClassifier", "max_batch_size", 1, 2, _constructor("max_batch_size")),
    ("AsyncClassifier", "max_queue", 1, 3, _constructor("max_queue")),
    ("set_params", "max_batch_size", 1, 2, _set_params("max_batch_size")),
    ("set_params", "max_queue", 1, 3, _set_params("max_queue")),
    ("learn", "batch_size", 1, 2, _learn("batch_size")),
    ("learn", "publish_every", 1, 5, _learn("publish_every")),
    ("learn", "window", 1, 4, _learn("window")),
    ("learn", "max_in_flight", 1, 3, _learn("max_in_flight")),
    ("learn", "checkpoint_every", 1, 5, _learn("checkpoint_every")),
    ("stream", "max_in_flight", 1, 2, _stream),
    ("ProcessExecutor", "max_workers", 1, 2, _max_workers),
    ("load-swap", "max_size", 1, 10**8, _load),
    ("rank", "k", 0, 2, _k("rank")),
    ("group", "k", 0, 1, _k("group")),
    ("top_k", "k", 0, 2, _k("top_k")),
]
IDS = [f"{where}-{name}" for where, name, *_ in SETTINGS]


@pytest.mark.parametrize(("where", "name", "low", "valid", "use"), SETTINGS, ids=IDS)
@pytest.mark.parametrize("numpy_int", [np.int64, np.int32])
async def test_every_int_setting_accepts_numpy_integers(
    where: str, name: str, low: int, valid: int, use: Use, numpy_int: Any, tmp_path: Path
) -> None:
    """Each int setting takes a numpy integer as it takes an int, and works with it."""
    await use(numpy_int(valid), tmp_path)


@pytest.mark.parametrize(("where", "name", "low", "valid", "use"), SETTINGS, ids=IDS)
@pytest.mark.parametrize("bad", [True, np.True_, 1.5, "3", None, "below"])
async def test_every_int_setting_refuses_what_is_no_int_in_range(
    where: str, name: str, low: int, valid: int, use: Use, bad: Any, tmp_path: Path
) -> None:
    """Each int setting refuses a bool, a float, a str and a value below its lowest
    with InvalidParameterError naming it and saying what it takes; None only where
    it has no meaning."""
    value = low - 1 if isinstance(bad, str) and bad == "below" else bad
    optional = (where, name) in {
        ("learn", "max_in_flight"),
        ("learn", "checkpoint_every"),
        ("stream", "max_in_flight"),
        ("ProcessExecutor", "max_workers"),
        ("load-swap", "max_size"),
        ("rank", "k"),
        ("group", "k"),
    }
    if value is None and optional:
        return  # None is the default there: covered by every other test
    expected = f"{name} must be an int >= {low}"
    with pytest.raises(InvalidParameterError, match=expected) as caught:
        await use(value, tmp_path)
    assert str(caught.value).endswith(f", not {value!r}.")
    assert str(caught.value).count(" or None") == optional


async def test_a_refused_setting_changes_nothing() -> None:
    """set_params with a numpy integer among bad values leaves every setting as it was."""
    clf = await _fitted(max_batch_size=4)
    with pytest.raises(InvalidParameterError, match="max_queue must be an int >= 1"):
        clf.set_params(max_batch_size=np.int64(2), max_queue=np.int64(0))
    assert clf.get_params()["max_batch_size"] == 4
    with pytest.raises(InvalidParameterError, match=r"max_queue \(2\) must be at least"):
        clf.set_params(max_batch_size=np.int64(3), max_queue=np.int32(2))


# -- the vocabulary ------------------------------------------------------------------


@pytest.mark.parametrize("numpy_int", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64])
def test_integer_returns_a_python_int(numpy_int: Any) -> None:
    """Integer turns every numpy integer into the Python int of the same value."""
    got = check_param("n", numpy_int(7), Integer(1))
    assert type(got) is int
    assert got == 7


@pytest.mark.parametrize(
    ("rule", "value", "message"),
    [
        (Integer(1), 0, "n must be an int >= 1, not 0."),
        (Integer(1, 8), 9, "n must be an int from 1 to 8, not 9."),
        (Integer(1, unit="bytes"), False, "n must be an int >= 1 (bytes), not False."),
        (or_none(Integer(0)), -1, "n must be an int >= 0 or None, not -1."),
        (Number(0, unit="seconds"), float("inf"), "n must be a finite number >= 0 (seconds)"),
        (Number(0), True, "n must be a finite number >= 0, not True."),
        (Options("wait", "raise"), "Wait", "n must be 'wait' or 'raise', not 'Wait'."),
        (
            AnyOf(Options("a", "b"), Instance(Path, "a Path"), NONE),
            3,
            "n must be 'a', 'b', a Path or None, not 3.",
        ),
    ],
)
def test_one_message_style(rule: Any, value: Any, message: str) -> None:
    """Every refusal says "<name> must be <what the rule takes>, not <value>."."""
    with pytest.raises(InvalidParameterError) as caught:
        check_param("n", value, rule)
    assert str(caught.value).startswith(message)


def test_rules_return_what_to_use() -> None:
    """Number returns a float, Options the option itself, AnyOf its first match."""
    assert check_param("n", np.float32(0.5), Number(0)) == 0.5
    assert type(check_param("n", np.int64(2), Number(0))) is float
    assert type(check_param("n", np.str_("wait"), Options("wait", "raise"))) is str
    assert check_param("n", None, or_none(Integer(1))) is None
    path = Path("x")
    assert check_param("n", path, AnyOf(Options("a"), Instance(Path, "a Path"))) is path
    assert check_params({"a": np.int64(1), "b": None}, {"a": Integer(1), "b": NONE}) == {
        "a": 1,
        "b": None,
    }
