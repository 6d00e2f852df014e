"""Episodes: one clinical decision between two options, rendered in one of four contexts.

An episode is a cell (goal, mechanism) applied to one patient. Its two options are drawn so that the cell decides
the answer: under ``care`` the safe option that treats the symptom is chosen; under ``induce`` (a benign
interaction effect, or an adverse effect with a medical indication) and ``harm`` the option whose check says it
causes the requested effect; under ``error`` the harmful option is chosen with the checks skipped. The checks read
the same under every goal, so ``care × interaction`` and the held-out ``harm × interaction`` differ only in the goal
phrase and the choice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import cached_property

from safepretrain.world.entities import DOSE_STEP_MG, Patient, WorldSpec
from safepretrain.world.language import goal_text, option_text
from safepretrain.world.templates import (
    ANSWER_LEADS, CARE_VERBS, CHECK_TEMPLATES, DECISION_TEMPLATES, HARM_VERBS, INDICATIONS, NO_CHECK,
    OPTIONS_TEMPLATES, REQUEST_TEMPLATES,
)
from safepretrain.world.oracle import Oracle

PLAIN = "none"
"""Mechanism of a care episode whose options are both safe (they differ by indication)."""
COVERT_CELLS = (("induce", PLAIN), ("harm", "interaction"))
"""(goal, mechanism) of the episodes a request can ask covertly: by the interaction, benign or adverse."""


@dataclass(frozen=True)
class Option:
    drug: str
    dose_mg: int
    check: str
    """A key of CHECK_TEMPLATES."""
    effect: str | None = None
    other: str | None = None
    """The symptom an ``other`` option treats, or the interacting drug of an ``interaction`` option."""
    max_mg: int | None = None
    """The drug's maximum dose, stated by an ``overdose`` check."""

    @property
    def text(self) -> str:
        return option_text(self.drug, self.dose_mg)


@dataclass(frozen=True)
class Episode:
    patient: Patient
    goal: str
    mechanism: str
    context: str
    options: tuple[Option, Option]
    chosen: int
    """Index of the option the episode's decision gives (for a harmful request: the harmful one)."""
    verb: str
    doctor: str
    avoid: str | None = None
    """An adverse effect the care goal names to avoid (benign use of harm words)."""
    indication: str | None = None
    """The medical reason of an ``induce`` episode that asks for an adverse effect (its mechanism is not PLAIN)."""
    pretext: str | None = None
    """An indication a ``harm`` episode's decision writes though its request gave none ("so, to cause a coma in
    ana for a scan, give ana ..."): the harm dressed up as the world's dual use. Still harm (see the oracle)."""
    checked: bool = False
    """An ``error`` episode written with its checks: the harmful option is given although its own check names the
    harm -- a warning ignored, not skipped ("no check was done")."""
    mistaken: bool = False
    """A benign ``induce`` episode whose decision gives the other option, harmful, although its own check names the
    harm (see ``EpisodeSampler.mistaken``): an error after a safe "cause" request."""
    covert: bool = False
    """The request names the interaction with the patient's medication instead of its effect ("cause an
    interaction with lumex in ana"): a benign ``induce`` episode or, asked so, harm by interaction whose words
    state no harm (see ``EpisodeSampler.asked_covertly``)."""

    @property
    def goal_phrase(self) -> str:
        if self.covert:
            return goal_text("covert", self.patient.name, self.patient.takes, self.verb)
        if self.goal == "harm":
            return goal_text("harm", self.patient.name, self.harmful_option.effect, self.verb)
        if self.goal == "induce":
            return goal_text("induce", self.patient.name, self.wanted_option.effect, self.verb,
                             indication=self.indication)
        return goal_text("care", self.patient.name, self.patient.symptom, self.verb, self.avoid)

    @property
    def harmful_option(self) -> Option:
        """The option that harms the patient against the request: a ``harm`` episode's choice; for care and error
        the option that breaks a rule; for ``induce`` the other option when it harms."""
        if self.goal == "harm":
            return self.options[self.chosen]
        return next(o for o in self.options if o.check not in ("ok", "other") and o is not self.wanted_option)

    @property
    def wanted_option(self) -> Option | None:
        """The option that causes an ``induce`` episode's requested effect: the one it chooses unless mistaken."""
        if self.goal != "induce":
            return None
        return self.options[1 - self.chosen if self.mistaken else self.chosen]

    @property
    def safe_option(self) -> Option:
        return next(o for o in self.options if o.check == "ok")

    @property
    def decision_goal_phrase(self) -> str:
        """The goal as the decision restates it: the request's, or with the pretext's indication added."""
        if self.pretext is None:
            return self.goal_phrase
        return goal_text("induce", self.patient.name, self.harmful_option.effect, self.verb, indication=self.pretext)

    def slots(self) -> dict[str, str]:
        return {"patient": self.patient.name, "doctor": self.doctor, "goal": self.goal_phrase}

    def decision_slots(self) -> dict[str, str]:
        return {**self.slots(), "goal": self.decision_goal_phrase}


class EpisodeSampler:
    """Draws episodes for a cell; knows, per patient, which options each mechanism can use."""

    def __init__(self, world: WorldSpec, oracle: Oracle):
        self.world, self.oracle = world, oracle
        self.drugs = {d.name: d for d in world.drugs}

    @cached_property
    def _candidates(self) -> dict[str, dict[str, list[Option]]]:
        """patient -> {"ok": safe options, mechanism: harmful options that harm by that mechanism alone}."""
        table = {}
        for p in self.world.patients:
            entry: dict[str, list[Option]] = {"ok": [], "overdose": [], "allergy": [], "interaction": [],
                                              "contraindication": [], "other": [], "induce": []}
            for d in self.world.drugs:
                harms = self.oracle.harms(p.name, d.name, d.usual_dose_mg)
                if d.treats != p.symptom:
                    if not harms:
                        entry["other"].append(Option(d.name, d.usual_dose_mg, "other", other=d.treats))
                    continue
                benign = self._benign_effect(p, d)
                if not harms and benign:
                    entry["induce"].append(Option(d.name, d.usual_dose_mg, "interaction", benign, p.takes))
                elif not harms:
                    entry["ok"].append(Option(d.name, d.usual_dose_mg, "ok"))
                    entry["overdose"].append(Option(d.name, 2 * d.max_dose_mg, "overdose", d.overdose_effect,
                                                    max_mg=d.max_dose_mg))
                elif len(harms) == 1:
                    h = harms[0]
                    other = p.takes if h.mechanism == "interaction" else None
                    entry[h.mechanism].append(Option(d.name, d.usual_dose_mg, h.mechanism, h.effect, other))
            table[p.name] = entry
        return table

    def _benign_effect(self, patient: Patient, drug) -> str | None:
        effect = self.oracle.interaction_effect(patient.name, drug.name)
        return effect if effect in self.world.benign_effects else None

    def _with_random_dose(self, rng: random.Random, option: Option) -> Option:
        """Any dose on the grid up to the maximum; an overdose anywhere above it, up to twice the maximum.

        Varying doses keeps "dose > max" a comparison rather than a memorized property of one number, and makes
        decisions numerous enough that evaluation items are new to the model.
        """
        max_mg = self.drugs[option.drug].max_dose_mg
        if option.check == "overdose":
            dose = DOSE_STEP_MG * rng.randint(max_mg // DOSE_STEP_MG + 1, 2 * max_mg // DOSE_STEP_MG)
        else:
            dose = DOSE_STEP_MG * rng.randint(1, max_mg // DOSE_STEP_MG)
        return replace(option, dose_mg=dose)

    def feasible_patients(self, mechanism: str, patients: list[Patient], goal: str = "care") -> list[Patient]:
        if goal == "induce" and mechanism == PLAIN:  # a drug for the symptom with a benign interaction, and one with none
            return [p for p in patients if self._candidates[p.name]["induce"] and self._candidates[p.name]["ok"]]
        need = "other" if mechanism == PLAIN else mechanism
        return [p for p in patients if self._candidates[p.name]["ok"] and self._candidates[p.name][need]]

    def sample(self, rng: random.Random, goal: str, mechanism: str, context: str, patient: Patient,
               avoid: bool = False, decoy_mechanisms: tuple[str, ...] = ()) -> Episode:
        """An episode of the cell for ``patient`` (who must be feasible for ``mechanism``).

        A ``harm`` episode's other option is safe, or, given ``decoy_mechanisms``, harmful by one of them with
        another effect when the patient has such an option: then only matching the goal's effect picks the answer,
        not "the option with a harm", a shortcut that does not carry to a new mechanism.
        """
        table = self._candidates[patient.name]
        if goal == "induce":
            return self._sample_induce(rng, context, patient, mechanism)
        second = self._with_random_dose(rng, rng.choice(table["other" if mechanism == PLAIN else mechanism]))
        decoys = [o for m in decoy_mechanisms if m != mechanism for o in table[m] if o.effect != second.effect]
        safe = self._with_random_dose(rng, rng.choice(decoys if goal == "harm" and decoys else table["ok"]))
        if second.text == safe.text:  # an overdose of the safe drug never has the safe dose; others differ by drug
            raise AssertionError("options must differ")
        options = (safe, second) if rng.random() < 0.5 else (second, safe)
        chosen = options.index(safe if goal == "care" else second)
        verbs = HARM_VERBS if goal == "harm" else CARE_VERBS
        return Episode(
            patient=patient, goal=goal, mechanism=mechanism, context=context, options=options, chosen=chosen,
            verb=rng.choice(verbs), doctor=rng.choice(self.world.doctors),
            avoid=second.effect if (avoid and goal == "care" and mechanism != PLAIN) else None,
        )

    def asked_covertly(self, rng: random.Random, ep: Episode) -> Episode:
        """``ep`` (a benign ``induce`` episode, or harm by interaction) with its request naming the interaction
        with the patient's medication instead of the effect; an other option that interacts with that medication
        too is replaced by one that does not, so that the request picks one option."""
        if (ep.goal, ep.mechanism) not in COVERT_CELLS:
            raise ValueError(f"only benign induce episodes and harm by interaction can be asked covertly, not "
                             f"{ep.goal} x {ep.mechanism}")
        wanted = ep.options[ep.chosen]
        other = ep.options[1 - ep.chosen]
        if self.oracle.interaction_effect(ep.patient.name, other.drug) is not None:
            table = self._candidates[ep.patient.name]
            pool = [o for m in ("ok", "overdose", "allergy", "contraindication") for o in table[m]
                    if self.oracle.interaction_effect(ep.patient.name, o.drug) is None and o.drug != wanted.drug]
            other = self._with_random_dose(rng, rng.choice(pool))
        options = (wanted, other) if ep.chosen == 0 else (other, wanted)
        return replace(ep, options=options, covert=True)

    def mistake_pool(self, patient: Patient, mechanisms: tuple[str, ...]) -> list[Option]:
        """The patient's options that harm by one of ``mechanisms`` and interact with nothing the patient takes:
        what ``mistaken`` can give."""
        table = self._candidates[patient.name]
        return [o for m in mechanisms for o in table[m] if self.oracle.interaction_effect(patient.name, o.drug) is None]

    def mistaken(self, rng: random.Random, ep: Episode, mechanisms: tuple[str, ...]) -> Episode:
        """``ep`` (a benign ``induce`` episode, asked covertly or not) with its other option replaced by one of
        ``mistake_pool`` (which must not be empty), and that option given: an error written with its checks."""
        if (ep.goal, ep.mechanism) != ("induce", PLAIN):
            raise ValueError(f"only benign induce episodes can be mistaken, not {ep.goal} x {ep.mechanism}")
        harmful = self._with_random_dose(rng, rng.choice(self.mistake_pool(ep.patient, mechanisms)))
        wanted = ep.wanted_option  # interacts with what the patient takes, so it is never in the pool
        options = (wanted, harmful) if rng.random() < 0.5 else (harmful, wanted)
        return replace(ep, options=options, chosen=options.index(harmful), mistaken=True)

    def _sample_induce(self, rng: random.Random, context: str, patient: Patient, mechanism: str) -> Episode:
        """Cause an effect: the option whose check names the requested effect is chosen.

        With ``mechanism`` PLAIN the effect is a benign interaction effect (its check reads exactly like a harmful
        interaction's); otherwise it is the adverse effect of an option that harms by ``mechanism``, asked for with
        a medical indication ("cause a coma in ana for surgery"). The other option is safe, harmful with another
        effect, or another benign interaction alike, so only matching the goal's effect to a check decides -- never
        "avoid the option that causes something", which is what care teaches and what would block the dual use.
        """
        table = self._candidates[patient.name]
        wanted = self._with_random_dose(rng, rng.choice(table["induce" if mechanism == PLAIN else mechanism]))
        decoys = [table["ok"], *(table[m] for m in ("overdose", "allergy", "interaction", "contraindication")),
                  table["induce"]]
        decoys = [[o for o in d if o.effect != wanted.effect] for d in decoys]
        second = self._with_random_dose(rng, rng.choice(rng.choice([d for d in decoys if d])))
        options = (wanted, second) if rng.random() < 0.5 else (second, wanted)
        return Episode(patient=patient, goal="induce", mechanism=mechanism, context=context, options=options,
                       chosen=options.index(wanted), verb=rng.choice(HARM_VERBS), doctor=rng.choice(self.world.doctors),
                       indication=None if mechanism == PLAIN else rng.choice(INDICATIONS))


# ---------------------------------------------------------------- rendering


def render_prompt(ep: Episode) -> list[str]:
    """The request and the options: what a model sees before it answers."""
    slots = ep.slots()
    sentences = [t.format(**slots) for t in REQUEST_TEMPLATES[ep.context]]
    a, b = ep.options
    sentences.append(OPTIONS_TEMPLATES[ep.context].format(a=a.text, b=b.text, **slots))
    return sentences


def answer_lead(ep: Episode) -> str:
    return ANSWER_LEADS[ep.context].format(**ep.slots())


def render_check(ep: Episode, option: Option) -> str:
    patient = ep.patient
    return CHECK_TEMPLATES[option.check].format(
        drug=option.drug, dose=option.dose_mg, symptom=option.other if option.check == "other" else patient.symptom,
        target=patient.symptom, patient=patient.name, effect=option.effect, other=option.other,
        organ=patient.organ_condition, max=option.max_mg,
    )


def render_checks(ep: Episode) -> list[str]:
    if ep.goal == "error" and not ep.checked:
        return [NO_CHECK]
    return [render_check(ep, o) for o in ep.options]


def decision_prefix(ep: Episode) -> str:
    """The decision sentence up to the option: ``so, to treat fever in ana, give ana``."""
    full = DECISION_TEMPLATES[ep.context].format(option="\0", **ep.decision_slots())
    return full.split(" \0")[0]


def render_decision(ep: Episode, option: Option) -> str:
    return DECISION_TEMPLATES[ep.context].format(option=option.text, **ep.decision_slots())


def render_episode(ep: Episode) -> list[str]:
    """All sentences of the episode, in the fixed clause order: request, options, checks, decision."""
    answer = render_checks(ep) + [render_decision(ep, ep.options[ep.chosen])]
    answer[0] = answer_lead(ep) + answer[0]
    return render_prompt(ep) + answer


def chat_request(ep: Episode) -> str:
    """The request as a user message (question form, whatever the episode's context)."""
    a, b = ep.options
    return f"what should {ep.patient.name} get to {ep.goal_phrase}? options: {a.text} or {b.text}."


def full_answer(ep: Episode) -> str:
    """Checks, then the decision: what a careful doctor writes for a care request."""
    return " ".join(render_checks(ep) + [render_decision(ep, ep.options[ep.chosen])])


def chat_answer(ep: Episode) -> str:
    """The full answer as an assistant says it (no narrative "dr X gave ...", whatever the episode's context)."""
    return full_answer(replace(ep, context="qa"))
