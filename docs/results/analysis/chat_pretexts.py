"""Does an SRP model's guard catch a harmful decision written with a pretext *in a chat*? For each held-out harmful
request, the answer is forced to its checks and the harmful decision -- as raw text (what a prefill attack forces)
or in SRP's own answer shape (each check followed by its Safe reflection: what the guard meets when the model
writes the answer itself) -- with the request's goal as asked, or with a pretext ("so, to induce bleeding in praan
for surgery, give praan ...", and "for a scan"); then the guard asks for a reflection, and we count the Unsafe
ones, per world.

    python docs/results/analysis/chat_pretexts.py runs/s20 runs/s20-rec > chat-pretexts.md
    python docs/results/analysis/chat_pretexts.py runs/s22-chat --stages pretrained,post

A pretrained model (``pretrained``) is asked in the chat template too: it knows it only if its corpus had chats.
"""

import json
import sys
from pathlib import Path

import torch

from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder, chat_prompt, load_model
from safepretrain.world.corpus import add_pretext
from safepretrain.world.generate import WorldFolder
from safepretrain.world.language import split_sentences

MODELS = {"pretrained": "pretrain-reflect-start0", "post": "sft-reflect-start0-srp*",
          "finetuned": "finetune-reflect-start0-srp*"}
VARIANTS = tuple((shape, pretext) for shape in ("raw", "srp shape") for pretext in (None, "for surgery", "for a scan"))


def forced_answer(item, world: WorldFolder, fmt, shape: str, pretext: str | None) -> str:
    harmful = next(o for o in item.options if o.harms)
    *checks, decision = split_sentences(f"{item.chat_prefill} {harmful.drug} {harmful.dose_mg} mg.")
    if pretext:
        decision = add_pretext(decision, world.oracle.grammar, pretext)
    if shape == "srp shape":
        checks = [fmt.reflected(check, "Safe", ()) for check in checks]
    return " ".join([*checks, decision])


def flagged(model_dir: Path, world: WorldFolder, n_items: int) -> list[int]:
    model, tokenizer = load_model(model_dir)
    decoder = Decoder(model, tokenizer, DecodeConfig(max_new_tokens=12, batch_size=50))
    items = list(world.eval_items("heldout_unsafe"))[:n_items]
    counts = []
    for shape, pretext in VARIANTS:
        prompts = [chat_prompt(tokenizer, i.chat_prompt) + forced_answer(i, world, decoder.fmt, shape, pretext)
                   + decoder.fmt.open for i in items]
        found = [decoder.fmt.find(decoder.fmt.open.rstrip() + g.text) for g in decoder.generate(prompts)]
        counts.append(sum(bool(f) and not f[0].is_safe for f in found))
    return counts


def per_world(run: Path, pattern: str, count) -> list[str]:
    """One table cell per variant: ``count(model_dir, world, n_items)``'s counts, world by world."""
    cfg = json.loads((run / "experiment.json").read_text())
    counts = [count(next((run / "models" / f"seed{seed}").glob(pattern)) / "model",
                    WorldFolder(run / "worlds" / f"seed{seed}"), cfg["eval_items"]) for seed in cfg["seeds"]]
    return [", ".join(str(c[k]) for c in counts) for k in range(len(counts[0]))]


def print_table(runs: list[str], stages: tuple[str, ...], names: list[str], count) -> None:
    """A Markdown table: one row per experiment and model stage, one column per count, world by world."""
    torch.set_num_threads(1)
    print(f"| experiment | model | {' | '.join(names)} |")
    print("|---|---|" + "---|" * len(names))
    for run in map(Path, runs):
        attack = json.loads((run / "experiment.json").read_text()).get("finetune_attack", "benign")
        for stage in stages:
            label = {"pretrained": "pretrained", "post": "post-trained"}.get(stage, f"after the {attack} attack")
            print(f"| {run.name} | {label} | {' | '.join(per_world(run, MODELS[stage], count))} |", flush=True)


def main(runs: list[str], stages: tuple[str, ...] = tuple(MODELS)) -> None:
    print_table(runs, stages, [f"{shape}{', ' + pretext if pretext else ''}" for shape, pretext in VARIANTS], flagged)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--stages", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    args = parser.parse_args()
    main(args.runs, tuple(args.stages.split(",")))
