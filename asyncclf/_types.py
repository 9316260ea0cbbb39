"""Result dataclasses and type aliases of the public API (no logic here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeAlias

# typing_extensions' Protocol checks isinstance() statically (as Python 3.12 does):
# without evaluating properties such as ``limiter``, which needs an event loop.
from typing_extensions import TypeVar

if TYPE_CHECKING:
    pass

__all__ = [
    "BatchStatistics",
    "FailedPrediction",
    "Label",
    "LearnReport",
    "OnError",
    "Overload",
    "Prediction",
    "Progress",
    "Ranked",
]

Label = TypeVar("Label", default=Any)
"""The type of a classifier's labels: ``AsyncClassifier[str]`` answers with ``str``.

Unparametrised, it is ``Any``. At run time class labels are ``str``, ``int`` or
``bool`` (numpy's too), all of one kind; a float, ``None`` or NaN is no class label
and is refused with :class:`InvalidInputError`, as is ``y`` mixing kinds.
"""

OnError: TypeAlias = Literal["raise", "yield"]
"""What a stream does with a text that fails: end with its exception, or yield it."""

Overload: TypeAlias = Literal["wait", "raise"]
"""What a call does when the batching queue is full: wait for room, or raise."""

Progress: TypeAlias = Callable[[int, int | None], object] | bool | None
"""``None``/``False``: silent; ``True``: a ``tqdm.auto`` bar; a callable: called as
``progress(done, total)`` with ``total`` ``None`` when unknown."""


@dataclass(frozen=True, slots=True)
class Ranked:
    """One text in a ranking: its position in the input, the text and its score."""

    index: int
    """Position of the text in the input sequence (or stream), counting from 0."""
    text: str
    score: float
    """The estimator's score for the ranked label: a probability, or a decision value."""
    version: int = 0
    """The model version that scored the text (see ``AsyncClassifier.version``)."""
    model_id: str = ""
    """The identity of the model that scored the text (see ``AsyncClassifier.model_id``)."""


@dataclass(frozen=True, slots=True)
class Prediction(Generic[Label]):
    """The answer for one text: its label, the label's score and the model that answered."""

    index: int
    """Position of the text in the input (0 for ``classify``)."""
    text: str
    label: Label
    score: float
    """Probability of ``label``, or its decision value when the estimator has no
    ``predict_proba``. Never NaN: a text the estimator scores NaN fails instead."""
    version: int
    """The model version that answered (see ``AsyncClassifier.version``)."""
    model_id: str = ""
    """The identity of the model that answered (see ``AsyncClassifier.model_id``): the
    same in every process serving that model."""
    ok: ClassVar[Literal[True]] = True
    """Always true: the text was classified (see :class:`FailedPrediction`)."""


@dataclass(frozen=True, slots=True)
class FailedPrediction:
    """A text a stream with ``on_error="yield"`` could not classify, and why."""

    index: int
    """Position of the text in the stream."""
    text: str
    """The text, or ``repr()`` of the item when the item was not a ``str``."""
    error: Exception
    """The exception: ``InvalidInputError`` for a bad item, else the estimator's."""
    version: int
    """The model version serving when the text failed."""
    model_id: str = ""
    """The identity of that model (see ``AsyncClassifier.model_id``)."""
    ok: ClassVar[Literal[False]] = False
    """Always false: the text was not classified."""


@dataclass(frozen=True, slots=True)
class LearnReport:
    """Where :meth:`AsyncClassifier.learn` stands after one mini-batch.

    Each example is predicted by the learner before it learns from it (progressive
    validation, "test then train"): the accuracies are those of predictions on
    examples the learner had not seen yet. Before the learner has learned anything,
    its predictions count as wrong.
    """

    seen: int
    """Examples learned from so far in this call (skipped ones not counted)."""
    accuracy: float
    """Progressive accuracy over all ``seen`` examples."""
    window_accuracy: float
    """Progressive accuracy over the last ``window`` examples (fewer at the start)."""
    version: int
    """The serving model's version once this mini-batch was done."""
    examples_per_second: float
    """``seen`` over the seconds since learning started."""
    batch_size: int
    """Examples in this mini-batch."""
    published: bool
    """Whether this mini-batch ended with the learner's copy swapped in to serve."""
    saved: bool
    """Whether the served model was also saved to the checkpoint file."""
    skipped: int
    """Bad examples skipped so far (``on_error="yield"``)."""
    errors: tuple[tuple[int, Exception], ...] = ()
    """The examples skipped since the last report: (index in the source, exception)."""
    model_id: str = ""
    """The serving model's identity once this mini-batch was done (see
    ``AsyncClassifier.model_id``)."""


@dataclass(frozen=True)
class BatchStatistics:
    """A snapshot of the batcher's counters, from ``AsyncClassifier.statistics()``."""

    batches: int
    """Estimator calls made for predictions (retries that find failing texts included)."""
    items: int
    """Texts answered through the batcher (cancelled callers' texts included)."""
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
    wait_p50: float = 0.0
    """Median seconds from a request's arrival to the start of its batch, over the
    last ``RECENT`` requests (1,024): like every percentile here, 0.0 before any."""
    wait_p99: float = 0.0
    run_p50: float = 0.0
    """Median seconds a batch spent in its worker, over the last 1,024 batches."""
    run_p99: float = 0.0
    latency_p50: float = 0.0
    """Median seconds from a request's arrival to its caller having the result (queue,
    run, delivery), over the last 1,024 requests."""
    latency_p99: float = 0.0
