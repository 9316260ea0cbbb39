"""Coalescing, splitting, error isolation, cancellation and overload of the batcher."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import numpy as np
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from asyncclf import AsyncClassifier, AsyncClfError, FailedPrediction, OverloadedError, Prediction
from asyncclf._batching import RECENT
from asyncclf._model import batch_key
from asyncclf._work.transport import WorkerTraceback

from .conftest import EVERYWHERE, Classifiers
from .fakes import (
    DEADLINE,
    NEVER,
    SHARED_ERROR,
    TRAIN_X,
    TRAIN_Y,
    CallLog,
    CodedError,
    CodedErrorClassifier,
    Gate,
    InterruptingClassifier,
    KeywordClassifier,
    LockedError,
    LockedErrorClassifier,
    MisshapenClassifier,
    NaNClassifier,
    RecordingClassifier,
    SharedErrorClassifier,
    SlowPredictClassifier,
    TroubleClassifier,
    settle,
    trouble,
)

pytestmark = pytest.mark.anyio

# Tests that take ``make`` run on every executor. The others stay in threads: they hold
# a batch in a Gate or Turnstile, watch the estimator's calls in a CallLog, or reach
# into the batcher, and a worker process or a Dask worker would only see copies.


async def recording(**kwargs: Any) -> tuple[AsyncClassifier, CallLog, Gate]:
    log, gate = CallLog(), Gate()
    clf = AsyncClassifier(
        RecordingClassifier(log=log, gate=gate, block=["predict_proba"]), **kwargs
    )
    gate.release.set()
    await clf.fit(TRAIN_X, TRAIN_Y)
    return clf, log, gate


async def behind_a_held_batch(
    gate: Gate,
    first: Callable[[], Coroutine[Any, Any, Any]],
    queued: list[Callable[[], Coroutine[Any, Any, Any]]],
) -> None:
    """Run ``first`` until its batch is held in the gate, start ``queued`` so that they
    wait behind it, then release the gate and let everything finish."""
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            await gate.wait_entered()
            for call in queued:
                tasks.start_soon(call)
            await wait_all_tasks_blocked()
            gate.release.set()


async def failures_of_one_batch(
    clf: AsyncClassifier, gate: Gate, callers: int, kind: type[Exception]
) -> list[BaseException]:
    """Fit ``clf`` (its estimator blocks predict_proba in ``gate``), send ``callers``
    classify calls, all but the first in one batch, and return what they raised."""
    gate.release.set()
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    caught: list[BaseException] = []

    async def call(i: int) -> None:
        try:
            await clf.classify(f"text {i}")
        except kind as exc:
            caught.append(exc)

    await behind_a_held_batch(gate, partial(call, 0), [partial(call, i) for i in range(1, callers)])
    return caught


def expected(clf: AsyncClassifier, text: str) -> tuple[Any, float]:
    row = clf.estimator_.predict_proba([text])[0]
    return clf.classes_[row.argmax()], float(row.max())


async def test_concurrent_callers_share_batches() -> None:
    """Callers queued behind a running batch are answered together in the next one."""
    clf, log, gate = await recording()
    gate.close()
    results: dict[int, Prediction] = {}

    async def call(i: int) -> None:
        results[i] = await clf.classify(f"spam {i}" if i % 2 else f"ham {i}")

    await behind_a_held_batch(gate, partial(call, 0), [partial(call, i) for i in range(1, 50)])
    assert [len(b) for b in log.batches] == [1, 49]
    for i, prediction in results.items():
        assert prediction.text == (f"spam {i}" if i % 2 else f"ham {i}")
        assert (prediction.label, prediction.score) == expected(clf, prediction.text)
    stats = clf.statistics()
    assert (stats.batches, stats.items, stats.queue_depth) == (2, 50, 0)
    assert stats.max_batch_size_seen == 49


async def test_batches_respect_max_batch_size_and_large_calls_are_split() -> None:
    """No estimator call exceeds max_batch_size; a large call is chunked, same answer."""
    clf, log, _ = await recording(max_batch_size=8)
    texts = [f"spam {'ham ' * (i % 3)}{i}" for i in range(30)]
    proba = await clf.predict_proba(texts)
    # The chunks run side by side (one per token), so they may reach the estimator in any order.
    assert sorted(log.batches) == sorted(texts[i : i + 8] for i in range(0, 30, 8))
    log.batches.clear()

    async def call(text: str) -> None:
        await clf.classify(text)

    async with anyio.create_task_group() as tasks:
        for text in texts:
            tasks.start_soon(call, text)
    assert sorted(log.seen) == sorted(texts)
    assert max(len(b) for b in log.batches) == 8
    np.testing.assert_allclose(proba, clf.estimator_.predict_proba(texts))


async def test_one_bad_text_fails_only_its_caller() -> None:
    """The estimator's exception reaches only the caller whose text caused it."""
    clf, _, gate = await recording()
    gate.close()
    outcomes: dict[int, Any] = {}
    texts = [f"ham {i}" for i in range(20)]
    texts[7] = "a BOOM here"

    async def call(i: int) -> None:
        try:
            outcomes[i] = await clf.classify(texts[i])
        except ValueError as exc:
            outcomes[i] = exc

    await behind_a_held_batch(gate, partial(call, 0), [partial(call, i) for i in range(1, 20)])
    assert isinstance(outcomes[7], ValueError)
    assert "cannot score 'a BOOM here'" in str(outcomes[7])
    for i in set(range(20)) - {7}:
        assert outcomes[i].label == "ham"
        assert outcomes[i].text == texts[i]
    assert clf.statistics().failed_items == 1
    # A list call holding the bad text fails with the estimator's own exception.
    with pytest.raises(ValueError, match="cannot score"):
        await clf.predict(["ham", "BOOM", "spam"])


async def test_cancelled_while_queued_is_never_computed() -> None:
    """A caller cancelled while queued is withdrawn: its text never reaches the estimator."""
    clf, log, gate = await recording()
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            with anyio.CancelScope() as doomed_scope:
                doomed_scope.cancel()
                await clf.classify("doomed")
            tasks.start_soon(clf.classify, "kept")
            await wait_all_tasks_blocked()
            gate.release.set()
    assert "doomed" not in log.seen
    assert "kept" in log.seen
    assert clf.statistics().queue_depth == 0
    assert clf.limiter_.statistics().borrowed_tokens == 0


async def test_a_leader_whose_batch_ends_leaves_the_next_leader_alone() -> None:
    """A leader's clean-up when its batch ends does not undo the leadership of the
    caller already leading the next batch: no second leader, no empty batch run."""
    clf, log, gate = await recording(max_latency=0.2, max_batch_size=10)
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "spam")
            await gate.wait_entered()  # the first batch is held in its thread
            for text in ("eggs 1", "eggs 2"):  # a burst: its leader waits for company
                tasks.start_soon(clf.classify, text)
            await wait_all_tasks_blocked()
            gate.release.set()  # the first batch ends while the next leader waits
    assert [sorted(batch) for batch in log.batches] == [["spam"], ["eggs 1", "eggs 2"]]
    stats = clf.statistics()
    assert (stats.batches, stats.items, stats.mean_batch_size) == (2, 3, 1.5)
    assert clf.limiter_.statistics().borrowed_tokens == 0


async def test_a_lone_caller_finding_a_free_worker_runs_at_once(make: Classifiers) -> None:
    """The adaptive wait: with a worker free and nobody else arriving, a call does not
    wait max_latency for company (here longer than the test's deadline) but runs at once."""
    clf = await make(KeywordClassifier(), max_latency=NEVER).fit(TRAIN_X, TRAIN_Y)
    with anyio.fail_after(DEADLINE):
        for text in ("spam", "eggs", "spam spam"):
            assert (await clf.classify(text)).label == text.split()[0]
    assert clf.statistics().batches == 3


async def test_callers_arriving_together_still_share_a_batch(make: Classifiers) -> None:
    """A burst of callers with a worker free forms one batch: the leader sees the
    others queue up and waits (at most max_latency) for them."""
    clf = await make(KeywordClassifier(), max_latency=NEVER, max_batch_size=5).fit(TRAIN_X, TRAIN_Y)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            for i in range(5):
                tasks.start_soon(clf.classify, f"spam {i}")
    assert clf.statistics().batches == 1
    assert clf.statistics().max_batch_size_seen == 5


WAVE_GAP = 5
"""Checkpoints between the two waves of a burst."""


@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
async def test_a_burst_arriving_in_two_waves_still_shares_a_batch(make: Classifiers) -> None:
    """The adaptive wait holds a batch whose company is arriving: a burst whose second
    wave comes a few checkpoints after the first fills one batch, not two."""
    clf = await make(KeywordClassifier(), max_latency=NEVER, max_batch_size=6).fit(TRAIN_X, TRAIN_Y)
    await settle(clf)  # every worker is free: the leader may wait for company

    async def second_wave(tasks: anyio.abc.TaskGroup) -> None:
        for _ in range(WAVE_GAP):
            await checkpoint()
        for i in range(3, 6):
            tasks.start_soon(clf.classify, f"spam {i}")

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            for i in range(3):
                tasks.start_soon(clf.classify, f"spam {i}")
            tasks.start_soon(second_wave, tasks)
    stats = clf.statistics()
    assert (stats.batches, stats.items, stats.max_batch_size_seen) == (1, 6, 6)


def taken_or_done(clf: AsyncClassifier) -> bool:
    """Whether the only batch queued has been taken off the queue with its token."""
    stats = clf.statistics()
    taken = clf.limiter_.statistics().borrowed_tokens and stats.queue_depth == 0
    return bool(taken or stats.batches)


async def test_a_caller_queued_behind_busy_workers_does_not_also_wait_max_latency(
    make: Classifiers,
) -> None:
    """While every worker is busy, waiting for a token is the wait for company: once
    one frees, the queued call runs at once, not max_latency (past the deadline) later."""
    clf = await make(
        SlowPredictClassifier(0.3), max_latency=NEVER, limiter=anyio.CapacityLimiter(1)
    ).fit(TRAIN_X, TRAIN_Y)
    await settle(clf)  # the token is free: whoever holds it next runs "spam"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "spam")
            # Until the first batch holds the only token and has left the queue (or, on
            # a stalled machine, has already ended: then "eggs" is a lone caller).
            while not taken_or_done(clf):
                await checkpoint()
            tasks.start_soon(clf.classify, "eggs")
    assert clf.statistics().batches == 2


async def test_leader_cancelled_while_its_batch_runs_still_serves_the_others() -> None:
    """Cancelling the caller that runs a batch loses only its own result."""
    clf, log, gate = await recording(max_latency=0.05)
    gate.close()
    results: dict[str, Prediction] = {}
    texts = [f"spam {i}" for i in range(6)]
    scopes = {text: anyio.CancelScope() for text in texts}

    async def call(text: str) -> None:
        with scopes[text]:
            results[text] = await clf.classify(text)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            # Started together: whoever leads sees company coming and waits for it.
            for text in texts:
                tasks.start_soon(call, text)
            await gate.wait_entered()
            # The leader took the front of the queue: its own request comes first.
            leader = log.batches[0][0]
            scopes[leader].cancel()
            await wait_all_tasks_blocked()
            gate.release.set()
    assert len(log.batches) == 1
    assert sorted(log.batches[0]) == texts
    assert scopes[leader].cancelled_caught
    assert leader not in results
    assert sorted(results) == sorted(set(texts) - {leader})
    assert all(prediction.label == "spam" for prediction in results.values())
    assert clf.limiter_.statistics().borrowed_tokens == 0


@given(
    n_callers=st.integers(min_value=1, max_value=40),
    cancels=st.lists(
        st.tuples(st.integers(min_value=0, max_value=39), st.integers(min_value=0, max_value=30)),
        max_size=15,
    ),
    max_batch_size=st.integers(min_value=1, max_value=16),
)
async def test_random_cancellations_never_corrupt_results(
    make: Classifiers, n_callers: int, cancels: list[tuple[int, int]], max_batch_size: int
) -> None:
    """Cancel random callers after random numbers of checkpoints: every other caller
    gets its own correct result, nothing hangs, nothing leaks."""
    clf = make(RecordingClassifier(), max_batch_size=max_batch_size, max_latency=0.001)
    await clf.fit(TRAIN_X, TRAIN_Y)
    texts = [("spam " if i % 3 else "eggs ") * (1 + i % 4) + str(i) for i in range(n_callers)]
    scopes = [anyio.CancelScope() for _ in range(n_callers)]
    results: dict[int, Prediction] = {}

    async def call(i: int) -> None:
        with scopes[i]:
            results[i] = await clf.classify(texts[i])

    async def cancel_later(i: int, delay: int) -> None:
        for _ in range(delay):
            await checkpoint()
        scopes[i].cancel()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            for i in range(n_callers):
                tasks.start_soon(call, i)
            for i, delay in cancels:
                if i < n_callers:
                    tasks.start_soon(cancel_later, i, delay)
    cancelled = {i for i, _ in cancels if i < n_callers}
    for i in range(n_callers):
        if i in results:
            assert results[i].text == texts[i]
            assert (results[i].label, results[i].score) == expected(clf, texts[i])
        else:
            assert i in cancelled, f"caller {i} was never cancelled but got no result"
    stats = clf.statistics()
    assert stats.queue_depth == 0
    await settle(clf)  # cancelled callers' batches finish in their threads
    assert clf.limiter_.statistics().borrowed_tokens == 0
    assert (await clf.classify("eggs eggs")).label == "eggs"


async def test_full_queue_raises_overloaded_or_waits() -> None:
    """With overload='raise' a full queue refuses at once; with 'wait' callers queue up."""
    clf, _, gate = await recording(
        max_batch_size=2, max_queue=2, overload="raise", limiter=anyio.CapacityLimiter(1)
    )
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "running")
            await gate.wait_entered()
            tasks.start_soon(clf.classify, "queued 1")
            tasks.start_soon(clf.classify, "queued 2")
            await wait_all_tasks_blocked()
            assert clf.statistics().queue_depth == 2
            with pytest.raises(OverloadedError, match="max_queue is 2"):
                await clf.classify("one too many")
            clf.set_params(overload="wait")
            tasks.start_soon(clf.predict, ["waits for room"])
            await wait_all_tasks_blocked()
            assert clf.statistics().queue_depth == 2
            gate.release.set()
    assert clf.statistics().queue_depth == 0
    assert clf.statistics().items == 4


@given(st.lists(st.text(alphabet="hamspegBOM ", max_size=12), max_size=30))
async def test_results_are_identical_with_batching_on_or_off(
    make: Classifiers, texts: list[str]
) -> None:
    """Batched and one-by-one classifiers return the same predictions and errors."""
    batched = await make(RecordingClassifier(), max_batch_size=7).fit(TRAIN_X, TRAIN_Y)
    single = await make(RecordingClassifier(), max_batch_size=1, max_latency=0).fit(
        TRAIN_X, TRAIN_Y
    )

    async def run(clf: AsyncClassifier) -> list[Any]:
        out: list[Any] = [None] * len(texts)

        async def one(i: int) -> None:
            try:
                p = await clf.classify(texts[i])
                out[i] = (p.label, p.score)
            except ValueError as exc:
                out[i] = str(exc)

        async with anyio.create_task_group() as tasks:
            for i in range(len(texts)):
                tasks.start_soon(one, i)
        return out

    assert await run(batched) == await run(single)


async def test_concurrent_rank_and_group_share_batches_and_stay_correct() -> None:
    """rank calls for different labels and group calls share score batches; each gets
    the answer it would get alone."""
    clf, log, gate = await recording()
    texts = ["spam spam", "eggs", "ham ham ham", "spam eggs eggs"]
    alone = {label: await clf.rank(texts, label) for label in ("ham", "spam", "eggs")}
    log.batches.clear()
    results: dict[str, Any] = {}

    async def rank(label: str) -> None:
        results[label] = await clf.rank(texts, label)

    async def group() -> None:
        results["group"] = await clf.group(texts)

    gate.close()
    ranks = [partial(rank, label) for label in ("ham", "spam", "eggs")]
    await behind_a_held_batch(gate, partial(clf.classify, "first"), [*ranks, group])
    assert [len(b) for b in log.batches] == [1, 16]
    for label in ("ham", "spam", "eggs"):
        assert results[label] == alone[label]
    assert [r.index for r in results["group"]["spam"]] == [0]


async def test_queued_calls_use_the_model_that_answers_them() -> None:
    """Calls queued when a new model is swapped in are answered by it: a rank reads the
    right column even though the classes changed order, classify reports the version."""
    clf, _, gate = await recording(limiter=anyio.CapacityLimiter(1))
    gate.close()
    results: dict[str, Any] = {}

    async def rank() -> None:
        results["rank"] = await clf.rank(["eggs eggs", "spam", "ham ham"], "spam")

    async def classify() -> None:
        results["classify"] = await clf.classify("spam spam")

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            tasks.start_soon(rank)
            tasks.start_soon(classify)
            await wait_all_tasks_blocked()
            # What a refit finishing now does: swap in a model whose classes differ.
            new = RecordingClassifier().fit(["spam", "eggs", "zebra"], ["spam", "eggs", "zebra"])
            clf._slot.serve(new, "0123456789abcdef")
            gate.release.set()
    assert list(clf.classes_) == ["eggs", "spam", "zebra"]
    # The old model would order these [1, 0, 2]; the new model's zebra column, [2, 1, 0].
    assert [r.index for r in results["rank"]] == [1, 2, 0]
    expected = new.predict_proba(["spam", "ham ham", "eggs eggs"])[:, 1]
    assert [r.score for r in results["rank"]] == pytest.approx(list(expected))
    assert (results["classify"].label, results["classify"].version) == ("spam", 2)


# -- contract hardening (issue 7) -----------------------------------------------------


async def test_lowering_max_batch_size_never_strands_queued_work() -> None:
    """A request queued before max_batch_size was lowered below its size runs alone,
    in chunks of the new size, instead of waiting forever behind an empty batch."""
    clf, log, gate = await recording(max_batch_size=8, limiter=anyio.CapacityLimiter(1))
    gate.close()
    results: dict[str, Any] = {}
    texts = [f"spam {i}" for i in range(6)]

    async def big() -> None:
        results["big"] = await clf.predict_proba(texts)

    async def small() -> None:
        results["small"] = await clf.classify("eggs")

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            tasks.start_soon(big)
            await wait_all_tasks_blocked()
            tasks.start_soon(small)
            await wait_all_tasks_blocked()
            clf.set_params(max_batch_size=2, max_queue=2)
            gate.release.set()
    assert [len(batch) for batch in log.batches] == [1, 2, 2, 2, 1]
    np.testing.assert_allclose(results["big"], clf.estimator_.predict_proba(texts))
    assert results["small"].label == "eggs"
    assert clf.statistics().queue_depth == 0


async def test_lowering_max_batch_size_mid_stream_keeps_the_stream_flowing() -> None:
    """A stream whose open request outgrew a lowered max_batch_size still completes."""
    clf, log, gate = await recording(max_batch_size=16)
    gate.close()
    texts = [f"ham {i}" for i in range(40)]
    labels = []
    with anyio.fail_after(DEADLINE):
        async with clf.stream(texts) as results:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(gate.wait_entered)
                await wait_all_tasks_blocked()
            clf.set_params(max_batch_size=3, max_queue=3)
            gate.release.set()
            labels = [p.label async for p in results]
    assert labels == ["ham"] * 40
    assert max(len(batch) for batch in log.batches[1:]) <= 16
    assert clf.statistics().queue_depth == 0


async def test_raising_max_queue_lets_waiting_callers_in_at_once() -> None:
    """Callers waiting for room in a full queue re-check a raised max_queue at once."""
    clf, _, gate = await recording(max_batch_size=1, max_queue=1, limiter=anyio.CapacityLimiter(1))
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "running")
            await gate.wait_entered()
            tasks.start_soon(clf.classify, "queued")
            tasks.start_soon(clf.classify, "waiting for room")
            await wait_all_tasks_blocked()
            assert clf.statistics().queue_depth == 1
            clf.set_params(max_queue=4)
            await wait_all_tasks_blocked()
            assert clf.statistics().queue_depth == 2
            gate.release.set()
    assert clf.statistics().items == 3


async def test_a_cancelled_leader_returns_while_its_batch_still_runs() -> None:
    """A caller leading a batch returns on cancellation without waiting for the worker;
    the batch completes for the others and then gives its token back."""
    clf, _, gate = await recording(limiter=anyio.CapacityLimiter(1))
    gate.close()
    results: dict[str, Prediction] = {}

    async def call(text: str) -> None:
        results[text] = await clf.classify(text)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            with anyio.CancelScope() as leader:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(call, "leader")
                    await wait_all_tasks_blocked()
                    tasks.start_soon(call, "spam follower")
                    await gate.wait_entered()
                    leader.cancel()
            # Returned with the worker still held in the gate.
            assert not gate.release.is_set()
            assert clf.limiter_.statistics().borrowed_tokens == 1
            gate.release.set()
    assert leader.cancelled_caught
    assert set(results) == {"spam follower"}
    assert results["spam follower"].label == "spam"
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


async def test_leaving_a_stream_returns_while_its_batch_still_runs() -> None:
    """Leaving a stream block does not wait for the batch running in its worker."""
    clf, _, gate = await recording()
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with (
            clf.stream([f"spam {i}" for i in range(10)]) as results,
            anyio.create_task_group() as tasks,
        ):
            # Leave once the first batch is held in the gate.
            tasks.start_soon(gate.wait_entered)
        assert not gate.release.is_set()
        gate.release.set()
        await settle(clf)
    assert results is not None
    assert clf.statistics().queue_depth == 0
    assert (await clf.classify("eggs")).label == "eggs"


async def test_a_model_failing_everywhere_costs_at_most_one_call_per_caller() -> None:
    """When every text fails, finding whom it fails costs about one call per caller
    (a full bisection made 2n - 1), and a lone list call needs no search at all."""
    clf, log, gate = await recording()
    gate.close()
    errors: list[Exception] = []

    async def call(i: int) -> None:
        try:
            await clf.classify(f"BOOM {i}")
        except ValueError as exc:
            errors.append(exc)

    callers = 64
    await behind_a_held_batch(gate, partial(call, 0), [partial(call, i) for i in range(1, callers)])
    assert len(errors) == callers
    # 1 for the held caller; then the batch of 63, its two halves, 63 callers alone.
    assert len(log.batches) == 1 + 1 + 2 + (callers - 1)
    assert len(log.seen) <= 1 + 3 * (callers - 1)

    log.batches.clear()
    with pytest.raises(ValueError, match="cannot score"):
        await clf.predict_proba([f"BOOM {i}" for i in range(1000)])
    # One call per chunk started: the 4 chunks start one per free token, side by side.
    tokens = int(clf.limiter_.total_tokens)
    assert [len(batch) for batch in log.batches] == [256] * min(tokens, 4)


async def test_a_lone_bad_text_is_found_in_logarithmic_calls() -> None:
    """One bad text among 64 callers is found by halving: about 2 log2(64) calls."""
    clf, log, gate = await recording()
    gate.close()
    outcomes: dict[int, Any] = {}

    async def call(i: int) -> None:
        try:
            outcomes[i] = await clf.classify("BOOM" if i == 37 else f"ham {i}")
        except ValueError as exc:
            outcomes[i] = exc

    await behind_a_held_batch(gate, partial(call, 0), [partial(call, i) for i in range(1, 64)])
    assert isinstance(outcomes[37], ValueError)
    assert all(outcomes[i].label == "ham" for i in set(range(64)) - {37})
    assert len(log.batches) <= 1 + 1 + 2 * 6


async def test_each_caller_gets_its_own_exception_object() -> None:
    """An exception shared by a whole batch reaches each caller as its own copy,
    chained to the original, so tracebacks do not pile up on one object."""
    gate = Gate()
    clf = AsyncClassifier(SharedErrorClassifier(gate=gate, block=["predict_proba"]))
    caught = await failures_of_one_batch(clf, gate, 8, ValueError)
    assert len(caught) == 8
    assert len({id(exc) for exc in caught}) == 8
    for exc in caught:
        assert type(exc) is ValueError
        assert str(exc) == "the model server is down"
        assert exc.__cause__ is SHARED_ERROR


async def test_nan_scores_fail_their_text_only(make: Classifiers) -> None:
    """A text the estimator scores NaN fails alone; nobody receives a NaN score."""
    clf = await make(NaNClassifier()).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(AsyncClfError, match="NaN"):
        await clf.classify("spam NAN")
    with pytest.raises(AsyncClfError, match="NaN"):
        await clf.rank(["spam", "NAN"], "spam")
    async with clf.stream(["spam", "NAN", "eggs"], on_error="yield") as results:
        got = [p async for p in results]
    assert [type(p) for p in got] == [Prediction, FailedPrediction, Prediction]
    assert [p.label for p in got if isinstance(p, Prediction)] == ["spam", "eggs"]
    assert all(not np.isnan(p.score) for p in got if isinstance(p, Prediction))
    assert clf.statistics().failed_items == 3  # classify, rank and the stream's text


async def test_statistics_count_a_cancelled_chunked_call() -> None:
    """A call split into chunks and cancelled mid-run still counts the chunk that ran."""
    clf, _, gate = await recording(max_batch_size=2, limiter=anyio.CapacityLimiter(1))
    gate.close()
    with anyio.fail_after(DEADLINE):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(clf.predict_proba, [f"spam {i}" for i in range(6)])
                await gate.wait_entered()
                scope.cancel()
        gate.release.set()
        await settle(clf)
    stats = clf.statistics()
    assert (stats.batches, stats.items) == (1, 2)
    await clf.predict_proba([f"ham {i}" for i in range(6)])
    stats = clf.statistics()
    assert (stats.batches, stats.items) == (4, 8)


async def test_a_woken_leader_cancelled_before_it_runs_hands_leadership_on() -> None:
    """A request woken to lead and cancelled (by a cancel scope) before it runs never
    leaves the lane leaderless. anyio delivers this cancellation once the task leads,
    so _lead's finally hands over; test_asyncio_interop pins the except branch of
    Batcher.wait, where a native Task.cancel() lands instead."""
    clf, log, gate = await recording(max_batch_size=1, limiter=anyio.CapacityLimiter(1))
    gate.close()
    scopes = {name: anyio.CancelScope() for name in ("a", "b", "c")}
    results: dict[str, Prediction] = {}
    batcher = clf._batcher
    original = batcher._hand_on
    woken: list[str] = []

    def wake_and_cancel(lane: Any) -> None:
        # Cancel "b" in the very step that wakes it to lead, before it can run.
        original(lane)
        if not woken and lane.queue and lane.queue[0].requests[0].texts == ["b"]:
            woken.append("b")
            scopes["b"].cancel()

    batcher._hand_on = wake_and_cancel  # type: ignore[method-assign]

    async def call(name: str) -> None:
        with scopes[name]:
            results[name] = await clf.classify(name)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            for name in ("a", "b", "c"):
                tasks.start_soon(call, name)
                await wait_all_tasks_blocked()
            gate.release.set()
    assert woken == ["b"]
    assert set(results) == {"a", "c"}
    assert "b" not in log.seen


# -- found by hostile testing of the above ---------------------------------------------


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
async def test_an_estimator_raising_a_base_exception_fails_only_its_batch(
    interrupt: type[BaseException],
) -> None:
    """KeyboardInterrupt or SystemExit raised inside the estimator (in a worker thread)
    reaches every caller of the batch as an AsyncClfError caused by it; nobody hangs
    and the token comes back."""
    gate = Gate()
    clf = AsyncClassifier(
        InterruptingClassifier(gate=gate, block=["predict_proba"], interrupt=interrupt)
    )
    caught = await failures_of_one_batch(clf, gate, 4, AsyncClfError)
    assert len(caught) == 4

    def causes(exc: BaseException | None) -> list[type[BaseException]]:
        return [] if exc is None else [type(exc), *causes(exc.__cause__)]

    assert all(interrupt in causes(exc) for exc in caught)
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


async def test_a_copied_exception_keeps_its_message_and_attributes(make: Classifiers) -> None:
    """An exception whose __init__ takes other arguments than its message reaches the
    caller with the same message and attributes (copy.copy would garble it)."""
    clf = await make(CodedErrorClassifier()).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(CodedError) as caught:
        await clf.classify("spam")
    assert str(caught.value) == "the model server returned HTTP 503"
    assert caught.value.code == 503
    cause = caught.value.__cause__
    if make.in_process:
        assert isinstance(cause, CodedError)
    else:  # raised in another process: its traceback there, as text
        assert isinstance(cause, WorkerTraceback)
        assert "in predict_proba" in str(cause)
        assert "CodedError: the model server returned HTTP 503" in str(cause)


async def one_batch_of(clf: AsyncClassifier, texts: list[str]) -> dict[str, Any]:
    """Classify ``texts`` concurrently, one caller each (with ``max_batch_size`` as many
    and a long ``max_latency`` they share one batch): each text's label or exception."""
    outcomes: dict[str, Any] = {}

    async def call(text: str) -> None:
        try:
            outcomes[text] = (await clf.classify(text)).label
        except Exception as exc:
            outcomes[text] = exc

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            for text in texts:
                tasks.start_soon(call, text)
    return outcomes


@pytest.mark.parametrize("kind", ["badstr", "loadfails", "oserror", "coded"])
@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
async def test_an_awkward_exception_fails_only_its_caller(make: Classifiers, kind: str) -> None:
    """Exceptions hard to send between processes (str() raises; unpickling fails; a
    built-in one keeping attributes outside args; a message built in __init__) fail
    only the caller whose text raised them, whole where they can cross: same type,
    message and attributes; else as an AsyncClfError naming them."""
    clf = await make(TroubleClassifier(kind), max_batch_size=3, max_latency=10).fit(
        TRAIN_X, TRAIN_Y
    )
    outcomes = await one_batch_of(clf, ["spam spam", "boom", "eggs"])
    assert (outcomes["spam spam"], outcomes["eggs"]) == ("spam", "eggs")
    failure: Any = outcomes["boom"]
    expected = trouble(kind)
    if kind == "loadfails" and not make.in_process:
        assert type(failure) is AsyncClfError
        assert "tests.fakes.LoadFailsError: load fails" in str(failure)
        return
    assert failure.__class__ is expected.__class__
    assert failure.args == expected.args
    got: Any = failure  # its attributes, whatever the type check narrowed it to
    if kind == "oserror":
        assert (got.errno, got.filename) == (2, "/nope/x.bin")
    if kind == "coded":
        assert str(got) == "the model server returned HTTP 503"
        assert got.code == 503


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
async def test_an_interrupt_in_the_estimator_fails_its_batch_not_the_program(
    make: Classifiers, interrupt: type[BaseException]
) -> None:
    """KeyboardInterrupt or SystemExit raised by the estimator fails the batch with an
    AsyncClfError, in a thread or a worker process alike: it neither ends the program
    nor leaves a dead worker behind for the next call."""
    clf = await make(InterruptingClassifier(interrupt=interrupt)).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(AsyncClfError, match="interrupted by"):
        await clf.classify("spam")
    await clf.set_params(estimator=KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    assert (await clf.classify("spam")).label == "spam"
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


async def test_an_exception_that_cannot_be_pickled_fails_only_its_caller(
    make: Classifiers,
) -> None:
    """An estimator exception holding a lock fails only the caller whose text raised
    it. Where it cannot cross back from a worker process, that caller gets an
    AsyncClfError naming its type and message instead; the rest of the batch its rows."""
    clf = await make(LockedErrorClassifier(), max_batch_size=3, max_latency=10).fit(
        TRAIN_X, TRAIN_Y
    )
    outcomes = await one_batch_of(clf, ["spam spam", "boom", "eggs"])
    assert outcomes["spam spam"] == "spam"
    assert outcomes["eggs"] == "eggs"
    failure = outcomes["boom"]
    if make.in_process:
        assert isinstance(failure, LockedError)
        assert str(failure) == "boom found"
    else:
        assert type(failure) is AsyncClfError
        assert str(failure).startswith("The estimator raised tests.fakes.LockedError: boom found")
    assert clf.statistics().failed_items == 1


async def test_lowering_max_latency_ends_the_wait_of_the_batch_forming() -> None:
    """A leader waiting for company (callers arrived together, a worker is free) for a
    long max_latency forms its batch at once when max_latency is lowered, instead of
    waiting the old latency."""
    clf, log, _ = await recording(max_latency=NEVER)
    results: list[Prediction] = []

    async def call(text: str) -> None:
        results.append(await clf.classify(text))

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, "spam")
            tasks.start_soon(call, "ham")
            await wait_all_tasks_blocked()
            assert log.batches == []  # waiting for more company
            clf.set_params(max_latency=0)
    assert sorted(p.label for p in results) == ["ham", "spam"]
    assert [sorted(batch) for batch in log.batches] == [["ham", "spam"]]


async def test_lowering_max_batch_size_splits_a_batch_already_formed() -> None:
    """Callers queued together before max_batch_size was lowered run in batches of the
    new size, in arrival order, each with its own answer."""
    clf, log, gate = await recording(max_batch_size=8, limiter=anyio.CapacityLimiter(1))
    gate.close()
    results: dict[int, Prediction] = {}

    async def call(i: int) -> None:
        results[i] = await clf.classify(f"spam {i}" if i % 2 else f"ham {i}")

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            for i in range(5):
                tasks.start_soon(call, i)
                await wait_all_tasks_blocked()  # arrivals in this order
            clf.set_params(max_batch_size=2)
            gate.release.set()
    assert log.batches == [["first"], ["ham 0", "spam 1"], ["ham 2", "spam 3"], ["ham 4"]]
    assert sorted(results) == list(range(5))
    for prediction in results.values():
        assert (prediction.label, prediction.score) == expected(clf, prediction.text)
    assert clf.statistics().queue_depth == 0


async def test_a_leader_split_from_the_batch_it_leads_then_leads_its_own() -> None:
    """A caller leading a batch whose first request has no waiter yet (a stream's, say)
    runs that request alone when max_batch_size is lowered, then its own."""
    clf, log, gate = await recording(max_batch_size=8, limiter=anyio.CapacityLimiter(1))
    gate.close()
    batcher = clf._batcher
    key = batch_key("scores")
    results: list[Prediction] = []

    async def call() -> None:
        results.append(await clf.classify("ham x"))

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            await batcher.reserve(1)
            waiterless = batcher.enqueue(key, ["spam s"], per_item=True)
            tasks.start_soon(call)  # joins the batch and leads it
            await wait_all_tasks_blocked()
            clf.set_params(max_batch_size=1)
            gate.release.set()
            await batcher.wait(waiterless)
    assert log.batches == [["first"], ["spam s"], ["ham x"]]
    assert results[0].label == "ham"
    assert waiterless.outcome is not None
    np.testing.assert_allclose(waiterless.outcome.rows(), clf.estimator_.predict_proba(["spam s"]))
    assert clf.statistics().queue_depth == 0


@pytest.mark.parametrize("shape", ["flat", "column", "none"])
async def test_scores_of_the_wrong_shape_fail_instead_of_misleading(
    make: Classifiers, shape: str
) -> None:
    """predict_proba rows without one column per class (or no rows at all) fail the
    call with AsyncClfError, and each text of a stream on its own."""
    clf = await make(MisshapenClassifier(shape)).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(AsyncClfError, match=r"column per class|instead of one row"):
        await clf.classify("spam")
    async with clf.stream(["spam", "eggs"], on_error="yield") as results:
        got = [p async for p in results]
    assert [type(p) for p in got] == [FailedPrediction, FailedPrediction]


async def test_infinite_scores_fail_their_text_too(make: Classifiers) -> None:
    """A text scored infinite fails alone, like a NaN one."""
    clf = await make(NaNClassifier(value=np.inf)).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(AsyncClfError, match="NaN or infinite"):
        await clf.classify("NAN")
    assert (await clf.classify("spam")).label == "spam"


@pytest.mark.parametrize("backend_pair", [("asyncio", "asyncio"), ("trio", "trio")])
def test_a_batch_outliving_its_event_loop_leaks_nothing_into_the_next(
    backend_pair: tuple[str, str],
) -> None:
    """A batch still running when its event loop ends gives its token back; the next
    run of the same backend serves with every token free."""
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=["predict_proba"]))

    async def first() -> None:
        await clf.fit(TRAIN_X, TRAIN_Y)
        gate.close()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "spam")
            await gate.wait_entered()  # held in the gate: the run ends around it
            tasks.cancel_scope.cancel()

    async def second() -> tuple[int, str]:
        with anyio.fail_after(DEADLINE):
            label = (await clf.classify("eggs")).label
            await settle(clf)
        return clf.limiter_.statistics().borrowed_tokens, label

    for _ in range(3):
        gate.release.clear()
        anyio.run(first, backend=backend_pair[0])
        gate.release.set()
        assert anyio.run(second, backend=backend_pair[1]) == (0, "eggs")


# -- streams and large calls use every worker (issue 8, part 5) ------------------------


class Turnstile(Gate):
    """A Gate that holds each batch, known by its first text, until the test lets that
    batch go, and counts the batches held at once."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()
        self.held: list[str] = []
        """First texts of the batches held now."""
        self.entered_batches: list[str] = []
        """First texts of every batch that reached the estimator, in order of arrival."""
        self.most = 0
        """The most batches held at once."""
        self._let_go: set[str] = set()
        self._open = False

    def hold(self, texts: Sequence[str]) -> None:
        """In the worker: wait until the test lets this batch go (or opens the gate)."""
        first = texts[0]
        with self.changed:
            self.entered_batches.append(first)
            self.held.append(first)
            self.most = max(self.most, len(self.held))
            self.changed.notify_all()
            released = self.changed.wait_for(lambda: self._open or first in self._let_go, DEADLINE)
            self.held.remove(first)
        if not released:
            msg = "the test never let the batch go"
            raise RuntimeError(msg)

    def let_go(self, *firsts: str) -> None:
        """Let the batches that start with ``firsts`` go on (now or when they arrive)."""
        with self.changed:
            self._let_go.update(firsts)
            self.changed.notify_all()

    def open(self) -> None:
        """Let every batch go on, now and from now on."""
        with self.changed:
            self._open = True
            self.changed.notify_all()

    async def wait_held(self, n: int) -> None:
        """Wait, off the event loop, until ``n`` batches are held at once."""

        def wait() -> bool:
            with self.changed:
                return self.changed.wait_for(lambda: len(self.held) >= n, DEADLINE)

        assert await anyio.to_thread.run_sync(wait), f"{n} batches were never held at once"


class HeldClassifier(RecordingClassifier):
    """A RecordingClassifier whose predict_proba batches wait in its Turnstile first."""

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        if isinstance(self.gate, Turnstile):
            self.gate.hold(X)
        return super().predict_proba(X)


async def turnstiled(tokens: int, **kwargs: Any) -> tuple[AsyncClassifier, Turnstile, CallLog]:
    """A fitted classifier with ``tokens`` limiter tokens whose batches wait in a Turnstile."""
    turnstile, log = Turnstile(), CallLog()
    clf = AsyncClassifier(
        HeldClassifier(gate=turnstile, log=log), limiter=anyio.CapacityLimiter(tokens), **kwargs
    )
    await clf.fit(TRAIN_X, TRAIN_Y)
    return clf, turnstile, log


def keyword_rows(texts: list[str]) -> NDArray[np.float64]:
    """The rows a plain KeywordClassifier gives ``texts``, computed apart from asyncclf."""
    rows: NDArray[np.float64] = KeywordClassifier().fit(TRAIN_X, TRAIN_Y).predict_proba(texts)
    return rows


async def raising(call: Coroutine[Any, Any, Any], into: list[Exception]) -> None:
    """Await ``call`` and keep the ValueError it raises (the estimator's "cannot score")."""
    try:
        await call
    except ValueError as exc:
        into.append(exc)


async def test_a_large_call_runs_one_chunk_per_token_at_once() -> None:
    """A 10-chunk predict_proba with 3 tokens has 3 chunks in the estimator at once (no
    4th waiting for a token) and returns the estimator's rows for all texts, in order."""
    clf, turnstile, log = await turnstiled(3, max_batch_size=2)
    texts = [("spam ", "eggs ", "ham ")[i % 3] * (1 + i % 2) + str(i) for i in range(20)]
    result: list[NDArray[np.float64]] = []

    async def call() -> None:
        result.append(await clf.predict_proba(texts))

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            await turnstile.wait_held(3)
            await wait_all_tasks_blocked()
            assert sorted(turnstile.held) == sorted(texts[0:6:2])
            assert clf.limiter_.statistics().tasks_waiting == 0
            turnstile.open()
    assert turnstile.most == 3
    np.testing.assert_array_equal(result[0], keyword_rows(texts))
    assert sorted(log.batches) == sorted(texts[i : i + 2] for i in range(0, 20, 2))
    assert clf.statistics().batches == 10


async def test_a_failing_chunk_raises_its_error_and_no_further_chunk_starts() -> None:
    """When the 2nd of 10 chunks fails while the 1st and 3rd run, the call raises the
    2nd chunk's exception and no chunk after the running ones ever starts."""
    clf, turnstile, _ = await turnstiled(3, max_batch_size=2)
    texts = [f"ham {i}" for i in range(20)]
    texts[3] = "BOOM 3"
    caught: list[Exception] = []
    probe = object()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(raising, clf.predict_proba(texts), caught)
            await turnstile.wait_held(3)
            turnstile.let_go(texts[2])
            # The failed chunk's token comes back once its outcome is in.
            await clf.limiter_.acquire_on_behalf_of(probe)
            clf.limiter_.release_on_behalf_of(probe)
            await wait_all_tasks_blocked()
            turnstile.open()
    assert [str(exc) for exc in caught] == ["cannot score 'BOOM 3'"]
    assert sorted(turnstile.entered_batches) == sorted(texts[0:6:2])
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


async def test_of_several_failing_chunks_the_earliest_one_is_raised() -> None:
    """When the 3rd chunk fails before the 2nd, the call raises the 2nd chunk's error."""
    clf, turnstile, _ = await turnstiled(3, max_batch_size=2)
    texts = [f"ham {i}" for i in range(20)]
    texts[3], texts[5] = "BOOM 3", "BOOM 5"
    caught: list[Exception] = []
    probe = object()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(raising, clf.predict_proba(texts), caught)
            await turnstile.wait_held(3)
            turnstile.let_go(texts[4])  # the 3rd chunk fails first
            await clf.limiter_.acquire_on_behalf_of(probe)
            clf.limiter_.release_on_behalf_of(probe)
            await wait_all_tasks_blocked()
            turnstile.open()
    assert [str(exc) for exc in caught] == ["cannot score 'BOOM 3'"]


async def test_a_failed_chunk_whose_token_goes_to_the_next_chunk_starts_nothing() -> None:
    """A chunk handed the token of a chunk that just failed gives it back unused: the
    failure is seen from the outcome, before the failed chunk's task wakes up."""
    clf, turnstile, log = await turnstiled(2, max_batch_size=2)
    turnstile.open()
    texts = ["BOOM 0", "ham 1", "ham 2", "ham 3", "ham 4", "ham 5"]
    probe = object()
    await clf.limiter_.acquire_on_behalf_of(probe)  # one token of two is busy elsewhere
    try:
        with anyio.fail_after(DEADLINE), pytest.raises(ValueError, match="cannot score 'BOOM 0'"):
            await clf.predict_proba(texts)
    finally:
        clf.limiter_.release_on_behalf_of(probe)
    assert log.batches == [texts[:2]]
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


async def test_a_failed_chunk_ends_the_call_without_waiting_for_a_token() -> None:
    """A chunk still waiting for a token when an earlier one fails stops waiting: the
    call raises while others hold every token."""
    clf, turnstile, log = await turnstiled(2, max_batch_size=2)
    texts = ["BOOM 0", "ham 1", "ham 2", "ham 3", "ham 4", "ham 5", "ham 6", "ham 7"]
    limiter = clf.limiter_
    caught: list[Exception] = []
    got: dict[str, anyio.Event] = {"p1": anyio.Event(), "p2": anyio.Event()}
    returned, give_back = anyio.Event(), anyio.Event()

    async def hold_a_token(name: str) -> None:
        await limiter.acquire_on_behalf_of(name)
        got[name].set()
        await give_back.wait()
        limiter.release_on_behalf_of(name)

    async def call() -> None:
        await raising(clf.predict_proba(texts), caught)
        returned.set()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            await turnstile.wait_held(2)  # chunks 1 and 2 run
            tasks.start_soon(hold_a_token, "p1")
            await wait_all_tasks_blocked()
            tasks.start_soon(hold_a_token, "p2")
            await wait_all_tasks_blocked()
            turnstile.let_go(texts[2])  # chunk 2 ends: p1 gets its token
            await got["p1"].wait()
            await wait_all_tasks_blocked()
            # Chunk 3 now waits for a token behind p2.
            assert limiter.statistics().tasks_waiting == 2
            turnstile.let_go(texts[0])  # chunk 1 fails: p2 gets its token
            await returned.wait()
            assert set(limiter.statistics().borrowers) == {"p1", "p2"}  # none was free
            give_back.set()
    assert [str(exc) for exc in caught] == ["cannot score 'BOOM 0'"]
    assert sorted(turnstile.entered_batches) == ["BOOM 0", "ham 2"]
    assert log.batches == [texts[2:4], texts[0:2]]
    turnstile.open()


async def test_cancelling_a_large_call_returns_while_its_chunks_run() -> None:
    """Cancelling a caller whose chunks run side by side returns at once; the chunks
    finish in their threads and give every token back."""
    clf, turnstile, _ = await turnstiled(3, max_batch_size=2)
    with anyio.fail_after(DEADLINE):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(clf.predict_proba, [f"spam {i}" for i in range(20)])
                await turnstile.wait_held(3)
                scope.cancel()
        assert scope.cancelled_caught
        assert len(turnstile.held) == 3  # returned with the chunks still running
        turnstile.open()
        await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0
    assert (clf.statistics().batches, clf.statistics().items) == (3, 6)
    assert (await clf.classify("eggs")).label == "eggs"


async def test_task_cancel_of_a_large_call_returns_while_its_chunks_run(
    anyio_backend: str,
) -> None:
    """asyncio's Task.cancel() on a caller whose chunks run side by side returns before
    they end; they finish in their threads and give every token back."""
    if anyio_backend != "asyncio":
        pytest.skip("native asyncio cancellation")
    import asyncio

    clf, turnstile, _ = await turnstiled(3, max_batch_size=2)
    task = asyncio.create_task(clf.predict_proba([f"spam {i}" for i in range(20)]))
    await turnstile.wait_held(3)
    task.cancel()
    finished, _ = await asyncio.wait({task}, timeout=DEADLINE)
    assert task in finished
    assert task.cancelled()
    assert len(turnstile.held) == 3
    turnstile.open()
    with anyio.fail_after(DEADLINE):
        await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0
    assert clf.statistics().queue_depth == 0


@pytest.mark.parametrize("backend_pair", [("asyncio", "asyncio"), ("trio", "trio")])
def test_a_given_limiter_gets_back_the_token_of_a_batch_that_outlived_its_loop(
    backend_pair: tuple[str, str],
) -> None:
    """With a limiter passed in (used by successive runs), a batch still running when its
    loop ends returns its token in a later run, on that run's loop: no crash, no
    token lost for good."""
    limiter = anyio.CapacityLimiter(2)
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=["predict_proba"]), limiter=limiter)

    async def first() -> None:
        gate.release.set()
        await clf.fit(TRAIN_X, TRAIN_Y)
        gate.close()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "spam")
            await gate.wait_entered()  # held in the gate: the run ends around it
            tasks.cancel_scope.cancel()

    async def later() -> tuple[int, str]:
        with anyio.fail_after(DEADLINE):
            label = (await clf.classify("eggs")).label
            await settle(clf)
        return limiter.statistics().borrowed_tokens, label

    from asyncclf._executors import base as _executors

    for backend in backend_pair:
        anyio.run(first, backend=backend)
        gate.release.set()
        # Let the held batch's thread end and leave its token for the next loop (the
        # next acquire takes it back; a test cannot await a thread of a dead loop).
        deadline = time.monotonic() + DEADLINE
        while not _executors._ORPHANS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _executors._ORPHANS
        assert anyio.run(later, backend=backend) == (0, "eggs")


async def test_classifiers_dropped_during_a_run_leave_nothing_in_it() -> None:
    """The per-run limiter and lock of a classifier go with it, not with the run."""
    import gc

    from asyncclf._executors import base as _executors

    # The run may be shared with the module's earlier tests: count from here.
    await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    gc.collect()
    before = len(_executors._PER_RUN.get())
    for _ in range(50):
        clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
        await clf.classify("spam")
    del clf
    gc.collect()
    assert len(_executors._PER_RUN.get()) <= before + 3


async def test_statistics_give_percentiles_over_recent_requests() -> None:
    """statistics() has wait, run and end-to-end latency percentiles, over a bounded
    window of recent requests (and batches): ordered, consistent, and 0.0 before any."""
    clf, _, _ = await recording()
    empty = clf.statistics()
    assert (empty.latency_p50, empty.wait_p99, empty.run_p50) == (0.0, 0.0, 0.0)
    async with anyio.create_task_group() as tasks:
        for i in range(RECENT + 100):
            tasks.start_soon(clf.classify, f"spam {i}")
    stats = clf.statistics()
    assert 0 < stats.latency_p50 <= stats.latency_p99
    assert 0 <= stats.wait_p50 <= stats.wait_p99 <= stats.latency_p99
    assert 0 < stats.run_p50 <= stats.run_p99 <= stats.max_run
    assert len(clf._batcher._recent_latencies.values) == RECENT


# -- tests that mutation testing found missing (issue 20) --------------------------------


async def test_callers_answered_together_after_a_failure_get_exactly_their_own_rows() -> None:
    """When a failure splits a batch, callers of several texts whose requests one retried
    call answered together each get exactly their own rows, none of a neighbour's."""
    clf, log, gate = await recording(limiter=anyio.CapacityLimiter(1))
    gate.close()
    calls = [["BOOM"], ["ham", "spam spam"], ["eggs", "ham ham", "spam"], ["spam eggs", "eggs"]]
    got: dict[int, Any] = {}

    async def call(i: int) -> None:
        try:
            got[i] = await clf.predict_proba(calls[i])
        except ValueError as exc:
            got[i] = exc

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.predict_proba, ["held"])
            await gate.wait_entered()
            for i in range(len(calls)):  # one at a time: the next batch holds them in order
                tasks.start_soon(call, i)
                await wait_all_tasks_blocked()
            gate.release.set()
    # The batch [BOOM, 1, 2, 3] fails and its halves are retried: [BOOM, 1] fails
    # again, and one call answers 2 and 3 together, rows to be cut between them.
    assert log.batches[2:4] == [calls[0] + calls[1], calls[2] + calls[3]]
    assert isinstance(got[0], ValueError)
    for i in (1, 2, 3):
        np.testing.assert_array_equal(got[i], clf.estimator_.predict_proba(calls[i]))


async def test_a_batch_failing_as_a_whole_fails_each_text_of_a_stream() -> None:
    """A batch that fails as a whole (the estimator interrupted) gives a stream with
    on_error="yield" one failure per text, every text named at its own index."""
    clf = await AsyncClassifier(InterruptingClassifier(interrupt=SystemExit)).fit(TRAIN_X, TRAIN_Y)
    texts = [f"text {i}" for i in range(7)]
    with anyio.fail_after(DEADLINE):
        async with clf.stream(texts, on_error="yield") as results:
            got = [p async for p in results]
    assert all(isinstance(p, FailedPrediction) for p in got)
    assert [(p.index, p.text) for p in got] == list(enumerate(texts))


async def test_a_lowered_max_latency_applies_to_the_batches_formed_afterwards() -> None:
    """Callers arriving together after max_latency was lowered to 0 run at once, without
    waiting the old latency for company."""
    clf, log, gate = await recording(max_latency=60)
    clf.set_params(max_latency=0)
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "spam")
            tasks.start_soon(clf.classify, "ham")
            await gate.wait_entered()  # a batch runs, not waiting 60 s for company
            gate.release.set()
    assert sorted(log.seen) == ["ham", "spam"]


async def test_other_settings_changed_leave_the_wait_of_the_batch_forming_alone() -> None:
    """Changing settings that do not shorten the wait (max_latency set to its own value,
    max_queue) does not end the wait for company of the batch forming."""
    clf, log, _ = await recording(max_latency=60)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "spam")
            tasks.start_soon(clf.classify, "ham")
            await wait_all_tasks_blocked()
            clf.set_params(max_latency=60, max_queue=5000)
            await wait_all_tasks_blocked()
            assert log.batches == []  # still waiting for company
            clf.set_params(max_latency=0)
    assert [sorted(batch) for batch in log.batches] == [["ham", "spam"]]


async def test_lowering_max_batch_size_to_the_size_of_the_batch_forming_runs_it() -> None:
    """A batch waiting for company that max_batch_size, lowered to its size, makes full
    runs at once instead of waiting out max_latency."""
    clf, log, _ = await recording(max_latency=60, max_batch_size=10)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "spam")
            tasks.start_soon(clf.classify, "ham")
            await wait_all_tasks_blocked()
            assert log.batches == []  # waiting for company
            clf.set_params(max_batch_size=2)
    assert [sorted(batch) for batch in log.batches] == [["ham", "spam"]]


async def test_a_stream_text_that_exactly_fills_the_queue_is_queued_at_once() -> None:
    """A stream's text that brings the queue exactly to max_queue is queued without
    waiting for room."""
    clf, _, gate = await recording(max_batch_size=2, max_queue=2, limiter=anyio.CapacityLimiter(1))
    gate.close()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "running")
            await gate.wait_entered()
            tasks.start_soon(clf.classify, "queued")
            await wait_all_tasks_blocked()

            async def stream() -> None:
                async with clf.stream(["streamed"]) as results:
                    assert [p.text async for p in results] == ["streamed"]

            tasks.start_soon(stream)
            await wait_all_tasks_blocked()
            assert clf.statistics().queue_depth == 2
            gate.release.set()


async def test_a_large_call_on_one_token_lets_a_caller_in_between_its_chunks() -> None:
    """A call run in chunks waits for a token per chunk, in turn: on a single token, a
    caller that arrived while the first chunk ran is served before the second."""
    clf, log, gate = await recording(max_batch_size=2, limiter=anyio.CapacityLimiter(1))
    gate.close()
    texts = ["a", "b", "c", "d", "e", "f"]
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.predict_proba, texts)
            await gate.wait_entered()
            tasks.start_soon(clf.classify, "spam")
            await wait_all_tasks_blocked()
            gate.release.set()
    assert log.batches == [["a", "b"], ["spam"], ["c", "d"], ["e", "f"]]


async def test_a_batch_split_by_a_lowered_max_batch_size_counts_as_its_parts() -> None:
    """A batch formed before max_batch_size was lowered runs as batches of the new size,
    in arrival order: statistics count those batches, never one larger than the bound."""
    clf, log, gate = await recording(max_batch_size=8, limiter=anyio.CapacityLimiter(1))
    gate.close()
    texts = [f"spam {i}" if i % 2 else f"ham {i}" for i in range(5)]
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            for text in texts:
                tasks.start_soon(clf.classify, text)
                await wait_all_tasks_blocked()  # arrivals in this order
            clf.set_params(max_batch_size=2)
            gate.release.set()
    sizes = [1, 2, 2, 1]
    assert log.batches == [["first"], texts[0:2], texts[2:4], texts[4:]]
    stats = clf.statistics()
    assert (stats.batches, stats.items, stats.max_batch_size_seen) == (4, 6, 2)
    assert stats.mean_batch_size == pytest.approx(sum(sizes) / len(sizes))


async def test_a_caller_that_fills_the_batch_forming_ends_its_wait_for_company() -> None:
    """A batch waiting for company runs as soon as a later caller makes it full, instead
    of waiting out max_latency."""
    clf, log, _ = await recording(max_latency=60, max_batch_size=3)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "spam")
            tasks.start_soon(clf.classify, "ham")
            await wait_all_tasks_blocked()
            assert log.batches == []  # waiting for company
            tasks.start_soon(clf.classify, "eggs")
    assert [sorted(batch) for batch in log.batches] == [["eggs", "ham", "spam"]]


async def test_a_caller_waiting_for_room_is_let_in_when_max_queue_drops_below_its_size() -> None:
    """A caller waiting for room whose texts outnumber a max_queue lowered meanwhile gets
    in once the queue is empty, instead of waiting for room that can never come."""
    clf, _, gate = await recording(
        max_batch_size=5, max_queue=5, overload="wait", limiter=anyio.CapacityLimiter(1)
    )
    gate.close()
    texts = [f"spam {i}" for i in range(5)]
    results: list[Any] = []

    async def call() -> None:
        results.append(await clf.predict_proba(texts))

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "running")
            await gate.wait_entered()
            tasks.start_soon(call)  # fills the queue
            await wait_all_tasks_blocked()
            tasks.start_soon(call)  # waits for room
            await wait_all_tasks_blocked()
            clf.set_params(max_batch_size=2, max_queue=2)
            gate.release.set()
    assert len(results) == 2
    for rows in results:
        np.testing.assert_array_equal(rows, clf.estimator_.predict_proba(texts))


async def test_two_callers_over_a_lowered_max_batch_size_run_in_batches_of_their_own() -> None:
    """Two callers queued together, whose texts together outgrow a max_batch_size lowered
    meanwhile, run in a batch each: no batch counted is larger than the new bound."""
    clf, log, gate = await recording(max_batch_size=8, limiter=anyio.CapacityLimiter(1))
    gate.close()
    calls = [["ham 0", "spam 1"], ["eggs 2", "ham 3"]]
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            for texts in calls:
                tasks.start_soon(clf.predict_proba, texts)
                await wait_all_tasks_blocked()  # arrivals in this order
            clf.set_params(max_batch_size=2)
            gate.release.set()
    assert log.batches == [["first"], *calls]
    assert clf.statistics().max_batch_size_seen == 2


async def test_latency_percentiles_are_no_longer_than_the_calls_took() -> None:
    """Each request's end-to-end latency, as statistics() reports it, is at most the time
    measured around all the calls."""
    clf, _, _ = await recording()
    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for i in range(20):
            tasks.start_soon(clf.classify, f"spam {i}")
    elapsed = time.perf_counter() - started
    stats = clf.statistics()
    assert 0 < stats.latency_p50 <= stats.latency_p99 <= elapsed
