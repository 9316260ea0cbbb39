"""Integration on the real datasets in ../shared/datasets (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncclf import AsyncClassifier

from .conftest import Rows

# The real datasets: the slow tier.
pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CATEGORIES = ["alt.atheism", "soc.religion.christian", "comp.graphics", "sci.med"]


async def test_sms_spam_hold_out_accuracy(sms_rows: Rows) -> None:
    """The default pipeline beats 0.97 on a seeded SMS hold-out, via concurrent calls."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(sms_rows))
    train, test = order[:4500], order[4500:]
    clf = await AsyncClassifier().fit(
        [sms_rows[i]["text"] for i in train], [sms_rows[i]["label"] for i in train]
    )
    texts = [sms_rows[i]["text"] for i in test]
    labels = [sms_rows[i]["label"] for i in test]
    assert await clf.score(texts, labels) > 0.97
    async with clf.stream(texts) as results:
        streamed = [p.label async for p in results]
    assert streamed == list(await clf.predict(texts))


async def test_newsgroups_tutorial_subset(news_rows: Rows) -> None:
    """On scikit-learn's 4-category tutorial subset, accuracy clears its 0.91 SVM figure."""
    rows = [r for r in news_rows if r["label"] in CATEGORIES]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    clf = await AsyncClassifier().fit([r["text"] for r in train], [r["label"] for r in train])
    accuracy = await clf.score([r["text"] for r in test], [r["label"] for r in test])
    assert accuracy > 0.91
    groups = await clf.group([r["text"] for r in test[:300]], k=5)
    assert set(groups) == set(CATEGORIES)


async def test_chinese_reviews_with_the_untouched_default(zh_rows: Rows, tmp_path: Path) -> None:
    """The default pipeline reaches 0.85 on zh_reviews' test split (scikit-learn's word
    tokens gave 0.7143), streams agree with predict, and the saved model loads with no
    trusted types."""
    train = [r for r in zh_rows if r["split"] == "train"]
    test = [r for r in zh_rows if r["split"] == "test"]
    clf = await AsyncClassifier().fit([r["text"] for r in train], [r["label"] for r in train])
    texts = [r["text"] for r in test]
    assert await clf.score(texts, [r["label"] for r in test]) >= 0.85
    async with clf.stream(texts[:500]) as results:
        streamed = [p.label async for p in results]
    assert streamed == list(await clf.predict(texts[:500]))
    await clf.save(tmp_path / "zh.skops")
    loaded = await AsyncClassifier.load(tmp_path / "zh.skops")
    assert list(await loaded.predict(texts[:200])) == streamed[:200]


@pytest.fixture(scope="module")
def sms_model(sms_rows: Rows) -> AsyncClassifier:
    import anyio

    async def fit() -> AsyncClassifier:
        return await AsyncClassifier().fit(
            [r["text"] for r in sms_rows[:3000]], [r["label"] for r in sms_rows[:3000]]
        )

    clf: AsyncClassifier = anyio.run(fit)
    return clf


@settings(max_examples=20)
@given(st.lists(st.integers(min_value=0, max_value=5573), min_size=1, max_size=40))
async def test_argmax_of_proba_is_predict(
    sms_model: AsyncClassifier, sms_rows: Rows, picks: list[int]
) -> None:
    """For the default pipeline, predict equals the argmax of predict_proba, and classify
    agrees with both."""
    texts = [sms_rows[i]["text"] for i in picks]
    proba = await sms_model.predict_proba(texts)
    predicted = await sms_model.predict(texts)
    assert list(sms_model.classes_[proba.argmax(axis=1)]) == list(predicted)
    assert (await sms_model.classify(texts[0])).label == predicted[0]
