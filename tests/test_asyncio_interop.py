"""Plain asyncio idioms (gather, wait_for) work with AsyncClassifier (pytest-asyncio)."""

from __future__ import annotations

import asyncio

import pytest

from asyncclf import AsyncClassifier

from .fakes import TRAIN_X, TRAIN_Y, KeywordClassifier


@pytest.mark.asyncio
async def test_gather_many_classify_calls() -> None:
    """asyncio.gather over many classify calls returns each caller's own prediction."""
    clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    texts = [("spam " if i % 2 else "eggs ") * (i % 3 + 1) for i in range(200)]
    predictions = await asyncio.gather(*(clf.classify(t) for t in texts))
    assert [p.text for p in predictions] == texts
    assert [p.label for p in predictions] == [t.split()[0] for t in texts]
    assert clf.statistics().batches < 200


@pytest.mark.asyncio
async def test_wait_for_timeout_cancels_cleanly() -> None:
    """asyncio.wait_for timing out a queued call leaves the classifier consistent."""
    clf = await AsyncClassifier(KeywordClassifier(), max_latency=5.0).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(clf.classify("spam"), timeout=0.01)
    assert clf.statistics().queue_depth == 0
    assert clf.statistics().batches == 0
    clf.set_params(max_latency=0.0)
    assert (await clf.classify("eggs")).label == "eggs"
