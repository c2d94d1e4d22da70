"""The search tokeniser: text as the index sees it, the same for both databases.

A *token* is a run of letters and digits (Unicode): spaces, punctuation and underscores
separate tokens, so ``user_accounts``, ``user-accounts`` and ``user accounts`` are the same
two tokens, and a word the tokeniser splits is searched as a phrase of its parts
(``workers.search.query``). Tokens are folded: case folded and accents removed
(``Café`` is ``cafe``), since OCR and speech recognition drop accents as often as not.
``terms`` is what the databases index (tokens joined by spaces): PostgreSQL's ``simple``
configuration and SQLite's ``unicode61`` tokeniser both split it back into exactly these
tokens, so neither applies rules of its own (PostgreSQL would otherwise keep
``example.com`` or ``/usr/bin`` as one word, SQLite would not).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Final

#: Letters and digits; everything else separates tokens.
TOKEN: Final = re.compile(r"[^\W_]+")
#: Longest token indexed or searched, in characters: PostgreSQL refuses longer lexemes
#: (2 KiB), and nobody searches for one.
MAX_TOKEN_CHARS: Final = 100


def fold(text: str) -> str:
    """``text`` case folded, accents removed (NFKD without combining marks)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, folded token) of every token of ``text`` (NFC), in order."""
    return _ascii_spans(text) if text.isascii() else list(_folded_spans(text))


def _ascii_spans(text: str) -> list[tuple[int, int, str]]:
    """:func:`spans` of ASCII text: folding is lowering, which keeps every token where it
    was, so the text is lowered once instead of token by token (a snippet of a screenful
    in a third of the time)."""
    found = [(m.start(), m.end(), m.group()) for m in TOKEN.finditer(text.lower())]
    if len(text) > MAX_TOKEN_CHARS:
        return [span for span in found if span[1] - span[0] <= MAX_TOKEN_CHARS]
    return found


def _folded_spans(text: str) -> Iterator[tuple[int, int, str]]:
    for match in TOKEN.finditer(text):
        folded = fold(match.group())
        for part in TOKEN.findall(folded):  # folding may split (a ligature, a symbol)
            if len(part) <= MAX_TOKEN_CHARS:
                yield match.start(), match.end(), part


def tokens(text: str) -> list[str]:
    """The folded tokens of ``text`` (those of :func:`spans`, folded all at once)."""
    return [t for t in TOKEN.findall(fold(text)) if len(t) <= MAX_TOKEN_CHARS]


def terms(text: str) -> str:
    """What the full-text index is built from: the tokens of ``text``, space separated."""
    return " ".join(tokens(text))
