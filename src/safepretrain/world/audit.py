"""``safepretrain world audit``: check, from the files alone, that a world has the properties experiments rely on.

Every property is re-derived with the oracle from the text on disk, never from the generator's bookkeeping:

1. ``integrity``      every file's sha256 matches the manifest.
2. ``labels``         every stored segment label equals the oracle's label of the segment's text.
3. ``heldout-absent`` no segment of any training file (corpus, SFT, benign and harmful finetuning) is of a held-out type.
4. ``composition``    every held-out evaluation request is a composition of skills the *safe* corpus teaches:
                      the facts it needs (e.g. "D with E causes F", "P takes E") stated in safe segments; checks
                      of its mechanism worked in safe care episodes; the goal's behaviour shown for >= 2 other
                      mechanisms; for harmful goals, goal-to-effect matching taught by safe care episodes, a
                      "cause" goal served through a check of the held-out mechanism by a safe episode, and, unless
                      ``indicated_share`` is 0, adverse goals served by safe indicated episodes of >= 2 mechanisms.
5. ``disjoint``       no evaluation decision occurs in training data; evaluation splits share no decision;
                      held-out patients appear in no training episode.
6. ``counts``         every split is non-empty and every seen unsafe type occurs in the corpus.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from safepretrain.manifest import file_hashes
from safepretrain.world.config import behavior_type
from safepretrain.world.generate import BENIGN_FILE, HARMFUL_FILE, RECOVERY_FILE, SFT_FILE, WorldFolder
from safepretrain.world.labeler import SegmentLabeler
from safepretrain.world.language import Check, Fact, Goal
from safepretrain.world.schema import SPLITS, EvalItem, Segment


@dataclass
class Property:
    name: str
    passed: bool
    detail: str


@dataclass
class AuditReport:
    properties: list[Property] = field(default_factory=list)
    label_counts: dict[str, Counter] = field(default_factory=dict)
    """file -> Counter of segment labels and unsafe types."""

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.properties)

    def add(self, name: str, failures: list[str], ok_detail: str) -> None:
        shown = "; ".join(failures[:3]) + (f"; ... ({len(failures)} in all)" if len(failures) > 3 else "")
        self.properties.append(Property(name, not failures, shown if failures else ok_detail))


class _SafeKnowledge:
    """What the safe segments of the corpus state: facts, worked checks, care-goal decisions."""

    def __init__(self):
        self.facts: set[Fact] = set()
        self.checks: Counter = Counter()
        """(check kind, effect) -> count in safe segments of care episodes."""
        self.plain_care_episodes = 0
        self.induce_episodes = 0
        self.served_checks: Counter = Counter()
        """Check kind of the option a safe ``induce`` episode chooses -> count (benign effects: interaction)."""
        self.indicated: Counter = Counter()
        """Mechanism -> safe episodes that serve an adverse goal for a medical indication."""
        self.behavior: Counter = Counter()
        """Unsafe behaviour types shown anywhere in the corpus (seen templates)."""


def audit_world(folder: WorldFolder, progress=None) -> AuditReport:
    report = AuditReport()
    labeler = SegmentLabeler(folder.oracle)
    grammar = folder.oracle.grammar
    heldout_types = set(folder.config.heldout_types)
    report.add("integrity", _integrity_failures(folder), "all file hashes match the manifest")

    mislabeled: list[str] = []
    heldout_seen: list[str] = []
    knowledge = _SafeKnowledge()
    training_decisions: set[tuple] = set()
    episode_patients: set[str] = set()

    def scan(name: str, doc_id: str, segments, cell=None, context: str = ""):
        counts = report.label_counts.setdefault(name, Counter())
        for seg, (_, truth, _) in zip(segments, labeler.in_order((s.text for s in segments), context)):
            if (truth.label, tuple(truth.types)) != (seg.label, tuple(seg.types)):
                mislabeled.append(f"{name} {doc_id}: stored {seg.label} {list(seg.types)}, oracle says "
                                  f"{truth.label} {list(truth.types)} for {seg.text!r}")
            counts[truth.label] += 1
            counts.update(truth.types)
            knowledge.behavior.update(truth.types)
            heldout_seen.extend(f"{name} {doc_id}: {t} in {seg.text!r}" for t in truth.types if t in heldout_types)
            if truth.label == "safe" and name == "corpus":
                _learn(knowledge, grammar.parse(seg.text), cell)
            if progress is not None:
                progress(1)

    for doc in folder.corpus():
        scan("corpus", doc.id, doc.segments, doc.cell)
        if doc.cell is not None:
            training_decisions.add(_decision(doc.cell))
            episode_patients.add(doc.cell.patient)
            knowledge.plain_care_episodes += doc.cell.goal == "care" and doc.cell.mechanism == "none"
            if doc.cell.goal == "induce" and doc.label == "safe":
                knowledge.induce_episodes += 1
                _learn_served(knowledge, grammar, doc)
    recovery = [RECOVERY_FILE] if (folder.root / RECOVERY_FILE).is_file() else []  # older worlds lack it
    for name in (SFT_FILE, BENIGN_FILE, HARMFUL_FILE, *recovery):
        for ex in folder.chat(name):
            user = " ".join(m.content for m in ex.messages if m.role == "user")
            scan(name, ex.id, ex.response_segments, context=user)
            scan(name, ex.id + ":prompt", [_as_segment(user, labeler)])
            if ex.cell is not None:
                training_decisions.add(_decision(ex.cell))
                episode_patients.add(ex.cell.patient)

    report.add("labels", mislabeled, "every stored label equals the oracle's label")
    report.add("heldout-absent", heldout_seen,
               f"no training segment is of a held-out type ({', '.join(sorted(heldout_types))})")

    items = {split: list(folder.eval_items(split)) for split in SPLITS}
    reflection_docs = list(folder.reflection_documents())
    for doc in reflection_docs:
        scan("eval/reflection.jsonl", doc.id, doc.segments)
    report.add("composition", _composition_failures(folder, items, reflection_docs, knowledge),
               _composition_summary(folder, items, reflection_docs, knowledge))
    report.add("disjoint", _disjoint_failures(folder, items, reflection_docs, training_decisions, episode_patients),
               "no evaluation decision is in training data; splits share none; held-out patients in no episode")
    report.add("counts", _count_failures(folder, items, knowledge), "every split non-empty; every seen type present")
    return report


def _learn(knowledge: _SafeKnowledge, statements, cell) -> None:
    for s in statements:
        if isinstance(s, Fact):
            knowledge.facts.add(s)
        elif isinstance(s, Check) and cell is not None and cell.goal == "care":
            knowledge.checks[(s.kind, s.effect)] += 1


def _learn_served(knowledge: _SafeKnowledge, grammar, doc) -> None:
    """Which check the chosen option of a safe "cause" episode has, read from its text: the check that names the
    goal's effect."""
    statements = [s for seg in doc.segments for s in grammar.parse(seg.text)]
    goal = next((s for s in statements if isinstance(s, Goal)), None)
    check = next((s for s in statements if isinstance(s, Check) and goal and s.effect == goal.target), None)
    if goal is None or check is None:
        return
    if goal.target not in grammar.world.benign_effects:
        knowledge.indicated[check.kind] += 1
    knowledge.served_checks[check.kind] += 1


def _as_segment(text: str, labeler: SegmentLabeler) -> Segment:
    label = labeler.label_text(text)
    return Segment(text, 0, len(text), label.label, label.types)


def _decision(cell) -> tuple:
    return (cell.patient, cell.goal, frozenset(cell.options))


def _integrity_failures(folder: WorldFolder) -> list[str]:
    recorded = folder.manifest.get("files", {})
    actual = file_hashes(folder.root)
    failures = [f"{path}: content changed since generation" for path in recorded if actual.get(path) != recorded[path]]
    failures += [f"{path}: not in the manifest" for path in actual if path not in recorded]
    return failures


def _needed_facts(folder: WorldFolder, item_patient: str, drug: str, mechanism: str) -> list[Fact]:
    """The facts a model must know to see that giving ``drug`` harms the patient by ``mechanism``."""
    oracle = folder.oracle
    p, d = oracle.patients[item_patient], oracle.drugs[drug]
    if mechanism == "interaction":
        effect = oracle.interactions[frozenset((drug, p.takes))]
        return [Fact("interaction", (*sorted((drug, p.takes)), effect)), Fact("patient_takes", (p.name, p.takes))]
    if mechanism == "contraindication":
        effect = oracle.organ_effect[p.organ_condition]
        return [Fact("contraindication", (drug, p.organ_condition, effect)),
                Fact("patient_organ", (p.name, p.organ_condition))]
    if mechanism == "allergy":
        return [Fact("patient_allergy", (p.name, drug)), Fact("allergy_effect", (oracle.world.allergy_effect,))]
    return [Fact("max_dose", (drug, str(d.max_dose_mg))), Fact("overdose_effect", (drug, d.overdose_effect))]


def _heldout_cases(folder: WorldFolder, items, reflection_docs) -> list[tuple[str, str, str, str, str]]:
    """(where, goal, mechanism, patient, harmful drug) for every held-out request and held-out reflection doc."""
    heldout = set(folder.config.heldout_cells)
    cases = []
    for item in items["heldout_unsafe"]:
        drug = next(o.drug for o in item.options if o.harms)
        cases.append((item.id, item.cell.goal, item.cell.mechanism, item.cell.patient, drug))
    for doc in reflection_docs:
        if doc.cell is not None and (doc.cell.goal, doc.cell.mechanism) in heldout:
            for seg in doc.segments:
                for statement in folder.oracle.grammar.parse(seg.text):
                    if getattr(statement, "drug", None) and folder.oracle.harms(
                            doc.cell.patient, statement.drug, getattr(statement, "dose_mg", None)):
                        cases.append((doc.id, doc.cell.goal, doc.cell.mechanism, doc.cell.patient, statement.drug))
                        break
    return cases


def _composition_failures(folder, items, reflection_docs, knowledge: _SafeKnowledge) -> list[str]:
    failures = []
    cases = _heldout_cases(folder, items, reflection_docs)
    if not cases:
        return ["no held-out request or document to check"]
    for where, goal, mechanism, patient, drug in cases:
        missing = [f for f in _needed_facts(folder, patient, drug, mechanism) if f not in knowledge.facts]
        if missing:
            failures.append(f"{where}: facts never stated in safe text: {[f.kind + str(f.args) for f in missing]}")
        if not any(kind == mechanism for kind, _ in knowledge.checks):
            failures.append(f"{where}: no safe care episode works a {mechanism} check")
        others = [m for m in folder.config.seen_mechanisms(goal) if knowledge.behavior[behavior_type(goal, m)]]
        if len(others) < 2:
            failures.append(f"{where}: goal {goal!r} shown for only {others} (need >= 2 other mechanisms)")
        if goal == "harm" and knowledge.plain_care_episodes == 0:
            failures.append(f"{where}: no safe care episode teaches matching a goal to an option's effect")
        if goal == "harm" and not knowledge.served_checks[mechanism]:
            failures.append(f"{where}: no safe episode serves a 'cause' goal through a {mechanism} check")
        if goal == "harm" and folder.config.indicated_share > 0 and len(knowledge.indicated) < 2:
            failures.append(f"{where}: safe episodes serve an adverse goal for only {sorted(knowledge.indicated)} "
                            "(need >= 2 mechanisms)")
    return failures


def _composition_summary(folder, items, reflection_docs, knowledge: _SafeKnowledge) -> str:
    cases = _heldout_cases(folder, items, reflection_docs)
    by_mech = Counter(kind for kind, _ in knowledge.checks.elements())
    return (f"{len(cases)} held-out cases: each needed fact stated in safe text; safe care checks per mechanism "
            f"{dict(sorted(by_mech.items()))}; {knowledge.plain_care_episodes} safe goal-matching care episodes; "
            f"{knowledge.induce_episodes} safe 'cause' episodes, serving through checks "
            f"{dict(sorted(knowledge.served_checks.items()))} (adverse goals with an indication: "
            f"{dict(sorted(knowledge.indicated.items()))})")


def _disjoint_failures(folder, items, reflection_docs, training, episode_patients) -> list[str]:
    failures = []
    heldout_patients = {p.name for p in folder.spec.patients if p.heldout}
    leaked = sorted(heldout_patients & episode_patients)
    if leaked:
        failures.append(f"held-out patients in training episodes: {leaked[:5]}")
    owner: dict[tuple, str] = {}
    eval_cells = [(i.id, i.cell) for split in SPLITS for i in items[split]]
    eval_cells += [(d.id, d.cell) for d in reflection_docs if d.cell is not None]
    for item_id, cell in eval_cells:
        key = _decision(cell)
        if key in training:
            failures.append(f"{item_id}: its decision occurs in training data")
        if key in owner:
            failures.append(f"{item_id}: same decision as {owner[key]}")
        owner[key] = item_id
    return failures


def _count_failures(folder, items: dict[str, list[EvalItem]], knowledge: _SafeKnowledge) -> list[str]:
    failures = [f"eval split {s!r} is empty" for s in SPLITS if not items[s]]
    for goal in ("harm", "error"):
        for m in folder.config.seen_mechanisms(goal):
            if not knowledge.behavior[behavior_type(goal, m)]:
                failures.append(f"seen type {behavior_type(goal, m)} never occurs in the corpus")
    return failures


def label_table(report: AuditReport) -> dict[str, dict[str, int]]:
    """file -> {safe, unsafe, <type>...} counts, for printing."""
    return {name: dict(sorted(counts.items())) for name, counts in report.label_counts.items()}

