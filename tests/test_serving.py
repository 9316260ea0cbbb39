"""The served model's lifecycle: every change through one slot, and aclose()."""

from __future__ import annotations

import gc
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from asyncclf import AsyncClassifier, AsyncClfError, NotFittedError, ProcessExecutor

from .conftest import Classifiers
from .fakes import (
    DEADLINE,
    TRAIN_X,
    TRAIN_Y,
    Gate,
    KeywordClassifier,
    RecordingClassifier,
    SlowPredictClassifier,
    settle,
)
from .own_executor import OwnThreadsExecutor

pytestmark = pytest.mark.anyio

CLOSED = "closed"


async def test_a_closed_classifier_refuses_every_call(make: Classifiers, tmp_path: str) -> None:
    """After ``async with`` ends, every call fails with AsyncClfError saying it is
    closed, closing again does nothing, and version and model_id stay readable."""
    async with make(KeywordClassifier()) as clf:
        await clf.fit(TRAIN_X, TRAIN_Y)
        assert (await clf.classify("spam")).label == "spam"
        version, model_id = clf.version, clf.model_id
    await clf.aclose()  # idempotent
    assert (clf.version, clf.model_id) == (version, model_id)
    assert "closed" in repr(clf)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "predict": lambda: clf.predict(["spam"]),
        "classify": lambda: clf.classify("spam"),
        "rank": lambda: clf.rank(["spam"], "spam"),
        "fit": lambda: clf.fit(TRAIN_X, TRAIN_Y),
        "partial_fit": lambda: clf.partial_fit(TRAIN_X, TRAIN_Y, classes=["ham", "spam"]),
        "swap": lambda: clf.swap(KeywordClassifier().fit(TRAIN_X, TRAIN_Y)),
        "save": lambda: clf.save(os.path.join(tmp_path, "model.skops")),
    }
    for name, call in calls.items():
        with pytest.raises(AsyncClfError, match=CLOSED) as caught:
            await call()
        assert not isinstance(caught.value, NotFittedError), name
    with pytest.raises(AsyncClfError, match=CLOSED):
        async with clf.stream(["spam"]) as results:
            [p async for p in results]
    with pytest.raises(AsyncClfError, match=CLOSED):
        async with clf.learn([("spam", "spam")]) as reports:
            [r async for r in reports]
    with pytest.raises(AsyncClfError, match=CLOSED):
        clf.set_params(max_batch_size=8)


async def test_closing_is_shielded_from_cancellation(make: Classifiers) -> None:
    """aclose() in a cancelled scope still closes the classifier."""
    clf = await make(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clf.aclose()
    with pytest.raises(AsyncClfError, match=CLOSED):
        await clf.classify("spam")


async def test_a_fit_that_ends_after_aclose_is_not_served(anyio_backend: str) -> None:
    """A fit under way when the classifier closes raises AsyncClfError when it ends,
    and serves nothing; its worker's token comes back."""
    gate = Gate()
    clf = AsyncClassifier(RecordingClassifier(gate=gate, block=["fit"]))
    failures: list[BaseException] = []

    async def fit() -> None:
        try:
            await clf.fit(TRAIN_X, TRAIN_Y)
        except AsyncClfError as exc:
            failures.append(exc)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(fit)
            await gate.wait_entered()
            await clf.aclose()
            gate.release.set()
    [failure] = failures
    assert CLOSED in str(failure)
    assert clf.version == 0
    await settle(clf)


async def test_a_call_queued_at_close_fails_with_the_closed_error(anyio_backend: str) -> None:
    """A prediction still waiting for its batch when the classifier closes fails with
    AsyncClfError, not a hang; the one already running finishes."""
    gate = Gate()
    clf = AsyncClassifier(
        RecordingClassifier(gate=gate, block=["predict_proba"]),
        limiter=anyio.CapacityLimiter(1),
        max_latency=0,
    )
    gate.release.set()
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    outcomes: dict[str, object] = {}

    async def classify(text: str) -> None:
        try:
            outcomes[text] = (await clf.classify(text)).label
        except AsyncClfError as exc:
            outcomes[text] = exc

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(classify, "spam")
            await gate.wait_entered()
            tasks.start_soon(classify, "eggs")  # waits for the only token
            await anyio.wait_all_tasks_blocked()
            await clf.aclose()
            gate.release.set()
    assert outcomes["spam"] == "spam"
    assert isinstance(outcomes["eggs"], AsyncClfError)
    assert CLOSED in str(outcomes["eggs"])


async def test_aclose_closes_the_executor_it_made_and_no_other(process_pool: None) -> None:
    """executor="processes": aclose removes the model files shipped to the workers.
    An executor object passed in stays open for the other classifiers sharing it."""
    clf = await AsyncClassifier(KeywordClassifier(), executor="processes").fit(TRAIN_X, TRAIN_Y)
    assert (await clf.classify("spam")).label == "spam"
    made = clf._executor._directory  # type: ignore[attr-defined]
    assert await anyio.to_thread.run_sync(os.listdir, made)  # the shipped model
    await clf.aclose()
    assert not await anyio.to_thread.run_sync(os.path.exists, made)

    shared = OwnThreadsExecutor()
    first = await AsyncClassifier(KeywordClassifier(), executor=shared).fit(TRAIN_X, TRAIN_Y)
    second = await AsyncClassifier(KeywordClassifier(), executor=shared).fit(TRAIN_X, TRAIN_Y)
    await first.aclose()
    assert not shared.closed
    assert (await second.classify("eggs")).label == "eggs"


async def test_a_closed_executor_refuses_new_calls(make: Classifiers) -> None:
    """An executor closed by its owner fails its classifiers' later calls with
    AsyncClfError naming it, instead of running them."""
    executor = make.executor()
    if isinstance(executor, str):
        clf = await AsyncClassifier(KeywordClassifier(), executor=executor).fit(TRAIN_X, TRAIN_Y)
        await clf._executor.aclose()
    else:
        clf = await AsyncClassifier(KeywordClassifier(), executor=executor).fit(TRAIN_X, TRAIN_Y)
        await executor.aclose()
    with pytest.raises(AsyncClfError, match="closed"):
        await clf.classify("spam")
    with pytest.raises(AsyncClfError, match="closed"):
        await clf.fit(TRAIN_X, TRAIN_Y)


async def test_a_dropped_model_releases_what_a_process_executor_shipped(
    process_pool: None,
) -> None:
    """Closing a classifier that shares a ProcessExecutor removes its model's file
    once nothing reads the model, while the executor serves others."""
    shared = ProcessExecutor(max_workers=1)
    clf = await AsyncClassifier(KeywordClassifier(), executor=shared).fit(TRAIN_X, TRAIN_Y)
    assert (await clf.classify("spam")).label == "spam"
    directory = shared._directory
    assert len(os.listdir(directory)) == 1
    await clf.aclose()
    for _ in range(3):
        gc.collect()
        await checkpoint()
    assert os.listdir(directory) == []
    await shared.aclose()


async def test_a_stream_on_a_closed_executor_fails_with_the_closed_error(
    make: Classifiers,
) -> None:
    """Streams, top_k and calls larger than a batch get the closed executor's
    AsyncClfError itself (per text with on_error="yield"), not an exception group."""
    executor = make.executor()
    clf = await AsyncClassifier(KeywordClassifier(), executor=executor, max_batch_size=2).fit(
        TRAIN_X, TRAIN_Y
    )
    await (clf._executor if isinstance(executor, str) else executor).aclose()
    with pytest.raises(AsyncClfError, match=CLOSED):
        async with clf.stream(["spam", "eggs"]) as results:
            [p async for p in results]
    async with clf.stream(["spam", "eggs", "ham"], on_error="yield") as results:
        answers = [p async for p in results]
    assert [p.ok for p in answers] == [False, False, False]
    assert all(isinstance(p.error, AsyncClfError) for p in answers if not p.ok)
    with pytest.raises(AsyncClfError, match=CLOSED):
        await clf.top_k(["spam", "eggs"], "spam", k=1)
    with pytest.raises(AsyncClfError, match=CLOSED):
        await clf.predict(["spam"] * 5)  # in chunks of max_batch_size


async def test_set_params_after_aclose_changes_nothing(anyio_backend: str) -> None:
    """set_params on a closed classifier raises and leaves every setting as it was,
    the estimator's own included."""
    clf = AsyncClassifier(KeywordClassifier())
    await clf.aclose()
    before = clf.get_params(deep=True)
    with pytest.raises(AsyncClfError, match=CLOSED):
        clf.set_params(max_batch_size=8, estimator__fail_on="X")
    assert clf.get_params(deep=True) == before


class NoFutureExecutor(OwnThreadsExecutor):
    """A user's executor that forgets to return the future once."""

    def __init__(self) -> None:
        super().__init__(anyio.CapacityLimiter(1))
        self.forget = False

    def submit(self, call: Callable[[], Any]) -> Any:
        future = super().submit(call)
        return None if self.forget else future


class TwiceExecutor(OwnThreadsExecutor):
    """A user's executor whose futures run their done callbacks twice."""

    def submit(self, call: Callable[[], Any]) -> Any:
        future = super().submit(call)
        original = future.add_done_callback

        def twice(callback: Callable[[Any], object]) -> None:
            original(callback)
            original(callback)

        future.add_done_callback = twice  # type: ignore[method-assign,assignment]
        return future


async def test_a_submit_returning_no_future_fails_its_call_and_frees_the_token(
    anyio_backend: str,
) -> None:
    """submit() returning something other than a Future fails that call with an
    AsyncClfError saying so; the token comes back, so the next call runs."""
    executor = NoFutureExecutor()
    clf = await AsyncClassifier(KeywordClassifier(), executor=executor).fit(TRAIN_X, TRAIN_Y)
    executor.forget = True
    with pytest.raises(AsyncClfError, match=r"instead of a concurrent\.futures\.Future"):
        await clf.classify("spam")
    executor.forget = False
    with anyio.fail_after(DEADLINE):
        assert (await clf.classify("spam")).label == "spam"
    assert executor.limiter.borrowed_tokens == 0


async def test_a_future_delivering_twice_is_heard_once(anyio_backend: str) -> None:
    """A future whose done callbacks run twice still gives each call one answer, fits
    included."""
    clf = await AsyncClassifier(KeywordClassifier(), executor=TwiceExecutor()).fit(TRAIN_X, TRAIN_Y)
    assert (await clf.classify("eggs")).label == "eggs"
    assert clf.version == 1


async def test_closing_a_process_executor_lets_the_calls_it_started_finish(
    process_pool: None,
) -> None:
    """Calls running in worker processes when the executor closes finish with their
    answers (their model files stay until the last ends), queued ones get the closed
    error, and nothing else; then the files are gone."""
    executor = ProcessExecutor(max_workers=2)
    clf = await AsyncClassifier(
        SlowPredictClassifier(0.5), executor=executor, max_batch_size=1, max_latency=0
    ).fit(TRAIN_X, TRAIN_Y)
    directory = executor._directory
    outcomes: list[object] = []

    async def classify(text: str) -> None:
        try:
            outcomes.append((await clf.classify(text)).label)
        except AsyncClfError as exc:
            outcomes.append(exc)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            for text in ["spam", "eggs", "ham", "spam eggs"]:
                tasks.start_soon(classify, text)
            await anyio.wait_all_tasks_blocked()
            await executor.aclose()
    answers = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, AsyncClfError)]
    assert len(answers) + len(refused) == 4
    assert all(CLOSED in str(error) for error in refused)
    assert answers  # the batches running when it closed
    assert not await anyio.to_thread.run_sync(os.path.exists, directory)
