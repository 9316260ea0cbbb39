"""Plain asyncio idioms (gather, wait_for) work with AsyncClassifier (pytest-asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import anyio
import pytest

from asyncclf import AsyncClassifier

from .conftest import Classifiers
from .fakes import DEADLINE, TRAIN_X, TRAIN_Y, Gate, KeywordClassifier, settle


@pytest.mark.asyncio
async def test_gather_many_classify_calls(make: Classifiers) -> None:
    """asyncio.gather over many classify calls returns each caller's own prediction."""
    clf = await make(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    texts = [("spam " if i % 2 else "eggs ") * (i % 3 + 1) for i in range(200)]
    predictions = await asyncio.gather(*(clf.classify(t) for t in texts))
    assert [p.text for p in predictions] == texts
    assert [p.label for p in predictions] == [t.split()[0] for t in texts]
    assert clf.statistics().batches < 200


@pytest.mark.asyncio
async def test_wait_for_timeout_cancels_cleanly(make: Classifiers) -> None:
    """asyncio.wait_for timing out queued calls leaves the classifier consistent."""
    clf = await make(KeywordClassifier(), max_latency=5.0, max_batch_size=3).fit(TRAIN_X, TRAIN_Y)
    # Two calls at once: their batch waits (up to max_latency) for a third to fill it.
    calls = asyncio.gather(clf.classify("spam"), clf.classify("eggs"))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(calls, timeout=0.01)
    assert clf.statistics().queue_depth == 0
    assert clf.statistics().batches == 0
    clf.set_params(max_latency=0.0)
    assert (await clf.classify("eggs")).label == "eggs"


# -- native asyncio cancellation (issue 7): it lands at other moments than anyio's -------
# These hold a batch in a Gate (or reach into the batcher), so they run in threads only.


async def held_classifier(**kwargs: Any) -> tuple[AsyncClassifier, Gate]:
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=["predict_proba"]), **kwargs)
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    return clf, gate


@pytest.mark.asyncio
async def test_task_cancel_of_a_running_leader_returns_at_once() -> None:
    """Task.cancel() on the caller leading a running batch returns before the worker
    ends; the batch still answers the caller queued in it."""
    clf, gate = await held_classifier(limiter=anyio.CapacityLimiter(1), max_latency=0.05)
    leader = asyncio.create_task(clf.classify("leader"))
    await asyncio.sleep(0)
    follower = asyncio.create_task(clf.classify("spam follower"))
    await gate.wait_entered()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(leader, timeout=DEADLINE)
    assert not gate.release.is_set()
    gate.release.set()
    assert (await asyncio.wait_for(follower, timeout=DEADLINE)).label == "spam"
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


@pytest.mark.asyncio
async def test_wait_for_times_out_a_running_leader_promptly() -> None:
    """asyncio.wait_for around a call whose batch is held returns at its timeout."""
    clf, gate = await held_classifier()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(clf.classify("spam"), timeout=0.05)
    assert not gate.release.is_set()
    gate.release.set()
    await settle(clf)
    assert (await clf.classify("eggs")).label == "eggs"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is Python 3.11+")
@pytest.mark.asyncio
async def test_a_failing_task_group_cancels_its_callers_cleanly() -> None:
    """A TaskGroup whose sibling fails cancels callers queued and running alike;
    nothing is stranded and the classifier serves on."""
    clf, gate = await held_classifier(limiter=anyio.CapacityLimiter(1))

    async def boom() -> None:
        await gate.wait_entered()
        msg = "sibling failed"
        raise RuntimeError(msg)

    task_group: Any = getattr(asyncio, "TaskGroup")  # noqa: B009 - absent before 3.11

    async def run_group() -> None:
        async with task_group() as group:
            for i in range(5):
                group.create_task(clf.classify(f"spam {i}"))
            group.create_task(boom())

    caught: Any = None
    try:
        await run_group()
    except Exception as exc:  # an ExceptionGroup, a name Python 3.10 lacks
        caught = exc
    assert [type(exc) for exc in caught.exceptions] == [RuntimeError]
    gate.release.set()
    await settle(clf)
    assert clf.statistics().queue_depth == 0
    assert (await clf.classify("eggs")).label == "eggs"


@pytest.mark.asyncio
async def test_task_cancel_of_a_woken_leader_hands_leadership_on() -> None:
    """A request woken to lead and cancelled by Task.cancel() before it runs wakes the
    next request (Batcher.wait's except branch); without it the lane waits forever."""
    clf, gate = await held_classifier(max_batch_size=1, limiter=anyio.CapacityLimiter(1))
    batcher = clf._batcher
    original = batcher._hand_on
    tasks: dict[str, asyncio.Task[Any]] = {}
    woken: list[str] = []

    def wake_and_cancel(lane: Any) -> None:
        original(lane)
        if not woken and lane.queue and lane.queue[0].requests[0].texts == ["b"]:
            woken.append("b")
            tasks["b"].cancel()

    batcher._hand_on = wake_and_cancel  # type: ignore[method-assign]
    first = asyncio.create_task(clf.classify("first"))
    await gate.wait_entered()
    for name in ("a", "b", "c"):
        tasks[name] = asyncio.create_task(clf.classify(name))
        for _ in range(5):
            await asyncio.sleep(0)
    gate.release.set()
    done = await asyncio.wait_for(asyncio.gather(first, tasks["a"], tasks["c"]), timeout=DEADLINE)
    assert [p.text for p in done] == ["first", "a", "c"]
    assert woken == ["b"]
    assert tasks["b"].cancelled()


@pytest.mark.asyncio
@pytest.mark.parametrize("first", range(8))
async def test_two_task_cancels_of_a_leader_never_strand_its_batch(first: int) -> None:
    """Task.cancel() twice on a leader, in consecutive loop iterations around the
    hand-off of its batch to a thread, still serves the follower and frees the token
    (anyio's shields do not stop native cancels, so nothing may rely on one)."""
    clf, gate = await held_classifier(limiter=anyio.CapacityLimiter(1))
    gate.release.set()
    leader = asyncio.create_task(clf.classify("leader"))
    follower = asyncio.create_task(clf.classify("spam follower"))
    for _ in range(first):
        await asyncio.sleep(0)
    leader.cancel()
    await asyncio.sleep(0)
    leader.cancel()
    assert (await asyncio.wait_for(follower, timeout=DEADLINE)).label == "spam"
    with contextlib.suppress(asyncio.CancelledError):
        await leader
    await asyncio.wait_for(settle(clf), timeout=DEADLINE)
    assert clf.limiter_.statistics().borrowed_tokens == 0
