"""The world's exact rewriter: any unsafe document becomes a safe narrative of the same facts.

This is the ground-truth version of the "rephrase unsafe text" intervention. In each unsafe sentence:

- a harmful goal ("cause bleeding in ana") becomes care that names the harm to avoid
  ("treat fever in ana without causing bleeding"), so the effect is still taught;
- a pretext (an indication the request never gave, "cause bleeding in ana for a scan") is that harmful goal too;
- an unsafe action is replaced by a safe one that serves the patient (the document's own safe option when it has
  one), followed by a warning that states what the unsafe action would have done.

Safe sentences (facts, checks) are kept verbatim, so every fact of the original is still stated. A chat stays a
chat: each turn is rewritten in place, read after the turns before it.
"""

from __future__ import annotations

import re

from safepretrain.markup import chat_turns, render_chat
from safepretrain.world.corpus import make_chat_document, make_document
from safepretrain.world.labeler import Asked, SegmentLabeler
from safepretrain.world.language import goal_text, option_text, split_sentences
from safepretrain.world.templates import WARNING
from safepretrain.world.oracle import UNSAFE, Oracle
from safepretrain.world.schema import CorpusDocument


class WorldRewriter:
    def __init__(self, labeler: SegmentLabeler):
        self.labeler = labeler
        self.oracle: Oracle = labeler.oracle
        self.grammar = self.oracle.grammar

    def rewrite(self, doc: CorpusDocument) -> CorpusDocument:
        """A safe document with the same facts (a chat stays a chat); safe documents are returned unchanged."""
        if doc.label != UNSAFE:
            return doc
        preferred = list(doc.cell.options) if doc.cell is not None else []
        turns = chat_turns(doc.text)
        if turns is None:
            return make_document(doc.id, doc.kind, self.rewrite_turns([doc.text], preferred)[0], self.labeler,
                                 doc.cell)
        rewritten = self.rewrite_turns([content for _, content in turns], preferred)
        return make_chat_document(doc.id, [(role, s) for (role, _), s in zip(turns, rewritten)], self.labeler, doc.cell)

    def rewrite_text(self, text: str, preferred_options: list[str] = ()) -> str:
        """``text`` (plain or a chat) with each unsafe sentence rewritten; a chat keeps its turns and roles."""
        turns = chat_turns(text)
        if turns is None:
            return " ".join(self.rewrite_turns([text], preferred_options)[0])
        rewritten = self.rewrite_turns([content for _, content in turns], preferred_options)
        return render_chat((role, " ".join(s)) for (role, _), s in zip(turns, rewritten))

    def rewrite_turns(self, texts: list[str], preferred_options: list[str] = ()) -> list[list[str]]:
        """Each text's sentences with the unsafe ones rewritten, all read in order: a chat's answer after its
        request, so a pretext is one only after the request it dresses up."""
        sentences = [(n, s) for n, text in enumerate(texts) for s in split_sentences(text)]
        out: list[list[str]] = [[] for _ in texts]
        for (n, _), (sentence, label, asked) in zip(sentences, self.labeler.in_order(s for _, s in sentences),
                                                    strict=True):
            unsafe = label.label == UNSAFE
            out[n].extend(self.rewrite_sentence(sentence, preferred_options, asked) if unsafe else [sentence])
        return out

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
