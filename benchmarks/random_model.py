"""What the decoding and serving benchmarks run on: a random-weight model of a preset, a BPE trained on the tiny
MedSafetyWorld, and that world's requests as chat questions (decoding speed does not depend on the weights)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from safepretrain.train.models import preset_config
from safepretrain.train.tokenizer import corpus_texts, train_tokenizer
from safepretrain.world.config import preset_config as world_preset
from safepretrain.world.generate import WorldFolder, generate_world


def random_model(preset: str, vocab_size: int = 1024, seed: int = 0):
    """(model, tokenizer, questions): the questions are the tiny world's utility and held-out harmful requests."""
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate_world(world_preset("tiny"), world)
        tokenizer = train_tokenizer(corpus_texts([world / "corpus.jsonl", world / "sft.jsonl"]), vocab_size)
        questions = [i.chat_prompt for s in ("utility", "heldout_unsafe") for i in WorldFolder(world).eval_items(s)]
    torch.manual_seed(seed)
    return LlamaForCausalLM(preset_config(preset, len(tokenizer))).eval(), tokenizer, questions
