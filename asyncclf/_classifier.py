"""The async shell around one scikit-learn estimator: fits, model swaps, predictions."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Hashable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Generic, Literal, SupportsIndex, cast, overload

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from typing_extensions import Self

from . import _learning, _ranking, _streams
from ._batching import Batcher
from ._errors import (
    InvalidInputError,
    InvalidParameterError,
    UnsupportedEstimatorError,
)
from ._executors import make_executor
from ._executors.base import Executor
from ._model import (
    Config,
    Model,
    batch_key,
    default_estimator,
    online_estimator,
    predictions,
    require_partial_fit,
)
from ._progress import Reporter
from ._serving import Slot
from ._types import (
    BatchStatistics,
    FailedPrediction,
    Label,
    LearnReport,
    OnError,
    Overload,
    Prediction,
    Progress,
    Ranked,
)
from ._validation import (
    check_k,
    check_labels,
    check_params,
    check_text,
    check_texts,
    check_training_set,
    label_kind,
)
from ._work import compute, training

__all__ = ["AsyncClassifier", "default_estimator", "online_estimator"]


def _rehearse(estimator: Any, nested: dict[str, Any]) -> None:
    """Apply ``nested`` to a clone first: a failure there leaves ``estimator`` whole.

    scikit-learn's ``set_params`` applies names one by one, so one that fails halfway
    (replacing a step, then setting a parameter it no longer has) would leave the
    estimator half changed.
    """
    try:
        rehearsal = clone(estimator)
    except Exception:  # not clonable: nothing to rehearse on
        return
    try:
        rehearsal.set_params(**nested)
    except Exception as exc:
        names = ", ".join(f"estimator__{name}" for name in nested)
        msg = f"{type(estimator).__name__} refused the parameters {names}: {exc}"
        raise InvalidParameterError(msg) from exc


async def _load_file(
    path: str | os.PathLike[str], trusted: Iterable[str], sha256: str | None, max_size: int | None
) -> tuple[Any, int, dict[str, Any]]:
    """``load_model`` in a worker thread of its own (file I/O takes no executor token)."""
    from ._persistence import load_model

    return await anyio.to_thread.run_sync(
        partial(load_model, path, list(trusted), sha256=sha256, max_size=max_size),
        limiter=anyio.CapacityLimiter(1),
    )


class AsyncClassifier(Generic[Label]):
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

    def __init__(
        self,
        estimator: Any = None,
        *,
        executor: str | Executor = "threads",
        limiter: anyio.CapacityLimiter | None = None,
        max_batch_size: int = 256,
        max_latency: float = 0.002,
        max_queue: int = 65536,
        overload: Overload = "wait",
    ) -> None:
        check_params(
            {
                "estimator": estimator,
                "executor": executor,
                "limiter": limiter,
                "max_batch_size": max_batch_size,
                "max_latency": max_latency,
                "max_queue": max_queue,
                "overload": overload,
            }
        )
        self.estimator = estimator
        self.executor = executor
        self.limiter = limiter
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency
        self.max_queue = max_queue
        self.overload = overload
        self._executor = make_executor(executor, limiter)
        self._batcher = Batcher(
            self._executor,
            self._prepare,
            max_batch_size=max_batch_size,
            max_latency=max_latency,
            max_queue=max_queue,
            overload=overload,
        )
        self._slot = Slot()

    def __repr__(self) -> str:
        estimator = "default" if self.estimator is None else type(self.estimator).__name__
        closed = " closed" if self._slot.closed else ""
        return f"<AsyncClassifier estimator={estimator} version={self.version}{closed}>"

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release what the classifier holds, and refuse every later call.

        The serving model is dropped, with what an executor shipped for it (a worker
        process's model file, the model's data on a Dask cluster) once the calls
        reading it are done, and the executor the classifier made from
        ``executor="threads"`` or ``"processes"`` is closed. An executor object you
        passed is yours to close (``async with DaskExecutor(...) as executor``): other
        classifiers may share it. Calls under way finish; a fit or a ``learn`` publish
        that ends after this raises :class:`AsyncClfError`, as does every later call.
        Idempotent and shielded from cancellation. A classifier never closed is
        cleaned up when it is garbage-collected or at interpreter exit.
        """
        if self._slot.closed:
            return
        self._slot.close()
        if isinstance(self.executor, str):
            with anyio.CancelScope(shield=True):
                await self._executor.aclose()

    async def __aenter__(self) -> Self:
        """``async with AsyncClassifier(...) as clf:`` closes it at the end."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- parameters (scikit-learn's conventions) ----------------------------------------

    _PARAMS = (
        "estimator",
        "executor",
        "limiter",
        "max_batch_size",
        "max_latency",
        "max_queue",
        "overload",
    )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor arguments, and with ``deep`` the estimator's, prefixed.

        With ``deep``, the ``estimator__*`` names are those of :func:`default_estimator`
        when ``estimator`` is ``None``: every name ``set_params`` accepts is listed.
        """
        params = {name: getattr(self, name) for name in self._PARAMS}
        if deep:
            estimator = self.estimator if self.estimator is not None else default_estimator()
            if hasattr(estimator, "get_params"):
                for name, value in estimator.get_params(deep=True).items():
                    params[f"estimator__{name}"] = value
        return params

    def set_params(self, **params: Any) -> Self:
        """Set constructor arguments; ``estimator__name`` sets the estimator's own.

        Every name and value is checked before anything changes, so a call that
        raises :class:`InvalidParameterError` changes nothing. Setting an
        ``estimator__*`` name while ``estimator`` is ``None`` first makes it a
        :func:`default_estimator`. The serving model is not touched: estimator settings
        apply from the next ``fit`` (``partial_fit`` goes on updating the serving
        model). Batching settings apply to batches formed from then on; texts already
        queued are never stranded.
        """
        direct: dict[str, Any] = {}
        nested: dict[str, Any] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in self._PARAMS or (sub and name != "estimator"):
                msg = f"Invalid parameter {key!r} for AsyncClassifier; valid: {self._PARAMS}."
                raise InvalidParameterError(msg)
            if sub:
                nested[sub] = value
            else:
                direct[name] = value
        merged = {name: getattr(self, name) for name in self._PARAMS} | direct
        check_params(merged)
        estimator = merged["estimator"]
        if nested:
            if estimator is None:
                estimator = merged["estimator"] = default_estimator()
            if not hasattr(estimator, "set_params"):
                msg = f"{type(estimator).__name__} has no set_params for {sorted(nested)}."
                raise InvalidParameterError(msg)
            valid = estimator.get_params(deep=True)
            unknown = sorted(set(nested) - set(valid))
            if unknown:
                msg = (
                    f"Invalid parameter(s) {['estimator__' + name for name in unknown]} for "
                    f"AsyncClassifier: {type(estimator).__name__} has no such parameter; "
                    f"see get_params(deep=True) for the valid names."
                )
                raise InvalidParameterError(msg)
            _rehearse(estimator, nested)
            estimator.set_params(**nested)
        self._slot.require_open()
        if merged["executor"] is not self.executor:
            # Batches already running finish on the old executor.
            self._executor = make_executor(merged["executor"], merged["limiter"])
            self._batcher.executor = self._executor
        elif merged["limiter"] is not self.limiter:
            self._executor.set_limiter(merged["limiter"])
        for name, value in merged.items():
            setattr(self, name, value)
        self._batcher.configure(
            max_batch_size=self.max_batch_size,
            max_latency=self.max_latency,
            max_queue=self.max_queue,
            overload=self.overload,
        )
        return self

    def __sklearn_clone__(self) -> Self:
        """Return an unfitted copy with the same settings, as ``sklearn.base.clone`` asks.

        The estimator is cloned; a ``limiter`` is shared by reference, so clones are
        bounded together, as passing one limiter to several classifiers means.
        """
        params = self.get_params(deep=False)
        if params["estimator"] is not None:
            params["estimator"] = clone(params["estimator"])
        return type(self)(**params)

    # -- the serving model -----------------------------------------------------------

    @property
    def version(self) -> int:
        """0 before the first fit; +1 on every successful ``fit`` or ``partial_fit``."""
        return self._slot.version

    @property
    def estimator_(self) -> Any:
        """The fitted synchronous estimator serving predictions now."""
        return self._slot.require().estimator

    @property
    def classes_(self) -> NDArray[Any]:
        """The class labels, in the order of ``predict_proba``'s columns."""
        return np.asarray(self._slot.require().estimator.classes_)

    @property
    def model_id(self) -> str:
        """The serving model's identity: 16 hex digits of a hash of everything it
        learned and was set to ("" before the first fit).

        Unlike :attr:`version`, a count in this process, it is the same in every
        process serving the same model: loaded from the same file (which stores it),
        or fitted on the same data with the same settings and library versions; any
        other fit, ``partial_fit`` or publish of :meth:`learn` changes it.
        :class:`Prediction`, :class:`FailedPrediction` and :class:`Ranked` carry the
        identity of the model that answered. Not a security check: pin a file's
        SHA-256 for that. See docs/deployment.md.
        """
        return self._slot.model_id

    @property
    def limiter_(self) -> anyio.CapacityLimiter:
        """The capacity limiter worker threads run under (``limiter`` or the default)."""
        return self._executor.limiter

    async def fit(self, X: Iterable[str], y: Iterable[Label], *, progress: Progress = None) -> Self:
        """Train a clone of the estimator on ``X``, ``y`` and swap it in.

        Runs in a worker thread. Predictions made meanwhile are answered by the model
        serving before, and do not wait. Concurrent fits run one after another. If the
        fit raises or is cancelled, the serving model and ``version`` stay as they were.
        Cancelling takes effect when the worker thread finishes (scikit-learn cannot be
        interrupted); the trained clone is then discarded.

        Args:
            X: The training texts.
            y: One label per text.
            progress: ``True`` for a tqdm bar (notebook-aware), or a callable
                ``progress(done, total)``, counting the estimator's steps: a
                pipeline's steps (``total``), else one. It hears ``0`` when the fit
                starts and ``total`` when it ends; a scikit-learn ``Pipeline`` fitted
                in threads (the default executor) is fitted a step at a time, as its
                own ``fit`` does, and also reports each step as it ends, through the
                event loop; cancelling then takes effect at the next step's end (in
                worker processes or on Dask, the start and the end only). The new
                model is swapped in after the last report: if the callback raises,
                the fit raises and the new model is discarded.

        Returns:
            ``self``, like scikit-learn's ``fit``.
        """
        texts, labels = check_training_set(X, y)
        estimator = clone(self.estimator if self.estimator is not None else default_estimator())
        steps = training.fit_steps(estimator)
        reporter = Reporter(progress, "fit", steps, unit=" steps")
        # Executors that can tell (threads) report each step as it ends.
        on_step = reporter.update if reporter.active and steps > 1 else None
        try:
            async with self._slot.changing("fit"):
                reporter.update(0)
                fitted = await self._executor.fit(
                    training.fit, estimator, texts, labels, on_step=on_step
                )
                identified = await self._executor.run(training.identified, fitted)
                reporter.update(steps)
                self._slot.serve(*identified)
        finally:
            reporter.close()
        return self

    async def partial_fit(
        self, X: Iterable[str], y: Iterable[Label], *, classes: Iterable[Label] | None = None
    ) -> Self:
        """Update the model with one more batch of training data, copy-on-write.

        The serving estimator is deep-copied in a worker thread, the copy is updated
        with the estimator's ``partial_fit`` and swapped in, so a prediction reading the
        old model is never disturbed. For a ``Pipeline`` the transformers must be
        stateless (``HashingVectorizer``) or fitted by an earlier ``fit``, and the last
        step gets ``partial_fit``. ``classes`` is required on the first call. Once a
        model serves, ``partial_fit`` updates that model: settings changed since by
        ``set_params`` apply from the next ``fit``. Cancelling takes effect when the
        worker thread finishes; the update is then discarded.
        """
        texts, labels = check_training_set(X, y, min_classes=1)
        class_list = None
        if classes is not None:
            class_list = check_labels(classes, None, name="classes")
            if class_list and label_kind(class_list[0]) != label_kind(labels[0]):
                msg = (
                    f"classes holds {label_kind(class_list[0])} labels but y holds "
                    f"{label_kind(labels[0])} labels ({labels[0]!r})."
                )
                raise InvalidInputError(msg)
        async with self._slot.changing("partial_fit") as model:
            if model is not None:
                model.check_kind(labels, "y")
                target, origin = model.estimator, "the serving model"
            else:
                target = self.estimator if self.estimator is not None else default_estimator()
                origin = "the estimator"
            require_partial_fit(target, origin)
            if model is None and class_list is None:
                msg = "The first partial_fit needs classes=[...], every class it will ever see."
                raise InvalidInputError(msg)
            serving = None if model is None else self._executor.ref(model)
            fresh = clone(target) if serving is None else None
            updated = await self._executor.fit(
                training.partial_fit, serving, fresh, texts, labels, class_list
            )
            self._slot.serve(*await self._executor.run(training.identified, updated))
        return self

    async def swap(
        self,
        model: Any,
        *,
        trusted: Iterable[str] = (),
        sha256: str | None = None,
        max_size: int | None = None,
    ) -> Self:
        """Serve ``model`` from now on: a fitted estimator, or a model file saved by
        :meth:`save` (or the CLI).

        The model is checked, and a file loaded (with :meth:`load`'s checks and
        arguments), or an estimator deep-copied (so that changing it later cannot reach
        the served model), in a worker thread; then it is swapped in atomically,
        ``version`` + 1, with the guarantees of :meth:`fit`: calls already batched are
        answered by the model they started with, and it waits for a fit or a
        :meth:`learn` under way. Every holder of this classifier serves the new model.

        Raises:
            NotFittedError: ``model`` is an estimator that is not fitted.
            UnsupportedEstimatorError: it is no classifier (no ``classes_``).
            PersistenceError: the file cannot be loaded (see :meth:`load`).
        """
        self._slot.check_not_learning("swap")
        if isinstance(model, AsyncClassifier):
            msg = (
                "swap() takes an estimator or a model file, not an AsyncClassifier: "
                "pass its estimator_ to serve the model it serves."
            )
            raise UnsupportedEstimatorError(msg)
        if isinstance(model, (str, os.PathLike)):
            estimator, _, header = await _load_file(model, trusted, sha256, max_size)
            model_id = header["model_id"]
        else:
            estimator, model_id = await anyio.to_thread.run_sync(training.served_copy, model)
        async with self._slot.changing("swap"):
            self._slot.serve(estimator, model_id)
        return self

    # -- persistence -----------------------------------------------------------------

    async def save(self, path: str | os.PathLike[str]) -> str:
        """Save the serving model to ``path`` as a skops file, atomically.

        Serialisation and file I/O run in a worker thread. The file is written next to
        ``path`` and renamed over it, so a crash never leaves a half-written model where
        a good one was. Cancelling takes effect when the worker finishes; the file is
        then complete or untouched. See docs/persistence.md for modes and links.

        Returns:
            The SHA-256 digest (hex) of the file written: pin it with
            ``load(path, sha256=...)`` to detect any later change to the file.

        Raises:
            PersistenceError: the model cannot be serialised or the file not written.
        """
        model = self._slot.require()
        from ._persistence import dump_model

        return await self._executor.run(
            dump_model, path, model.estimator, model.labels, model.version, model.model_id
        )

    @classmethod
    async def load(
        cls,
        path: str | os.PathLike[str],
        *,
        trusted: Iterable[str] = (),
        sha256: str | None = None,
        max_size: int | None = None,
        **params: Any,
    ) -> Self:
        """Load a model saved by :meth:`save` and return a classifier serving it.

        Reading and deserialisation run in a worker thread. The file may come from an
        untrusted source: any type outside scikit-learn, numpy and scipy's own is
        refused with :class:`PersistenceError` unless named in ``trusted`` (e.g.
        ``["mypackage.MyTransformer"]``). That keeps code from running; it does not
        prove the weights are the ones saved: pin ``sha256`` (the digest ``save``
        returned) for that. ``params`` are passed to the constructor; ``estimator``
        defaults to an unfitted clone of the loaded one, so a later ``fit`` trains the
        same kind of model.

        Args:
            path: The model file.
            trusted: Type names to allow beyond scikit-learn, numpy and scipy's own.
            sha256: The expected SHA-256 digest (hex) of the file; any other content
                is refused before it is parsed.
            max_size: Most bytes the file may hold once decompressed (``None``: the
                default bound, see docs/persistence.md), so a small file cannot
                expand to fill memory.

        Raises:
            PersistenceError: the file is unreadable, truncated, corrupt, too large,
                tampered with, differs from ``sha256``, or holds untrusted types.
        """
        estimator, version, header = await _load_file(path, trusted, sha256, max_size)
        params.setdefault("estimator", clone(estimator))
        clf = cls(**params)
        async with clf._slot.changing("load"):
            clf._slot.serve(estimator, header["model_id"], version)
        return clf

    # -- predictions -----------------------------------------------------------------

    def _prepare(self, key: Hashable) -> tuple[Any, Model]:
        model = self._slot.require()
        kind: str
        config: Config
        kind, config = key  # type: ignore[misc]
        return partial(compute.compute, self._executor.ref(model), kind, config.settings), model

    def _require(self, model: Model, kind: str) -> None:
        if kind in model.abilities:
            return
        method = "predict_proba or decision_function" if kind == "scores" else kind
        msg = f"{type(model.estimator).__name__} has no {method}, which this call needs."
        raise UnsupportedEstimatorError(msg)

    async def _array(
        self, kind: str, X: Iterable[str], empty: Callable[[Model], NDArray[Any]]
    ) -> NDArray[Any]:
        texts = check_texts(X)
        model = self._slot.require()
        self._require(model, kind)
        if not texts:
            return empty(model)
        result: NDArray[Any] = (await self._batcher.submit(batch_key(kind), texts)).rows()
        return result

    async def predict(self, X: Iterable[str]) -> NDArray[Any]:
        """Predict a label for each text.

        Runs in a worker thread, batched with concurrent calls. Cancelling while queued
        withdraws the texts; cancelling while the batch runs discards only this call's
        result (the worker thread completes for the rest of the batch).

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
        vectorised estimator calls run in worker threads. Cancelling while queued
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
        in its worker thread without anyone waiting for it. An error raised by
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
        self, source: Iterable[str] | AsyncIterable[str], label: Label, k: SupportsIndex
    ) -> list[Ranked]:
        """Return the ``k`` texts of ``source`` that score highest for ``label``.

        Reads ``source`` (of any length) through a stream and keeps only ``k`` texts at
        a time, in O(k) memory. Same order as :meth:`rank`. Cancelling stops the stream
        as leaving a :meth:`stream` block does.
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

    def statistics(self) -> BatchStatistics:
        """Return the batcher's counters: batches, items, queue depth, sizes, timings."""
        return self._batcher.statistics()
