"""Coalescing, splitting, error isolation, cancellation and overload of the batcher."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint
from hypothesis import given
from hypothesis import strategies as st

from asyncclf import AsyncClassifier, OverloadedError, Prediction

from .fakes import TRAIN_X, TRAIN_Y, CallLog, Gate, RecordingClassifier

pytestmark = pytest.mark.anyio


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
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            await gate.wait_entered()
            for call in queued:
                tasks.start_soon(call)
            await wait_all_tasks_blocked()
            gate.release.set()


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
    assert [len(b) for b in log.batches] == [8, 8, 8, 6]
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
    with anyio.fail_after(10):
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


async def test_leader_cancelled_while_its_batch_runs_still_serves_the_others() -> None:
    """Cancelling the caller that runs a batch loses only its own result."""
    clf, log, gate = await recording(max_latency=0.05)
    gate.close()
    results: dict[str, Prediction] = {}
    leader_scope = anyio.CancelScope()

    async def call(text: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            results[text] = await clf.classify(text)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, "leader", leader_scope)
            await wait_all_tasks_blocked()
            for i in range(5):
                tasks.start_soon(call, f"spam {i}")
            await gate.wait_entered()
            leader_scope.cancel()
            await wait_all_tasks_blocked()
            gate.release.set()
    assert len(log.batches) == 1
    assert log.batches[0][0] == "leader"
    assert sorted(log.batches[0][1:]) == [f"spam {i}" for i in range(5)]
    assert leader_scope.cancelled_caught
    assert "leader" not in results
    for i in range(5):
        assert results[f"spam {i}"].label == "spam"
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
    n_callers: int, cancels: list[tuple[int, int]], max_batch_size: int
) -> None:
    """Cancel random callers after random numbers of checkpoints: every other caller
    gets its own correct result, nothing hangs, nothing leaks."""
    clf = AsyncClassifier(RecordingClassifier(), max_batch_size=max_batch_size, max_latency=0.001)
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

    with anyio.fail_after(20):
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
    assert clf.limiter_.statistics().borrowed_tokens == 0
    assert (await clf.classify("eggs eggs")).label == "eggs"


async def test_full_queue_raises_overloaded_or_waits() -> None:
    """With overload='raise' a full queue refuses at once; with 'wait' callers queue up."""
    clf, _, gate = await recording(
        max_batch_size=2, max_queue=2, overload="raise", limiter=anyio.CapacityLimiter(1)
    )
    gate.close()
    with anyio.fail_after(10):
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
            tasks.start_soon(clf.classify, "waits for room")
            await wait_all_tasks_blocked()
            assert clf.statistics().queue_depth == 2
            gate.release.set()
    assert clf.statistics().queue_depth == 0
    assert clf.statistics().items == 4


@given(st.lists(st.text(alphabet="hamspegBOM ", max_size=12), max_size=30))
async def test_results_are_identical_with_batching_on_or_off(texts: list[str]) -> None:
    """Batched and one-by-one classifiers return the same predictions and errors."""
    batched = await AsyncClassifier(RecordingClassifier(), max_batch_size=7).fit(TRAIN_X, TRAIN_Y)
    single = await AsyncClassifier(RecordingClassifier(), max_batch_size=1, max_latency=0).fit(
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

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "first")
            await gate.wait_entered()
            tasks.start_soon(rank)
            tasks.start_soon(classify)
            await wait_all_tasks_blocked()
            # What a refit finishing now does: swap in a model whose classes differ.
            new = RecordingClassifier().fit(["spam", "eggs", "zebra"], ["spam", "eggs", "zebra"])
            clf._swap(new)
            gate.release.set()
    assert list(clf.classes_) == ["eggs", "spam", "zebra"]
    # The old model would order these [1, 0, 2]; the new model's zebra column, [2, 1, 0].
    assert [r.index for r in results["rank"]] == [1, 2, 0]
    expected = new.predict_proba(["spam", "ham ham", "eggs eggs"])[:, 1]
    assert [r.score for r in results["rank"]] == pytest.approx(list(expected))
    assert (results["classify"].label, results["classify"].version) == ("spam", 2)
