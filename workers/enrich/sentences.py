"""Sentences and words of plain text by regular expressions (NLTK's punkt data is not here).

A sentence ends at ``.``, ``!``, ``?`` or ``…`` followed by white space, unless the word
before the full stop is a known abbreviation ("e.g.", "Dr.") or a single letter (an
initial). A line break also ends a sentence: OCR lines and slide bullets carry no
punctuation, and a phrase must not run from one bullet into the next. A word is a run of
letters or digits, with inner apostrophes and hyphens ("don't", "full-text").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

#: Words that end with a full stop without ending the sentence (lower case, no stop).
ABBREVIATIONS: Final = frozenset(
    {"e.g", "i.e", "etc", "vs", "cf", "mr", "mrs", "ms", "dr", "prof", "st", "no", "fig", "approx"}
)

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_LAST_TOKEN = re.compile(r"(\S+)$")
_SPACE = re.compile(r"\s+")


def split_words(text: str) -> list[str]:
    """The words of ``text`` in order, punctuation dropped."""
    return _WORD.findall(text)


def _is_abbreviation(before: str) -> bool:
    match = _LAST_TOKEN.search(before)
    if match is None:
        return False
    token = match.group(1).lstrip("\"'([").rstrip(".").lower()
    return token in ABBREVIATIONS or (len(token) == 1 and token.isalpha())


def _split_line(line: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(line):
        if match.group() == "." and _is_abbreviation(line[start : match.start()]):
            continue
        sentence = line[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    rest = line[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, white space collapsed; lines end sentences."""
    sentences: list[str] = []
    for line in text.splitlines():
        sentences.extend(_split_line(_SPACE.sub(" ", line).strip()))
    return [s for s in sentences if split_words(s)]


def terminated(sentences: Iterable[str]) -> str:
    """One text of ``sentences``, each ending with punctuation (for tools that re-split)."""
    out = []
    for sentence in sentences:
        sentence = sentence.strip()
        if not sentence:
            continue
        out.append(sentence if sentence[-1] in ".!?…" else sentence + ".")
    return " ".join(out)


class RegexTokenizer:
    """What sumy's parsers and summarizers ask of a tokenizer, by the rules above."""

    def __init__(self, language: str = "en") -> None:
        self.language = language

    def to_sentences(self, paragraph: str) -> tuple[str, ...]:
        return tuple(split_sentences(paragraph))

    def to_words(self, sentence: str) -> tuple[str, ...]:
        return tuple(split_words(sentence))
