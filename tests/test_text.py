"""The default pipeline's tokeniser: sklearn's tokens, found in GIL-sharing pieces."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from asyncclf import AsyncClassifier, _text

SKLEARN_DEFAULT = TfidfVectorizer().build_tokenizer()


@given(st.text(alphabet="ab é1_,.-\n\t", max_size=200), st.integers(min_value=1, max_value=20))
def test_pieces_give_exactly_sklearns_tokens(text: str, piece: int) -> None:
    """However the text is cut, the tokens are those of sklearn's default tokeniser."""
    original = _text.PIECE
    _text.PIECE = piece
    try:
        assert _text.tokenize(text) == SKLEARN_DEFAULT(text)
    finally:
        _text.PIECE = original


class Spy:
    """Stands in for the token pattern and records how much text each call scans."""

    def __init__(self) -> None:
        self.pattern = _text.TOKEN_PATTERN
        self.scanned: list[int] = []

    def findall(self, text: str, start: int = 0, stop: int | None = None) -> list[Any]:
        stop = len(text) if stop is None else stop
        self.scanned.append(stop - start)
        return self.pattern.findall(text, start, stop)


def test_a_huge_text_is_scanned_in_bounded_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4 MB text is tokenised by calls of about PIECE characters each, not one call
    that would hold the GIL for the whole text (2.5 s for 50 MB)."""
    spy = Spy()
    monkeypatch.setattr(_text, "TOKEN_PATTERN", spy)
    text = "free prize lunch noon " * 200_000
    tokens = _text.tokenize(text)
    assert tokens == SKLEARN_DEFAULT(text)
    assert len(spy.scanned) >= len(text) // (_text.PIECE + 32)
    assert max(spy.scanned) <= _text.PIECE + len("lunch ")


@pytest.mark.anyio
async def test_the_default_model_answers_a_huge_text_as_sklearns_default_does() -> None:
    """The default classifier scores a 2 MB text exactly as a plain TF-IDF pipeline."""
    texts = ["free prize now", "lunch at noon", "win cash prize", "see you at lunch"] * 3
    labels = ["spam", "ham", "spam", "ham"] * 3
    clf = await AsyncClassifier().fit(texts, labels)
    plain = AsyncClassifier().set_params(estimator__tfidf__tokenizer=None)
    plain.set_params(estimator__tfidf__token_pattern=r"(?u)\b\w\w+\b")
    await plain.fit(texts, labels)
    big = "prize lunch noon cash " * 100_000
    with anyio.fail_after(60):
        ours, theirs = await clf.predict_proba([big]), await plain.predict_proba([big])
    assert ours.tolist() == theirs.tolist()
