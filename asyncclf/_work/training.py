"""Training in a worker: fits (a step at a time when asked), partial fits, the steps of
online learning, and copies of models to serve with their fingerprints."""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .._errors import NotFittedError, UnsupportedEstimatorError
from .fingerprint import fingerprint
from .handles import resolve
from .packing import pack


def served_copy(estimator: Any) -> tuple[Any, str]:
    """A deep copy of a fitted classifier to serve, and its fingerprint; or
    NotFittedError."""
    if isinstance(estimator, BaseEstimator):  # others are judged by their classes_ alone
        try:
            check_is_fitted(estimator)
        except _SklearnNotFittedError:
            msg = f"{type(estimator).__name__} is not fitted; fit it before serving it."
            raise NotFittedError(msg) from None
    if getattr(estimator, "classes_", None) is None:
        msg = f"{type(estimator).__name__} has no classes_: is it a fitted classifier?"
        raise UnsupportedEstimatorError(msg)
    return snapshot(estimator)


def fit(
    estimator: Any,
    texts: list[str],
    labels: list[Hashable],
    step_done: Callable[[int], object] | None = None,
) -> Any:
    """Fit ``estimator`` (a fresh clone) and return it.

    With ``step_done``, a scikit-learn ``Pipeline`` (not a subclass, whose ``fit`` may
    differ) without ``memory`` is fitted a step at a time as its own ``fit`` does: its
    steps validated, each transformer's ``fit_transform`` (or ``fit`` then
    ``transform``) feeding the next, then the last step's ``fit``. ``step_done(n)`` is
    called as each of the first steps ends, ``n`` the steps fitted so far (the last
    step's end is the fit's); it may raise to stop the fit there.
    """
    if step_done is None or type(estimator) is not Pipeline or estimator.memory is not None:
        estimator.fit(texts, labels)
        return estimator
    estimator._validate_steps()
    features: Any = texts
    for done, (_, step) in enumerate(estimator.steps[:-1], start=1):
        if step is not None and step != "passthrough":
            if hasattr(step, "fit_transform"):
                features = step.fit_transform(features, labels)
            else:
                features = step.fit(features, labels).transform(features)
        step_done(done)
    final = estimator.steps[-1][1]
    if final is not None and final != "passthrough":
        final.fit(features, labels)
    return estimator


def fit_steps(estimator: Any) -> int:
    """How many steps :func:`fit` reports for ``estimator``: a pipeline's, else 1."""
    return len(estimator.steps) if isinstance(estimator, Pipeline) else 1


def partial_fit(
    serving: Any, fresh: Any, texts: list[str], labels: list[Hashable], classes: Any
) -> Any:
    """Copy the serving estimator (or take a fresh one), update the copy, return it.

    ``serving`` may be a :class:`ModelHandle` (in a worker process).
    """
    estimator = fresh if serving is None else copy.deepcopy(resolve(serving))
    update(estimator, texts, labels, classes)
    return estimator


def learning_parts(estimator: Any) -> tuple[Callable[[list[str]], Any], Any]:
    """What learns incrementally in ``estimator``, and the transform that feeds it: a
    pipeline's last step and the steps before it (which must be fitted or stateless),
    or the estimator itself and no transform."""
    if not isinstance(estimator, Pipeline):
        return (lambda texts: texts), estimator
    head = estimator[:-1]
    for name, step in head.steps:
        try:
            check_is_fitted(step)
        except _SklearnNotFittedError:
            msg = (
                f"partial_fit needs the pipeline's transformers to be stateless (such as "
                f"HashingVectorizer) or fitted by an earlier fit; step {name!r} is not."
            )
            raise UnsupportedEstimatorError(msg) from None
    return head.transform, estimator[-1]


def update(estimator: Any, texts: list[str], labels: list[Hashable], classes: Any) -> None:
    """``partial_fit`` ``estimator`` in place (a pipeline: its last step)."""
    transform, final = learning_parts(estimator)
    final.partial_fit(transform(texts), labels, classes=classes)


def learn_step(
    learner: Any,
    texts: list[str],
    labels: list[Hashable],
    classes: list[Hashable],
    trained: bool,
    publish: bool,
) -> tuple[list[bool], Any]:
    """Test, then train: predict ``texts`` with ``learner`` (if ``trained``), then update
    it in place with them, the texts transformed once for both. Return which
    predictions were right, and a copy of the updated learner to serve if ``publish``
    (else None). Runs in this process: the learner is the caller's own object."""
    transform, final = learning_parts(learner)
    X = transform(texts)
    if trained:
        predicted = np.asarray(final.predict(X)).tolist()
        hits = [guess == truth for guess, truth in zip(predicted, labels, strict=True)]
    else:
        hits = [False] * len(texts)  # nothing learned yet: no prediction is right
    final.partial_fit(X, labels, classes=classes)
    return hits, snapshot(learner) if publish else None


def snapshot(estimator: Any) -> tuple[Any, str]:
    """A deep copy of ``estimator`` to serve, and its fingerprint."""
    served = copy.deepcopy(estimator)
    return served, fingerprint(served)


def identified(estimator: Any) -> tuple[Any, str]:
    """``estimator`` and its fingerprint (see :func:`fingerprint`)."""
    return estimator, fingerprint(estimator)


def fit_packed(estimator: Any, texts: list[str], labels: list[Hashable]) -> Any:
    """Fit in a worker process and return the model packed: its vocabularies as
    arrays, which unpickle in a few milliseconds, where a dict of 130,000 terms held
    the parent's GIL (and event loop) for 44 ms."""
    return pack(fit(estimator, texts, labels))


def partial_fit_packed(
    serving: Any, fresh: Any, texts: list[str], labels: list[Hashable], classes: Any
) -> Any:
    """:func:`partial_fit` in a worker process, the result packed as by :func:`fit_packed`."""
    return pack(partial_fit(serving, fresh, texts, labels, classes))
