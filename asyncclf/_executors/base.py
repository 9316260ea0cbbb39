"""The executor seam (:class:`Executor`) and what every executor shares: CPUs, the pool
of threads batches run from, per-run objects, and limiter tokens held by work rather
than tasks."""

from __future__ import annotations

import abc
import concurrent.futures
import contextlib
import math
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import sklearn
from anyio.lowlevel import RunVar
from typing_extensions import Self

from .._errors import AsyncClfError
from .._validation import Instance, check_param, or_none
from .._work.threads import Call, call_in_worker

T = TypeVar("T")

LIMITER = or_none(Instance(anyio.CapacityLimiter, "an anyio.CapacityLimiter"))
"""What an executor's ``limiter`` may be."""


def available_cpus() -> int:
    """Return how many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


_POOL = ThreadPoolExecutor(max_workers=256, thread_name_prefix="asyncclf")
"""Threads for prediction batches. A batch takes a limiter token before it is
submitted, so the limiters bound how many run; threads are made as needed, and
at most as many as batches ever ran at once."""


class PerRun(Generic[T]):
    """One object per event-loop run, made on first use in that run.

    anyio's primitives belong to the event loop they were first used in, so a
    classifier used in successive ``asyncio.run``/``trio.run`` calls (of either
    backend) gets a limiter and a lock of its own in each run. Nothing a run left
    behind (a token held by a batch whose thread outlived its loop) reaches the next.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory

    def get(self) -> T:
        """Return this run's object, making it if needed (needs a running loop)."""
        try:
            made: weakref.WeakKeyDictionary[PerRun[Any], Any] = _PER_RUN.get()
        except LookupError:
            made = weakref.WeakKeyDictionary()
            _PER_RUN.set(made)
        try:
            value: T = made[self]
        except KeyError:
            value = made[self] = self._factory()
        return value


_PER_RUN: RunVar[weakref.WeakKeyDictionary[PerRun[Any], Any]] = RunVar("asyncclf-per-run")
"""Each run's objects, by owner: one table a run, whose entries go with their owners
(a classifier dropped during a long run leaves nothing behind)."""


class Job:
    """One limiter token held for a piece of work, by the work rather than a task.

    A batch's token must outlive its leader: the leader may be cancelled and return
    while the batch still runs in its thread, and the token is given back only when
    the thread ends (see :meth:`ThreadExecutor.run_detached`).
    """

    __slots__ = ("_held", "_limiter")

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._held = False

    def release(self) -> None:
        """Give the token back (once; later calls do nothing). Call on the event loop."""
        if self._held:
            self._held = False
            self._limiter.release_on_behalf_of(self)

    def orphan(self) -> None:
        """Give the token back later, on an event loop: its own loop has ended.

        A limiter may outlive the loop (one passed as ``limiter=`` is used by the next
        ``anyio.run``): releasing it from a worker thread could race that loop, so the
        next ``acquire`` of any executor releases it, on its loop.
        """
        with _ORPHANS_LOCK:
            _ORPHANS.append(self)


_ORPHANS: list[Job] = []
_ORPHANS_LOCK = threading.Lock()


def _release_orphans() -> None:
    """Release the tokens of batches that outlived their event loop (on a loop)."""
    if _ORPHANS:
        with _ORPHANS_LOCK:
            orphans = _ORPHANS[:]
            _ORPHANS.clear()
        for job in orphans:
            with contextlib.suppress(Exception):
                job.release()


class Executor(abc.ABC):
    """Where a classifier's estimator code runs: subclass it and implement :meth:`submit`.

    asyncclf hands an executor small, picklable calls (a batch of texts and a handle
    naming the model, or a fit) and the executor starts each one somewhere: a thread, a
    process, a cluster. Everything else is done here, the same for every executor:

    * each call holds a token of :attr:`limiter` from before it starts until it ends,
      whatever happens to the task that asked for it (a cancelled caller does not free
      a worker that is still busy); tokens of calls that outlived their event loop are
      given back on the next loop;
    * each call carries the caller's ``sklearn.get_config()``, and caps BLAS/OpenMP
      threads at :attr:`native_threads` while it runs, so that tokens times native
      threads never exceed the machine's cores;
    * a result or an exception is delivered on the caller's event loop, on asyncio and
      trio alike.

    See docs/scaling.md for a complete executor in a few lines.

    Args:
        limiter: The limiter calls share; ``None`` makes one with a token per CPU (at
            least 2, so that a prediction never waits behind a fit).
    """

    def __init__(self, limiter: anyio.CapacityLimiter | None = None) -> None:
        self._closed = False
        # ``run`` takes a token of ``limiter``; its anyio thread must not count against
        # anyio's global default limiter as well, so it gets an unbounded one.
        self._threads = PerRun(lambda: anyio.CapacityLimiter(math.inf))
        self.set_limiter(check_param("limiter", limiter, LIMITER))

    # -- the seam --------------------------------------------------------------------

    @abc.abstractmethod
    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Start ``call()`` in a worker and return a future of its result.

        Called on the event loop: return at once, without blocking. ``call`` takes no
        arguments and pickles (a process or a remote worker can run it); it runs the
        estimator and returns its result or raises its exception. Set the future's
        result to what ``call()`` returns, or its exception to what it raises: a
        ``concurrent.futures`` executor's ``submit(call)`` does exactly that. A worker
        that dies, or an executor that cannot start the call, sets an exception too
        (an :class:`~asyncclf.AsyncClfError` saying what happened is best); only the
        calls it ran fail with it. A future that is cancelled fails its call with an
        :class:`~asyncclf.AsyncClfError`.
        """

    async def aclose(self) -> None:
        """Refuse new calls from now on; calls already started finish. Idempotent.

        Subclasses that hold resources (processes, files, a connection) release them
        here and call ``super().aclose()``.
        """
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    # -- the limiter -----------------------------------------------------------------

    def set_limiter(self, limiter: anyio.CapacityLimiter | None) -> None:
        """Use ``limiter``, or (``None``) a limiter with a token per CPU, at least 2."""
        cpus = available_cpus()
        self._given = limiter
        self._default = PerRun(lambda: anyio.CapacityLimiter(max(2, cpus)))
        tokens = cpus if limiter is None else min(limiter.total_tokens, cpus)
        self.native_threads = max(1, cpus // max(1, int(tokens)))
        """BLAS/OpenMP threads allowed per worker call: cores // limiter tokens."""

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """The limiter in force (call it inside an event loop)."""
        return self._given if self._given is not None else self._default.get()

    @property
    def capacity(self) -> float:
        """How many calls can run at once: the limiter's tokens (inside an event loop).
        A stream keeps this many batches in flight."""
        return self.limiter.total_tokens

    # -- what the classifier calls ---------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = (
                f"This {type(self).__name__} is closed (by its aclose(), or by the "
                f"AsyncClassifier that made it); make a new one."
            )
            raise AsyncClfError(msg)

    async def acquire(self) -> Job:
        """Wait for a limiter token (cancellable) and return the job that holds it."""
        self._check_open()
        _release_orphans()
        limiter = self.limiter
        job = Job(limiter)
        await limiter.acquire_on_behalf_of(job)
        job._held = True
        return job

    def call(self, func: Callable[..., T], args: tuple[Any, ...]) -> Call:
        """``func(*args)`` as a worker runs it: the caller's scikit-learn settings and
        this executor's native threads (on the event loop)."""
        return Call(func, args, sklearn.get_config(), self.native_threads)

    async def run_detached(
        self,
        job: Job,
        func: Callable[..., T],
        args: tuple[Any, ...],
        done: Callable[[T | Exception], None],
    ) -> None:
        """Start ``func(*args)`` through :meth:`submit` at once (no checkpoint before)
        under ``job``'s token, then call ``done`` with its result or exception.

        ``done`` runs on the event loop exactly once, after the token is released.
        Awaiting this returns once ``done`` has run, or at once when cancelled: the work
        runs on and delivers its result through the event loop when it ends, so it
        completes for everybody else waiting on it. If the event loop has ended by then,
        the token goes back on the next loop and the result is dropped.

        An exception that is not an ``Exception`` (``SystemExit`` inside estimator
        code) reaches ``done`` as an ``AsyncClfError`` caused by it: in a worker it can
        interrupt nothing but the batch.
        """
        token = anyio.lowlevel.current_token()
        finished = anyio.Event()

        def finish(result: T | Exception) -> None:
            # On the event loop.
            job.release()
            try:
                done(result)
            finally:
                finished.set()

        delivered = False

        def deliver(future: concurrent.futures.Future[T]) -> None:
            # Where the future ends: a worker thread, or the loop if it ended at once.
            nonlocal delivered
            if delivered:  # a future of one's own that runs its callbacks twice
                return
            delivered = True
            result = _outcome(future)
            try:
                token.backend_class.run_sync_soon(finish, (result,), token.native_token)
            except anyio.RunFinishedError:
                # The event loop has ended: nobody waits any more. The token goes back
                # at the next acquire, on whatever loop then runs.
                job.orphan()

        try:
            self._check_open()
            future = self.submit(self.call(func, args))
            if not isinstance(future, concurrent.futures.Future):
                msg = (
                    f"{type(self).__name__}.submit() returned {future!r} instead of a "
                    f"concurrent.futures.Future."
                )
                raise AsyncClfError(msg)
            future.add_done_callback(deliver)
        except Exception as exc:
            if not delivered:
                finish(_failed_to_start(self, exc))
        await finished.wait()

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Take a limiter token, then run ``func(*args)`` in an anyio worker thread of
        this process.

        For file I/O and the steps of online learning, which update the caller's own
        learner in place: the thread always runs to completion, cancelling the caller
        takes effect when the thread returns, and its result is then discarded.
        """
        self._check_open()
        async with self.limiter:
            result = await anyio.to_thread.run_sync(
                call_in_worker,
                sklearn.get_config(),
                self.native_threads,
                func,
                args,
                limiter=self._threads.get(),
            )
            # anyio delivers a cancellation that arrived while the thread ran only at the
            # next checkpoint; take it here, so no caller acts on a cancelled result.
            await anyio.lowlevel.checkpoint_if_cancelled()
            return result

    async def fit(
        self,
        func: Callable[..., Any],
        *args: Any,
        on_step: Callable[[int], object] | None = None,
    ) -> Any:
        """Run a fit (``training.fit`` or ``training.partial_fit``) through :meth:`submit`
        and return the fitted estimator.

        ``on_step(n)`` is called on the event loop as the fit's ``n``-th step ends, by
        executors that can tell (threads); others ignore it. Cancelling takes effect
        when the call ends; its result is then discarded. ``partial_fit``'s serving
        estimator is passed as ``ref(model)``.
        """
        job = await self.acquire()
        outcome: list[Any] = []
        with anyio.CancelScope(shield=True):
            await self.run_detached(job, func, args, outcome.append)
        await anyio.lowlevel.checkpoint_if_cancelled()
        [result] = outcome
        if isinstance(result, Exception):
            raise result
        return result

    def ref(self, model: Any) -> Any:
        """What names a served model to a worker: by default the estimator itself, sent
        with every call; built-in executors send each version once and name it by key."""
        return model.estimator


def _outcome(future: concurrent.futures.Future[T]) -> T | Exception:
    """A finished future's result, or its exception as an ``Exception``."""
    try:
        return future.result()
    except concurrent.futures.CancelledError as exc:
        error = AsyncClfError("The executor cancelled this call before it ran.")
        error.__cause__ = exc
        return error
    except Exception as exc:
        return exc
    except BaseException as exc:
        error = AsyncClfError(f"The worker was interrupted by {exc!r}.")
        error.__cause__ = exc
        return error


def _failed_to_start(executor: Executor, exc: Exception) -> Exception:
    """What a call's caller gets when :meth:`Executor.submit` raised instead of starting it."""
    if isinstance(exc, AsyncClfError):
        return exc
    if isinstance(exc, RuntimeError) and "shutdown" in str(exc):
        msg = "No worker could be started: the interpreter or the executor is shutting down."
    else:
        msg = f"{type(executor).__name__}.submit() could not start the call: {exc!r}"
    error = AsyncClfError(msg)
    error.__cause__ = exc
    return error
