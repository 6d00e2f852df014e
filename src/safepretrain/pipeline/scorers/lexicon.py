"""Hazard-category phrase counts: a transparent, fast scorer for the Data Safety Report Card.

Phrases are grouped by the MLCommons / Llama Guard 3 hazard taxonomy (S1..S14). A hit is a whole-phrase, case-
insensitive match. As a scorer it is coarse by design: 0 without hits, 3 ("brief mention") with hits in one
category, 4 with hits in several -- a lexicon cannot tell a news report from instructions, so it never says 5.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cached_property

from safepretrain.pipeline.scorers.base import SafetyScore

HAZARD_CATEGORIES = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex-Related Crimes", "S4": "Child Sexual Exploitation",
    "S5": "Defamation", "S6": "Specialized Advice", "S7": "Privacy", "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons", "S10": "Hate", "S11": "Suicide & Self-Harm", "S12": "Sexual Content",
    "S13": "Elections", "S14": "Code Interpreter Abuse",
}
LEXICON: dict[str, tuple[str, ...]] = {
    "S1": ("kill him", "kill her", "murder", "stab", "shoot them", "assault", "kidnap", "torture", "strangle",
           "beat him up", "hire a hitman"),
    "S2": ("launder money", "money laundering", "steal a car", "shoplift", "credit card fraud", "phishing",
           "counterfeit", "tax evasion", "sell drugs", "break into a house", "ransomware", "pick a lock"),
    "S3": ("sex trafficking", "sexual assault", "rape", "forced prostitution", "revenge porn"),
    "S4": ("child pornography", "groom a child", "minor sexual", "underage sex"),
    "S5": ("is a pedophile", "committed fraud, everyone knows", "spread rumors that"),
    "S6": ("stop taking your medication", "double the dose", "cure cancer with", "no need to see a doctor",
           "lethal dose", "overdose on"),
    "S7": ("social security number", "home address of", "phone number of", "dox", "leaked passwords"),
    "S8": ("pirated copy", "crack the software", "torrent the movie", "bypass drm"),
    "S9": ("build a bomb", "pipe bomb", "nerve agent", "sarin", "anthrax", "dirty bomb", "enrich uranium",
           "chemical weapon", "bioweapon"),
    "S10": ("subhuman", "go back to your country", "ethnic cleansing", "inferior race", "white power"),
    "S11": ("kill myself", "suicide method", "end my life", "cut myself", "self-harm", "how to hang"),
    "S12": ("explicit sex", "porn", "nude photos", "sexual intercourse"),
    "S13": ("rig the election", "voter fraud", "fake ballots", "suppress the vote"),
    "S14": ("rm -rf /", "reverse shell", "fork bomb", "os.system(", "exec(base64"),
}


class LexiconScorer:
    name = "lexicon"
    version = "1"

    def __init__(self, lexicon: dict[str, Sequence[str]] = LEXICON):
        self.lexicon = {c: tuple(p.lower() for p in phrases) for c, phrases in lexicon.items()}

    @cached_property
    def _patterns(self) -> dict[str, re.Pattern]:
        return {c: re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
                              + r")(?!\w)", re.I) for c, phrases in self.lexicon.items()}

    def hits(self, text: str) -> Counter:
        """Hits per category."""
        return Counter({c: n for c, p in self._patterns.items() if (n := len(p.findall(text)))})

    def score_batch(self, texts: Sequence[str]) -> list[SafetyScore]:
        return [self._score(t) for t in texts]

    def _score(self, text: str) -> SafetyScore:
        hits = self.hits(text)
        if not hits:
            return SafetyScore(0)
        categories = tuple(sorted(hits, key=lambda c: int(c[1:])))
        reason = "lexicon hits: " + ", ".join(f"{c} {HAZARD_CATEGORIES[c]} x{hits[c]}" for c in categories)
        return SafetyScore(3 if len(hits) == 1 else 4, categories, reason)
