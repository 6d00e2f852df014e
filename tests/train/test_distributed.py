"""2-process DDP (gloo, CPU) takes the same steps as 1 process on the same global batch, as does gradient accumulation."""

import json
import socket
import subprocess
import sys

import pytest
import yaml

from safepretrain.train.trainer import train


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tiny_run, tmp_path):
    # Global batch 8 x 64 tokens either way: 1 process x 8 sequences, or 2 processes x 4.
    single = train(tiny_run(out=tmp_path / "one", max_steps=6, log_every=1), show_progress=False)
    config = tmp_path / "ddp.yaml"
    cfg = tiny_run(out=tmp_path / "two", max_steps=6, log_every=1, **{"optim.micro_batch": 4})
    from safepretrain.train.config import to_dict

    config.write_text(yaml.safe_dump(to_dict(cfg)))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "safepretrain", "train", "pretrain", "--config", str(config)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert losses(tmp_path / "two") == pytest.approx(losses(single.out), rel=1e-4)


def test_gradient_accumulation_matches_a_bigger_micro_batch(tiny_run, tmp_path):
    big = train(tiny_run(out=tmp_path / "big", max_steps=4, log_every=1), show_progress=False)
    accumulated = train(tiny_run(out=tmp_path / "acc", max_steps=4, log_every=1,
                                 **{"optim.micro_batch": 4, "optim.grad_accum": 2}), show_progress=False)
    assert losses(accumulated.out) == pytest.approx(losses(big.out), rel=1e-4)
