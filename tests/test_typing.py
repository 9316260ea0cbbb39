"""The public API's static types: labels flow through as the classifier's type.

mypy --strict checks this file in CI (``assert_type`` fails the type check when a
type is wrong); pytest runs it too, so the example stays true at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typing_extensions import assert_type

from asyncclf import AsyncClassifier, FailedPrediction, Prediction, Ranked

from .fakes import TRAIN_X, TRAIN_Y, KeywordClassifier

pytestmark = pytest.mark.anyio


async def test_str_labels_flow_through_every_call_without_a_cast(tmp_path: Path) -> None:
    """AsyncClassifier[str] gives str labels from classify, group, rank and stream."""
    clf: AsyncClassifier[str] = AsyncClassifier(KeywordClassifier())
    assert_type(await clf.fit(TRAIN_X, TRAIN_Y), AsyncClassifier[str])
    assert_type(clf.set_params(max_latency=0.0), AsyncClassifier[str])

    prediction = await clf.classify("spam spam")
    assert_type(prediction, Prediction[str])
    label: str = prediction.label  # no cast, no Optional
    assert label == "spam"

    groups = await clf.group(["spam", "eggs"])
    assert_type(groups, dict[str, list[Ranked]])
    assert [r.text for r in groups["eggs"]] == ["eggs"]
    assert_type(await clf.rank(["spam", "eggs"], "spam", k=1), list[Ranked])

    async with clf.stream(["ham", "spam"]) as results:
        labels: list[str] = [p.label async for p in results]
    assert labels == ["ham", "spam"]

    async with clf.stream(["ham", "BOOM"], on_error="yield") as mixed:
        async for item in mixed:
            assert_type(item, Prediction[str] | FailedPrediction)
            if isinstance(item, FailedPrediction):
                assert_type(item.error, Exception)
            else:
                assert_type(item.label, str)

    path = tmp_path / "model.skops"
    assert_type(await clf.save(path), str)
    loaded = await AsyncClassifier[str].load(path, trusted=["tests.fakes.KeywordClassifier"])
    assert_type(loaded, AsyncClassifier[str])
    assert (await loaded.classify("eggs")).label == "eggs"


async def test_int_labels_and_the_untyped_default() -> None:
    """AsyncClassifier[int] types labels as int; an unparametrised one as Any."""
    numbered: AsyncClassifier[int] = AsyncClassifier(KeywordClassifier())
    await numbered.fit(TRAIN_X, [0, 1, 2, 0, 1, 2])
    assert_type((await numbered.classify("x")).label, int)
    assert_type(await numbered.group(["x"]), dict[int, list[Ranked]])

    assert_type(await numbered.rank(["x"], 1, k=np.int64(1)), list[Ranked])
    assert_type(await numbered.top_k(["x"], 1, k=np.int32(1)), list[Ranked])

    untyped = AsyncClassifier(KeywordClassifier())
    assert_type(untyped, AsyncClassifier[Any])
    await untyped.fit(TRAIN_X, TRAIN_Y)
    assert_type((await untyped.classify("ham")).label, Any)


async def never_called(numbered: AsyncClassifier[int]) -> None:
    """Not a test: mypy must refuse str labels for an AsyncClassifier[int] (strict mode
    reports an unused ignore, so the error is pinned)."""
    await numbered.fit(TRAIN_X, ["x", "y"])  # type: ignore[list-item]
