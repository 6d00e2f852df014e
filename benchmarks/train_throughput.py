"""Training throughput: our trainer against a minimal PyTorch loop on the same model, data and batch, and MFU.

    python benchmarks/train_throughput.py --preset small --steps 20

Prints tokens/s of both (best of ``--repeats`` alternating runs, after ``--warmup`` steps), their ratio (target: ours
>= 0.95x the reference), and model FLOPs utilization: achieved model FLOP/s over this machine's fp32 matmul peak,
measured in the same run with a large square matmul (target for ``small`` on CPU: >= 40%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from safepretrain.train.config import build_config
from safepretrain.train.data import IGNORE_INDEX, BlockSampler, Tokenization, collate, load_stream
from safepretrain.train.models import flops_per_token
from safepretrain.train.tokenizer import corpus_texts, load_tokenizer, train_tokenizer
from safepretrain.train.trainer import build_model, train
from safepretrain.world.config import preset_config as world_preset
from safepretrain.world.generate import generate_world


def matmul_peak(n: int = 2048, seconds: float = 3.0) -> float:
    """fp32 FLOP/s of a large square matmul: the practical peak the model's matmuls can reach."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def reference_loop(cfg, tokenizer, stream, steps: int, warmup: int) -> float:
    """The plainest correct loop: forward, summed cross-entropy, backward, clip, AdamW step. Returns tokens/s."""
    model = build_model(cfg, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    sampler = BlockSampler([stream.n_blocks(cfg.optim.seq_len)], cfg.seed)
    batch = cfg.optim.micro_batch
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        x, y = collate([stream], sampler.next_batch(step, batch), cfg.optim.seq_len)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum") / (y != IGNORE_INDEX).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch * cfg.optim.seq_len / (time.perf_counter() - start)


def trainer_run(cfg, steps: int, warmup: int) -> float:
    """Our trainer, timed between the end of step ``warmup`` and the end of the run. Returns tokens/s."""
    marks = {}

    def clock(step, loss):
        marks[step] = time.perf_counter()

    train(cfg, overwrite=True, on_step=clock, show_progress=False)
    return steps * cfg.optim.micro_batch * cfg.optim.seq_len / (marks[warmup + steps] - marks[warmup])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--world", default="tiny", help="MedSafetyWorld preset that provides the text")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    generate_world(world_preset(args.world, 0), work / "world")
    corpus = work / "world" / "corpus.jsonl"
    train_tokenizer(corpus_texts([corpus]), 1024).save_pretrained(work / "tok")
    tokenizer = load_tokenizer(work / "tok")
    total = args.warmup + args.steps
    # No checkpoint or log line inside the timed window but the last: what a long run does between them.
    cfg = build_config("pretrain", {
        "out": str(work / "run"), "model": {"name": args.preset, "tokenizer": str(work / "tok")},
        "data": {"train": [str(corpus)]}, "max_steps": total, "checkpoint_every": total, "log_every": total,
        "optim": {"micro_batch": args.micro_batch, "seq_len": args.seq_len},
    })
    stream = load_stream([corpus], tokenizer, Tokenization(), work / "run-tokens")

    peak = matmul_peak()
    ours, reference = [], []
    for _ in range(args.repeats):  # alternate so that machine noise hits both alike
        reference.append(reference_loop(cfg, tokenizer, stream, args.steps, args.warmup))
        ours.append(trainer_run(cfg, args.steps, args.warmup))
    model_config = build_model(cfg, tokenizer).config
    flops = flops_per_token(model_config, args.seq_len)
    best_ours, best_ref = max(ours), max(reference)
    print(f"preset {args.preset}: batch {args.micro_batch} x {args.seq_len} tokens, {torch.get_num_threads()} threads")
    print(f"matmul peak (fp32):   {peak / 1e9:8.1f} GFLOP/s")
    print(f"reference loop:       {best_ref:8,.0f} tokens/s   MFU {best_ref * flops / peak:6.1%}")
    print(f"safepretrain trainer: {best_ours:8,.0f} tokens/s   MFU {best_ours * flops / peak:6.1%}")
    print(f"ratio ours/reference: {best_ours / best_ref:8.3f}   (target >= 0.95)")


if __name__ == "__main__":
    main()
