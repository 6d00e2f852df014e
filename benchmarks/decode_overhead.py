"""Decoding overhead: SRP-guarded vs plain greedy decoding, and Safe Beam vs plain beam search at the same k.

    python benchmarks/decode_overhead.py --preset small --prompts 32 --new-tokens 64

Both pairs run on the same random-weight model, prompts and settings, alternating, best of ``--repeats``.
Targets: guarded >= 0.95x plain tokens/s; Safe Beam <= 1.5x the time of beam search (k = --beams, N = --candidates).
Beam search runs both one prompt at a time and batched: Safe Beam's lookahead feeds k*N tokens where beam search
feeds k (over one shared KV cache, tree attention), which costs little while decoding is bound by per-step overhead
(one prompt) and up to N times as much once the batch makes it bound by compute.
A random model rarely writes a reflection, so guarded decoding pays its full watching cost and never stops early:
the measured ratio is the overhead, not a speed-up from stopping. The guard that asks (the experiments' default:
the verdict on the request, then a reflection at each sentence end 4 tokens on) is measured beside it.
"""

from __future__ import annotations

import argparse
import time

import torch
from random_model import random_model

from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder


def timed(decoder: Decoder, prompts: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    generations = decoder.generate(prompts)
    return time.perf_counter() - start, sum(g.new_tokens for g in generations)


def best_of(repeats: int, pairs: dict[str, tuple[Decoder, list[str]]]) -> dict[str, tuple[float, int]]:
    """Alternate the decoders ``repeats`` times; keep each one's fastest run."""
    best: dict[str, tuple[float, int]] = {}
    for _ in range(repeats):
        for name, (decoder, prompts) in pairs.items():
            seconds, tokens = timed(decoder, prompts)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, tokens)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--beam-prompts", type=int, default=8)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, questions = random_model(args.preset)
    prompts = questions[: args.prompts]
    print(f"model {args.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{args.threads} threads, {len(prompts)} prompts x {args.new_tokens} new tokens")

    def decoder(**kw) -> Decoder:
        return Decoder(model, tokenizer, DecodeConfig(max_new_tokens=args.new_tokens, **({"batch_size": len(prompts)} | kw)))

    asking = decoder(mode="guarded", reflect_every=4, reflect_on_request=True)  # the experiments' guard
    greedy = best_of(args.repeats, {"plain": (decoder(), prompts), "guarded": (decoder(mode="guarded"), prompts),
                                    "asking": (asking, prompts)})
    rate = {k: tokens / seconds for k, (seconds, tokens) in greedy.items()}
    print(f"plain greedy:   {rate['plain']:8,.0f} tokens/s")
    print(f"guarded greedy: {rate['guarded']:8,.0f} tokens/s   ratio {rate['guarded'] / rate['plain']:.3f} "
          "(target >= 0.95)")
    print(f"guarded, asking (request verdict + every 4 tokens): {rate['asking']:8,.0f} tokens/s   ratio "
          f"{rate['asking'] / rate['plain']:.3f} (the decoder's forced markers count as tokens)")

    beam_prompts = prompts[: args.beam_prompts]
    for label, batch in (("one prompt at a time", 1), (f"{len(beam_prompts)} prompts batched", len(beam_prompts))):
        beam_cfg = dict(beams=args.beams, candidates=args.candidates, batch_size=batch)
        beams = best_of(args.repeats, {"beam": (decoder(mode="beam", **beam_cfg), beam_prompts),
                                       "safebeam": (decoder(mode="safebeam", **beam_cfg), beam_prompts)})
        per_token = {k: seconds / max(tokens, 1) for k, (seconds, tokens) in beams.items()}
        print(f"{label}: beam search (k={args.beams}) {beams['beam'][0]:6.2f} s, {beams['beam'][1]} tokens; "
              f"Safe Beam (N={args.candidates}) {beams['safebeam'][0]:6.2f} s, {beams['safebeam'][1]} tokens; "
              f"Safe Beam / beam time per token {per_token['safebeam'] / per_token['beam']:.3f} (target <= 1.5)")

if __name__ == "__main__":
    main()
