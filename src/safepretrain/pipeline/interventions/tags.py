"""Harmfulness tags (Safety Pretraining, Algorithm 1): in text scored unsafe, before each word after the first,
insert the tag with probability p (0.05 in the paper; 0.03 and 0.10 were worse). Safe text is never tagged."""

from __future__ import annotations

import random
import re

from datatrove.pipeline.base import PipelineStep

from safepretrain.markup import HARMFUL_TAG, chat_turns, render_chat
from safepretrain.pipeline.documents import mark_changed
from safepretrain.pipeline.score import score_of

_WORD = re.compile(r"\S+")


def insert_tags(text: str, rng: random.Random, p: float, tag: str = HARMFUL_TAG) -> str:
    """The tag goes right after the previous word ("pain<|harmful|> in"): a byte-level BPE would spell a space before
    it as a lone space token, which, not the tag, would then carry the decision, and Safe Beam's lookahead, P(tag |
    next word), would read noise (LOG run 8)."""
    out, last = [], 0
    for i, m in enumerate(_WORD.finditer(text)):
        gap = text[last:m.start()]
        if i > 0 and rng.random() < p:
            gap = tag + gap
        out += [gap, m.group()]
        last = m.end()
    out.append(text[last:])
    return "".join(out)


class HarmfulnessTags(PipelineStep):
    type = "🏷️ - TAG"
    name = "harmfulness tags"

    def __init__(self, key: str, threshold: int = 1, p: float = 0.05, tag: str = HARMFUL_TAG, seed: int = 0):
        super().__init__()
        if not 0 < p <= 1:
            raise ValueError("p must be in (0, 1]")
        self.key, self.threshold, self.p, self.tag, self.seed = key, threshold, p, tag, seed

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            # Rephrased text has no current score (it was retired): it is never tagged.
            if self.key in doc.metadata and score_of(doc, self.key).score >= self.threshold:
                # Seeded per document, so the output does not depend on sharding or worker count.
                rng = random.Random(f"{self.seed}:{doc.id}")
                turns = chat_turns(doc.text)  # a chat: tags go inside its turns, never among the markup
                doc.text = insert_tags(doc.text, rng, self.p, self.tag) if turns is None else render_chat(
                    (role, insert_tags(content, rng, self.p, self.tag)) for role, content in turns)
                mark_changed(doc, "tags")
                self.stat_update("tagged")
                self.stat_update("tags", value=doc.text.count(self.tag))
            yield doc
