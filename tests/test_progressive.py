"""Progressive validation's bookkeeping, without an event loop."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncclf import InvalidInputError
from asyncclf._progressive import Classes, Score, example


@given(
    st.lists(st.lists(st.booleans(), max_size=7), max_size=12),
    st.integers(min_value=1, max_value=9),
)
def test_accuracies_are_those_of_every_hit_and_of_the_last_window(
    batches: list[list[bool]], window: int
) -> None:
    """After any batches of hits, accuracy is over all of them and window_accuracy over
    exactly the last ``window`` (fewer at the start), both NaN before any."""
    score = Score(window)
    every: list[bool] = []
    for hits in batches:
        score.add(hits)
        every.extend(hits)
    assert score.seen == len(every)
    if not every:
        assert math.isnan(score.accuracy)
        assert math.isnan(score.window_accuracy)
        return
    assert score.accuracy == pytest.approx(sum(every) / len(every))
    last = every[-window:]
    assert score.window_accuracy == pytest.approx(sum(last) / len(last))


def test_an_example_is_a_text_and_one_of_the_classes() -> None:
    """A pair of a str and a known label of the classes' kind passes; anything else
    fails naming its index."""
    classes = Classes(["ham", "spam"])
    assert example(("buy now", "spam"), 0, classes) == ("buy now", "spam")
    assert example(["hi", "ham"], 1, classes) == ("hi", "ham")
    for bad, why in [
        (("text",), "not a \\(text, label\\) pair"),
        (("text", "eggs"), "not one of the classes"),
        ((3, "ham"), "index 4"),
        (("text", 1), "not one of the classes"),
        (("text", None), "labels must be"),
    ]:
        with pytest.raises(InvalidInputError, match=why):
            example(bad, 4, classes)
    assert example(("x", True), 0, Classes([True, False])) == ("x", True)
    with pytest.raises(InvalidInputError, match="not one of the classes"):
        example(("x", 1), 0, Classes([True, False]))
