"""The default pipeline's tokeniser: every script, in GIL-sharing pieces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from asyncclf import AsyncClassifier, _text

from .fakes import DEADLINE

FIXTURE = Path(__file__).parent / "data" / "mixed_scripts.jsonl"

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
    with anyio.fail_after(DEADLINE):
        ours, theirs = await clf.predict_proba([big]), await plain.predict_proba([big])
    assert ours.tolist() == theirs.tolist()


UNSPACED_ALPHABET = "ab 1,.-\n中文字ひらカナ한국ไทย\uff0c\u3002\uff01"


@given(st.text(alphabet=UNSPACED_ALPHABET, max_size=200), st.integers(min_value=1, max_value=20))
def test_pieces_give_the_whole_texts_tokens_in_every_script(text: str, piece: int) -> None:
    """Cutting a text of mixed scripts into pieces never changes its bag of tokens."""
    whole = _text.tokenize(text)
    original = _text.PIECE
    _text.PIECE = piece
    try:
        assert sorted(_text.tokenize(text)) == sorted(whole)
    finally:
        _text.PIECE = original


def test_unspaced_runs_give_character_ngrams_and_words_stay_words() -> None:
    """Chinese, Japanese and Thai runs give their 1- to 3-grams; Latin and Hangul words
    around them stay sklearn's word tokens."""
    assert sorted(_text.tokenize("我爱你")) == sorted(["我", "爱", "你", "我爱", "爱你", "我爱你"])
    assert sorted(_text.tokenize("ok 日本 한국어 ok")) == sorted(
        ["ok", "한국어", "ok", "日", "本", "日本"]
    )
    assert set(_text.tokenize("ไทย")) == {"ไ", "ท", "ย", "ไท", "ทย", "ไทย"}
    assert _text.tokenize("买了iPhone手机")[:1] == ["iPhone"]


def load_fixture() -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


@pytest.mark.anyio
async def test_the_default_learns_a_corpus_mixing_scripts(tmp_path: Path) -> None:
    """One default model learns English, Chinese, Japanese, Thai, Korean and Russian
    texts together (no empty vocabulary), and saves and loads with no trusted types."""
    texts, labels = load_fixture()
    clf = await AsyncClassifier().fit(texts, labels)
    probes = {
        "米饭很好吃": "food",
        "明天下雨": "weather",
        "ご飯が美味しい": "food",
        "雨が強い": "weather",
        "ข้าวอร่อย": "food",
        "ฝนตกหนัก": "weather",
        "soup and rice": "food",
        "rain and wind": "weather",
    }
    assert list(await clf.predict(list(probes))) == list(probes.values())
    path = tmp_path / "mixed.skops"
    digest = await clf.save(path)
    loaded = await AsyncClassifier.load(path, sha256=digest)
    assert (await loaded.predict_proba(list(probes))).tolist() == (
        await clf.predict_proba(list(probes))
    ).tolist()
