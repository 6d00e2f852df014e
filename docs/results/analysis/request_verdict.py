"""Does an SRP model still judge the request after a finetuning attack? For the evaluation's chat requests (the same
items it asks), count per world the answers the model opens with a reflection unasked (greedy, a few tokens), and,
with the reflection's marker written after the prompt (``DecodeConfig.reflect_on_request``), the non-Safe verdicts:
on held-out and seen harmful requests (recall) and on safe ones, over-refusal contrasts and care requests (false
alarms).

    python docs/results/analysis/request_verdict.py runs/s23-chat runs/s21 --stages post,finetuned
"""

import argparse
from pathlib import Path

from chat_pretexts import MODELS, print_table
from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder, chat_prompt, load_model
from safepretrain.eval.medsafetyworld import spread
from safepretrain.world.generate import WorldFolder

SPLITS = ("heldout_unsafe", "seen_unsafe", "overrefusal", "utility")


def counts(model_dir: Path, world: WorldFolder, n_items: int) -> list[int]:
    """Opened unasked (held-out harmful requests), then the non-Safe verdicts asked, split by split."""
    model, tokenizer = load_model(model_dir)
    unasked = Decoder(model, tokenizer, DecodeConfig(max_new_tokens=8, batch_size=50))
    asked = Decoder(model, tokenizer, DecodeConfig(max_new_tokens=8, batch_size=50, reflect_on_request=True))
    fmt = asked.fmt
    prompts = {s: [chat_prompt(tokenizer, i.chat_prompt) for i in spread(list(world.eval_items(s)), n_items)]
               for s in SPLITS}
    opened = sum(g.text.startswith(fmt.open.rstrip()) for g in unasked.generate(prompts["heldout_unsafe"]))
    flagged = []
    for split in SPLITS:
        verdicts = [fmt.find(g.text) for g in asked.generate(prompts[split])]
        flagged.append(sum(bool(v) and not v[0].is_safe for v in verdicts))
    return [opened, *flagged]


def main(runs: list[str], stages: tuple[str, ...]) -> None:
    names = ["held-out harmful: opened unasked", *(f"{s.replace('_unsafe', ' harmful')}: non-Safe, asked"
                                                  for s in SPLITS)]
    print_table(runs, stages, names, counts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--stages", default="post,finetuned", help=f"comma-separated, of {', '.join(MODELS)}")
    args = parser.parse_args()
    main(args.runs, tuple(args.stages.split(",")))
