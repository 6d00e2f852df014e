from pathlib import Path

import pytest

from safepretrain.train.config import build_config
from safepretrain.train.tokenizer import corpus_texts, train_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_world_dir, tmp_path_factory) -> Path:
    """A BPE trained on the tiny world's corpus and chats (saved; read-only for tests)."""
    out = tmp_path_factory.mktemp("tokenizer")
    texts = corpus_texts([tiny_world_dir / "corpus.jsonl", tiny_world_dir / "sft.jsonl"])
    train_tokenizer(texts, vocab_size=768).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from safepretrain.train.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


@pytest.fixture
def tiny_run(tiny_world_dir, tokenizer_dir, tmp_path):
    """Build a quick pretraining config on the tiny world; keyword overrides are dotted keys."""

    def make(kind: str = "pretrain", out: Path | None = None, **overrides):
        values = {"out": str(out or tmp_path / "run"), "model": {"tokenizer": str(tokenizer_dir)},
                  "data": {"train": [str(tiny_world_dir / "corpus.jsonl")]},
                  "optim": {"seq_len": 64, "micro_batch": 8}, "max_steps": 12, "log_every": 4,
                  "checkpoint_every": 4, "threads": 1}
        return build_config(kind, values, [f"{k}={v}" for k, v in overrides.items()])

    return make
