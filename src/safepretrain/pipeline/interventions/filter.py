"""Filter: drop documents scored at or above a threshold (Safety Pretraining's "score-0 only" keeps threshold=1)."""

from __future__ import annotations

from datatrove.pipeline.base import PipelineStep

from safepretrain.pipeline.score import score_of


class SafetyFilter(PipelineStep):
    """Drops documents with score >= ``threshold``; every drop is counted by score and by category, and can be
    written to an exclusion writer (so nothing disappears unseen)."""

    type = "🔻 - FILTER"
    name = "safety filter"

    def __init__(self, key: str, threshold: int = 1, exclusion_writer=None):
        super().__init__()
        self.key, self.threshold, self.exclusion_writer = key, threshold, exclusion_writer

    def run(self, data, rank: int = 0, world_size: int = 1):
        excluded = self.exclusion_writer.__enter__() if self.exclusion_writer else None
        try:
            for doc in data:
                score = score_of(doc, self.key)
                if score.score < self.threshold:
                    self.stat_update("kept")
                    yield doc
                    continue
                self.stat_update("dropped", f"dropped_score_{score.score}")
                for category in score.categories or ("uncategorized",):
                    self.stat_update(f"dropped_{category}")
                if excluded is not None:
                    excluded.write(doc, rank)
        finally:
            if excluded is not None:
                excluded.__exit__(None, None, None)
