"""A search query from a person's text: words, "phrases" and prefixes, checked and capped.

The text is never handed to the database's query syntax. It is read here into
:class:`Term` values made of tokens (``workers.search.text``: letters and digits only), and
the backends write those in their own syntax (``workers.search.postgres``,
``workers.search.sqlite``), quoting every token; no character of the user's text reaches
``to_tsquery`` or ``MATCH`` unless it is a letter or a digit. The language:

- ``migration review``: moments with both words (every term must match);
- ``"database migration"``: the words next to each other, in this order (a phrase; an
  unclosed quote runs to the end). A word the tokeniser splits (``user_accounts``,
  ``v1.2``) is a phrase of its parts;
- ``migr*``: words starting with ``migr``; the *last* word of the query is a prefix too
  (``data migr`` finds "data migrations" as one types), unless it is inside quotes or
  followed by a space. A prefix shorter than ``MIN_PREFIX_CHARS`` is a whole word
  (``a*`` would match most of the index);
- anything else (``AND``, ``-x``, ``(``, ``:``, ``'``, NUL, ...) is a separator or a word:
  there are no operators to get wrong.

A query longer than ``MAX_QUERY_CHARS`` characters, with more than ``MAX_TERMS`` terms, or
with no letter or digit in it is a :class:`QueryError` naming the problem (the CLI exits 2,
the API answers 422).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from workers.search.text import tokens

#: Longest query accepted, in characters.
MAX_QUERY_CHARS: Final = 500
#: Most terms (words or phrases) in one query.
MAX_TERMS: Final = 16
#: Shortest prefix searched as a prefix, in characters.
MIN_PREFIX_CHARS: Final = 3
#: Most indexed words a prefix is expanded to (``workers.search.postgres``,
#: ``workers.search.sqlite``); past that it is a partial match of the prefix.
MAX_EXPANSIONS: Final = 32
#: A quoted phrase, or a run of anything but spaces and quotes.
_PART: Final = re.compile(r'"([^"]*)"?|([^\s"]+)')


class QueryError(ValueError):
    """A query that cannot be searched: too long, too many terms, or nothing in it."""


@dataclass(frozen=True)
class Term:
    """Tokens that must appear next to each other in this order; the last one as a prefix
    when ``prefix``."""

    tokens: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class Query:
    text: str  # what the person typed
    terms: tuple[Term, ...]  # every one must match


def parse_query(text: str) -> Query:
    """``text`` as a :class:`Query` (:class:`QueryError` when it cannot be searched)."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(
            f"the query is {len(text)} characters long; at most {MAX_QUERY_CHARS} are searched"
        )
    normal = unicodedata.normalize("NFC", text)
    terms: list[Term] = []
    parts = list(_PART.finditer(normal))
    for k, part in enumerate(parts):
        quoted, bare = part.group(1), part.group(2)
        raw = quoted if quoted is not None else bare
        words = tuple(tokens(raw))
        if not words:
            continue
        starred = raw.rstrip().endswith("*")
        typing = bare is not None and k == len(parts) - 1 and normal == normal.rstrip()
        prefix = (starred or typing) and len(words[-1]) >= MIN_PREFIX_CHARS
        term = Term(words, prefix)
        if term not in terms:
            terms.append(term)
    if not terms:
        raise QueryError("nothing to search for: the query has no letters or digits")
    if len(terms) > MAX_TERMS:
        raise QueryError(f"the query has {len(terms)} terms; at most {MAX_TERMS} are searched")
    return Query(text=text, terms=tuple(terms))
