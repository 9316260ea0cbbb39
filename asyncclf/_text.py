"""Tokenising for the default pipeline: every script, in GIL-sharing pieces (pure).

Scripts written with spaces between words (Latin, Cyrillic, Greek, Arabic, Hangul...)
are cut into scikit-learn's default word tokens: two or more word characters. Scripts
written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese...) have no
words to find that way: a whole clause would become one "word" that never repeats.
There, each run of such characters (with the CJK punctuation inside it) gives its
character 1-, 2- and 3-grams instead. A text with no such characters gets exactly
scikit-learn's default tokens, so English is classified as before.

scikit-learn's tokeniser is one ``re.findall`` over the whole text: a single C call
that holds the GIL, so a 50 MB text froze the event loop for 2.5 s while a worker
thread tokenised it. :func:`tokenize` works piece by piece, so the interpreter can
switch threads between pieces.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["NGRAMS", "PIECE", "TOKEN_PATTERN", "UNSPACED", "sublinear_tf", "tokenize"]

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")
"""scikit-learn's default ``token_pattern``: two or more word characters."""

_UNSPACED_CHARACTERS = (
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u1000-\u109f"  # Myanmar (Burmese)
    "\u1780-\u17ff"  # Khmer
    "\u19e0-\u19ff"  # Khmer symbols
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3000-\u303f"  # CJK symbols and punctuation
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u312f"  # Bopomofo
    "\u3190-\u31ff"  # Kanbun, Bopomofo extended, CJK strokes, Katakana extensions
    "\u3400-\u4dbf"  # CJK unified ideographs extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff00-\uffef"  # halfwidth and fullwidth forms (CJK punctuation, Latin, kana)
    "\U00020000-\U0003134f"  # CJK unified ideographs extensions B to G
)

UNSPACED = re.compile(f"[{_UNSPACED_CHARACTERS}]+")
"""A run of characters of scripts written without spaces between words."""

NGRAMS = 3
"""Longest character n-gram taken from an unspaced run."""

PIECE = 1 << 16
"""Characters tokenised at a time (a few milliseconds of work)."""

_CUT = re.compile(f"[^\\w{_UNSPACED_CHARACTERS}]")
"""A character no word token and no unspaced run can contain: pieces end after one."""


def _piece(text: str, overlap: int = 0) -> list[str]:
    """Tokens of ``text``: words outside unspaced runs, character n-grams inside.

    The first ``overlap`` characters repeat the end of the previous piece (the middle
    of a run was cut there): only the n-grams that reach past them are new.
    """
    runs = UNSPACED.findall(text)
    if not runs:
        return TOKEN_PATTERN.findall(text)
    tokens: list[str] = TOKEN_PATTERN.findall(UNSPACED.sub(" ", text))
    for number, run in enumerate(runs):
        size = len(run)
        skip = overlap if number == 0 else 0
        for n in range(1, min(NGRAMS, size) + 1):
            first = max(0, skip - n + 1)
            tokens += [run[i : i + n] for i in range(first, size - n + 1)]
    return tokens


def tokenize(text: str) -> list[str]:
    """Return the tokens of ``text`` for the default pipeline's TF-IDF.

    For a text with no unspaced characters these are exactly the tokens of
    scikit-learn's default ``token_pattern``. A text longer than :data:`PIECE` is cut
    just after a character that neither a word nor an unspaced run can contain, or,
    inside an unspaced run longer than a piece, anywhere, the next piece then
    starting ``NGRAMS - 1`` characters back: the pieces' tokens are exactly the whole
    text's.
    """
    if len(text) <= PIECE:
        return _piece(text)
    tokens: list[str] = []
    start, end, overlap = 0, len(text), 0
    while start < end:
        stop = start + PIECE
        carry = 0
        if stop < end:
            cut = _CUT.search(text, stop, stop + PIECE)
            if cut is not None:
                stop = cut.end()
            elif stop - start >= NGRAMS - 1 and UNSPACED.fullmatch(
                text, stop - NGRAMS + 1, stop + 1
            ):
                carry = NGRAMS - 1  # in a long run: cut here, overlap the n-grams
            else:
                cut = _CUT.search(text, stop)
                stop = end if cut is None else cut.end()
        else:
            stop = end
        tokens += _piece(text[start - overlap : stop], overlap)
        start, overlap = stop, carry
    return tokens


def sublinear_tf(counts: Any) -> Any:
    """``1 + log(count)`` for each count, ``log1p`` in fact (0 stays 0): a sparse matrix
    of term counts, damped, as ``TfidfVectorizer(sublinear_tf=True)`` damps them. Stateless,
    for the online pipeline's ``FunctionTransformer``."""
    return counts.log1p()
