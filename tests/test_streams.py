"""Ordered, bounded streams: one prediction per input, backpressure, errors, early exit."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from hypothesis import given
from hypothesis import strategies as st

from asyncclf import AsyncClassifier, FailedPrediction, InvalidInputError, Prediction

from .conftest import EVERYWHERE, Classifiers
from .fakes import (
    DEADLINE,
    NEVER,
    TRAIN_X,
    TRAIN_Y,
    Gate,
    KeywordClassifier,
    RecordingClassifier,
    settle,
)
from .test_batching import turnstiled

pytestmark = pytest.mark.anyio


async def fitted(make: Classifiers, **kwargs: Any) -> AsyncClassifier:
    return await make(RecordingClassifier(), **kwargs).fit(TRAIN_X, TRAIN_Y)


class Source:
    """A sync or async source that counts how many items were pulled from it."""

    def __init__(self, texts: list[str], fail_after: int | None = None) -> None:
        self.texts = texts
        self.pulled = 0
        self.fail_after = fail_after

    def _next(self) -> str:
        if self.fail_after is not None and self.pulled == self.fail_after:
            msg = "the source broke"
            raise OSError(msg)
        if self.pulled == len(self.texts):
            raise IndexError
        self.pulled += 1
        return self.texts[self.pulled - 1]

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                yield self._next()
            except IndexError:
                return

    async def __aiter__(self) -> AsyncGenerator[str, None]:
        for text in self:
            await anyio.lowlevel.checkpoint()
            yield text


async def collect(clf: AsyncClassifier, source: Any, into: list[Prediction]) -> None:
    async with clf.stream(source) as results:
        async for p in results:
            into.append(p)


@given(st.lists(st.sampled_from(["ham", "spam spam", "eggs", "ham eggs", ""]), max_size=60))
async def test_stream_yields_one_prediction_per_input_in_order(
    make: Classifiers, texts: list[str]
) -> None:
    """Sync and async sources give one Prediction per text, in order, index from 0."""
    clf = await fitted(make, max_batch_size=4)
    for source in (texts, Source(texts).__aiter__()):
        async with clf.stream(source, max_in_flight=5) as results:
            got = [p async for p in results]
        assert [p.index for p in got] == list(range(len(texts)))
        assert [p.text for p in got] == texts
        for p in got:
            row = clf.estimator_.predict_proba([p.text])[0]
            assert (p.label, p.score, p.version) == (clf.classes_[row.argmax()], row.max(), 1)


async def test_the_default_read_ahead_is_a_batch_per_token_and_one_filling(
    make: Classifiers,
) -> None:
    """Without max_in_flight, a stream whose consumer takes nothing reads (N + 1) *
    max_batch_size texts (plus the one in hand), then waits: N is the limiter's tokens,
    or the worker processes when fewer (two here)."""
    clf = await fitted(make, max_batch_size=4, limiter=anyio.CapacityLimiter(3))
    ahead = (min(3, 2 if make.name == "processes" else 3) + 1) * 4
    source = Source([f"spam {i}" for i in range(1000)])
    texts = source.__aiter__()
    async with clf.stream(texts) as results:
        # The reader needs no batch to finish to fill the window: once every task
        # waits, it waits for room.
        await wait_all_tasks_blocked()
        assert ahead <= source.pulled <= ahead + 1
        first = await results.__anext__()
        assert first.index == 0
    await texts.aclose()


async def test_slow_consumer_slows_the_source(make: Classifiers) -> None:
    """The stream reads at most max_in_flight (plus the one in hand) beyond the consumer."""
    clf = await fitted(make, max_batch_size=4)
    source = Source([f"spam {i}" for i in range(1000)])
    texts = source.__aiter__()
    async with clf.stream(texts, max_in_flight=10) as results:
        consumed = 0
        async for _ in results:
            consumed += 1
            if consumed % 10 == 0:
                await wait_all_tasks_blocked()
                assert source.pulled <= consumed + 10 + 1
            if consumed == 50:
                break
    await texts.aclose()
    pulled = source.pulled
    assert clf.statistics().queue_depth == 0
    await settle(clf)  # a batch may still finish in its thread, holding its token
    assert clf.limiter_.statistics().borrowed_tokens == 0
    await wait_all_tasks_blocked()
    assert source.pulled == pulled, "the source was read after the stream closed"


async def test_the_reader_refills_once_the_window_is_half_empty() -> None:
    """A full read-ahead window wakes its reader only once half of it is consumed,
    which then refills it whole: not at every text consumed, nor only when empty."""
    clf = await AsyncClassifier(KeywordClassifier(), max_batch_size=2).fit(TRAIN_X, TRAIN_Y)
    source = Source([f"spam {i}" for i in range(1000)])
    pulled = []
    with anyio.fail_after(DEADLINE):
        async with clf.stream(iter(source), max_in_flight=8) as results:
            for _ in range(9):
                await settle(clf)  # the batches ahead have run: only the window holds
                await wait_all_tasks_blocked()  # the reader waits for room
                pulled.append(source.pulled)
                await results.__anext__()
    # 8 in the window and 1 in hand; 4 consumed leave it half empty: 4 more, and so on.
    assert pulled == [9, 9, 9, 9, 13, 13, 13, 13, 17]


async def test_source_error_reaches_the_consumer_after_earlier_items(make: Classifiers) -> None:
    """An exception from the source is raised in its turn, after the items before it."""
    clf = await fitted(make)
    got: list[Prediction] = []
    with pytest.raises(OSError, match="the source broke"):
        await collect(clf, Source(["ham"] * 5, fail_after=3), got)
    assert [p.index for p in got] == [0, 1, 2]


async def test_bad_items_raise_or_are_yielded(make: Classifiers) -> None:
    """on_error='raise' stops at a bad item; 'yield' gives a FailedPrediction for it."""
    clf = await fitted(make)
    texts: list[Any] = ["ham", None, "a BOOM", "spam"]
    got: list[Prediction] = []
    with pytest.raises(InvalidInputError, match="index 1 is None"):
        await collect(clf, texts, got)
    assert [p.index for p in got] == [0]

    async with clf.stream(texts, on_error="yield") as results:
        mixed = [p async for p in results]
    assert [p.ok for p in mixed] == [True, False, False, True]
    assert isinstance(mixed[1], FailedPrediction)
    assert isinstance(mixed[1].error, InvalidInputError)
    assert isinstance(mixed[2], FailedPrediction)
    assert isinstance(mixed[2].error, ValueError)
    assert "cannot score 'a BOOM'" in str(mixed[2].error)
    assert isinstance(mixed[3], Prediction)
    assert mixed[3].label == "spam"


async def test_cancelling_the_consumer_stops_everything(make: Classifiers) -> None:
    """Cancelling a task mid-stream withdraws queued texts and leaks nothing."""
    clf = await fitted(make, max_batch_size=2)
    source = Source([f"spam {i}" for i in range(10_000)])
    texts = source.__aiter__()
    with anyio.CancelScope() as scope:
        async with clf.stream(texts) as results:
            async for p in results:
                if p.index == 20:
                    scope.cancel()
    await texts.aclose()
    assert scope.cancelled_caught
    assert clf.statistics().queue_depth == 0
    await settle(clf)  # a cancelled batch finishes in its thread
    assert clf.limiter_.statistics().borrowed_tokens == 0
    assert source.pulled < 100
    assert (await clf.classify("eggs")).label == "eggs"


async def test_stream_rejects_bad_arguments(make: Classifiers) -> None:
    """Bad on_error or max_in_flight values raise ValueError before anything runs."""
    clf = await fitted(make)
    with pytest.raises(ValueError, match="on_error"):
        async with clf.stream(["ham"], on_error="skip"):  # type: ignore[call-overload]
            pass
    with pytest.raises(ValueError, match="max_in_flight"):
        async with clf.stream(["ham"], max_in_flight=0):
            pass
    with pytest.raises(InvalidInputError, match="iterable or async iterable"):
        async with clf.stream(42) as results:  # type: ignore[call-overload]
            [p async for p in results]


@given(
    st.lists(st.sampled_from(["ham", "spam", "spam spam", "eggs", "x"]), max_size=80),
    st.integers(min_value=0, max_value=10),
)
async def test_top_k_matches_rank(make: Classifiers, texts: list[str], k: int) -> None:
    """top_k over a stream returns what rank(..., k) returns over the whole list."""
    clf = await fitted(make, max_batch_size=8)
    got = await clf.top_k(Source(texts).__aiter__(), "spam", k=k)
    expected = await clf.rank(texts, "spam", k=k)
    assert [(r.index, r.text, r.score) for r in got] == [
        (r.index, r.text, r.score) for r in expected
    ]


async def test_stream_reports_progress(make: Classifiers) -> None:
    """A progress callback sees non-decreasing counts up to every text, and the total."""
    clf = await fitted(make, max_batch_size=8)
    calls: list[tuple[int, int | None]] = []
    texts = [f"spam {i}" for i in range(50)]
    async with clf.stream(texts, progress=lambda done, total: calls.append((done, total))) as r:
        assert len([p async for p in r]) == 50
    assert calls[-1] == (50, 50)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)

    unsized: list[tuple[int, int | None]] = []
    source = Source(texts).__aiter__()
    async with clf.stream(source, progress=lambda d, t: unsized.append((d, t))) as r:
        assert len([p async for p in r]) == 50
    done, total = unsized[-1]
    assert done == 50
    assert total is None


async def test_stream_progress_bar_with_tqdm(
    make: Classifiers, capsys: pytest.CaptureFixture[str]
) -> None:
    """progress=True draws a tqdm bar (on stderr) and changes no result."""
    pytest.importorskip("tqdm")
    clf = await fitted(make)
    async with clf.stream(["ham", "spam"], progress=True) as results:
        assert [p.label async for p in results] == ["ham", "spam"]
    assert "2/2" in capsys.readouterr().err


async def test_bad_progress_argument_is_rejected(make: Classifiers) -> None:
    """A progress value that is neither a bool, None nor callable is a TypeError."""
    clf = await fitted(make)
    with pytest.raises(TypeError, match="progress must be"):
        async with clf.stream(["ham"], progress="yes"):  # type: ignore[call-overload]
            pass


@given(
    n_texts=st.integers(min_value=0, max_value=120),
    stop_at=st.integers(min_value=0, max_value=130),
    n_callers=st.integers(min_value=0, max_value=20),
    max_batch_size=st.integers(min_value=1, max_value=16),
)
async def test_streams_and_callers_share_lanes_safely(
    make: Classifiers, n_texts: int, stop_at: int, n_callers: int, max_batch_size: int
) -> None:
    """A stream left at a random point, beside concurrent classify callers in the same
    lane, leaves every caller a correct result and the classifier with nothing leaked."""
    clf = await fitted(make, max_batch_size=max_batch_size, max_latency=0.001)
    texts = [("spam " if i % 2 else "eggs ") * (1 + i % 3) + str(i) for i in range(n_texts)]
    results: dict[int, Prediction] = {}
    seen: list[Prediction] = []

    async def caller(i: int) -> None:
        results[i] = await clf.classify(f"ham {i}")

    async def consume() -> None:
        async with clf.stream(texts, max_in_flight=max_batch_size + 3) as stream:
            async for p in stream:
                if p.index == stop_at:
                    break
                seen.append(p)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume)
            for i in range(n_callers):
                tasks.start_soon(caller, i)
    assert [p.index for p in seen] == list(range(min(stop_at, n_texts)))
    assert all(p.text == texts[p.index] for p in seen)
    assert all(results[i].label == "ham" and results[i].text == f"ham {i}" for i in results)
    assert len(results) == n_callers
    assert clf.statistics().queue_depth == 0
    await settle(clf)  # the stream's last batch may still finish in its thread
    assert clf.limiter_.statistics().borrowed_tokens == 0


# -- contract hardening (issue 7) -----------------------------------------------------


@pytest.mark.parametrize("source", ["ham spam", b"ham spam"])
async def test_a_bare_string_is_refused_by_stream_and_top_k(make: Classifiers, source: Any) -> None:
    """stream and top_k refuse a single str (or bytes), as predict does, instead of
    classifying its characters."""
    clf = await fitted(make)
    with pytest.raises(InvalidInputError, match="not a single"):
        async with clf.stream(source) as results:
            [p async for p in results]
    with pytest.raises(InvalidInputError, match="not a single"):
        await clf.top_k(source, "spam", k=3)
    with pytest.raises(InvalidInputError, match="not a single"):
        await clf.predict(source)
    assert clf.statistics().items == 0


class Tracked:
    """A source generator (sync or async) that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False
        self.pulled = 0

    def sync(self) -> Iterator[str]:
        try:
            while True:
                self.pulled += 1
                yield f"spam {self.pulled}"
        finally:
            self.closed = True

    async def async_(self) -> AsyncGenerator[str, None]:
        try:
            while True:
                self.pulled += 1
                await anyio.lowlevel.checkpoint()
                yield f"spam {self.pulled}"
        finally:
            self.closed = True


@pytest.mark.parametrize("kind", ["sync", "async_"])
async def test_leaving_a_stream_early_closes_the_source_generator(
    make: Classifiers, kind: str
) -> None:
    """Leaving a stream (or top_k being cancelled) closes the user's generator at once,
    as aclosing would, so trio never finalises it with a ResourceWarning."""
    clf = await fitted(make, max_batch_size=4)
    tracked = Tracked()
    async with clf.stream(getattr(tracked, kind)()) as results:
        async for p in results:
            if p.index == 10:
                break
    assert tracked.closed
    assert clf.statistics().queue_depth == 0

    tracked = Tracked()
    with anyio.move_on_after(0.05):
        await clf.top_k(getattr(tracked, kind)(), "spam", k=3)
    assert tracked.closed


@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
async def test_a_failed_text_yields_a_failed_prediction_typed_apart(make: Classifiers) -> None:
    """on_error='yield' gives FailedPrediction (ok False, error set) for a failed text and
    Prediction (ok True, a label) for the rest; 'raise' streams only Predictions."""
    clf = await fitted(make)
    async with clf.stream(["ham", "BOOM", "spam"], on_error="yield") as results:
        got = [p async for p in results]
    assert [p.ok for p in got] == [True, False, True]
    failed = got[1]
    assert isinstance(failed, FailedPrediction)
    assert (failed.index, failed.text, failed.version) == (1, "BOOM", clf.version)
    assert isinstance(failed.error, ValueError)
    with pytest.raises(AttributeError):
        failed.label  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError):
        got[0].__dict__  # noqa: B018  # slotted: no per-item dict


async def test_leaving_a_stream_lets_the_source_finish_its_async_cleanup(make: Classifiers) -> None:
    """The source generator's finally block may await (close a cursor, say): leaving
    the stream early runs it to the end, as aclosing would, not cut by the
    cancellation that stops the reader."""
    clf = await fitted(make)
    log: list[str] = []

    async def source() -> AsyncGenerator[str, None]:
        try:
            for i in range(1000):
                yield f"spam {i}"
        finally:
            log.append("finally entered")
            await anyio.sleep(0.01)
            log.append("cleanup finished")

    async with clf.stream(source()) as results:
        async for p in results:
            if p.index == 3:
                break
    assert log == ["finally entered", "cleanup finished"]


# -- streams and large calls use every worker (issue 8, part 5) ------------------------
# The turnstiled tests hold batches in a Turnstile (threading objects the estimator
# waits on) and read a CallLog, so they run in threads only: a worker process or a
# Dask worker would hold copies of them the test cannot see or release.


def mixed(n: int) -> list[str]:
    return [("spam ", "eggs ", "ham ")[i % 3] * (1 + i % 2) + str(i) for i in range(n)]


def check_predictions(got: list[Prediction], texts: list[str]) -> None:
    """Assert ``got`` holds one prediction per text, in order, equal to the estimator's."""
    plain = KeywordClassifier().fit(TRAIN_X, TRAIN_Y)
    rows = plain.predict_proba(texts)
    assert [(p.index, p.text, p.label, p.score) for p in got] == [
        (i, text, plain.classes_[row.argmax()], row.max())
        for i, (text, row) in enumerate(zip(texts, rows, strict=True))
    ]


async def test_a_stream_keeps_one_batch_per_token_in_the_estimator() -> None:
    """With 3 tokens a stream has 3 batches in the estimator at once (no 4th waiting for
    a token), and its results are the estimator's, in input order."""
    clf, turnstile, _ = await turnstiled(3, max_batch_size=4, max_latency=NEVER)
    texts = mixed(40)
    got: list[Prediction] = []

    async def consume() -> None:
        async with clf.stream(texts, max_in_flight=40) as results:
            got.extend([p async for p in results])

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume)
            await turnstile.wait_held(3)
            await wait_all_tasks_blocked()
            assert sorted(turnstile.held) == sorted(texts[0:12:4])
            assert clf.limiter_.statistics().tasks_waiting == 0
            turnstile.open()
    assert turnstile.most == 3
    check_predictions(got, texts)


async def test_a_stream_hands_batches_on_in_order_and_buffers_at_most_its_width() -> None:
    """Batches that end before an earlier one wait for it (nothing reaches the consumer
    out of order) and hold their places: no further batch starts meanwhile."""
    clf, turnstile, _ = await turnstiled(3, max_batch_size=4, max_latency=NEVER)
    limiter = clf.limiter_
    texts = mixed(40)
    got: list[Prediction] = []
    probes = [object(), object()]

    async def consume() -> None:
        async with clf.stream(texts, max_in_flight=40) as results:
            async for p in results:
                got.append(p)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume)
            await turnstile.wait_held(3)
            turnstile.let_go(texts[8], texts[4])  # the 3rd and 2nd batches end first
            # Their tokens come back once their outcomes are in.
            for probe in probes:
                await limiter.acquire_on_behalf_of(probe)
            for probe in probes:
                limiter.release_on_behalf_of(probe)
            await wait_all_tasks_blocked()
            assert got == []
            stats = limiter.statistics()
            assert (stats.borrowed_tokens, stats.tasks_waiting) == (1, 0)
            turnstile.open()
    assert sorted(turnstile.entered_batches) == sorted(texts[0::4])
    check_predictions(got, texts)


async def test_a_stream_with_one_token_runs_one_batch_at_a_time() -> None:
    """With 1 token a stream waits for one batch at a time, as before: no second batch
    waits for the token, and the estimator sees the batches in input order."""
    clf, turnstile, log = await turnstiled(1, max_batch_size=4, max_latency=NEVER)
    texts = mixed(40)
    got: list[Prediction] = []

    async def consume() -> None:
        async with clf.stream(texts, max_in_flight=40) as results:
            got.extend([p async for p in results])

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume)
            await turnstile.wait_held(1)
            await wait_all_tasks_blocked()
            stats = clf.limiter_.statistics()
            assert (stats.borrowed_tokens, stats.tasks_waiting) == (1, 0)
            assert clf.statistics().queue_depth == 36  # read ahead, queued, no batch formed
            turnstile.open()
    assert turnstile.most == 1
    assert log.batches == [texts[i : i + 4] for i in range(0, 40, 4)]
    check_predictions(got, texts)


async def test_leaving_a_stream_with_batches_in_flight_returns_at_once() -> None:
    """Leaving a stream while 3 of its batches run returns at once, withdraws the texts
    still queued (never computed) and leaks nothing once the batches end."""
    clf, turnstile, log = await turnstiled(3, max_batch_size=4, max_latency=NEVER)
    texts = mixed(400)
    with anyio.fail_after(DEADLINE):
        async with (
            clf.stream(texts, max_in_flight=40) as results,
            anyio.create_task_group() as tasks,
        ):
            # Leave once three batches are held in the estimator.
            tasks.start_soon(turnstile.wait_held, 3)
        assert len(turnstile.held) == 3
        assert clf.statistics().queue_depth == 0
        turnstile.open()
        await settle(clf)
    assert results is not None
    assert clf.limiter_.statistics().borrowed_tokens == 0
    assert sorted(log.seen) == sorted(texts[:12])
    assert clf.statistics().items == 12
    clf.set_params(max_latency=0)  # a lone caller would wait out max_latency otherwise
    assert (await clf.classify("eggs")).label == "eggs"


async def test_task_cancel_of_a_stream_with_batches_in_flight_returns_at_once(
    anyio_backend: str,
) -> None:
    """asyncio's Task.cancel() on a consumer whose stream has 3 batches running returns
    before they end, withdraws the queued texts and leaks nothing."""
    if anyio_backend != "asyncio":
        pytest.skip("native asyncio cancellation")
    import asyncio

    clf, turnstile, log = await turnstiled(3, max_batch_size=4, max_latency=NEVER)
    texts = mixed(400)
    got: list[Prediction] = []

    async def consume() -> None:
        async with clf.stream(texts, max_in_flight=40) as results:
            async for p in results:
                got.append(p)

    task = asyncio.create_task(consume())
    await turnstile.wait_held(3)
    task.cancel()
    finished, _ = await asyncio.wait({task}, timeout=DEADLINE)
    assert task in finished
    assert task.cancelled()
    assert len(turnstile.held) == 3
    assert clf.statistics().queue_depth == 0
    turnstile.open()
    with anyio.fail_after(DEADLINE):
        await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0
    assert got == []
    assert sorted(log.seen) == sorted(texts[:12])


@given(
    texts=st.lists(st.sampled_from(["ham", "spam spam", "eggs", "a BOOM", ""]), max_size=60),
    tokens=st.integers(min_value=1, max_value=4),
    max_batch_size=st.integers(min_value=1, max_value=6),
    max_in_flight=st.integers(min_value=1, max_value=20),
)
async def test_streams_over_several_tokens_stay_in_order(
    make: Classifiers, texts: list[str], tokens: int, max_batch_size: int, max_in_flight: int
) -> None:
    """Whatever the tokens, batch size and window, a stream yields one result per text,
    in order: the estimator's prediction, or a FailedPrediction for a failing text."""
    clf = await make(
        RecordingClassifier(),
        limiter=anyio.CapacityLimiter(tokens),
        max_batch_size=max_batch_size,
        max_latency=0.001,
    ).fit(TRAIN_X, TRAIN_Y)
    with anyio.fail_after(DEADLINE):
        async with clf.stream(texts, on_error="yield", max_in_flight=max_in_flight) as results:
            got = [p async for p in results]
    assert [(p.index, p.text) for p in got] == list(enumerate(texts))
    assert [isinstance(p, FailedPrediction) for p in got] == ["BOOM" in t for t in texts]
    for p in got:
        if isinstance(p, Prediction):
            row = clf.estimator_.predict_proba([p.text])[0]
            assert (p.label, p.score) == (clf.classes_[row.argmax()], row.max())
    assert clf.statistics().queue_depth == 0


# -- tests that mutation testing found missing (issue 20) --------------------------------


async def test_nothing_comes_after_the_error_that_ends_a_stream() -> None:
    """With on_error="raise", the stream ends at the first failing text: iterating on
    after its exception yields nothing more, neither from its batch nor from later ones."""
    gate = Gate()
    clf = AsyncClassifier(
        RecordingClassifier(gate=gate, block=["predict_proba"]),
        max_batch_size=4,
        limiter=anyio.CapacityLimiter(1),
    )
    gate.release.set()
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    texts = ["ham", "a BOOM", "spam", "eggs", "ham 2", "spam 2"]
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "held")
            await gate.wait_entered()
            async with clf.stream(texts) as results:
                # Queued behind the held batch: batches [ham, a BOOM, spam, eggs], [ham 2, spam 2].
                await wait_all_tasks_blocked()
                gate.release.set()
                first = await anext(results)
                with pytest.raises(ValueError, match="BOOM"):
                    await anext(results)
                after = [p async for p in results]
    assert (first.text, after) == ("ham", [])


async def test_a_finished_stream_stays_finished_after_its_block() -> None:
    """Once a stream's results are exhausted, asking for another after the block
    raises StopAsyncIteration."""
    clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    async with clf.stream(["ham", "spam"]) as results:
        assert [p.text async for p in results] == ["ham", "spam"]
    with pytest.raises(StopAsyncIteration):
        await anext(results)


async def test_a_stream_of_only_bad_items_yields_a_failure_for_each() -> None:
    """A stream whose items are all bad (no text ever reaches the batcher) still yields
    one FailedPrediction per item with on_error="yield", and ends."""
    clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    items: list[Any] = [1, None, b"bytes"]
    with anyio.fail_after(DEADLINE):
        async with clf.stream(items, on_error="yield") as results:
            got = [p async for p in results]
    assert [(type(p), p.index) for p in got] == [(FailedPrediction, i) for i in range(3)]
    assert all(
        isinstance(p, FailedPrediction) and isinstance(p.error, InvalidInputError) for p in got
    )


async def test_a_failing_source_ends_the_stream_even_with_on_error_yield() -> None:
    """on_error="yield" turns failing texts into FailedPredictions, not a failing source:
    its own error ends the stream, after the predictions before it."""

    def source() -> Iterator[str]:
        yield "ham"
        msg = "source broke"
        raise OSError(msg)

    clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    got: list[Any] = []

    async def drain() -> None:
        async with clf.stream(source(), on_error="yield") as results:
            async for p in results:
                got.append(p)

    with anyio.fail_after(DEADLINE), pytest.raises(OSError, match="source broke"):
        await drain()
    assert [(type(p), p.text) for p in got] == [(Prediction, "ham")]


async def test_a_stream_waits_for_room_even_when_callers_get_overloaded_errors() -> None:
    """overload="raise" refuses callers when the queue is full, but a stream's reader
    waits for room: its texts are classified once the queue drains."""
    gate = Gate()
    clf = AsyncClassifier(
        RecordingClassifier(gate=gate, block=["predict_proba"]),
        max_batch_size=2,
        max_queue=2,
        overload="raise",
        limiter=anyio.CapacityLimiter(1),
    )
    gate.release.set()
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "held")
            await gate.wait_entered()
            tasks.start_soon(clf.predict, ["queued 1", "queued 2"])
            await wait_all_tasks_blocked()
            async with clf.stream(["ham", "spam"]) as results:
                await wait_all_tasks_blocked()
                gate.release.set()
                assert [p.text async for p in results] == ["ham", "spam"]


@pytest.mark.parametrize(
    "texts",
    [["ham", "a BOOM"], ["ham", "spam spam", "a BOOM", "eggs", "ham ham"]],
    ids=["two", "five"],
)
async def test_a_failing_text_queued_with_others_in_one_request_fails_alone(
    texts: list[str],
) -> None:
    """A stream's texts queued together as one request, one of which fails, are searched
    text by text: only that text fails, every other gets its own prediction."""
    gate = Gate()
    clf = AsyncClassifier(
        RecordingClassifier(gate=gate, block=["predict_proba"]), limiter=anyio.CapacityLimiter(1)
    )
    gate.release.set()
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "held")
            await gate.wait_entered()
            async with clf.stream(texts, on_error="yield") as results:
                await wait_all_tasks_blocked()  # all queued behind the held batch
                gate.release.set()
                got = [p async for p in results]
    assert [(p.index, p.text) for p in got] == list(enumerate(texts))
    for p in got:
        if "BOOM" in p.text:
            assert isinstance(p, FailedPrediction)
        else:
            assert isinstance(p, Prediction)
            row = clf.estimator_.predict_proba([p.text])[0]
            assert (p.label, p.score) == (clf.classes_[row.argmax()], row.max())
