"""The served model and the default estimator: what a prediction reads (no anyio)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import sklearn
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer
from sklearn.svm import LinearSVC

from ._errors import InvalidInputError, UnsupportedEstimatorError
from ._text import sublinear_tf, tokenize
from ._types import Prediction
from ._validation import label_kind

__all__ = [
    "Config",
    "Model",
    "batch_key",
    "default_estimator",
    "final_step",
    "labels_of",
    "online_estimator",
    "predictions",
    "require_partial_fit",
]


def sklearn_version() -> tuple[int, int]:
    major, minor = sklearn.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def default_estimator() -> Pipeline:
    """Return a fresh, unfitted copy of the default text pipeline.

    TF-IDF with sublinear term frequencies (scikit-learn's default tokens, found in
    pieces by :func:`asyncclf._text.tokenize` so that a huge text never holds the GIL
    for long) feeds a linear SVM trained on all the data,
    whose decision values become probabilities by temperature scaling, the temperature
    fitted on out-of-fold decisions of two SVMs trained on halves of the data:
    ``CalibratedClassifierCV(LinearSVC(tol=1e-3), cv=2, method="temperature",
    ensemble=False)``. Temperature scaling keeps the SVM's ranking of the classes, so
    ``predict`` is the argmax of ``predict_proba`` and accuracy is the SVM's (the looser
    ``tol`` made no difference on 20 Newsgroups or SMS spam, and fits faster). See
    docs/performance.md for accuracy and fit time.

    scikit-learn added temperature scaling in 1.8, which needs Python 3.11; with an
    older scikit-learn (on Python 3.10) the calibration is ``method="sigmoid"``, whose
    per-class calibration can move a few predictions away from the SVM's.
    """
    method = "temperature" if sklearn_version() >= (1, 8) else "sigmoid"
    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(sublinear_tf=True, tokenizer=tokenize, token_pattern=None)),
            (
                "clf",
                CalibratedClassifierCV(
                    LinearSVC(tol=1e-3, random_state=0), cv=2, method=method, ensemble=False
                ),
            ),
        ]
    )


def online_estimator() -> Pipeline:
    """Return a fresh pipeline that learns incrementally, for :meth:`AsyncClassifier.learn`
    and ``partial_fit``.

    Hashed word counts (2**17 features, with the tokens of the default pipeline, so
    texts without spaces are split too), damped with ``log1p`` and scaled to unit
    length, feed a multinomial naive Bayes (``alpha=0.001``). Every step but the last
    is stateless, so it is ready before any data, and the last learns with
    ``partial_fit``. Chosen by progressive validation on SMS spam and 20 Newsgroups
    against 16 River text pipelines and about 160 scikit-learn ones: see
    docs/online.md.
    """
    return Pipeline(
        [
            (
                "hashing",
                HashingVectorizer(
                    tokenizer=tokenize,
                    token_pattern=None,
                    alternate_sign=False,
                    norm=None,
                    n_features=2**17,
                ),
            ),
            ("sublinear", FunctionTransformer(sublinear_tf, accept_sparse=True)),
            ("l2", Normalizer()),
            ("nb", MultinomialNB(alpha=0.001)),
        ]
    )


@dataclass(frozen=True, eq=False)
class Model:
    """A fitted estimator as served: swapped whole, never mutated."""

    estimator: Any
    labels: list[Hashable]
    version: int
    model_id: str
    """Its fingerprint (see ``fingerprint.fingerprint``): the same in every process."""
    abilities: frozenset[str]
    """The computations it supports: predict, predict_proba, decision_function, scores."""
    kind: str | None
    """The kind of its labels (see ``label_kind``)."""

    @classmethod
    def of(cls, estimator: Any, version: int, model_id: str) -> Model:
        abilities = {
            name
            for name in ("predict", "predict_proba", "decision_function")
            if hasattr(estimator, name)
        }
        if abilities & {"predict_proba", "decision_function"}:
            abilities.add("scores")
        labels = labels_of(estimator)
        kind = label_kind(labels[0]) if labels else None
        return cls(estimator, labels, version, model_id, frozenset(abilities), kind)

    def column(self, label: Hashable) -> int:
        """The column of ``label``: of the same kind, so ``True`` never finds ``1``."""
        if label_kind(label) == self.kind:
            for column, known in enumerate(self.labels):
                if known == label:
                    return column
        msg = f"Unknown label {label!r}; the classifier's classes are {self.labels!r}."
        raise InvalidInputError(msg)

    def check_kind(self, labels: list[Hashable], what: str) -> None:
        """Refuse ``labels`` of another kind than this model's classes."""
        if labels and self.kind is not None and label_kind(labels[0]) != self.kind:
            msg = (
                f"{what} holds {label_kind(labels[0])} labels ({labels[0]!r}) but the "
                f"classifier's classes are {self.kind} ({self.labels!r})."
            )
            raise InvalidInputError(msg)


def labels_of(estimator: Any) -> list[Hashable]:
    """The fitted estimator's classes as Python values, in column order."""
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        msg = f"{type(estimator).__name__} has no classes_ after fitting; is it a classifier?"
        raise UnsupportedEstimatorError(msg)
    return list(np.asarray(classes).tolist())


def final_step(estimator: Any) -> Any:
    """The last step of a pipeline, or the estimator itself."""
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def require_partial_fit(estimator: Any, origin: str) -> None:
    """Refuse an estimator (``origin`` says whose) that cannot learn incrementally."""
    final = final_step(estimator)
    if not hasattr(final, "partial_fit"):
        msg = (
            f"{type(final).__name__} ({origin}) has no partial_fit, so it cannot learn "
            f"incrementally; use asyncclf.online_estimator(), or another estimator that "
            f"can (SGDClassifier, MultinomialNB)."
        )
        raise UnsupportedEstimatorError(msg)


class Config:
    """The caller's scikit-learn configuration, interned, part of every batch key.

    scikit-learn's configuration is thread-local, and an event loop runs every task on
    one thread: the config is read when a call starts and that exact config is applied
    in the worker, so calls share a batch only when their configs are equal. Each
    distinct config is made once, so keys hash and compare in O(1).
    """

    __slots__ = ("settings",)
    _interned: ClassVar[dict[tuple[Any, ...], Config]] = {}
    _last: ClassVar[Config | None] = None
    """The config returned last: nearly always the one asked for next."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    @classmethod
    def current(cls) -> Config:
        settings = sklearn.get_config()
        last = cls._last
        if last is not None and last.settings == settings:
            return last  # no hashing of the dozen values: one dict comparison
        # get_config() copies one dict, so the order of its values is stable.
        values = tuple(settings.values())
        config = cls._interned.get(values)
        if config is None:
            config = cls._interned[values] = cls(settings)
        cls._last = config
        return config


def batch_key(kind: str) -> tuple[str, Config]:
    return kind, Config.current()


def predictions(
    start: int, texts: list[str], rows: NDArray[np.float64], model: Model
) -> list[Prediction[Any]]:
    """One Prediction per text: the best-scoring label and its score, vectorised."""
    best = rows.argmax(axis=1)
    scores = rows[np.arange(len(texts)), best].tolist()
    labels = model.labels
    version, model_id = model.version, model.model_id
    return [
        Prediction(start + i, text, labels[j], scores[i], version, model_id)
        for i, (text, j) in enumerate(zip(texts, best.tolist(), strict=True))
    ]
