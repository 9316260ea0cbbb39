"""Pure ranking helpers: order, ties, groups and streaming top-k (no event loop)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncclf._ranking import TopK, group, rank

# Few distinct values, so ties are common.
scores_lists = st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, float("nan")]), max_size=40)


@given(scores_lists, st.none() | st.integers(min_value=0, max_value=50))
def test_rank_is_non_increasing_stable_and_complete(scores: list[float], k: int | None) -> None:
    """rank returns at most k texts, scores non-increasing, ties (and NaN) in input order."""
    texts = [f"t{i}" for i in range(len(scores))]
    ranked = rank(texts, np.asarray(scores), k)
    assert len(ranked) == (len(texts) if k is None else min(k, len(texts)))
    keys = [-np.inf if np.isnan(r.score) else r.score for r in ranked]
    assert keys == sorted(keys, reverse=True)
    for i in range(len(ranked) - 1):
        if keys[i] == keys[i + 1]:
            assert ranked[i].index < ranked[i + 1].index
    assert all(texts[r.index] == r.text for r in ranked)


@given(
    st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=3, max_size=3), max_size=30),
    st.none() | st.integers(min_value=0, max_value=5),
)
def test_group_covers_every_text_once(rows: list[list[float]], k: int | None) -> None:
    """Without k, group lists every text exactly once, under its argmax class, ranked."""
    texts = [f"t{i}" for i in range(len(rows))]
    scores = np.asarray(rows, dtype=np.float64).reshape(len(rows), 3)
    groups = group(texts, scores, ["a", "b", "c"], k)
    assert list(groups) == ["a", "b", "c"]
    listed = [r.index for members in groups.values() for r in members]
    if k is None:
        assert sorted(listed) == list(range(len(texts)))
    assert len(listed) == len(set(listed))
    for column, members in enumerate(groups.values()):
        assert all(int(scores[r.index].argmax()) == column for r in members)
        assert [r.score for r in members] == sorted((r.score for r in members), reverse=True)
        assert k is None or len(members) <= k


@given(scores_lists, st.integers(min_value=0, max_value=50))
def test_top_k_equals_rank_prefix(scores: list[float], k: int) -> None:
    """TopK over pushed texts gives exactly rank(...)[:k], holding at most k entries."""
    texts = [f"t{i}" for i in range(len(scores))]
    best = TopK(k)
    for i, score in enumerate(scores):
        best.push(i, texts[i], score)
        assert len(best._heap) <= k
    expected = rank(texts, np.asarray(scores), k)
    got = best.result()
    assert [r.index for r in got] == [r.index for r in expected]


def test_top_k_rejects_negative_k() -> None:
    """A negative k is a ValueError."""
    with pytest.raises(ValueError, match="k must be >= 0"):
        TopK(-1)
