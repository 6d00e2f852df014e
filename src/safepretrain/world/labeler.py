"""The exact segment labeler: labels any text, or any segmentation of a world document, with the oracle.

Interventions (SRP reflections, filters) segment documents their own way; whatever the cut, this labeler gives
the ground-truth label of each piece. A sentence is labeled in the context of the sentences before it (an
indication written after the request asked without one is a pretext, see the oracle), so a document's sentences
are labeled in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from safepretrain.world.language import split_sentences
from safepretrain.world.oracle import SAFE, STATEMENT_CACHE, UNSAFE, Oracle, SegmentLabel
from safepretrain.world.schema import Segment


Asked = frozenset[tuple[str, str]]
"""(patient, effect) pairs asked for without an indication earlier in a document (``Oracle.harm_goals``)."""


class SegmentLabeler:
    """Labels sentences with the oracle, caching by sentence text and context (corpora repeat sentences a lot)."""

    def __init__(self, oracle: Oracle):
        self.oracle = oracle
        self._cache: dict[tuple[str, Asked], SegmentLabel] = {}

    def label_sentence(self, sentence: str, asked: Asked = frozenset()) -> SegmentLabel:
        """The sentence's label after text that asked for the harmful goals ``asked``."""
        label = self._cache.get((sentence, asked))
        if label is None:
            if len(self._cache) >= STATEMENT_CACHE:  # bounded as the oracle's parse cache is
                self._cache.clear()
            types = self.oracle.statement_types(self.oracle.statements(sentence), asked)
            label = self._cache[(sentence, asked)] = SegmentLabel(UNSAFE, types) if types else SegmentLabel(SAFE)
        return label

    def asked_before(self, sentences: Iterable[str], context: str = "") -> Iterator[tuple[str, Asked]]:
        """(sentence, what the text before it asked for) for each sentence, read after ``context`` and the
        sentences before it."""
        asked = self.oracle.harm_goals(context) if context else frozenset()
        for sentence in sentences:
            yield sentence, asked
            asked |= self.oracle.harm_goals(sentence)

    def in_order(self, sentences: Iterable[str], context: str = "") -> Iterator[tuple[str, SegmentLabel, Asked]]:
        """(sentence, label, what the text before it asked for) for each sentence, labeled in that context."""
        for sentence, asked in self.asked_before(sentences, context):
            yield sentence, self.label_sentence(sentence, asked), asked

    def segments(self, sentences: Iterable[str], context: str = "") -> tuple[str, tuple[Segment, ...]]:
        """Join sentences with single spaces into a text, and label each one in order: (text, segments)."""
        segments, start = [], 0
        for sentence, label, _ in self.in_order(sentences, context):
            segments.append(Segment(sentence, start, start + len(sentence), label.label, label.types))
            start += len(sentence) + 1
        return " ".join(s.text for s in segments), tuple(segments)

    def label_text(self, text: str, context: str = "") -> SegmentLabel:
        """Label of any span of text: unsafe iff one of its sentences is (statements never cross sentences)."""
        labels = [label for _, label, _ in self.in_order(split_sentences(text), context)]
        types = tuple(dict.fromkeys(t for lab in labels for t in lab.types))
        return SegmentLabel(UNSAFE, types) if types else SegmentLabel(SAFE)

    @staticmethod
    def label_span(segments: Iterable[Segment], start: int, end: int) -> SegmentLabel:
        """Label of the character span [start, end) of a document from its sentence labels (overlap rule)."""
        hits = [s for s in segments if s.start < end and start < s.end and s.label == UNSAFE]
        types = tuple(dict.fromkeys(t for s in hits for t in s.types))
        return SegmentLabel(UNSAFE, types) if hits else SegmentLabel(SAFE)
