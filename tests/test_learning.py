"""Online learning from labelled streams: progressive validation, publishing while
serving, errors, cancellation and checkpoints (``AsyncClassifier.learn``)."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from anyio import wait_all_tasks_blocked
from sklearn.svm import LinearSVC

from asyncclf import (
    AsyncClassifier,
    AsyncClfError,
    InvalidInputError,
    InvalidParameterError,
    LearnReport,
    UnsupportedEstimatorError,
    online_estimator,
)

from .conftest import Classifiers
from .fakes import DEADLINE, MemoryClassifier, settle

pytestmark = pytest.mark.anyio

CLASSES = ["ham", "spam"]


def pairs(n: int, texts: int = 5) -> list[tuple[str, str]]:
    """``n`` examples over ``texts`` distinct texts, each always with the same label."""
    return [(f"text {i % texts}", CLASSES[(i % texts) % 2]) for i in range(n)]


async def standstill(clf: AsyncClassifier, moving: Callable[[], int] | None = None) -> None:
    """Wait until learning stands still: no step running in a worker, every task
    blocked, and ``moving()`` (a count of examples read, say) the same after a round."""
    with anyio.fail_after(DEADLINE):
        while True:
            before = moving() if moving else 0
            await settle(clf)  # every step running in a worker has ended
            await wait_all_tasks_blocked()
            if (moving() if moving else 0) == before:
                return


async def learned(
    clf: AsyncClassifier, source: Any, into: list[LearnReport] | None = None, **kwargs: Any
) -> list[LearnReport]:
    """Learn from ``source`` to its end and return the reports (also put in ``into`` as
    they come, for a test that expects an exception)."""
    got = [] if into is None else into
    with anyio.fail_after(DEADLINE):
        async with clf.learn(source, **kwargs) as reports:
            async for report in reports:
                got.append(report)
    return got


async def test_learning_tests_then_trains_in_growing_batches() -> None:
    """Each example is predicted before it is learned from: the accuracy counts an
    example right only if an earlier mini-batch taught its text. Batches grow 1, 2,
    4, ... up to batch_size; the end publishes."""
    clf = AsyncClassifier(MemoryClassifier())
    examples = pairs(40)
    reports = await learned(clf, examples, classes=CLASSES, batch_size=8, publish_every=1000)
    sizes = [r.batch_size for r in reports]
    assert sizes == [1, 2, 4, 8, 8, 8, 8, 1]
    hits, start = 0, 0
    memory: dict[str, str] = {}
    for index, size in enumerate(sizes):
        batch = examples[start : start + size]
        if index:  # the first batch meets a learner that knows nothing: all wrong
            hits += sum(memory.get(text, "ham") == label for text, label in batch)
        memory.update(batch)
        start += size
    assert [r.seen for r in reports] == list(np.cumsum(sizes))
    assert reports[-1].accuracy == pytest.approx(hits / 40)
    assert [r.published for r in reports] == [False] * 7 + [True]
    assert reports[-1].version == clf.version == 1
    assert clf.estimator_.sizes_ == sizes
    assert (await clf.classify("text 3")).label == "spam"


async def test_window_accuracy_covers_the_last_examples() -> None:
    """window_accuracy is the accuracy over the last ``window`` examples only."""
    clf = AsyncClassifier(MemoryClassifier())
    examples = pairs(64, texts=4)
    reports = await learned(clf, examples, classes=CLASSES, batch_size=16, window=16)
    # By the last batches every text has been taught: the last 16 are all right.
    assert reports[-1].window_accuracy == 1.0
    assert reports[-1].accuracy < 1.0


async def test_window_accuracy_is_the_accuracy_of_exactly_the_last_window_examples() -> None:
    """window_accuracy in each report is the share right among the last ``window``
    examples seen, no more and no fewer, whatever mix of right and wrong they hold."""
    rng = random.Random(20)
    examples = [(f"text {rng.randrange(6)}", rng.choice(CLASSES)) for _ in range(80)]
    clf = AsyncClassifier(MemoryClassifier())
    reports = await learned(clf, examples, classes=CLASSES, batch_size=8, window=10)
    # Progressive validation by hand: each batch is predicted from what the earlier
    # batches taught (a text's last label; an unknown text is the first class), the
    # first one by a learner that knows nothing (all wrong).
    hits: list[bool] = []
    memory: dict[str, str] = {}
    for report in reports:
        batch = examples[len(hits) : report.seen]
        hits += [bool(hits) and memory.get(text, CLASSES[0]) == label for text, label in batch]
        memory.update(batch)
    assert len(hits) == 80
    assert 0 < sum(hits[-10:]) < 10  # the last window mixes right and wrong
    for report in reports:
        last = hits[: report.seen][-10:]
        assert report.window_accuracy == pytest.approx(sum(last) / len(last))
        assert report.accuracy == pytest.approx(sum(hits[: report.seen]) / report.seen)


async def test_a_copy_is_published_every_publish_every_examples() -> None:
    """Publishing swaps a copy in (version + 1) at each publish_every boundary and at
    the end; the report says which batches published."""
    clf = AsyncClassifier(MemoryClassifier())
    reports = await learned(clf, pairs(100), classes=CLASSES, batch_size=10, publish_every=25)
    published = [r.seen for r in reports if r.published]
    # Batches end at 1, 3, 7, 15, 25, 35, ...: the first at or past 25, 50, 75, then 100.
    assert published == [25, 55, 75, 100]
    assert [r.version for r in reports if r.published] == [1, 2, 3, 4]
    assert clf.version == 4


async def test_a_serving_model_learns_on_in_full_batches() -> None:
    """With a model serving, learning starts from a copy of it (its classes, its
    knowledge) in full batches, and the serving model is not touched until a publish."""
    clf = await AsyncClassifier(MemoryClassifier()).fit(["text 0", "text 1"], ["ham", "spam"])
    serving = clf.estimator_
    reports = await learned(clf, pairs(12), batch_size=4)
    # The source ends exactly after a full batch: a last, empty one publishes.
    assert [r.batch_size for r in reports] == [4, 4, 4, 0]
    assert [r.published for r in reports] == [False, False, False, True]
    # texts 0 and 1 were known; text 2, unknown, gets the first class, ham, by luck
    assert reports[0].accuracy == pytest.approx(3 / 4)
    assert clf.estimator_ is not serving
    assert serving.sizes_ == [2]  # the old model was never updated in place
    assert clf.version == 2


async def test_estimators_that_cannot_learn_online_are_refused() -> None:
    """The default estimator and any without partial_fit raise
    UnsupportedEstimatorError naming online_estimator()."""
    with pytest.raises(UnsupportedEstimatorError, match="online_estimator"):
        async with AsyncClassifier().learn(pairs(3), classes=CLASSES):
            pass
    with pytest.raises(UnsupportedEstimatorError, match=r"LinearSVC .*online_estimator"):
        async with AsyncClassifier(LinearSVC()).learn(pairs(3), classes=CLASSES):
            pass


async def test_classes_are_needed_from_scratch_and_must_match_a_serving_model() -> None:
    with pytest.raises(InvalidInputError, match=r"needs classes=\[\.\.\.\]"):
        async with AsyncClassifier(MemoryClassifier()).learn(pairs(3)):
            pass
    with pytest.raises(InvalidInputError, match="at least 2"):
        async with AsyncClassifier(MemoryClassifier()).learn(pairs(3), classes=["ham"]):
            pass
    clf = await AsyncClassifier(MemoryClassifier()).fit(["a", "b"], ["ham", "spam"])
    with pytest.raises(InvalidInputError, match="differ from the serving model"):
        async with clf.learn(pairs(3), classes=["ham", "eggs"]):
            pass


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 0),
        ("publish_every", -1),
        ("window", 1.5),
        ("max_in_flight", 0),
        ("checkpoint_every", 10),
        ("on_error", "ignore"),
    ],
)
async def test_bad_settings_are_refused_before_anything_starts(name: str, value: Any) -> None:
    clf = AsyncClassifier(MemoryClassifier())
    with pytest.raises(InvalidParameterError, match=name):
        async with clf.learn(pairs(3), classes=CLASSES, **{name: value}):
            pass
    assert clf.version == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            ("text", "eggs"),
            r"Label 'eggs' at index 5 is not one of the classes .*classes=\[\.\.\.\]",
        ),
        ("just a text", "Example at index 5 is .* not a \\(text, label\\) pair"),
        ((b"bytes", "ham"), "Text at index 5 is"),
        (("text", 1), "Label 1 at index 5 is not one of the classes"),
        (("text", None), "Label at index 5 is None"),
    ],
)
async def test_a_bad_example_ends_learning_after_the_examples_before_it(
    bad: Any, message: str
) -> None:
    """on_error="raise": the examples before the bad one are learned from (and
    reported), then the bad one's error is raised; nothing more is published."""
    clf = AsyncClassifier(MemoryClassifier())
    source = [*pairs(5), bad, *pairs(5)]
    got: list[LearnReport] = []
    with pytest.raises(InvalidInputError, match=message):
        await learned(clf, source, got, classes=CLASSES, batch_size=2)
    assert got[-1].seen == 5
    assert clf.version == 0  # the end was never reached: nothing published


async def test_bad_examples_are_skipped_and_listed_with_on_error_yield() -> None:
    clf = AsyncClassifier(MemoryClassifier())
    source: list[Any] = [*pairs(5), ("x", "eggs"), "oops", *pairs(5)]
    reports = await learned(clf, source, classes=CLASSES, batch_size=4, on_error="yield")
    errors = [error for r in reports for error in r.errors]
    assert [index for index, _ in errors] == [5, 6]
    assert all(isinstance(error, InvalidInputError) for _, error in errors)
    assert reports[-1].skipped == 2
    assert reports[-1].seen == 10
    assert clf.version == 1


async def test_an_estimator_failure_ends_learning_and_keeps_the_serving_model() -> None:
    """An error in partial_fit may leave the learner half-updated: learning ends with
    it, whatever on_error says, and the serving model stays the last published."""
    clf = AsyncClassifier(MemoryClassifier())
    source = [*pairs(20), ("BOOM", "ham"), *pairs(20)]
    with pytest.raises(ValueError, match="cannot learn from 'BOOM'"):
        await learned(
            clf, source, classes=CLASSES, batch_size=4, publish_every=10, on_error="yield"
        )
    assert clf.version == 1  # published at 11 examples; the batch of 23 failed
    assert not clf.estimator_.updating_


async def test_a_failing_source_ends_learning_with_its_error() -> None:
    def source() -> Iterator[tuple[str, str]]:
        yield from pairs(6)
        msg = "source broke"
        raise OSError(msg)

    clf = AsyncClassifier(MemoryClassifier())
    got: list[LearnReport] = []
    with pytest.raises(OSError, match="source broke"):
        await learned(clf, source(), got, classes=CLASSES, batch_size=2)
    assert got[-1].seen == 6
    assert clf.version == 0


async def test_leaving_early_publishes_nothing_more_and_closes_the_source() -> None:
    """Breaking out of the reports stops learning: the serving model is the last one
    published, and the source's generator is closed at once."""
    closed: list[bool] = []

    async def source() -> AsyncIterator[tuple[str, str]]:
        try:
            for pair in pairs(10_000):
                yield pair
        finally:
            closed.append(True)

    clf = AsyncClassifier(MemoryClassifier())
    with anyio.fail_after(DEADLINE):
        async with clf.learn(source(), classes=CLASSES, batch_size=8, publish_every=20) as reports:
            async for report in reports:
                if report.seen >= 60:
                    break
    assert closed == [True]
    version = clf.version
    assert version >= report.version >= 3  # published at 23, 47 and 63 examples
    await settle(clf)  # a step still running in its worker when the block was left ends
    await wait_all_tasks_blocked()
    assert clf.version == version  # nothing published after leaving


async def test_cancelling_mid_learn_keeps_the_last_published_model() -> None:
    """A cancel scope around learn (cancelled by another task, as a deadline would)
    stops it between steps: the serving model is the last published, whole, and
    serving goes on."""
    clf = AsyncClassifier(MemoryClassifier(pause=0.002))
    versions: list[int] = []
    third = anyio.Event()

    async def cancel_after_the_third_publish(scope: anyio.CancelScope) -> None:
        await third.wait()
        scope.cancel()

    with anyio.fail_after(DEADLINE), anyio.CancelScope() as scope:
        async with (
            anyio.create_task_group() as tasks,
            clf.learn(pairs(100_000), classes=CLASSES, batch_size=16, publish_every=64) as reports,
        ):
            tasks.start_soon(cancel_after_the_third_publish, scope)
            async for report in reports:
                if report.published:
                    versions.append(report.version)
                    if len(versions) == 3:
                        third.set()
    assert scope.cancelled_caught
    assert versions
    # The last publish's report may still be unread when the deadline strikes (as
    # documented): the serving model is the last published, read or not.
    assert clf.version in (versions[-1], versions[-1] + 1)
    assert not clf.estimator_.updating_
    assert (await clf.classify("text 1")).label == "spam"


async def test_serving_during_learning_sees_published_models_only(make: Classifiers) -> None:
    """classify calls made while learning never fail, never see the model being
    updated (MemoryClassifier raises if read during partial_fit), and each caller
    sees versions that never go back."""
    clf = await make(MemoryClassifier(pause=0.002)).fit(["text 0", "text 1"], ["ham", "spam"])
    seen: dict[int, list[int]] = {i: [] for i in range(8)}
    answered = [anyio.Event() for _ in range(8)]
    learning_done = anyio.Event()

    async def caller(i: int) -> None:
        while True:
            done = learning_done.is_set()
            prediction = await clf.classify(f"text {i % 5}")
            seen[i].append(prediction.version)
            answered[i].set()
            if done:
                return  # one call after learning ended: the last version serves
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            for i in range(8):
                tasks.start_soon(caller, i)
            for event in answered:
                await event.wait()
            async with clf.learn(pairs(600), batch_size=32, publish_every=100) as reports:
                last = [r async for r in reports][-1]
            learning_done.set()
    assert last.version == clf.version == 1 + 6
    for versions in seen.values():
        assert versions == sorted(versions)
        assert versions[0] == 1
        assert versions[-1] == 7


async def test_fit_waits_for_learning_to_end() -> None:
    """fit takes the fit lock that learning holds: it swaps its model in after the
    learning's last publish, so it is the model serving at the end."""
    clf = AsyncClassifier(MemoryClassifier(pause=0.002))
    order: list[str] = []

    async def refit() -> None:
        await clf.fit(["x", "y"], ["ham", "spam"])
        order.append("fit")

    with anyio.fail_after(DEADLINE):
        async with (
            anyio.create_task_group() as tasks,
            clf.learn(pairs(200), classes=CLASSES, batch_size=16) as reports,
        ):
            tasks.start_soon(refit)
            async for _ in reports:
                pass
            order.append("learned")
    assert order == ["learned", "fit"]
    assert clf.estimator_.memory_ == {"x": "ham", "y": "spam"}


async def test_checkpoints_save_the_published_model(tmp_path: Path) -> None:
    """checkpoint saves the model at publishes, every checkpoint_every examples and at
    the end; the file loads, and the loaded model learns on from where it was."""
    path = tmp_path / "model.skops"
    clf = AsyncClassifier(online_estimator())
    examples = [("free prize call now", "spam"), ("see you at lunch", "ham")] * 300
    reports = await learned(
        clf,
        examples,
        classes=CLASSES,
        batch_size=32,
        publish_every=100,
        checkpoint=path,
        checkpoint_every=250,
    )
    assert [r.seen for r in reports if r.saved] == [319, 511, 600]
    loaded = await AsyncClassifier.load(path)
    assert loaded.version == clf.version
    assert (await loaded.classify("free prize")).label == "spam"
    more = await learned(loaded, examples[:64], batch_size=32)
    assert [r.batch_size for r in more] == [32, 32, 0]
    assert more[0].accuracy == 1.0
    assert loaded.version == clf.version + 1


@pytest.mark.slow  # a subprocess, killed mid-learning
def test_a_killed_learner_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """A process learning from an endless stream is killed (SIGKILL) after two
    checkpoints: the checkpoint file is whole, loads, and learning goes on from it."""
    path = tmp_path / "model.skops"
    script = textwrap.dedent(
        f"""
        import itertools, anyio
        from asyncclf import AsyncClassifier, online_estimator

        def examples():
            for i in itertools.count():
                if i % 2:
                    yield "free prize call now", "spam"
                else:
                    yield "see you at lunch", "ham"

        async def main():
            clf = AsyncClassifier(online_estimator())
            async with clf.learn(examples(), classes=["ham", "spam"], batch_size=64,
                                 publish_every=200, checkpoint={str(path)!r}) as reports:
                async for report in reports:
                    if report.saved:
                        print("saved", report.version, flush=True)

        anyio.run(main)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    assert [line.split()[0] for line in lines] == ["saved", "saved"]

    async def resume() -> tuple[int, int, float]:
        clf = await AsyncClassifier.load(path)
        before = clf.version
        examples = [("free prize", "spam"), ("lunch", "ham")] * 64
        async with clf.learn(examples, batch_size=64) as reports:
            last = [r async for r in reports][-1]
        return before, clf.version, last.accuracy

    before, after, accuracy = anyio.run(resume)
    assert before >= 2
    assert after == before + 1
    assert accuracy == 1.0


async def test_reading_ahead_is_bounded_by_max_in_flight() -> None:
    """A consumer that does not read the reports pauses learning, and the source is
    read at most max_in_flight examples ahead of it."""
    pulled = 0

    def source() -> Iterator[tuple[str, str]]:
        nonlocal pulled
        for pair in pairs(10_000):
            pulled += 1
            yield pair

    clf = AsyncClassifier(MemoryClassifier())
    async with clf.learn(source(), classes=CLASSES, batch_size=4, max_in_flight=8) as reports:
        await standstill(clf, lambda: pulled)
        # Learned: a batch of 1 (its report waits to be read) and one of 2 (its report
        # waits to be sent); the channel holds 8; the reader holds 1, waiting for room.
        assert pulled == 1 + 2 + 8 + 1
        first = await reports.__anext__()
    assert first.seen == 1


async def test_the_end_saves_the_last_published_model(tmp_path: Path) -> None:
    """A publish on the last example that was not a checkpoint is still saved when the
    source ends: the checkpoint file always holds the final model."""
    path = tmp_path / "model.skops"
    clf = AsyncClassifier(online_estimator())
    examples = [("free prize call now", "spam"), ("see you at lunch", "ham")] * 8
    reports = await learned(
        clf,
        examples,
        classes=CLASSES,
        batch_size=4,
        publish_every=4,
        checkpoint=path,
        checkpoint_every=8,
    )
    # Batches end at 1, 3, 7, 11, 15, 16; publishes at 7, 11, 15, 16 (the end).
    assert [r.seen for r in reports if r.published] == [7, 11, 15, 16]
    assert [r.seen for r in reports if r.saved] == [11, 16]
    assert (await AsyncClassifier.load(path)).version == clf.version == 4


async def test_a_publish_on_the_last_example_is_saved_at_the_end(tmp_path: Path) -> None:
    """From a serving model in full batches, the last batch publishes (not a checkpoint
    by count); the end then saves it."""
    path = tmp_path / "model.skops"
    clf = AsyncClassifier(online_estimator())
    examples = [("free prize call now", "spam"), ("see you at lunch", "ham")] * 6
    await learned(clf, examples[:4], classes=CLASSES, batch_size=4)
    reports = await learned(
        clf, examples, batch_size=4, publish_every=4, checkpoint=path, checkpoint_every=8
    )
    assert [r.seen for r in reports if r.published] == [4, 8, 12]
    assert [r.seen for r in reports if r.saved] == [8, 12]
    assert (await AsyncClassifier.load(path)).version == clf.version


@pytest.mark.parametrize("bad", [("text", "eggs"), ("BOOM", "ham")])
async def test_a_slow_consumer_still_gets_the_error_itself(bad: tuple[str, str]) -> None:
    """The learner stops at a bad example (or an estimator error) while the reader is
    still queueing: the consumer gets that error, never an ExceptionGroup of the
    reader's broken channel."""
    clf = AsyncClassifier(MemoryClassifier())
    source = [*pairs(7), bad, *pairs(100)]
    error = InvalidInputError if bad[1] == "eggs" else ValueError
    got: list[LearnReport] = []

    async def slowly() -> None:
        async with clf.learn(source, classes=CLASSES, batch_size=4, max_in_flight=4) as reports:
            async for report in reports:
                got.append(report)
                await standstill(clf)  # the reader queues meanwhile

    with pytest.raises(error):
        await slowly()
    assert got[-1].seen == 7


async def test_skipped_examples_are_bounded_like_the_others() -> None:
    """With on_error="yield", bad examples count toward the batch: each report lists
    at most batch_size of them, and a stream of bad items is read max_in_flight ahead
    at most, like any other."""
    pulled = 0

    def source() -> Iterator[tuple[str, str]]:
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield (f"text {i}", "eggs")

    clf = AsyncClassifier(MemoryClassifier())
    async with clf.learn(
        source(), classes=CLASSES, batch_size=4, max_in_flight=8, on_error="yield"
    ) as reports:
        await standstill(clf, lambda: pulled)
        assert pulled <= 1 + 2 + 8 + 1
        first = await reports.__anext__()
        second = await reports.__anext__()
    # Nothing learned yet, so batches stay at their first size: one bad item each.
    assert (len(first.errors), len(second.errors)) == (1, 1)


async def test_fitting_inside_the_learn_block_says_why_it_cannot() -> None:
    """fit, partial_fit, swap and learn wait for learning to end: awaited by the task
    that holds the learn block open, they would wait for themselves. They raise at once."""
    clf = AsyncClassifier(MemoryClassifier())
    async with clf.learn(pairs(100), classes=CLASSES) as reports:
        for call in (
            clf.fit(["a", "b"], CLASSES),
            clf.partial_fit(["a"], ["ham"], classes=CLASSES),
            clf.swap(MemoryClassifier().fit(["a", "b"], CLASSES)),
        ):
            with pytest.raises(AsyncClfError, match=r"inside the learn\(\) block"):
                await call
        with pytest.raises(AsyncClfError, match=r"learn\(\) waits until learning ends"):
            async with clf.learn(pairs(3)):
                pass
        async for _ in reports:
            pass
    await clf.fit(["a", "b"], CLASSES)  # after the block, it works
    assert clf.estimator_.memory_ == {"a": "ham", "b": "spam"}


@pytest.mark.parametrize("checkpoint", ["", 5, "/nonexistent/folder/model.skops", "."])
async def test_a_bad_checkpoint_is_refused_before_anything_starts(checkpoint: Any) -> None:
    read: list[int] = []

    def source() -> Iterator[tuple[str, str]]:
        read.append(1)
        yield from pairs(10)

    clf = AsyncClassifier(MemoryClassifier())
    with pytest.raises(InvalidParameterError, match="checkpoint"):
        async with clf.learn(source(), classes=CLASSES, checkpoint=checkpoint):
            pass
    assert (read, clf.version) == ([], 0)


async def test_a_pipeline_whose_transformer_needs_fitting_is_refused_at_once() -> None:
    """A stateful transformer never fitted (TfidfVectorizer) cannot feed partial_fit:
    refused before the source is read."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    read: list[int] = []

    def source() -> Iterator[tuple[str, str]]:
        read.append(1)
        yield from pairs(10)

    clf = AsyncClassifier(make_pipeline(TfidfVectorizer(), SGDClassifier()))
    with pytest.raises(UnsupportedEstimatorError, match="stateless"):
        async with clf.learn(source(), classes=CLASSES):
            pass
    assert read == []


# -- tests that mutation testing found missing (issue 20) --------------------------------


async def test_settings_of_one_are_accepted() -> None:
    """batch_size, publish_every, window and max_in_flight may each be 1: every example
    is then learned, published and scored on its own."""
    clf = AsyncClassifier(MemoryClassifier())
    examples = [("a", "ham"), ("a", "spam"), ("a", "spam")]
    reports = await learned(
        clf, examples, classes=CLASSES, batch_size=1, publish_every=1, window=1, max_in_flight=1
    )
    assert [r.batch_size for r in reports] == [1, 1, 1]
    assert [r.published for r in reports] == [True, True, True]
    assert [r.window_accuracy for r in reports] == [0.0, 0.0, 1.0]
    assert clf.version == 3


@pytest.mark.parametrize("bad", [("text", "ham", "extra"), 7, None])
async def test_an_item_that_is_no_pair_is_refused_as_such(bad: Any) -> None:
    """An item that is not a (text, label) pair, a triple or an object without a length,
    is a bad example with its own message, not a crash of learning."""
    clf = AsyncClassifier(MemoryClassifier())
    with pytest.raises(InvalidInputError, match=r"Example at index 2 is .*\(text, label\) pair"):
        await learned(clf, [*pairs(2), bad], classes=CLASSES)


async def test_a_failing_source_ends_learning_even_with_on_error_yield() -> None:
    """on_error="yield" skips bad examples, not a source that fails: learning ends with
    the source's own error."""

    def source() -> Iterator[tuple[str, str]]:
        yield from pairs(3)
        msg = "source broke"
        raise OSError(msg)

    clf = AsyncClassifier(MemoryClassifier())
    got: list[LearnReport] = []
    with pytest.raises(OSError, match="source broke"):
        await learned(clf, source(), got, classes=CLASSES, on_error="yield")
    assert got[-1].seen == 3
    assert all(r.skipped == 0 and r.errors == () for r in got)


async def test_a_source_slower_than_learning_has_each_example_learned_once() -> None:
    """Examples arriving one by one, while the learner waits for them mid-batch and
    between batches, are each learned from exactly once."""

    async def source() -> AsyncIterator[tuple[str, str]]:
        for example in pairs(20):
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            yield example

    clf = AsyncClassifier(MemoryClassifier())
    reports = await learned(clf, source(), classes=CLASSES, batch_size=4)
    assert reports[-1].seen == 20
    assert sum(r.batch_size for r in reports) == 20
    assert sum(clf.estimator_.sizes_) == 20


async def test_learning_that_ends_on_a_publish_and_save_sends_no_empty_report(
    tmp_path: Path,
) -> None:
    """When the last full batch already published and saved everything, the end of the
    source adds no further (empty) report, publish or save."""
    clf = AsyncClassifier(MemoryClassifier())
    reports = await learned(
        clf,
        pairs(15),
        classes=CLASSES,
        batch_size=8,
        publish_every=15,
        checkpoint=tmp_path / "model.skops",
        checkpoint_every=15,
    )
    # Batches of 1, 2, 4 and 8: the last full one publishes and saves at 15.
    assert [r.batch_size for r in reports] == [1, 2, 4, 8]
    assert [(r.published, r.saved) for r in reports][-1] == (True, True)
    assert clf.version == 1


async def test_learn_reports_its_progress_to_a_callback() -> None:
    """progress=callback hears the examples done so far (skipped ones too), out of the
    source's length, up to all of them."""
    calls: list[tuple[int, int | None]] = []
    clf = AsyncClassifier(MemoryClassifier())
    source: list[Any] = [*pairs(6), "oops", *pairs(3)]
    await learned(
        clf,
        source,
        classes=CLASSES,
        batch_size=4,
        on_error="yield",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (10, 10)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})


async def test_examples_per_second_is_at_least_the_rate_measured_around_learning() -> None:
    """examples_per_second divides the examples by the time learning has taken, which
    is no longer than the time measured around the whole call."""
    clf = AsyncClassifier(MemoryClassifier())
    started = time.perf_counter()
    reports = await learned(clf, pairs(50), classes=CLASSES, batch_size=8)
    elapsed = time.perf_counter() - started
    rate = reports[-1].examples_per_second
    assert math.isfinite(rate)
    assert rate >= 50 / elapsed


async def test_the_reports_stay_ended_after_the_learn_block() -> None:
    """Once the reports have ended (normally or with an error), asking for another one
    after the block raises StopAsyncIteration."""
    clf = AsyncClassifier(MemoryClassifier())
    for source in (pairs(4), [*pairs(4), ("text", "eggs"), *pairs(4)]):
        async with clf.learn(source, classes=CLASSES, batch_size=2) as reports:
            with anyio.fail_after(DEADLINE):
                try:
                    async for _ in reports:
                        pass
                except InvalidInputError:
                    assert len(source) > 4
        with pytest.raises(StopAsyncIteration):
            await anext(reports)


async def test_a_source_pausing_mid_batch_has_what_came_learned_meanwhile() -> None:
    """A batch that the source stops filling is learned from, as far as it came, before
    the source resumes (after FILL_WAIT, not never)."""
    resume = anyio.Event()

    async def source() -> AsyncIterator[tuple[str, str]]:
        for example in pairs(2):
            yield example
        await resume.wait()
        for example in pairs(2):
            yield example

    clf = AsyncClassifier(MemoryClassifier())
    with anyio.fail_after(DEADLINE):
        async with clf.learn(source(), classes=CLASSES, batch_size=4) as reports:
            first, second = await anext(reports), await anext(reports)
            resume.set()
            rest = [report async for report in reports]
    # Batches of 1, then 1 of the 2 asked for (the source paused), then the last 2.
    assert [r.seen for r in [first, second, *rest]] == [1, 2, 4]
