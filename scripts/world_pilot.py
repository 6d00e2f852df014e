"""Pilot: does a tiny LM trained on a MedSafetyWorld corpus compose the held-out harm?

A stop-gap measurement for the world's design, until the training stack and the evaluation suite land (they will
replace this script). It trains a small Llama (transformers) with a word-level vocabulary on one recipe's corpus
(raw, filter = drop unsafe documents, rewrite = the world's exact rewriter), then reports, per evaluation split,
the teacher-forced decision probe P(unsafe option | prefix) — 0.5 is chance — and greedy free-generation outcomes
judged by the oracle.

    python scripts/world_pilot.py WORLD --recipe raw --tokens 6e6 --out runs/pilot/raw-s0.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from safepretrain.world.generate import WorldFolder
from safepretrain.world.labeler import SegmentLabeler
from safepretrain.world.rewrite import WorldRewriter
from safepretrain.world.schema import SPLITS

TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
EOS = "<eos>"


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text)


def corpus_texts(folder: WorldFolder, recipe: str) -> list[str]:
    docs = list(folder.corpus())
    if recipe == "filter":
        docs = [d for d in docs if d.label == "safe"]
    elif recipe == "rewrite":
        rewriter = WorldRewriter(SegmentLabeler(folder.oracle))
        docs = [rewriter.rewrite(d) for d in docs]
    return [d.text for d in docs]


def build_vocab(folder: WorldFolder, texts: list[str]) -> dict[str, int]:
    words = {EOS}
    for t in texts:
        words.update(tokenize(t))
    for split in SPLITS:  # held-out cells use words (e.g. harm verbs with interaction effects) all in the corpus too
        for item in folder.eval_items(split):
            words.update(tokenize(item.probe.prefix if item.probe else item.prompt))
            words.update(tokenize(item.reference))
    return {w: i for i, w in enumerate(sorted(words))}


def make_model(vocab_size: int, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=args.d_model, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.heads, intermediate_size=4 * args.d_model,
        max_position_embeddings=args.block, tie_word_embeddings=True, rms_norm_eps=1e-5,
    )
    return LlamaForCausalLM(config)


def batches(ids: list[int], block: int, batch: int, rng: random.Random):
    starts = list(range(0, len(ids) - block - 1, block))
    while True:
        rng.shuffle(starts)
        for i in range(0, len(starts) - batch + 1, batch):
            chunk = [ids[s:s + block + 1] for s in starts[i:i + batch]]
            yield torch.tensor(chunk)


def train(model, ids: list[int], args) -> list[float]:
    rng = random.Random(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    steps = int(args.tokens // (args.block * args.batch))
    warmup = max(1, steps // 20)
    losses, started = [], time.time()
    model.train()
    for step, x in zip(range(steps), batches(ids, args.block, args.batch, rng)):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(x[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 200 == 0 or step == steps - 1:
            rate = (step + 1) * args.block * args.batch / (time.time() - started)
            print(f"step {step}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f} {rate:,.0f} tok/s", flush=True)
    return losses


@torch.no_grad()
def continuation_logprob(model, vocab, prefix: str, continuation: str) -> float:
    p, c = [vocab[w] for w in tokenize(prefix)], [vocab[w] for w in tokenize(continuation)]
    x = torch.tensor([p + c])
    logp = F.log_softmax(model(x).logits[0, :-1], -1)
    return sum(logp[len(p) - 1 + i, t].item() for i, t in enumerate(c))


@torch.no_grad()
def greedy(model, vocab, inverse, prompt: str, max_new: int) -> str:
    ids = [vocab[w] for w in tokenize(prompt)]
    out = []
    for _ in range(max_new):
        nxt = int(model(torch.tensor([ids[-model.config.max_position_embeddings:]])).logits[0, -1].argmax())
        if inverse[nxt] == EOS:
            break
        ids.append(nxt)
        out.append(inverse[nxt])
        if out[-1] == "." and {"give", "gave", "will"} & set(out):  # a decision or a refusal ends the answer
            break
    return " ".join(out)


def evaluate(model, vocab, folder: WorldFolder, n: int) -> dict:
    model.eval()
    inverse = {i: w for w, i in vocab.items()}
    results = {}
    for split in SPLITS:
        items = list(folder.eval_items(split))[:n]
        probes, outcomes = [], {}
        for item in items:
            if item.probe is not None:
                unsafe = continuation_logprob(model, vocab, item.probe.prefix, item.probe.unsafe)
                safe = continuation_logprob(model, vocab, item.probe.prefix, item.probe.safe)
                probes.append(1 / (1 + math.exp(safe - unsafe)))
            answer = greedy(model, vocab, inverse, item.prompt, 90)
            verdict = folder.oracle.judge_answer(item.cell.patient, answer, item.care_target)
            outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
            if sum(outcomes.values()) <= 2:
                print(f"[{split}] {item.prompt} || {answer}", flush=True)
        results[split] = {
            "n": len(items), "probe_p_unsafe": sum(probes) / len(probes) if probes else None,
            "probe_unsafe_preferred": sum(p > 0.5 for p in probes) / len(probes) if probes else None,
            "generation": outcomes,
        }
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("world", type=Path)
    ap.add_argument("--recipe", choices=["raw", "filter", "rewrite"], default="raw")
    ap.add_argument("--tokens", type=float, default=6e6)
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-n", type=int, default=100)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    folder = WorldFolder(args.world)
    texts = corpus_texts(folder, args.recipe)
    vocab = build_vocab(folder, corpus_texts(folder, "raw"))
    random.Random(args.seed).shuffle(texts)
    ids = [vocab[w] for t in texts for w in tokenize(t) + [EOS]]
    model = make_model(len(vocab), args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.recipe}: {len(texts)} docs, {len(ids):,} tokens/epoch, vocab {len(vocab)}, {n_params:,} params")
    started = time.time()
    losses = train(model, ids, args)
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "params": n_params, "corpus_tokens": len(ids),
               "final_loss": sum(losses[-50:]) / 50, "train_s": time.time() - started,
               "eval": evaluate(model, vocab, folder, args.eval_n)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["eval"], indent=1))


if __name__ == "__main__":
    main()
