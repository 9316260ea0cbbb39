"""The async shell around one scikit-learn estimator: predictions, rankings, streams
and online learning, on top of its settings and its ways to get a model."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, SupportsIndex, cast, overload

import numpy as np
from numpy.typing import NDArray

from . import _learning, _ranking, _streams
from ._errors import (
    InvalidInputError,
)
from ._fitting import FittingClassifier
from ._model import (
    Model,
    batch_key,
    predictions,
)
from ._types import (
    FailedPrediction,
    Label,
    LearnReport,
    OnError,
    Prediction,
    Progress,
    Ranked,
)
from ._validation import (
    check_k,
    check_labels,
    check_text,
    check_texts,
)

__all__ = ["AsyncClassifier"]


class AsyncClassifier(FittingClassifier[Label]):
    """Awaitable fit, predict, rank and group for a scikit-learn text classifier.

    The estimator's code never runs on the event loop: every call runs in a worker (a
    thread, a process or a Dask worker, as ``executor`` says) holding a token of
    ``limiter``. Concurrent prediction calls are
    merged into vectorised estimator calls of at most ``max_batch_size`` texts; a call
    waits at most ``max_latency`` seconds for company. ``fit`` trains a clone and swaps
    it in atomically, so predictions keep flowing during a refit.

    ``AsyncClassifier[str]`` (or ``[int]``...) says what type its labels are, so that
    ``classify``, ``group``, ``stream`` and ``rank`` are typed precisely; it changes
    nothing at run time.

    Args:
        estimator: Any scikit-learn compatible classifier or pipeline taking a list of
            ``str``. ``None`` means :func:`default_estimator`. It is cloned by ``fit``;
            the object you pass is never fitted itself.
        executor: Where the estimator runs: ``"threads"`` (worker threads of this
            process), ``"processes"`` (worker processes on this machine, see
            :class:`ProcessExecutor`), or an executor object. See docs/scaling.md.
        limiter: The capacity limiter for the workers. Defaults to a new one with as
            many tokens as CPUs (at least 2, so a prediction never waits behind a fit)
            for threads, one per worker process for processes. Share one between
            classifiers to bound them together.
        max_batch_size: Most texts in one estimator call.
        max_latency: The longest a batch waits for more calls, which it does only
            while a worker is free and calls are arriving together (a lone call
            finding a free worker runs at once); see docs/batching.md.
        max_queue: Most texts waiting for a batch; see ``overload``.
        overload: When the queue is full, ``"wait"`` for room or ``"raise"``
            :class:`OverloadedError` at once.
    """

    async def predict(self, X: Iterable[str]) -> NDArray[Any]:
        """Predict a label for each text.

        Runs in a worker (a thread, a process or a Dask worker, as ``executor`` says),
        batched with concurrent calls. Cancelling while queued withdraws the texts;
        cancelling while the batch runs discards only this call's result (the worker
        completes the batch for the rest of it).

        Returns:
            A numpy array of labels, one per text (empty for an empty ``X``).
        """
        return await self._array("predict", X, lambda m: np.asarray(m.estimator.classes_)[:0])

    async def predict_proba(self, X: Iterable[str]) -> NDArray[np.float64]:
        """Return class probabilities, one row per text, columns in ``classes_`` order.

        Runs and cancels like :meth:`predict`. Raises :class:`UnsupportedEstimatorError`
        if the estimator has no ``predict_proba``.
        """
        return await self._array("predict_proba", X, lambda m: np.empty((0, len(m.labels))))

    async def decision_function(self, X: Iterable[str]) -> NDArray[np.float64]:
        """Return the estimator's decision values, as its ``decision_function`` does.

        Runs and cancels like :meth:`predict`. Raises :class:`UnsupportedEstimatorError`
        if the estimator has no ``decision_function``.
        """

        def empty(model: Model) -> NDArray[np.float64]:
            n = len(model.labels)
            return np.empty((0,) if n == 2 else (0, n))

        return await self._array("decision_function", X, empty)

    async def score(self, X: Iterable[str], y: Iterable[Label]) -> float:
        """Return the accuracy of :meth:`predict` on ``X`` against the true labels ``y``.

        Runs and cancels like :meth:`predict`.
        """
        texts = check_texts(X)
        labels = check_labels(y, len(texts))
        if not texts:
            msg = "score needs at least one text."
            raise InvalidInputError(msg)
        self._slot.require().check_kind(labels, "y")
        predicted = (await self.predict(texts)).tolist()
        hits = sum(1 for guess, truth in zip(predicted, labels, strict=True) if guess == truth)
        return hits / len(labels)

    async def classify(self, text: str) -> Prediction[Label]:
        """Classify one text: its most likely label, that label's score, the model version.

        Concurrent ``classify`` calls from any number of tasks are merged into
        vectorised estimator calls run in workers. Cancelling while queued
        withdraws the text; cancelling while its batch runs discards only this result.
        """
        text = check_text(text, 0)
        self._require(self._slot.require(), "scores")
        # Batcher.submit's steps, inline: the commonest call pays for no more coroutines
        # than it needs, and takes its label from one argmax over its whole batch.
        batcher, key, texts = self._batcher, batch_key("scores"), [text]
        request = batcher.try_put(key, texts) or await batcher.put(key, texts)
        await batcher.wait(request)
        column, score = request.top()
        model: Model = request.batch.tag
        label = cast(Label, model.labels[column])
        return Prediction(0, text, label, score, model.version, model.model_id)

    async def classify_many(self, X: Iterable[str]) -> list[Prediction[Label]]:
        """Classify many texts: one :class:`Prediction` each, in input order.

        Batched with concurrent calls like :meth:`classify` (a list longer than
        ``max_batch_size`` runs in chunks side by side), and every text is answered
        by the same model, whose ``version`` each prediction carries. If the estimator
        fails on a text, the call raises its exception, as :meth:`predict` does; to
        get a :class:`FailedPrediction` for it and results for the others, use
        ``stream(X, on_error="yield")``.
        """
        texts = check_texts(X)
        self._require(self._slot.require(), "scores")
        if not texts:
            return []
        outcome = await self._batcher.submit(batch_key("scores"), texts)
        return predictions(0, texts, outcome.rows(), outcome.tag)

    async def rank(
        self, X: Iterable[str], label: Label, *, k: SupportsIndex | None = None
    ) -> list[Ranked]:
        """Order the texts by their score for ``label``, highest first, keeping ``k``.

        The score is ``predict_proba``'s column for ``label``, or the decision value
        when the estimator has no probabilities. Ties keep input order. Runs and
        cancels like :meth:`predict`.
        """
        texts = check_texts(X)
        k = check_k(k)
        model = self._slot.require()
        self._require(model, "scores")
        model.column(label)
        if not texts:
            return []
        outcome = await self._batcher.submit(batch_key("scores"), texts)
        scores = outcome.rows()[:, outcome.tag.column(label)]
        return _ranking.rank(texts, scores, k, outcome.tag.version, outcome.tag.model_id)

    async def group(
        self, X: Iterable[str], *, k: SupportsIndex | None = None
    ) -> dict[Label, list[Ranked]]:
        """Put each text under its predicted label, each list ordered by confidence.

        Every class is a key (in ``classes_`` order), with at most ``k`` texts, highest
        score first, ties in input order. Runs and cancels like :meth:`predict`.
        """
        texts = check_texts(X)
        k = check_k(k)
        model = self._slot.require()
        self._require(model, "scores")
        if not texts:
            return {cast(Label, label): [] for label in model.labels}
        outcome = await self._batcher.submit(batch_key("scores"), texts)
        labels = cast(list[Label], outcome.tag.labels)
        tag = outcome.tag
        return _ranking.group(texts, outcome.rows(), labels, k, tag.version, tag.model_id)

    # -- streams ---------------------------------------------------------------------

    @overload
    def stream(
        self,
        source: Iterable[str] | AsyncIterable[str],
        *,
        on_error: Literal["raise"] = "raise",
        max_in_flight: int | None = None,
        progress: Progress = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[Prediction[Label]]]: ...

    @overload
    def stream(
        self,
        source: Iterable[str] | AsyncIterable[str],
        *,
        on_error: OnError,
        max_in_flight: int | None = None,
        progress: Progress = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[Prediction[Label] | FailedPrediction]]: ...

    def stream(
        self,
        source: Iterable[str] | AsyncIterable[str],
        *,
        on_error: OnError = "raise",
        max_in_flight: int | None = None,
        progress: Progress = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[Prediction[Label] | FailedPrediction]]:
        """Classify a stream of texts, yielding one :class:`Prediction` per text, in order.

        Use it as ``async with clf.stream(texts) as results: async for p in results``.
        Texts are read ahead and batched, with at most ``max_in_flight`` read but not
        yet consumed, so memory stays flat and a slow consumer slows the reading of
        ``source``. Up to one batch per limiter token runs at once, the results still
        in input order. Leaving the block stops reading,
        withdraws queued texts and closes ``source``'s iterator if it has ``aclose`` or
        ``close`` (as ``contextlib.aclosing`` would); a batch already running finishes
        in its worker without anyone waiting for it. An error raised by
        ``source`` reaches the consumer after the predictions before it.

        Args:
            source: A sync or async iterable of ``str`` (a single ``str`` is refused).
                A sync one is iterated on the event loop, so it must not block.
            on_error: ``"raise"`` ends the stream with the exception of the first text
                that failed (a bad item or an estimator error); ``"yield"`` yields a
                :class:`FailedPrediction` carrying the exception and carries on.
            max_in_flight: The read-ahead bound, in texts; by default
                ``(N + 1) * max_batch_size`` for a limiter of ``N`` tokens (read when
                the stream starts): a batch for every worker and one filling.
            progress: ``True`` for a tqdm bar (notebook-aware), or a callable
                ``progress(done, total)``, called as texts are classified; ``total`` is
                ``len(source)`` when it has one, else ``None``.
        """
        return self._stream(source, on_error, max_in_flight, progress)

    @asynccontextmanager
    async def _stream(
        self,
        source: Iterable[str] | AsyncIterable[str],
        on_error: OnError,
        max_in_flight: int | None,
        progress: Progress,
    ) -> AsyncIterator[AsyncIterator[Prediction[Label] | FailedPrediction]]:
        model = self._slot.require()
        self._require(model, "scores")

        def failed(index: int, text: str, error: Exception, tag: Model | None) -> FailedPrediction:
            answering = self._slot.require() if tag is None else tag  # serving now
            return FailedPrediction(index, text, error, answering.version, answering.model_id)

        convert: _streams.Convert[Prediction[Label] | FailedPrediction] = predictions
        async with _streams.open_stream(
            self._batcher,
            batch_key("scores"),
            source,
            convert,
            on_error=on_error,
            fail=failed,
            max_in_flight=max_in_flight,
            progress=progress,
        ) as results:
            yield results

    async def top_k(
        self, source: Iterable[str] | AsyncIterable[str], label: Label, *, k: SupportsIndex
    ) -> list[Ranked]:
        """Return the ``k`` texts of ``source`` that score highest for ``label``.

        ``k`` is keyword-only, as in :meth:`rank` and :meth:`group`, and required: a
        stream has no end to rank up to. Reads ``source`` (of any length) through a
        stream and keeps only ``k`` texts at a time, in O(k) memory. Same order as
        :meth:`rank`. Cancelling stops the stream as leaving a :meth:`stream` block
        does.
        """
        k = check_k(k, optional=False)
        _streams.check_source(source)
        model = self._slot.require()
        self._require(model, "scores")
        model.column(label)
        best = _ranking.TopK(k)

        def scored(
            start: int, texts: list[str], rows: NDArray[np.float64], tag: Model
        ) -> list[tuple[int, str, float, int, str]]:
            scores = rows[:, tag.column(label)].tolist()
            version, model_id = tag.version, tag.model_id
            return [(start + i, text, scores[i], version, model_id) for i, text in enumerate(texts)]

        async with _streams.open_stream(
            self._batcher,
            batch_key("scores"),
            source,
            scored,
        ) as results:
            async for index, text, score, version, model_id in results:
                best.push(index, text, score, version, model_id)
        return best.result()

    # -- online learning -------------------------------------------------------------

    def learn(
        self,
        source: Iterable[tuple[str, Label]] | AsyncIterable[tuple[str, Label]],
        *,
        classes: Iterable[Label] | None = None,
        batch_size: int = 256,
        publish_every: int = 1000,
        window: int = 1000,
        on_error: OnError = "raise",
        max_in_flight: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        progress: Progress = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[LearnReport]]:
        """Learn from a stream of labelled texts while serving, reporting as it goes.

        Use it as ``async with clf.learn(pairs) as reports: async for r in reports``.
        The classifier learns with a private copy of its model (or, with none serving
        yet, a clone of its estimator): each mini-batch is first predicted by it, then
        learned from (``partial_fit``), so the reported accuracy is that of predictions
        on examples the learner had not seen. Mini-batches grow 1, 2, 4, ... up to
        ``batch_size`` (from the start, when a model already serves). Every
        ``publish_every`` examples, and when ``source`` ends, a copy of the learner is
        swapped in to serve (``version`` + 1): ``classify``, ``stream`` and the other
        calls are answered by published models only, never the learner.

        Leaving the block early, an error or a cancellation stops learning and
        publishes nothing more: the serving model is the last one published (the
        report of the last publish may not have been read yet: ``version`` tells).
        ``fit``, ``partial_fit`` and another ``learn`` wait until learning ends;
        awaited inside the block by the task holding it open, they raise
        ``AsyncClfError`` instead of waiting for themselves. Steps run one at a time in
        worker threads of this process, each holding a token of the classifier's
        limiter like a batch (so with one token, calls wait behind a step), whatever
        the executor (serving still uses the executor); leaving waits for the step
        under way to finish. A sync ``source`` is iterated on the event loop: it must
        not block.

        Args:
            source: A sync or async iterable of ``(text, label)`` pairs.
            classes: Every label the stream may hold; needed when no model serves
                yet. A serving model keeps its classes.
            batch_size: The largest mini-batch. A batch that has examples waits at
                most 50 ms for more, so examples trickling in are learned promptly.
            publish_every: Publish a copy of the learner every this many examples.
            window: The span of ``LearnReport.window_accuracy``, in examples.
            on_error: ``"raise"`` ends learning with the exception of the first bad
                example (not a pair, a text that is no ``str``, a label outside the
                classes), after learning from those before it; ``"yield"`` skips it
                and lists it in the next report's ``errors`` (a skipped example takes
                a place in its mini-batch, so reading stays bounded). An error of the
                estimator or of ``source`` always ends learning, with that error.
            max_in_flight: Examples read ahead at most (default ``2 * batch_size``).
            checkpoint: A file to save each published model to (as :meth:`save`
                does, atomically), so a crashed process resumes with
                :meth:`load` and learns on.
            checkpoint_every: Save every this many examples (at the first publish
                after), and when ``source`` ends; default ``publish_every``.
            progress: ``True`` for a tqdm bar, or a callable ``progress(done, total)``.

        Raises:
            UnsupportedEstimatorError: the model cannot learn incrementally (no
                ``partial_fit``, or a pipeline step that needs fitting first): use
                :func:`online_estimator`. Raised before ``source`` is read.
            InvalidParameterError: a bad setting, or a ``checkpoint`` path that
                cannot be a file (checked before ``source`` is read).
            InvalidInputError: ``classes`` missing or differing from the serving
                model's, or (``on_error="raise"``) a bad example.
        """
        return _learning.open_learning(
            self._slot,
            self._executor,
            self.estimator,
            source,
            classes=classes,
            batch_size=batch_size,
            publish_every=publish_every,
            window=window,
            on_error=on_error,
            max_in_flight=max_in_flight,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            progress=progress,
        )
