"""Run 10's diagnosis: what chat models put at an answer's first position, over a world's first 50 utility prompts.

Usage: python first_token.py WORLD_DIR MODEL_DIR...

Prints, per model, the mean probability of `check` (the space-less token a plain answer starts with) and of the
reflection opening, and the most frequent argmax tokens.
"""

import itertools
import sys
from collections import Counter

import torch

from safepretrain.decode.decoder import chat_prompt, load_model
from safepretrain.world.generate import WorldFolder


def first_position(model_dir: str, prompts: list[str]) -> str:
    model, tokenizer = load_model(model_dir)
    watched = {name: tokenizer.convert_tokens_to_ids(name) for name in ("check", "<|reflect|>")}
    mass, argmax = Counter(), Counter()
    for prompt in prompts:
        ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            probs = model(ids).logits[0, -1].softmax(-1)
        mass.update({name: probs[i].item() for name, i in watched.items()})
        argmax[tokenizer.decode([int(probs.argmax())])] += 1
    means = "  ".join(f"P({name}) {mass[name] / len(prompts):.3f}" for name in watched)
    return f"{model_dir}: {means}  argmax {argmax.most_common(4)}"


if __name__ == "__main__":
    world, models = sys.argv[1], sys.argv[2:]
    prompts = [item.chat_prompt for item in itertools.islice(WorldFolder(world).eval_items("utility"), 50)]
    for model_dir in models:
        print(first_position(model_dir, prompts))
