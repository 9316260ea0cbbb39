"""Run the estimator in worker processes on this machine (anyio's process pool)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_process
import anyio.to_thread
from anyio import BrokenWorkerProcess

from .._errors import AsyncClfError
from .._validation import Integer, check_param, or_none
from .._work import handles, packing, training, transport
from .base import _POOL, Executor, PerRun, available_cpus

T = TypeVar("T")


class ProcessExecutor(Executor):
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
        workers = check_param("max_workers", max_workers, or_none(Integer(1)))
        if "__main__" not in sys.modules or sys.modules["__main__"].__name__ == "__mp_main__":
            # A worker process imports the parent's script as __mp_main__ to find its
            # functions: the script's unguarded top-level code is running again here.
            msg = (
                "ProcessExecutor was created while a worker process imported your script "
                "(its top-level code runs again in every worker). Put the code that runs "
                'the program under  if __name__ == "__main__":  as multiprocessing requires.'
            )
            raise AsyncClfError(msg)
        self.max_workers = available_cpus() if workers is None else workers
        super().__init__(limiter)
        # At most max_workers worker processes, whatever limiter the batches share.
        self._processes = PerRun(lambda: anyio.CapacityLimiter(self.max_workers))
        self._directory = tempfile.mkdtemp(prefix="asyncclf-models-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._directory, True)
        self._lock = threading.Lock()
        self._in_flight = 0
        """Calls started and not ended: the model files stay until none is left."""
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

    async def aclose(self) -> None:
        """Refuse new calls and remove the model files shipped to the workers.

        Calls already started finish. The worker processes are anyio's, shared by the
        event loop's users: anyio stops them when they have been idle for a while, or
        when the event loop ends. Shielded from cancellation; idempotent.
        """
        await super().aclose()
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._release_if_idle)
            finally:
                # Natively cancelled (Task.cancel()) all the same: release here.
                self._release_if_idle()

    def _release_if_idle(self) -> None:
        """Remove the model files once closed and no call needs them (the last call
        to end does it, if calls were still running at ``aclose``). Idempotent."""
        with self._lock:
            if not self._closed or self._in_flight:
                return
        self._cleanup()

    def _started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _ended(self, *_: object) -> None:
        with self._lock:
            self._in_flight -= 1
        self._release_if_idle()

    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``call()`` in a worker process, driven from a thread of asyncclf's pool."""
        token = anyio.lowlevel.current_token()
        self._started()
        future = _POOL.submit(self._in_worker_process, call, token)
        future.add_done_callback(self._ended)
        return future

    def _in_worker_process(self, call: Callable[[], T], token: anyio.lowlevel.EventLoopToken) -> T:
        # In a thread of asyncclf's pool: write any model version not on disk yet (off
        # the event loop), then drive the worker process from a task on the loop.
        for shipment in list(self._shipments.values()):
            shipment.write()
        return anyio.from_thread.run(self._in_process, call, token=token)

    async def _in_process(self, call: Callable[[], T]) -> T:
        await _pool_outlives_this_task()
        with _worker_died("running this call"):
            return transport.returned(
                await anyio.to_process.run_sync(
                    transport.call_portable, call, limiter=self._processes.get()
                )
            )

    async def fit(
        self,
        func: Callable[..., Any],
        *args: Any,
        on_step: Callable[[int], object] | None = None,
    ) -> Any:
        """Fit in a worker process; cancelling kills the worker and returns at once.

        ``on_step`` is not called: the steps end in another process.

        What crosses goes through files, pickled and unpickled in threads a frame at a
        time (``handles.dump``), so it never passes through the event loop and never
        holds the GIL for long: the training texts on the way there, and on the way
        back the model packed (its vocabularies as arrays, ``training.fit_packed``).
        """
        packed: dict[Callable[..., Any], Callable[..., Any]] = {
            training.fit: training.fit_packed,
            training.partial_fit: training.partial_fit_packed,
        }
        self._check_open()
        arguments = tuple(_handle_for_fit(self, arg) for arg in args)
        call = self.call(packed[func], arguments)
        name = os.path.join(self._directory, uuid.uuid4().hex)
        request, reply = f"{name}.request", f"{name}.reply"
        os.makedirs(self._directory, exist_ok=True)  # if a cleaner removed it
        self._started()
        try:
            async with self.limiter:
                for shipment in list(self._shipments.values()):
                    await anyio.to_thread.run_sync(shipment.write)
                await anyio.to_thread.run_sync(handles.dump, call, request)
                await _pool_outlives_this_task()
                with _worker_died("running this fit"):
                    await anyio.to_process.run_sync(
                        handles.call_in_files,
                        request,
                        reply,
                        cancellable=True,
                        limiter=self._processes.get(),
                    )
            fitted = await anyio.to_thread.run_sync(handles.load_unpacked, reply)
            # Cancelled while the model was read back: the caller must not swap it in.
            await anyio.lowlevel.checkpoint_if_cancelled()
            return fitted
        finally:
            # Left over only when the fit failed or was cancelled (each side removes
            # the file it read).
            _remove(request)
            _remove(reply)
            self._ended()


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
            handles.dump(packing.pack(self._estimator), temporary)
            os.replace(temporary, self.path)

    def handle(self) -> handles.ModelHandle:
        return handles.ModelHandle(self.key, self.path)

    def __reduce__(self) -> tuple[Any, ...]:
        return handles.ModelHandle, (self.key, self.path)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
