"""AsyncClassifier's public behaviour: fit, swap, predictions, rank, group, errors."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest
import sklearn
from anyio import wait_all_tasks_blocked
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import LinearSVC

import asyncclf
from asyncclf import (
    AsyncClassifier,
    AsyncClfError,
    InvalidInputError,
    InvalidParameterError,
    NotFittedError,
    Prediction,
    UnsupportedEstimatorError,
    default_estimator,
)

from .conftest import EVERYWHERE, Classifiers
from .fakes import (
    DEADLINE,
    LABELS,
    TRAIN_X,
    TRAIN_Y,
    DecisionOnlyClassifier,
    DuckClassifier,
    Gate,
    KeywordClassifier,
    LabelOnlyClassifier,
    settle,
)

pytestmark = pytest.mark.anyio

SENTENCES = [
    "the match ended in a draw after extra time",
    "the court ruled on the appeal this morning",
    "the striker scored twice in the second half",
    "parliament passed the budget after a long debate",
] * 3
TOPICS = ["sport", "politics", "sport", "politics"] * 3


async def fitted(make: Classifiers, estimator: Any = None, **kwargs: Any) -> AsyncClassifier:
    clf = make(KeywordClassifier() if estimator is None else estimator, **kwargs)
    return await clf.fit(TRAIN_X, TRAIN_Y)


@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
async def test_fit_returns_self_and_sets_attributes(make: Classifiers) -> None:
    """fit returns the classifier, bumps version to 1 and exposes classes_/estimator_."""
    template = KeywordClassifier()
    clf = make(template)
    assert clf.version == 0
    assert await clf.fit(TRAIN_X, TRAIN_Y) is clf
    assert clf.version == 1
    assert list(clf.classes_) == sorted(LABELS)
    assert clf.estimator_ is not template
    assert not hasattr(template, "classes_"), "the template estimator must stay unfitted"


@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
async def test_predictions_match_the_estimator(make: Classifiers) -> None:
    """predict, predict_proba and score equal the synchronous estimator's answers."""
    clf = await fitted(make)
    texts = ["spam spam ham", "eggs", "ham ham", "nothing"]
    sync = clf.estimator_
    np.testing.assert_array_equal(await clf.predict(texts), sync.predict(texts))
    np.testing.assert_allclose(await clf.predict_proba(texts), sync.predict_proba(texts))
    assert await clf.score(texts, ["spam", "eggs", "ham", "ham"]) == pytest.approx(0.75)


async def test_classify_many_answers_each_text_with_the_model_version(
    make: Classifiers,
) -> None:
    """classify_many gives what classify gives for each text, in input order, each
    carrying the version of the model that answered; a list longer than a batch too."""
    clf = await fitted(make, max_batch_size=4)
    texts = [f"{word} {i}" for i, word in enumerate(["spam", "ham", "eggs"] * 5)]
    many = await clf.classify_many(texts)
    one_by_one = [await clf.classify(text) for text in texts]
    assert [p.text for p in many] == texts
    assert [p.index for p in many] == list(range(len(texts)))
    assert [(p.label, p.score) for p in many] == [(p.label, p.score) for p in one_by_one]
    assert {p.version for p in many} == {clf.version} == {1}
    with pytest.raises(ValueError, match="cannot score"):
        await clf.classify_many(["ham", "BOOM"])


async def test_classify_many_calls_share_batches_with_other_callers() -> None:
    """Concurrent classify_many and classify calls are merged into batches, and a
    refit meanwhile never mixes two models within one call."""
    clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    results: list[list[Prediction]] = []

    async def many(i: int) -> None:
        results.append(await clf.classify_many([f"spam {i}", f"ham {i}", f"eggs {i}"]))

    async with anyio.create_task_group() as tasks:
        for i in range(20):
            tasks.start_soon(many, i)
            tasks.start_soon(clf.classify, f"ham {i}")
        tasks.start_soon(clf.fit, TRAIN_X, TRAIN_Y)
    assert clf.statistics().batches < 40
    for predictions in results:
        assert [p.label for p in predictions] == ["spam", "ham", "eggs"]
        assert len({p.version for p in predictions}) == 1


async def test_predicting_before_fit_raises_not_fitted(make: Classifiers) -> None:
    """Every prediction before the first fit raises NotFittedError (also sklearn's)."""
    clf = make(KeywordClassifier())
    for call in (
        clf.predict(["a"]),
        clf.predict_proba(["a"]),
        clf.rank(["a"], "ham"),
        clf.group(["a"]),
        clf.classify("a"),
        clf.classify_many(["a"]),
    ):
        with pytest.raises(sklearn.exceptions.NotFittedError, match="not fitted"):
            await call
    with pytest.raises(NotFittedError):
        _ = clf.classes_
    assert not hasattr(clf, "estimator_")


async def test_empty_input_returns_empty_results(make: Classifiers) -> None:
    """An empty X gives empty results of the right shape, without calling the estimator."""
    clf = await fitted(make)
    assert (await clf.predict([])).shape == (0,)
    assert (await clf.predict_proba([])).shape == (0, 3)
    assert await clf.rank([], "ham") == []
    assert await clf.group([]) == {"eggs": [], "ham": [], "spam": []}
    assert await clf.classify_many([]) == []
    assert clf.statistics().batches == 0


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("just one text", r"not a single str; wrap one text in a list"),
        (["ok", None], r"index 1 is None"),
        (["ok", "fine", 3], r"index 2 is int"),
        ([math.nan], r"index 0 is NaN"),
        (["ok", b"bytes"], r"index 1 is bytes, not str \(decode it"),
        (42, r"iterable of str, not int"),
    ],
)
async def test_bad_texts_raise_clear_errors(make: Classifiers, bad: Any, match: str) -> None:
    """Malformed X raises InvalidInputError naming the item; the classifier is unharmed."""
    clf = await fitted(make)
    before = await clf.predict_proba(["ham"])
    for call in (clf.predict, clf.predict_proba, clf.group, clf.classify_many):
        with pytest.raises(InvalidInputError, match=match):
            await call(bad)
    with pytest.raises(InvalidInputError, match=match):
        await clf.fit(bad, ["ham"] * 3)
    assert clf.version == 1
    np.testing.assert_array_equal(await clf.predict_proba(["ham"]), before)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (["a", "b"], ["ham"], r"X has 2 texts but y has 1 labels"),
        ([], [], r"training set is empty"),
        (["a", "b"], ["ham", "ham"], r"only 1 class \('ham'\)"),
        (["a", "b"], ["ham", None], r"Label at index 1 is None"),
        (["a"], "h", r"not a single string"),
    ],
)
async def test_bad_training_sets_raise_and_keep_the_model(
    make: Classifiers, X: Any, y: Any, match: str
) -> None:
    """Bad training data raises InvalidInputError; the serving model and version stay."""
    clf = await fitted(make)
    model = clf.estimator_
    with pytest.raises(InvalidInputError, match=match):
        await clf.fit(X, y)
    assert clf.estimator_ is model
    assert clf.version == 1


async def test_invalid_input_error_is_type_and_value_error(make: Classifiers) -> None:
    """InvalidInputError can be caught as TypeError or ValueError, like sklearn's."""
    clf = await fitted(make)
    with pytest.raises(TypeError):
        await clf.predict([None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="index 0"):
        await clf.predict([None])  # type: ignore[list-item]


async def test_rank_orders_by_label_score_with_stable_ties(make: Classifiers) -> None:
    """rank sorts by the label's probability, highest first, ties in input order, top k."""
    clf = await fitted(make)
    texts = ["ham", "spam spam spam", "spam", "eggs", "spam"]
    ranked = await clf.rank(texts, "spam")
    assert [r.index for r in ranked] == [1, 2, 4, 0, 3]
    assert [r.text for r in ranked] == [texts[r.index] for r in ranked]
    proba = clf.estimator_.predict_proba(texts)[:, list(clf.classes_).index("spam")]
    assert [r.score for r in ranked] == pytest.approx(sorted(proba, reverse=True))
    assert [r.index for r in await clf.rank(texts, "spam", k=2)] == [1, 2]
    assert await clf.rank(texts, "spam", k=0) == []


async def test_rank_rejects_unknown_labels_and_bad_k(make: Classifiers) -> None:
    """An unknown label or a negative k raises InvalidInputError listing the fix."""
    clf = await fitted(make)
    with pytest.raises(InvalidInputError, match=r"Unknown label 'bacon'.*'eggs', 'ham', 'spam'"):
        await clf.rank(["x"], "bacon")
    with pytest.raises(InvalidParameterError, match="k must be an int >= 0 or None"):
        await clf.rank(["x"], "ham", k=-1)


async def test_group_puts_each_text_under_its_prediction(make: Classifiers) -> None:
    """group lists each text once, under its predicted label, most confident first."""
    clf = await fitted(make)
    texts = ["ham", "spam spam", "eggs", "spam", "ham ham ham"]
    groups = await clf.group(texts)
    assert list(groups) == ["eggs", "ham", "spam"]
    assert [r.index for r in groups["ham"]] == [4, 0]
    assert [r.index for r in groups["spam"]] == [1, 3]
    predicted = clf.estimator_.predict(texts)
    for label, members in groups.items():
        assert all(predicted[r.index] == label for r in members)
    limited = await clf.group(texts, k=1)
    assert [len(v) for v in limited.values()] == [1, 1, 1]


async def test_decision_function_estimators_rank_by_decision_values(make: Classifiers) -> None:
    """Without predict_proba, rank and classify use decision_function; binary works too."""
    clf = await fitted(make, DecisionOnlyClassifier())
    with pytest.raises(UnsupportedEstimatorError, match="no predict_proba"):
        await clf.predict_proba(["ham"])
    ranked = await clf.rank(["ham", "eggs eggs", "eggs"], "eggs")
    assert [r.index for r in ranked] == [1, 2, 0]
    binary = make(DecisionOnlyClassifier())
    await binary.fit(["ham", "spam"], ["ham", "spam"])
    assert (await binary.decision_function(["spam", "ham"])).shape == (2,)
    prediction = await binary.classify("ham ham")
    assert prediction.label == "ham"
    assert [r.index for r in await binary.rank(["ham", "spam spam"], "ham")] == [0, 1]


async def test_estimators_without_scores_cannot_rank(make: Classifiers) -> None:
    """rank, group and classify need scores: UnsupportedEstimatorError otherwise."""
    clf = await fitted(make, LabelOnlyClassifier())
    assert list(await clf.predict(["spam"])) == ["spam"]
    with pytest.raises(UnsupportedEstimatorError, match="predict_proba or decision_function"):
        await clf.rank(["spam"], "spam")
    with pytest.raises(UnsupportedEstimatorError):
        await clf.group(["spam"])
    with pytest.raises(UnsupportedEstimatorError):
        await clf.classify("spam")


async def test_partial_fit_on_a_hashing_pipeline(make: Classifiers) -> None:
    """partial_fit trains a stateless pipeline incrementally, bumping version each time."""
    pipeline = make_pipeline(
        HashingVectorizer(n_features=2**12), SGDClassifier(loss="log_loss", random_state=0)
    )
    clf = make(pipeline)
    with pytest.raises(InvalidInputError, match="first partial_fit needs classes"):
        await clf.partial_fit(["ham"], ["ham"])
    await clf.partial_fit(TRAIN_X, TRAIN_Y, classes=LABELS)
    first = clf.estimator_
    await clf.partial_fit(["spam spam"], ["spam"])
    assert clf.version == 2
    assert clf.estimator_ is not first, "partial_fit must swap in a copy"
    assert list(clf.classes_) == sorted(LABELS)
    assert len(await clf.predict(["ham"])) == 1


async def test_partial_fit_unsupported_estimators(make: Classifiers) -> None:
    """The default TF-IDF pipeline cannot partial_fit before fit; a clear error says why."""
    with pytest.raises(UnsupportedEstimatorError, match="no partial_fit"):
        await make(LinearSVC()).partial_fit(["a"], ["b"])
    clf = make(make_pipeline(asyncclf.default_estimator()[0], SGDClassifier()))
    with pytest.raises(UnsupportedEstimatorError, match="step 'tfidfvectorizer' is not"):
        await clf.partial_fit(["a", "b"], ["x", "y"], classes=["x", "y"])
    assert clf.version == 0
    await clf.fit(["a ham", "b spam"], ["ham", "spam"])
    await clf.partial_fit(["a ham"], ["ham"])
    assert clf.version == 2


async def test_get_and_set_params_follow_sklearn(make: Classifiers) -> None:
    """get_params/set_params round-trip, reach into the estimator, and validate."""
    clf = make(KeywordClassifier(), max_batch_size=8)
    params = clf.get_params()
    assert params["max_batch_size"] == 8
    assert params["estimator__fail_on"] == "BOOM"
    assert set(clf.get_params(deep=False)) == {
        "estimator",
        "executor",
        "limiter",
        "max_batch_size",
        "max_latency",
        "max_queue",
        "overload",
    }
    clf.set_params(max_latency=0.0, estimator__fail_on="NOPE")
    assert clf.max_latency == 0.0
    assert clf.estimator.fail_on == "NOPE"
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        clf.set_params(max_batch_size=4, bogus=1)
    with pytest.raises(ValueError, match="max_batch_size must be an int >= 1"):
        clf.set_params(max_batch_size=0)
    assert clf.max_batch_size == 8, "a rejected set_params must not change anything"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_latency": -1}, "max_latency"),
        ({"max_latency": math.inf}, "max_latency"),
        ({"max_queue": 4, "max_batch_size": 8}, "max_queue"),
        ({"overload": "drop"}, "overload"),
    ],
)
def test_constructor_rejects_bad_settings(
    make: Classifiers, kwargs: dict[str, Any], match: str
) -> None:
    """Bad batching settings fail at construction with a ValueError naming the setting."""
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


# Tests share the module's worker processes and the session's Dask cluster: these two
# turns, run one after the other on them, each fit and swap models of the same version
# numbers with other classes, and leave work behind. Neither sees the other's.
TURNS = {"first": (["ham", "spam"], "spam spam"), "second": (["yak", "zebra"], "zebra yak zebra")}


@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
@pytest.mark.parametrize("turn", list(TURNS))
async def test_tests_sharing_workers_see_nothing_of_each_other(
    make: Classifiers, turn: str
) -> None:
    """A test on shared workers starts from nothing: its classifier's versions count
    from 1, answers come from its own models (never a version another test shipped),
    and every limiter token is free before and after."""
    labels, text = TURNS[turn]
    clf = make(KeywordClassifier())
    assert (clf.version, clf.limiter_.statistics().borrowed_tokens) == (0, 0)
    await clf.fit(labels * 2, labels * 2)
    assert (await clf.classify(text)).label == labels[1]
    assert (await clf.classify(text)).version == 1
    await clf.swap(KeywordClassifier().fit(labels[::-1], labels[::-1]))
    await clf.partial_fit([labels[0]], [labels[0]])
    answer = await clf.classify(labels[0])
    assert (answer.label, answer.version, list(clf.classes_)) == (labels[0], 3, labels)
    async with anyio.create_task_group() as tasks:  # work still queued as the test ends
        for _ in range(3):
            tasks.start_soon(clf.classify, text)
        await anyio.lowlevel.checkpoint()
        tasks.cancel_scope.cancel()
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


async def test_default_estimator_learns_text(make: Classifiers) -> None:
    """With estimator=None the default TF-IDF pipeline trains and predicts real labels."""
    clf = make()
    texts = ["free prize call now", "see you at lunch", "win cash now", "lunch at noon?"]
    await clf.fit(texts * 3, ["spam", "ham", "spam", "ham"] * 3)
    assert list(await clf.predict(["win a free prize", "lunch today?"])) == ["spam", "ham"]
    proba = await clf.predict_proba(["win a free prize"])
    assert proba.sum() == pytest.approx(1.0)


def test_classifier_moves_between_event_loops_and_backends(make: Classifiers) -> None:
    """A classifier made and fitted in one event loop serves from later loops of both
    backends (as successive asyncio.run or trio.run calls in a script would)."""

    async def first() -> AsyncClassifier:
        return await make(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)

    clf = anyio.run(first, backend="asyncio")

    async def use() -> list[Any]:
        labels = list(await clf.predict(["spam spam"]))
        async with clf.stream(["eggs", "ham"]) as results:
            labels += [p.label async for p in results]
        await clf.fit(TRAIN_X, TRAIN_Y)
        return labels

    for backend in ("trio", "asyncio", "trio"):
        assert anyio.run(use, backend=backend) == ["spam", "eggs", "ham"]
    assert clf.version == 4


async def test_fit_reports_progress_at_start_and_end(make: Classifiers) -> None:
    """fit's progress callback counts steps: an estimator that is no pipeline is one
    step, reported at the start and the end."""
    calls: list[tuple[int, int | None]] = []
    clf = make(KeywordClassifier())
    await clf.fit(TRAIN_X, TRAIN_Y, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 1), (1, 1)]


async def test_fit_reports_each_step_of_a_pipeline_fitted_in_threads(make: Classifiers) -> None:
    """A pipeline fitted in threads reports each step as it ends, and is the model
    its own fit makes (the same model_id); elsewhere, the start and the end."""
    calls: list[tuple[int, int | None]] = []
    steps = make_pipeline(
        TfidfVectorizer(), "passthrough", Normalizer(), SGDClassifier(random_state=0)
    )
    clf = make(steps)
    await clf.fit(SENTENCES, TOPICS, progress=lambda done, total: calls.append((done, total)))
    middle = [(1, 4), (2, 4), (3, 4)] if make.name == "threads" else []
    assert calls == [(0, 4), *middle, (4, 4)]
    assert clf.model_id == (await make(steps).fit(SENTENCES, TOPICS)).model_id
    assert clf.classes_.tolist() == ["politics", "sport"]


class LowerCase(Pipeline):  # type: ignore[misc]
    """A pipeline whose own fit does more than its steps' (lowercases the texts)."""

    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        return super().fit([text.lower() for text in X], y, **params)


class Lower(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A transformer with fit and transform but no fit_transform of its own."""

    def fit(self, X: Any, y: Any = None) -> Any:
        return self

    def transform(self, X: Any) -> Any:
        return [text.lower() for text in X]

    def __getattribute__(self, name: str) -> Any:
        if name == "fit_transform":
            raise AttributeError(name)
        return super().__getattribute__(name)


async def test_fit_with_progress_is_the_pipelines_own_fit() -> None:
    """With or without progress, a Pipeline subclass fits with its own fit, a step
    without fit_transform is fitted then applied, and invalid steps are refused."""
    calls: list[tuple[int, int | None]] = []

    def progress(done: int, total: int | None) -> None:
        calls.append((done, total))

    upper = [text.upper() for text in SENTENCES]
    subclass = LowerCase([("tfidf", TfidfVectorizer(lowercase=False)), ("svm", LinearSVC())])
    fitted = await AsyncClassifier(subclass).fit(upper, TOPICS, progress=progress)
    assert set(fitted.estimator_[0].vocabulary_) == {
        w for t in SENTENCES for w in t.split() if len(w) > 1
    }
    assert calls == [(0, 2), (2, 2)]
    steps = make_pipeline(Lower(), TfidfVectorizer(lowercase=False), LinearSVC(random_state=0))
    fitted = await AsyncClassifier(steps).fit(upper, TOPICS, progress=progress)
    assert fitted.model_id == (await AsyncClassifier(steps).fit(upper, TOPICS)).model_id
    invalid = make_pipeline(LinearSVC(), LinearSVC())
    clf = AsyncClassifier(invalid)
    with pytest.raises(TypeError, match="intermediate steps should be transformers"):
        await clf.fit(SENTENCES, TOPICS, progress=progress)
    assert clf.version == 0


async def test_a_cancelled_stepped_fit_stops_at_the_next_step() -> None:
    """Cancelling a stepped fit stops it at the next step's end: no later step runs."""
    gate = anyio.Event()
    calls: list[int] = []

    def progress(done: int, total: int | None) -> None:
        calls.append(done)
        if done == 1:
            gate.set()

    steps = make_pipeline(TfidfVectorizer(), Normalizer(), Normalizer(), LinearSVC())
    clf = AsyncClassifier(steps)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(partial(clf.fit, SENTENCES, TOPICS, progress=progress))
        await gate.wait()
        tasks.cancel_scope.cancel()
    assert calls[-1] <= 2
    assert clf.version == 0


async def test_a_progress_callback_failing_at_a_step_fails_the_fit() -> None:
    """A callback raising at a step fails the fit there; nothing is swapped in."""
    clf = await AsyncClassifier(make_pipeline(TfidfVectorizer(), LinearSVC())).fit(
        SENTENCES, TOPICS
    )

    def progress(done: int, total: int | None) -> None:
        if done == 1:
            msg = "the progress bar broke"
            raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="progress bar broke"):
        await clf.fit(SENTENCES[:4], TOPICS[:4], progress=progress)
    assert clf.version == 1


# -- contract hardening (issue 7) -----------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "probe"),
    [
        ([0, 1, 2, 0, 1, 2], [0, 1, 2]),
        ([True, False, True, False, True, False], [True, False, True]),
        (np.array([3, 4, 5, 3, 4, 5], dtype=np.int64), np.array([3, 4, 5])),
    ],
)
async def test_score_works_for_int_and_bool_labels(
    make: Classifiers, labels: Any, probe: Any
) -> None:
    """score() computes accuracy for int, bool and numpy integer labels, not only str."""
    texts = ["ham and more ham", "spam spam", "eggs", "ham", "spam", "eggs eggs"]
    clf = await fitted(make, KeywordClassifier(), max_latency=0)
    await clf.fit(texts, labels)
    predicted = list(await clf.predict(texts[:3]))
    expected = sum(a == b for a, b in zip(predicted, list(probe), strict=True)) / 3
    assert await clf.score(texts[:3], probe) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([1, "1", 1, "1", 1, "1"], r"mixes label kinds: index 0 is int, index 1 is str"),
        ([True, 1, True, 1, True, 1], r"index 0 is bool, index 1 is int"),
        ([1.5, "a", 1.5, "a", 1.5, "a"], r"index 0 is float; class labels must be str, int"),
        ([("a",), ("b",)] * 3, r"index 0 is tuple; class labels must be str, int or bool"),
        (["a", np.float32("nan")] * 3, r"index 1 is NaN; every text needs a label"),
        (np.array([1.0, 2.0] * 3, dtype=np.float32), r"index 0 is float32; class labels"),
        (np.array([1, 2] * 3, dtype="timedelta64[s]"), r"index 0 is timedelta64; class"),
        ([None, "a"] * 3, r"index 0 is None; every text needs a label"),
    ],
)
async def test_bad_or_mixed_labels_are_refused_with_the_index(
    make: Classifiers, labels: Any, match: str
) -> None:
    """Mixed label kinds (merged by sklearn), tuples and NaN labels are refused clearly."""
    clf = make(KeywordClassifier())
    with pytest.raises(InvalidInputError, match=match):
        await clf.fit(TRAIN_X, labels)
    assert clf.version == 0


async def test_score_refuses_labels_of_another_kind_than_the_classes(make: Classifiers) -> None:
    """score with str labels on an int-labelled model says so instead of scoring 0."""
    clf = await fitted(make, max_latency=0)
    await clf.fit(TRAIN_X, [0, 1, 2, 0, 1, 2])
    with pytest.raises(InvalidInputError, match=r"holds str labels .* classes are int"):
        await clf.score(TRAIN_X, ["0", "1", "2", "0", "1", "2"])
    with pytest.raises(InvalidInputError, match="Unknown label True"):
        await clf.rank(TRAIN_X, True)


async def test_a_progress_callback_failing_at_the_end_discards_the_new_model(
    make: Classifiers,
) -> None:
    """If fit's progress callback raises at the end, fit raises and nothing is swapped."""
    clf = await fitted(make)
    before = clf.estimator_

    def progress(done: int, total: int | None) -> None:
        if done == total:
            msg = "the progress bar broke"
            raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="progress bar broke"):
        await clf.fit(TRAIN_X, TRAIN_Y, progress=progress)
    assert clf.version == 1
    assert clf.estimator_ is before


@pytest.mark.parametrize("k", [None, -1, 1.5, "3", True])
async def test_top_k_refuses_a_bad_k(make: Classifiers, k: Any) -> None:
    """top_k needs an int k >= 0: None, negatives, floats, strings and bools are refused."""
    clf = await fitted(make)
    with pytest.raises(InvalidParameterError, match="k must be an int >= 0"):
        await clf.top_k(["spam"], "spam", k=k)


async def test_k_accepts_numpy_integers(make: Classifiers) -> None:
    """rank, group and top_k accept numpy integers for k."""
    clf = await fitted(make)
    texts = ["spam", "spam spam", "eggs", "ham"]
    assert len(await clf.rank(texts, "spam", k=np.int64(2))) == 2
    assert len(await clf.top_k(texts, "spam", k=np.int32(3))) == 3
    assert sum(map(len, (await clf.group(texts, k=np.uint8(1))).values())) == 3


async def test_partial_fit_on_a_serving_model_without_partial_fit_says_why(
    make: Classifiers,
) -> None:
    """After set_params swaps in an incremental estimator, partial_fit on a model fitted
    by fit names the serving model's class instead of an AttributeError."""
    clf = await make().fit(TRAIN_X, TRAIN_Y)
    clf.set_params(estimator=make_pipeline(HashingVectorizer(), SGDClassifier()))
    with pytest.raises(UnsupportedEstimatorError, match=r"CalibratedClassifierCV \(the serving"):
        await clf.partial_fit(["ham"], ["ham"])
    await clf.fit(TRAIN_X, TRAIN_Y)
    await clf.partial_fit(["ham"], ["ham"])
    assert clf.version == 3
    with pytest.raises(InvalidInputError, match="y holds int labels"):
        await clf.partial_fit(["ham"], [1])


async def test_partial_fit_refuses_classes_of_another_kind_than_y(make: Classifiers) -> None:
    """classes and y of different label kinds are refused before any work."""
    clf = make(KeywordClassifier())
    with pytest.raises(InvalidInputError, match="classes holds int labels but y holds str"):
        await clf.partial_fit(["ham"], ["ham"], classes=[0, 1])


def test_set_params_is_all_or_nothing(make: Classifiers) -> None:
    """A set_params call with one bad name or value changes nothing at all."""
    estimator = KeywordClassifier()
    clf = make(estimator, max_batch_size=8)
    with pytest.raises(InvalidParameterError, match="estimator__nope"):
        clf.set_params(max_batch_size=16, estimator__nope=1)
    assert clf.max_batch_size == 8
    assert clf._batcher.max_batch_size == 8
    with pytest.raises(InvalidParameterError, match="max_latency"):
        clf.set_params(estimator__fail_on="X", max_latency=-1)
    assert estimator.fail_on == "BOOM"
    with pytest.raises(InvalidParameterError, match="limiter"):
        clf.set_params(limiter=3)
    assert clf.limiter is None


def test_get_params_deep_lists_the_default_estimators_names() -> None:
    """With estimator=None, get_params(deep=True) lists the default pipeline's names,
    and each of them is accepted by set_params."""
    clf = AsyncClassifier()
    deep = clf.get_params(deep=True)
    expected = {f"estimator__{name}" for name in default_estimator().get_params(deep=True)}
    assert expected <= set(deep)
    assert "estimator__tfidf__min_df" in deep
    clf.set_params(estimator__tfidf__min_df=2)
    assert clf.estimator is not None
    assert clf.estimator.get_params()["tfidf__min_df"] == 2


async def test_sklearn_clone_keeps_a_shared_limiter_and_its_tokens() -> None:
    """sklearn.base.clone copies the settings, clones the estimator and shares the
    limiter, so a clone's work takes tokens from the same pool."""
    limiter = anyio.CapacityLimiter(1)
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=["fit"]), limiter=limiter)
    copy = clone(clf)
    assert copy is not clf
    assert copy.limiter is limiter
    assert copy.estimator is not clf.estimator
    assert copy.get_params(deep=False).keys() == clf.get_params(deep=False).keys()
    assert copy.version == 0
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.fit, TRAIN_X, TRAIN_Y)
            await gate.wait_entered()
            # The clone's fit waits for the token the original's fit holds.
            tasks.start_soon(copy.fit, TRAIN_X, TRAIN_Y)
            await wait_all_tasks_blocked()
            assert limiter.statistics().borrowed_tokens == 1
            assert limiter.statistics().tasks_waiting == 1
            assert gate.calls == 1
            gate.release.set()
    assert (clf.version, copy.version) == (1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch_size": 0}, {"overload": "drop"}, {"limiter": 4}, {"estimator": "svm"}],
)
def test_bad_settings_raise_invalid_parameter_error(
    make: Classifiers, kwargs: dict[str, Any]
) -> None:
    """Bad constructor values raise InvalidParameterError, an AsyncClfError."""
    with pytest.raises(AsyncClfError):
        make(**kwargs)
    with pytest.raises(InvalidParameterError):
        make(**kwargs)


def test_set_params_that_the_estimator_refuses_halfway_changes_nothing(
    make: Classifiers,
) -> None:
    """Nested parameters the estimator's own set_params refuses after applying some
    (replace a step, then set a parameter it lost) raise InvalidParameterError and
    leave the estimator and every setting as they were."""
    pipeline = make_pipeline(HashingVectorizer(), SGDClassifier())
    clf = make(pipeline, max_batch_size=8)
    with pytest.raises(InvalidParameterError, match="refused the parameters"):
        clf.set_params(
            max_batch_size=7,
            estimator__sgdclassifier="passthrough",
            estimator__sgdclassifier__alpha=0.1,
        )
    assert isinstance(pipeline[-1], SGDClassifier)
    assert pipeline[-1].alpha == SGDClassifier().alpha
    assert clf.max_batch_size == 8


@pytest.mark.parametrize(("classes", "match"), [("ab", "not a single string"), (5, "not int")])
async def test_partial_fit_refuses_classes_that_are_no_list_of_labels(
    make: Classifiers, classes: Any, match: str
) -> None:
    """classes given as one string or a number is refused, not read as characters."""
    clf = make(make_pipeline(HashingVectorizer(), SGDClassifier()))
    with pytest.raises(InvalidInputError, match=f"classes .*{match}"):
        await clf.partial_fit(["a"], ["a"], classes=classes)


@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
async def test_swap_serves_a_fitted_estimator_or_a_saved_file(
    make: Classifiers, tmp_path: Path
) -> None:
    """swap puts a fitted estimator (a copy of it) or a saved model file into a running
    classifier: version + 1, and every call from then on is answered by it."""
    clf = await fitted(make)
    other = AsyncClassifier(make_pipeline(HashingVectorizer(), SGDClassifier(random_state=0)))
    await other.fit(["red", "blue", "red red", "blue blue"], ["r", "b", "r", "b"])
    assert await clf.swap(other.estimator_) is clf
    assert clf.version == 2
    assert clf.estimator_ is not other.estimator_  # a copy: later changes cannot reach it
    assert clf.classes_.tolist() == ["b", "r"]
    assert (await clf.classify("red")).label == "r"
    assert (await clf.classify("red")).version == 2
    path = tmp_path / "keywords.skops"
    await (await fitted(make)).save(path)
    await clf.swap(path, trusted=["tests.fakes.KeywordClassifier"])
    assert clf.version == 3
    assert (await clf.classify("spam spam")).label == "spam"


async def test_swap_refuses_what_cannot_serve(make: Classifiers, tmp_path: Path) -> None:
    """An unfitted estimator, a non-classifier or a bad file is refused; the serving
    model stays."""
    clf = await fitted(make)
    with pytest.raises(NotFittedError, match="not fitted"):
        await clf.swap(SGDClassifier())
    with pytest.raises(UnsupportedEstimatorError):
        await clf.swap(object())
    bad = tmp_path / "bad.skops"
    bad.write_bytes(b"not a model")
    with pytest.raises(asyncclf.PersistenceError):
        await clf.swap(bad)
    assert clf.version == 1
    assert (await clf.classify("eggs")).label == "eggs"


@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
async def test_rank_group_and_top_k_say_which_model_answered(make: Classifiers) -> None:
    """Every Ranked carries the version of the model that scored its text."""
    clf = await fitted(make)
    await clf.fit(TRAIN_X, TRAIN_Y)
    texts = ["spam spam", "ham", "eggs eggs", "spam"]
    ranked = await clf.rank(texts, "spam")
    grouped = await clf.group(texts)
    best = await clf.top_k(texts, "spam", k=2)
    everything = [*ranked, *(r for rs in grouped.values() for r in rs), *best]
    assert {r.version for r in everything} == {clf.version} == {2}


async def test_swap_takes_any_fitted_classifier_but_not_an_async_classifier(
    make: Classifiers,
) -> None:
    """A classifier that fit accepts (with classes_, not scikit-learn's own) can be
    swapped in; an AsyncClassifier passed by mistake is refused, naming estimator_."""
    clf = await fitted(make)
    other = await fitted(make)
    with pytest.raises(UnsupportedEstimatorError, match="estimator_"):
        await clf.swap(other)
    duck = DuckClassifier().fit(TRAIN_X, TRAIN_Y)
    await clf.swap(duck)
    assert clf.version == 2
    assert (await clf.classify("spam")).label == "spam"
