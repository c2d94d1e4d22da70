"""Where a query matched in a moment: the highlighted snippet, and the word a hit starts at.

One implementation for both databases (their own, ``ts_headline`` and FTS5's ``snippet``,
would tokenise and cut differently): the text is tokenised as it was indexed
(``workers.search.text``), the terms of the query are matched the way the index matched
them (a phrase as consecutive tokens, a prefix as a token's start), and matched words are
wrapped in ``HIGHLIGHT_START``/``HIGHLIGHT_END``. A long text is cut to
``SNIPPET_TOKENS`` tokens around its first match, with ``ELLIPSIS`` where it was cut.
A spoken moment starts at the first matched word (the transcript's word times), so a hit
lands on the second the word was said, not at the start of its sentence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, Final

from workers.search.query import Query
from workers.search.text import MAX_TOKEN_CHARS, TOKEN, spans, tokens

#: Marks around a matched word in a snippet (the web page shows them as <mark>; the text
#: itself never contains them: they are replaced by quotes there).
HIGHLIGHT_START: Final = "«"
HIGHLIGHT_END: Final = "»"
#: Splits text into the gaps between tokens and the tokens (``TOKEN``), in turn.
_TOKENS_AND_GAPS: Final = re.compile(f"({TOKEN.pattern})")
ELLIPSIS: Final = "…"
#: Tokens of a snippet: a transcript segment fits whole; a screenful is cut around the match.
SNIPPET_TOKENS: Final = 32
#: Of those, how many come before the first match.
SNIPPET_LEAD_TOKENS: Final = 8


def _starts(word: str, token: str, prefix: bool) -> bool:
    return word == token or (prefix and word.startswith(token))


def _positions(words: Sequence[str], first: str, prefix: bool) -> list[int]:
    """Indices of the tokens of ``words`` equal to ``first`` (starting with it when
    ``prefix``)."""
    if not isinstance(words, list):
        return [k for k, word in enumerate(words) if _starts(word, first, prefix)]
    found: list[int] = []
    if prefix:  # the words starting with it, found in their text joined by spaces (in C)
        joined = " " + " ".join(words)
        at = joined.find(" " + first)
        while at >= 0:
            found.append(joined.count(" ", 0, at))
            at = joined.find(" " + first, at + 1)
        return found
    k = -1
    try:  # list.index scans in C: a screenful's tokens in a fraction of the loop's time
        while True:
            k = words.index(first, k + 1)
            found.append(k)
    except ValueError:
        return found


def matched(words: Sequence[str], query: Query) -> list[int]:
    """Indices of the tokens of ``words`` that some term of ``query`` matched, in order."""
    hit: set[int] = set()
    last = len(words)
    for term in query.terms:
        tokens, n = term.tokens, len(term.tokens)
        found = _positions(words, tokens[0], n == 1 and term.prefix)
        if n == 1:
            hit.update(found)
            continue
        for k in found:
            if k + n <= last and all(
                _starts(words[k + m], tokens[m], term.prefix and m == n - 1) for m in range(1, n)
            ):
                hit.update(range(k, k + n))
    return sorted(hit)


def snippet(text: str, query: Query) -> str:
    """``text`` with the matched words marked, cut around the first match when long."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace(HIGHLIGHT_START, '"').replace(HIGHLIGHT_END, '"')
    if text.isascii():
        parts = _TOKENS_AND_GAPS.split(text.lower())
        if max(map(len, parts[1::2]), default=0) <= MAX_TOKEN_CHARS:
            return _ascii_snippet(text, parts, query)
    found = spans(text)
    if not found:
        return text[: SNIPPET_TOKENS * 8]
    marks = set(matched([token for _, _, token in found], query))
    lo, hi = _window(marks, len(found))
    return _marked(text, found[lo:hi], lo, len(found), marks)


def _ascii_snippet(text: str, parts: list[str], query: Query) -> str:
    """:func:`snippet` of ASCII text without an overlong token, split into ``parts`` (the
    gaps and the lowered tokens in turn: folding ASCII is lowering, which moves nothing):
    the tokens and where they are come from the lengths of the parts, added up in C, and
    not from a match object per token (a screenful's snippet in half the time)."""
    words = parts[1::2]
    if not words:
        return text[: SNIPPET_TOKENS * 8]
    marks = set(matched(words, query))
    lo, hi = _window(marks, len(words))
    bounds = list(accumulate(map(len, parts[: 2 * hi + 1])))  # token k: [2k], [2k + 1]
    starts, ends = bounds[2 * lo : 2 * hi : 2], bounds[2 * lo + 1 : 2 * hi : 2]
    window = list(zip(starts, ends, words[lo:hi], strict=True))
    return _marked(text, window, lo, len(words), marks)


def _window(marks: set[int], count: int) -> tuple[int, int]:
    """The tokens ``[lo, hi)`` of a snippet of ``count`` tokens whose matched ones are
    ``marks``: from a few before the first match."""
    first = min(marks) if marks else 0
    lo = max(0, min(first - SNIPPET_LEAD_TOKENS, count - SNIPPET_TOKENS))
    return lo, min(count, lo + SNIPPET_TOKENS)


def _marked(
    text: str, window: Sequence[tuple[int, int, str]], lo: int, count: int, marks: set[int]
) -> str:
    """The snippet of ``text``: its tokens ``lo`` to ``lo + len(window)`` (``window``: their
    spans) of ``count``, the ``marks`` highlighted, ellipses where it was cut."""
    hi = lo + len(window)
    begin = 0 if lo == 0 else window[0][0]
    finish = len(text) if hi == count else window[-1][1]
    out: list[str] = [ELLIPSIS] if lo > 0 else []
    cursor = begin
    done: set[tuple[int, int]] = set()  # one word may hold several tokens (a ligature)
    for k, (start, end, _) in enumerate(window, lo):
        if k not in marks or (start, end) in done:
            continue
        done.add((start, end))
        out += [text[cursor:start], HIGHLIGHT_START, text[start:end], HIGHLIGHT_END]
        cursor = end
    out.append(text[cursor:finish])
    if hi < count:
        out.append(ELLIPSIS)
    return " ".join("".join(out).split())


def spoken_start(words: list[Any] | None, query: Query, start: float) -> float:
    """When the first matched word of a spoken moment was said (``words``: [[seconds, word],
    ...]); ``start`` (the segment's) when no word matched."""
    if not words:
        return start
    times: list[float] = []
    folded: list[str] = []
    for item in words:
        word = str(item[1])
        if word.isascii() and word.isalnum() and len(word) <= MAX_TOKEN_CHARS:
            times.append(float(item[0]))  # one token: letters and digits, folded by lowering
            folded.append(word.lower())
            continue
        for token in tokens(word):
            times.append(float(item[0]))
            folded.append(token)
    hits = matched(folded, query)
    return times[hits[0]] if hits else start
