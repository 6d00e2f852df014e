"""Recipes: the seed papers' data interventions as lists of pipeline steps.

| recipe | steps | paper |
|---|---|---|
| raw | score (annotate only) | the baseline |
| filter | score, drop score >= threshold | Safety Pretraining "score-0 only"; SRP's filtering baseline |
| rephrase | score, rephrase threshold..rephrase_max | Safety Pretraining rephrasing; SRP's rewriting baseline |
| refusal | score, RefuseWeb dialogues for score >= refusal_min | Safety Pretraining |
| moral | score, moral-education articles for score >= refusal_min | Safety Pretraining |
| refusal+moral | both, from each unsafe document | Safety Pretraining |
| safety-pretraining | score; 1-3 rephrased; 4-5 refusal + moral | the paper's full routing |
| tags | score, harmfulness tags in unsafe text (p) | Safety Pretraining, Algorithm 1 |
| reflect | a reflection after every segment | SRP |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from safepretrain.errors import UserError
from safepretrain.markup import reflection_format
from safepretrain.pipeline.scorers.base import metadata_key


@dataclass(frozen=True, kw_only=True)
class RecipeConfig:
    threshold: int = 1
    """Scores at or above this are unsafe (filter drops them, tags and reflections flag them)."""
    rephrase_max: int = 3
    """Rephrase scores threshold..rephrase_max (the paper: 1-3; MedSafetyWorld's oracle gives 0 or 5: use 5)."""
    refusal_min: int = 4
    tag_p: float = 0.05
    reflection_format: Literal["plain", "special"] = "special"
    reflect_max_len: int = 100
    """Words per SRP segment (public code: 100; ablations 30, 60), or tokens with ``segment_tokenizer``."""
    reflect_dropout: float = 0.0
    """Share of SRP's reflections left out of the text (see ``Reflect``); 0: every segment is reflected."""
    segment_tokenizer: str | None = None
    """A saved HF tokenizer: count SRP segment lengths in its tokens instead of words."""
    seed: int = 0


def build_steps(recipe: str, scorer, backend, cfg: RecipeConfig) -> list:
    """The pipeline steps of ``recipe`` (between the reader and the writer); a ``.yaml`` path is a pipeline file."""
    if recipe.endswith((".yaml", ".yml")):
        return steps_from_file(recipe, scorer, backend)
    try:
        make = RECIPES[recipe]
    except KeyError:
        raise UserError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}") from None
    return make(scorer, backend, cfg)


def _score(scorer):
    from safepretrain.pipeline.score import ScoreDocuments

    return ScoreDocuments(scorer)


def _need(backend, recipe: str):
    if backend is None:
        raise UserError(f"recipe {recipe!r} writes new text: it needs a backend (--world DIR for MedSafetyWorld's "
                        "exact rewriter, or --llm-url/--llm-model for an instruct LLM on real corpora)")
    return backend


def _raw(scorer, backend, cfg):
    return [_score(scorer)]


def _filter(scorer, backend, cfg):
    from safepretrain.pipeline.interventions.filter import SafetyFilter

    return [_score(scorer), SafetyFilter(metadata_key(scorer), cfg.threshold)]


def _rephrase(scorer, backend, cfg):
    from safepretrain.pipeline.interventions.rephrase import Rephrase

    return [_score(scorer), Rephrase(metadata_key(scorer), _need(backend, "rephrase"), cfg.threshold,
                                     cfg.rephrase_max)]


def _refusal_kinds(*kinds):
    def make(scorer, backend, cfg):
        from safepretrain.pipeline.interventions.refusal import RefusalData

        return [_score(scorer), RefusalData(metadata_key(scorer), _need(backend, "+".join(kinds)), kinds,
                                            cfg.refusal_min, seed=cfg.seed)]
    return make


def _safety_pretraining(scorer, backend, cfg):
    from safepretrain.pipeline.interventions.refusal import RefusalData
    from safepretrain.pipeline.interventions.rephrase import Rephrase

    key, backend = metadata_key(scorer), _need(backend, "safety-pretraining")
    return [_score(scorer), RefusalData(key, backend, ("refusal", "moral"), cfg.refusal_min, seed=cfg.seed),
            Rephrase(key, backend, cfg.threshold, cfg.refusal_min - 1)]


def _tags(scorer, backend, cfg):
    from safepretrain.pipeline.interventions.tags import HarmfulnessTags

    return [_score(scorer), HarmfulnessTags(metadata_key(scorer), cfg.threshold, cfg.tag_p, seed=cfg.seed)]


def _reflect(scorer, backend, cfg):
    from safepretrain.pipeline.interventions.reflect import Reflect

    tokenizer = None
    if cfg.segment_tokenizer:
        from safepretrain.train.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.segment_tokenizer)
    return [Reflect(scorer, reflection_format(cfg.reflection_format), cfg.reflect_max_len, tokenizer,
                    threshold=cfg.threshold, dropout=cfg.reflect_dropout, seed=cfg.seed)]


RECIPES: dict[str, Callable] = {
    "raw": _raw, "filter": _filter, "rephrase": _rephrase, "refusal": _refusal_kinds("refusal"),
    "moral": _refusal_kinds("moral"), "refusal+moral": _refusal_kinds("refusal", "moral"),
    "safety-pretraining": _safety_pretraining, "tags": _tags, "reflect": _reflect,
}


# --- pipeline files ---------------------------------------------------------------------------------------------------
#
#   steps:                       # applied in order, between the reader and the writer
#     - score
#     - refusal: {kinds: [refusal, moral], min_score: 4}
#     - rephrase: {min_score: 1, max_score: 3}
#     - tags: {threshold: 1, p: 0.05, seed: 0}
#     - filter: {threshold: 4}
#     - reflect: {format: special, max_len: 100, threshold: 1, dropout: 0.0, seed: 0}

def _step_factories(scorer, backend) -> dict[str, Callable]:
    from safepretrain.pipeline.interventions.filter import SafetyFilter
    from safepretrain.pipeline.interventions.reflect import Reflect
    from safepretrain.pipeline.interventions.refusal import RefusalData
    from safepretrain.pipeline.interventions.rephrase import Rephrase
    from safepretrain.pipeline.interventions.tags import HarmfulnessTags

    key = metadata_key(scorer)
    return {
        "score": lambda batch_size=64: _score(scorer),
        "filter": lambda threshold=1: SafetyFilter(key, threshold),
        "rephrase": lambda min_score=1, max_score=3: Rephrase(key, _need(backend, "rephrase"), min_score, max_score),
        "refusal": lambda kinds=("refusal", "moral"), min_score=4, keep_original=False, seed=0: RefusalData(
            key, _need(backend, "refusal"), tuple(kinds), min_score, keep_original, seed),
        "tags": lambda threshold=1, p=0.05, seed=0: HarmfulnessTags(key, threshold, p, seed=seed),
        "reflect": lambda format="special", max_len=100, threshold=1, dropout=0.0, seed=0: Reflect(
            scorer, reflection_format(format), max_len, threshold=threshold, dropout=dropout, seed=seed),
    }


def steps_from_file(path: str, scorer, backend) -> list:
    from safepretrain.io import read_yaml_mapping

    file = Path(path)
    spec = read_yaml_mapping(file, "pipeline")
    if not isinstance(spec.get("steps"), list) or not spec["steps"]:
        raise UserError(f"{file}: expected a non-empty 'steps' list")
    factories = _step_factories(scorer, backend)
    steps = []
    for number, entry in enumerate(spec["steps"], 1):
        name, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items())) \
            if isinstance(entry, dict) and len(entry) == 1 else (None, None)
        if name not in factories or not isinstance(options or {}, dict):
            raise UserError(f"{file}, step {number}: expected one of {', '.join(factories)} (optionally with a "
                            f"mapping of options), got {entry!r}")
        try:
            steps.append(factories[name](**(options or {})))
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(f"{file}, step {number} ({name}): {e}") from None
    return steps
