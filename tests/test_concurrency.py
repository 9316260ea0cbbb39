"""The concurrency contract of docs/concurrency.md, one test per promise."""

from __future__ import annotations

import os
import threading
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import pytest
import sklearn
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from asyncclf import AsyncClassifier, AsyncClfError

from .conftest import EVERYWHERE, Classifiers
from .fakes import (
    DEADLINE,
    TRAIN_X,
    TRAIN_Y,
    CallLog,
    CodedError,
    FitErrorClassifier,
    Gate,
    KeywordClassifier,
    LockedError,
    RecordingClassifier,
    settle,
)

pytestmark = pytest.mark.anyio

# Tests that take ``make`` run on every executor. The others stay in threads: they hold
# the estimator in a Gate, or look at worker threads, sklearn's thread-local config and
# OpenMP pools through a CallLog, none of which a worker process or Dask worker shares.


class BrokenFit(KeywordClassifier):
    """Fails every fit."""

    def fit(self, X: Any, y: Any) -> BrokenFit:
        msg = "the fit blew up"
        raise RuntimeError(msg)


async def fitted_then_gated(method: str) -> tuple[AsyncClassifier, Gate]:
    """A fitted classifier whose next ``method`` calls will be held in the gate."""
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=[method]))
    gate.release.set()
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    return clf, gate


def tokens(clf: AsyncClassifier) -> int:
    borrowed: int = clf.limiter_.statistics().borrowed_tokens
    return borrowed


async def test_estimator_code_runs_in_worker_threads() -> None:
    """fit and predictions run in worker threads, never on the event loop's thread."""
    log = CallLog()
    clf = AsyncClassifier(RecordingClassifier(log=log))
    await clf.fit(TRAIN_X, TRAIN_Y)
    await clf.predict_proba(["spam"])
    loop_thread = threading.get_ident()
    assert clf.estimator_._fit_thread_id != loop_thread
    assert log.threads
    assert loop_thread not in log.threads


async def test_work_holds_the_classifiers_own_limiter() -> None:
    """A running call holds a token of the classifier's limiter, not anyio's default one."""
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=["predict_proba"]))
    await clf.fit(TRAIN_X, TRAIN_Y)
    default = anyio.to_thread.current_default_thread_limiter()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(clf.predict_proba, ["spam"])
        await gate.wait_entered()
        assert tokens(clf) == 1
        # wait_entered itself borrows one default token; the classifier's call does not.
        assert default.statistics().borrowed_tokens == 0
        gate.release.set()
    assert tokens(clf) == 0
    assert clf.limiter_.total_tokens >= 2


async def test_shared_limiter_bounds_several_classifiers() -> None:
    """Classifiers given one limiter share its tokens: while one classifier's batch
    holds the only token, the other's call waits for it and runs after."""
    limiter = anyio.CapacityLimiter(1)
    gate = Gate()
    first = AsyncClassifier(KeywordClassifier(gate=gate, block=["predict_proba"]), limiter=limiter)
    second = AsyncClassifier(KeywordClassifier(), limiter=limiter, max_latency=0)
    gate.release.set()
    await first.fit(TRAIN_X, TRAIN_Y)
    await second.fit(TRAIN_X, TRAIN_Y)
    assert first.limiter_ is second.limiter_ is limiter
    gate.close()
    answered: list[str] = []

    async def second_call() -> None:
        answered.append((await second.classify("eggs")).label)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first.classify, "spam")
            await gate.wait_entered()
            tasks.start_soon(second_call)
            await wait_all_tasks_blocked()
            assert answered == []
            assert limiter.statistics().tasks_waiting == 1
            gate.release.set()
    assert answered == ["eggs"]


async def test_predictions_during_a_fit_use_the_old_model_and_do_not_wait() -> None:
    """While a refit is held in its thread, predictions complete with the old model."""
    clf, gate = await fitted_then_gated("fit")
    old = clf.estimator_
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.fit, ["ham", "eggs"], ["ham", "eggs"])
            await gate.wait_entered()
            prediction = await clf.classify("spam spam")
            assert (prediction.label, prediction.version) == ("spam", 1)
            assert clf.estimator_ is old
            gate.release.set()
    assert clf.version == 2
    assert list(clf.classes_) == ["eggs", "ham"]
    assert (await clf.classify("eggs")).version == 2


async def test_failed_fit_keeps_the_serving_model(make: Classifiers) -> None:
    """A fit that raises leaves estimator_, classes_ and version unchanged."""
    clf = make(KeywordClassifier())
    await clf.fit(TRAIN_X, TRAIN_Y)
    old = clf.estimator_
    clf.set_params(estimator=BrokenFit())
    with pytest.raises(RuntimeError, match="the fit blew up"):
        await clf.fit(TRAIN_X, TRAIN_Y)
    assert clf.estimator_ is old
    assert clf.version == 1
    assert tokens(clf) == 0


@pytest.mark.parametrize("make", EVERYWHERE, indirect=True)
async def test_a_fit_error_reaches_the_caller_whole(make: Classifiers) -> None:
    """The estimator's exception from a fit reaches the caller with its own message and
    attributes, on every executor (unpickling would call __init__ again and garble it)."""
    clf = make(FitErrorClassifier("coded"))
    with pytest.raises(CodedError) as caught:
        await clf.fit(TRAIN_X, TRAIN_Y)
    assert str(caught.value) == "the model server returned HTTP 503"
    assert caught.value.code == 503
    assert clf.version == 0


async def test_a_fit_error_that_cannot_be_pickled_still_says_what_it_was(
    make: Classifiers,
) -> None:
    """A fit's exception that cannot cross back from a worker process (it holds a
    lock) reaches the caller as an AsyncClfError naming its type and message."""
    clf = make(FitErrorClassifier("locked"))
    expected = LockedError if make.in_process else AsyncClfError
    with pytest.raises(expected, match="fit locked") as caught:
        await clf.fit(TRAIN_X, TRAIN_Y)
    if not make.in_process:
        assert "tests.fakes.LockedError" in str(caught.value)
    assert clf.version == 0
    assert (await clf.set_params(estimator=KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)).version == 1


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
async def test_cancelled_fit_keeps_the_serving_model(method: str) -> None:
    """Cancelling a fit mid-run discards the result, leaks no token, and fit still works."""
    clf, gate = await fitted_then_gated(method)
    old = clf.estimator_
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            call = getattr(clf, method)
            tasks.start_soon(call, ["ham", "eggs"], ["ham", "eggs"])
            await gate.wait_entered()
            tasks.cancel_scope.cancel()
            # The worker cannot be interrupted: the cancellation lands once it returns.
            gate.release.set()
    assert clf.estimator_ is old
    assert clf.version == 1
    assert tokens(clf) == 0
    await call(TRAIN_X, TRAIN_Y)
    assert clf.version == 2


async def test_concurrent_fits_run_one_at_a_time() -> None:
    """A second fit does not enter the estimator until the first has finished."""
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=["fit"]))
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.fit, TRAIN_X, TRAIN_Y)
            await gate.wait_entered()
            tasks.start_soon(clf.fit, ["ham", "eggs"], ["ham", "eggs"])
            await wait_all_tasks_blocked()
            assert gate.calls == 1
            gate.release.set()
    assert gate.calls == 2
    assert clf.version == 2


async def test_partial_fit_never_mutates_the_serving_estimator(make: Classifiers) -> None:
    """partial_fit updates a copy; the estimator predictions read is never touched."""
    clf = make(KeywordClassifier())
    await clf.partial_fit(TRAIN_X, TRAIN_Y, classes=["eggs", "ham", "spam"])
    serving = clf.estimator_
    assert serving.n_updates_ == 1
    await clf.partial_fit(["ham"], ["ham"])
    assert serving.n_updates_ == 1
    assert clf.estimator_.n_updates_ == 2


async def test_cancelled_prediction_returns_at_once_and_leaks_nothing() -> None:
    """A prediction cancelled mid-run returns before its thread ends; no token leaks.

    The batch keeps its token until its thread ends, so the limiter still bounds the
    threads that run.
    """
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=["predict_proba"]))
    await clf.fit(TRAIN_X, TRAIN_Y)
    gate.close()
    with anyio.fail_after(DEADLINE):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(clf.predict_proba, ["spam"])
                await gate.wait_entered()
                scope.cancel()
        # Still held in the gate: the caller did not wait for its thread.
        assert scope.cancelled_caught
        assert not gate.release.is_set()
        assert tokens(clf) == 1
        gate.release.set()
        await settle(clf)
    assert tokens(clf) == 0
    assert clf.statistics().queue_depth == 0
    np.testing.assert_allclose(
        await clf.predict_proba(["spam"]), clf.estimator_.predict_proba(["spam"])
    )


async def test_sklearn_config_follows_the_caller_into_the_worker() -> None:
    """A sklearn.config_context active in the caller applies inside the worker thread."""
    log = CallLog()
    clf = AsyncClassifier(RecordingClassifier(log=log))
    await clf.fit(TRAIN_X, TRAIN_Y)
    await clf.predict_proba(["ham"])
    with sklearn.config_context(assume_finite=True):
        await clf.predict_proba(["ham"])
    assert log.assume_finite == [False, True]


async def test_calls_under_different_sklearn_configs_never_share_a_batch() -> None:
    """Each batch runs under the config its callers had when they called, never mixed."""
    gate = Gate()
    log = CallLog()
    clf = AsyncClassifier(RecordingClassifier(log=log, gate=gate, block=["predict_proba"]))
    await clf.fit(TRAIN_X, TRAIN_Y)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.classify, "plain 0")
            await gate.wait_entered()
            for i in range(1, 4):
                tasks.start_soon(clf.classify, f"plain {i}")
            await wait_all_tasks_blocked()
            # sklearn's config is thread-local, so it applies to whatever task runs
            # while it is set: only the "finite" tasks start inside it.
            with sklearn.config_context(assume_finite=True):
                for i in range(4):
                    tasks.start_soon(clf.classify, f"finite {i}")
                await wait_all_tasks_blocked()
            gate.release.set()
    assert sorted(log.seen) == sorted(
        [f"plain {i}" for i in range(4)] + [f"finite {i}" for i in range(4)]
    )
    for batch, finite_config in zip(log.batches, log.assume_finite, strict=True):
        assert {text.split()[0] for text in batch} == {"finite" if finite_config else "plain"}
    assert True in log.assume_finite


@pytest.mark.parametrize("tokens", [None, 1])
async def test_native_thread_pools_are_capped_in_workers(tokens: int | None) -> None:
    """OpenMP pools seen inside a worker hold exactly cores // limiter tokens threads
    (at least 1); the default limiter has a token per core.

    BLAS pools are capped too, best effort: OpenBLAS 0.3.30 was seen ignoring
    ``openblas_set_num_threads`` from a new thread while an older one lived (see
    docs/concurrency.md), so only OpenMP, whose setting is per thread, is asserted.
    """
    cores = len(os.sched_getaffinity(0))
    limiter = None if tokens is None else anyio.CapacityLimiter(tokens)
    expected = max(1, cores // (cores if tokens is None else min(tokens, cores)))
    log = CallLog()
    clf = AsyncClassifier(RecordingClassifier(log=log), limiter=limiter)
    await clf.fit(TRAIN_X, TRAIN_Y)
    await clf.predict_proba(["ham"])
    assert log.native_threads, "threadpoolctl found no OpenMP pool (scikit-learn ships one)"
    assert set(log.native_threads) == {expected}


async def test_event_loop_stays_responsive_during_a_fit() -> None:
    """The loop keeps running other tasks while a fit is held in its worker thread."""
    gate = Gate()
    clf = AsyncClassifier(KeywordClassifier(gate=gate, block=["fit"]))
    ticks = 0
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(clf.fit, TRAIN_X, TRAIN_Y)
            await gate.wait_entered()
            for _ in range(100):
                await checkpoint()
                ticks += 1
            gate.release.set()
    assert ticks == 100
    assert clf.version == 1
