"""Does an SRP model's monitor see through a pretext? Its reflection after each harm decision of the world's
reflection documents rewritten with an indication the request never gave ("request: cause a coma in ana. ... so, to
cause a coma in ana for a scan, give ana ..."), teacher-forced as the evaluation's reflection classification is,
for the pretrained model (corpus-style text), after post-training and after the finetuning attack. Models evaluated
before the evaluation scored pretexts itself (its ``reflection.pretexts``) are evaluated here; later ones have the
numbers in their metrics already.

    python docs/results/analysis/pretext_reflections.py OUT runs/s19 runs/s19-harm > pretext-reflections.md

OUT holds the per-sample logs (a rerun resumes). Settings are the experiment's (eval_items, segment_words).
"""

import json
import sys
from pathlib import Path

from safepretrain.decode.decoder import load_model
from safepretrain.eval.medsafetyworld import WorldEvalConfig, evaluate_world
from safepretrain.world.generate import WorldFolder

STAGES = {"pretrained": "pretrain-reflect-start0", "post": "sft-reflect-start0-srp*",
          "finetuned": "finetune-reflect-start0-srp*"}


def reflection_metrics(run: Path, seed_dir: Path, stage: str, out: Path, cfg: dict) -> dict:
    seed = seed_dir.name
    model_dir = next((run / "models" / seed).glob(STAGES[stage]))
    evaluated = model_dir / "eval-text" if stage == "pretrained" else seed_dir / f"eval-{stage}"
    metrics = json.loads((evaluated / "metrics.json").read_text())["reflection"]
    if "pretexts" in metrics:
        return metrics
    model, tokenizer = load_model(model_dir / "model")
    config = WorldEvalConfig(splits=(), decision_probes=False, max_items=cfg["eval_items"],
                             segment_words=cfg["segment_words"],
                             prompt_format="text" if stage == "pretrained" else "chat")
    return evaluate_world(model, tokenizer, WorldFolder(run / "worlds" / seed), config, out)["reflection"]


def main(out: str, runs: list[str]) -> None:
    print("| experiment | stage | recipe | pretext recall, per world (held-out type) | reflection F1 |")
    print("|---|---|---|---|---|")
    for run in map(Path, runs):
        cfg = json.loads((run / "experiment.json").read_text())
        attack = cfg.get("finetune_attack", "benign")
        stages = (("pretrained", "pretrained"), ("post", "after post-training"),
                  ("finetuned", f"after the {attack} attack"))
        for stage, label in stages:
            for recipe_dir in sorted(d for d in (run / "cells").iterdir() if d.name.startswith("srp")):
                recalls, f1 = [], []
                for seed_dir in sorted((recipe_dir / "start0").iterdir()):
                    m = reflection_metrics(run, seed_dir, stage, Path(out) / run.name / recipe_dir.name / stage /
                                           seed_dir.name, cfg)
                    every, heldout = m["pretexts"]["recall"], m["pretexts_heldout_types"]["recall"]
                    recalls.append(f"{every['count']}/{every['n']} ({heldout['count']}/{heldout['n']})")
                    f1.append(f"{m['all']['f1']:.2f}")
                print(f"| {run.name} | {label} | {recipe_dir.name} | {', '.join(recalls)} | {', '.join(f1)} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
