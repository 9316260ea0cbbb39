"""Coalesce concurrent prediction calls into vectorised estimator calls.

How a batch forms, with no background task:

* A call puts a :class:`Request` (its texts) in the *lane* of its kind of computation
  and waits. Requests of one lane are answered in arrival order.
* Whoever waits while the lane has no leader becomes its leader. The leader waits up to
  ``max_latency`` for the lane to fill to ``max_batch_size`` texts, then for a limiter
  token, takes as many requests from the front as fit in ``max_batch_size`` and hands
  leadership on to the next waiting request, so the next batch forms while this one
  runs. Under load, requests pile up while every token is busy and batches grow on
  their own.
* The batch owns its limiter token and its worker thread: the thread hands the
  results to every request through the event loop when it ends, whoever still waits.
  A leader cancelled while its batch runs returns at once; the batch completes for
  everybody else and then gives its token back. If the estimator raises, the worker
  retries parts of the batch (see :func:`run_batch`) until it knows whom the failure
  belongs to: only those requests get an exception, everyone else a correct result.
* A request cancelled while queued is withdrawn before any batch takes it; one cancelled
  while its batch runs loses only its own result.
* Settings changed meanwhile apply to batches formed afterwards: a request queued
  before ``max_batch_size`` was lowered runs alone, in chunks of the new size.

Calls with more than ``max_batch_size`` texts skip the queue and run in chunks of that
size: they are already vectorised. Up to one chunk per limiter token runs at once, each
holding its own token. The first chunk that fails ends the call (no further chunk
starts), since the caller can only receive one exception: that of the earliest chunk
that failed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
import numpy as np

from ._errors import OverloadedError, own_copy
from ._types import BatchStatistics, Executor, Token
from ._work import Compute, Segment, timed_batch

__all__ = ["Batcher", "Outcome", "Request"]

Prepare = Callable[[Hashable], tuple[Compute, Any]]
"""Given a lane key, return the function to run now and a tag (the model) for results."""


class Outcome:
    """The rows computed for one request and the tag (model) that computed them."""

    __slots__ = ("segments", "tag")

    def __init__(self, segments: list[Segment], tag: Any) -> None:
        self.segments = segments
        self.tag = tag

    @property
    def error(self) -> Exception | None:
        """The first failure among this request's texts, if any."""
        for _, _, rows in self.segments:
            if isinstance(rows, Exception):
                return rows
        return None

    def rows(self) -> Any:
        """Return the rows for the request's texts, or raise the first failure."""
        error = self.error
        if error is not None:
            raise error
        if len(self.segments) == 1:
            return self.segments[0][2]
        return np.concatenate([rows for _, _, rows in self.segments])


class Request:
    """Texts waiting in a lane for their rows."""

    __slots__ = (
        "event",
        "lane",
        "on_taken",
        "outcome",
        "per_item",
        "queued_at",
        "taken",
        "texts",
    )

    def __init__(self, lane: _Lane | None, texts: list[str], per_item: bool = False) -> None:
        self.lane = lane
        self.texts = texts
        self.per_item = per_item
        """Whether each text needs its own outcome when the estimator fails."""
        self.outcome: Outcome | None = None
        self.event: anyio.Event | None = None
        self.queued_at = time.perf_counter()
        self.taken = False
        """Whether a batch took it (or it was withdrawn): it can no longer grow."""
        self.on_taken: anyio.Event | None = None
        """Set once it is taken, for a stream waiting in :meth:`Batcher.wait_taken`."""

    def _wake(self) -> None:
        if self.event is not None:
            self.event.set()

    def _mark_taken(self) -> None:
        self.taken = True
        if self.on_taken is not None:
            self.on_taken.set()


@dataclass(eq=False)
class _Lane:
    key: Hashable
    queue: deque[Request] = field(default_factory=deque)
    size: int = 0
    leading: bool = False
    full: anyio.Event | None = None


def _slice(segments: list[Segment], start: int, stop: int) -> list[Segment]:
    """The parts of ``segments`` that cover [start, stop), renumbered from 0."""
    picked: list[Segment] = []
    for seg_start, seg_stop, rows in segments:
        lo, hi = max(start, seg_start), min(stop, seg_stop)
        if lo >= hi:
            continue
        if not isinstance(rows, BaseException) and (lo, hi) != (seg_start, seg_stop):
            rows = rows[lo - seg_start : hi - seg_start]
        picked.append((lo - start, hi - start, rows))
    return picked


class _Summary:
    """Count, mean and maximum of a series, in O(1) memory."""

    __slots__ = ("count", "maximum", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.maximum = 0.0

    def add(self, value: float, weight: int = 1) -> None:
        self.count += weight
        self.total += value * weight
        self.maximum = max(self.maximum, value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class Batcher:
    """Merge requests into batches bounded by size and latency; see the module docs."""

    def __init__(
        self,
        executor: Executor,
        prepare: Prepare,
        *,
        max_batch_size: int,
        max_latency: float,
        max_queue: int,
        overload: Literal["wait", "raise"],
    ) -> None:
        self.executor = executor
        self.prepare = prepare
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency
        self.max_queue = max_queue
        self.overload = overload
        self._lanes: dict[Hashable, _Lane] = {}
        self._queued = 0
        self._room: anyio.Event | None = None
        self._batches = 0
        self._items = 0
        self._failed = 0
        self._sizes = _Summary()
        self._waits = _Summary()
        self._runs = _Summary()

    def configure(
        self,
        *,
        max_batch_size: int,
        max_latency: float,
        max_queue: int,
        overload: Literal["wait", "raise"],
    ) -> None:
        """Apply new settings to batches formed from now on; wake whoever they concern.

        Nothing queued is stranded: a request larger than a lowered ``max_batch_size``
        runs alone in chunks, and callers waiting for room re-check the new bound.
        """
        sooner = max_latency < self.max_latency
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency
        self.max_queue = max_queue
        self.overload = overload
        self._release(0)
        for lane in self._lanes.values():
            # A leader waiting for company stops waiting once its batch is full, or
            # when the wait it may still take was shortened.
            if lane.full is not None and (sooner or lane.size >= max_batch_size):
                lane.full.set()

    # -- queue capacity -------------------------------------------------------------

    async def reserve(self, n: int, *, wait: bool | None = None) -> None:
        """Wait until ``n`` more texts fit in the queue, or raise ``OverloadedError``.

        ``wait`` overrides the ``overload`` setting (streams always wait).
        """
        if wait is None:
            wait = self.overload == "wait"
        while self._queued + n > self.max_queue and self._queued > 0:
            if not wait:
                msg = (
                    f"The queue holds {self._queued} texts and max_queue is {self.max_queue}; "
                    f"retry later, raise max_queue, or use overload='wait'."
                )
                raise OverloadedError(msg)
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
        self._queued += n

    def _release(self, n: int) -> None:
        self._queued -= n
        if self._room is not None:
            self._room.set()
            self._room = None

    # -- requests -------------------------------------------------------------------

    def enqueue(self, key: Hashable, texts: list[str], *, per_item: bool = False) -> Request:
        """Queue ``texts`` (already ``reserve``d) in the lane ``key``; do not wait."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
        request = Request(lane, texts, per_item)
        lane.queue.append(request)
        lane.size += len(texts)
        if lane.full is not None and lane.size >= self.max_batch_size:
            lane.full.set()
        return request

    def extend(self, request: Request, text: str) -> bool:
        """Add one (``reserve``d) text to a request still queued and not full.

        Returns False, adding nothing, when a batch has taken the request or it holds
        ``max_batch_size`` texts: then queue a new request instead. Streams use this to
        queue texts one by one at the cost of a list append.
        """
        if request.taken or len(request.texts) >= self.max_batch_size:
            return False
        request.texts.append(text)
        lane = request.lane
        assert lane is not None
        lane.size += 1
        if lane.full is not None and lane.size >= self.max_batch_size:
            lane.full.set()
        return True

    def withdraw(self, request: Request) -> None:
        """Take a request that nobody will wait for out of its lane, if still queued."""
        lane = request.lane
        if not request.taken and lane is not None:
            request._mark_taken()
            lane.queue.remove(request)
            lane.size -= len(request.texts)
            self._release(len(request.texts))

    async def wait(self, request: Request) -> Outcome:
        """Wait for ``request``'s outcome, leading batches when the lane needs a leader.

        Cancelling withdraws the request if no batch has taken it yet; a batch already
        running completes for everybody else. Either way the caller returns at once.
        """
        lane = request.lane
        assert lane is not None
        try:
            while request.outcome is None:
                if not request.taken and not lane.leading:
                    await self._lead(lane)
                else:
                    # Woken by the outcome, or to lead while still queued.
                    request.event = anyio.Event()
                    await request.event.wait()
                    request.event = None
        except BaseException:
            # Cancelled (by a cancel scope, or natively by Task.cancel(), wait_for or a
            # TaskGroup, which can land between a wake-up and this task running), or
            # failed. This request may have been woken to lead the lane: if nobody
            # leads it now, the next waiting request must, or it would wait forever.
            request.event = None
            self.withdraw(request)
            if not lane.leading:
                self._wake_next(lane)
            raise
        return request.outcome

    async def wait_taken(self, request: Request) -> None:
        """Return once a batch has taken ``request``, or it was withdrawn; lead nothing.

        Someone else must be waiting for the request. A stream starts waiting for its
        next request only once the last one is in a batch: its waiters then never lead
        a batch of each other's requests (the leader takes the front of the lane and
        runs that batch to its end, and so could not lead its own request meanwhile).
        """
        while not request.taken:
            request.on_taken = anyio.Event()
            try:
                await request.on_taken.wait()
            finally:
                request.on_taken = None

    async def submit(self, key: Hashable, texts: list[str]) -> Outcome:
        """Compute the rows for ``texts`` in lane ``key``, batched with other callers."""
        if len(texts) > self.max_batch_size:
            return await self._run_chunks(key, texts)
        await self.reserve(len(texts))
        return await self.wait(self.enqueue(key, texts))

    # -- batches --------------------------------------------------------------------

    def _wake_next(self, lane: _Lane) -> None:
        """Hand leadership of ``lane`` to the first request that has a waiter."""
        for request in lane.queue:
            if request.event is not None:
                request.event.set()
                return

    async def _lead(self, lane: _Lane) -> None:
        lane.leading = True
        leading = True  # this task's own: the lane's flag belongs to the next leader
        try:
            if await self._company_is_coming(lane):
                lane.full = anyio.Event()
                with anyio.move_on_after(self.max_latency):
                    await lane.full.wait()
                lane.full = None
            job = await self.executor.acquire()
            # No checkpoint from here to the start of the run: the token is the job's.
            batch = self._take(lane)
            lane.leading = leading = False
            self._wake_next(lane)
            try:
                compute, tag = self.prepare(lane.key)
            except Exception as exc:
                job.release()
                self._deliver(batch, exc, None)
                return
            await self._run(job, compute, tag, batch)
        finally:
            # Only while this task still leads: once it handed the lane on, another
            # task may lead it, and its flag and its wait are not this task's to clear.
            if leading:
                lane.full = None
                lane.leading = False
                self._wake_next(lane)

    async def _company_is_coming(self, lane: _Lane) -> bool:
        """Whether the leader of ``lane`` should wait (up to ``max_latency``) for more
        requests before taking a limiter token: the adaptive wait.

        Only when a worker is free and requests are arriving: one checkpoint lets the
        callers started with this one (a burst) queue up, and if any did, the batch
        is filling fast and waits to fill. A lone caller finding a free worker runs at
        once, paying no latency for company that is not coming. When every worker is
        busy there is no wait either: the batch grows while the leader waits for a
        token anyway.
        """
        if lane.size >= self.max_batch_size or self.max_latency <= 0:
            return False
        if self.executor.capacity - self.executor.limiter.borrowed_tokens < 1:
            return False  # every worker is busy
        queued = lane.size
        await anyio.lowlevel.checkpoint()
        return lane.size > queued and lane.size < self.max_batch_size

    def _take(self, lane: _Lane) -> list[Request]:
        """Take requests from the front of ``lane`` up to ``max_batch_size`` texts.

        The first request is always taken, even when ``max_batch_size`` was lowered
        below its size after it was queued: it then runs alone, in chunks.
        """
        batch: list[Request] = []
        size = 0
        now = time.perf_counter()
        while lane.queue and (not batch or size + len(lane.queue[0].texts) <= self.max_batch_size):
            request = lane.queue.popleft()
            request._mark_taken()
            size += len(request.texts)
            batch.append(request)
            self._waits.add(now - request.queued_at, len(request.texts))
        lane.size -= size
        self._release(size)
        return batch

    async def _run(self, job: Token, compute: Compute, tag: Any, batch: list[Request]) -> None:
        """Run ``batch`` holding ``job``'s token; every request gets its outcome.

        Returns when the outcomes are delivered, or at once if cancelled: the batch
        then completes in its thread and delivers them to whoever still waits.
        """
        if len(batch) == 1:
            texts = batch[0].texts
            spans = [(0, len(texts), batch[0].per_item)]
        else:
            texts, spans = [], []
            for request in batch:
                spans.append((len(texts), len(texts) + len(request.texts), request.per_item))
                texts.extend(request.texts)

        def done(result: tuple[list[Segment], int, float] | Exception) -> None:
            # On the event loop, once, whether or not the leader still waits.
            if isinstance(result, Exception):
                self._deliver(batch, result, None)
                return
            segments, calls, elapsed = result
            self._count(texts, segments, calls, elapsed)
            start = 0
            for request in batch:
                stop = start + len(request.texts)
                request.outcome = Outcome(_slice(segments, start, stop), tag)
                request._wake()
                start = stop

        limit = self.max_batch_size
        await self.executor.run_detached(job, timed_batch, (compute, texts, spans, limit), done)

    def _deliver(self, batch: list[Request], error: Exception, tag: Any) -> None:
        """Fail every request of ``batch`` with its own copy of ``error``."""
        for request in batch:
            request.outcome = Outcome([(0, len(request.texts), own_copy(error))], tag)
            request._wake()

    def _count(self, texts: list[str], segments: list[Segment], calls: int, elapsed: float) -> None:
        self._runs.add(elapsed)
        self._batches += calls
        self._items += len(texts)
        self._sizes.add(len(texts))
        self._failed += sum(
            stop - start for start, stop, rows in segments if isinstance(rows, BaseException)
        )

    async def _run_chunks(self, key: Hashable, texts: list[str]) -> Outcome:
        """Run a call larger than a batch in ``max_batch_size`` chunks, side by side.

        The model is chosen once, so every chunk is answered by the same model. Up to
        one chunk per limiter token runs at once; each waits for its own token in turn,
        so other callers' batches are served in between. The first chunk that fails
        ends the call: no further chunk starts, the chunks already running finish, and
        the caller receives the exception of the earliest chunk that failed.
        Cancelling the caller returns at once; running chunks finish in their threads
        and give their tokens back, as batches do.
        """
        compute, tag = self.prepare(key)
        size = self.max_batch_size
        chunks = [Request(None, texts[i : i + size]) for i in range(0, len(texts), size)]
        for chunk in chunks:
            chunk.taken = True
        width = max(1, int(min(self.executor.capacity, len(chunks))))
        next_chunk = 0
        running: list[Request] = []
        acquiring: set[anyio.CancelScope] = set()

        def failed() -> bool:
            # A failed chunk's outcome is set (and its token handed on, maybe to one of
            # ours) before its task wakes up: look at the outcomes, not at a flag.
            return any(c.outcome is not None and c.outcome.error is not None for c in running)

        async def run_next() -> None:
            # One of ``width`` tasks, each running the next chunk until none is left.
            nonlocal next_chunk
            while next_chunk < len(chunks) and not failed():
                chunk = chunks[next_chunk]
                next_chunk += 1
                job: Token | None = None
                with anyio.CancelScope() as waiting:
                    acquiring.add(waiting)
                    try:
                        job = await self.executor.acquire()
                    finally:
                        acquiring.discard(waiting)
                if job is None:
                    # Cancelled by our own scope, because a chunk failed: no token taken.
                    return
                if failed():
                    # A chunk failed while this one waited: start no further chunk.
                    job.release()
                    return
                # No checkpoint from here to the start of the run: the token is the job's.
                running.append(chunk)
                await self._run(job, compute, tag, [chunk])
                assert chunk.outcome is not None
                if chunk.outcome.error is not None:
                    # Stop the chunks waiting for a token; those running finish.
                    for scope in acquiring:
                        scope.cancel()
                    return
                running.remove(chunk)

        async with anyio.create_task_group() as tasks:
            for _ in range(width):
                tasks.start_soon(run_next)
        segments: list[Segment] = []
        for index, chunk in enumerate(chunks):
            start = index * size
            outcome = chunk.outcome
            if outcome is None:
                continue  # never started, because a chunk failed
            error = outcome.error
            if error is not None:
                # The earliest chunk that failed: its exception is the call's.
                segments.append((start, len(texts), error))
                break
            segments.extend((start + a, start + b, rows) for a, b, rows in outcome.segments)
        return Outcome(segments, tag)

    # -- observability --------------------------------------------------------------

    def statistics(self) -> BatchStatistics:
        """Return a snapshot of the counters."""
        return BatchStatistics(
            batches=self._batches,
            items=self._items,
            failed_items=self._failed,
            queue_depth=self._queued,
            max_batch_size_seen=int(self._sizes.maximum),
            mean_batch_size=self._sizes.mean,
            mean_wait=self._waits.mean,
            max_wait=self._waits.maximum,
            mean_run=self._runs.mean,
            max_run=self._runs.maximum,
        )
