"""Where the estimator's synchronous code runs: anyio worker threads under a limiter.

Every call into scikit-learn goes through :class:`ThreadExecutor`. It

* holds a token of the classifier's own :class:`anyio.CapacityLimiter` for as long
  as the worker thread runs (never anyio's global 40-thread default);
* carries the caller's ``sklearn.get_config()`` into the worker, because scikit-learn's
  configuration is thread-local;
* caps BLAS/OpenMP thread pools while any asyncclf call runs, so that ``limiter``
  tokens times native threads never exceeds the machine's cores.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import sklearn
from anyio.lowlevel import RunVar
from threadpoolctl import ThreadpoolController

from ._errors import AsyncClfError

__all__ = ["Job", "PerRun", "ThreadExecutor", "available_cpus"]

T = TypeVar("T")


def available_cpus() -> int:
    """Return how many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class _NativeThreadCap:
    """Cap BLAS and OpenMP threads while asyncclf work runs.

    OpenMP's thread count is per thread, so each worker call sets and restores its own.
    BLAS pools (OpenBLAS, MKL, BLIS) are process-wide, so limits set and restored
    independently by overlapping calls would race (one call restoring the original
    while another still runs): there the first active call sets the cap and the last
    one restores it. Each library is set on its own: threadpoolctl's ``limit()`` object
    restores every library at once, which undoes the other kind's setting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._libraries: list[Any] = []
        self._modules = -1
        self._saved_blas: list[tuple[Any, int]] = []

    def _refresh(self) -> None:
        # Finding the loaded libraries takes milliseconds, so it is redone only when
        # modules were imported since (a new native library may have come with them).
        if self._modules != len(sys.modules):
            self._libraries = ThreadpoolController().lib_controllers
            self._modules = len(sys.modules)

    @staticmethod
    def _cap(libraries: list[Any], threads: int) -> list[tuple[Any, int]]:
        saved = [(library, library.get_num_threads()) for library in libraries]
        for library, current in saved:
            if current is not None and current > threads:
                library.set_num_threads(threads)
        return saved

    @staticmethod
    def _restore(saved: list[tuple[Any, int]]) -> None:
        for library, original in saved:
            if original is not None:
                library.set_num_threads(original)

    @contextmanager
    def __call__(self, threads: int) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._refresh()
                blas = [lib for lib in self._libraries if lib.user_api == "blas"]
                self._saved_blas = self._cap(blas, threads)
            self._active += 1
            openmp = [lib for lib in self._libraries if lib.user_api == "openmp"]
        saved_openmp = self._cap(openmp, threads)
        try:
            yield
        finally:
            self._restore(saved_openmp)
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._restore(self._saved_blas)
                    self._saved_blas = []


_native_thread_cap = _NativeThreadCap()

_POOL = ThreadPoolExecutor(max_workers=256, thread_name_prefix="asyncclf")
"""Threads for prediction batches. A batch takes a limiter token before it is
submitted, so the limiters bound how many run; threads are made as needed, and
at most as many as batches ever ran at once."""


def _call_in_worker(
    config: dict[str, Any], threads: int, func: Callable[..., T], args: tuple[Any, ...]
) -> T:
    with sklearn.config_context(**config), _native_thread_cap(threads):
        return func(*args)


class PerRun(Generic[T]):
    """One object per event-loop run, made on first use in that run.

    anyio's primitives belong to the event loop they were first used in, so a
    classifier used in successive ``asyncio.run``/``trio.run`` calls (of either
    backend) gets a limiter and a lock of its own in each run. Nothing a run left
    behind (a token held by a batch whose thread outlived its loop) reaches the next.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._var: RunVar[T] = RunVar(f"asyncclf-{id(self):x}")

    def get(self) -> T:
        """Return this run's object, making it if needed (needs a running loop)."""
        try:
            return self._var.get()
        except LookupError:
            made = self._factory()
            self._var.set(made)
            return made


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


class ThreadExecutor:
    """Run synchronous estimator code in worker threads under one limiter."""

    def __init__(self, limiter: anyio.CapacityLimiter | None = None) -> None:
        self.set_limiter(limiter)
        # ``run`` takes a token of ``limiter``; its anyio thread must not count against
        # anyio's global default limiter as well, so it gets an unbounded one.
        self._threads = PerRun(lambda: anyio.CapacityLimiter(math.inf))

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

    async def acquire(self) -> Job:
        """Wait for a limiter token (cancellable) and return the job that holds it."""
        limiter = self.limiter
        job = Job(limiter)
        await limiter.acquire_on_behalf_of(job)
        job._held = True
        return job

    async def run_detached(
        self,
        job: Job,
        func: Callable[..., T],
        args: tuple[Any, ...],
        done: Callable[[T | Exception], None],
    ) -> None:
        """Run ``func(*args)`` in a worker thread under ``job``'s token, then ``done``.

        The work is handed to a thread at once, with no checkpoint before, so it runs
        whatever happens to the caller. ``done(result)`` (or ``done(exception)``) then
        runs on the event loop exactly once, after the token is released. Awaiting this
        returns once ``done`` has run, or at once when cancelled: the thread runs on
        and delivers its result through the event loop when it ends, so the work
        completes for everybody else waiting on it. If the event loop has ended by
        then, the token is released from the thread and the result dropped.

        ``func`` raising a ``BaseException`` that is not an ``Exception`` (say
        ``SystemExit`` inside estimator code) reaches ``done`` as an ``AsyncClfError``
        caused by it: in a worker thread it can interrupt nothing but the batch.
        """
        token = anyio.lowlevel.current_token()
        config = sklearn.get_config()
        threads = self.native_threads
        finished = anyio.Event()

        def finish(result: T | Exception) -> None:
            # On the event loop, scheduled by the thread.
            job.release()
            try:
                done(result)
            finally:
                finished.set()

        def work() -> None:
            result: T | Exception
            try:
                result = _call_in_worker(config, threads, func, args)
            except Exception as exc:
                result = exc
            except BaseException as exc:
                msg = f"The worker was interrupted by {exc!r}."
                result = AsyncClfError(msg)
                result.__cause__ = exc
            try:
                token.backend_class.run_sync_soon(finish, (result,), token.native_token)
            except anyio.RunFinishedError:
                # The event loop has ended: nobody waits any more. The token goes back
                # all the same (harmless once the loop is gone).
                with contextlib.suppress(Exception):
                    job.release()

        try:
            _POOL.submit(work)
        except RuntimeError as exc:  # the interpreter is shutting down
            msg = "No worker thread could be started: the interpreter is shutting down."
            error = AsyncClfError(msg)
            error.__cause__ = exc
            finish(error)
        await finished.wait()

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Take a limiter token, then run ``func(*args)`` in an anyio worker thread.

        For fits and file I/O, whose caller must know the outcome: the thread always
        runs to completion, cancelling the caller takes effect when the thread
        returns, and its result is then discarded.
        """
        async with self.limiter:
            result = await anyio.to_thread.run_sync(
                _call_in_worker,
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
