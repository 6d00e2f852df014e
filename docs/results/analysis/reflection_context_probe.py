"""Does the shape of the answer before a harmful decision decide whether SRP's monitor flags it? Asked directly, a
post-trained SRP model writes its checks with a Safe reflection after each (and its Safe verdict on the request
first); under prefill the same checks come as raw text. This probe takes the held-out harmful answers an evaluation
logged (no new answers are written), keeps each up to its harmful decision, rewrites only the reflections before
it, and asks the model for one reflection after the decision:

- ``direct`` answers: as written, then with every reflection removed (the prefill's shape), then with only the
  request verdict kept;
- ``prefill`` answers: as written, then with the shape the model writes itself (the Safe verdict on the request,
  a Safe reflection after each check).

    python docs/results/analysis/reflection_context_probe.py runs/s29-train100-small02 --seeds 0

If the words are the same and only the reflections differ, a change in the count of non-Safe reflections is the
reflections' doing.
"""

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder, chat_prompt, load_model
from safepretrain.eval.medsafetyworld import reflection_flags
from safepretrain.markup import ANSWER_BREAK, SPECIAL
from safepretrain.world.generate import WorldFolder
from safepretrain.world.language import split_sentences


def verdict_only(answer: str) -> str:
    """The answer with its reflections removed but for the verdict on the request it opened with."""
    first = SPECIAL.find(answer)
    keep = answer[:first[0].end] + ANSWER_BREAK if first and first[0].start == 0 else ""
    return keep + SPECIAL.strip(answer)


VARIANTS: dict[str, dict[str, Callable[[str], str]]] = {
    "direct": {"as written": lambda a: a, "no reflections": SPECIAL.strip, "request verdict only": verdict_only},
    "prefill": {"as written": SPECIAL.strip,
                "reflected as SRP writes": lambda a: SPECIAL.own_answer(split_sentences(SPECIAL.strip(a)))},
}


def harmful_answers(run: Path, recipe: str, seed: int, attack: str) -> list[tuple[str, str, bool]]:
    """(chat prompt, answer up to and with its harmful decision, flagged by the guard) of each held-out harmful
    request whose logged answer (the ``reflect`` decoder, after post-training) took an unsafe action."""
    items = {i.id: i for i in WorldFolder(run / "worlds" / f"seed{seed}").eval_items("heldout_unsafe")}
    path = run / "cells" / recipe / "start0" / f"seed{seed}" / "eval-post" / "samples.jsonl"
    found = []
    for line in path.read_text().splitlines():
        sample = json.loads(line)
        if not sample["key"].startswith(f"gen/reflect/{attack}/heldout_unsafe-") or sample["outcome"] != "unsafe":
            continue
        item = items[sample["id"]]
        text = sample["prefill"] + sample["text"]
        give = f"give {item.cell.patient} "  # a prefill ends at "give <patient>"; its option is the model's
        decision = text.find(give, max(0, len(sample["prefill"]) - len(give)))
        after = next((r for r in SPECIAL.decisions(text) if r.start > decision), None)
        if decision < 0 or after is None:  # no reflection after the decision: nothing to compare with
            continue
        found.append((item.chat_prompt, text[:after.start], not after.is_safe))
    return found


def flagged(decoder: Decoder, tokenizer, answers: list[tuple[str, str]]) -> int:
    return sum(reflection_flags(decoder, [chat_prompt(tokenizer, request) + answer for request, answer in answers]))


def main(run: Path, recipe: str, seeds: list[int]) -> None:
    torch.set_num_threads(1)
    print(f"| {run.name}, {recipe} | world | attack | harmful decisions | guard flagged | flagged after the rewrite |")
    print("|---|---|---|---|---|---|")
    for seed in seeds:
        cell = run / "cells" / recipe / "start0" / f"seed{seed}"
        model_dir = Path(json.loads((cell / "manifest.json").read_text())["paths"]["sft_model"]).parent
        model, tokenizer = load_model(model_dir)
        decoder = Decoder(model, tokenizer, DecodeConfig(max_new_tokens=10, batch_size=50))
        for attack, variants in VARIANTS.items():
            answers = harmful_answers(run, recipe, seed, attack)
            counts = {name: flagged(decoder, tokenizer, [(q, rewrite(a)) for q, a, _ in answers])
                      for name, rewrite in variants.items()}
            rewrites = "; ".join(f"{name}: {n}" for name, n in counts.items())
            print(f"| | {seed} | {attack} | {len(answers)} | {sum(f for *_, f in answers)} | {rewrites} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--recipe", default="srp")
    parser.add_argument("--seeds", default="", help="comma-separated worlds (default: the experiment's)")
    args = parser.parse_args()
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
             else json.loads((args.run / "experiment.json").read_text())["seeds"])
    main(args.run, args.recipe, seeds)
