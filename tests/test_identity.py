"""Model identity: ``model_id``, the same in every process serving the same model."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
import skops.io as sio
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

import asyncclf
from asyncclf import AsyncClassifier, FailedPrediction, PersistenceError
from asyncclf._work import fingerprint, training

from .conftest import Classifiers
from .fakes import TRAIN_X, TRAIN_Y, KeywordClassifier

pytestmark = pytest.mark.anyio

SENTENCES = [
    "the match ended in a draw after extra time",
    "the striker scored twice in the second half",
    "the court ruled on the appeal this morning",
    "parliament passed the budget after a long debate",
    "our goalkeeper saved a penalty in the final minute",
    "the minister resigned over the new tax law",
] * 3
TOPICS = ["sport", "sport", "politics", "politics", "sport", "politics"] * 3
ROOT = Path(__file__).resolve().parents[1]


def fit_in_a_fresh_process(texts: list[str], labels: list[str], save: Path | None = None) -> str:
    """The model_id of the default pipeline fitted on ``texts`` in a new interpreter
    (with another hash seed: str hashes, and so set and dict orders, differ)."""
    script = textwrap.dedent(
        f"""
        import json, sys, anyio, asyncclf
        async def main():
            clf = await asyncclf.AsyncClassifier().fit({texts!r}, {labels!r})
            if {str(save)!r} != "None":
                await clf.save({str(save)!r})
            print(json.dumps(clf.model_id))
        anyio.run(main)
        """
    )
    return str(json.loads(run_python(script)))


def run_python(script: str, seed: str = "random") -> str:
    env = {"PYTHONHASHSEED": seed, "PATH": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow  # fresh Python processes
async def test_the_same_fit_in_two_processes_has_the_same_id_and_other_data_another() -> None:
    """Two processes fitting the same data agree on the id (as this one does); a fit
    on other data gets another. A fresh classifier has none."""
    assert AsyncClassifier().model_id == ""
    first = await anyio.to_thread.run_sync(fit_in_a_fresh_process, SENTENCES, TOPICS)
    second = await anyio.to_thread.run_sync(fit_in_a_fresh_process, SENTENCES, TOPICS)
    here = await AsyncClassifier().fit(SENTENCES, TOPICS)
    assert first == second == here.model_id
    assert re.fullmatch("[0-9a-f]{16}", first)
    await here.fit(SENTENCES[:-1], TOPICS[:-1])
    assert here.model_id != first
    assert here.version == 2


@pytest.mark.slow  # fresh Python processes
async def test_a_saved_model_keeps_its_id_in_every_process_that_loads_it(
    tmp_path: Path,
) -> None:
    """The file stores the id: the saver, this process's load and swap, and a fresh
    process loading the file all agree."""
    path = tmp_path / "model.skops"
    saved = await anyio.to_thread.run_sync(fit_in_a_fresh_process, SENTENCES, TOPICS, path)
    loaded = await AsyncClassifier.load(path)
    assert loaded.model_id == saved
    swapped = await AsyncClassifier().fit(SENTENCES[:4], TOPICS[:4])
    await swapped.swap(path)
    assert swapped.model_id == saved
    script = textwrap.dedent(
        f"""
        import json, anyio, asyncclf
        async def main():
            clf = await asyncclf.AsyncClassifier.load({str(path)!r})
            print(json.dumps([clf.model_id, clf.version]))
        anyio.run(main)
        """
    )
    elsewhere = json.loads(await anyio.to_thread.run_sync(run_python, script))
    assert elsewhere == [saved, 1]


async def test_the_id_does_not_depend_on_the_order_of_a_vocabulary() -> None:
    """The fingerprint reads a vocabulary in column order: rebuilt in another order
    (as load does), the model is the same model."""
    clf = await AsyncClassifier().fit(SENTENCES, TOPICS)
    estimator = training.served_copy(clf.estimator_)[0]
    tfidf = estimator[0]
    tfidf.vocabulary_ = dict(reversed(list(tfidf.vocabulary_.items())))
    assert fingerprint.fingerprint(estimator) == clf.model_id
    tfidf.idf_ = tfidf.idf_ * 2  # what it learned: another model
    assert fingerprint.fingerprint(estimator) != clf.model_id


async def test_every_answer_carries_the_id_of_the_model_that_gave_it(make: Classifiers) -> None:
    """classify, classify_many, stream (failures too), rank, group and top_k say which
    model answered, by version and id."""
    clf = make(KeywordClassifier())
    await clf.fit(TRAIN_X[:2], TRAIN_Y[:2])
    first = clf.model_id
    await clf.fit(TRAIN_X, TRAIN_Y)
    model = (clf.version, clf.model_id)
    assert clf.model_id != first
    texts = ["spam spam", "ham", "eggs eggs", "spam"]
    answers: list[Any] = [await clf.classify("ham"), *await clf.classify_many(texts)]
    async with clf.stream([*texts, "BOOM"], on_error="yield") as results:
        answers += [result async for result in results]
    assert isinstance(answers[-1], FailedPrediction)
    answers += await clf.rank(texts, "spam")
    answers += [r for rs in (await clf.group(texts)).values() for r in rs]
    answers += await clf.top_k(texts, "spam", k=2)
    assert {(a.version, a.model_id) for a in answers} == {model}


async def test_partial_fit_swap_and_learn_give_new_ids() -> None:
    """Each update is a new model with a new id; swapping in the same fitted
    estimator again serves the same model: a new version, the same id."""
    clf = AsyncClassifier(asyncclf.online_estimator())
    await clf.partial_fit(SENTENCES, TOPICS, classes=["politics", "sport"])
    ids = [clf.model_id]
    await clf.partial_fit(SENTENCES[:2], TOPICS[:2])
    ids.append(clf.model_id)
    await clf.swap(clf.estimator_)
    assert (clf.version, clf.model_id) == (3, ids[-1])
    stream = list(zip(SENTENCES, TOPICS, strict=True))
    async with clf.learn(stream, publish_every=6, batch_size=6) as reports:
        async for report in reports:
            assert report.model_id == clf.model_id
            ids.append(report.model_id)
    assert len(ids) == len(set(ids)) == 2 + 3


async def test_an_estimator_joblib_cannot_hash_gets_an_id_of_its_own() -> None:
    """An estimator that cannot be pickled still serves, with a random id per model."""
    unpicklable = make_pipeline(HashingVectorizer(), SGDClassifier(random_state=0))
    unpicklable.fit(["red", "blue"], ["r", "b"])
    unpicklable.note_ = lambda: None  # lambdas cannot be pickled
    clf = AsyncClassifier()
    await clf.swap(unpicklable)
    first = clf.model_id
    await clf.swap(unpicklable)
    assert len(first) == len(clf.model_id) == 16
    assert first != clf.model_id
    assert (await clf.classify("red")).model_id == clf.model_id


DUMPS = sio.dumps


def damaged_header(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Make ``dump_model`` write a header changed by ``change(header)``."""

    def damaging(content: Any, **kwargs: Any) -> bytes:
        change(content["header"])
        data: bytes = DUMPS(content, **kwargs)
        return data

    monkeypatch.setattr(sio, "dumps", damaging)


async def test_a_file_without_an_id_gets_its_fingerprint_and_a_bad_id_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file written before model ids loads with the loaded model's fingerprint; a
    malformed id is a PersistenceError."""
    clf = await AsyncClassifier().fit(SENTENCES, TOPICS)
    old, bad = tmp_path / "old.skops", tmp_path / "bad.skops"
    damaged_header(monkeypatch, lambda header: header.pop("model_id"))
    await clf.save(old)
    damaged_header(monkeypatch, lambda header: header.update(model_id="../../etc"))
    await clf.save(bad)
    assert (await AsyncClassifier.load(old)).model_id == clf.model_id
    with pytest.raises(PersistenceError, match=r"invalid model id '\.\./\.\./etc'"):
        await AsyncClassifier.load(bad)


async def test_every_executor_gives_the_same_model_the_same_id(make: Classifiers) -> None:
    """Fitted in worker processes or on a Dask cluster, the model is the one fitted in
    threads, and has its id."""
    clf = await make().fit(SENTENCES, TOPICS)
    assert clf.model_id == (await AsyncClassifier().fit(SENTENCES, TOPICS)).model_id


def test_private_settings_still_tell_models_apart() -> None:
    """Only private ``_..._id`` ints (object ids) are left out of the fingerprint: a
    private key of a setting's dict still counts."""
    from sklearn.preprocessing import FunctionTransformer

    def fitted(factor: int) -> Any:
        steps = make_pipeline(
            HashingVectorizer(),
            FunctionTransformer(scaled, kw_args={"_factor": factor}, accept_sparse=True),
            SGDClassifier(random_state=0),
        )
        return steps.fit(SENTENCES, TOPICS)

    assert fingerprint.fingerprint(fitted(1)) != fingerprint.fingerprint(fitted(50))
    assert fingerprint.fingerprint(fitted(1)) == fingerprint.fingerprint(fitted(1))


def scaled(features: Any, _factor: int = 1) -> Any:
    return features * _factor


def character_pairs(text: str) -> list[tuple[str, str]]:
    return list(itertools.pairwise(text))


async def test_a_model_the_fingerprint_cannot_read_still_fits_with_an_id_of_its_own() -> None:
    """A vocabulary of tuples (which model files cannot hold either) gets a random id
    instead of failing the fit."""
    from sklearn.feature_extraction.text import CountVectorizer

    steps = make_pipeline(CountVectorizer(analyzer=character_pairs), SGDClassifier())
    clf = await AsyncClassifier(steps).fit(SENTENCES, TOPICS)
    assert re.fullmatch("[0-9a-f]{16}", clf.model_id)
    assert fingerprint.fingerprint(clf.estimator_) != clf.model_id
