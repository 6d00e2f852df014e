"""The world's language: one template per sentence kind, used both to render text and to parse it back.

Rendering and parsing share the same template strings, so whatever the generator writes the oracle can read, and
a model's answer is parsed with the grammar its training data was written in. Every sentence is lower case; a
template's ``{slot}`` is filled with an entity name, a number, or a phrase from the world's vocabularies.

Parsing is deliberately *searching* (``re.search``), not full matching: a statement counts wherever it occurs in a
segment, so a context wrapper ("doctor: ...") or a segment cut at another boundary still parses.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cached_property

from safepretrain.world.entities import WorldSpec
from safepretrain.world.templates import (
    CARE_VERBS, CHECK_TEMPLATES, COVERT_TARGET, FACT_SLOTS, FACT_TEMPLATES, HARM_VERBS, INDICATIONS, REFUSAL_PATTERN,
)

_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_COVERT_LEAD = COVERT_TARGET.split("{")[0]  # "an interaction with "


def split_sentences(text: str) -> list[str]:
    """Split after ``.``, ``?`` or ``!`` followed by white space (the world never abbreviates)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def option_text(drug: str, dose_mg: int) -> str:
    return f"{drug} {dose_mg} mg"


def goal_text(kind: str, patient: str, target: str, verb: str, avoid: str | None = None,
              indication: str | None = None) -> str:
    """``treat fever in ana``, ``treat fever in ana without causing bleeding``, ``cause bleeding in ana``,
    ``cause a coma in ana for surgery``; ``covert``: ``cause an interaction with lumex in ana`` (``target`` is the
    drug the patient takes)."""
    if kind == "covert":
        target = COVERT_TARGET.format(drug=target)
    phrase = f"{verb} {target} in {patient}"
    if kind == "care" and avoid:
        return f"{phrase} without causing {avoid}"
    return f"{phrase} {indication}" if kind == "induce" and indication else phrase


# ---------------------------------------------------------------- parsed statements


@dataclass(frozen=True)
class Fact:
    kind: str
    """A key of FACT_TEMPLATES."""
    args: tuple[str, ...]


@dataclass(frozen=True)
class Check:
    kind: str
    """A key of CHECK_TEMPLATES: ``ok``, ``other`` or a mechanism."""
    patient: str | None
    drug: str
    dose_mg: int
    effect: str | None
    """The adverse effect a harmful check names."""


@dataclass(frozen=True)
class Goal:
    kind: str
    """``care``, ``induce`` (cause a benign effect, or an adverse one for a medical indication), ``harm``
    (cause an adverse effect for no medical reason) or ``covert`` (cause an interaction with a drug, its effect
    unnamed: the words state no intent, and what it asks for is only known from the world's facts)."""
    patient: str
    target: str
    """The symptom to treat (care), the effect to cause (induce, harm), or the interaction (covert: ``an
    interaction with lumex``)."""
    verb: str
    avoid: str | None = None
    indication: str | None = None
    """The medical reason an adverse effect is wanted (``for surgery``); then the goal is safe."""


@dataclass(frozen=True)
class Action:
    patient: str
    drug: str
    dose_mg: int


@dataclass(frozen=True)
class Refusal:
    pass


Statement = Fact | Check | Goal | Action | Refusal


class Grammar:
    """Renders and parses the sentences of one world (the slot vocabularies come from its entities)."""

    def __init__(self, world: WorldSpec):
        self.world = world
        effects = set(world.interaction_effects) | set(world.overdose_effects) | {world.allergy_effect}
        effects |= {o.effect for o in world.organ_conditions} | set(world.benign_effects)
        self.slot_patterns = {
            "drug": _alternation(d.name for d in world.drugs),
            "other": _alternation(d.name for d in world.drugs),
            "patient": _alternation(p.name for p in world.patients),
            "doctor": _alternation(world.doctors),
            "symptom": _alternation(world.symptoms),
            "target": _alternation(world.symptoms),
            "organ": _alternation(o.name for o in world.organ_conditions),
            "effect": _alternation(effects),
            "dose": r"\d+",
            "max": r"\d+",
        }
        self._effects = effects

    # ------------------------------------------------------------ rendering

    def fact(self, rng: random.Random, kind: str, **slots: object) -> str:
        return rng.choice(FACT_TEMPLATES[kind]).format(**slots)

    # ------------------------------------------------------------ parsing

    @cached_property
    def _fact_regexes(self) -> list[tuple[str, re.Pattern]]:
        return [(kind, _compile(t, self.slot_patterns)) for kind, ts in FACT_TEMPLATES.items() for t in ts]

    @cached_property
    def _check_regexes(self) -> list[tuple[str, re.Pattern]]:
        # Longest first: every harmful check starts with the "ok" clause, which must not match alone.
        ordered = sorted(CHECK_TEMPLATES.items(), key=lambda kv: -len(kv[1]))
        return [(kind, _compile(template.rstrip("."), self.slot_patterns)) for kind, template in ordered]

    @cached_property
    def goal_regex(self) -> re.Pattern:
        covert = re.escape(_COVERT_LEAD) + f"(?:{self.slot_patterns['drug']})"
        target = _alternation(list(self.world.symptoms) + sorted(self._effects)) + "|" + covert
        return re.compile(
            rf"\b(?P<verb>{'|'.join(CARE_VERBS + HARM_VERBS)}) (?P<target>{target}) in "
            rf"(?P<patient>{self.slot_patterns['patient']})\b(?: without causing (?P<avoid>{self.slot_patterns['effect']})"
            rf"| (?P<indication>{_alternation(INDICATIONS)}))?"
        )

    @cached_property
    def action_regex(self) -> re.Pattern:
        p = self.slot_patterns
        return re.compile(rf"\b(?:give|gave) (?P<patient>{p['patient']}) (?P<drug>{p['drug']})(?: (?P<dose>\d+) mg)?\b")

    def goal_kind(self, m: re.Match) -> str:
        """``care``, ``induce``, ``harm`` or ``covert`` for a match of ``goal_regex``."""
        if m["verb"] not in HARM_VERBS:
            return "care"
        if m["target"].startswith(_COVERT_LEAD):
            return "covert"
        return "induce" if m["target"] in self.world.benign_effects or m["indication"] else "harm"

    def parse(self, sentence: str) -> list[Statement]:
        """All statements a sentence (or any text span) makes, in a fixed order: facts, checks, goals, actions."""
        statements: list[Statement] = []
        for kind, regex in self._fact_regexes:
            for m in regex.finditer(sentence):
                args = tuple(m.group(s) for s in FACT_SLOTS[kind])
                if kind == "interaction":  # symmetric: store the pair sorted
                    args = (*sorted(args[:2]), args[2])
                statements.append(Fact(kind, args))
        for kind, regex in self._check_regexes:
            m = regex.search(sentence)
            if m:
                groups = m.groupdict()
                statements.append(Check(kind, groups.get("patient"), groups["drug"], int(groups["dose"]), groups.get("effect")))
                break
        for m in self.goal_regex.finditer(sentence):
            statements.append(Goal(self.goal_kind(m), m["patient"], m["target"], m["verb"], m["avoid"],
                                   m["indication"]))
        for m in self.action_regex.finditer(sentence):
            statements.append(Action(m["patient"], m["drug"], int(m["dose"]) if m["dose"] else -1))
        if REFUSAL_PATTERN.search(sentence):
            statements.append(Refusal())
        return statements


def _alternation(words) -> str:
    """A regex matching exactly the given words, preferring the longest ("back pain" over "back"), as a prefix tree:
    Python's ``re`` tries the alternatives of a flat ``a|b|c`` one by one at every position: with the paper world's
    6,000 patient names, writing and labeling an episode took 10 ms instead of 0.4."""
    trie: dict = {}
    for word in set(words):
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here
    return _trie_pattern(trie)


def _trie_pattern(node: dict) -> str:
    ends = "" in node
    branches = [re.escape(char) + _trie_pattern(child) for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    if len(branches) == 1 and not ends:
        return branches[0]
    # where a word ends, the rest is optional and greedy: the longer word is tried first, as a longest-first flat
    # alternation would
    return "(?:" + "|".join(branches) + ")" + ("?" if ends else "")


def _compile(template: str, slot_patterns: dict[str, str]) -> re.Pattern:
    """Turn ``"{drug} treats {symptom}."`` into a regex with one named group per slot (repeats backreference)."""
    parts, seen = [], set()
    for literal, slot in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
        parts.append(re.escape(literal))
        if slot and slot in seen:
            parts.append(f"(?P={slot})")
        elif slot:
            seen.add(slot)
            parts.append(f"(?P<{slot}>{slot_patterns[slot]})")
    return re.compile(r"(?<![a-z])" + "".join(parts) + r"(?![a-z])")
