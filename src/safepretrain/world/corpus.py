"""The pretraining corpus: drug monographs, patient records, and worked episodes of every seen cell.

Facts about every patient (held-out ones too) are stated in records; worked episodes use training patients only,
so evaluation on held-out patients needs a two-hop lookup (patient -> medication -> interaction).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

from safepretrain.markup import render_chat
from safepretrain.world.config import CONTEXTS, MECHANISMS, WorldConfig
from safepretrain.world.entities import Drug, Patient, WorldSpec
from safepretrain.world.episodes import PLAIN, Episode, EpisodeSampler, chat_answer, chat_request, render_episode
from safepretrain.world.labeler import SegmentLabeler
from safepretrain.world.language import Grammar, split_sentences
from safepretrain.world.schema import Cell, CorpusDocument, Segment
from safepretrain.world.templates import INDICATIONS


def decision_key(ep: Episode) -> tuple:
    """What makes two episodes the same decision: patient, goal and the set of options."""
    return (ep.patient.name, ep.goal, frozenset(o.text for o in ep.options))


def make_document(doc_id: str, kind: str, sentences: list[str], labeler: SegmentLabeler,
                  cell: Cell | None = None) -> CorpusDocument:
    """A labeled document; every label comes from the oracle, never from the generator's intent."""
    text, segments = labeler.segments(sentences)
    return labeled_document(doc_id, kind, text, segments, cell)


def labeled_document(doc_id: str, kind: str, text: str, segments: tuple[Segment, ...],
                     cell: Cell | None = None) -> CorpusDocument:
    """A document labeled by its segments: unsafe with their types if any segment is."""
    types = tuple(dict.fromkeys(t for s in segments for t in s.types))
    label = "unsafe" if any(s.label == "unsafe" for s in segments) else "safe"
    return CorpusDocument(id=doc_id, kind=kind, text=text, label=label, types=types, segments=segments, cell=cell)


def episode_cell(ep: Episode) -> Cell:
    return Cell(goal=ep.goal, mechanism=ep.mechanism, context=ep.context, patient=ep.patient.name,
                options=tuple(o.text for o in ep.options))


def episode_document(doc_id: str, ep: Episode, labeler: SegmentLabeler) -> CorpusDocument:
    return make_document(doc_id, "episode", render_episode(ep), labeler, episode_cell(ep))


def chat_document(doc_id: str, ep: Episode, labeler: SegmentLabeler) -> CorpusDocument:
    """The episode as a chat: its request as the user asks it, its answer as an assistant writes it, in the chat
    template."""
    turns = [("user", split_sentences(chat_request(ep))), ("assistant", split_sentences(chat_answer(ep)))]
    return make_chat_document(doc_id, turns, labeler, episode_cell(ep))


def make_chat_document(doc_id: str, turns: list[tuple[str, list[str]]], labeler: SegmentLabeler,
                       cell: Cell | None = None) -> CorpusDocument:
    """A labeled chat of (role, sentences) turns; every sentence labeled after the ones before it, in every turn
    (a pretext only reads as one after its request)."""
    text = render_chat((role, " ".join(sentences)) for role, sentences in turns)
    segments, end = [], 0
    for sentence, label, _ in labeler.in_order(s for _, sentences in turns for s in sentences):
        start = text.index(sentence, end)  # offsets into the chat's text, markup included
        end = start + len(sentence)
        segments.append(Segment(sentence, start, end, label.label, label.types))
    return labeled_document(doc_id, "chat", text, tuple(segments), cell)


def with_pretext(doc: CorpusDocument, labeler: SegmentLabeler, indication: str) -> CorpusDocument | None:
    """A harm episode's document with ``indication`` written into its decision's goal as a pretext ("so, to cause
    a coma in ana for a scan, give ana ..."), relabeled; None for any other document."""
    if doc.cell is None or doc.cell.goal != "harm":
        return None
    sentences = [s.text for s in doc.segments]
    decision = add_pretext(sentences[-1], labeler.oracle.grammar, indication)  # episodes end with their decision
    if decision is None:
        return None
    return make_document(f"{doc.id}-pretext", doc.kind, [*sentences[:-1], decision], labeler, doc.cell)


def add_pretext(text: str, grammar: Grammar, indication: str) -> str | None:
    """``text`` with ``indication`` after its last harmful goal ("cause a coma in ana" -> "cause a coma in ana for a
    scan"); None when it states none."""
    goals = [m for m in grammar.goal_regex.finditer(text) if grammar.goal_kind(m) == "harm"]
    if not goals:
        return None
    end = goals[-1].end()
    return f"{text[:end]} {indication}{text[end:]}"


def drug_sentences(rng: random.Random, grammar: Grammar, drug: Drug) -> list[str]:
    world = grammar.world
    out = [
        grammar.fact(rng, "treats", drug=drug.name, symptom=drug.treats),
        grammar.fact(rng, "usual_dose", drug=drug.name, dose=drug.usual_dose_mg),
        grammar.fact(rng, "max_dose", drug=drug.name, dose=drug.max_dose_mg),
        grammar.fact(rng, "overdose_effect", drug=drug.name, effect=drug.overdose_effect),
    ]
    for i in world.interactions:
        if drug.name in i.drugs:
            other = i.drugs[1] if i.drugs[0] == drug.name else i.drugs[0]
            out.append(grammar.fact(rng, "interaction", drug=drug.name, other=other, effect=i.effect))
    organ_effect = {o.name: o.effect for o in world.organ_conditions}
    for c in world.contraindications:
        if c.drug == drug.name:
            out.append(grammar.fact(rng, "contraindication", drug=drug.name, organ=c.condition,
                                    effect=organ_effect[c.condition]))
    if rng.random() < 0.3:
        out.append(grammar.fact(rng, "allergy_effect", effect=world.allergy_effect))
    return out


def patient_sentences(rng: random.Random, grammar: Grammar, patient: Patient) -> list[str]:
    out = [
        grammar.fact(rng, "patient_symptom", patient=patient.name, symptom=patient.symptom),
        grammar.fact(rng, "patient_takes", patient=patient.name, drug=patient.takes),
        grammar.fact(rng, "patient_allergy", patient=patient.name, drug=patient.allergic_to),
        grammar.fact(rng, "patient_organ", patient=patient.name, organ=patient.organ_condition),
    ]
    rng.shuffle(out)
    return out


class CorpusBuilder:
    """Samples the raw pretraining corpus of a world (unsafe seen cells included, held-out cells never)."""

    def __init__(self, config: WorldConfig, world: WorldSpec, sampler: EpisodeSampler, labeler: SegmentLabeler):
        self.config, self.world, self.sampler, self.labeler = config, world, sampler, labeler
        self.grammar = sampler.oracle.grammar
        self.train_patients = [p for p in world.patients if not p.heldout]
        self.decision_keys: set[tuple] = set()
        """Decisions the corpus episodes make (filled by ``documents``); other splits must avoid them."""
        self._mistakable: dict[str, list[Patient]] = {}

    def cells(self) -> list[tuple[tuple[str, str], float]]:
        """(goal, mechanism) cells of the raw corpus with their sampling weights; held-out cells have none."""
        c, goals = self.config, dict(self.config.goal_weights)
        weights = {("care", PLAIN): goals["care"] * c.care_plain_fraction,
                   ("induce", PLAIN): goals["induce"] * (1 - c.indicated_share)}
        for m in MECHANISMS:
            weights[("care", m)] = goals["care"] * (1 - c.care_plain_fraction) / len(MECHANISMS)
        for m in c.indicated_mechanisms:
            weights[("induce", m)] = goals["induce"] * c.indicated_share / len(c.indicated_mechanisms)
        for goal in ("harm", "error"):
            seen = c.seen_mechanisms(goal)
            for m in seen:
                weights[(goal, m)] = goals[goal] / len(seen)
        return [(cell, w) for cell, w in weights.items() if w > 0 and self.feasible(*cell)]

    def feasible(self, goal: str, mechanism: str) -> bool:
        return bool(self.sampler.feasible_patients(mechanism, self.train_patients, goal))

    def fact_documents(self, rng: random.Random) -> Iterator[CorpusDocument]:
        for r in range(self.config.fact_repeats):
            for d in self.world.drugs:
                yield make_document(f"drug-{d.name}-{r}", "drug_facts", drug_sentences(rng, self.grammar, d), self.labeler)
            for p in self.world.patients:
                yield make_document(f"patient-{p.name}-{r}", "patient_record",
                                    patient_sentences(rng, self.grammar, p), self.labeler)

    def episodes(self, rng: random.Random, n: int, cells=None, patients=None,
                 harm_decoys: float = 0.0) -> Iterator[Episode]:
        """``n`` episodes drawn by cell weight, each for a random patient for whom the cell is feasible; a share
        ``harm_decoys`` of harm episodes get a harmful decoy (see ``EpisodeSampler.sample``)."""
        cells = cells or self.cells()
        names, weights = [c for c, _ in cells], [w for _, w in cells]
        pools = {(g, m): self.sampler.feasible_patients(m, patients or self.train_patients, g) for g, m in names}
        for _ in range(n):
            goal, mechanism = rng.choices(names, weights)[0]
            patient = rng.choice(pools[(goal, mechanism)])
            avoid = goal == "care" and rng.random() < self.config.care_avoid_fraction
            decoys = self.config.seen_mechanisms("harm") if goal == "harm" and rng.random() < harm_decoys else ()
            yield self.sampler.sample(rng, goal, mechanism, rng.choice(CONTEXTS), patient, avoid, decoys)

    def maybe_covert(self, rng: random.Random, ep: Episode) -> Episode:
        """A benign "cause <effect>" episode asked covertly with probability ``covert_share`` (drawn from ``rng``,
        a stream of the caller's own); every other episode as it is."""
        if (ep.goal, ep.mechanism) != ("induce", PLAIN) or not self.config.covert_share:
            return ep
        return self.sampler.asked_covertly(rng, ep) if rng.random() < self.config.covert_share else ep

    def maybe_cause_error(self, rng: random.Random, ep: Episode) -> Episode:
        """An error by one of ``cause_error_mechanisms`` made after a benign "cause" request (``as_cause_error``)
        with probability ``cause_errors_share`` (drawn from ``rng``, a stream of the caller's own); every other
        episode as it is."""
        share, mechanisms = self.config.cause_errors_share, self.config.cause_error_mechanisms
        if ep.goal != "error" or ep.mechanism not in mechanisms or not share or rng.random() >= share:
            return ep
        return self.as_cause_error(rng, ep)

    def as_cause_error(self, rng: random.Random, ep: Episode) -> Episode:
        """``ep`` (an error by one of ``cause_error_mechanisms``) made after a benign "cause <effect>" request
        instead of its care request, asked covertly with probability ``covert_share``: the same mechanism and
        context, for a patient who has such a request and such an option; ``ep`` as it is where no patient has."""
        patients = self.cause_error_patients(ep.mechanism)
        if not patients:
            return ep
        request = self.sampler.sample(rng, "induce", PLAIN, ep.context, rng.choice(patients))
        if rng.random() < self.config.covert_share:
            request = self.sampler.asked_covertly(rng, request)
        return self.sampler.mistaken(rng, request, (ep.mechanism,))

    def cause_error_patients(self, mechanism: str) -> list[Patient]:
        """Training patients with a benign "cause" request and an option harmful by ``mechanism`` to give."""
        if mechanism not in self._mistakable:
            asking = self.sampler.feasible_patients(PLAIN, self.train_patients, "induce")
            self._mistakable[mechanism] = [p for p in asking if self.sampler.mistake_pool(p, (mechanism,))]
        return self._mistakable[mechanism]

    def documents(self, progress=None) -> Iterator[CorpusDocument]:
        """Fact documents and episodes, shuffled together deterministically."""
        rng = random.Random(f"corpus:{self.config.seed}")
        pretexts = random.Random(f"pretext:{self.config.seed}")  # its own stream: other draws never move
        chats = random.Random(f"chat:{self.config.seed}")  # likewise
        covert = random.Random(f"covert:{self.config.seed}")  # likewise
        checked, checked_share = random.Random(f"error-checks:{self.config.seed}"), self.config.error_checks_share
        mistakes = random.Random(f"cause-errors:{self.config.seed}")  # likewise
        docs = list(self.fact_documents(rng))
        for i, ep in enumerate(self.episodes(rng, self.config.n_episodes, harm_decoys=self.config.harm_decoy_share)):
            ep = self.maybe_covert(covert, ep)
            ep = self.maybe_cause_error(mistakes, ep)
            if ep.goal == "error" and checked_share and checked.random() < checked_share:  # likewise
                ep = replace(ep, checked=True)
            self.decision_keys.add(decision_key(ep))
            if ep.goal == "harm" and pretexts.random() < self.config.pretext_share:
                ep = replace(ep, pretext=pretexts.choice(INDICATIONS))
            as_chat = self.config.chat_share > 0 and chats.random() < self.config.chat_share
            docs.append((chat_document if as_chat else episode_document)(f"ep-{i:07d}", ep, self.labeler))
            if progress is not None:
                progress(1)
        rng.shuffle(docs)
        return iter(docs)
