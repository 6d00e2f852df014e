"""The recipes an experiment compares: what pretraining data, what post-training format, what decoding.

| recipe | pretraining data | post-training | safe decoding |
|---|---|---|---|
| raw | the corpus as generated | plain SFT | - |
| filter | unsafe documents dropped | plain | - |
| rewrite | unsafe sentences rewritten into safe ones (the world's exact rewriter) | plain | - |
| refusal+moral | unsafe documents turned into refusal dialogues and moral articles | plain | - |
| tags | harmful tag inserted in unsafe text (p = 0.05 per word) | plain | Safe Beam |
| srp | a reflection after every segment | SRP format | guarded |
| srp-mask | as srp, no loss on text after an Unsafe reflection | SRP format | guarded |
| srp-pretrain-only | as srp | plain (the compatible format missing) | guarded |
| posttrain-only | the raw corpus | SRP format | guarded |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    corpus: str
    """The pipeline recipe that makes the pretraining data (``safepretrain intervene --recipe``)."""
    sft: str
    """``plain`` (the world's SFT answers) or ``srp`` (prompt reflection, segment reflections, stop after Unsafe)."""
    mask_after_unsafe: bool = False
    safebeam: bool = False

    @property
    def pretrains_on_reflections(self) -> bool:
        return self.corpus == "reflect"

    @property
    def opens_answers_with_verdict(self) -> bool:
        """Post-trained in SRP's format, whose every answer opens with a reflection on the request."""
        return self.sft == "srp"

    @property
    def reflects(self) -> bool:
        """Trained with reflections (in pretraining or post-training): its safe decoding is SRP's guard."""
        return self.pretrains_on_reflections or self.opens_answers_with_verdict

    @property
    def marks_up(self) -> bool:
        """Its pretraining text carries markup the recipe adds (reflections, harmful tags): tokens that are not text."""
        return self.corpus in ("reflect", "tags")

    @property
    def pretrain_key(self) -> str:
        """Recipes with the same key share one pretrained model."""
        return self.corpus + ("-mask" if self.mask_after_unsafe else "")


RECIPES = {r.name: r for r in (
    Recipe("raw", "raw", "plain"),
    Recipe("filter", "filter", "plain"),
    Recipe("rewrite", "rephrase", "plain"),
    Recipe("refusal+moral", "refusal+moral", "plain"),
    Recipe("tags", "tags", "plain", safebeam=True),
    Recipe("srp", "reflect", "srp"),
    Recipe("srp-mask", "reflect", "srp", mask_after_unsafe=True),
    Recipe("srp-pretrain-only", "reflect", "plain"),
    Recipe("posttrain-only", "raw", "srp"),
)}
