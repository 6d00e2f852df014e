"""The paper's ensemble: the maximum over scorers (an LLM judge and an embedding classifier in Safety Pretraining)."""

from __future__ import annotations

from collections.abc import Sequence

from safepretrain.pipeline.scorers.base import SafetyScore, Scorer, max_score, score_in_context


class EnsembleScorer:
    def __init__(self, scorers: Sequence[Scorer]):
        if not scorers:
            raise ValueError("an ensemble needs at least one scorer")
        self.scorers = list(scorers)
        self.name = "ensemble(" + "+".join(s.name for s in self.scorers) + ")"
        self.version = ".".join(s.version for s in self.scorers)

    def score_batch(self, texts: Sequence[str]) -> list[SafetyScore]:
        per_scorer = [s.score_batch(texts) for s in self.scorers]
        return [max_score(list(scores)) for scores in zip(*per_scorer)]

    def score_batch_in_context(self, texts: Sequence[str], contexts: Sequence[str]) -> list[SafetyScore]:
        per_scorer = [score_in_context(s, texts, contexts) for s in self.scorers]
        return [max_score(list(scores)) for scores in zip(*per_scorer)]
