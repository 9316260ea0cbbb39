"""Tokenising for the default pipeline, in pieces short enough to share the GIL (pure).

scikit-learn's default tokeniser is one ``re.findall`` over the whole text: a single
C call that holds the GIL, so a 50 MB text froze the event loop for 2.5 s while a
worker thread tokenised it. :func:`tokenize` finds the very same tokens, piece by
piece, so the interpreter can switch threads between pieces.
"""

from __future__ import annotations

import re

__all__ = ["PIECE", "TOKEN_PATTERN", "tokenize"]

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")
"""scikit-learn's default ``token_pattern``: two or more word characters."""

PIECE = 1 << 16
"""Characters tokenised per ``findall`` call (about 3 ms of work)."""

_NON_WORD = re.compile(r"\W")


def tokenize(text: str) -> list[str]:
    """Return the tokens scikit-learn's default ``token_pattern`` finds in ``text``.

    A text longer than :data:`PIECE` is cut just after a non-word character, where no
    token can continue, so the pieces' tokens are exactly the whole text's.
    """
    if len(text) <= PIECE:
        return TOKEN_PATTERN.findall(text)
    tokens: list[str] = []
    start, end = 0, len(text)
    while start < end:
        stop = start + PIECE
        if stop < end:
            cut = _NON_WORD.search(text, stop)
            stop = end if cut is None else cut.end()
        else:
            stop = end
        tokens += TOKEN_PATTERN.findall(text, start, stop)
        start = stop
    return tokens
