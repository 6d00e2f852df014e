"""Rephrase: rewrite unsafe text into a safe narrative of the same content (Safety Pretraining routes scores 1-3 here).

The rewriting is a backend's: MedSafetyWorld's exact rewriter (``WorldBackend``), or an instruct LLM with the paper's
style templates (teacher script, textbook, podcast, ...) for real corpora.
"""

from __future__ import annotations

from datatrove.pipeline.base import PipelineStep

from safepretrain.pipeline.documents import mark_changed
from safepretrain.pipeline.score import retire_score, score_of


class Rephrase(PipelineStep):
    type = "✍️ - REPHRASE"
    name = "rephrase unsafe text"

    def __init__(self, key: str, backend, min_score: int = 1, max_score: int = 3):
        super().__init__()
        self.key, self.backend, self.min_score, self.max_score = key, backend, min_score, max_score

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            if self.key not in doc.metadata:  # text an earlier step wrote (e.g. a refusal dialogue)
                self.stat_update("unscored_passed")
            elif self.min_score <= score_of(doc, self.key).score <= self.max_score:
                with self.track_time():
                    doc.text = self.backend.rephrase(doc)
                mark_changed(doc, "rephrase", stale=("segments", "label", "types"))
                retire_score(doc, self.key)
                self.stat_update("rephrased")
            yield doc
