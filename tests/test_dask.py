"""DaskExecutor on a real two-process Dask cluster (loopback only): answers as threads
do, ships each model version once, survives lost workers, cancels fits at once."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import pytest

import asyncclf._executors.dask
from asyncclf import AsyncClassifier, AsyncClfError, DaskExecutor, InvalidParameterError

from .fakes import (
    DEADLINE,
    TRAIN_X,
    TRAIN_Y,
    DyingClassifier,
    EventGatedFitClassifier,
    KeywordClassifier,
    UnpickleCountingClassifier,
    settle,
    unpickled,
)

distributed: Any = pytest.importorskip(
    "distributed", reason="DaskExecutor needs dask.distributed: pip install 'asyncclf[dask]'"
)
dask: Any = pytest.importorskip("dask")

pytestmark = pytest.mark.anyio

TEXTS = [("spam " if i % 3 else "eggs ") * (1 + i % 4) + f"ham {i}" for i in range(300)]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A cluster of two single-threaded worker processes on 127.0.0.1, and a client,
    for the slow tier's tests that kill, resize or close workers (the others use the
    session's cluster, ``dask_client``)."""
    # A task whose worker dies is rerun once, not three times (Dask's default), so that
    # the dying-worker test kills two worker processes rather than four.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # The HTTP server (no dashboard without bokeh) on a free port: 8787, the
            # default, may be taken by another cluster, which Dask warns about.
            dashboard_address="127.0.0.1:0",
        )
    with cluster, distributed.Client(cluster) as dask_client:
        yield dask_client


async def in_thread(func: Any, *args: Any) -> Any:
    """Call the synchronous Dask client off the event loop, as asyncclf does."""
    return await anyio.to_thread.run_sync(func, *args)


def clients_connected(dask_scheduler: Any) -> int:
    """How many clients the scheduler serves (run on the scheduler)."""
    return len(dask_scheduler.clients)


def tasks_processing(dask_scheduler: Any) -> int:
    """How many tasks the scheduler has running on workers (run on the scheduler)."""
    return sum(task.state == "processing" for task in dask_scheduler.tasks.values())


def until_workers(client: Any, count: int) -> bool:
    """Wait in a thread, up to DEADLINE, for the cluster to have ``count`` workers."""
    deadline = time.monotonic() + DEADLINE
    while len(client.nthreads()) != count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def until_no_task_processing(client: Any) -> bool:
    """Wait in a thread, up to DEADLINE, for the scheduler to have no task running."""
    deadline = time.monotonic() + DEADLINE
    while client.run_on_scheduler(tasks_processing):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def test_the_cluster_answers_exactly_as_threads(dask_client: Any) -> None:
    """predict_proba, predict, rank, concurrent classify calls and streams give the
    same answers, in the same order, on the cluster as in threads, batched."""
    threads = await AsyncClassifier(KeywordClassifier(), max_batch_size=64).fit(TRAIN_X, TRAIN_Y)
    cluster = await AsyncClassifier(
        KeywordClassifier(), executor=DaskExecutor(dask_client), max_batch_size=64
    ).fit(TRAIN_X, TRAIN_Y)
    np.testing.assert_array_equal(
        await cluster.predict_proba(TEXTS), await threads.predict_proba(TEXTS)
    )
    assert list(await cluster.predict(TEXTS)) == list(await threads.predict(TEXTS))
    assert await cluster.rank(TEXTS, "spam", k=7) == await threads.rank(TEXTS, "spam", k=7)
    answers: dict[int, Any] = {}

    async def call(i: int) -> None:
        answers[i] = await cluster.classify(TEXTS[i])

    async with anyio.create_task_group() as tasks:
        for i in range(100):
            tasks.start_soon(call, i)
    assert sorted(answers) == list(range(100))
    for i, prediction in answers.items():
        assert prediction == await threads.classify(TEXTS[i])
    assert cluster.statistics().batches < 100
    async with cluster.stream(TEXTS) as results:
        streamed = [p async for p in results]
    async with threads.stream(TEXTS) as results:
        assert streamed == [p async for p in results]
    assert [p.index for p in streamed] == list(range(300))
    await settle(cluster)
    assert cluster.limiter_.statistics().borrowed_tokens == 0


async def test_a_failing_text_fails_alone_on_the_cluster(dask_client: Any) -> None:
    """The estimator's exception crosses back from the worker to its own caller only."""
    clf = await AsyncClassifier(KeywordClassifier(), executor=DaskExecutor(dask_client)).fit(
        TRAIN_X, TRAIN_Y
    )
    with pytest.raises(ValueError, match="cannot score 'BOOM'"):
        await clf.classify("BOOM")
    async with clf.stream(["ham", "BOOM", "spam"], on_error="yield") as results:
        assert [p.ok async for p in results] == [True, False, True]


async def test_refits_and_partial_fits_reach_the_workers(dask_client: Any) -> None:
    """Each new version, fitted on the cluster, answers from the workers: a refit on
    other classes is answered with those classes, then a partial_fit's version."""
    clf = await AsyncClassifier(KeywordClassifier(), executor=DaskExecutor(dask_client)).fit(
        TRAIN_X, TRAIN_Y
    )
    assert (await clf.classify("spam spam")).label == "spam"
    await clf.fit(["zebra", "yak"], ["zebra", "yak"])
    assert list(clf.classes_) == ["yak", "zebra"]
    assert (await clf.classify("zebra zebra")).label == "zebra"
    assert list(await clf.predict(["yak yak", "zebra"])) == ["yak", "zebra"]
    await clf.partial_fit(["yak"], ["yak"])
    assert clf.version == 3
    assert clf.estimator_.n_updates_ == 1
    assert (await clf.classify("yak")).version == 3


async def test_each_worker_unpickles_a_model_version_once(dask_client: Any) -> None:
    """However many batches a worker runs, it unpickles each model version once."""
    tag = uuid.uuid4().hex
    clf = await AsyncClassifier(
        UnpickleCountingClassifier(tag), executor=DaskExecutor(dask_client), max_batch_size=8
    ).fit(TRAIN_X, TRAIN_Y)
    for _ in range(2):
        await clf.predict_proba(TEXTS)  # 38 batches each time, two at a time
    counts = await in_thread(dask_client.run, unpickled, tag)
    assert max(counts.values()) == 1
    await clf.fit(TRAIN_X[:3], TRAIN_Y[:3])
    rows = await clf.predict_proba(TEXTS)
    assert rows.shape == (300, 3)
    counts = await in_thread(dask_client.run, unpickled, tag)
    assert max(counts.values()) <= 2
    assert sum(counts.values()) >= 2
    assert clf.statistics().batches >= 3 * 38


@pytest.mark.slow
async def test_a_cancelled_fit_returns_while_its_task_still_runs(client: Any) -> None:
    """Cancelling a fit returns while its task is still held in a worker and cancels
    its Dask future; the serving model and version stay and every token comes back."""
    clf = await AsyncClassifier(EventGatedFitClassifier(), executor=DaskExecutor(client)).fit(
        TRAIN_X, TRAIN_Y
    )
    name = uuid.uuid4().hex
    entered = distributed.Event(f"{name}-entered", client)
    release = distributed.Event(name, client)
    clf.set_params(estimator=EventGatedFitClassifier(name))

    async def cancel_once_entered(scope: anyio.CancelScope) -> None:
        assert await in_thread(entered.wait, DEADLINE)
        scope.cancel()

    try:
        # The held fit would wait for the event past the deadline: returning at all proves the
        # cancelled call did not wait for its task.
        with anyio.fail_after(DEADLINE):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(cancel_once_entered, scope)
                    await clf.fit(TRAIN_X, TRAIN_Y)
        # Its Dask future was cancelled: the scheduler forgets the task, which the
        # worker's thread still runs, held by the event.
        assert await in_thread(until_no_task_processing, client)
    finally:
        await in_thread(release.set)
    assert scope.cancelled_caught
    assert clf.version == 1
    assert (await clf.classify("spam")).version == 1
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


@pytest.mark.slow
async def test_asyncio_task_cancel_of_a_fit_returns_at_once(
    client: Any, anyio_backend: str
) -> None:
    """asyncio's own Task.cancel() on a fit held in a worker returns at once too."""
    if anyio_backend != "asyncio":
        pytest.skip("Task.cancel() is asyncio's own")
    import asyncio

    clf = await AsyncClassifier(EventGatedFitClassifier(), executor=DaskExecutor(client)).fit(
        TRAIN_X, TRAIN_Y
    )
    name = uuid.uuid4().hex
    entered = distributed.Event(f"{name}-entered", client)
    release = distributed.Event(name, client)
    clf.set_params(estimator=EventGatedFitClassifier(name))
    task = asyncio.ensure_future(clf.fit(TRAIN_X, TRAIN_Y))
    try:
        assert await in_thread(entered.wait, DEADLINE)
        task.cancel()
        with anyio.fail_after(DEADLINE), pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await in_thread(release.set)
    assert clf.version == 1
    assert (await clf.classify("eggs")).label == "eggs"
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


@pytest.mark.slow
async def test_a_worker_killed_mid_batch_fails_only_that_batch(client: Any) -> None:
    """A batch that kills its worker is tried on one other worker, which dies too; its
    callers then get an AsyncClfError caused by KilledWorker (or, when the cluster lost
    the model's bytes with the workers first, by the cluster cancelling the batch), and
    once the nanny has restarted the workers the next calls succeed, tokens back."""
    clf = await AsyncClassifier(
        DyingClassifier(), executor=DaskExecutor(client), max_latency=0.05, max_batch_size=8
    ).fit(TRAIN_X, TRAIN_Y)
    # 38 batches, two at a time: both workers load the model, so that the retry of the
    # batch that kills one runs (and dies) on the other.
    assert (await clf.predict(TEXTS)).shape == (300,)
    before = set(await in_thread(client.nthreads))
    errors: list[BaseException] = []

    async def call(text: str) -> None:
        with pytest.raises(AsyncClfError, match="Dask workers running this batch") as info:
            await clf.classify(text)
        errors.append(info.value)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, "DIE now")
            tasks.start_soon(call, "spam, in the same batch")
    assert len(errors) == 2
    for error in errors:
        causes = []
        cause: BaseException | None = error
        while cause is not None:
            causes.append(cause)
            cause = cause.__cause__
        assert any(isinstance(c, distributed.KilledWorker) or "cancelled" in str(c) for c in causes)
    with anyio.fail_after(DEADLINE):
        assert (await clf.classify("spam spam")).label == "spam"
        async with clf.stream(["eggs", "spam spam"]) as results:
            assert [p.label async for p in results] == ["eggs", "spam"]
        await in_thread(client.wait_for_workers, 2, 30)
    after = set(await in_thread(client.nthreads))
    assert before.isdisjoint(after)  # both workers died: the one first tried, and one more
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


@pytest.mark.slow
async def test_the_default_limiter_has_a_token_per_cluster_thread(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until the cluster is asked the limiter has a token per local CPU; from the first
    call on, one per worker thread of the cluster; a given limiter is used as is."""
    await in_thread(client.wait_for_workers, 2, 30)
    monkeypatch.setattr(asyncclf._executors.dask, "available_cpus", lambda: 7)
    clf = AsyncClassifier(KeywordClassifier(), executor=DaskExecutor(client))
    assert clf.limiter_.total_tokens == 7
    await clf.fit(TRAIN_X, TRAIN_Y)
    threads = sum((await in_thread(client.nthreads)).values())
    assert threads == 2
    assert clf.limiter_.total_tokens == threads
    async with DaskExecutor(client) as executor:
        assert executor.limiter.total_tokens == threads
    shared = anyio.CapacityLimiter(1)
    clf = AsyncClassifier(KeywordClassifier(), executor=DaskExecutor(client, limiter=shared))
    await clf.fit(TRAIN_X, TRAIN_Y)
    assert (await clf.classify("spam")).label == "spam"
    assert clf.limiter_ is shared
    assert shared.total_tokens == 1


@pytest.mark.slow
async def test_the_default_limiter_follows_the_cluster_as_it_grows_and_shrinks(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker joining the cluster adds a token to the default limiter and one leaving
    takes it away: the executor asks the scheduler after a batch (here after every
    batch), and the next call takes the new count."""
    monkeypatch.setattr(DaskExecutor, "FOLLOW_EVERY", 0.0)
    await in_thread(client.wait_for_workers, 2, 30)
    clf = AsyncClassifier(KeywordClassifier(), executor=DaskExecutor(client))
    await clf.fit(TRAIN_X, TRAIN_Y)
    assert clf.limiter_.total_tokens == 2

    async def tokens_after_two_calls() -> float:
        for _ in range(2):  # the first asks the scheduler, the second takes the count
            assert (await clf.classify("spam")).label == "spam"
        return clf.limiter_.total_tokens

    cluster = client.cluster
    try:
        await in_thread(cluster.scale, 3)
        await in_thread(client.wait_for_workers, 3, DEADLINE)
        assert await tokens_after_two_calls() == 3
    finally:
        await in_thread(cluster.scale, 2)
        assert await in_thread(until_workers, client, 2)
    assert await tokens_after_two_calls() == 2


@pytest.mark.slow
async def test_an_address_gets_its_own_client_which_aclose_closes(client: Any) -> None:
    """Given an address, the executor connects a client of its own on first use and
    aclose() disconnects it, after which it refuses work; a given client stays open."""
    before = await in_thread(client.run_on_scheduler, clients_connected)
    executor = DaskExecutor(client.scheduler.address)
    clf = AsyncClassifier(KeywordClassifier(), executor=executor)
    assert await in_thread(client.run_on_scheduler, clients_connected) == before
    await clf.fit(TRAIN_X, TRAIN_Y)
    assert (await clf.classify("spam")).label == "spam"
    assert await in_thread(client.run_on_scheduler, clients_connected) == before + 1
    await executor.aclose()
    assert await in_thread(client.run_on_scheduler, clients_connected) == before
    with pytest.raises(AsyncClfError, match="DaskExecutor is closed"):
        await clf.classify("spam")
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0
    async with DaskExecutor(client) as given:
        clf = await AsyncClassifier(KeywordClassifier(), executor=given).fit(TRAIN_X, TRAIN_Y)
        assert (await clf.classify("eggs")).label == "eggs"
    assert client.status == "running"
    assert await in_thread(client.run_on_scheduler, clients_connected) == before


@pytest.mark.slow
async def test_aclose_fails_a_fit_still_running_on_the_cluster(client: Any) -> None:
    """Closing the executor cancels a fit its cluster still runs: the caller gets an
    AsyncClfError at once, the serving model stays, and the given client stays open."""
    executor = DaskExecutor(client)
    clf = await AsyncClassifier(EventGatedFitClassifier(), executor=executor).fit(TRAIN_X, TRAIN_Y)
    name = uuid.uuid4().hex
    entered = distributed.Event(f"{name}-entered", client)
    release = distributed.Event(name, client)
    clf.set_params(estimator=EventGatedFitClassifier(name))

    async def close_once_entered() -> None:
        assert await in_thread(entered.wait, DEADLINE)
        await executor.aclose()

    try:
        # The held fit would wait for the event past the deadline: this fails if aclose
        # waits for it.
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(close_once_entered)
                with pytest.raises(AsyncClfError, match="closed while the fit waited"):
                    await clf.fit(TRAIN_X, TRAIN_Y)
    finally:
        await in_thread(release.set)
    assert clf.version == 1
    assert client.status == "running"
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


@pytest.mark.slow
async def test_a_cluster_gone_fails_calls_with_a_clear_error() -> None:
    """Once the scheduler is gone, a call fails with an AsyncClfError saying so, not
    with the Dask client's own error."""

    def start() -> tuple[Any, Any]:
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        )
        return cluster, distributed.Client(cluster)

    cluster, own = await in_thread(start)
    try:
        clf = AsyncClassifier(KeywordClassifier(), executor=DaskExecutor(own))
        await clf.fit(TRAIN_X, TRAIN_Y)
        assert (await clf.classify("spam")).label == "spam"
        await in_thread(cluster.close)
        with anyio.fail_after(DEADLINE), pytest.raises(AsyncClfError, match="cannot be reached"):
            await clf.classify("eggs")
    finally:
        await in_thread(own.close)
        await in_thread(cluster.close)


def test_bad_arguments_are_refused(dask_client: Any) -> None:
    """Anything but a synchronous distributed.Client or an address is refused at once."""
    with pytest.raises(InvalidParameterError, match=r"distributed\.Client or a scheduler"):
        DaskExecutor(42)
    with pytest.raises(InvalidParameterError, match="scheduler_address"):
        DaskExecutor(dask_client.cluster)
    with pytest.raises(InvalidParameterError, match="needs a scheduler address"):
        DaskExecutor(" ")


def test_importing_asyncclf_does_not_import_distributed() -> None:
    """distributed is an optional extra: importing asyncclf leaves it unimported."""
    code = "import sys, asyncclf; print('distributed' in sys.modules, 'dask' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
