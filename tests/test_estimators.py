"""Other kinds of estimator plug in unchanged: a neural network on TF-IDF features."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline

from asyncclf import AsyncClassifier, load_sms_spam

pytestmark = pytest.mark.anyio


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
async def test_mlp_classifier_fits_predicts_streams_and_persists(tmp_path: Path) -> None:
    """An MLPClassifier pipeline trains, answers every kind of call, and round-trips."""
    texts, labels = load_sms_spam()
    network = make_pipeline(
        TfidfVectorizer(max_features=3000, sublinear_tf=True),
        MLPClassifier(hidden_layer_sizes=(32,), max_iter=15, random_state=0),
    )
    clf = await AsyncClassifier(network).fit(texts[:2000], labels[:2000])
    held_out, truth = texts[2000:2600], labels[2000:2600]
    assert await clf.score(held_out, truth) > 0.95
    proba = await clf.predict_proba(held_out)
    assert list(clf.classes_[proba.argmax(axis=1)]) == list(await clf.predict(held_out))
    assert (await clf.classify("WINNER! claim your free cash prize now")).label == "spam"
    async with clf.stream(held_out[:50]) as results:
        assert len([p async for p in results]) == 50
    path = tmp_path / "mlp.skops"
    await clf.save(path)
    # The fitted network keeps its optimiser, a private sklearn type skops does not
    # trust by default: the caller opts in by name.
    adam = "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"
    loaded = await AsyncClassifier.load(path, trusted=[adam])
    assert list(await loaded.predict(held_out)) == list(await clf.predict(held_out))
