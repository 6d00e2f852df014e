"""SRP segmentation: cut text into short segments on sentence boundaries, packing whole sentences up to a maximum.

A sentence ends after ``.?!`` (or CJK ``。？！``) followed by white space, or at a newline. Sentences are packed into a
segment while it stays within ``max_len`` units (words, or tokens of a given tokenizer); a sentence longer than that on
its own is hard-chunked. Segments are character spans of the original text, so labels can be looked up exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_SENTENCE = re.compile(r".+?(?:[.?!](?=\s|$)|[。？！]|\n|$)", re.S)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def sentence_spans(text: str) -> list[Span]:
    """Sentences as spans without their surrounding white space."""
    spans = []
    for m in _SENTENCE.finditer(text):
        piece = m.group()
        lead = len(piece) - len(piece.lstrip())
        start, end = m.start() + lead, m.start() + len(piece.rstrip())
        if end > start:
            spans.append(Span(start, end))
    return spans


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def token_length(tokenizer) -> Callable[[str], int]:
    """A ``length`` that counts a tokenizer's tokens (no special tokens), for segments measured in tokens."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def segment(text: str, max_len: int = 100, length: Callable[[str], int] = word_count) -> list[Span]:
    """Pack whole sentences into segments of at most ``max_len`` units (``length`` counts them; default: words)."""
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    segments: list[Span] = []
    current: Span | None = None
    for sentence in sentence_spans(text):
        for piece in _hard_chunks(text, sentence, max_len, length):
            if current is not None and length(text[current.start:piece.end]) <= max_len:
                current = Span(current.start, piece.end)
                continue
            if current is not None:
                segments.append(current)
            current = piece
    if current is not None:
        segments.append(current)
    return segments


def _hard_chunks(text: str, sentence: Span, max_len: int, length: Callable[[str], int]) -> list[Span]:
    """A sentence, or consecutive word-aligned chunks of it when it is longer than ``max_len`` on its own."""
    if length(text[sentence.start:sentence.end]) <= max_len:
        return [sentence]
    words = [Span(sentence.start + m.start(), sentence.start + m.end())
             for m in _WORD.finditer(text[sentence.start:sentence.end])]
    chunks, first = [], 0
    while first < len(words):
        # The longest chunk from ``first`` that fits, by bisection (a tokenizer call per step, not per word).
        low, high = first, len(words) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if length(text[words[first].start:words[middle].end]) <= max_len:
                low = middle
            else:
                high = middle - 1
        chunks.append(Span(words[first].start, words[low].end))
        first = low + 1
    return chunks
