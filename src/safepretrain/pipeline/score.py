"""The scoring step: store each document's safety score in its metadata under the scorer's versioned key."""

from __future__ import annotations

from collections.abc import Iterator

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from safepretrain.pipeline.scorers.base import SafetyScore, Scorer, metadata_key


class ScoreDocuments(PipelineStep):
    """Adds ``metadata["safety@<scorer>-v<version>"] = {"score", "categories", "reason"}``; keeps existing scores
    under that key (re-running a pipeline never re-scores)."""

    type = "🛡️ - SCORE"

    def __init__(self, scorer: Scorer, batch_size: int = 64):
        self.key = metadata_key(scorer)
        self.name = f"score {self.key}"  # before super().__init__, which names the step's stats
        super().__init__()
        self.scorer, self.batch_size = scorer, batch_size

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        from datatrove.utils.batching import batched

        for batch in batched(data, self.batch_size):
            yield from self._score(batch)

    def _score(self, batch: list[Document]) -> Iterator[Document]:
        todo = [d for d in batch if self.key not in d.metadata]
        with self.track_time(unit="batch"):
            scores = self.scorer.score_batch([d.text for d in todo]) if todo else []
        for doc, score in zip(todo, scores):
            doc.metadata[self.key] = score.to_dict()
            self.stat_update("score_failed" if score.error else f"score_{score.score}")
        yield from batch


def retire_score(doc: Document, key: str) -> None:
    """The text was rewritten: its score now describes the input, so keep it as ``<key>:before``."""
    if key in doc.metadata:
        doc.metadata[f"{key}:before"] = doc.metadata.pop(key)


def score_of(doc: Document, key: str) -> SafetyScore:
    """The stored score (a clear error when the pipeline did not score with that key)."""
    try:
        return SafetyScore.from_dict(doc.metadata[key])
    except KeyError:
        raise KeyError(f"document {doc.id} has no score under {key!r}; add a score step before this one") from None
