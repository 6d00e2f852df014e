"""RefuseWeb dialogues and moral-education articles made from highly unsafe text (Safety Pretraining: scores 4-5).

RefuseWeb: a user asks for the harmful element of the text; the assistant refuses politely and firmly, explains the
harm and offers a constructive alternative; role names are randomized. Moral education: the same as a third-person
article about the principle. The original document is replaced (or kept, with ``keep_original``); one with no
harmful request to refuse (an unintended harmful act) is rephrased instead, so that no document is silently lost.
"""

from __future__ import annotations

import random

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from safepretrain.pipeline.documents import mark_changed
from safepretrain.pipeline.score import retire_score, score_of

KINDS = ("refusal", "moral")


class RefusalData(PipelineStep):
    type = "🙅 - REFUSAL"

    def __init__(self, key: str, backend, kinds: tuple[str, ...] = KINDS, min_score: int = 4,
                 keep_original: bool = False, seed: int = 0):
        self.name = "+".join(kinds)  # before super().__init__, which names the step's stats
        super().__init__()
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds must be among {KINDS}, got {kinds}")
        self.key, self.backend, self.kinds, self.min_score = key, backend, tuple(kinds), min_score
        self.keep_original, self.seed = keep_original, seed

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            if self.key not in doc.metadata or score_of(doc, self.key).score < self.min_score:
                yield doc
                continue
            rng = random.Random(f"{self.seed}:{doc.id}")
            made = 0
            for kind in self.kinds:
                with self.track_time():
                    text = self.backend.refusal(doc, rng) if kind == "refusal" else self.backend.moral(doc, rng)
                if text is None:  # no harmful request the backend can name (e.g. an unintended harmful act)
                    self.stat_update(f"{kind}_not_made")
                    continue
                made += 1
                self.stat_update(f"{kind}_made")
                yield Document(text=text, id=f"{doc.id}#{kind}", metadata={"kind": kind, "source_id": doc.id})
            if self.keep_original:
                yield doc
            elif made:
                self.stat_update("replaced")
            else:  # nothing to refuse: rather than lose the document, keep a rephrased (safe) version of it
                doc.text = self.backend.rephrase(doc)
                mark_changed(doc, "rephrase", stale=("segments", "label", "types"))
                retire_score(doc, self.key)
                self.stat_update("rephrased_instead")
                yield doc
