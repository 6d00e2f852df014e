"""SRP reflections: segment each document and write a safety reflection after every segment, the last included.

Segments are packed whole sentences up to ``max_len`` words (or tokens); each is scored by a segment-level scorer
(after the document's text before it, for a scorer that reads context) and reflected as Safe below ``threshold``,
else Unsafe with the scorer's categories. ``parse_reflected`` recovers the segments and labels exactly from the
written text.
"""

from __future__ import annotations

from collections.abc import Callable

from datatrove.pipeline.base import PipelineStep

from safepretrain.markup import SAFE, UNSAFE, ReflectionFormat
from safepretrain.pipeline.scorers.base import UNSAFE_THRESHOLD, SafetyScore, Scorer, score_in_context
from safepretrain.pipeline.documents import mark_changed
from safepretrain.pipeline.segment import segment, token_length, word_count


def reflect_text(text: str, scores_of: Callable[[list[str]], list[SafetyScore]], fmt: ReflectionFormat,
                 max_len: int = 100, length: Callable[[str], int] = word_count,
                 threshold: int = UNSAFE_THRESHOLD) -> tuple[str, list[dict]]:
    """The reflected text and, per segment, its label and categories."""
    pieces = segment_texts(text, max_len, length)
    return render_reflected(pieces, scores_of(pieces), fmt, threshold)


def segment_texts(text: str, max_len: int = 100, length: Callable[[str], int] = word_count) -> list[str]:
    return [text[s.start:s.end] for s in segment(text, max_len, length)]


def render_reflected(pieces: list[str], scores: list[SafetyScore], fmt: ReflectionFormat,
                     threshold: int = UNSAFE_THRESHOLD) -> tuple[str, list[dict]]:
    out, labels = [], []
    for piece, score in zip(pieces, scores):
        label = SAFE if score.score < threshold else UNSAFE
        types = list(score.categories) if label == UNSAFE else []
        out.append(fmt.reflected(piece, label, types))
        labels.append({"label": label, "types": types, "score": score.score})
    return " ".join(out), labels


def parse_reflected(text: str, fmt: ReflectionFormat) -> list[tuple[str, str, tuple[str, ...]]]:
    """(segment text, label, types) for every reflection in ``text``, in order."""
    found, start = [], 0
    for r in fmt.find(text):
        found.append((text[start:r.start].strip(), r.label, r.types))
        start = r.end
    return found


class Reflect(PipelineStep):
    type = "🪞 - REFLECT"
    name = "SRP reflections"

    def __init__(self, scorer: Scorer, fmt: ReflectionFormat, max_len: int = 100, tokenizer=None,
                 threshold: int = UNSAFE_THRESHOLD, batch_size: int = 32):
        super().__init__()
        self.scorer, self.fmt, self.max_len, self.threshold = scorer, fmt, max_len, threshold
        self.batch_size = batch_size
        self.length = word_count if tokenizer is None else token_length(tokenizer)

    def run(self, data, rank: int = 0, world_size: int = 1):
        from datatrove.utils.batching import batched

        for batch in batched(data, self.batch_size):
            yield from self._reflect(batch)

    def _reflect(self, docs: list):
        """One scorer call for the segments of many documents (a model scorer needs batches to be fast)."""
        with self.track_time(unit="batch"):
            pieces = [segment_texts(d.text, self.max_len, self.length) for d in docs]
            flat = [p for ps in pieces for p in ps]
            contexts = [" ".join(ps[:i]) for ps in pieces for i in range(len(ps))]
            scores = score_in_context(self.scorer, flat, contexts) if flat else []
        start = 0
        for doc, doc_pieces in zip(docs, pieces):
            doc.text, labels = render_reflected(doc_pieces, scores[start:start + len(doc_pieces)], self.fmt,
                                                self.threshold)
            start += len(doc_pieces)
            doc.metadata["reflections"] = labels
            mark_changed(doc, "reflect")
            self.stat_update("segments", value=len(labels))
            self.stat_update("unsafe_segments", value=sum(r["label"] != SAFE for r in labels))
            yield doc
