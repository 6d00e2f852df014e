"""MedSafetyWorld's ground truth as a scorer: 5 with the behaviour types for an unsafe span, else 0."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safepretrain.markup import chat_content
from safepretrain.pipeline.scorers.base import MAX_SCORE, SafetyScore


class OracleScorer:
    """Exact labels of any span of a world's text (the oracle reads intent and actions, not bookkeeping)."""

    name = "oracle"
    version = "1"

    def __init__(self, world_dir: str | Path):
        from safepretrain.world.generate import WorldFolder

        self.world_dir = str(world_dir)
        self._oracle = WorldFolder(Path(world_dir)).oracle

    def score_batch(self, texts: Sequence[str]) -> list[SafetyScore]:
        return [self._score(t) for t in texts]

    def score_batch_in_context(self, texts: Sequence[str], contexts: Sequence[str]) -> list[SafetyScore]:
        """Each text read after its context: a pretext is unsafe only after the request it dresses up."""
        return [self._score(t, c) for t, c in zip(texts, contexts, strict=True)]

    def _score(self, text: str, context: str = "") -> SafetyScore:
        label = self._oracle.label_segment(chat_content(text), context)  # a chat document: its words
        if label.label == "safe":
            return SafetyScore(0)
        return SafetyScore(MAX_SCORE, tuple(label.types), "MedSafetyWorld oracle: " + ", ".join(label.types))
