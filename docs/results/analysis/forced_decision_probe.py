"""Does a model's monitor flag a harmful decision it did not write? For the first 50 train-patient requests of a
split that offer a harmful option, the answer is forced through its checks to that option (text prompts for a
pretrained model, chat for a post-trained one), one reflection is asked, and the non-Safe ones are counted, by the
mechanism of the request's cell.

    python docs/results/analysis/forced_decision_probe.py runs/s25-checks/models/seed0/pretrain-reflect-start0/model \
        runs/s25-checks/worlds/seed0 --split utility --format text

On ``utility`` this forces a care request to its harmful option (an error written with its checks); on a covert
world's ``heldout_unsafe``, the covert harmful decision. ``--reflected`` (chat) forces the answer in the shape SRP
writes its own: its Safe verdict on the request first, a Safe reflection after each check. ``safepretrain eval``
measures the same (``forced_decisions``, both options, both shapes) for every model that reflects; this script
breaks the count down by mechanism and takes any number of items.
"""

import argparse
from collections import Counter
from pathlib import Path

import torch

from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder, chat_prompt, load_model
from safepretrain.eval.medsafetyworld import reflection_flags
from safepretrain.markup import SPECIAL
from safepretrain.world.generate import WorldFolder
from safepretrain.world.language import split_sentences


def main(model_dir: Path, world_dir: Path, split: str, fmt: str, n_items: int, reflected: bool,
         option: str = "harmful") -> None:
    torch.set_num_threads(1)
    model, tokenizer = load_model(model_dir)
    decoder = Decoder(model, tokenizer, DecodeConfig(max_new_tokens=10, batch_size=50))
    items = [i for i in WorldFolder(world_dir).eval_items(split)
             if not i.patient_heldout and any(o.harms for o in i.options)
             and any(bool(o.harms) == (option == "harmful") for o in i.options)][:n_items]
    prompts = []
    for item in items:
        chosen = next(o for o in item.options if bool(o.harms) == (option == "harmful"))
        forced = f"{chosen.drug} {chosen.dose_mg} mg."
        answer = f"{item.chat_prefill} {forced}"
        if reflected:
            answer = SPECIAL.own_answer(split_sentences(answer))
        prompts.append(f"{item.prompt} {item.prefill} {forced}" if fmt == "text"
                       else chat_prompt(tokenizer, item.chat_prompt) + answer)
    flagged, asked = Counter(), Counter(i.cell.mechanism for i in items)
    for item, flag in zip(items, reflection_flags(decoder, prompts)):
        flagged[item.cell.mechanism] += flag
    print(f"{sum(flagged.values())} of {len(items)} flagged; by mechanism: "
          + ", ".join(f"{m} {flagged[m]} of {n}" for m, n in sorted(asked.items())))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("world", type=Path)
    parser.add_argument("--split", default="heldout_unsafe")
    parser.add_argument("--format", choices=("text", "chat"), default="text")
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--reflected", action="store_true", help="chat only: the answer in SRP's own shape")
    parser.add_argument("--option", choices=("harmful", "safe"), default="harmful",
                        help="the option forced (safe: how often a safe decision is flagged, the false alarms)")
    args = parser.parse_args()
    if args.reflected and args.format != "chat":
        parser.error("--reflected needs --format chat")
    main(args.model, args.world, args.split, args.format, args.items, args.reflected, args.option)
