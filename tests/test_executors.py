"""Where the estimator runs: worker processes behave as threads do, and more."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np
import pytest
from anyio import wait_all_tasks_blocked

from asyncclf import (
    AsyncClassifier,
    AsyncClfError,
    Executor,
    InvalidParameterError,
    ProcessExecutor,
    ThreadExecutor,
)
from asyncclf._work import handles, transport

from .fakes import (
    DEADLINE,
    NEVER,
    TRAIN_X,
    TRAIN_Y,
    CallLog,
    CodedError,
    DyingClassifier,
    Gate,
    KeywordClassifier,
    RecordingClassifier,
    SlowFitClassifier,
    SlowPredictClassifier,
    TroubleClassifier,
    settle,
)
from .own_executor import OwnThreadsExecutor

pytestmark = pytest.mark.anyio

T = TypeVar("T")

TEXTS = [("spam " if i % 3 else "eggs ") * (1 + i % 4) + f"ham {i}" for i in range(300)]


async def pair(**kwargs: Any) -> tuple[AsyncClassifier, AsyncClassifier]:
    threads = await AsyncClassifier(KeywordClassifier(), **kwargs).fit(TRAIN_X, TRAIN_Y)
    processes = await AsyncClassifier(
        KeywordClassifier(), executor=ProcessExecutor(max_workers=2), **kwargs
    ).fit(TRAIN_X, TRAIN_Y)
    return threads, processes


async def test_processes_answer_exactly_as_threads() -> None:
    """predict, predict_proba, classify, rank, group, score and streams give the same
    answers in worker processes as in threads, with batching and statistics."""
    threads, processes = await pair(max_batch_size=64)
    for clf in (threads, processes):
        assert clf.version == 1
    np.testing.assert_array_equal(
        await processes.predict_proba(TEXTS), await threads.predict_proba(TEXTS)
    )
    assert list(await processes.predict(TEXTS)) == list(await threads.predict(TEXTS))
    assert await processes.rank(TEXTS, "spam", k=5) == await threads.rank(TEXTS, "spam", k=5)
    assert await processes.group(TEXTS[:20]) == await threads.group(TEXTS[:20])
    assert await processes.score(TEXTS, ["spam"] * 300) == await threads.score(
        TEXTS, ["spam"] * 300
    )
    answers: dict[int, Any] = {}

    async def call(i: int) -> None:
        answers[i] = await processes.classify(TEXTS[i])

    async with anyio.create_task_group() as tasks:
        for i in range(100):
            tasks.start_soon(call, i)
    for i, prediction in answers.items():
        assert prediction == await threads.classify(TEXTS[i])
    assert processes.statistics().batches < 100 + 300 // 64 + 10
    async with processes.stream(TEXTS) as results:
        streamed = [p async for p in results]
    async with threads.stream(TEXTS) as results:
        assert streamed == [p async for p in results]


@pytest.mark.slow  # a pool of its own; the default tier samples processes elsewhere
async def test_a_failing_text_fails_alone_in_a_process_too() -> None:
    """The estimator's exception crosses back from the worker to its caller only."""
    _, processes = await pair()
    with pytest.raises(ValueError, match="cannot score 'BOOM'"):
        await processes.classify("BOOM")
    async with processes.stream(["ham", "BOOM", "spam"], on_error="yield") as results:
        assert [p.ok async for p in results] == [True, False, True]


@pytest.mark.slow  # a pool of its own; test_classifier's isolation test covers it
async def test_partial_fit_and_refit_swap_new_versions_into_the_workers() -> None:
    """Each new model version reaches the workers: after a refit on other classes and
    a partial_fit, answers come from the new model."""
    _, processes = await pair()
    await processes.fit(["zebra", "yak"], ["zebra", "yak"])
    assert list(processes.classes_) == ["yak", "zebra"]
    assert (await processes.classify("zebra zebra")).label == "zebra"
    await processes.partial_fit(["yak"], ["yak"])
    assert processes.version == 3
    assert processes.estimator_.n_updates_ == 1
    assert (await processes.classify("yak")).version == 3


@pytest.mark.slow  # kills its worker
async def test_a_cancelled_fit_in_a_process_returns_at_once_and_changes_nothing() -> None:
    """Cancelling a fit kills its worker process: the call returns without waiting for
    the fit (which would outlast the test's deadline) and the serving model stays."""
    clf = AsyncClassifier(SlowFitClassifier(0), executor="processes")
    await clf.fit(TRAIN_X, TRAIN_Y)
    clf.set_params(estimator=SlowFitClassifier(NEVER))
    with anyio.fail_after(DEADLINE):
        with anyio.move_on_after(2) as scope:
            await clf.fit(TRAIN_X, TRAIN_Y)
    assert scope.cancelled_caught
    assert clf.version == 1
    assert (await clf.classify("spam")).version == 1


@pytest.mark.slow  # a worker dies
async def test_a_worker_that_dies_fails_only_its_batch() -> None:
    """A worker process that dies mid-batch fails that batch's callers with an
    AsyncClfError saying so; the next calls get a new worker and succeed."""
    from .fakes import DyingClassifier

    clf = await AsyncClassifier(DyingClassifier(), executor="processes").fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(AsyncClfError, match="worker process running this call died"):
        await clf.classify("DIE now")
    assert (await clf.classify("spam spam")).label == "spam"
    await settle(clf)
    assert clf.limiter_.statistics().borrowed_tokens == 0


@pytest.mark.slow  # a pool of its own
async def test_a_cancelled_caller_returns_while_its_process_batch_runs() -> None:
    """A caller cancelled while its batch runs in a worker process returns at once;
    the batch still answers the others and gives its token back."""
    _, processes = await pair(max_latency=0.05)
    answers: list[str] = []

    async def follower() -> None:
        answers.append((await processes.classify("spam follower")).label)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            with anyio.CancelScope() as leader:
                tasks.start_soon(follower)
                await wait_all_tasks_blocked()
                leader.cancel()
                await processes.classify("leader")
    assert answers == ["spam"]
    await settle(processes)
    assert processes.limiter_.statistics().borrowed_tokens == 0


def anyio_workers() -> set[int]:
    """The worker processes of anyio's pool: children of this process running it."""
    me, found = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == me and b"anyio" in command:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.slow  # counts fresh workers
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
async def test_max_workers_bounds_the_worker_processes_whatever_the_limiter() -> None:
    """Three batches at once under a limiter of 3 tokens run in max_workers=1 process,
    one after another, not in three."""
    before = anyio_workers()
    clf = await AsyncClassifier(
        SlowPredictClassifier(0.3),
        executor=ProcessExecutor(max_workers=1, limiter=anyio.CapacityLimiter(3)),
        max_batch_size=1,
        max_latency=0,
    ).fit(TRAIN_X, TRAIN_Y)
    async with anyio.create_task_group() as tasks:
        for text in ("spam", "eggs", "spam eggs"):
            tasks.start_soon(clf.classify, text)
    assert clf.statistics().batches == 3
    assert len(anyio_workers() - before) == 1


@pytest.mark.slow  # kills its worker
async def test_a_fit_cancelled_while_its_model_is_read_back_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled while the fitted model is unpickled in the parent (a large model takes
    a while), the fit raises the cancellation and the served model stays."""
    clf = await AsyncClassifier(KeywordClassifier(), executor=ProcessExecutor(max_workers=1)).fit(
        TRAIN_X, TRAIN_Y
    )
    started = threading.Event()
    load = handles.load_unpacked

    def slow_load(path: str) -> Any:
        started.set()
        time.sleep(0.5)
        return load(path)

    monkeypatch.setattr(handles, "load_unpacked", slow_load)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.fit, TRAIN_X, TRAIN_Y)
            await anyio.to_thread.run_sync(started.wait, DEADLINE)
            scope.cancel()
    assert scope.cancelled_caught
    assert clf.version == 1


@pytest.mark.slow  # a pool of its own
async def test_a_removed_model_directory_is_made_again() -> None:
    """A temporary-file cleaner removing the executor's directory breaks nothing: a new
    worker finds the serving model written again, and fits still work."""
    executor = ProcessExecutor(max_workers=1)
    clf = await AsyncClassifier(DyingClassifier(), executor=executor).fit(TRAIN_X, TRAIN_Y)
    assert (await clf.classify("spam")).label == "spam"
    shutil.rmtree(executor._directory)
    with pytest.raises(AsyncClfError, match="died"):
        await clf.classify("DIE")  # the worker holding the model goes
    assert (await clf.classify("spam")).label == "spam"
    await clf.fit(TRAIN_X, TRAIN_Y)
    assert clf.version == 2
    assert (await clf.classify("eggs")).label == "eggs"


class CountingExecutor(OwnThreadsExecutor):
    """A user's executor that counts the batches and the fits it was handed."""

    def __init__(self, limiter: anyio.CapacityLimiter | None = None) -> None:
        super().__init__(limiter)
        self.fits = 0

    @property
    def batches(self) -> int:
        return self.submitted - self.fits

    async def fit(
        self, func: Callable[..., Any], *args: Any, on_step: Callable[[int], object] | None = None
    ) -> Any:
        self.fits += 1
        return await super().fit(func, *args, on_step=on_step)


def test_the_executors_are_executors() -> None:
    """The built-in executors and a user's are Executors; submit is the one abstract
    method, so a subclass without it cannot be made."""
    for executor in (ThreadExecutor(), ProcessExecutor(max_workers=1), CountingExecutor()):
        assert isinstance(executor, Executor)
    assert not isinstance(object(), Executor)
    assert Executor.__abstractmethods__ == frozenset({"submit"})

    class Incomplete(Executor):
        pass

    with pytest.raises(TypeError, match="submit"):
        Incomplete()  # type: ignore[abstract]


async def test_an_executor_of_ones_own_serves_a_classifier() -> None:
    """A subclass of Executor implementing only submit runs a classifier's work."""
    executor = CountingExecutor()
    clf = await AsyncClassifier(KeywordClassifier(), executor=executor).fit(TRAIN_X, TRAIN_Y)
    assert (await clf.classify("spam")).label == "spam"
    async with clf.stream(["spam", "eggs"]) as results:
        assert [p.label async for p in results] == ["spam", "eggs"]
    assert executor.fits == 1
    assert executor.batches >= 2
    assert clf.limiter_ is executor.limiter


async def test_a_batch_waiting_for_a_token_when_the_executor_changes_runs_on_the_new_one() -> None:
    """set_params(executor=...) while a batch waits for a token: the batch gives back
    any token of the old executor and runs on the new one, with the new one's token."""
    log, gate = CallLog(), Gate()
    estimator = RecordingClassifier(log=log, gate=gate, block=["predict_proba"])
    old, new = (
        CountingExecutor(anyio.CapacityLimiter(1)),
        CountingExecutor(anyio.CapacityLimiter(1)),
    )
    clf = AsyncClassifier(estimator, executor=old)
    gate.release.set()
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    results: list[str] = []

    async def call(text: str) -> None:
        results.append((await clf.classify(text)).label)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, "spam")
            await gate.wait_entered()
            tasks.start_soon(call, "eggs")  # waits for the old executor's only token
            await wait_all_tasks_blocked()
            clf.set_params(executor=new)
            gate.release.set()
    assert sorted(results) == ["eggs", "spam"]
    assert (old.batches, new.batches) == (1, 1)
    assert old.limiter.borrowed_tokens == new.limiter.borrowed_tokens == 0


def test_executor_settings_are_checked() -> None:
    """Bad executor names and worker counts raise InvalidParameterError."""
    with pytest.raises(InvalidParameterError, match="executor must be"):
        AsyncClassifier(executor="gpu")
    with pytest.raises(InvalidParameterError, match="max_workers"):
        ProcessExecutor(max_workers=0)
    assert ProcessExecutor().max_workers == len(os.sched_getaffinity(0))


@pytest.mark.slow  # a subprocess
def test_a_script_without_a_main_guard_gets_a_clear_error(tmp_path: Path) -> None:
    """A script that runs its program at top level (no __main__ guard) fails at once
    with an error saying to add the guard, instead of hanging while every worker
    re-runs it."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import anyio\n"
        "from asyncclf import AsyncClassifier\n\n"
        "async def main() -> None:\n"
        "    clf = AsyncClassifier(executor='processes')\n"
        "    await clf.fit(['a b', 'c d'] * 3, ['x', 'y'] * 3)\n\n"
        "anyio.run(main)\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    # The error raised, not only one in the chain of causes, names the fix: the last
    # exception line of the traceback (asyncio may print a warning after it).
    raised = [
        line
        for line in done.stderr.splitlines()
        if re.match(r"[\w.]+(Error|Exception|Exit|Interrupt)\b", line)
    ][-1]
    assert raised.startswith("asyncclf._errors.AsyncClfError: ProcessExecutor was created")
    assert 'if __name__ == "__main__":' in raised


class PoolExecutor(Executor):
    """A user's executor over any concurrent.futures pool, as docs/scaling.md shows."""

    def __init__(self, pool: concurrent.futures.Executor) -> None:
        super().__init__(anyio.CapacityLimiter(2))
        self.pool = pool

    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        return self.pool.submit(call)


async def test_a_process_pool_of_ones_own_serves_a_classifier() -> None:
    """A concurrent.futures ProcessPoolExecutor behind the seam fits, classifies in
    batches, and fails only the text the estimator fails on."""
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        async with AsyncClassifier(TroubleClassifier(), executor=PoolExecutor(pool)) as clf:
            await clf.fit(TRAIN_X, TRAIN_Y)
            assert (await clf.classify("spam")).label == "spam"
            async with clf.stream(["ham", "boom", "eggs"], on_error="yield") as results:
                answers = [p async for p in results]
            assert [p.ok for p in answers] == [True, False, True]
            assert [p.label for p in answers if p.ok] == ["ham", "eggs"]


# -- tests that mutation testing found missing (issue 20) --------------------------------


@pytest.mark.parametrize(
    "error", [ValueError("cannot score 'BOOM'"), CodedError(7)], ids=["pickles", "rebuilt"]
)
def test_an_exception_crossing_from_a_worker_has_its_worker_traceback_as_cause(
    error: Exception,
) -> None:
    """An exception a worker call raised arrives in the parent as the same exception,
    caused by a WorkerTraceback holding its traceback in the worker, whether it pickled
    whole or was rebuilt without its ``__init__``."""
    import pickle

    try:
        raise error
    except Exception as raised:
        sent = pickle.dumps(transport.portable(raised))
        trace = "".join(traceback.format_exception(raised))
    arrived = pickle.loads(sent)
    assert type(arrived) is type(error)
    assert str(arrived) == str(error)
    assert isinstance(arrived.__cause__, transport.WorkerTraceback)
    assert str(arrived.__cause__) == f"\n{trace}"
