"""safepretrain: pretraining-stage safety alignment for language models."""

__version__ = "0.1.0"
