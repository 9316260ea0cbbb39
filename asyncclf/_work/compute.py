"""Predictions in a worker: one computation on a list of texts, and batches whose
failing texts are found by bisection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import sklearn
from numpy.typing import NDArray

from .._errors import AsyncClfError
from .handles import resolve
from .transport import own_copy

Compute = Callable[[list[str]], Any]
"""A vectorised function of a list of texts returning one row per text."""

# A run of consecutive texts [start, stop) of one batch and its rows, or the exception
# the estimator raised for that (single) text.
Segment = tuple[int, int, Any]
# A request's texts [start, stop) in its batch, and whether each text needs its own
# outcome (a stream's texts) rather than one for the whole request.
Span = tuple[int, int, bool]


def scores(estimator: Any, texts: list[str]) -> NDArray[np.float64]:
    """One column per class: probabilities if the estimator has them, else decisions."""
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(texts), dtype=np.float64)
    decision = np.asarray(estimator.decision_function(texts), dtype=np.float64)
    return np.column_stack([-decision, decision]) if decision.ndim == 1 else decision


KINDS = ("predict", "predict_proba", "decision_function", "scores")
"""The computations a prediction batch can run."""


def compute(model: Any, kind: str, settings: dict[str, Any], texts: list[str]) -> Any:
    """Run the computation ``kind`` on ``texts`` under the caller's sklearn ``settings``.

    Raises:
        AsyncClfError: scores (``predict_proba``, ``decision_function``) that do not
            have one column per class, so no column is read as another class's.
    """
    estimator = resolve(model)
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


def _nan_rows(rows: Any) -> list[int]:
    """Positions of rows holding NaN or infinity in a float result (not a score)."""
    if not isinstance(rows, np.ndarray) or rows.dtype.kind not in "fc" or not len(rows):
        return []
    bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
    return np.flatnonzero(bad).tolist() if bad.any() else []


def run_batch(
    compute: Compute, texts: list[str], spans: list[Span], limit: int
) -> tuple[list[Segment], int]:
    """Compute rows for ``texts``; when the estimator raises, find whom it fails.

    ``spans`` are the batch's requests, in order: ``(start, stop, per_item)``. One
    estimator call answers the whole batch when it can, in chunks of at most ``limit``
    texts. When it raises, the requests are split in halves and each half is retried;
    when both halves fail, each of their requests is retried alone. A request that
    fails alone gets the exception, unless it is ``per_item`` (a stream's texts):
    then its texts are searched the same way. This finds a lone bad text in about
    ``2 log2(requests)`` calls, and a batch that fails everywhere costs at most one
    call per request (per text for ``per_item`` ones) and three passes over its
    texts, not the ``2n - 1`` calls of a full bisection. A row holding NaN fails its
    text alone.

    Returns the segments covering ``texts`` in order and the number of calls made.
    """
    segments: list[Segment] = []
    calls = 0

    def run(units: list[Span]) -> Exception | None:
        nonlocal calls
        start, stop = units[0][0], units[-1][1]
        parts = []
        try:
            for first in range(start, stop, limit):
                last = min(first + limit, stop)
                calls += 1
                chunk = texts if last - first == len(texts) else texts[first:last]
                rows = np.asarray(compute(chunk))
                if rows.ndim == 0:
                    msg = (
                        f"The estimator returned {rows.item()!r} instead of one row for "
                        f"each of {last - first} texts."
                    )
                    raise AsyncClfError(msg)
                if len(rows) != last - first:
                    msg = f"The estimator returned {len(rows)} rows for {last - first} texts."
                    raise AsyncClfError(msg)
                parts.append(rows)
        except Exception as exc:
            return exc
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        at = start
        for bad in _nan_rows(rows):
            if start + bad > at:
                segments.append((at, start + bad, rows[at - start : bad]))
            msg = "The estimator returned a NaN or infinite score for this text."
            segments.append((start + bad, start + bad + 1, AsyncClfError(msg)))
            at = start + bad + 1
        if at < stop:
            segments.append((at, stop, rows if at == start else rows[at - start :]))
        return None

    def blame(units: list[Span], error: Exception) -> None:
        """Find the failing texts among ``units``, which failed together with ``error``."""
        if len(units) == 1:
            start, stop, per_item = units[0]
            if per_item and stop - start > 1:
                blame([(i, i + 1, False) for i in range(start, stop)], error)
            else:
                # A copy per request: an estimator may raise one object many times.
                segments.append((start, stop, own_copy(error)))
            return
        middle = len(units) // 2
        halves = [(half, run(half)) for half in (units[:middle], units[middle:])]
        failed = [(half, exc) for half, exc in halves if exc is not None]
        if len(failed) == 1:
            blame(*failed[0])
            return
        # Both halves failed (or neither, when the failure needed them together): the
        # failures are dense, so stop halving and try each request on its own.
        for half, exc in failed:
            if len(half) == 1:
                blame(half, exc)
                continue
            for unit in half:
                alone = run([unit])
                if alone is not None:
                    blame([unit], alone)

    if texts:
        error = run(spans)
        if error is not None:
            blame(spans, error)
    segments.sort(key=lambda segment: segment[0])
    return segments, calls


def timed_batch(
    compute: Compute, texts: list[str], spans: list[Span], limit: int
) -> tuple[list[Segment], int, float]:
    """:func:`run_batch`, and the seconds it took (run in the worker)."""
    started = time.perf_counter()
    segments, calls = run_batch(compute, texts, spans, limit)
    return segments, calls, time.perf_counter() - started
