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

import unicodedata
from collections.abc import Sequence
from typing import Any, Final

from workers.search.query import Query
from workers.search.text import spans, tokens

#: Marks around a matched word in a snippet (the web page shows them as <mark>; the text
#: itself never contains them: they are replaced by quotes there).
HIGHLIGHT_START: Final = "«"
HIGHLIGHT_END: Final = "»"
ELLIPSIS: Final = "…"
#: Tokens of a snippet: a transcript segment fits whole; a screenful is cut around the match.
SNIPPET_TOKENS: Final = 32
#: Of those, how many come before the first match.
SNIPPET_LEAD_TOKENS: Final = 8


def _starts(word: str, token: str, prefix: bool) -> bool:
    return word == token or (prefix and word.startswith(token))


def matched(words: Sequence[str], query: Query) -> list[int]:
    """Indices of the tokens of ``words`` that some term of ``query`` matched, in order."""
    hit: set[int] = set()
    last = len(words)
    for term in query.terms:
        tokens, n = term.tokens, len(term.tokens)
        first = tokens[0]
        if n == 1 and term.prefix:
            found = [k for k, word in enumerate(words) if word.startswith(first)]
        else:
            found = [k for k, word in enumerate(words) if word == first]
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
    found = spans(text)
    if not found:
        return text[: SNIPPET_TOKENS * 8]
    marks = set(matched([token for _, _, token in found], query))
    first = min(marks) if marks else 0
    lo = max(0, min(first - SNIPPET_LEAD_TOKENS, len(found) - SNIPPET_TOKENS))
    hi = min(len(found), lo + SNIPPET_TOKENS)
    begin = 0 if lo == 0 else found[lo][0]
    finish = len(text) if hi == len(found) else found[hi - 1][1]
    out: list[str] = [ELLIPSIS] if lo > 0 else []
    cursor = begin
    done: set[tuple[int, int]] = set()  # one word may hold several tokens (a ligature)
    for k in range(lo, hi):
        start, end, _ = found[k]
        if k not in marks or (start, end) in done:
            continue
        done.add((start, end))
        out += [text[cursor:start], HIGHLIGHT_START, text[start:end], HIGHLIGHT_END]
        cursor = end
    out.append(text[cursor:finish])
    if hi < len(found):
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
        for token in tokens(str(item[1])):
            times.append(float(item[0]))
            folded.append(token)
    hits = matched(folded, query)
    return times[hits[0]] if hits else start
