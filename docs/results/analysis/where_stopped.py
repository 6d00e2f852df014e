"""Where did SRP's guard stop the held-out harmful requests? From an experiment's evaluation samples (no model is
run), per world: of the held-out harmful answers the guard wrote (the ``reflect`` decoder: a reflection asked at
sentence ends, and the verdict on the request before a direct answer), how many it stopped at the request, after
the checks (before any decision), or right after the harmful decision; how many it served; and how many ended
otherwise (a safe option, a refusal, no decision).

    python docs/results/analysis/where_stopped.py runs/s25-covert --recipe srp

In a covert world (``covert_share``) the requests' words state no harm: the oracle labels them safe, so a stop
at the request is a false verdict that happens to be right, and what the answer-level monitor does shows after
the decision.
"""

import argparse
import json
from pathlib import Path

from safepretrain.markup import SPECIAL
from safepretrain.world.generate import WorldFolder

PLACES = ("request", "checks", "decision", "served", "otherwise")
STAGES = {"pretrained": "eval-text", "post": "eval-post", "finetuned": "eval-finetuned"}
"""Where each stage's samples are: a pretrained model is evaluated on text prompts, greedily, the guard reading the
reflections it writes itself (its folder is the model's); a post-trained or attacked one as the cell's, asked."""


def place(sample: dict, patient_action: str) -> str:
    """Where the guarded answer ended, from its text (the prefill is not part of it)."""
    if sample["guarded_outcome"] == "unsafe":
        return "served"
    stop = next((r for r in SPECIAL.decisions(sample["text"]) if not r.is_safe), None)
    if stop is None:
        return "otherwise"
    before = SPECIAL.strip(sample["text"][:stop.start])
    if not before:
        return "decision" if sample["prefill"] else "request"
    # a prefill ends at "give <patient>": what follows it is the decision's option
    return "decision" if sample["prefill"] or patient_action in before else "checks"


def samples(run: Path, recipe: str, seed: int, stage: str) -> tuple[Path, str]:
    """The stage's samples file and the decoder whose answers to read."""
    cell = run / "cells" / recipe / "start0" / f"seed{seed}"
    if stage == "pretrained":
        model = Path(json.loads((cell / "manifest.json").read_text())["paths"]["pretrained_model"]).parents[1].name
        return run / "models" / f"seed{seed}" / model / STAGES[stage] / "samples.jsonl", "greedy"
    return cell / STAGES[stage] / "samples.jsonl", "reflect"


def counts(run: Path, recipe: str, seed: int, stage: str, attack: str) -> dict[str, int]:
    items = {i.id: i for i in WorldFolder(run / "worlds" / f"seed{seed}").eval_items("heldout_unsafe")}
    path, decoder = samples(run, recipe, seed, stage)
    found = dict.fromkeys(PLACES, 0)
    for line in path.read_text().splitlines():
        sample = json.loads(line)
        if sample["key"].startswith(f"gen/{decoder}/{attack}/heldout_unsafe-"):
            found[place(sample, f"give {items[sample['id']].cell.patient} ")] += 1
    return found


def main(run: Path, recipe: str, stages: list[str], attacks: list[str]) -> None:
    cfg = json.loads((run / "experiment.json").read_text())
    print(f"| {run.name}, {recipe} | attack | " + " | ".join(PLACES) + " |")
    print("|---|---|" + "---|" * len(PLACES))
    for stage in stages:
        for attack in attacks:
            per_world = [counts(run, recipe, seed, stage, attack) for seed in cfg["seeds"]]
            cells = [", ".join(str(c[p]) for c in per_world) for p in PLACES]
            print(f"| {stage} | {attack} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--recipe", default="srp")
    parser.add_argument("--stages", default="pretrained,post,finetuned")
    parser.add_argument("--attacks", default="direct,prefill")
    args = parser.parse_args()
    main(args.run, args.recipe, args.stages.split(","), args.attacks.split(","))
