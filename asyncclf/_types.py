"""Result and statistics dataclasses returned by the public API (no logic here)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["BatchStatistics", "Prediction", "Ranked"]

Label = Hashable
"""A class label as the estimator reports it (``str``, ``int``, numpy scalar...)."""


@dataclass(frozen=True)
class Ranked:
    """One text in a ranking: its position in the input, the text and its score."""

    index: int
    """Position of the text in the input sequence (or stream), counting from 0."""
    text: str
    score: float
    """The estimator's score for the ranked label: a probability, or a decision value."""


@dataclass(frozen=True)
class Prediction:
    """The answer for one text: its label, the label's score and the model that answered.

    When a stream runs with ``on_error="yield"`` and the estimator failed on this
    text, ``error`` holds the exception, ``label`` is ``None`` and ``score`` is NaN.
    """

    index: int
    text: str
    label: Label | None
    score: float
    """Probability of ``label``, or its decision value when the estimator has no
    ``predict_proba``."""
    version: int
    """The model version that answered (see ``AsyncClassifier.version``)."""
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the text was classified (``error`` is ``None``)."""
        return self.error is None


@dataclass(frozen=True)
class BatchStatistics:
    """A snapshot of the batcher's counters, from ``AsyncClassifier.statistics()``."""

    batches: int
    """Estimator calls made for predictions (bisection retries included)."""
    items: int
    """Texts answered through the batcher."""
    failed_items: int
    """Texts whose estimator call raised (each failed only its own caller)."""
    queue_depth: int
    """Texts waiting for a batch right now."""
    max_batch_size_seen: int
    mean_batch_size: float
    mean_wait: float
    """Mean seconds from a text's arrival in the queue to the start of its batch."""
    max_wait: float
    mean_run: float
    """Mean seconds a batch spent in its worker thread."""
    max_run: float
