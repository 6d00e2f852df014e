from pathlib import Path

import pytest

from safepretrain.train.config import build_config


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
