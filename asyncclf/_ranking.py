"""Turn score arrays into ranked lists, groups and streaming top-k (pure; no anyio)."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from ._types import Ranked

__all__ = ["TopK", "group", "rank", "ranking_order"]

L = TypeVar("L", bound=Hashable)


def _sort_keys(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    # NaN ranks below everything, like -inf; ties keep input order.
    return np.where(np.isnan(scores), -np.inf, scores)


def ranking_order(scores: NDArray[np.float64], k: int | None = None) -> NDArray[np.intp]:
    """Return the indices of ``scores`` from highest to lowest, ties in input order."""
    order = np.argsort(-_sort_keys(np.asarray(scores, dtype=np.float64)), kind="stable")
    return order if k is None else order[:k]


def rank(
    texts: Sequence[str],
    scores: NDArray[np.float64],
    k: int | None = None,
    version: int = 0,
    model_id: str = "",
) -> list[Ranked]:
    """Rank ``texts`` by ``scores`` (of model ``version``, ``model_id``), highest first,
    keeping at most ``k``."""
    return [
        Ranked(int(i), texts[i], float(scores[i]), version, model_id)
        for i in ranking_order(scores, k)
    ]


def group(
    texts: Sequence[str],
    scores: NDArray[np.float64],
    classes: Sequence[L],
    k: int | None = None,
    version: int = 0,
    model_id: str = "",
) -> dict[L, list[Ranked]]:
    """Put each text under its best-scoring class, each list ranked by that score.

    ``scores`` has one row per text and one column per class. Every class gets a key,
    in ``classes`` order, even when no text landed there.
    """
    groups: dict[L, list[Ranked]] = {label: [] for label in classes}
    if len(texts) == 0:
        return groups
    best = scores.argmax(axis=1)
    top = scores[np.arange(len(texts)), best]
    for column, label in enumerate(classes):
        members = np.flatnonzero(best == column)
        groups[label] = [
            Ranked(int(members[j]), texts[members[j]], float(top[members[j]]), version, model_id)
            for j in ranking_order(top[members], k)
        ]
    return groups


class TopK:
    """Keep the ``k`` best-scoring texts seen so far, in O(k) memory.

    The result is what :func:`rank` would return for every text pushed, in push order.
    """

    def __init__(self, k: int) -> None:
        if k < 0:
            msg = f"k must be >= 0, not {k}."
            raise ValueError(msg)
        self.k = k
        self._heap: list[tuple[float, int, str, float, int, str]] = []

    def push(
        self, index: int, text: str, score: float, version: int = 0, model_id: str = ""
    ) -> None:
        """Offer one text (scored by model ``version``, ``model_id``); it is kept only if
        it is among the ``k`` best so far."""
        if self.k == 0:
            return
        key = -np.inf if np.isnan(score) else score
        entry = (key, -index, text, score, version, model_id)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def result(self) -> list[Ranked]:
        """Return the kept texts, highest score first, ties in push order."""
        ordered = sorted(self._heap, key=lambda e: (-e[0], -e[1]))
        return [
            Ranked(-neg, text, score, version, model_id)
            for _, neg, text, score, version, model_id in ordered
        ]
