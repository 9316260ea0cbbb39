"""Learn from a labelled stream while the classifier serves (``AsyncClassifier.learn``).

Three tasks, no more:

* a *reader* takes ``(text, label)`` pairs from the source, checks each, and queues
  them in a channel bounded by ``max_in_flight`` (the read-ahead);
* a *learner* takes mini-batches from the channel (1, 2, 4, ... up to ``batch_size``
  examples: the first examples are learned from at once, later ones in vectorised
  batches), and for each runs one step in a worker thread: predict the batch with the
  private learner, then ``partial_fit`` it (test, then train). Every
  ``publish_every`` examples, and at the end, the step also returns a deep copy of the
  learner, which is swapped in to serve (version + 1), and maybe saved as a
  checkpoint; then it sends a :class:`LearnReport`;
* the caller iterates the reports.

The learner is the session's own copy: serving calls read published copies only, so
they never wait for learning and never see a half-updated model. Leaving early, an
error or a cancellation publishes nothing more: the serving model stays the last one
published.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Hashable, Iterable
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sklearn.base import clone

from ._errors import (
    InvalidInputError,
    InvalidParameterError,
    UnsupportedEstimatorError,
)
from ._model import require_partial_fit
from ._progress import Reporter
from ._progressive import Classes, Score, example
from ._streams import ON_ERROR, _iterate, _Raise, check_source
from ._types import LearnReport, Progress
from ._validation import Integer, Rule, check_labels, check_params, or_none
from ._work import training

if TYPE_CHECKING:
    from ._executors.base import Executor
    from ._serving import Slot

__all__ = ["open_learning"]

FILL_WAIT = 0.05
"""Seconds a mini-batch that has examples waits for more before it is learned from:
examples trickling in are learned from promptly, a fast source fills every batch."""

_Item = tuple[int, str, Hashable, "Exception | None"]
"""An item as queued: its index in the source, and its text and label, or the
exception that makes it a bad item (at index -1: the source's own failure)."""


_RULES: dict[str, Rule[Any]] = {
    "batch_size": Integer(1),
    "publish_every": Integer(1),
    "window": Integer(1),
    "on_error": ON_ERROR,
    "max_in_flight": or_none(Integer(1)),
    "checkpoint_every": or_none(Integer(1)),
}
"""What each setting of ``learn`` accepts."""


class _Reports:
    """The async iterator of reports a caller of ``learn`` gets."""

    def __init__(self, receive: MemoryObjectReceiveStream[LearnReport | _Raise]) -> None:
        self._receive = receive
        self._finished = False

    def __aiter__(self) -> _Reports:
        return self

    async def __anext__(self) -> LearnReport:
        if self._finished:
            raise StopAsyncIteration
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            self._finished = True
            raise StopAsyncIteration from None
        if isinstance(item, _Raise):
            self._finished = True
            raise item.error
        return item


@asynccontextmanager
async def open_learning(
    slot: Slot,
    executor: Executor,
    estimator: Any,
    source: Iterable[Any] | AsyncIterable[Any],
    *,
    classes: Iterable[Any] | None,
    batch_size: int,
    publish_every: int,
    window: int,
    on_error: Literal["raise", "yield"],
    max_in_flight: int | None,
    checkpoint: str | os.PathLike[str] | None,
    checkpoint_every: int | None,
    progress: Progress,
) -> AsyncIterator[AsyncIterator[LearnReport]]:
    """The body of :meth:`AsyncClassifier.learn`; see there and the module docs."""
    check_source(source, "(text, label) pairs", "(text, label)")
    settings = check_params(
        {
            "batch_size": batch_size,
            "publish_every": publish_every,
            "window": window,
            "on_error": on_error,
            "max_in_flight": max_in_flight,
            "checkpoint_every": checkpoint_every,
        },
        _RULES,
    )
    batch_size, publish_every = settings["batch_size"], settings["publish_every"]
    window, on_error = settings["window"], settings["on_error"]
    checkpoint_every = settings["checkpoint_every"]
    max_in_flight = settings["max_in_flight"]
    if max_in_flight is None:
        max_in_flight = 2 * batch_size
    if checkpoint_every is not None and checkpoint is None:
        msg = "checkpoint_every needs checkpoint=PATH, the file to save the model to."
        raise InvalidParameterError(msg)
    if checkpoint is not None:
        checkpoint = _checkpoint_path(checkpoint)
        if checkpoint_every is None:
            checkpoint_every = publish_every
    declared = None if classes is None else check_labels(classes, None, name="classes")
    total = len(source) if isinstance(source, (list, tuple)) else None
    reporter = Reporter(progress, "learn", total)
    try:
        async with slot.changing("learn") as model:
            if model is not None:
                require_partial_fit(model.estimator, "the serving model")
                labels = list(model.labels)
                if declared is not None and set(declared) != set(labels):
                    msg = (
                        f"classes={declared!r} differ from the serving model's, {labels!r}; "
                        f"a model learns online with the classes it has."
                    )
                    raise InvalidInputError(msg)
                learner = await executor.run(copy.deepcopy, model.estimator)
            else:
                target = estimator
                if target is None:
                    msg = (
                        "The default estimator cannot learn incrementally: give the "
                        "classifier one that can, AsyncClassifier(asyncclf.online_estimator())."
                    )
                    raise UnsupportedEstimatorError(msg)
                require_partial_fit(target, "the estimator")
                if declared is None:
                    msg = (
                        "learn() with no model serving yet needs classes=[...]: every label "
                        "the stream will hold."
                    )
                    raise InvalidInputError(msg)
                labels = list(dict.fromkeys(declared))
                if len(labels) < 2:
                    msg = f"classes holds {len(labels)} class; a classifier needs at least 2."
                    raise InvalidInputError(msg)
                learner = clone(target)
            training.learning_parts(learner)  # a transformer that is not ready: refused now
            session = _Session(
                slot,
                executor,
                learner,
                Classes(labels),
                trained=model is not None,
                batch_size=batch_size,
                publish_every=publish_every,
                window=window,
                on_error=on_error,
                checkpoint=checkpoint,
                checkpoint_every=checkpoint_every,
                reporter=reporter,
            )
            items_send, items_receive = anyio.create_memory_object_stream[_Item](max_in_flight)
            # One report ahead at most: a consumer that stops reading pauses the learning.
            reports_send, reports_receive = anyio.create_memory_object_stream[LearnReport | _Raise](
                1
            )
            raised: BaseException | None = None
            with slot.learning(), reports_receive:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(session.read, source, items_send)
                    tasks.start_soon(session.learn, items_receive, reports_send)
                    try:
                        yield _Reports(reports_receive)
                    except BaseException as exc:
                        # Re-raised below, outside the task group, so that the caller
                        # gets its own exception rather than an exception group.
                        raised = exc
                    finally:
                        tasks.cancel_scope.cancel()
            if raised is not None:
                raise raised
    finally:
        reporter.close()


def _checkpoint_path(checkpoint: object) -> str:
    """``checkpoint`` as a path to a file that can be written, or InvalidParameterError."""
    try:
        path = os.fspath(checkpoint)  # type: ignore[call-overload]
    except TypeError:
        msg = f"checkpoint must be a path (str or os.PathLike), not {checkpoint!r}."
        raise InvalidParameterError(msg) from None
    if not isinstance(path, str) or not path:
        msg = f"checkpoint must be a non-empty str path, not {checkpoint!r}."
        raise InvalidParameterError(msg)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder):
        why = "is a directory" if os.path.isdir(path) else f"has no directory {folder!r}"
        msg = f"checkpoint {path!r} {why}; give the path of a model file to write."
        raise InvalidParameterError(msg)
    return path


class _Session:
    """One call of ``learn``: its learner, its counters and its two tasks."""

    def __init__(
        self,
        slot: Slot,
        executor: Executor,
        learner: Any,
        classes: Classes,
        *,
        trained: bool,
        batch_size: int,
        publish_every: int,
        window: int,
        on_error: Literal["raise", "yield"],
        checkpoint: str | None,
        checkpoint_every: int | None,
        reporter: Reporter,
    ) -> None:
        self.slot = slot
        self.executor = executor
        self.learner = learner
        self.classes = classes
        self.trained = trained
        self.batch_size = batch_size
        # A learner that already serves learns in full batches from the start.
        self.size = batch_size if trained else 1
        self.publish_every = publish_every
        self.on_error = on_error
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.reporter = reporter
        self.score = Score(window)
        self.published_at = 0
        self.saved_at = 0
        self.skipped = 0
        self.started = time.perf_counter()

    async def read(
        self, source: Iterable[Any] | AsyncIterable[Any], send: MemoryObjectSendStream[_Item]
    ) -> None:
        async with send, aclosing(_iterate(source)) as items:
            for index in itertools.count():
                queued: _Item
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    queued = (-1, "", None, exc)  # the source itself failed
                else:
                    try:
                        text, label = example(item, index, self.classes)
                    except InvalidInputError as exc:
                        queued = (index, "", None, exc)
                    else:
                        queued = (index, text, label, None)
                try:
                    try:
                        send.send_nowait(queued)  # no trip round the event loop per item
                    except anyio.WouldBlock:
                        await send.send(queued)
                except anyio.BrokenResourceError:
                    return  # learning has ended (an error): nobody reads on
                if queued[0] < 0:
                    return

    async def learn(
        self,
        receive: MemoryObjectReceiveStream[_Item],
        send: MemoryObjectSendStream[LearnReport | _Raise],
    ) -> None:
        async with receive, send:
            ended = False
            while not ended:
                texts: list[str] = []
                labels: list[Hashable] = []
                errors: list[tuple[int, Exception]] = []
                failure: Exception | None = None
                # Skipped examples count toward the batch too, so that each report
                # lists at most ``size`` of them and a stream of bad items stays bounded.
                while len(texts) + len(errors) < self.size:
                    try:
                        try:
                            index, text, label, error = receive.receive_nowait()
                        except anyio.WouldBlock:
                            if texts or errors:
                                with anyio.fail_after(FILL_WAIT):
                                    index, text, label, error = await receive.receive()
                            else:
                                index, text, label, error = await receive.receive()
                    except TimeoutError:
                        break  # learn from what came; more will follow
                    except anyio.EndOfStream:
                        ended = True
                        break
                    if error is None:
                        texts.append(text)
                        labels.append(label)
                    elif index < 0 or self.on_error == "raise":
                        failure = error
                        break
                    else:
                        errors.append((index, error))
                        self.skipped += 1
                finished = ended and failure is None
                try:
                    if texts or errors or (finished and self._unfinished):
                        await self._step(texts, labels, errors, finished, send)
                except Exception as exc:
                    # The estimator (or the checkpoint's file) failed: the learner may be
                    # half-updated, so learning ends; the serving model stays as it was.
                    failure = exc
                if failure is not None:
                    await send.send(_Raise(failure))
                    return

    @property
    def _unfinished(self) -> bool:
        """Whether the end still has work: learning not published, or not saved."""
        unsaved = self.checkpoint is not None and self.saved_at < self.published_at
        return self.score.seen > self.published_at or unsaved

    async def _step(
        self,
        texts: list[str],
        labels: list[Hashable],
        errors: list[tuple[int, Exception]],
        last: bool,
        send: MemoryObjectSendStream[LearnReport | _Raise],
    ) -> None:
        """Learn from one mini-batch; publish, save and report as due."""
        slot = self.slot
        seen = self.score.seen + len(texts)
        publish = (last and seen > self.published_at) or (
            seen // self.publish_every > self.published_at // self.publish_every
        )
        snapshot = None
        if texts:
            hits, snapshot = await self.executor.run(
                training.learn_step,
                self.learner,
                texts,
                labels,
                self.classes.labels,
                self.trained,
                publish,
            )
            self.trained = True
            self.score.add(hits)
            self.size = min(2 * self.size, self.batch_size)
        elif publish:
            snapshot = await self.executor.run(training.snapshot, self.learner)
        if snapshot is not None:
            slot.serve(*snapshot)
            self.published_at = seen
        saved = False
        every = self.checkpoint_every
        if (
            self.checkpoint is not None
            and every is not None
            and self.saved_at < self.published_at
            and (last or self.published_at // every > self.saved_at // every)
        ):
            from ._persistence import dump_model  # skops, imported when first needed

            model = slot.require()
            await self.executor.run(
                dump_model,
                self.checkpoint,
                model.estimator,
                model.labels,
                model.version,
                model.model_id,
            )
            self.saved_at = self.published_at
            saved = True
        self.reporter.update(seen + self.skipped)
        elapsed = time.perf_counter() - self.started
        await send.send(
            LearnReport(
                seen=seen,
                accuracy=self.score.accuracy,
                window_accuracy=self.score.window_accuracy,
                version=slot.version,
                examples_per_second=seen / elapsed if elapsed > 0 else math.inf,
                batch_size=len(texts),
                published=snapshot is not None,
                saved=saved,
                skipped=self.skipped,
                errors=tuple(errors),
                model_id=slot.model_id,
            )
        )
