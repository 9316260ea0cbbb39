"""Ordered, bounded streams of predictions over sync or async iterables.

Inside ``open_stream`` three parties hand chunks of texts along two channels::

    reader --(queued requests)--> driver --(outcomes)--> consumer

* the reader pulls texts from the source, checks them and appends each to the open
  request of the batcher's lane (a list append while no batch has taken it; a new
  request, up to ``max_batch_size`` texts, when one has): batches fill as fast as the
  source yields, at no per-text cost in event-loop iterations;
* the reader stops reading while ``max_in_flight`` texts are read but not yet consumed:
  that is the backpressure;
* the driver waits for up to ``width`` requests at once, one task each (``width`` is
  the executor's limiter tokens when the stream starts, at least 1, at most
  ``max_in_flight``), so that each may lead a batch of the lane: a stream keeps every
  worker busy, and the next batches compute while the consumer handles the last one.
  It starts waiting for a request only once a batch has taken the one before: a
  leader takes the front of the lane and runs that batch to its end, so two waiters
  on untaken requests could end with one running the other's batch and nobody
  leading its own;
* the driver hands the outcomes on in input order, however their batches finish: the
  requests waited for are the first ``width`` not yet handed on, so the reorder buffer
  holds at most ``width - 1`` outcomes (and all of them count against the window);
* the consumer (the caller's ``async for``) turns each outcome into results.

A task waiting for a request is cancelled only when the whole stream is: its
cancellation withdraws the request (``Batcher.wait``), which is right only then.
Leaving the ``async with`` block cancels reader, driver and waiters and withdraws every
request still queued, so nothing keeps running for a stream that nobody reads.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Hashable,
    Iterable,
    Sequence,
    Sized,
)
from contextlib import aclosing, asynccontextmanager
from typing import Any, Generic, Literal, TypeVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._batching import Batcher, Outcome, Request
from ._errors import InvalidInputError
from ._progress import Progress, Reporter
from ._validation import Integer, Options, check_param, check_text, or_none

__all__ = ["check_source", "open_stream"]

T = TypeVar("T")
Convert = Callable[[int, list[str], Any, Any], Sequence[T]]
"""``(first index, texts, rows, tag) -> results`` for texts the estimator answered."""
Fail = Callable[[int, str, Exception, Any], T]
"""``(index, text, error, tag) -> result`` for a text that failed, with on_error="yield"."""

# What travels the channels: the index of a chunk's first text and its request (or the
# error to raise at that point, with no request).
_Queued = tuple[int, "Request | None", "Exception | None", str]
_Done = tuple[int, list[str], "Outcome | None", "Exception | None"]


def check_source(source: object, items: str = "texts", one: str = "text") -> None:
    """Refuse a source that is not an iterable of ``items``, before anything starts."""
    if isinstance(source, (str, bytes, bytearray)):
        msg = (
            f"source must be an iterable of {items}, not a single {type(source).__name__}; "
            f"wrap one {one} in a list: [{one}]."
        )
        raise InvalidInputError(msg)
    if not isinstance(source, (Iterable, AsyncIterable)):
        msg = (
            f"source must be an iterable or async iterable of {items}, not {type(source).__name__}."
        )
        raise InvalidInputError(msg)


async def _iterate(source: Iterable[str] | AsyncIterable[str]) -> AsyncGenerator[Any, None]:
    """Yield the items of ``source``; close its iterator when left early, as aclosing would.

    A generator passed as ``source`` is the stream's to finish: leaving the stream
    early closes it (``aclose()`` or ``close()``), so its ``finally`` blocks run now
    rather than when it is garbage collected.
    """
    if isinstance(source, AsyncIterable):
        iterator: Any = aiter(source)
        try:
            async for item in iterator:
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                # The reader is being cancelled when the stream is left early: shield
                # the source's own cleanup (its awaits), as aclosing would run it.
                with anyio.CancelScope(shield=True):
                    await aclose()
    else:
        iterator = iter(source)
        try:
            for item in iterator:
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


class _Window:
    """Counts texts read but not yet consumed; the reader waits while it is full.

    A waiting reader is woken only once the window has drained to half, so that it
    refills many texts per wake-up instead of one per text consumed.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._low = size // 2
        self._room: anyio.Event | None = None

    async def acquire(self) -> None:
        while self.used >= self.size:
            self._room = anyio.Event()
            await self._room.wait()
        self.used += 1

    def release(self, n: int = 1) -> None:
        self.used -= n
        if self._room is not None and self.used <= self._low:
            self._room.set()
            self._room = None


class _Results(Generic[T]):
    """The async iterator a stream yields: one result per input, in order."""

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[_Done],
        window: _Window,
        convert: Convert[T],
        fail: Fail[T] | None,
        reporter: Reporter,
    ) -> None:
        self._receive = receive
        self._window = window
        self._convert = convert
        self._fail = fail
        self._reporter = reporter
        self._produced = 0
        self._ready: deque[T | _Raise] = deque()
        self._finished = False

    def __aiter__(self) -> _Results[T]:
        return self

    async def __anext__(self) -> T:
        while not self._ready:
            if self._finished:
                raise StopAsyncIteration
            try:
                start, texts, outcome, error = await self._receive.receive()
            except anyio.EndOfStream:
                self._finished = True
                raise StopAsyncIteration from None
            self._unpack(start, texts, outcome, error)
            if self._reporter.active:
                self._produced += len(texts)
                self._reporter.update(self._produced)
        item = self._ready.popleft()
        self._window.release()
        if isinstance(item, _Raise):
            self._finished = True
            self._ready.clear()
            raise item.error
        return item

    def _unpack(
        self, start: int, texts: list[str], outcome: Outcome | None, error: Exception | None
    ) -> None:
        if outcome is None:
            assert error is not None
            self._failed(start, texts[0], error, None)
            return
        for first, stop, rows in outcome.segments:
            if isinstance(rows, Exception):
                for i in range(first, stop):
                    self._failed(start + i, texts[i], rows, outcome.tag)
            else:
                self._ready.extend(
                    self._convert(start + first, texts[first:stop], rows, outcome.tag)
                )

    def _failed(self, index: int, text: str, error: Exception, tag: Any) -> None:
        if self._fail is None or index < 0:
            self._ready.append(_Raise(error))
        else:
            self._ready.append(self._fail(index, text, error, tag))


class _Raise:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


ON_ERROR = Options[Literal["raise", "yield"]]("raise", "yield")
"""``on_error``: end at the first failure, or yield it and carry on."""

_MAX_IN_FLIGHT = or_none(Integer(1))

_MAX_WIDTH = 256
"""Batches a stream runs at once, at most, whatever the limiter (which may have
infinite tokens): a bound on the default read-ahead, 257 batches."""


@asynccontextmanager
async def open_stream(
    batcher: Batcher,
    key: Hashable,
    source: Iterable[str] | AsyncIterable[str],
    convert: Convert[T],
    *,
    on_error: Literal["raise", "yield"] = "raise",
    fail: Fail[T] | None = None,
    max_in_flight: int | None = None,
    progress: Progress = None,
) -> AsyncIterator[_Results[T]]:
    """Stream ``convert``-ed results for the texts of ``source``; see the module docs.

    ``max_in_flight`` defaults to ``(N + 1) * max_batch_size`` texts, ``N`` being the
    executor's capacity (its limiter's tokens, at most its workers, at most 256): a
    full batch for every worker and one filling behind them.
    """
    check_source(source)
    on_error = check_param("on_error", on_error, ON_ERROR)
    max_in_flight = check_param("max_in_flight", max_in_flight, _MAX_IN_FLIGHT)
    # Requests waited for at once, each leading at most one batch: one per limiter token
    # (read now), and never more than the window lets in.
    tokens = max(1, int(min(batcher.executor.capacity, _MAX_WIDTH)))
    if max_in_flight is None:
        max_in_flight = (tokens + 1) * batcher.max_batch_size
    width = min(tokens, max_in_flight)
    pending: deque[Request] = deque()
    window = _Window(max_in_flight)
    total = len(source) if isinstance(source, Sized) else None
    reporter = Reporter(progress, "stream", total)
    # The window bounds the texts in flight, so the channels need no bound of their own.
    queued_send, queued_receive = anyio.create_memory_object_stream[_Queued](math.inf)
    done_send, done_receive = anyio.create_memory_object_stream[_Done](math.inf)

    async def read(send: MemoryObjectSendStream[_Queued]) -> None:
        async with send, aclosing(_iterate(source)) as items:
            index = 0
            request: Request | None = None
            try:
                async for item in items:
                    await window.acquire()
                    try:
                        text = check_text(item, index)
                    except InvalidInputError as exc:
                        request = None  # later texts go after the error, in a new request
                        await send.send((index, None, exc, repr(item)))
                    else:
                        await batcher.reserve(1, wait=True)
                        if request is None or not batcher.extend(request, text):
                            request = batcher.enqueue(key, [text], per_item=True)
                            pending.append(request)
                            await send.send((index, request, None, ""))
                    index += 1
            except Exception as exc:
                # The source itself failed: the consumer raises it in its turn.
                await window.acquire()
                await send.send((-1, None, exc, ""))

    async def drive(
        receive: MemoryObjectReceiveStream[_Queued], send: MemoryObjectSendStream[_Done]
    ) -> None:
        # The reorder buffer: one cell per chunk not yet handed on, in input order,
        # holding its _Done once known. ``waiting`` counts the requests among them.
        unsent: deque[list[_Done | None]] = deque()
        waiting = 0
        room: anyio.Event | None = None

        def hand_on() -> None:
            # Send every finished chunk at the front, so the consumer gets them in order
            # (the channel has no bound: sending never blocks).
            nonlocal waiting, room
            while unsent and (done := unsent[0][0]) is not None:
                unsent.popleft()
                if done[2] is not None:
                    pending.popleft()
                    waiting -= 1
                send.send_nowait(done)
            if room is not None and waiting < width:
                room.set()
                room = None

        async def await_outcome(start: int, request: Request, cell: list[_Done | None]) -> None:
            # Cancelled only with the whole stream (then Batcher.wait withdraws the
            # request, if no batch took it, and nothing more is handed on).
            await batcher.wait(request)
            cell[0] = (start, request.texts, request.outcome, None)
            hand_on()

        last: Request | None = None
        async with receive, send, anyio.create_task_group() as waiters:
            async for start, request, error, text in receive:
                if request is None:
                    unsent.append([(start, [text], None, error)])
                    hand_on()
                    continue
                if last is not None:
                    # Wait for the next request only once the last is in a batch: a waiter
                    # leads the front of the lane, so it must be the stream's front.
                    await batcher.wait_taken(last)
                last = request
                while waiting >= width:
                    room = anyio.Event()
                    await room.wait()
                waiting += 1
                cell: list[_Done | None] = [None]
                unsent.append(cell)
                waiters.start_soon(await_outcome, start, request, cell)

    fail_or_raise = fail if on_error == "yield" else None
    raised: BaseException | None = None
    with done_receive:
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read, queued_send)
                tasks.start_soon(drive, queued_receive, done_send)
                try:
                    yield _Results(done_receive, window, convert, fail_or_raise, reporter)
                except BaseException as exc:
                    # Re-raised below, outside the task group, so that the caller gets
                    # its own exception rather than one wrapped in an exception group.
                    raised = exc
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            # Only now are reader, driver and waiters done: a reader woken just before
            # the cancellation may have queued one more request on its way out.
            while pending:
                batcher.withdraw(pending.popleft())
            reporter.close()
    if raised is not None:
        raise raised
