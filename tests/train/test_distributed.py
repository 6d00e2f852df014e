"""Multi-process training takes the same steps as 1 process on the same global batch: 2-process DDP (torchrun,
gloo), 2-process FSDP2 (accelerate launch, CPU) and gradient accumulation."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from safepretrain.train.config import to_dict
from safepretrain.train.trainer import train

REPO = Path(__file__).resolve().parents[2]


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


def test_fsdp_through_accelerate_launch_matches_one_process(tiny_run, tmp_path):
    single = train(tiny_run(out=tmp_path / "one", max_steps=4, log_every=1), show_progress=False)
    accel = yaml.safe_load((REPO / "configs" / "accelerate" / "fsdp.yaml").read_text())
    accel.update(num_processes=2, use_cpu=True, mixed_precision="no", main_process_port=free_port())
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(accel))
    cfg = tiny_run(out=tmp_path / "fsdp", max_steps=4, log_every=1, **{"optim.micro_batch": 4})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp.yaml"),
         "-m", "safepretrain", "train", "pretrain", "--config", str(tmp_path / "run.yaml")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(single.out), rel=1e-4)
