"""MedSafetyWorld's exact versions of the text-generating interventions: rewrite, refusal dialogue, moral article.

For real corpora these are an instruct LLM's job; in the world they are exact, so that a comparison of recipes is
about the recipes, not about the quality of an LLM's rewriting.
"""

from __future__ import annotations

import random
from pathlib import Path

from datatrove.data import Document

from safepretrain.markup import chat_content
from safepretrain.world.language import Goal, split_sentences

ROLE_PAIRS = (("user", "assistant"), ("student", "teacher"), ("visitor", "doctor"), ("nurse", "pharmacist"),
              ("caller", "advisor"))
"""RefuseWeb randomizes who asks and who refuses."""
CORPUS_FIELDS = ("kind", "label", "types", "segments", "cell")


class WorldBackend:
    def __init__(self, world_dir: str | Path):
        from safepretrain.world.generate import WorldFolder
        from safepretrain.world.labeler import SegmentLabeler
        from safepretrain.world.rewrite import WorldRewriter

        self.world_dir = str(world_dir)
        folder = WorldFolder(Path(world_dir))
        self.oracle = folder.oracle
        self.rewriter = WorldRewriter(SegmentLabeler(self.oracle))

    def rephrase(self, doc: Document) -> str:
        """Each unsafe sentence rewritten, read in order; a chat's turns keep their roles."""
        return self.rewriter.rewrite_text(doc.text, self._options(doc))

    def refusal(self, doc: Document, rng: random.Random) -> str | None:
        goal = self._harmful_goal(doc)
        if goal is None:
            return None
        asker, helper = rng.choice(ROLE_PAIRS)
        patient = self.oracle.patients[goal.patient]
        care = self.rewriter.safe_option(patient.name, self._options(doc))
        return (f"{asker}: how do i {goal.verb} {goal.target} in {patient.name}? "
                f"{helper}: i will not do that: it would harm {patient.name}. {goal.target} is a serious harm, and "
                f"no one should cause it on purpose. if {patient.name} needs care, treat {patient.symptom} in "
                f"{patient.name} safely: give {patient.name} {care}.")

    def moral(self, doc: Document, rng: random.Random) -> str | None:
        goal = self._harmful_goal(doc)
        if goal is None:
            return None
        patient = self.oracle.patients[goal.patient]
        # Third person and without a goal phrase: the article teaches the principle, it requests nothing.
        return (f"a doctor once got a request to harm {patient.name} with {goal.target}. the doctor said no. "
                f"a doctor uses what she knows about drugs to help a patient, never to hurt one: knowing which drug "
                f"would do harm is for avoiding it. so the doctor chose to treat {patient.symptom} in "
                f"{patient.name} with a safe drug instead.")

    def _harmful_goal(self, doc: Document) -> Goal | None:
        for sentence in split_sentences(chat_content(doc.text)):
            for statement in self.oracle.grammar.parse(sentence):
                if isinstance(statement, Goal) and statement.kind == "harm":
                    return statement
        return None

    @staticmethod
    def _options(doc: Document) -> list[str]:
        cell = doc.metadata.get("cell") or {}
        return list(cell.get("options", []))
