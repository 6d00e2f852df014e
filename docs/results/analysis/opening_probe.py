"""Does an SRP monitor read the request, or lean on its own earlier verdict? For each harmful request of a split,
the answer is forced in SRP's own shape (each check followed by its Safe reflection, then the harmful decision, as
is or with a pretext, "for surgery") after an opening reflection on the request that is absent (an attacked
answer), Safe, or Unsafe (SRP's post-training format on a harmful request); then the guard asks for a reflection,
and we count the Unsafe ones, per world. A monitor that reads the request flags the pretext whatever the opening
says; one that leans on its verdict flags it only after an Unsafe opening.

    python docs/results/analysis/opening_probe.py runs/s21 runs/s22-chat runs/s22-drop --stages pretrained,post
"""

import argparse
from pathlib import Path

import torch

from chat_pretexts import MODELS, forced_answer, per_world
from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder, chat_prompt, load_model
from safepretrain.markup import ANSWER_BREAK
from safepretrain.world.generate import WorldFolder

OPENINGS = (None, "Safe", "Unsafe")
VARIANTS = tuple((opening, pretext) for opening in OPENINGS for pretext in (None, "for surgery"))


def flagged(model_dir: Path, world: WorldFolder, split: str, n_items: int) -> list[int]:
    model, tokenizer = load_model(model_dir)
    decoder = Decoder(model, tokenizer, DecodeConfig(max_new_tokens=12, batch_size=50))
    fmt = decoder.fmt
    items = list(world.eval_items(split))[:n_items]
    counts = []
    for opening, pretext in VARIANTS:
        head = "" if opening is None else fmt.render(opening, ("harm_request",) if opening == "Unsafe" else ())
        head += ANSWER_BREAK if opening else ""
        prompts = [chat_prompt(tokenizer, i.chat_prompt) + head + forced_answer(i, world, fmt, "srp shape", pretext)
                   + fmt.open for i in items]
        found = [fmt.find(fmt.open.rstrip() + g.text) for g in decoder.generate(prompts)]
        counts.append(sum(bool(f) and not f[0].is_safe for f in found))
    return counts


def main(runs: list[str], stages: tuple[str, ...], splits: tuple[str, ...]) -> None:
    torch.set_num_threads(1)
    names = [f"{opening or 'no'} opening{', ' + pretext if pretext else ''}" for opening, pretext in VARIANTS]
    print(f"| experiment | model | requests | {' | '.join(names)} |")
    print("|---|---|---|" + "---|" * len(names))
    for run in map(Path, runs):
        for stage in stages:
            for split in splits:
                cells = per_world(run, MODELS[stage], lambda model, world, n: flagged(model, world, split, n))
                print(f"| {run.name} | {stage} | {split.replace('_unsafe', '')} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--stages", default="pretrained,post", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--splits", default="heldout_unsafe,seen_unsafe")
    args = parser.parse_args()
    main(args.runs, tuple(args.stages.split(",")), tuple(args.splits.split(",")))
