"""Exact labels from a labeled source: a text scores what the labeled documents that contain it score.

Real corpora assembled from curated sources (a red-teaming set of harmful question/answer pairs, a benign book
corpus) come with labels per document. A segment of a harmful answer is unsafe in context (it continues a harmful
answer) even when it reads harmless alone -- the label SRP's segment-level annotator gives by reading the prefix,
and one a per-segment classifier cannot see. This scorer returns, for any text, the highest score among the labeled
documents that contain it, so SRP reflections, filters and tags of such a corpus use the source labels exactly.

A text that no labeled document contains is not guessed at: it fails (maximum score, with the error counted by the
pipeline), since a safety pipeline treats what it could not check as unsafe.

File: JSONL of ``{"text": ..., "score": 0-5, "categories"?: [...]}`` (other fields ignored).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.pipeline.scorers.base import MAX_SCORE, SafetyScore, max_score

SEPARATOR = "\x00"


class SourceScorer:
    name = "source"

    def __init__(self, path: Path):
        from safepretrain.io import read_jsonl_numbered

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such labeled file (JSONL of {{'text', 'score'}} records)")
        self.documents: list[tuple[str, SafetyScore]] = []
        for number, record in read_jsonl_numbered(self.path):
            self.documents.append((_text(record, self.path, number), _score(record, self.path, number)))
        # One string of every document, NUL-separated, searched by str.find (C speed) instead of a Python loop over
        # documents per segment; a needle holds no NUL, so a match never spans two documents.
        self._joined = SEPARATOR.join(text for text, _ in self.documents)
        self._starts = list(itertools.accumulate((len(text) + 1 for text, _ in self.documents), initial=0))[:-1]
        # The version names the labels, so that scores stored by another labeled file are never reused.
        self.version = "1-" + hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]

    def score_batch(self, texts: Sequence[str]) -> list[SafetyScore]:
        return [self.score(text) for text in texts]

    def score(self, text: str) -> SafetyScore:
        needle = text.strip()
        found = [self.documents[i][1] for i in self._containing(needle)] if needle and SEPARATOR not in needle else []
        if not found:
            return SafetyScore.failed(f"text not found in the labeled source {self.path.name}")
        return max_score(found)

    def _containing(self, needle: str) -> set[int]:
        """Indexes of the documents that contain ``needle``."""
        found, at = set(), self._joined.find(needle)
        while at >= 0:
            doc = bisect.bisect_right(self._starts, at) - 1
            found.add(doc)
            at = self._joined.find(needle, self._starts[doc + 1] if doc + 1 < len(self._starts) else len(self._joined))
        return found


def _text(record, path: Path, number: int) -> str:
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise UserError(f"{path}, line {number}: expected a record with a 'text' string")
    return record["text"]


def _score(record: dict, path: Path, number: int) -> SafetyScore:
    score, categories = record.get("score"), record.get("categories", [])
    if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= MAX_SCORE:
        raise UserError(f"{path}, line {number}: 'score' must be an integer 0-{MAX_SCORE}, got {score!r}")
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise UserError(f"{path}, line {number}: 'categories' must be a list of strings")
    return SafetyScore(score, tuple(categories), f"labeled source {path.name}")
