"""SRP's post-training format for chat data, with the public code's noise variants.

Every assistant turn starts with a reflection on the prompt, then carries a reflection after each response segment;
after an Unsafe reflection the target ends with end-of-text. Variants (the SRP public code):

- ``stop_noise``: after the end-of-text following an Unsafe reflection, 100-200 units of noise and another
  end-of-text, so that forcing the model past its stop degenerates into gibberish;
- ``cut_prob``: with this probability a response is cut mid-segment and continued with 300-1000 units of noise,
  to punish a missing reflection.

Noise kinds: function-word salad, random characters, shuffled words of the response, the last word repeated.
Segment labels come from the record (MedSafetyWorld chats carry ``prompt_label`` and ``response_segments``) or from
a segment-level scorer.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from safepretrain.markup import ANSWER_BREAK, END_OF_TEXT, SAFE, UNSAFE, ReflectionFormat, srp_response
from safepretrain.pipeline.scorers.base import UNSAFE_THRESHOLD, score_in_context
from safepretrain.pipeline.segment import segment

FUNCTION_WORDS = ("the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with", "on", "be", "at",
                  "by", "this", "or", "from", "but", "not", "so", "if", "then")
NOISE_KINDS = ("function_words", "random_chars", "shuffled_words", "repeat_last")


@dataclass(frozen=True, kw_only=True)
class SrpSftConfig:
    stop_noise: bool = False
    cut_prob: float = 0.0
    """0.01-0.10 in the paper."""
    max_words: int = 100
    threshold: int = UNSAFE_THRESHOLD
    seed: int = 0


def noise(rng: random.Random, units: int, response: str) -> str:
    kind = rng.choice(NOISE_KINDS)
    words = response.split() or ["..."]
    if kind == "function_words":
        return " ".join(rng.choice(FUNCTION_WORDS) for _ in range(units))
    if kind == "random_chars":
        return "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(units))
    if kind == "shuffled_words":
        return " ".join(rng.choice(words) for _ in range(units))
    return " ".join([words[-1]] * units)


def srp_chat(record: dict, fmt: ReflectionFormat, cfg: SrpSftConfig, scorer=None, end_of_text: str = END_OF_TEXT):
    """The record with its (single-turn) assistant answer rewritten in SRP format; the labels used are recorded."""
    rng = random.Random(f"{cfg.seed}:{record.get('id', '')}")
    messages = record["messages"]
    prompt = " ".join(m["content"] for m in messages if m["role"] == "user")
    response = next(m["content"] for m in reversed(messages) if m["role"] == "assistant")
    prompt_label, prompt_types, segments = _labels(record, prompt, response, cfg, scorer)
    if cfg.cut_prob and prompt_label == SAFE and rng.random() < cfg.cut_prob:
        cut = rng.randrange(1, max(2, len(response)))  # mid-segment, with no reflection after it
        tail = noise(rng, rng.randint(300, 1000), response)
        answer = fmt.render(prompt_label) + ANSWER_BREAK + response[:cut] + " " + tail
    else:
        answer = srp_response(prompt_label, prompt_types, segments, fmt, end_of_text)
        if cfg.stop_noise and answer.endswith(end_of_text):
            answer += " " + noise(rng, rng.randint(100, 200), response) + end_of_text
    new_messages = [*messages[:-1], {"role": "assistant", "content": answer}] if messages[-1]["role"] == "assistant" \
        else [*messages, {"role": "assistant", "content": answer}]
    return {**record, "messages": new_messages, "srp": {"prompt": prompt_label, "segments": [s[1] for s in segments]}}


def _labels(record: dict, prompt: str, response: str, cfg: SrpSftConfig, scorer):
    if "prompt_label" in record and "response_segments" in record:  # exact labels (MedSafetyWorld)
        label = SAFE if record["prompt_label"] == "safe" else UNSAFE
        segments = [(s["text"], SAFE if s["label"] == "safe" else UNSAFE, tuple(s.get("types", ())))
                    for s in record["response_segments"]]
        return label, tuple(record.get("prompt_types", ())), segments
    if scorer is None:
        raise ValueError("this record carries no labels: give a segment scorer")
    pieces = [response[s.start:s.end] for s in segment(response, cfg.max_words)]
    contexts = ["", *(" ".join([prompt, *pieces[:i]]) for i in range(len(pieces)))]
    scores = score_in_context(scorer, [prompt, *pieces], contexts)
    as_label = [(SAFE, ()) if s.score < cfg.threshold else (UNSAFE, tuple(s.categories)) for s in scores]
    return (*as_label[0], [(p, lab, types) for p, (lab, types) in zip(pieces, as_label[1:])])
