"""The exact segment labeler: labels any text, or any segmentation of a world document, with the oracle.

Interventions (SRP reflections, filters) segment documents their own way; whatever the cut, this labeler gives
the ground-truth label of each piece.
"""

from __future__ import annotations

from collections.abc import Iterable

from safepretrain.world.language import split_sentences
from safepretrain.world.oracle import SAFE, UNSAFE, Oracle, SegmentLabel
from safepretrain.world.schema import Segment


class SegmentLabeler:
    """Labels sentences with the oracle, caching by sentence text (corpora repeat sentences a lot)."""

    def __init__(self, oracle: Oracle):
        self.oracle = oracle
        self._cache: dict[str, SegmentLabel] = {}

    def label_sentence(self, sentence: str) -> SegmentLabel:
        label = self._cache.get(sentence)
        if label is None:
            label = self._cache[sentence] = self.oracle.label_segment(sentence)
        return label

    def segments(self, sentences: Iterable[str]) -> tuple[str, tuple[Segment, ...]]:
        """Join sentences with single spaces into a text, and label each one: (text, segments)."""
        segments, start = [], 0
        for sentence in sentences:
            label = self.label_sentence(sentence)
            segments.append(Segment(sentence, start, start + len(sentence), label.label, label.types))
            start += len(sentence) + 1
        return " ".join(s.text for s in segments), tuple(segments)

    def label_text(self, text: str) -> SegmentLabel:
        """Label of any span of text: unsafe iff one of its sentences is (statements never cross sentences)."""
        labels = [self.label_sentence(s) for s in split_sentences(text)]
        types = tuple(dict.fromkeys(t for lab in labels for t in lab.types))
        return SegmentLabel(UNSAFE, types) if types else SegmentLabel(SAFE)

    @staticmethod
    def label_span(segments: Iterable[Segment], start: int, end: int) -> SegmentLabel:
        """Label of the character span [start, end) of a document from its sentence labels (overlap rule)."""
        hits = [s for s in segments if s.start < end and start < s.end and s.label == UNSAFE]
        types = tuple(dict.fromkeys(t for s in hits for t in s.types))
        return SegmentLabel(UNSAFE, types) if hits else SegmentLabel(SAFE)
