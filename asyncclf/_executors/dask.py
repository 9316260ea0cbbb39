"""Run the estimator on a Dask ``distributed`` cluster, behind the executor seam.

:class:`DaskExecutor` is an :class:`~asyncclf.Executor` whose ``submit`` (a
prediction batch, waited for in a thread of asyncclf's pool) and ``fit`` send the work
to a Dask cluster through a synchronous ``distributed.Client``, called only from
threads, so it serves asyncio and trio alike. ``distributed`` is an optional
dependency (``pip install 'asyncclf[dask]'``), imported when the executor first needs
it, never when asyncclf is imported.

A model version crosses to the cluster once: the first batch that needs it packs it
(``packing.pack``), pickles it to bytes and scatters those to every worker. A task names
its versions by key (a :class:`DaskModel`); a worker that holds a version unpickled
runs it at once, and one that does not says so, and gets the task again with the
scattered future among its top-level arguments, which Dask resolves to the bytes (a
future inside the batch's ``functools.partial`` would not be). So each worker unpickles
a version once, and needs its bytes again only if it lost it (restarted, or two newer
versions since), however few copies of them Dask's memory manager keeps.

What runs in a Dask worker is in ``asyncclf._work.cluster``; the parent side's parts
(shipments, submissions, errors) in ``dask_parts``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import importlib.util
import math
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import sklearn
from typing_extensions import Self

from .._errors import AsyncClfError, InvalidParameterError
from .._work import packing, training, transport
from .._work.cluster import Missing, run_in_worker
from .._work.threads import Call
from .base import _POOL, Executor, Job, PerRun, available_cpus
from .dask_parts import (
    INSTALL,
    Shipment,
    Submission,
    close_client,
    distributed_module,
    reaching,
    scatter_lists,
    shipments_in,
)

__all__ = ["DaskExecutor"]

T = TypeVar("T")


class DaskExecutor(Executor):
    """Run prediction batches and fits on a Dask ``distributed`` cluster.

    Each prediction batch is one Dask task and each fit another, so the estimator runs
    in the cluster's worker processes, on as many machines as it has. A model version
    crosses to the cluster once: it is scattered to every worker the first time a batch
    needs it, and each worker unpickles it once and keeps the last two it used; a task
    carries only its texts and a small handle. The client is synchronous and called
    only from worker threads, never on the event loop, so the executor serves asyncio
    and trio alike.

    A batch whose worker dies is run again elsewhere by the scheduler, as often as its
    ``distributed.scheduler.allowed-failures`` allows (3 by default); a batch whose task
    raises outside the estimator is resubmitted once (``retries=1``), and one the
    cluster cancels (its model's bytes lost with their workers) once, the model sent
    again. Then its callers get an :class:`AsyncClfError` caused by Dask's error. A fit
    runs on the cluster too; cancelling it cancels its Dask future and returns at once
    (the worker thread, which Dask cannot interrupt, finishes the fit and drops it).

    By default the limiter has one token per worker thread of the cluster (the sum of
    its workers' ``nthreads``, read when the executor is first used; until then, one per
    CPU of this machine), and follows the cluster as it grows or shrinks: asked again
    after a batch every :attr:`FOLLOW_EVERY` seconds, from the thread that waited for
    it. ``async with DaskExecutor(...) as executor`` connects at once.

    Args:
        client_or_address: A synchronous ``distributed.Client``, used as given and
            never closed by asyncclf; or a scheduler address such as
            ``"tcp://10.0.0.5:8786"``, for which the executor makes its own client (in a
            worker thread, on first use) and closes it in :meth:`aclose`, or when the
            executor is garbage-collected or the interpreter exits.
        limiter: Share a limiter instead of the default.
    """

    def __init__(
        self, client_or_address: Any, limiter: anyio.CapacityLimiter | None = None
    ) -> None:
        if importlib.util.find_spec("distributed") is None:
            raise ModuleNotFoundError(INSTALL, name="distributed")
        self._client: Any = None
        if isinstance(client_or_address, str):
            if not client_or_address.strip():
                msg = "DaskExecutor needs a scheduler address such as 'tcp://10.0.0.5:8786'."
                raise InvalidParameterError(msg)
            self.address: str = client_or_address
        else:
            distributed = sys.modules.get("distributed")
            if distributed is None or not isinstance(client_or_address, distributed.Client):
                msg = (
                    f"DaskExecutor takes a distributed.Client or a scheduler address such as "
                    f"'tcp://10.0.0.5:8786', not {client_or_address!r}; for a cluster object, "
                    f"pass cluster.scheduler_address."
                )
                raise InvalidParameterError(msg)
            if client_or_address.asynchronous:
                msg = (
                    "DaskExecutor needs a synchronous distributed.Client (asynchronous=False), "
                    "which it calls from worker threads; pass the scheduler address instead."
                )
                raise InvalidParameterError(msg)
            self._client = client_or_address
            self.address = str(client_or_address.scheduler.address)
        self._nthreads: int | None = None
        self._asked = -math.inf
        self._closed = False
        self._waiting: set[Any] = set()
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._shipments: weakref.WeakKeyDictionary[Any, Shipment] = weakref.WeakKeyDictionary()
        super().__init__(limiter)

    FOLLOW_EVERY = 2.0
    """Seconds between two questions to the scheduler for the cluster's worker threads
    (Dask's client refreshes its own view of the scheduler as often)."""

    def __repr__(self) -> str:
        return f"<DaskExecutor {self.address!r} threads={self._nthreads}>"

    # -- the client and the limiter -------------------------------------------------

    def set_limiter(self, limiter: anyio.CapacityLimiter | None) -> None:
        """Use ``limiter``, or (``None``) one with a token per worker thread of the
        cluster (per CPU of this machine until the cluster has been asked)."""
        self._given = limiter
        self._default = PerRun(lambda: anyio.CapacityLimiter(self._tokens()))
        # Dask's workers run one task per thread, one thread per core by default, and
        # start with BLAS/OpenMP set to one thread: keep it so.
        self.native_threads = 1

    def _tokens(self) -> int:
        return self._nthreads or available_cpus()

    def _connect(self) -> Any:
        """Return the client, making it if needed; learn the cluster's threads (in a thread)."""
        with self._lock:
            if self._closed:
                msg = "This DaskExecutor is closed; make a new one."
                raise AsyncClfError(msg)
            if self._client is None:
                try:
                    client = distributed_module().Client(
                        self.address, asynchronous=False, set_as_default=False
                    )
                except Exception as exc:
                    msg = f"Could not connect to the Dask scheduler at {self.address!r}: {exc}"
                    raise AsyncClfError(msg) from exc
                self._client = client
                self._finalizer = weakref.finalize(self, close_client, client)
            if self._nthreads is None:
                self._count_threads(self._client)
            return self._client

    def _count_threads(self, client: Any) -> None:
        """Ask the scheduler how many worker threads the cluster has (in a thread).

        The default limiter takes the new count at the next ``acquire``, on the event
        loop. A cluster without workers keeps the last count: its batches wait for one
        to join, as any Dask task does.
        """
        self._asked = time.monotonic()
        threads = client.scheduler_info(n_workers=0).get("total_threads")
        if threads:
            self._nthreads = int(threads)

    def _follow(self, client: Any) -> None:
        """Count the cluster's threads again if :attr:`FOLLOW_EVERY` has passed."""
        if time.monotonic() - self._asked >= self.FOLLOW_EVERY:
            with contextlib.suppress(Exception):  # the next batch asks again
                self._count_threads(client)

    async def _ready(self) -> None:
        """Connect (in a thread) on first use, then size the default limiter."""
        if self._nthreads is None or self._client is None:
            # Cancelled while connecting: the thread finishes connecting for later calls.
            await anyio.to_thread.run_sync(
                self._connect, abandon_on_cancel=True, limiter=self._threads.get()
            )
        if self._given is None:
            limiter = self._default.get()
            if limiter.total_tokens != self._tokens():
                limiter.total_tokens = self._tokens()

    async def acquire(self) -> Job:
        """Connect on first use, then wait for a limiter token (cancellable)."""
        await self._ready()
        return await super().acquire()

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def aclose(self) -> None:
        """Release the models sent to the cluster and close the client if we made it.

        A client passed in stays open. Batches and fits still waiting on the cluster
        are cancelled there, and their callers get an :class:`AsyncClfError`, as do
        later calls. Closing is shielded from cancellation: it completes in a thread.
        """
        # The versions are taken on the event loop, where ``ref`` adds them.
        shipments = list(self._shipments.values())
        self._shipments.clear()
        await super().aclose()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close, shipments, limiter=self._threads.get())

    def _close(self, shipments: list[Shipment]) -> None:
        with self._lock:
            self._closed = True
            finalizer, self._finalizer = self._finalizer, None
            waiting, self._waiting = list(self._waiting), set()
        if waiting:
            with contextlib.suppress(Exception):
                self._client.cancel(waiting)
        for shipment in shipments:
            shipment.release()
        if finalizer is not None:
            finalizer()

    # -- the work -------------------------------------------------------------------

    def ref(self, model: Any) -> Any:
        """A handle naming ``model`` to the workers; it is scattered on first use."""
        shipment = self._shipments.get(model)
        if shipment is None:
            shipment = self._shipments[model] = Shipment(model.estimator)
        return shipment

    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``call()`` (a batch) as a Dask task, waited for in a thread of asyncclf's
        pool."""
        assert isinstance(call, Call), "a call made by Executor.call()"
        return _POOL.submit(
            self._on_cluster, "batch", call.config, call.threads, call.func, call.args, retries=1
        )

    async def fit(
        self,
        func: Callable[..., Any],
        *args: Any,
        on_step: Callable[[int], object] | None = None,
    ) -> Any:
        """Fit on the cluster; cancelling cancels the Dask future and returns at once.

        ``on_step`` is not called: the steps end on the cluster.

        The worker returns the model packed (``training.fit_packed``); it is unpacked in a
        thread, so no large unpickling holds the event loop.
        """
        packed: dict[Callable[..., Any], Callable[..., Any]] = {
            training.fit: training.fit_packed,
            training.partial_fit: training.partial_fit_packed,
        }
        self._check_open()
        await self._ready()
        submission = Submission()
        config, threads = sklearn.get_config(), self.native_threads
        async with self.limiter:
            try:
                content = await anyio.to_thread.run_sync(
                    functools.partial(
                        self._on_cluster,
                        "fit",
                        config,
                        threads,
                        packed[func],
                        args,
                        retries=0,
                        submission=submission,
                    ),
                    abandon_on_cancel=True,
                    limiter=self._threads.get(),
                )
            except BaseException:
                # Cancelled (a cancel scope, or natively: Task.cancel(), wait_for), or
                # failed: cancel the task on the cluster from a thread of its own, so
                # that this call returns at once; the abandoned thread then ends too.
                threading.Thread(target=submission.cancel, daemon=True).start()
                raise
        fitted = await anyio.to_thread.run_sync(
            packing.unpack, content, limiter=self._threads.get()
        )
        # Cancelled while the model was unpacked: the caller must not swap it in.
        await anyio.lowlevel.checkpoint_if_cancelled()
        return fitted

    def _on_cluster(
        self,
        what: str,
        config: dict[str, Any],
        threads: int,
        func: Callable[..., T],
        args: tuple[Any, ...],
        *,
        retries: int,
        submission: Submission | None = None,
    ) -> T:
        """Submit ``func(*args)`` as a Dask task and return its result (in a thread).

        A task names its model versions by key only, and runs at once on a worker that
        holds them unpickled. A worker that does not (new, restarted, or the version is
        new) answers so, and the task is submitted again with the versions' scattered
        bytes as Dask dependencies, scattered first if they are not on the cluster yet.
        A task cancelled by the cluster (its model's bytes were lost with the workers
        holding them) is submitted once more, after sending them again.
        """
        distributed = distributed_module()
        client = self._connect()
        shipments = shipments_in(args)
        keys = tuple(shipment.key for shipment in shipments)
        if what == "fit":
            with reaching(self.address):
                args = scatter_lists(client, args)
        send = any(not shipment.sent for shipment in shipments)
        resent = False
        while True:
            with reaching(self.address):
                models = {s.key: s.scattered(client) for s in shipments} if send else {}
                future = client.submit(
                    run_in_worker,
                    config,
                    threads,
                    func,
                    args,
                    keys,
                    models,
                    key=f"asyncclf-{what}-{uuid.uuid4().hex}",
                    pure=False,
                    retries=retries,
                )
            if submission is not None and not submission.started(future):
                msg = f"The {what} was cancelled."
                raise AsyncClfError(msg)
            with self._lock:
                if self._closed:
                    future.cancel()
                    msg = "This DaskExecutor is closed; make a new one."
                    raise AsyncClfError(msg)
                self._waiting.add(future)
            try:
                with reaching(self.address):
                    result: Any = future.result()
            except distributed.KilledWorker as exc:
                msg = (
                    f"The Dask workers running this {what} died (killed, out of memory, or a "
                    f"crash in native code), each time it was tried: {exc}"
                )
                raise AsyncClfError(msg) from exc
            except distributed.CancelledError as exc:
                if self._closed:
                    msg = f"This DaskExecutor was closed while the {what} waited on the cluster."
                    raise AsyncClfError(msg) from exc
                if submission is not None and submission.cancelled:
                    msg = f"The {what} was cancelled."
                    raise AsyncClfError(msg) from exc
                if not resent:
                    # Most likely its model's bytes were lost with the workers holding
                    # them: send them again, once.
                    for shipment in shipments:
                        shipment.forget(models.get(shipment.key))
                    send = resent = True
                    continue
                msg = (
                    f"The Dask workers running this {what} or holding its model died, or "
                    f"the cluster cancelled it, twice: {exc}"
                )
                raise AsyncClfError(msg) from exc
            finally:
                with self._lock:
                    self._waiting.discard(future)
            if isinstance(result, Missing):
                if send:  # pragma: no cover - the task carried every version it names
                    msg = f"The Dask worker running this {what} did not receive its model."
                    raise AsyncClfError(msg)
                send = True
                continue
            self._follow(client)
            answer: T = transport.returned(result)
            return answer
