"""Safety scorers: text -> a 0-5 harm score, hazard categories and a reason (one protocol, see base.py)."""

from safepretrain.pipeline.scorers.base import SafetyScore, Scorer, metadata_key

__all__ = ["SafetyScore", "Scorer", "metadata_key"]
