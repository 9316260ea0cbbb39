"""Code that runs in a worker: top-level, synchronous, picklable, no anyio.

Whatever executes the estimator (a thread today; a process or a cluster later) calls
these functions with small arguments: the estimator, the kind of computation, the
caller's scikit-learn settings, the texts.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any

import numpy as np
import sklearn
from numpy.typing import NDArray
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._errors import AsyncClfError, UnsupportedEstimatorError

__all__ = ["KINDS", "compute", "fit", "partial_fit"]


def scores(estimator: Any, texts: list[str]) -> NDArray[np.float64]:
    """One column per class: probabilities if the estimator has them, else decisions."""
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(texts), dtype=np.float64)
    decision = np.asarray(estimator.decision_function(texts), dtype=np.float64)
    return np.column_stack([-decision, decision]) if decision.ndim == 1 else decision


KINDS = ("predict", "predict_proba", "decision_function", "scores")
"""The computations a prediction batch can run."""


def compute(estimator: Any, kind: str, settings: dict[str, Any], texts: list[str]) -> Any:
    """Run the computation ``kind`` on ``texts`` under the caller's sklearn ``settings``.

    Raises:
        AsyncClfError: scores (``predict_proba``, ``decision_function``) that do not
            have one column per class, so no column is read as another class's.
    """
    with sklearn.config_context(**settings):
        rows = scores(estimator, texts) if kind == "scores" else getattr(estimator, kind)(texts)
    if kind != "predict":
        shape = np.shape(rows)
        classes = len(estimator.classes_)
        binary_decision = kind == "decision_function" and classes == 2 and len(shape) == 1
        if not binary_decision and shape[1:] != (classes,):
            method = "predict_proba or decision_function" if kind == "scores" else kind
            msg = (
                f"The estimator's {method} returned rows of shape {shape[1:]} for "
                f"{classes} classes; expected one column per class."
            )
            raise AsyncClfError(msg)
    return rows


def fit(estimator: Any, texts: list[str], labels: list[Hashable]) -> Any:
    """Fit ``estimator`` (a fresh clone) and return it."""
    estimator.fit(texts, labels)
    return estimator


def partial_fit(
    serving: Any, fresh: Any, texts: list[str], labels: list[Hashable], classes: Any
) -> Any:
    """Copy the serving estimator (or take a fresh one), update the copy, return it."""
    estimator = fresh if serving is None else copy.deepcopy(serving)
    if isinstance(estimator, Pipeline):
        head, final = estimator[:-1], estimator[-1]
        for name, step in head.steps:
            try:
                check_is_fitted(step)
            except _SklearnNotFittedError:
                msg = (
                    f"partial_fit needs the pipeline's transformers to be stateless (such as "
                    f"HashingVectorizer) or fitted by an earlier fit; step {name!r} is not."
                )
                raise UnsupportedEstimatorError(msg) from None
        final.partial_fit(head.transform(texts), labels, classes=classes)
    else:
        estimator.partial_fit(texts, labels, classes=classes)
    return estimator
