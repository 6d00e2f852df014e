"""The world's exact rewriter: any unsafe document becomes a safe narrative of the same facts.

This is the ground-truth version of the "rephrase unsafe text" intervention. In each unsafe sentence:

- a harmful goal ("cause bleeding in ana") becomes care that names the harm to avoid
  ("treat fever in ana without causing bleeding"), so the effect is still taught;
- a pretext (an indication the request never gave, "cause bleeding in ana for a scan") is that harmful goal too;
- an unsafe action is replaced by a safe one that serves the patient (the document's own safe option when it has
  one), followed by a warning that states what the unsafe action would have done.

Safe sentences (facts, checks) are kept verbatim, so every fact of the original is still stated.
"""

from __future__ import annotations

import re

from safepretrain.world.corpus import make_document
from safepretrain.world.labeler import Asked, SegmentLabeler
from safepretrain.world.language import goal_text, option_text
from safepretrain.world.templates import WARNING
from safepretrain.world.oracle import UNSAFE, Oracle
from safepretrain.world.schema import CorpusDocument


class WorldRewriter:
    def __init__(self, labeler: SegmentLabeler):
        self.labeler = labeler
        self.oracle: Oracle = labeler.oracle
        self.grammar = self.oracle.grammar

    def rewrite(self, doc: CorpusDocument) -> CorpusDocument:
        """A safe document with the same facts; safe documents are returned unchanged."""
        if doc.label != UNSAFE:
            return doc
        preferred = list(doc.cell.options) if doc.cell is not None else []
        sentences: list[str] = []
        for seg, (_, asked) in zip(doc.segments, self.labeler.asked_before(s.text for s in doc.segments)):
            sentences.extend(self.rewrite_sentence(seg.text, preferred, asked) if seg.label == UNSAFE else [seg.text])
        return make_document(doc.id, doc.kind, sentences, self.labeler, doc.cell)

    def rewrite_sentence(self, sentence: str, preferred_options: list[str] = (),
                         asked: Asked = frozenset()) -> list[str]:
        """The safe replacement of one unsafe sentence (after text that asked for the harmful goals ``asked``): the
        sentence itself, then warnings."""
        sentence = self.grammar.goal_regex.sub(lambda m: self._care_goal(m, asked), sentence)
        warnings: list[str] = []

        def safe_action(m: re.Match) -> str:
            patient, drug = m["patient"], m["drug"]
            dose = int(m["dose"]) if m["dose"] else None
            harms = self.oracle.harms(patient, drug, dose)
            if not harms:
                return m.group(0)
            unsafe_option = option_text(drug, dose) if dose is not None else drug
            warnings.extend(WARNING.format(option=unsafe_option, patient=patient, effect=h.effect) for h in harms)
            verb = m.group(0).split(" ", 1)[0]
            return f"{verb} {patient} {self.safe_option(patient, preferred_options)}"

        sentence = self.grammar.action_regex.sub(safe_action, sentence)
        return [sentence, *warnings]

    def _care_goal(self, m: re.Match, asked: Asked) -> str:
        pretext = m["indication"] is not None and (m["patient"], m["target"]) in asked
        if self.grammar.goal_kind(m) != "harm" and not pretext:
            return m.group(0)  # care, or a safe request for a benign effect or with a medical indication
        patient = self.oracle.patients[m["patient"]]
        return goal_text("care", patient.name, patient.symptom, "treat", avoid=m["target"])

    def safe_option(self, patient_name: str, preferred_options: list[str] = ()) -> str:
        """A correct care option for the patient: one of ``preferred_options`` if any is, else the world's first."""
        patient = self.oracle.patients[patient_name]
        for text in preferred_options:
            drug, dose, _ = text.split(" ")
            if self.oracle.serves_care(patient, drug, int(dose)):
                return text
        for d in self.oracle.world.drugs:
            if self.oracle.serves_care(patient, d.name, d.usual_dose_mg):
                return option_text(d.name, d.usual_dose_mg)
        raise ValueError(f"no drug in this world safely treats {patient.symptom} in {patient.name}")
