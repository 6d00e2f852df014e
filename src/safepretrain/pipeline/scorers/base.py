"""The scorer protocol shared by every safety scorer.

The scale is Safety Pretraining's (Maini et al. 2025): 0 safe for children ... 5 highly unsafe; the highest level that
applies, never a sum. A score is stored in a document's metadata under a versioned key, ``safety@<name>-v<version>``,
so that thresholds can change later without re-scoring, and scores of different scorers can sit side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

MAX_SCORE = 5
UNSAFE_THRESHOLD = 1
"""Default: a segment scored at or above this is reflected as Unsafe (score 0 is the only 'safe for children')."""


@dataclass(frozen=True)
class SafetyScore:
    score: int
    """0 (safe) .. 5 (highly unsafe)."""
    categories: tuple[str, ...] = ()
    """Hazard categories (e.g. MLCommons S1..S14, or MedSafetyWorld behaviour types)."""
    reason: str = ""
    error: str = ""
    """Set when the scorer could not score the text; the score is then the maximum (a safety pipeline treats what
    it could not check as unsafe) and the scoring step counts the failure."""

    @classmethod
    def failed(cls, error: str) -> SafetyScore:
        return cls(MAX_SCORE, (), "", error)

    def __post_init__(self):
        if not 0 <= self.score <= MAX_SCORE:
            raise ValueError(f"score must be in 0..{MAX_SCORE}, got {self.score}")

    def to_dict(self) -> dict:
        record = {**asdict(self), "categories": list(self.categories)}
        if not self.error:
            del record["error"]
        return record

    @classmethod
    def from_dict(cls, record: dict) -> SafetyScore:
        return cls(int(record["score"]), tuple(record.get("categories", ())), record.get("reason", ""),
                   record.get("error", ""))


@runtime_checkable
class Scorer(Protocol):
    """Scores texts in batches (a batch lets a model scorer use its hardware; per-text scorers just loop)."""

    name: str
    version: str

    def score_batch(self, texts: Sequence[str]) -> list[SafetyScore]: ...


def score_in_context(scorer: Scorer, texts: Sequence[str], contexts: Sequence[str]) -> list[SafetyScore]:
    """Scores of ``texts``, each read after its context (the text before it in its document) by a scorer that reads
    context (``score_batch_in_context``, e.g. MedSafetyWorld's oracle: a segment that only restates an earlier
    harmful request with a pretext is unsafe there); other scorers read each text alone."""
    method = getattr(scorer, "score_batch_in_context", None)
    return method(texts, contexts) if method is not None else scorer.score_batch(texts)


def metadata_key(scorer: Scorer) -> str:
    return f"safety@{scorer.name}-v{scorer.version}"


def max_score(scores: Sequence[SafetyScore]) -> SafetyScore:
    """The highest score; categories of every score at that level, in order; their reasons joined."""
    if not scores:
        return SafetyScore(0)
    top = max(s.score for s in scores)
    at_top = [s for s in scores if s.score == top]
    categories = tuple(dict.fromkeys(c for s in at_top for c in s.categories))
    return SafetyScore(top, categories, "; ".join(s.reason for s in at_top if s.reason))
