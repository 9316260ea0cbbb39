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

import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_process
import anyio.to_thread
import sklearn
from anyio import BrokenWorkerProcess
from anyio.lowlevel import RunVar

from . import _work
from ._errors import AsyncClfError, InvalidParameterError
from ._types import Executor, Token
from ._work import call_in_worker

__all__ = [
    "Job",
    "PerRun",
    "ProcessExecutor",
    "ThreadExecutor",
    "available_cpus",
    "make_executor",
]

T = TypeVar("T")


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

    @property
    def capacity(self) -> float:
        """How many calls can run at once: the limiter's tokens (inside an event loop)."""
        return self.limiter.total_tokens

    async def acquire(self) -> Job:
        """Wait for a limiter token (cancellable) and return the job that holds it."""
        _release_orphans()
        limiter = self.limiter
        job = Job(limiter)
        await limiter.acquire_on_behalf_of(job)
        job._held = True
        return job

    async def run_detached(
        self,
        job: Token,
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
        assert isinstance(job, Job), "a token from this executor's acquire()"
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
                result = self._call(config, threads, func, args, token)
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
                # at the next acquire, on whatever loop then runs.
                job.orphan()

        try:
            _POOL.submit(work)
        except RuntimeError as exc:  # the interpreter is shutting down
            msg = "No worker thread could be started: the interpreter is shutting down."
            error = AsyncClfError(msg)
            error.__cause__ = exc
            finish(error)
        await finished.wait()

    def _call(
        self,
        config: dict[str, Any],
        threads: int,
        func: Callable[..., T],
        args: tuple[Any, ...],
        token: anyio.lowlevel.EventLoopToken,
    ) -> T:
        """Run one batch, from a thread of asyncclf's pool: here, in that thread."""
        return call_in_worker(config, threads, func, args)

    def ref(self, model: Any) -> Any:
        """What names ``model`` (a served model) to a worker: the estimator itself."""
        return model.estimator

    async def fit(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a fit (``_work.fit`` or ``_work.partial_fit``) and return the estimator.

        ``partial_fit``'s serving estimator is passed as ``ref(model)``.
        """
        return await self.run(func, *args)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Take a limiter token, then run ``func(*args)`` in an anyio worker thread.

        For fits and file I/O, whose caller must know the outcome: the thread always
        runs to completion, cancelling the caller takes effect when the thread
        returns, and its result is then discarded.
        """
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


class ProcessExecutor(ThreadExecutor):
    """Run the estimator in worker processes, on this machine.

    Each batch and each fit runs in a process of anyio's pool (``anyio.to_process``),
    so scikit-learn never holds the event loop's GIL and batches run in parallel on
    every core. A model version crosses to a worker once: it is written to a file the
    first time a batch needs it, and each worker loads it once and keeps it
    (:class:`~asyncclf._work.ModelHandle`); a batch carries only its texts.

    A fit runs in a worker too; cancelling it kills that worker (anyio replaces it), so
    a cancelled fit returns at once. A worker that dies fails only the batch it held,
    with an :class:`AsyncClfError` saying so; the next calls get a fresh worker.

    Args:
        max_workers: Worker processes (and limiter tokens by default); ``None``
            means one per CPU.
    """

    def __init__(
        self, max_workers: int | None = None, limiter: anyio.CapacityLimiter | None = None
    ) -> None:
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            msg = f"max_workers must be an int >= 1 or None, not {max_workers!r}."
            raise InvalidParameterError(msg)
        if "__main__" not in sys.modules or sys.modules["__main__"].__name__ == "__mp_main__":
            # A worker process imports the parent's script as __mp_main__ to find its
            # functions: the script's unguarded top-level code is running again here.
            msg = (
                "ProcessExecutor was created while a worker process imported your script "
                "(its top-level code runs again in every worker). Put the code that runs "
                'the program under  if __name__ == "__main__":  as multiprocessing requires.'
            )
            raise AsyncClfError(msg)
        self.max_workers = max_workers or available_cpus()
        super().__init__(limiter)
        # At most max_workers worker processes, whatever limiter the batches share.
        self._processes = PerRun(lambda: anyio.CapacityLimiter(self.max_workers))
        self._directory = tempfile.mkdtemp(prefix="asyncclf-models-")
        weakref.finalize(self, shutil.rmtree, self._directory, True)
        self._shipments: weakref.WeakKeyDictionary[Any, _Shipment] = weakref.WeakKeyDictionary()

    def set_limiter(self, limiter: anyio.CapacityLimiter | None) -> None:
        """Use ``limiter``, or (``None``) one with a token per worker process."""
        cpus = available_cpus()
        self._given = limiter
        workers = self.max_workers
        self._default = PerRun(lambda: anyio.CapacityLimiter(workers))
        tokens = workers if limiter is None else min(limiter.total_tokens, workers)
        self.native_threads = max(1, cpus // max(1, int(tokens)))

    @property
    def capacity(self) -> float:
        """How many calls can run at once: the limiter's tokens, at most ``max_workers``."""
        return min(self.limiter.total_tokens, self.max_workers)

    def ref(self, model: Any) -> Any:
        """A handle naming ``model`` to the workers; its file is written on first use."""
        shipment = self._shipments.get(model)
        if shipment is None:
            shipment = self._shipments[model] = _Shipment(model.estimator, self._directory)
        return shipment

    def _call(
        self,
        config: dict[str, Any],
        threads: int,
        func: Callable[..., T],
        args: tuple[Any, ...],
        token: anyio.lowlevel.EventLoopToken,
    ) -> T:
        # In a thread of asyncclf's pool: write any model version not on disk yet (off
        # the event loop), then drive the worker process from a task on the loop.
        for shipment in list(self._shipments.values()):
            shipment.write()
        return anyio.from_thread.run(self._in_process, config, threads, func, args, token=token)

    async def _in_process(
        self,
        config: dict[str, Any],
        threads: int,
        func: Callable[..., T],
        args: tuple[Any, ...],
    ) -> T:
        await _pool_outlives_this_task()
        with _worker_died("running this call"):
            return _work.returned(
                await anyio.to_process.run_sync(
                    _work.call_portable, config, threads, func, args, limiter=self._processes.get()
                )
            )

    async def fit(self, func: Callable[..., Any], *args: Any) -> Any:
        """Fit in a worker process; cancelling kills the worker and returns at once.

        What crosses goes through files, pickled and unpickled in threads a frame at a
        time (``_work.dump``), so it never passes through the event loop and never
        holds the GIL for long: the training texts on the way there, and on the way
        back the model packed (its vocabularies as arrays, ``_work.fit_packed``).
        """
        packed: dict[Callable[..., Any], Callable[..., Any]] = {
            _work.fit: _work.fit_packed,
            _work.partial_fit: _work.partial_fit_packed,
        }
        arguments = tuple(_handle_for_fit(self, arg) for arg in args)
        call = (sklearn.get_config(), self.native_threads, packed[func], arguments)
        name = os.path.join(self._directory, uuid.uuid4().hex)
        request, reply = f"{name}.request", f"{name}.reply"
        os.makedirs(self._directory, exist_ok=True)  # if a cleaner removed it
        try:
            async with self.limiter:
                for shipment in list(self._shipments.values()):
                    await anyio.to_thread.run_sync(shipment.write)
                await anyio.to_thread.run_sync(_work.dump, call, request)
                await _pool_outlives_this_task()
                with _worker_died("running this fit"):
                    await anyio.to_process.run_sync(
                        _work.call_in_files,
                        request,
                        reply,
                        cancellable=True,
                        limiter=self._processes.get(),
                    )
            fitted = await anyio.to_thread.run_sync(_work.load_unpacked, reply)
            # Cancelled while the model was read back: the caller must not swap it in.
            await anyio.lowlevel.checkpoint_if_cancelled()
            return fitted
        finally:
            # Left over only when the fit failed or was cancelled (each side removes
            # the file it read).
            _remove(request)
            _remove(reply)


async def _pool_outlives_this_task() -> None:
    """Make sure anyio's process pool lives as long as the event loop, not the task.

    On asyncio, anyio kills the pool's worker processes when the event loop's root
    task ends, and takes for the root the first task that uses the pool unless the
    loop was started by ``asyncio.run`` (or ``run_until_complete``). In a Jupyter
    kernel, whose loop runs forever, that is a cell's task: every worker died when
    the first cell that used one finished, and the next cell's batch failed. So the
    pool is first used by a task of asyncclf's own, outside anyio's task tree, which
    then waits until the loop cancels it at its end: anyio ties the shutdown to that
    task, as it does itself for its pool's shutdown task. Once a run; on trio, anyio
    uses a system task and nothing is needed.
    """
    setup = _POOL_SETUP.get()
    if setup.done.is_set():
        return  # every batch after the first: no checkpoint added to its way
    if not setup.started:
        setup.started = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio
            loop = None
        if loop is None:
            setup.done.set()
        else:

            async def keep_the_pool() -> None:
                try:
                    with contextlib.suppress(Exception):  # the caller's call says why
                        await anyio.to_process.run_sync(int)
                finally:
                    setup.done.set()
                await asyncio.Event().wait()  # until the loop ends and cancels it

            setup.keeper = loop.create_task(keep_the_pool(), name="asyncclf process pool")
    await setup.done.wait()


class _Setup:
    def __init__(self) -> None:
        self.started = False
        self.done = anyio.Event()
        self.keeper: asyncio.Task[None] | None = None


_POOL_SETUP: PerRun[_Setup] = PerRun(_Setup)
"""Whether anyio's process pool was set up in this run (see ``_pool_outlives_this_task``)."""


@contextlib.contextmanager
def _worker_died(doing: str) -> Iterator[None]:
    """Turn anyio's ``BrokenWorkerProcess`` into an ``AsyncClfError`` saying why."""
    try:
        yield
    except BrokenWorkerProcess as exc:
        if isinstance(exc.__cause__, AsyncClfError):  # e.g. the unguarded script
            raise AsyncClfError(str(exc.__cause__)) from exc
        msg = (
            f"The worker process {doing} died (killed, out of memory, or a crash in "
            "native code); the next call gets a new worker."
        )
        raise AsyncClfError(msg) from exc


def _handle_for_fit(executor: ProcessExecutor, arg: Any) -> Any:
    return arg.handle() if isinstance(arg, _Shipment) else arg


class _Shipment:
    """A model version on its way to the workers: written to a file on demand, once
    (again if the file vanished).

    Pickled, it is a :class:`~asyncclf._work.ModelHandle` (key and path). The file
    goes when the served model it belongs to is gone.
    """

    def __init__(self, estimator: Any, directory: str) -> None:
        self._estimator: Any = estimator
        self._lock = threading.Lock()
        self.key = uuid.uuid4().hex
        self.path = os.path.join(directory, f"{self.key}.pickle")
        weakref.finalize(self, _remove, self.path)

    def write(self) -> None:
        """Write the model's file unless it is there (in a worker thread), again if it
        went (a temporary-file cleaner may remove it, or its directory)."""
        with self._lock:
            if os.path.exists(self.path):
                return
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            temporary = f"{self.path}.tmp"
            _work.dump(_work.pack(self._estimator), temporary)
            os.replace(temporary, self.path)

    def handle(self) -> _work.ModelHandle:
        return _work.ModelHandle(self.key, self.path)

    def __reduce__(self) -> tuple[Any, ...]:
        return _work.ModelHandle, (self.key, self.path)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def make_executor(executor: str | Executor, limiter: anyio.CapacityLimiter | None) -> Executor:
    """The executor named by ``executor`` (``"threads"``, ``"processes"``) or given."""
    if executor == "threads":
        return ThreadExecutor(limiter)
    if executor == "processes":
        return ProcessExecutor(limiter=limiter)
    assert isinstance(executor, Executor)
    if limiter is not None:
        executor.set_limiter(limiter)
    return executor
