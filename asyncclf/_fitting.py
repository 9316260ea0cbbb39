"""Every way a classifier gets a model: fit, partial_fit, swap, save and load."""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from sklearn.base import clone
from typing_extensions import Self

from ._base import ClassifierBase
from ._errors import (
    InvalidInputError,
    UnsupportedEstimatorError,
)
from ._model import (
    default_estimator,
    require_partial_fit,
)
from ._progress import Reporter
from ._types import (
    Label,
    Progress,
)
from ._validation import (
    check_labels,
    check_training_set,
    label_kind,
)
from ._work import training

__all__ = ["FittingClassifier"]


async def _load_file(
    path: str | os.PathLike[str], trusted: Iterable[str], sha256: str | None, max_size: int | None
) -> tuple[Any, int, dict[str, Any]]:
    """``load_model`` in a worker thread of its own (file I/O takes no executor token)."""
    from ._persistence import load_model

    return await anyio.to_thread.run_sync(
        partial(load_model, path, list(trusted), sha256=sha256, max_size=max_size),
        limiter=anyio.CapacityLimiter(1),
    )


class FittingClassifier(ClassifierBase[Label]):
    """Training, model swaps and model files of an :class:`~asyncclf.AsyncClassifier`
    (see there)."""

    async def fit(self, X: Iterable[str], y: Iterable[Label], *, progress: Progress = None) -> Self:
        """Train a clone of the estimator on ``X``, ``y`` and swap it in.

        Runs in a worker (as ``executor`` says). Predictions made meanwhile are answered
        by the model serving before, and do not wait. Concurrent fits run one after
        another. If the fit raises or is cancelled, the serving model and ``version``
        stay as they were. Cancelling takes effect when a worker thread finishes
        (scikit-learn cannot be interrupted), at once in a worker process (which is
        killed); the trained clone is then discarded.

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
        if isinstance(model, ClassifierBase):
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
