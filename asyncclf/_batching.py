"""Coalesce concurrent prediction calls into vectorised estimator calls.

How a batch forms, with no background task:

* A call puts a :class:`Request` (its texts) in the *lane* of its kind of computation:
  in the lane's last batch while that has room for them (``max_batch_size`` texts),
  else in a new batch behind it. A lane is a queue of batches, answered in order, and
  the callers of one batch share one wake-up: the cost of waiting is paid per batch,
  not per caller.
* The first caller of a batch leads it: it waits for the batch to reach the front of
  the lane, for company if a worker is free and callers are arriving (up to
  ``max_latency``, see :meth:`Batcher._company_is_coming`), then for a limiter token,
  takes the batch off the lane (waking the next batch's leader) and runs it. Under
  load, batches fill while every token is busy and grow on their own.
* The batch owns its limiter token and its worker thread: the thread hands the result
  to the event loop when it ends, whoever still waits, and each caller cuts its own
  rows from it when it wakes. A leader cancelled while its batch runs returns at once;
  the batch completes for everybody else and then gives its token back. If the
  estimator raises, the worker retries parts of the batch (see :func:`run_batch`)
  until it knows whom the failure belongs to: only those requests get an exception,
  everyone else a correct result.
* A request cancelled while queued is withdrawn before its batch runs; if it led the
  batch, the others elect a new leader. One cancelled while its batch runs loses only
  its own result.
* Settings changed meanwhile apply to batches formed afterwards, and a batch formed
  before ``max_batch_size`` was lowered is split when it is taken: its first request
  runs alone if it is too large, in chunks of the new size.

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

from ._errors import AsyncClfError, OverloadedError
from ._executors.base import Executor, Job
from ._types import BatchStatistics
from ._work.compute import Compute, Segment, Span, timed_batch
from ._work.transport import own_copy

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
    """Texts waiting in a lane for their rows: one caller's, or a few of a stream's."""

    __slots__ = ("_outcome", "batch", "live", "on_taken", "per_item", "queued_at", "start", "texts")

    def __init__(self, batch: _Batch, texts: list[str], per_item: bool = False) -> None:
        self.batch = batch
        """The batch it runs in (a lowered ``max_batch_size`` may move it to a new one)."""
        self.texts = texts
        self.per_item = per_item
        """Whether each text needs its own outcome when the estimator fails."""
        self.queued_at = time.perf_counter()
        self.start = 0
        """Where its texts start in its batch's, once the batch is taken."""
        self.live = True
        """False once withdrawn: nobody waits for it, and no batch will run it."""
        self.on_taken: anyio.Event | None = None
        """Set once it is taken, for a stream waiting in :meth:`Batcher.wait_taken`."""
        self._outcome: Outcome | None = None

    @property
    def taken(self) -> bool:
        """Whether a batch took it (or it was withdrawn): it can no longer grow."""
        return self.batch.taken or not self.live

    @property
    def outcome(self) -> Outcome | None:
        """Its rows, once its batch has ended (cut from the batch's on first look)."""
        if self._outcome is None:
            result = self.batch.result
            if result is None:
                return None
            stop = self.start + len(self.texts)
            if isinstance(result, Exception):
                segments = [(0, len(self.texts), own_copy(result))]
            elif len(result) == 1 and not isinstance(rows := result[0][2], BaseException):
                segments = [(0, len(self.texts), rows[self.start : stop])]
            else:
                segments = _slice(result, self.start, stop)
            self._outcome = Outcome(segments, self.batch.tag)
        return self._outcome

    def top(self) -> tuple[int, float]:
        """The column and value of the maximum of its first row, or its failure raised.

        Found for every row of its batch at once, on first look.
        """
        batch = self.batch
        if batch.top is None:
            result = batch.result
            rows = result[0][2] if isinstance(result, list) and len(result) == 1 else None
            if rows is None or isinstance(rows, BaseException):
                # The batch failed, in part or whole: this request's own outcome says how.
                outcome = self.outcome
                assert outcome is not None
                row = outcome.rows()[0]
                column = int(row.argmax())
                return column, float(row[column])
            columns = rows.argmax(axis=1)
            batch.top = columns.tolist(), rows[np.arange(len(rows)), columns].tolist()
        best_columns, best_values = batch.top
        return best_columns[self.start], best_values[self.start]


class _Batch:
    """Requests of one lane that will run together: one wake-up for all of them.

    A request joins the lane's last batch while it has room, else opens a new one, so a
    lane is a queue of batches. The first request to wait finding no leader leads the
    batch: it waits for the batch to reach the lane's front, maybe for company, then
    for a limiter token, and runs it. Everybody else waits on ``done``.
    """

    __slots__ = (
        "done",
        "lane",
        "leader",
        "live",
        "requests",
        "result",
        "size",
        "tag",
        "taken",
        "top",
        "wake",
    )

    def __init__(self, lane: _Lane | None) -> None:
        self.lane = lane
        self.requests: list[Request] = []
        self.size = 0
        """Texts of its live requests."""
        self.live = 0
        """Requests not withdrawn."""
        self.leader: Request | None = None
        self.wake: anyio.Event | None = None
        """The leader's, while it waits: set when the batch reaches the lane's front,
        fills up, or may wait less long."""
        self.done: anyio.Event | None = None
        """The other waiters': set when the batch ends, or when it needs a new leader."""
        self.taken = False
        self.result: list[Segment] | Exception | None = None
        """The rows of every text once the batch ended, or the exception that ended it."""
        self.tag: Any = None
        self.top: tuple[list[int], list[float]] | None = None
        """Each row's maximum's column and value, found on first look (see Request.top)."""


@dataclass(eq=False)
class _Lane:
    key: Hashable
    queue: deque[_Batch] = field(default_factory=deque)


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


RECENT = 1024
"""Samples the percentiles of ``statistics()`` are taken over: the most recent ones."""


class _Recent:
    """The last ``RECENT`` values of a series, for its percentiles."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: deque[float] = deque(maxlen=RECENT)

    def percentile(self, q: float) -> float:
        if not self.values:
            return 0.0
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
        self._recent_waits = _Recent()
        self._recent_runs = _Recent()
        self._recent_latencies = _Recent()

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
            wake = lane.queue[0].wake if lane.queue else None
            if wake is not None and (sooner or lane.queue[0].size >= max_batch_size):
                wake.set()

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
        queue = lane.queue
        n = len(texts)
        if queue and queue[-1].size + n <= self.max_batch_size:
            batch = queue[-1]
        else:
            batch = _Batch(lane)
            queue.append(batch)
        request = Request(batch, texts, per_item)
        batch.requests.append(request)
        batch.live += 1
        batch.size += n
        if batch.wake is not None and batch.size >= self.max_batch_size:
            batch.wake.set()
        return request

    def extend(self, request: Request, text: str) -> bool:
        """Add one (``reserve``d) text to a request still queued, if its batch has room.

        Returns False, adding nothing, when a batch has taken the request or its batch
        is full: then queue a new request instead. Streams use this to queue texts one
        by one at the cost of a list append.
        """
        batch = request.batch
        if batch.taken or not request.live or batch.size >= self.max_batch_size:
            return False
        request.texts.append(text)
        batch.size += 1
        if batch.wake is not None and batch.size >= self.max_batch_size:
            batch.wake.set()
        return True

    def withdraw(self, request: Request) -> None:
        """Take a request that nobody will wait for out of its lane, if still queued."""
        batch = request.batch
        if batch.taken or not request.live:
            return
        request.live = False
        if request.on_taken is not None:
            request.on_taken.set()
        batch.live -= 1
        batch.size -= len(request.texts)
        self._release(len(request.texts))
        if batch.live == 0:
            # Nobody left to run it for: out of the lane, whose next batch may now lead.
            lane = batch.lane
            assert lane is not None
            front = lane.queue[0] is batch
            lane.queue.remove(batch)
            if front:
                self._hand_on(lane)
        elif batch.leader is request:
            batch.leader = None
            self._elect(batch)

    async def wait(self, request: Request) -> None:
        """Return once ``request`` has its outcome, leading its batch when it has none.

        Cancelling withdraws the request if no batch has taken it yet; a batch already
        running completes for everybody else. Either way the caller returns at once.
        """
        try:
            while (batch := request.batch).result is None:
                if batch.leader is None and not batch.taken:
                    await self._lead(request, batch)
                else:
                    done = batch.done
                    if done is None:
                        done = batch.done = anyio.Event()
                    await done.wait()
        except BaseException:
            # Cancelled (by a cancel scope, or natively by Task.cancel(), wait_for or a
            # TaskGroup, which can land between a wake-up and this task running), or
            # failed. If this request led its batch, another waiter must now.
            self.withdraw(request)
            raise
        self._recent_latencies.values.append(time.perf_counter() - request.queued_at)

    async def wait_taken(self, request: Request) -> None:
        """Return once a batch has taken ``request``, or it was withdrawn; lead nothing.

        Someone else must be waiting for the request. A stream starts waiting for its
        next request only once the last one is in a batch: its waiters then never lead
        a batch of each other's requests (the leader runs its batch to the end, and so
        could not lead another meanwhile).
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
        request = self.try_put(key, texts) or await self.put(key, texts)
        await self.wait(request)
        outcome = request.outcome
        assert outcome is not None
        return outcome

    def try_put(self, key: Hashable, texts: list[str]) -> Request | None:
        """Queue ``texts`` in lane ``key`` if the queue has room for them, else None.

        The caller then calls :meth:`put`, and either way :meth:`wait`: the fast path
        of the commonest call costs no coroutine of its own.
        """
        n = len(texts)
        if self._queued + n <= self.max_queue or not self._queued:
            self._queued += n
            return self.enqueue(key, texts)
        return None

    async def put(self, key: Hashable, texts: list[str]) -> Request:
        """Wait for room (or raise ``OverloadedError``), then queue ``texts``."""
        await self.reserve(len(texts))
        return self.enqueue(key, texts)

    # -- batches --------------------------------------------------------------------

    def _elect(self, batch: _Batch) -> None:
        """Wake the waiters of ``batch`` (it lost its leader): the first to run leads."""
        if batch.done is not None:
            batch.done.set()
            batch.done = None

    def _hand_on(self, lane: _Lane) -> None:
        """Wake the leader of the batch now at the front of ``lane``, if it waits."""
        if lane.queue and (wake := lane.queue[0].wake) is not None:
            wake.set()

    async def _lead(self, request: Request, batch: _Batch) -> None:
        batch.leader = request
        lane = batch.lane
        assert lane is not None
        try:
            while lane.queue[0] is not batch:
                batch.wake = anyio.Event()
                await batch.wake.wait()  # until it reaches the front of the lane
            if await self._company_is_coming(batch):
                batch.wake = anyio.Event()
                with anyio.move_on_after(self.max_latency):
                    await batch.wake.wait()
            try:
                job = await self._acquire()
            except AsyncClfError as exc:
                # The executor was closed: the batch fails whole, every caller with
                # its own copy, as when its model cannot be prepared.
                self._take(batch)
                self._finish(batch, exc, None)
                return
        finally:
            batch.wake = None
        # No checkpoint from here to the start of the run: the token is the job's.
        texts, spans = self._take(batch)
        try:
            compute, tag = self.prepare(lane.key)
        except Exception as exc:
            job.release()
            self._finish(batch, exc, None)
            return
        await self._run(job, compute, tag, batch, texts, spans)

    async def _acquire(self) -> Job:
        """Wait for a token of the executor in force when the token comes.

        ``set_params(executor=...)`` may change the executor while a batch waits: the
        old one's token then goes back, and the batch waits for one of the new one's.
        """
        while True:
            executor = self.executor
            job = await executor.acquire()
            if executor is self.executor:
                return job
            job.release()

    async def _company_is_coming(self, batch: _Batch) -> bool:
        """Whether the leader of ``batch`` should wait (up to ``max_latency``) for more
        requests before taking a limiter token: the adaptive wait.

        Only when a worker is free and requests are arriving: one checkpoint lets the
        callers started with this one (a burst) queue up, and if any did, the batch
        is filling fast and waits to fill. A lone caller finding a free worker runs at
        once, paying no latency for company that is not coming. When every worker is
        busy there is no wait either: the batch grows while the leader waits for a
        token anyway.
        """
        if batch.size >= self.max_batch_size or self.max_latency <= 0:
            return False
        if self.executor.capacity - self.executor.limiter.borrowed_tokens < 1:
            return False  # every worker is busy
        queued = batch.size
        await anyio.lowlevel.checkpoint()
        return queued < batch.size < self.max_batch_size

    def _take(self, batch: _Batch) -> tuple[list[str], list[Span]]:
        """Take ``batch`` off the front of its lane; return its texts and their spans.

        A batch formed before ``max_batch_size`` was lowered keeps only the requests
        that fit (its first one always: it then runs alone, in chunks); the others
        form a new batch at the front of the lane.
        """
        lane = batch.lane
        assert lane is not None
        lane.queue.popleft()
        if batch.size > self.max_batch_size and batch.live > 1:
            self._split(batch)
        batch.taken = True
        texts: list[str] = []
        spans: list[Span] = []
        weighted = 0.0
        first = None
        now = time.perf_counter()
        recent = self._recent_waits.values
        for request in batch.requests:
            if not request.live:
                continue
            n = len(request.texts)
            request.start = start = len(texts)
            spans.append((start, start + n, request.per_item))
            texts.extend(request.texts)
            weighted += request.queued_at * n
            recent.append(now - request.queued_at)
            if first is None:
                first = request.queued_at
            if request.on_taken is not None:
                request.on_taken.set()
        assert first is not None
        size = len(texts)
        waits = self._waits
        waits.count += size
        waits.total += now * size - weighted
        waits.maximum = max(waits.maximum, now - first)
        self._release(size)
        self._hand_on(lane)
        return texts, spans

    def _split(self, batch: _Batch) -> None:
        """Keep in ``batch`` the live requests that fit ``max_batch_size`` (at least one);
        put the others in a new batch at the front of the lane, to elect its leader."""
        lane = batch.lane
        assert lane is not None
        kept: list[Request] = []
        rest = _Batch(lane)
        size = 0
        for request in batch.requests:
            if not request.live:
                continue
            n = len(request.texts)
            if not rest.requests and (not kept or size + n <= self.max_batch_size):
                kept.append(request)
                size += n
            else:
                request.batch = rest
                rest.requests.append(request)
                rest.live += 1
                rest.size += n
        batch.requests, batch.live, batch.size = kept, len(kept), size
        lane.queue.appendleft(rest)
        if batch.leader is not None and batch.leader.batch is rest:
            batch.leader = None  # this task leads ``batch``; ``rest`` needs its own
        self._elect(batch)  # wakes the waiters of both; those in ``rest`` elect one

    async def _run(
        self,
        job: Job,
        compute: Compute,
        tag: Any,
        batch: _Batch,
        texts: list[str],
        spans: list[Span],
    ) -> None:
        """Run ``batch`` holding ``job``'s token; its requests then have their outcome.

        Returns when the batch has ended, or at once if cancelled: the batch then
        completes in its thread and wakes whoever still waits.
        """

        def done(result: tuple[list[Segment], int, float] | Exception) -> None:
            # On the event loop, once, whether or not the leader still waits.
            if isinstance(result, Exception):
                self._finish(batch, result, None)
                return
            segments, calls, elapsed = result
            self._count(texts, segments, calls, elapsed)
            self._finish(batch, segments, tag)

        limit = self.max_batch_size
        await self.executor.run_detached(job, timed_batch, (compute, texts, spans, limit), done)

    def _finish(self, batch: _Batch, result: list[Segment] | Exception, tag: Any) -> None:
        """End ``batch`` with ``result``: rows (or failures) for all its texts, or the
        exception for all of them (each request raises its own copy)."""
        batch.tag = tag
        batch.result = result
        if batch.done is not None:
            batch.done.set()

    def _count(self, texts: list[str], segments: list[Segment], calls: int, elapsed: float) -> None:
        self._runs.add(elapsed)
        self._recent_runs.values.append(elapsed)
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
        chunks: list[Request] = []
        for i in range(0, len(texts), size):
            batch = _Batch(None)
            batch.taken = True
            chunk = Request(batch, texts[i : i + size])
            batch.requests.append(chunk)
            chunks.append(chunk)
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
                job: Job | None = None
                with anyio.CancelScope() as waiting:
                    acquiring.add(waiting)
                    try:
                        job = await self._acquire()
                    except AsyncClfError as exc:
                        # The executor was closed: this chunk fails, and the call.
                        running.append(chunk)
                        self._finish(chunk.batch, exc, tag)
                        for scope in acquiring:
                            scope.cancel()
                        return
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
                spans = [(0, len(chunk.texts), False)]
                await self._run(job, compute, tag, chunk.batch, chunk.texts, spans)
                outcome = chunk.outcome
                assert outcome is not None
                if outcome.error is not None:
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
            wait_p50=self._recent_waits.percentile(0.5),
            wait_p99=self._recent_waits.percentile(0.99),
            run_p50=self._recent_runs.percentile(0.5),
            run_p99=self._recent_runs.percentile(0.99),
            latency_p50=self._recent_latencies.percentile(0.5),
            latency_p99=self._recent_latencies.percentile(0.99),
        )
